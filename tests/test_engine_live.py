"""The engine keeps the live model from AMI: at start with calls already up, then from the events,
and across an AMI drop (automatic reconnect + QueueStatus/CoreShowChannels resync + Getvar)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from guichet.asterisk_conf import render_extensions_conf
from guichet.config import ConfigError, Secret, Settings, parse_settings
from guichet.engine import Engine
from guichet.names import (
    GUICHET_CITIZEN_ID,
    GUICHET_IVR_DONE,
    GUICHET_PRIO,
    GUICHET_QUEUE,
    GUICHET_URGENCY,
    ROUTE_CALLBACK_CONFIRM,
    ROUTE_CALLBACK_OFFER,
    ROUTE_CALLBACK_RESULT,
    ROUTE_OVERFLOW,
)
from ivr.agi_server import RouteTable
from ivr.routes import IVR_ROUTE
from pbx_sim import CallerScript, CallHandle, QueueConfig, SimAgent, SimConfig, SimulatedPbx, inbound_dialplan
from pbx_sim.app_queue import DeviceStatus
from routing.ami_client import AmiClient
from routing.live import AgentState, LiveModel, LiveSnapshot, QueueCounters, WaitingCaller
from tests.conftest import REPO
from tests.sim_fixtures import AgiResponder, engine_beside_sim

SPEED = 15.0
JOIN_TOLERANCE_S = 1.5  # QueueEntry Wait is in whole seconds, plus the reading delay
QUEUE = "apa"
IVR_COMMANDS = (
    "ANSWER",
    f"SET VARIABLE {GUICHET_QUEUE} {QUEUE}",
    f"SET VARIABLE {GUICHET_PRIO} 3",
    f"SET VARIABLE {GUICHET_URGENCY} high",
    f"SET VARIABLE {GUICHET_CITIZEN_ID} c-42",
    f"SET VARIABLE {GUICHET_IVR_DONE} 1",
)


@dataclass
class Rig:
    pbx: SimulatedPbx
    engine: Engine

    def waiting(self) -> list[str]:
        return [c.channel for c in self.engine.live.callers(QUEUE)]

    def talking(self) -> list[str]:
        return [call.caller_channel for call in self.engine.live.calls()]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with engine_beside_sim(AgiResponder(IVR_COMMANDS), QUEUE, SPEED, connect=False) as (pbx, engine):
        yield Rig(pbx, engine)


async def until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.005)


def queued_in_sim(pbx: SimulatedPbx) -> list[str]:
    return [caller.channel.name for caller in pbx.queues.queues[QUEUE].callers]


def call(pbx: SimulatedPbx, number: str, hangup_after_s: float | None = None) -> CallHandle:
    return pbx.place_call(CallerScript(number, f"Caller {number}", hangup_after_s=hangup_after_s))


async def test_engine_started_while_a_caller_waits_sees_it_with_its_ivr_variables(rig: Rig) -> None:
    handle = call(rig.pbx, "0611111111")
    await until(lambda: queued_in_sim(rig.pbx) == [handle.channel.name], "the caller waits in the queue")
    await rig.engine.connect_ami(rig.pbx.ami_port)
    # connect_ami returns once the first resync is done: no event was needed
    (caller,) = rig.engine.live.callers(QUEUE)
    assert caller.channel == handle.channel.name
    assert caller.caller_num == "0611111111"
    assert caller.priority == 3
    assert (caller.service, caller.urgency, caller.citizen_id) == (QUEUE, "high", "c-42")
    assert caller.contact_id is None  # unset on the channel: Getvar answers an empty Value
    assert rig.engine.live.channels_without_variables() == []
    ami = rig.engine.ami
    assert ami is not None
    gone = await ami.send_action(
        "Getvar", [("Channel", "PJSIP/nobody-1"), ("Variable", GUICHET_QUEUE)], check=False
    )
    assert (gone.ok, gone.message) == (False, "No such channel")
    unnamed = await ami.send_action("Getvar", [("Channel", handle.channel.name)], check=False)
    assert (unnamed.ok, unnamed.message) == (False, "No variable specified")


async def test_events_after_the_start_answer_then_end_the_call(rig: Rig) -> None:
    handle = call(rig.pbx, "0622222222")
    await until(lambda: bool(queued_in_sim(rig.pbx)), "the caller waits in the queue")
    await rig.engine.connect_ami(rig.pbx.ami_port)
    assert rig.waiting() == [handle.channel.name]
    rig.pbx.add_agent(SimAgent("PJSIP/agent1", "Agent One", queues=[QUEUE], answer_delay=1, talk_time=4))
    await until(lambda: rig.talking() == [handle.channel.name], "the agent's call is in progress")
    assert rig.waiting() == []
    (talk,) = rig.engine.live.calls()
    # the card to pop: who is calling and what the IVR learnt, kept after the caller left the queue
    assert (talk.caller_num, talk.caller_name) == ("0622222222", "Caller 0622222222")
    assert (talk.citizen_id, talk.contact_id, talk.interface) == ("c-42", None, "PJSIP/agent1")
    (agent,) = rig.engine.live.agents(rig.pbx.clock.now())
    assert agent.interface == "PJSIP/agent1"
    assert agent.state is AgentState.TALKING
    outcome = await handle.finished
    assert outcome.answered_by == "PJSIP/agent1"
    await until(lambda: not rig.talking(), "the call is over")
    assert rig.waiting() == []
    assert rig.engine.live.counters(QUEUE) == QueueCounters(offered=1, answered=1)


def comparable(snapshot: LiveSnapshot) -> LiveSnapshot:
    """Without join times (QueueEntry gives whole seconds), IVR variables (not in AMI's lists) nor
    calls (pbx_sim's CoreShowChannels has no agent leg nor BridgeId: a fresh rebuild cannot pair)."""

    def caller(c: WaitingCaller) -> WaitingCaller:
        return dataclasses.replace(
            c, join_time=0.0, service=None, urgency=None, citizen_id=None, contact_id=None, reason=None
        )

    queues = tuple(
        dataclasses.replace(q, callers=tuple(caller(c) for c in q.callers)) for q in snapshot.queues
    )
    return LiveSnapshot(queues=queues, agents=snapshot.agents, calls=())


async def test_an_ami_drop_during_traffic_leaves_the_model_exactly_right(rig: Rig) -> None:
    pbx, engine = rig.pbx, rig.engine
    await engine.connect_ami(pbx.ami_port)
    ami = engine.ami
    assert ami is not None
    resyncs = 0

    async def count_resync(_: AmiClient) -> None:  # registered after the engine's: runs after it
        nonlocal resyncs
        resyncs += 1

    ami.on_connect(count_resync)
    # a long call answered before the drop, still going after it
    pbx.add_agent(SimAgent("PJSIP/agent2", "Agent Two", queues=[QUEUE], answer_delay=1, talk_time=900))
    long_call = call(pbx, "0600000000")
    await until(lambda: rig.talking() == [long_call.channel.name], "the long call is answered")
    # agent1 answers short calls one after the other, through the drop
    pbx.add_agent(SimAgent("PJSIP/agent1", "Agent One", queues=[QUEUE], answer_delay=1, talk_time=3))
    handles = [call(pbx, f"060000000{n}") for n in range(1, 4)]
    await until(lambda: len(rig.talking()) == 2 and len(rig.waiting()) == 2, "two answered, two waiting")
    assert pbx._server is not None
    assert pbx._server.drop_clients() == 1
    # during the gap: one more caller joins, one hangs up while queued, agent1 goes on answering
    handles.append(call(pbx, "0600000004"))
    quitter = call(pbx, "0600000005", hangup_after_s=2)
    await until(lambda: resyncs == 1, "the client reconnected and the engine resynced")
    await quitter.finished
    # stop the traffic: agent1 paused, its call ends, the other callers keep waiting
    await ami.send_action(
        "QueuePause", [("Interface", "PJSIP/agent1"), ("Paused", "true"), ("Reason", "lunch")]
    )
    member = pbx.queues.queues[QUEUE].members["PJSIP/agent1"]
    # a ring already started when the pause came goes on (as in app_queue): wait until agent1 is idle
    await until(
        lambda: not member.in_call and member.status is DeviceStatus.NOT_INUSE, "agent1's last call is over"
    )
    status = await ami.send_action("QueueStatus")
    channels = await ami.send_action("CoreShowChannels")
    now = pbx.clock.now()
    fresh = LiveModel()
    fresh.rebuild(status.events, channels.events, now)
    got = engine.live.snapshot(now)
    assert comparable(got) == comparable(fresh.snapshot(now))
    waiting = [c for q in got.queues for c in q.callers]
    assert waiting
    expected = [c for q in fresh.snapshot(now).queues for c in q.callers]
    for ours, theirs in zip(waiting, expected, strict=True):
        assert abs(ours.join_time - theirs.join_time) <= JOIN_TOLERANCE_S
    assert queued_in_sim(pbx) == [c.channel for c in waiting]
    assert quitter.channel.name not in {c.channel for c in waiting}
    assert {(c.service, c.urgency, c.citizen_id) for c in waiting} == {(QUEUE, "high", "c-42")}
    # the call from before the drop is kept once; no call of the gap stays stale
    up = {item.get("Channel") for item in channels.events}
    assert [c.caller_channel for c in got.calls] == [long_call.channel.name]
    assert all(c.caller_channel in up for c in got.calls)
    states = {agent.interface: agent.state for agent in got.agents}
    assert states == {"PJSIP/agent1": AgentState.PAUSED, "PJSIP/agent2": AgentState.TALKING}
    # everybody hangs up: nothing left, each offered call counted in exactly one outcome
    for name in [long_call.channel.name, *queued_in_sim(pbx)]:
        await ami.send_action("Hangup", [("Channel", name)])
    for handle in [long_call, *handles]:
        await handle.finished
    await until(lambda: not rig.talking() and not rig.waiting(), "the model is empty")
    counts = engine.live.counters(QUEUE)
    outcomes = counts.answered + counts.abandoned + counts.overflowed + counts.exited + counts.unresolved
    assert outcomes == counts.offered
    assert counts.offered >= 5  # long call, three before the drop, the one still waiting at the resync


def test_the_production_engine_serves_every_route_the_dialplan_calls() -> None:
    """Every AGI route named in the rendered dialplan is registered by the engine `guichet serve` runs."""
    engine = Engine(Settings(), Secret("secret"))
    called = set(re.findall(r"AGI\(agi://[^/]+/([a-z-]+)", render_extensions_conf()))
    routes = (IVR_ROUTE, ROUTE_OVERFLOW, ROUTE_CALLBACK_OFFER, ROUTE_CALLBACK_CONFIRM, ROUTE_CALLBACK_RESULT)
    assert called == set(routes)
    assert called <= set(engine.agi.routes.names())


def test_hours_without_the_platform_schedule_stop_the_start_up(tmp_path: Path) -> None:
    menus = tmp_path / "menus"
    shutil.copytree(REPO / "dialplans", menus)
    hours = menus / "settings" / "hours.yaml"
    hours.write_text(hours.read_text(encoding="utf-8").replace("plateforme:", "standard:"), encoding="utf-8")
    settings = parse_settings({"ivr": {"menus_dir": str(menus)}}, "guichet.toml")
    with pytest.raises(ConfigError, match="no schedule 'plateforme'"):
        Engine(settings, Secret("secret"), RouteTable())


@pytest.mark.parametrize("dialled", ["0320000000", "+33320000000", "3900"])
async def test_the_single_number_reaches_the_ivr_however_the_trunk_writes_it(dialled: str) -> None:
    agi = AgiResponder(IVR_COMMANDS)
    await agi.start()
    dialplan = inbound_dialplan(f"agi://127.0.0.1:{agi.port}")
    config = SimConfig(agi_port=agi.port, speed=SPEED, queues=(QueueConfig(QUEUE),), dialplan=dialplan)
    try:
        async with SimulatedPbx(config) as pbx:
            handle = pbx.place_call(CallerScript("0611111111", dnid=dialled, hangup_after_s=2))
            outcome = await handle.finished
    finally:
        await agi.stop()
    assert outcome.agistatus == "SUCCESS"
    assert [env["agi_extension"] for env in agi.fields] == [dialled]
