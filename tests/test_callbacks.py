"""Queued callbacks: the keeper's pure core (merge, order against real callers, agents, retries within
opening hours, attempts) and the dispatcher against the simulated PBX over real AMI."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from guichet.config import Secret, Settings
from guichet.engine import Engine, default_menu_engine
from guichet.names import (
    EV_ORIGINATE_RESPONSE,
    GUICHET_CALLBACK_ID,
    GUICHET_CALLBACK_NUMBER,
    GUICHET_CITIZEN_ID,
    GUICHET_IVR_DONE,
    GUICHET_PRIO,
    GUICHET_QUEUE,
)
from ivr.agi_server import FastAgiServer, RouteTable
from ivr.hours import MINUTES_PER_DAY, Schedule, TimeRange
from ivr.menu_engine import CallbackRequest, InMemoryCallbackSink
from ivr.queue_exits import QueueExits
from ivr.routes import build_routes
from ivr.services import SERVICE_QUEUES
from pbx_sim import (
    Callee,
    CallerScript,
    CallHandle,
    KeyPress,
    QueueConfig,
    SimAgent,
    SimConfig,
    SimulatedPbx,
    inbound_dialplan,
)
from pbx_sim.dialplan import CALLBACK_DIAL_CONTEXT, QUEUE_EXIT_CONTEXT
from routing.aging import AgingPolicy
from routing.ami import AmiMessage
from routing.ami_client import AmiResponse
from routing.callbacks import (
    CALLBACKS_DOCUMENT,
    CALLBACKS_KIND,
    INBOX_KIND,
    CallbackDispatcher,
    CallbackKeeper,
    CallbackOutcome,
    QueuedCallback,
    QueuedCallbackRequest,
    SharedCallbacks,
    aged_priority,
    callback_duty,
    originate_headers,
)
from routing.errors import AmiConnectionLost
from routing.live import AgentState, AgentView, WaitingCaller
from routing.state import MemoryStateStore, StateStore
from tests.sim_fixtures import AgiResponder, engine_beside_sim

PARIS = ZoneInfo("Europe/Paris")
DAY = ((TimeRange(8 * 60 + 30, 17 * 60 + 30),),)
# The platform's hours (dialplans/settings/hours.yaml): Monday to Friday 08:30-17:30.
PLATFORM = Schedule("plateforme", weekly=DAY * 5 + ((), ()))
ALWAYS_OPEN = Schedule("always", weekly=((TimeRange(0, MINUTES_PER_DAY),),) * 7, holidays_closed=False)
QUEUE = "apa"
OTHER = "pmi"


def at(day: int, hour: int, minute: int = 0) -> float:
    """Epoch seconds of a Paris wall-clock time in the week of Monday 30 November 2026 (day 30)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=PARIS).timestamp()


def dec(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 12, day, hour, minute, tzinfo=PARIS).timestamp()


MONDAY_10 = at(30, 10)


@dataclass
class FakeLive:
    """A live model as the keeper reads it: waiting callers per queue, agents."""

    queues: dict[str, list[WaitingCaller]] = field(default_factory=dict)
    members: list[AgentView] = field(default_factory=list)

    def callers(self, queue: str) -> Sequence[WaitingCaller]:
        return tuple(self.queues.get(queue, ()))

    def agents(self, now: float) -> Sequence[AgentView]:
        return tuple(self.members)

    def add_caller(self, queue: str, join_time: float, priority: int | None = 0) -> None:
        n = sum(len(c) for c in self.queues.values())
        caller = WaitingCaller(f"PJSIP/c-{n}", f"u{n}", "0600000000", "", join_time, priority)
        self.queues.setdefault(queue, []).append(caller)

    def add_agent(self, name: str, *queues: str, state: AgentState = AgentState.AVAILABLE) -> None:
        self.members.append(AgentView(f"PJSIP/{name}", name, queues or (QUEUE,), state))


def keeper(**kwargs: object) -> CallbackKeeper:
    ids = itertools.count(1)
    options: dict[str, object] = {"retry_s": 600.0, "attempts": 3, "new_id": lambda: f"cb{next(ids)}"}
    options.update(kwargs)
    schedule = options.pop("schedule", PLATFORM)
    assert isinstance(schedule, Schedule)
    return CallbackKeeper(schedule, **options)  # type: ignore[arg-type]


def request(
    number: str = "0612345678", *, queue: str = QUEUE, priority: int = 0, joined_at: float = MONDAY_10 - 300
) -> QueuedCallbackRequest:
    return QueuedCallbackRequest(number=number, queue=queue, priority=priority, joined_at=joined_at)


def dials(k: CallbackKeeper, now: float, live: FakeLive) -> list[tuple[str, str]]:
    return [(d.callback.id, d.interface) for d in k.due(now, live)]


def dial_all(k: CallbackKeeper, now: float, live: FakeLive) -> list[tuple[str, str]]:
    chosen = dials(k, now, live)
    for callback_id, interface in chosen:
        k.start_dial(callback_id, interface, now)
    return chosen


def state(k: CallbackKeeper, callback_id: str) -> QueuedCallback:
    found = k.get(callback_id)
    assert found is not None
    return found


def one_agent() -> FakeLive:
    live = FakeLive()
    live.add_agent("agent1")
    return live


# --- keep and merge -------------------------------------------------------------------------------


def test_each_request_gets_a_new_id_and_the_number_is_kept_in_e164() -> None:
    k = keeper()
    first = k.hold(request("06 12 34 56 78"), MONDAY_10)
    second = k.hold(request("0698765432"), MONDAY_10)
    assert (first, second) == ("cb1", "cb2")
    assert state(k, first).request.number == "+33612345678"
    assert (state(k, first).state, state(k, first).attempts, state(k, first).merged) == ("waiting", 0, 0)


