"""Agent actions (routing.agents) against the simulated PBX over a real AMI connection.

The simulator answers QueueAdd / QueueRemove / QueuePause as Asterisk 22 did in the round-2
recording ``ami_events_member_lifecycle`` (Already there, Not there, Interface not found).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pytest

from guichet.config import AgentSettings, Settings
from guichet.names import (
    EV_AGENT_CALLED,
    EV_AGENT_COMPLETE,
    EV_QUEUE_CALLER_JOIN,
    EV_QUEUE_MEMBER_ADDED,
    EV_QUEUE_MEMBER_PAUSE,
    EV_QUEUE_MEMBER_REMOVED,
)
from pbx_sim import CallerScript, Dialplan, QueueConfig, SimAgent, SimConfig, SimulatedPbx, Step
from routing.agents import (
    AgentActionFailed,
    AgentActions,
    AsteriskUnavailable,
    CurrentAmi,
    InvalidReason,
    NotLoggedIn,
    UnknownAgent,
    check_reason,
)
from routing.ami import AmiMessage
from routing.ami_client import AmiClient

SPEED = 10.0
CONTEXT = "from-citizens"
WAIT_S = 20.0  # generous limit for any condition under load
QUEUES = ("apa", "pmi", "accueil")
AGENTS = {
    "agent-101": AgentSettings(name='Marie "Mimi" Dupré', skills=("apa", "accueil")),
    "agent-102": AgentSettings(name="Paul", skills=("pmi", "accueil")),
    # "transport" is not a queue of the simulator: QueueAdd fails there (after apa and pmi).
    "agent-103": AgentSettings(name="Zoé", skills=("apa", "pmi", "transport")),
}


def settings_with(agents: dict[str, AgentSettings]) -> Settings:
    return dataclasses.replace(Settings(), agents=MappingProxyType(agents))


def queue_dialplan() -> Dialplan:
    """Extension <queue>: straight into Queue(<queue>) (no IVR)."""
    return Dialplan(
        contexts={
            CONTEXT: {q: (Step("Answer"), Step("Queue", f"{q},,,,600"), Step("Hangup")) for q in QUEUES}
        }
    )


@dataclass
class Sent:
    """Passes actions to the real AMI client and keeps what was sent."""

    ami: AmiClient
    actions: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def send_action(self, action: str, headers: Any = ()) -> Any:
        self.actions.append((action, dict(headers)))
        return await self.ami.send_action(action, headers)


@dataclass
class Rig:
    pbx: SimulatedPbx
    ami: AmiClient
    actions: AgentActions
    sent: Sent
    events: list[AmiMessage] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, event: AmiMessage) -> None:
        self.events.append(event)
        self._changed.set()

    def named(self, name: str) -> list[AmiMessage]:
        return [e for e in self.events if e.name == name]

    async def wait_for(self, condition: Callable[[], bool], limit_s: float = WAIT_S) -> None:
        async def _wait() -> None:
            while not condition():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)

        await asyncio.wait_for(_wait(), limit_s)

    def members(self, queue: str) -> dict[str, bool]:
        """interface -> paused, in the simulator's queue."""
        return {i: m.paused for i, m in self.pbx.queues.queue(queue).members.items()}


@contextlib.asynccontextmanager
async def open_rig(
    agents: dict[str, AgentSettings] | None = None, *, wrapuptime: int = 0, talk_time: float = 600.0
) -> AsyncIterator[Rig]:
    """The simulator (queues apa, pmi, accueil; softphones of the agents registered, members of no
    queue), a logged-in AMI client and AgentActions on it."""
    agents = AGENTS if agents is None else agents
    pbx = SimulatedPbx(
        SimConfig(
            speed=SPEED,
            queues=tuple(QueueConfig(q, wrapuptime=wrapuptime) for q in QUEUES),
            dialplan=queue_dialplan(),
        )
    )
    await pbx.start()
    for agent_id in agents:
        pbx.add_agent(SimAgent(f"PJSIP/{agent_id}", answer_delay=1.0, talk_time=talk_time))
    ami = AmiClient("127.0.0.1", pbx.ami_port, "guichet", "secret")
    sent = Sent(ami)
    rig = Rig(pbx, ami, AgentActions(sent, settings_with(agents)), sent)
    ami.subscribe("*", rig.record)
    try:
        await ami.start()
        yield rig
    finally:
        await ami.close()
        await pbx.stop()


