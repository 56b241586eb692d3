"""Overflow and queued callbacks end to end: the simulated PBX runs the dialplan, the real FastAGI server
runs the menus and the queue-exit routes, a small recording keeper stands for routing's CallbackKeeper.

Assertions are on what the PBX saw (the queues the call joined, who answered, the channel variables,
the AGI commands, the bridge) and on what the keeper received (requests and outcomes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from guichet.config import QueuePolicy, Settings
from guichet.engine import default_menu_engine
from guichet.names import (
    GUICHET_CALLBACK_CONFIRMED,
    GUICHET_CALLBACK_ID,
    GUICHET_CALLBACK_NUMBER,
    GUICHET_QUEUE,
    GUICHET_QUEUED_AT,
    ROUTE_CALLBACK_RESULT,
)
from ivr.agi_server import FastAgiServer
from ivr.callers import E164Number
from ivr.menus import load_menus
from ivr.prompt_names import tts_name
from ivr.prompts import QUEUE_EXIT_TEXTS, tts_texts
from ivr.queue_exits import (
    MAX_CLOCK_SKEW_S,
    OfferStep,
    OverflowAction,
    QueueExits,
    joined_at,
    offer_step,
    overflow_action,
    parse_priority,
    parse_typed_number,
    result_outcome,
    rules_from_settings,
    spoken_digits,
)
from ivr.routes import build_routes
from ivr.services import GENERAL_QUEUE, SERVICE_QUEUES
from pbx_sim import (
    Callee,
    CallerScript,
    CallOutcome,
    KeyPress,
    QueueConfig,
    SimAgent,
    SimConfig,
    SimulatedPbx,
)
from pbx_sim.channels import AmiEvent
from pbx_sim.dialplan import CALLBACK_DIAL_CONTEXT, CALLBACK_EXTEN, inbound_dialplan
from routing.callbacks import CallbackOutcome, QueuedCallback, QueuedCallbackRequest
from tests.conftest import REPO
from tests.sim_fixtures import AmiReader, recorded_events

SPEED = 50.0
OPEN = datetime(2026, 6, 2, 10, 0, tzinfo=ZoneInfo("Europe/Paris"))  # a Tuesday, 10:00
NUMBER = "0612345678"
E164 = "+33612345678"
AGENT = "PJSIP/agent1"
APA_KEYS = KeyPress(0.5, "12")  # the default menu: 1 (APA) then 2 -> queue apa, QUEUE_PRIO 10
APA_PRIO = 10
NO_EXIT_KEY = QueueConfig("apa")  # keys pressed while queued stay in the queue (no exit context)
TEXTS = QUEUE_EXIT_TEXTS


class RecordingKeeper:
    """The QueuedCallbacks protocol, recording what the routes hand over."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.kept: list[QueuedCallbackRequest] = []
        self.outcomes: list[tuple[str, CallbackOutcome, str]] = []

    async def keep(self, request: QueuedCallbackRequest) -> str:
        if self.fail:
            raise RuntimeError("keeper down")
        self.kept.append(request)
        return f"cb-{len(self.kept)}"

    async def record_outcome(self, callback_id: str, outcome: CallbackOutcome, detail: str = "") -> None:
        self.outcomes.append((callback_id, outcome, detail))

    async def pending(self) -> Sequence[QueuedCallback]:
        return []


@dataclass
class Rig:
    pbx: SimulatedPbx
    server: FastAgiServer
    keeper: RecordingKeeper
    events: list[AmiEvent] = field(default_factory=list)

    async def call(self, script: CallerScript) -> tuple[CallOutcome, dict[str, str]]:
        handle = self.pbx.place_call(script)
        outcome = await asyncio.wait_for(handle.finished, 60)
        return outcome, dict(handle.channel.variables)

    def agi_commands(self) -> list[str]:
        return [e.get("Command") or "" for e in self.events if e.name == "AGIExecStart"]

    def said(self, text: str) -> bool:
        return any(tts_name(text) in command for command in self.agi_commands())