def test_a_duplicate_number_is_merged_keeping_the_earliest_join_and_the_highest_priority() -> None:
    k = keeper()
    first = k.hold(request("0612345678", priority=2, joined_at=MONDAY_10 - 100), MONDAY_10)
    again = k.hold(request("+33 6 12 34 56 78", priority=7, joined_at=MONDAY_10 - 50), MONDAY_10)
    third = k.hold(request("0033612345678", priority=1, joined_at=MONDAY_10 - 400), MONDAY_10)
    assert again == third == first
    kept = state(k, first)
    assert (kept.request.priority, kept.request.joined_at, kept.merged) == (7, MONDAY_10 - 400, 2)
    assert len(k.snapshot(MONDAY_10)) == 1


def test_a_number_whose_callback_is_finished_gets_a_new_callback() -> None:
    k = keeper()
    first = k.hold(request(), MONDAY_10)
    dial_all(k, MONDAY_10, one_agent())
    k.note_outcome(first, CallbackOutcome.ANSWERED, MONDAY_10 + 60)
    assert k.hold(request(), MONDAY_10 + 120) == "cb2"


def test_a_duplicate_of_a_callback_waiting_for_its_retry_makes_it_due_at_once() -> None:
    k = keeper()
    live = one_agent()
    first = k.hold(request(), MONDAY_10)
    dial_all(k, MONDAY_10, live)
    k.note_outcome(first, CallbackOutcome.NO_ANSWER, MONDAY_10 + 30)
    assert dials(k, MONDAY_10 + 60, live) == []
    k.hold(request(), MONDAY_10 + 60)  # the citizen called again and asked again: reachable now
    assert dials(k, MONDAY_10 + 60, live) == [(first, "PJSIP/agent1")]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (request("12"), "not a valid public phone number"),
        (request("anonymous"), "not a valid public phone number"),
        (request("06 12 34\n56 78"), "not a valid public phone number"),
        (request(queue=""), "needs its queue"),
        (request(joined_at=MONDAY_10 + 5), "not a past epoch time"),
        (request(joined_at=float("nan")), "not a past epoch time"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_error_and_nothing_is_kept(
    bad: QueuedCallbackRequest, message: str
) -> None:
    k = keeper()
    with pytest.raises(ValueError, match=message):
        k.hold(bad, MONDAY_10)
    assert k.snapshot(MONDAY_10) == []


# --- order against real callers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("real_priority", "real_join", "callback_priority", "callback_due"),
    [
        (0, MONDAY_10 - 400, 0, False),  # joined before the callback's caller: ahead
        (0, MONDAY_10 - 300, 0, False),  # same second: the real caller keeps the line
        (0, MONDAY_10 - 200, 0, True),  # joined after: behind
        (None, MONDAY_10 - 200, 0, True),  # unknown priority is Asterisk's 0
        (5, MONDAY_10 - 10, 0, False),  # more urgent, whenever it joined
        (5, MONDAY_10 - 400, 6, True),  # less urgent, however long it waited
        (5, MONDAY_10 - 200, 5, True),
    ],
)
def test_a_virtual_caller_is_due_only_when_no_real_caller_is_ahead_of_it(
    real_priority: int | None, real_join: float, callback_priority: int, callback_due: bool
) -> None:
    k = keeper()
    live = one_agent()
    live.add_caller(QUEUE, real_join, real_priority)
    live.add_caller(OTHER, MONDAY_10 - 3600, 9)  # another queue's callers never count
    callback = k.hold(request(priority=callback_priority, joined_at=MONDAY_10 - 300), MONDAY_10)
    assert dials(k, MONDAY_10, live) == ([(callback, "PJSIP/agent1")] if callback_due else [])


def test_with_priority_aging_a_virtual_caller_ages_like_the_real_callers() -> None:
    live = one_agent()
    live.add_caller(QUEUE, MONDAY_10 - 180, priority=60)  # base 0, aged by the ticker after 180 s
    policy = AgingPolicy(points=10, targets={QUEUE: 30.0})  # +10 per 30 s waited
    unaged, aging = keeper(), keeper(priority_at=aged_priority(policy))
    for k in (unaged, aging):
        k.hold(request(joined_at=MONDAY_10 - 240), MONDAY_10)  # base 0 too, waited longer
    assert dials(unaged, MONDAY_10, live) == []  # a frozen priority would lose its place
    assert dials(aging, MONDAY_10, live) == [("cb1", "PJSIP/agent1")]
    live.add_caller(QUEUE, MONDAY_10 - 300, priority=100)  # waited longer still: ahead
    assert dials(aging, MONDAY_10, live) == []


def test_callbacks_are_dialled_in_serving_order_when_agents_are_few() -> None:
    k = keeper()
    live = one_agent()
    late = k.hold(request("0611111111", joined_at=MONDAY_10 - 100), MONDAY_10)
    early = k.hold(request("0622222222", joined_at=MONDAY_10 - 200), MONDAY_10)
    urgent = k.hold(request("0633333333", priority=3, joined_at=MONDAY_10 - 10), MONDAY_10)
    assert dial_all(k, MONDAY_10, live) == [(urgent, "PJSIP/agent1")]
    k.note_outcome(urgent, CallbackOutcome.ANSWERED, MONDAY_10 + 1)
    assert dial_all(k, MONDAY_10 + 2, live) == [(early, "PJSIP/agent1")]
    k.note_outcome(early, CallbackOutcome.ANSWERED, MONDAY_10 + 3)
    assert dial_all(k, MONDAY_10 + 4, live) == [(late, "PJSIP/agent1")]
    assert [c.id for c in k.snapshot(MONDAY_10 + 5)] == [late, urgent, early]  # dialing, then finished


# --- agents ----------------------------------------------------------------------------------------