def call(rig: Rig, queue: str, number: str) -> None:
    rig.pbx.place_call(CallerScript(number=number, dnid=queue, context=CONTEXT))


async def test_login_adds_the_agent_to_every_skill_queue_with_its_state_interface() -> None:
    async with open_rig() as rig:
        assert await rig.actions.login("agent-101") == ("apa", "accueil")
        await rig.wait_for(lambda: len(rig.named(EV_QUEUE_MEMBER_ADDED)) == 2)
        added = rig.named(EV_QUEUE_MEMBER_ADDED)
        assert sorted(e["Queue"] for e in added) == ["accueil", "apa"]
        for event in added:
            assert event["Interface"] == "PJSIP/agent-101"
            assert event["StateInterface"] == "PJSIP/agent-101"
            assert event["MemberName"] == 'Marie "Mimi" Dupré'
            assert event["Paused"] == "0"
            assert event["Membership"] == "dynamic"
        assert rig.members("pmi") == {}
        # The StateInterface is what makes ringinuse=no and wrap-up follow the softphone.
        assert [(a, h["Queue"], h["StateInterface"], h["Paused"]) for a, h in rig.sent.actions] == [
            ("QueueAdd", "apa", "PJSIP/agent-101", "false"),
            ("QueueAdd", "accueil", "PJSIP/agent-101", "false"),
        ]
        # Idempotent: a second login (Asterisk answers "Already there") is fine and changes nothing.
        assert await rig.actions.login("agent-101") == ("apa", "accueil")
        assert rig.members("apa") == {"PJSIP/agent-101": False}
        assert len(rig.named(EV_QUEUE_MEMBER_ADDED)) == 2


async def test_logout_removes_the_agent_from_every_skill_queue_and_is_idempotent() -> None:
    async with open_rig() as rig:
        await rig.actions.login("agent-102")
        await rig.actions.login("agent-101")
        assert await rig.actions.logout("agent-102") == ("pmi", "accueil")
        await rig.wait_for(lambda: len(rig.named(EV_QUEUE_MEMBER_REMOVED)) == 2)
        removed = rig.named(EV_QUEUE_MEMBER_REMOVED)
        assert sorted(e["Queue"] for e in removed) == ["accueil", "pmi"]
        assert {e["Interface"] for e in removed} == {"PJSIP/agent-102"}
        assert rig.members("pmi") == {}
        assert rig.members("accueil") == {"PJSIP/agent-101": False}  # the other agent stays
        await rig.actions.logout("agent-102")  # "Not there" everywhere: fine
        assert len(rig.named(EV_QUEUE_MEMBER_REMOVED)) == 2


async def test_a_failed_login_undoes_what_it_added_and_names_the_queue() -> None:
    async with open_rig() as rig:
        # Already in apa before this login (e.g. logged in from another desk): the undo keeps that.
        await rig.ami.send_action(
            "QueueAdd",
            [("Queue", "apa"), ("Interface", "PJSIP/agent-103"), ("StateInterface", "PJSIP/agent-103")],
        )
        with pytest.raises(AgentActionFailed) as failure:
            await rig.actions.login("agent-103")
        assert failure.value.queue == "transport"
        assert failure.value.action == "QueueAdd"
        assert "agent-103" in str(failure.value)
        assert "transport" in str(failure.value)
        assert "No such queue" in str(failure.value)
        await rig.wait_for(lambda: len(rig.named(EV_QUEUE_MEMBER_REMOVED)) == 1)
        assert rig.named(EV_QUEUE_MEMBER_REMOVED)[0]["Queue"] == "pmi"
        assert rig.members("pmi") == {}
        assert rig.members("apa") == {"PJSIP/agent-103": False}


