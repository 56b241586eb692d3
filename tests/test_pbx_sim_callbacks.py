"""The simulated PBX on a queued callback's legs: Originate running the callback context once the agent
answered, Dial() to the citizen with its U() subroutine (GOSUB_RESULT), DIALSTATUS per callee,
MASTER_CHANNEL() back to the agent's leg, ${EPOCH}.

A small FastAGI responder answers each route with its own scripted commands and keeps the
``agi_arg_*`` each route received, so what the dialplan handed to the engine is what is checked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import pytest

from guichet.names import (
    GOSUB_RESULT,
    GUICHET_CALLBACK_CONFIRMED,
    GUICHET_CALLBACK_ID,
    GUICHET_CALLBACK_NUMBER,
    GUICHET_QUEUED_AT,
    ROUTE_CALLBACK_CONFIRM,
    ROUTE_CALLBACK_RESULT,
)
from pbx_sim import (
    Callee,
    CallerScript,
    Dialplan,
    KeyPress,
    QueueConfig,
    SimAgent,
    SimConfig,
    SimulatedPbx,
    Step,
)
from pbx_sim.dialplan import CALLBACK_DIAL_CONTEXT, CALLBACK_EXTEN, INBOUND_CONTEXT, inbound_dialplan
from routing.ami import AmiMessage
from tests.sim_fixtures import AgiResponder, AmiReader

SPEED = 20.0
AGENT = "PJSIP/agent1"
CITIZEN = "+33612345678"


def route_responder(commands: Mapping[str, Sequence[str]]) -> AgiResponder:
    """A FastAGI server answering each route (agi_network_script) with its own commands."""
    return AgiResponder(script=lambda env: commands.get(env.get("agi_network_script", ""), ()))


CONFIRM_WITH_KEY = [
    "WAIT FOR DIGIT 5000",
    f"SET VARIABLE {GUICHET_CALLBACK_CONFIRMED} 1",
]
CONFIRM_NOBODY = [
    "WAIT FOR DIGIT 5000",
    f"SET VARIABLE {GUICHET_CALLBACK_CONFIRMED} 0",
    f"SET VARIABLE {GOSUB_RESULT} CONTINUE",
]


@dataclass
class Leg:
    """What one callback Originate gave: the AMI story and the routes' arguments."""

    messages: list[AmiMessage]
    agi: AgiResponder

    def events(self, name: str) -> list[AmiMessage]:
        return [m for m in self.messages if m.kind == "event" and m.name == name]


@pytest.fixture
async def responders() -> AsyncIterator[list[AgiResponder]]:
    made: list[AgiResponder] = []
    yield made
    for responder in made:
        await responder.stop()


async def callback_leg(
    made: list[AgiResponder], confirm: Sequence[str], callee: Callee, agent_answers: bool = True
) -> Leg:
    agi = route_responder({ROUTE_CALLBACK_CONFIRM: confirm})
    made.append(agi)
    await agi.start()
    config = SimConfig(
        agi_port=agi.port,
        speed=SPEED,
        dialplan=inbound_dialplan(f"agi://127.0.0.1:{agi.port}"),
        callees={CITIZEN: callee},
    )
    async with SimulatedPbx(config) as pbx:
        pbx.add_agent(SimAgent(AGENT, "Agent", answer_delay=1.0 if agent_answers else None))
        ami = await AmiReader.connect(pbx.ami_port)
        reply = await ami.action(
            "Originate",
            [
                ("Channel", AGENT),
                ("Context", CALLBACK_DIAL_CONTEXT),
                ("Exten", CALLBACK_EXTEN),
                ("Priority", "1"),
                ("CallerID", '"Departement" <3900>'),
                ("Variable", f"{GUICHET_CALLBACK_NUMBER}={CITIZEN}"),
                ("Variable", f"{GUICHET_CALLBACK_ID}=cb-7"),
                ("Timeout", "15000"),
                ("Async", "true"),
            ],
            "cb-7",
        )
        assert reply.get("Response") == "Success"
        await ami.wait_for(
            lambda m: (
                m.name == "DeviceStateChange"
                and m.get("Device") == AGENT
                and m.get("State") == "NOT_INUSE"
                and any(e.name == "OriginateResponse" for e in ami.messages)
            ),
            limit_s=30,
        )
        await ami.close()
    return Leg(ami.messages, agi)


def agent_states(leg: Leg) -> list[str]:
    return [e.get("State") or "" for e in leg.events("DeviceStateChange") if e.get("Device") == AGENT]