def test_never_more_callbacks_than_free_agents_of_the_queue_nor_one_agent_twice() -> None:
    k = keeper()
    live = FakeLive()
    live.add_agent("agent1")
    live.add_agent("agent2", QUEUE, OTHER)
    live.add_agent("agent3", OTHER)  # not a member of the queue
    live.add_agent("agent4", state=AgentState.TALKING)
    live.add_agent("agent5", state=AgentState.PAUSED)
    live.add_agent("agent6", state=AgentState.WRAPUP)
    ids = [k.hold(request(f"06000000{n:02d}", joined_at=MONDAY_10 - 100 + n), MONDAY_10) for n in range(3)]
    first = dial_all(k, MONDAY_10, live)
    assert first == [(ids[0], "PJSIP/agent1"), (ids[1], "PJSIP/agent2")]
    # the live model may still show them available while their phones ring: they are not free
    assert dials(k, MONDAY_10 + 1, live) == []
    assert [state(k, i).state for i in ids] == ["dialing", "dialing", "waiting"]
    k.note_outcome(ids[1], CallbackOutcome.ANSWERED, MONDAY_10 + 2)
    assert dials(k, MONDAY_10 + 3, live) == [(ids[2], "PJSIP/agent2")]


def test_the_agent_least_recently_dialled_by_the_keeper_is_chosen() -> None:
    k = keeper()
    live = FakeLive()
    live.add_agent("agent1")
    live.add_agent("agent2")
    one = k.hold(request("0611111111"), MONDAY_10)
    assert dial_all(k, MONDAY_10, live) == [(one, "PJSIP/agent1")]
    k.note_outcome(one, CallbackOutcome.ANSWERED, MONDAY_10 + 60)
    two = k.hold(request("0622222222"), MONDAY_10 + 61)
    assert dials(k, MONDAY_10 + 61, live) == [(two, "PJSIP/agent2")]


def test_an_agent_who_does_not_answer_costs_no_attempt_and_the_callback_tries_another_agent() -> None:
    k = keeper(agent_rest_s=30.0)
    live = FakeLive()
    live.add_agent("agent1")
    live.add_agent("agent2")
    callback = k.hold(request(), MONDAY_10)
    assert dial_all(k, MONDAY_10, live) == [(callback, "PJSIP/agent1")]
    k.note_outcome(callback, CallbackOutcome.AGENT_NO_ANSWER, MONDAY_10 + 20)
    held = state(k, callback)
    assert (held.state, held.attempts, held.outcomes) == ("waiting", 0, (CallbackOutcome.AGENT_NO_ANSWER,))
    assert held.next_attempt_at is None
    assert dial_all(k, MONDAY_10 + 20, live) == [(callback, "PJSIP/agent2")]
    k.note_outcome(callback, CallbackOutcome.AGENT_NO_ANSWER, MONDAY_10 + 40)
    # both rest: later, the first one again
    assert dials(k, MONDAY_10 + 45, live) == []
    assert dials(k, MONDAY_10 + 50, live) == [(callback, "PJSIP/agent1")]
    assert state(k, callback).attempts == 0


def test_a_late_agent_outcome_for_a_callback_no_longer_dialling_is_ignored() -> None:
    k = keeper()
    callback = k.hold(request(), MONDAY_10)
    dial_all(k, MONDAY_10, one_agent())
    k.cancel_dial(callback, MONDAY_10 + 1)
    k.note_outcome(callback, CallbackOutcome.AGENT_NO_ANSWER, MONDAY_10 + 2)
    assert state(k, callback).outcomes == ()


# --- opening hours, retries, attempts ------------------------------------------------------------


def test_nothing_is_dialled_while_the_platform_is_closed() -> None:
    k = keeper()
    live = one_agent()
    callback = k.hold(request(joined_at=at(30, 7)), at(30, 7, 10))
    assert dials(k, at(30, 8, 29), live) == []
    assert dials(k, at(30, 8, 30), live) == [(callback, "PJSIP/agent1")]
    assert dials(k, at(30, 17, 30), live) == []
    assert dials(k, at(28, 11), live) == []  # Saturday


def test_a_citizen_who_does_not_answer_is_retried_after_the_retry_delay() -> None:
    k = keeper(retry_s=600.0)
    live = one_agent()
    callback = k.hold(request(), MONDAY_10)
    dial_all(k, MONDAY_10, live)
    k.note_outcome(callback, CallbackOutcome.NO_ANSWER, MONDAY_10 + 40, "DIALSTATUS=NOANSWER")
    held = state(k, callback)
    assert (held.state, held.attempts, held.next_attempt_at) == ("waiting", 1, MONDAY_10 + 640)
    assert dials(k, MONDAY_10 + 639, live) == []
    assert dials(k, MONDAY_10 + 640, live) == [(callback, "PJSIP/agent1")]


@pytest.mark.parametrize(
    ("failed_at", "retry_at"),
    [
        (at(30, 17, 25), dec(1, 8, 30)),  # Monday evening -> Tuesday morning
        (dec(4, 17, 21), dec(7, 8, 30)),  # Friday evening -> Monday morning
        (dec(4, 17, 15), dec(4, 17, 25)),  # still open then
    ],
)
def test_a_retry_falling_after_closing_waits_for_the_next_opening(failed_at: float, retry_at: float) -> None:
    k = keeper(retry_s=600.0)
    live = one_agent()
    callback = k.hold(request(joined_at=failed_at - 600), failed_at - 60)
    dial_all(k, failed_at - 60, live)
    k.note_outcome(callback, CallbackOutcome.BUSY, failed_at)
    assert state(k, callback).next_attempt_at == retry_at
    assert dials(k, retry_at - 1, live) == []
    assert dials(k, retry_at, live) == [(callback, "PJSIP/agent1")]


def test_a_retry_over_christmas_skips_the_public_holiday() -> None:
    k = keeper(retry_s=600.0)
    callback = k.hold(request(joined_at=dec(24, 17)), dec(24, 17, 10))
    dial_all(k, dec(24, 17, 10), one_agent())
    k.note_outcome(callback, CallbackOutcome.UNCONFIRMED, dec(24, 17, 25))
    assert state(k, callback).next_attempt_at == dec(28, 8, 30)  # Friday 25th is Christmas