async def test_a_paused_agent_is_not_offered_a_call_until_unpaused() -> None:
    async with open_rig() as rig:
        await rig.actions.login("agent-101")
        assert await rig.actions.pause("agent-101", "  Pause déjeuner « cantine »  ") == (
            "Pause déjeuner « cantine »"
        )
        await rig.wait_for(lambda: len(rig.named(EV_QUEUE_MEMBER_PAUSE)) == 2)
        for event in rig.named(EV_QUEUE_MEMBER_PAUSE):
            assert (event["Paused"], event["PausedReason"]) == ("1", "Pause déjeuner « cantine »")
        assert rig.members("apa") == rig.members("accueil") == {"PJSIP/agent-101": True}
        call(rig, "apa", "0612345678")
        await rig.wait_for(lambda: bool(rig.named(EV_QUEUE_CALLER_JOIN)))
        # The simulator hands free members to a caller as it joins: a paused one was not.
        [waiting] = rig.pbx.queues.queue("apa").callers
        assert waiting.ringing is None
        assert rig.named(EV_AGENT_CALLED) == []
        await rig.actions.unpause("agent-101")
        await rig.wait_for(lambda: bool(rig.named(EV_AGENT_CALLED)))
        assert rig.named(EV_AGENT_CALLED)[0]["Interface"] == "PJSIP/agent-101"
        unpaused = rig.named(EV_QUEUE_MEMBER_PAUSE)[2:]
        assert [(e["Paused"], e["PausedReason"]) for e in unpaused] == [("0", ""), ("0", "")]


async def test_wrapup_keeps_an_agent_from_the_next_call_for_the_queue_wrapuptime() -> None:
    wrapup = 20
    async with open_rig({"agent-101": AGENTS["agent-101"]}, wrapuptime=wrapup, talk_time=2.0) as rig:
        await rig.actions.login("agent-101")
        call(rig, "apa", "0600000001")
        await rig.wait_for(lambda: len(rig.named(EV_AGENT_CALLED)) == 1)
        call(rig, "apa", "0600000002")
        await rig.wait_for(lambda: len(rig.named(EV_AGENT_COMPLETE)) == 1)
        completed_at = rig.pbx.clock.now()
        await rig.wait_for(lambda: len(rig.named(EV_AGENT_CALLED)) == 2)
        # Simulated seconds between the end of the first call and the offer of the second.
        assert rig.pbx.clock.now() - completed_at >= wrapup - 1


async def test_pause_refuses_bad_reasons_before_sending_anything() -> None:
    async with open_rig() as rig:
        await rig.actions.login("agent-101")
        for reason in ("", "   ", "ligne 1\r\nAction: Logoff", "tab\there", "nul\x00", "a\u2028b", "x" * 81):
            with pytest.raises(InvalidReason):
                await rig.actions.pause("agent-101", reason)
        assert rig.members("apa") == {"PJSIP/agent-101": False}
        assert rig.named(EV_QUEUE_MEMBER_PAUSE) == []
    assert check_reason("Réunion d'équipe — « bilan »") == "Réunion d'équipe — « bilan »"


async def test_unknown_agents_not_logged_in_and_ami_down_are_clear_errors() -> None:
    async with open_rig() as rig:
        for act in (
            rig.actions.login,
            rig.actions.logout,
            rig.actions.unpause,
            lambda a: rig.actions.pause(a, "x"),
        ):
            with pytest.raises(UnknownAgent, match="agent-999"):
                await act("agent-999")
        with pytest.raises(NotLoggedIn, match="agent-102"):
            await rig.actions.pause("agent-102", "réunion")
        with pytest.raises(NotLoggedIn, match="agent-102"):
            await rig.actions.unpause("agent-102")
        await rig.ami.close()
        with pytest.raises(AsteriskUnavailable, match="agent-101"):
            await rig.actions.login("agent-101")


async def test_current_ami_follows_the_engine_client_and_fails_clearly_on_a_standby_node() -> None:
    async with open_rig() as rig:
        holder: list[AmiClient | None] = [None]
        actions = AgentActions(CurrentAmi(lambda: holder[0]), settings_with(AGENTS))
        with pytest.raises(AsteriskUnavailable, match="standby"):
            await actions.login("agent-101")
        holder[0] = rig.ami
        await actions.login("agent-101")
        assert rig.members("apa") == {"PJSIP/agent-101": False}