def rules(**overrides: str) -> dict[str, str]:
    return {queue: overrides.get(queue, "general") for queue in SERVICE_QUEUES}


@asynccontextmanager
async def rig(
    overflow: dict[str, str] | None = None,
    *,
    max_wait_s: int = 600,
    keeper: RecordingKeeper | None = None,
    general_agent: bool = True,
    callees: dict[str, Callee] | None = None,
    with_exits: bool = True,
    apa: QueueConfig | None = None,
) -> AsyncIterator[Rig]:
    keeper = keeper or RecordingKeeper()
    engine = default_menu_engine(now=lambda: OPEN)
    pbx: SimulatedPbx | None = None

    def sim_now() -> float:
        assert pbx is not None
        return pbx.clock.now()

    exits = QueueExits(keeper, overflow or rules(), now=sim_now) if with_exits else None
    server = FastAgiServer(build_routes(engine, exits), port=0)
    await server.start()
    queues = [
        QueueConfig(q, context="queue-exit") if q != "apa" or apa is None else apa for q in SERVICE_QUEUES
    ]
    config = SimConfig(
        agi_port=server.port,
        speed=SPEED,
        queues=queues,
        dialplan=inbound_dialplan(f"agi://127.0.0.1:{server.port}", max_wait_s=max_wait_s),
        callees=callees or {},
    )
    pbx = SimulatedPbx(config)
    events = recorded_events(pbx)
    try:
        async with pbx:
            if general_agent:
                pbx.add_agent(SimAgent(AGENT, "Agent", queues=[GENERAL_QUEUE], answer_delay=1, talk_time=2))
            yield Rig(pbx, server, keeper, events)
    finally:
        await server.close()


def ran(outcome: CallOutcome, context: str) -> bool:
    return any(step.startswith(f"{context},") for step in outcome.path)


# --- Overflow after the service queue ------------------------------------------------------------


async def test_a_timed_out_service_queue_goes_to_the_general_queue_under_rule_general() -> None:
    async with rig(max_wait_s=5) as r:
        outcome, variables = await r.call(CallerScript(NUMBER, keys=[APA_KEYS]))
    assert outcome.queue == GENERAL_QUEUE and outcome.answered_by == AGENT
    assert variables[GUICHET_QUEUE] == GENERAL_QUEUE  # set by the overflow route
    assert any(c.startswith("GET DATA") for c in r.agi_commands())  # the menu ran
    assert [c for c in r.agi_commands() if c.startswith("SET VARIABLE GUICHET_QUEUE")][-1] == (
        f"SET VARIABLE {GUICHET_QUEUE} {GENERAL_QUEUE}"
    )
    assert r.keeper.kept == []
    assert not r.said(TEXTS.overflow_offer)


async def test_a_timed_out_service_queue_offers_a_callback_under_rule_callback() -> None:
    keys = [APA_KEYS, KeyPress(0.5, "1"), KeyPress(0.5, "1")]  # 1: call me back; 1: that number
    async with rig(rules(apa="callback"), max_wait_s=5, apa=NO_EXIT_KEY) as r:
        outcome, variables = await r.call(CallerScript(NUMBER, "Citoyen", keys=keys))
    assert r.said(TEXTS.overflow_offer) and r.said(TEXTS.kept)
    (request,) = r.keeper.kept
    assert (request.number, request.queue, request.priority) == (E164, "apa", APA_PRIO)
    assert request.joined_at == float(variables[GUICHET_QUEUED_AT])
    assert variables[GUICHET_CALLBACK_ID] == "cb-1"
    assert outcome.answered_by is None and outcome.queue == "apa"  # hung up politely, not queued again


async def test_declining_the_overflow_callback_reaches_the_general_queue() -> None:
    keys = [APA_KEYS, KeyPress(0.5, "2")]
    async with rig(rules(apa="callback"), max_wait_s=5, apa=NO_EXIT_KEY) as r:
        outcome, _ = await r.call(CallerScript(NUMBER, keys=keys))
    assert r.said(TEXTS.overflow_offer) and r.keeper.kept == []
    assert outcome.queue == GENERAL_QUEUE and outcome.answered_by == AGENT