async def test_attempts_exhausted_make_the_callback_failed_and_a_back_office_request() -> None:
    sink = InMemoryCallbackSink()
    now = [MONDAY_10]
    k = keeper(attempts=3, retry_s=60.0, back_office=sink, clock=lambda: now[0])
    live = one_agent()
    callback = await k.keep(
        QueuedCallbackRequest(
            "0612345678", QUEUE, 4, MONDAY_10 - 300, caller_name="Zoé", citizen_id="c-7", reason="apa-dossier"
        )
    )
    outcomes = [CallbackOutcome.NO_ANSWER, CallbackOutcome.BUSY, CallbackOutcome.UNCONFIRMED]
    for number, outcome in enumerate(outcomes, start=1):
        assert dial_all(k, now[0], live) == [(callback, "PJSIP/agent1")]
        now[0] += 30
        await k.record_outcome(callback, outcome)
        assert state(k, callback).attempts == number
        now[0] += 60
    failed = state(k, callback)
    assert (failed.state, failed.next_attempt_at, failed.outcomes) == ("failed", None, tuple(outcomes))
    assert dials(k, now[0] + 3600, live) == []
    assert sink.requests == [
        CallbackRequest(
            number="+33612345678",
            service=QUEUE,
            reason="apa-dossier",
            requested_at=datetime.fromtimestamp(MONDAY_10 - 300, PARIS),
            caller_name="Zoé",
            citizen_id="c-7",
        )
    ]
    await k.record_outcome(callback, CallbackOutcome.ANSWERED)  # too late: finished
    assert state(k, callback).state == "failed"
    assert len(sink.requests) == 1


async def test_a_back_office_that_fails_gets_the_request_again_later() -> None:
    class FlakySink:
        def __init__(self) -> None:
            self.calls = 0
            self.requests: list[CallbackRequest] = []

        async def record(self, request: CallbackRequest) -> str:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("database down")
            self.requests.append(request)
            return "r1"

    sink = FlakySink()
    k = keeper(attempts=1, back_office=sink, clock=lambda: MONDAY_10 + 30)
    callback = k.hold(request(), MONDAY_10)
    dial_all(k, MONDAY_10, one_agent())
    await k.record_outcome(callback, CallbackOutcome.FAILED, "CONGESTION")
    assert (sink.calls, sink.requests) == (1, [])
    await k.file_failed()
    assert [r.number for r in sink.requests] == ["+33612345678"]
    await k.file_failed()
    assert sink.calls == 2


def test_an_answered_and_confirmed_callback_is_done_and_frees_its_agent() -> None:
    k = keeper()
    live = one_agent()
    callback = k.hold(request(), MONDAY_10)
    other = k.hold(request("0699999999"), MONDAY_10)
    dial_all(k, MONDAY_10, live)
    k.agent_answered(callback, MONDAY_10 + 5)
    k.note_outcome(callback, CallbackOutcome.ANSWERED, MONDAY_10 + 25)
    done = state(k, callback)
    assert (done.state, done.attempts, done.outcomes, done.next_attempt_at) == (
        "done",
        1,
        (CallbackOutcome.ANSWERED,),
        None,
    )
    assert dials(k, MONDAY_10 + 26, live) == [(other, "PJSIP/agent1")]


async def test_outcomes_for_unknown_ids_are_ignored() -> None:
    k = keeper(clock=lambda: MONDAY_10)
    callback = k.hold(request(), MONDAY_10)
    await k.record_outcome("nope", CallbackOutcome.ANSWERED)
    await k.record_outcome("", CallbackOutcome.NO_ANSWER)
    assert [(c.id, c.state, c.outcomes) for c in await k.pending()] == [(callback, "waiting", ())]


# --- guards and listing ----------------------------------------------------------------------------


def test_a_dial_without_any_outcome_is_settled_by_the_guards() -> None:
    k = keeper(dial_timeout_s=60.0, outcome_timeout_s=300.0, agent_rest_s=0.0)
    live = one_agent()
    silent = k.hold(request(), MONDAY_10)
    dial_all(k, MONDAY_10, live)
    k.expire(MONDAY_10 + 59)
    assert state(k, silent).state == "dialing"
    k.expire(MONDAY_10 + 60)  # no OriginateResponse ever came
    assert (state(k, silent).state, state(k, silent).outcomes, state(k, silent).attempts) == (
        "waiting",
        (CallbackOutcome.AGENT_NO_ANSWER,),
        0,
    )
    dial_all(k, MONDAY_10 + 60, live)
    k.agent_answered(silent, MONDAY_10 + 65)
    k.expire(MONDAY_10 + 364)
    assert state(k, silent).state == "dialing"
    k.expire(MONDAY_10 + 365)  # the agent answered, the routes never reported the citizen
    assert state(k, silent).outcomes[-1] is CallbackOutcome.FAILED
    assert state(k, silent).attempts == 1


def test_pending_lists_dialling_then_waiting_in_serving_order_then_today_finished() -> None:
    k = keeper()
    live = one_agent()
    yesterday = k.hold(request("0600000001", joined_at=at(27, 9)), at(27, 9, 5))  # Friday
    dial_all(k, at(27, 9, 5), live)
    k.note_outcome(yesterday, CallbackOutcome.ANSWERED, at(27, 9, 6))
    done = k.hold(request("0600000002"), MONDAY_10)
    dial_all(k, MONDAY_10, live)
    k.note_outcome(done, CallbackOutcome.ANSWERED, MONDAY_10 + 10)
    low = k.hold(request("0600000003", joined_at=MONDAY_10 - 900), MONDAY_10 + 20)
    high = k.hold(request("0600000004", priority=5, joined_at=MONDAY_10 - 10), MONDAY_10 + 20)
    later = k.hold(request("0600000005", joined_at=MONDAY_10 - 800), MONDAY_10 + 20)
    dial_all(k, MONDAY_10 + 20, live)
    listing = [(c.id, c.state) for c in k.snapshot(MONDAY_10 + 30)]
    assert listing == [(high, "dialing"), (low, "waiting"), (later, "waiting"), (done, "done")]
    k.expire(MONDAY_10 + 30)
    assert k.get(yesterday) is None  # finished before today: forgotten