async def test_originate_runs_the_callback_context_and_the_citizen_confirms(
    responders: list[AgiResponder],
) -> None:
    leg = await callback_leg(responders, CONFIRM_WITH_KEY, Callee(keys=[KeyPress(1.0, "1")], talk_s=5))
    (response,) = leg.events("OriginateResponse")
    assert (response.get("Response"), response.get("Reason")) == ("Success", "4")
    (dial,) = leg.events("DialBegin")
    assert dial.get("Channel", "").startswith(AGENT + "-")
    assert dial.get("DialString") == f"{CITIZEN}@trunk"
    # the U() subroutine ran on the citizen's leg with the callback id as ARG1, then the bridge
    assert leg.agi.args_of(ROUTE_CALLBACK_CONFIRM) == [("cb-7",)]
    assert leg.agi.replies_of(ROUTE_CALLBACK_CONFIRM)[0] == b"200 result=49\n"  # the citizen's "1"
    entered = {e.get("Channel", "").split("-")[0] for e in leg.events("BridgeEnter")}
    assert entered == {AGENT, "PJSIP/trunk"}
    # DIALSTATUS, the id and what the citizen's leg set through MASTER_CHANNEL() reach the agent's leg
    assert leg.agi.args_of(ROUTE_CALLBACK_RESULT) == [("ANSWER", "cb-7", "1")]
    assert agent_states(leg) == ["RINGING", "INUSE", "NOT_INUSE"]


async def test_nobody_confirms_continue_hangs_up_the_citizen_before_any_bridge(
    responders: list[AgiResponder],
) -> None:
    leg = await callback_leg(responders, CONFIRM_NOBODY, Callee(keys=()))
    assert leg.agi.replies_of(ROUTE_CALLBACK_CONFIRM)[0] == b"200 result=0\n"  # no key: voicemail, nobody
    assert leg.events("BridgeEnter") == []
    assert [e.get("DialStatus") for e in leg.events("DialEnd")] == ["CONTINUE"]  # app_dial publishes it
    assert leg.agi.args_of(ROUTE_CALLBACK_RESULT) == [("ANSWER", "cb-7", "0")]


async def test_a_citizen_hanging_up_in_the_subroutine_lets_the_agent_leg_go_on_with_g(
    responders: list[AgiResponder],
) -> None:
    leg = await callback_leg(responders, ["HANGUP"], Callee())
    assert leg.events("BridgeEnter") == []
    assert leg.agi.args_of(ROUTE_CALLBACK_RESULT) == [("ANSWER", "cb-7", "")]


async def test_abort_hangs_up_both_legs(responders: list[AgiResponder]) -> None:
    leg = await callback_leg(responders, [f"SET VARIABLE {GOSUB_RESULT} ABORT"], Callee())
    assert leg.events("BridgeEnter") == []
    assert leg.agi.args_of(ROUTE_CALLBACK_CONFIRM) == [("cb-7",)]
    assert leg.agi.args_of(ROUTE_CALLBACK_RESULT) == []  # the agent's leg never reached the next step


@pytest.mark.parametrize(
    ("result", "status"),
    [
        ("noanswer", "NOANSWER"),
        ("busy", "BUSY"),
        ("congestion", "CONGESTION"),
        ("chanunavail", "CHANUNAVAIL"),
    ],
)
async def test_a_citizen_who_does_not_answer_gives_its_dialstatus(
    responders: list[AgiResponder], result: str, status: str
) -> None:
    leg = await callback_leg(responders, CONFIRM_WITH_KEY, Callee(result=result))
    assert leg.agi.args_of(ROUTE_CALLBACK_CONFIRM) == []
    assert [e.get("DialStatus") for e in leg.events("DialEnd")] == [status]
    assert leg.agi.args_of(ROUTE_CALLBACK_RESULT) == [(status, "cb-7", "")]


async def test_an_agent_who_does_not_answer_never_enters_the_callback_context(
    responders: list[AgiResponder],
) -> None:
    leg = await callback_leg(responders, CONFIRM_WITH_KEY, Callee(), agent_answers=False)
    (response,) = leg.events("OriginateResponse")
    assert (response.get("Response"), response.get("Reason")) == ("Failure", "3")
    assert leg.events("DialBegin") == [] and leg.agi.fields == []
    assert agent_states(leg) == ["RINGING", "NOT_INUSE"]


async def test_epoch_is_the_simulated_time_when_the_caller_joins_the_queue() -> None:
    agi = route_responder({"ivr": ["SET VARIABLE GUICHET_QUEUE apa", "SET VARIABLE GUICHET_IVR_DONE 1"]})
    await agi.start()
    epoch = 1_795_000_000.0
    config = SimConfig(agi_port=agi.port, speed=SPEED, queues=(QueueConfig("apa"),), epoch=epoch)
    try:
        async with SimulatedPbx(config) as pbx:
            pbx.add_agent(SimAgent(AGENT, queues=["apa"], answer_delay=1, talk_time=1))
            handle = pbx.place_call(CallerScript("0612345678"))
            await handle.finished
    finally:
        await agi.stop()
    queued_at = int(handle.channel.variables[GUICHET_QUEUED_AT])
    assert epoch <= queued_at < epoch + 60


async def test_a_dial_without_timeout_rings_until_the_caller_gives_up() -> None:
    dial = (Step("Answer"), Step("Dial", f"PJSIP/{CITIZEN}@trunk"), Step("Hangup"))
    config = SimConfig(
        speed=SPEED,
        dialplan=Dialplan({INBOUND_CONTEXT: {"_X.": dial}}),
        callees={CITIZEN: Callee(result="noanswer")},
    )
    async with SimulatedPbx(config) as pbx:
        outcome = await pbx.place_call(CallerScript("0612345678", hangup_after_s=40)).finished
    assert outcome.dialstatus == "CANCEL" and outcome.transferred_to is None