async def test_joinempty_with_no_agent_of_the_service_goes_to_the_general_queue() -> None:
    async with rig(apa=QueueConfig("apa", joinempty="no")) as r:
        outcome, variables = await r.call(CallerScript(NUMBER, keys=[APA_KEYS]))
    assert outcome.queue == GENERAL_QUEUE and outcome.answered_by == AGENT
    assert variables[GUICHET_QUEUE] == GENERAL_QUEUE
    overflow = [c for c in r.agi_commands() if "overflow" in c]
    assert overflow == []  # the route needs no command to read its arguments
    assert r.keeper.kept == []


async def test_engine_down_during_the_overflow_still_reaches_the_general_queue() -> None:
    async with rig(max_wait_s=5) as r:
        closed: list[asyncio.Task[None]] = []
        emit = r.pbx.emit

        def close_on_join(event: AmiEvent) -> None:
            emit(event)
            if event.name == "QueueCallerJoin" and not closed:  # the IVR is over: the engine goes down
                closed.append(asyncio.ensure_future(r.server.close()))

        r.pbx.emit = close_on_join  # type: ignore[method-assign]
        outcome, variables = await r.call(CallerScript(NUMBER, keys=[APA_KEYS]))
        await asyncio.gather(*closed)
    assert outcome.agistatus == "FAILURE"  # the overflow AGI was refused
    assert outcome.queue == GENERAL_QUEUE and outcome.answered_by == AGENT
    assert variables[GUICHET_QUEUE] == "apa"


async def test_without_the_routes_the_dialplan_still_reaches_the_general_queue() -> None:
    async with rig(max_wait_s=5, with_exits=False) as r:
        outcome, _ = await r.call(CallerScript(NUMBER, keys=[APA_KEYS]))
    assert outcome.queue == GENERAL_QUEUE and outcome.answered_by == AGENT


# --- A key pressed while queued ------------------------------------------------------------------

EXIT_1 = KeyPress(3.0, "1")  # three seconds into the queue


async def test_pressing_1_while_queued_keeps_the_place_with_the_confirmed_number() -> None:
    # "1" once the number was said digit by digit (intro 1.5 s + 10 digits x 0.75 s)
    keys = [APA_KEYS, EXIT_1, KeyPress(10.0, "1")]
    async with rig() as r:
        outcome, variables = await r.call(CallerScript(NUMBER, 'Zoé "VIP" <x>', keys=keys))
    assert ran(outcome, "queue-exit") and r.said(TEXTS.number_intro) and r.said(TEXTS.kept)
    assert any(c == "SAY DIGITS 0612345678 12" for c in r.agi_commands())
    (request,) = r.keeper.kept
    assert (request.number, request.queue, request.priority) == (E164, "apa", APA_PRIO)
    queued_at = float(variables[GUICHET_QUEUED_AT])
    assert request.joined_at == queued_at
    assert request.reason == "apa" and request.origin_uniqueid == outcome_uniqueid(r)
    assert request.caller_name == 'Zoé "VIP" <x>'
    assert not any("VIP" in command for command in r.agi_commands())  # the name never goes to Asterisk
    assert outcome.answered_by is None  # hung up after the confirmation, not queued again
    assert [e.get("Queue") for e in r.events if e.name == "QueueCallerJoin"] == ["apa"]


def outcome_uniqueid(r: Rig) -> str:
    joins = [e for e in r.events if e.name == "QueueCallerJoin"]
    return joins[0].get("Uniqueid") or ""


async def test_a_withheld_number_is_typed_then_confirmed() -> None:
    keys = [APA_KEYS, EXIT_1, KeyPress(1.0, "0612345678#"), KeyPress(0.5, "1")]
    async with rig() as r:
        await r.call(CallerScript("anonymous", keys=keys))
    assert r.said(TEXTS.ask_number) and not r.said(TEXTS.invalid_number)
    assert [k.number for k in r.keeper.kept] == [E164]