# --- the Originate ------------------------------------------------------------------------------


def test_the_originate_rings_the_agent_first_with_safe_caller_id_and_variables() -> None:
    callback = QueuedCallback(
        id="cb9",
        request=QueuedCallbackRequest(
            "+33612345678",
            QUEUE,
            2,
            MONDAY_10,
            caller_name='Zoé "VIP" <x>\r\nAction: Hangup',
            citizen_id="c,1",
            contact_id="k-2",
        ),
        state="waiting",
        attempts=0,
        outcomes=(),
        next_attempt_at=None,
    )
    headers = originate_headers(callback, "PJSIP/agent7", "callbacks", 20.0)
    assert headers[:7] == [
        ("Channel", "PJSIP/agent7"),
        ("Context", "callbacks"),
        ("Exten", "s"),
        ("Priority", "1"),
        ("Timeout", "20000"),
        ("CallerID", '"Rappel Zoé VIP x Action: Hangup" <+33612345678>'),
        ("Async", "true"),
    ]
    assert headers[7:] == [
        ("Variable", f"{GUICHET_CALLBACK_ID}=cb9"),
        ("Variable", f"{GUICHET_CALLBACK_NUMBER}=+33612345678"),
        ("Variable", f"{GUICHET_QUEUE}={QUEUE}"),
        ("Variable", f"{GUICHET_CITIZEN_ID}=c 1"),
        ("Variable", "GUICHET_CONTACT_ID=k-2"),
    ]


class ScriptedAmi:
    """An AMI client that answers Originate at once and can deliver its OriginateResponse first
    (the same read buffer can hold both: the subscriber then runs before send_action returns)."""

    def __init__(self, reason: str | None = None, fail: bool = False) -> None:
        self.reason = reason
        self.fail = fail
        self.sent: list[list[tuple[str, str]]] = []
        self.dispatcher: CallbackDispatcher | None = None

    async def send_action(self, action: str, headers: Sequence[tuple[str, str]]) -> AmiResponse:
        if self.fail:
            raise AmiConnectionLost("AMI Originate: not connected")
        self.sent.append(list(headers))
        action_id = f"a-{len(self.sent)}"
        if self.reason is not None and self.dispatcher is not None:
            self.dispatcher.on_originate_response(
                AmiMessage([("Event", "OriginateResponse"), ("ActionID", action_id), ("Reason", self.reason)])
            )
        return AmiResponse(AmiMessage([("Response", "Success"), ("ActionID", action_id)]))


def scripted(k: CallbackKeeper, ami: ScriptedAmi, live: FakeLive, now: float) -> CallbackDispatcher:
    dispatcher = CallbackDispatcher(k, ami, live, clock=lambda: now)
    ami.dispatcher = dispatcher
    return dispatcher


@pytest.mark.parametrize(("reason", "answered"), [("4", True), ("3", False), ("5", False), ("0", False)])
async def test_an_originate_response_read_before_its_reply_is_still_followed(
    reason: str, answered: bool
) -> None:
    k = keeper()
    live = FakeLive()
    live.add_agent("agent1")
    live.add_agent("agent2")
    callback = k.hold(request(), MONDAY_10)
    dispatcher = scripted(k, ScriptedAmi(reason), live, MONDAY_10)
    assert [d.interface for d in await dispatcher.tick()] == ["PJSIP/agent1"]
    held = state(k, callback)
    if answered:
        assert (held.state, held.agent, held.agent_answered_at, held.outcomes) == (
            "dialing",
            "PJSIP/agent1",
            MONDAY_10,
            (),
        )
    else:
        assert (held.state, held.attempts, held.outcomes) == (
            "waiting",
            0,
            (CallbackOutcome.AGENT_NO_ANSWER,),
        )
        assert [d.interface for d in await dispatcher.tick()] == ["PJSIP/agent2"]


async def test_an_originate_that_cannot_be_sent_leaves_the_callback_waiting() -> None:
    k = keeper(agent_rest_s=30.0)
    live = one_agent()
    callback = k.hold(request(), MONDAY_10)
    ami = ScriptedAmi(fail=True)
    assert await scripted(k, ami, live, MONDAY_10).tick() == []
    held = state(k, callback)
    assert (held.state, held.agent, held.attempts, held.outcomes) == ("waiting", None, 0, ())
    ami.fail = False
    assert await scripted(k, ami, live, MONDAY_10 + 1).tick() == []  # the agent rests a little
    assert len(await scripted(k, ami, live, MONDAY_10 + 30).tick()) == 1


def test_the_agent_ring_time_must_end_before_the_keeper_gives_up_on_the_dial() -> None:
    k = keeper(dial_timeout_s=30.0)
    with pytest.raises(ValueError, match="agent_ring_s 30 must be positive and below dial_timeout_s 30"):
        CallbackDispatcher(k, ScriptedAmi(), FakeLive(), agent_ring_s=30.0)


# --- several engine nodes: the store's inbox and the saved keeper --------------------------------


def node(store: StateStore, now: list[float], prefix: str) -> SharedCallbacks:
    ids = itertools.count(1)
    return SharedCallbacks(store, clock=lambda: now[0], new_id=lambda: f"{prefix}{next(ids)}")


async def test_requests_and_outcomes_from_any_node_reach_the_leaders_keeper(
    pair: tuple[StateStore, StateStore],
) -> None:
    leader_store, other_store = pair
    now = [MONDAY_10]
    here, there = node(leader_store, now, "a"), node(other_store, now, "b")
    k = keeper(clock=lambda: now[0])
    live = one_agent()
    ami = ScriptedAmi()
    dispatcher = CallbackDispatcher(k, ami, live, clock=lambda: now[0], store=leader_store)
    first = await there.keep(request("06 12 34 56 78", priority=1, joined_at=MONDAY_10 - 300))
    assert [(c.id, c.state, c.request.number) for c in await here.pending()] == [
        (first, "waiting", "+33612345678")  # not taken yet: listed from the inbox
    ]
    now[0] += 1
    assert [d.callback.id for d in await dispatcher.tick()] == [first]  # taken, then dialled
    assert dict(ami.sent[0])["Channel"] == "PJSIP/agent1"
    duplicate = await here.keep(request("+33612345678", priority=4, joined_at=MONDAY_10 - 100))
    other = await here.keep(request("0698765432", joined_at=MONDAY_10 - 200))
    now[0] += 1
    await dispatcher.tick()
    listing = await there.pending()
    assert [(c.id, c.state, c.merged, c.request.priority) for c in listing] == [
        (first, "dialing", 1, 4),
        (other, "waiting", 0, 0),
    ]
    await there.record_outcome(duplicate, CallbackOutcome.NO_ANSWER, "DIALSTATUS=NOANSWER")  # by its alias
    await here.record_outcome(other, CallbackOutcome.ANSWERED)
    now[0] += 1
    await dispatcher.tick()
    after = {c.id: c for c in await there.pending()}
    assert (after[first].state, after[first].attempts, after[first].next_attempt_at) == (
        "waiting",
        1,
        now[0] + 599,
    )
    assert after[other].state == "done"
    assert await other_store.documents(INBOX_KIND) == {}


async def test_requests_taken_from_the_inbox_are_saved_before_any_originate() -> None:
    store = MemoryStateStore()
    now = [MONDAY_10]
    gate = asyncio.Event()

    class SlowAmi(ScriptedAmi):
        async def send_action(self, action: str, headers: Sequence[tuple[str, str]]) -> AmiResponse:
            await gate.wait()
            return await super().send_action(action, headers)

    shared = node(store, now, "a")
    callback = await shared.keep(request())
    dispatcher = CallbackDispatcher(keeper(), SlowAmi(), one_agent(), clock=lambda: now[0], store=store)
    tick = asyncio.create_task(dispatcher.tick())
    for _ in range(1000):  # until the tick waits on its Originate
        if not await store.documents(INBOX_KIND):
            break
        await asyncio.sleep(0.01)
    assert [(c.id, c.state) for c in await shared.pending()] == [(callback, "waiting")]  # saved, not inbox
    gate.set()
    await asyncio.wait_for(tick, 10)
    assert [(c.id, c.state) for c in await shared.pending()] == [(callback, "dialing")]


async def test_a_new_leader_restores_the_saved_keeper(pair: tuple[StateStore, StateStore]) -> None:
    old_store, new_store = pair
    now = [MONDAY_10]
    sink = InMemoryCallbackSink()
    old = keeper(clock=lambda: now[0], attempts=1, dial_timeout_s=60.0)
    live = FakeLive()
    live.add_agent("agent1")
    live.add_agent("agent2")
    gone = old.hold(request("0611111111"), now[0])
    failed = old.hold(request("0622222222"), now[0])
    waiting = old.hold(request("0633333333"), now[0])
    dial_all(old, now[0], live)
    old.note_outcome(failed, CallbackOutcome.BUSY, now[0] + 10)  # failed, not filed yet
    await old.save(old_store, now[0] + 10)
    new = keeper(clock=lambda: now[0], attempts=1, dial_timeout_s=60.0, back_office=sink)
    assert await new.restore(new_store) == 3
    assert [(c.id, c.state) for c in new.snapshot(now[0] + 10)] == [
        (gone, "dialing"),
        (waiting, "waiting"),
        (failed, "failed"),
    ]
    await new.file_failed()
    assert [r.number for r in sink.requests] == ["+33622222222"]
    new.expire(now[0] + 60)  # the old leader's Originate outcome will never come here
    assert state(new, gone).outcomes == (CallbackOutcome.AGENT_NO_ANSWER,)
    assert dials(new, now[0] + 60, live) == [(gone, "PJSIP/agent2")]  # agent1 did not answer: rests


async def test_unreadable_documents_are_set_aside_not_lost(pair: tuple[StateStore, StateStore]) -> None:
    store, other = pair
    await store.put_document(CALLBACKS_KIND, CALLBACKS_DOCUMENT, '{"callbacks": [{"id": 1}]}')
    await store.put_document(INBOX_KIND, "junk", "not json")
    await store.put_document(
        INBOX_KIND,
        "bad-number",
        json.dumps(
            {
                "op": "keep",
                "id": "x",
                "at": 1.0,
                "request": {"number": "12", "queue": QUEUE, "priority": 0, "joined_at": 0.5},
            }
        ),
    )
    k = keeper(clock=lambda: MONDAY_10)
    assert await k.restore(other) == 0
    aside = await other.documents(CALLBACKS_KIND)
    assert aside[f"unreadable-{MONDAY_10:.0f}"] == '{"callbacks": [{"id": 1}]}'
    assert await k.take_inbox(other) == 1  # the junk is dropped unread, the bad request refused
    assert await store.documents(INBOX_KIND) == {}
    assert k.snapshot(MONDAY_10) == []


async def test_a_node_refuses_a_bad_request_at_once(pair: tuple[StateStore, StateStore]) -> None:
    store, _ = pair
    with pytest.raises(ValueError, match="not a valid public phone number"):
        await node(store, [MONDAY_10], "a").keep(request("12"))
    assert await store.documents(INBOX_KIND) == {}


# --- the dispatcher against the simulated PBX -----------------------------------------------------