async def test_an_invalid_number_is_asked_again() -> None:
    keys = [APA_KEYS, EXIT_1, KeyPress(1.0, "123#"), KeyPress(1.0, "0145678912#"), KeyPress(0.5, "1")]
    async with rig() as r:
        await r.call(CallerScript("anonymous", keys=keys))
    assert r.said(TEXTS.invalid_number)
    assert sum(tts_name(TEXTS.ask_number) in c for c in r.agi_commands()) == 2
    assert [k.number for k in r.keeper.kept] == ["+33145678912"]


async def test_2_lets_the_caller_give_another_number() -> None:
    keys = [APA_KEYS, EXIT_1, KeyPress(0.5, "2"), KeyPress(1.0, "0145678912#"), KeyPress(0.5, "1")]
    async with rig() as r:
        await r.call(CallerScript(NUMBER, keys=keys))
    assert [k.number for k in r.keeper.kept] == ["+33145678912"]


async def test_a_key_other_than_1_puts_the_caller_back_in_the_queue() -> None:
    keys = [APA_KEYS, KeyPress(1.0, "5")]
    async with rig(max_wait_s=5) as r:
        outcome, _ = await r.call(CallerScript(NUMBER, keys=keys))
    assert r.keeper.kept == [] and not r.said(TEXTS.number_intro)
    # back in apa from the exit context, which then timed out to the general queue
    queue_steps = [s for s in outcome.path if s.endswith(":Queue")]
    assert queue_steps[0].startswith("from-citizens,") and queue_steps[1].startswith("queue-exit,5,")
    assert outcome.queue == GENERAL_QUEUE and outcome.answered_by == AGENT
    joins = [e.get("Queue") for e in r.events if e.name == "QueueCallerJoin"]
    assert joins == ["apa", "apa", GENERAL_QUEUE]


async def test_a_caller_who_does_not_answer_the_offer_goes_back_in_the_queue() -> None:
    keys = [APA_KEYS, EXIT_1]  # then silence at "Tapez 1 pour confirmer"
    async with rig(max_wait_s=5) as r:
        outcome, _ = await r.call(CallerScript(NUMBER, keys=keys))
    assert r.keeper.kept == [] and r.said(TEXTS.back_in_queue)
    assert [e.get("Queue") for e in r.events if e.name == "QueueCallerJoin"][:2] == ["apa", "apa"]
    assert outcome.answered_by == AGENT


async def test_a_keeper_failure_puts_the_caller_back_in_the_queue() -> None:
    keys = [APA_KEYS, EXIT_1, KeyPress(0.5, "1")]
    async with rig(keeper=RecordingKeeper(fail=True), max_wait_s=5) as r:
        outcome, variables = await r.call(CallerScript(NUMBER, keys=keys))
    assert r.said(TEXTS.not_kept) and GUICHET_CALLBACK_ID not in variables
    assert outcome.answered_by == AGENT


# --- The callback legs -----------------------------------------------------------------------------


async def originate(r: Rig, callback_id: str = "cb-7") -> list[AmiEvent]:
    """The keeper's Originate: agent first, the callback context dials the citizen."""
    r.pbx.add_agent(SimAgent("PJSIP/agent2", "Agent 2", answer_delay=1))
    ami = await AmiReader.connect(r.pbx.ami_port)
    await ami.action(
        "Originate",
        [
            ("Channel", "PJSIP/agent2"),
            ("Context", CALLBACK_DIAL_CONTEXT),
            ("Exten", CALLBACK_EXTEN),
            ("Priority", "1"),
            ("CallerID", '"Departement" <3900>'),
            ("Variable", f"{GUICHET_CALLBACK_NUMBER}={E164}"),
            ("Variable", f"{GUICHET_CALLBACK_ID}={callback_id}"),
            ("Async", "true"),
        ],
        "originate",
    )
    await ami.wait_for(
        lambda m: m.name == "Hangup" and (m.get("Channel") or "").startswith("PJSIP/agent2-"), limit_s=60
    )
    await ami.close()
    return r.events