SPEED = 20.0
IVR_COMMANDS = (
    "ANSWER",
    f"SET VARIABLE {GUICHET_QUEUE} {QUEUE}",
    f"SET VARIABLE {GUICHET_PRIO} 0",
    f"SET VARIABLE {GUICHET_IVR_DONE} 1",
)


class RecordingAmi:
    """The engine's AMI client, with every Originate it sends and what the PBX looked like then."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.originates: list[list[tuple[str, str]]] = []
        self.callers_done_then: list[bool] = []

    def subscribe(self, event_name: str, callback: Callable[[AmiMessage], None]) -> Callable[[], None]:
        ami = self.rig.engine.ami
        assert ami is not None
        return ami.subscribe(event_name, callback)

    async def send_action(self, action: str, headers: Sequence[tuple[str, str]]) -> AmiResponse:
        ami = self.rig.engine.ami
        assert ami is not None
        if action == "Originate":
            self.originates.append(list(headers))
            self.callers_done_then.append(all(h.finished.done() for h in self.rig.handles))
        return await ami.send_action(action, headers)

    def channels(self) -> list[str]:
        return [dict(o)["Channel"] for o in self.originates]


@dataclass
class Rig:
    pbx: SimulatedPbx
    engine: Engine
    handles: list[CallHandle] = field(default_factory=list)

    def now(self) -> float:
        return self.pbx.clock.now()

    def call(self, number: str) -> CallHandle:
        handle = self.pbx.place_call(CallerScript(number, f"Caller {number}"))
        self.handles.append(handle)
        return handle

    def dispatcher(
        self, k: CallbackKeeper, agent_ring_s: float = 20.0
    ) -> tuple[CallbackDispatcher, RecordingAmi]:
        ami = RecordingAmi(self)
        dispatcher = CallbackDispatcher(
            k, ami, self.engine.live, clock=self.now, context=CALLBACK_DIAL_CONTEXT, agent_ring_s=agent_ring_s
        )
        assert self.engine.ami is not None
        self.engine.ami.subscribe(EV_ORIGINATE_RESPONSE, dispatcher.on_originate_response)
        return dispatcher, ami


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with engine_beside_sim(AgiResponder(IVR_COMMANDS), QUEUE, SPEED) as (pbx, engine):
        yield Rig(pbx, engine)


async def until(condition: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(dispatcher: CallbackDispatcher) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(0.01, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def sim_keeper(rig: Rig, **kwargs: object) -> CallbackKeeper:
    return keeper(schedule=ALWAYS_OPEN, clock=rig.now, **kwargs)


async def test_a_callback_behind_two_real_callers_waits_until_they_are_served(rig: Rig) -> None:
    first, second = rig.call("0611111111"), rig.call("0622222222")
    await until(lambda: len(rig.engine.live.callers(QUEUE)) == 2, "two callers wait")
    k = sim_keeper(rig)
    dispatcher, ami = rig.dispatcher(k)
    callback = await k.keep(request("0633333333", joined_at=rig.now()))
    async with running(dispatcher):
        rig.pbx.add_agent(SimAgent("PJSIP/agent1", "Agent One", queues=[QUEUE], answer_delay=1, talk_time=5))
        await until(lambda: state(k, callback).agent_answered_at is not None, "the agent answers (Reason 4)")
    assert ami.channels() == ["PJSIP/agent1"]
    assert ami.callers_done_then == [True]  # both real callers were served before
    assert [(await h.finished).answered_by for h in (first, second)] == ["PJSIP/agent1"] * 2
    (sent,) = ami.originates
    assert sent[:7] == [
        ("Channel", "PJSIP/agent1"),
        ("Context", CALLBACK_DIAL_CONTEXT),
        ("Exten", "s"),
        ("Priority", "1"),
        ("Timeout", "20000"),
        ("CallerID", '"Rappel" <+33633333333>'),
        ("Async", "true"),
    ]
    assert sent[7:9] == [
        ("Variable", f"{GUICHET_CALLBACK_ID}={callback}"),
        ("Variable", f"{GUICHET_CALLBACK_NUMBER}=+33633333333"),
    ]
    held = state(k, callback)
    assert (held.state, held.agent, held.outcomes) == ("dialing", "PJSIP/agent1", ())
    await k.record_outcome(callback, CallbackOutcome.ANSWERED)  # what the callback-confirm route says
    assert (state(k, callback).state, state(k, callback).agent) == ("done", None)


async def test_an_agent_who_does_not_answer_is_replaced_by_another(rig: Rig) -> None:
    rig.pbx.add_agent(SimAgent("PJSIP/agent1", "Absent", queues=[QUEUE], answer_delay=None))
    rig.pbx.add_agent(SimAgent("PJSIP/agent2", "Present", queues=[QUEUE], answer_delay=1))
    await until(lambda: len(rig.engine.live.agents(rig.now())) == 2, "two agents are known")
    k = sim_keeper(rig, agent_rest_s=3600.0)
    ami = RecordingAmi(rig)
    duty = callback_duty(k, rig.engine.live, interval_s=0.01, clock=rig.now, agent_ring_s=5.0)
    callback = await k.keep(request(joined_at=rig.now()))
    stop = asyncio.Event()
    task = asyncio.ensure_future(duty(ami, stop))  # as the engine runs it on the leader
    await until(lambda: state(k, callback).agent_answered_at is not None, "an agent answers", limit_s=30)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert ami.channels() == ["PJSIP/agent1", "PJSIP/agent2"]
    held = state(k, callback)
    assert (held.state, held.agent, held.attempts) == ("dialing", "PJSIP/agent2", 0)
    assert held.outcomes == (CallbackOutcome.AGENT_NO_ANSWER,)


async def test_two_free_agents_and_three_callbacks_make_two_dials(rig: Rig) -> None:
    rig.pbx.add_agent(SimAgent("PJSIP/agent1", "One", queues=[QUEUE], answer_delay=1))
    rig.pbx.add_agent(SimAgent("PJSIP/agent2", "Two", queues=[QUEUE], answer_delay=1))
    await until(lambda: len(rig.engine.live.agents(rig.now())) == 2, "two agents are known")
    k = sim_keeper(rig)
    dispatcher, ami = rig.dispatcher(k)
    base = rig.now()
    ids = [await k.keep(request(f"06000000{n:02d}", joined_at=base - 100 + n)) for n in range(3)]
    for _ in range(3):
        await dispatcher.tick()
    assert sorted(ami.channels()) == ["PJSIP/agent1", "PJSIP/agent2"]
    assert [state(k, i).state for i in ids] == ["dialing", "dialing", "waiting"]
    await until(lambda: all(state(k, i).agent_answered_at is not None for i in ids[:2]), "both agents answer")
    await k.record_outcome(ids[0], CallbackOutcome.ANSWERED)
    async with running(dispatcher):  # an agent takes the third once free again
        await until(lambda: len(ami.originates) == 3, "the third callback is dialled")
    assert ami.channels()[2] == state(k, ids[2]).agent
    assert dict(ami.originates[2])["CallerID"] == '"Rappel" <+33600000002>'


# --- end to end: the caller presses 1 while queued, the citizen is called back ---------------------

OPEN = datetime(2026, 6, 2, 10, 0, tzinfo=PARIS)  # the menus' clock: a Tuesday, 10:00
CITIZEN = "+33612345678"
APA_KEYS = KeyPress(0.5, "12")  # the default menu: 1 (APA) then 2 -> queue apa, QUEUE_PRIO 10
KEEP_MY_PLACE = (APA_KEYS, KeyPress(3.0, "1"), KeyPress(10.0, "1"))  # exit key, then "my number is right"


@contextlib.asynccontextmanager
async def platform(
    citizen: Callee,
) -> AsyncIterator[tuple[SimulatedPbx, Engine, SharedCallbacks, MemoryStateStore]]:
    """The production wiring on the simulated PBX: routes on SharedCallbacks, the keeper as a duty."""
    store = MemoryStateStore()
    pbx: SimulatedPbx | None = None

    def sim_now() -> float:
        assert pbx is not None
        return pbx.clock.now()

    shared = SharedCallbacks(store, clock=sim_now)
    exits = QueueExits(shared, {queue: "general" for queue in SERVICE_QUEUES}, now=sim_now)
    server = FastAgiServer(build_routes(default_menu_engine(now=lambda: OPEN), exits), port=0)
    await server.start()
    pbx = SimulatedPbx(
        SimConfig(
            agi_port=server.port,
            speed=SPEED,
            queues=[QueueConfig(q, context=QUEUE_EXIT_CONTEXT) for q in SERVICE_QUEUES],
            dialplan=inbound_dialplan(f"agi://127.0.0.1:{server.port}"),
            callees={CITIZEN: citizen},
        )
    )
    await pbx.start()
    engine = Engine(Settings(), Secret("secret"), RouteTable(), clock=pbx.clock.now)
    try:
        await engine.connect_ami(pbx.ami_port)
        yield pbx, engine, shared, store
    finally:
        await engine.close()
        await pbx.stop()
        await server.close()
        await store.close()


async def called_back(
    citizen: Callee, **options: object
) -> tuple[QueuedCallback, list[list[tuple[str, str]]]]:
    """A caller keeps their place, an agent logs in; the callback as the API lists it once settled."""
    async with platform(citizen) as (pbx, engine, shared, store):
        handle = pbx.place_call(CallerScript("0612345678", "Zoé", keys=KEEP_MY_PLACE))
        await asyncio.wait_for(handle.finished, 60)  # hung up after "vous gardez votre place"
        (waiting,) = await shared.pending()
        assert (waiting.request.number, waiting.request.queue, waiting.request.priority) == (
            CITIZEN,
            QUEUE,
            10,
        )
        assert waiting.request.joined_at == float(handle.channel.variables["GUICHET_QUEUED_AT"])
        k = keeper(schedule=ALWAYS_OPEN, clock=pbx.clock.now, new_id=uuid_ids(), **options)
        rig = Rig(pbx, engine)
        ami = RecordingAmi(rig)
        duty = callback_duty(k, engine.live, store=store, interval_s=0.01, clock=pbx.clock.now)
        stop = asyncio.Event()
        task = asyncio.ensure_future(duty(ami, stop))
        try:
            pbx.add_agent(SimAgent("PJSIP/agent1", "Agent", queues=[QUEUE], answer_delay=1))
            await until(lambda: any(c.outcomes for c in k.snapshot(pbx.clock.now())), "an outcome", 60)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        (listed,) = await shared.pending()
        return listed, ami.originates


def uuid_ids() -> Callable[[], str]:
    return lambda: uuid.uuid4().hex[:16]


async def test_a_caller_keeps_their_place_and_is_called_back_agent_first() -> None:
    listed, originates = await called_back(Callee(keys=[KeyPress(1.0, "1")], talk_s=5))
    assert (listed.state, listed.attempts, listed.outcomes) == ("done", 1, (CallbackOutcome.ANSWERED,))
    (sent,) = originates
    assert sent[:3] == [("Channel", "PJSIP/agent1"), ("Context", CALLBACK_DIAL_CONTEXT), ("Exten", "s")]
    assert ("Variable", f"{GUICHET_CALLBACK_ID}={listed.id}") in sent
    assert ("Variable", f"{GUICHET_CALLBACK_NUMBER}={CITIZEN}") in sent
    assert ("CallerID", f'"Rappel Zoé" <{CITIZEN}>') in sent


async def test_a_voicemail_is_not_answered_and_the_callback_is_retried_later() -> None:
    listed, originates = await called_back(Callee(keys=()), retry_s=600.0)  # answers, nobody presses 1
    assert (listed.state, listed.attempts, listed.outcomes) == ("waiting", 1, (CallbackOutcome.UNCONFIRMED,))
    assert listed.next_attempt_at is not None
    assert len(originates) == 1