def bridged(events: list[AmiEvent]) -> set[str]:
    return {(e.get("Channel") or "").rsplit("-", 1)[0] for e in events if e.name == "BridgeEnter"}


async def test_a_citizen_who_confirms_is_recorded_answered_and_bridged() -> None:
    callee = Callee(keys=[KeyPress(1.0, "1")], talk_s=5)
    async with rig(callees={E164: callee}) as r:
        events = await originate(r)
    assert r.keeper.outcomes == [("cb-7", CallbackOutcome.ANSWERED, "confirmed")]
    assert bridged(events) == {"PJSIP/agent2", "PJSIP/trunk"}
    assert r.said(TEXTS.confirm_call) and not r.said(TEXTS.not_reached)
    confirmed = [e for e in events if e.name == "VarSet" and e.get("Variable") == GUICHET_CALLBACK_CONFIRMED]
    assert {(e.get("Channel") or "").rsplit("-", 1)[0] for e in confirmed} == {"PJSIP/trunk", "PJSIP/agent2"}


async def test_a_callback_nobody_confirms_is_unconfirmed_and_never_bridged() -> None:
    async with rig(callees={E164: Callee(keys=())}) as r:  # voicemail: answers, presses nothing
        events = await originate(r)
    assert r.keeper.outcomes == [("cb-7", CallbackOutcome.UNCONFIRMED, "no key pressed")]
    assert bridged(events) == set()
    assert sum(tts_name(TEXTS.confirm_call) in c for c in r.agi_commands()) == 2
    assert r.said(TEXTS.not_reached)  # the agent hears it


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        ("noanswer", CallbackOutcome.NO_ANSWER),
        ("busy", CallbackOutcome.BUSY),
        ("congestion", CallbackOutcome.FAILED),
        ("chanunavail", CallbackOutcome.FAILED),
    ],
)
async def test_callback_result_records_the_dialstatus(result: str, outcome: CallbackOutcome) -> None:
    async with rig(callees={E164: Callee(result=result)}) as r:
        await originate(r)
    assert [(cb, o) for cb, o, _ in r.keeper.outcomes] == [("cb-7", outcome)]
    assert not r.said(TEXTS.confirm_call) and r.said(TEXTS.not_reached)


async def test_an_invalid_callback_id_is_never_recorded() -> None:
    async with rig(callees={E164: Callee(result="busy")}) as r:
        await originate(r, callback_id="cb 7;x")
    assert r.keeper.outcomes == []


# --- Registration and prompts ----------------------------------------------------------------------


def test_every_agi_route_of_the_dialplan_is_registered() -> None:
    dialplan = inbound_dialplan("agi://127.0.0.1:4573")
    used = {
        step.data.split(",")[0].rsplit("/", 1)[1]
        for extens in dialplan.contexts.values()
        for steps in extens.values()
        for step in steps
        if step.app == "AGI"
    }
    routes = build_routes(default_menu_engine(now=lambda: OPEN), QueueExits(RecordingKeeper(), rules()))
    assert used == set(routes.names())
    assert set(build_routes(default_menu_engine(now=lambda: OPEN)).names()) == {"ivr"}


def test_every_text_of_the_routes_is_built_by_guichet_prompts_build() -> None:
    texts = tts_texts(load_menus(REPO / "dialplans", SERVICE_QUEUES))
    for text in TEXTS.all():
        assert texts[tts_name(text)] == text


def test_an_unknown_overflow_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="apa"):
        QueueExits(RecordingKeeper(), {"apa": "voicemail"})


def test_rules_come_from_the_queue_settings() -> None:
    settings = Settings(queues={"apa": QueuePolicy(overflow="callback"), "accueil": QueuePolicy()})
    assert rules_from_settings(settings) == {"apa": "callback", "accueil": "general"}


# --- Pure decisions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "queue", "expected"),
    [
        ("TIMEOUT", "apa", OverflowAction.OFFER_CALLBACK),
        ("JOINEMPTY", "apa", OverflowAction.OFFER_CALLBACK),
        ("LEAVEEMPTY", "pmi", OverflowAction.GENERAL),
        ("JOINUNAVAIL", "pmi", OverflowAction.GENERAL),
        ("LEAVEUNAVAIL", "pmi", OverflowAction.GENERAL),
        ("FULL", "pmi", OverflowAction.GENERAL),
        ("timeout", "pmi", OverflowAction.GENERAL),
        ("TIMEOUT", "no-such-queue", OverflowAction.GENERAL),
        ("CONTINUE", "apa", OverflowAction.NOTHING),
        ("", "apa", OverflowAction.NOTHING),
        ("WITHDRAW", "pmi", OverflowAction.NOTHING),
    ],
)
def test_overflow_action(status: str, queue: str, expected: OverflowAction) -> None:
    assert overflow_action(status, queue, rules(apa="callback")) is expected


@pytest.mark.parametrize(
    ("dialstatus", "confirmed", "expected"),
    [
        ("ANSWER", "1", None),
        ("ANSWER", "0", None),
        ("ANSWER", "", (CallbackOutcome.UNCONFIRMED, "answered, confirmation not reached")),
        ("NOANSWER", "", (CallbackOutcome.NO_ANSWER, "NOANSWER")),
        ("BUSY", "", (CallbackOutcome.BUSY, "BUSY")),
        ("CONGESTION", "", (CallbackOutcome.FAILED, "CONGESTION")),
        ("CHANUNAVAIL", "", (CallbackOutcome.FAILED, "CHANUNAVAIL")),
        ("", "", (CallbackOutcome.FAILED, "unexpected DIALSTATUS ''")),
    ],
)
def test_result_outcome(
    dialstatus: str, confirmed: str, expected: tuple[CallbackOutcome, str] | None
) -> None:
    assert result_outcome(dialstatus, confirmed) == expected


def test_joined_at_trusts_the_dialplan_time_then_the_queue_wait() -> None:
    now = 1_800_000_000.0
    assert joined_at("1799999900", "50", now) == 1_799_999_900.0
    assert joined_at(None, "50", now) == now - 50
    assert joined_at("garbage", "50", now) == now - 50
    assert joined_at(str(now + MAX_CLOCK_SKEW_S + 10), "50", now) == now - 50  # from the future
    assert joined_at("12", None, now) == now  # 1970: not believable, no wait either


def test_typed_numbers_and_spoken_digits() -> None:
    assert parse_typed_number("0612345678") == E164Number(E164, "FR")
    assert parse_typed_number("0033612345678") == E164Number(E164, "FR")
    for bad in ("", "123", "06123456789999", "3900", "06*2345678"):
        assert parse_typed_number(bad) is None, bad
    assert spoken_digits(E164Number(E164, "FR")) == "0612345678"
    assert spoken_digits(E164Number("+4915123456789", "DE")) == "4915123456789"


def test_offer_steps_and_priority() -> None:
    assert offer_step("1", 0) is OfferStep.CONFIRMED
    assert offer_step("2", 2) is OfferStep.RETYPE
    assert offer_step(None, 0) is OfferStep.ASK_AGAIN
    assert offer_step("9", 2) is OfferStep.GIVE_UP
    assert parse_priority("10") == 10 and parse_priority(None) == 0 and parse_priority("x") == 0


def test_route_names_in_the_dialplan_match() -> None:
    dialplan = inbound_dialplan("agi://h:1")
    (dial, result, _) = dialplan.contexts[CALLBACK_DIAL_CONTEXT][CALLBACK_EXTEN]
    # U(context^args): app_dial always starts the subroutine at s,1 of the context
    assert dial.data == (
        f"PJSIP/${{{GUICHET_CALLBACK_NUMBER}}}@trunk,30,gU(callback-confirm^${{{GUICHET_CALLBACK_ID}}})"
    )
    assert set(dialplan.contexts["callback-confirm"]) == {"s"}
    assert result.data.startswith(f"agi://h:1/{ROUTE_CALLBACK_RESULT},")
