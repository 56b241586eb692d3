"""The simulated PBX's AMI server against the recorded replies and round-2 AMI streams.

The recorded actions are sent byte for byte; the replies must be the recorded bytes (only
clock-dependent values are masked), and the events they cause must come in the recorded
order with the recorded fields.  Round-2 scenarios (member lifecycle, priority ordering,
Originate) are lived again: the SIP side the recording had (a softphone registering, SIPp
callers) is played by the simulated PBX's own API.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from pbx_sim import (
    CallerScript,
    Dialplan,
    MemberConfig,
    QueueConfig,
    SimAgent,
    SimConfig,
    SimulatedPbx,
    Step,
)
from routing.ami import AmiMessage, AmiParser
from tests.ami_streams import load_exchanges, load_stream

SPEED = 50.0  # whole-second counters (TalkTime, HoldTime) keep a margin against real jitter
USERS = {"ivr": "ivr-secret"}
# Values that follow the clock: masked on both sides before comparing.
CLOCK_FIELDS = ("Timestamp", "CoreStartupDate", "CoreStartupTime", "CoreReloadDate", "CoreReloadTime")
NOT_SIMULATED = ("PJSIPShowEndpoints", "Command")  # chan_pjsip listings and the CLI


def mask(data: bytes, fields: Sequence[str]) -> bytes:
    for name in fields:
        data = re.sub(rb"^(" + name.encode() + rb": )[^\r]*", rb"\1<masked>", data, flags=re.M)
    return data


class RawAmi:
    """A byte-level AMI client: writes exact bytes, returns the exact bytes of the replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = AmiParser(expect_banner=False)
        self.pending = b""

    @classmethod
    async def connect(cls, port: int) -> tuple[RawAmi, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        banner = await reader.readline()
        return cls(reader, writer), banner

    async def exchange(self, sent: bytes, messages: int) -> bytes:
        """Send ``sent``; the bytes of the next ``messages`` messages."""
        self.writer.write(sent)
        await self.writer.drain()
        received = b""
        count = 0
        while count < messages:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            if not data:
                raise ConnectionError(f"AMI closed after {received!r}")
            received += data
            count += len(self.parser.feed(data))
        return received

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def count_messages(data: bytes) -> int:
    return len(AmiParser(expect_banner=False).feed(data))


def sipp_caller(number: str, name: str, dnid: str, hangup_after_s: float | None = None) -> CallerScript:
    return CallerScript(
        number, name, dnid, hangup_after_s=hangup_after_s, endpoint="sipp", context="from-sipp"
    )


def replies_config(**kwargs: object) -> SimConfig:
    """The round-1 queues: apa with a Local agent, apb with a PJSIP agent (both static)."""
    queues = (
        QueueConfig("apa", members=(MemberConfig("Local/agent1@agents", name="Agent One"),)),
        QueueConfig("apb", members=(MemberConfig("PJSIP/agent1", name="Agent PJSIP"),)),
    )
    return SimConfig(speed=SPEED, queues=queues, ami_users=USERS, epoch=1795868983.0, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def replies_pbx() -> AsyncIterator[SimulatedPbx]:
    async with SimulatedPbx(replies_config()) as pbx:
        for agent in ("Local/agent1@agents", "PJSIP/agent1"):
            pbx.add_agent(SimAgent(agent))
        yield pbx


async def test_action_replies_match_recording(replies_pbx: SimulatedPbx, captures_dir: Path) -> None:
    exchanges = load_exchanges(captures_dir / "ami_actions_replies.txt.raw")
    recorded_banner = (captures_dir / "ami_actions_replies.txt.raw").read_bytes().split(b"\n", 1)[0] + b"\n"
    client, banner = await RawAmi.connect(replies_pbx.ami_port)
    assert banner == recorded_banner
    compared = []
    for exchange in exchanges:
        if exchange.action in NOT_SIMULATED:
            continue
        got = await client.exchange(exchange.sent, count_messages(exchange.received))
        assert mask(got, CLOCK_FIELDS).decode() == mask(exchange.received, CLOCK_FIELDS).decode(), (
            exchange.action
        )
        compared.append(exchange.action)
    assert compared == [
        "Login",
        "Ping",
        "CoreStatus",
        "CoreSettings",
        "QueueSummary",
        "QueueSummary",
        "QueueStatus",
        "CoreShowChannels",
        "NoSuchAction",
        "Logoff",
    ]
    assert await client.reader.read() == b""  # Logoff ends the session
    await client.close()


async def test_wrong_secret_is_refused_and_the_session_ends(replies_pbx: SimulatedPbx) -> None:
    client, _ = await RawAmi.connect(replies_pbx.ami_port)
    login = b"Action: Login\r\nActionID: bad\r\nUsername: ivr\r\nSecret: wrong\r\nEvents: on\r\n\r\n"
    got = await client.exchange(login, 1)
    assert got == b"Response: Error\r\nActionID: bad\r\nMessage: Authentication failed\r\n\r\n"
    assert await client.reader.read() == b""
    await client.close()


async def test_actions_need_login(replies_pbx: SimulatedPbx) -> None:
    client, _ = await RawAmi.connect(replies_pbx.ami_port)
    got = await client.exchange(b"Action: QueueStatus\r\nActionID: q\r\n\r\n", 1)
    assert got == b"Response: Error\r\nActionID: q\r\nMessage: Permission denied\r\n\r\n"
    await client.close()


async def test_replies_after_calls_match_recording(captures_dir: Path) -> None:
    """The round-1 calls again: apa and apb answered at once (6 s talk), two abandons on apb
    (after 4 s ringing, and after a ring-no-answer); then the queue counters as recorded."""
    steps = {q: (Step("Answer"), Step("Queue", f"{q},,,,600"), Step("Hangup")) for q in ("apa", "apb")}
    config = replies_config(dialplan=Dialplan({"from-sipp": {"200": steps["apa"], "201": steps["apb"]}}))
    async with SimulatedPbx(config) as pbx:
        for agent in ("Local/agent1@agents", "PJSIP/agent1"):
            pbx.add_agent(SimAgent(agent, answer_delay=0, talk_time=6))

        async def call(dnid: str, hangup_after_s: float | None = None) -> None:
            await pbx.place_call(sipp_caller("sipp", "sipp", dnid, hangup_after_s)).finished

        await call("200")
        await call("201")
        pbx.agents["PJSIP/agent1"] = SimAgent("PJSIP/agent1", answer_delay=None)  # now it never answers
        await call("201", hangup_after_s=4)
        await call("201", hangup_after_s=19)
        client, _ = await RawAmi.connect(pbx.ami_port)
        exchanges = load_exchanges(captures_dir / "ami_actions_replies_after_calls.txt.raw")
        await client.exchange(exchanges[0].sent, 1)  # Login
        queue_actions = [ex for ex in exchanges if ex.action in ("QueueSummary", "QueueStatus")]
        assert len(queue_actions) == 3
        for exchange in queue_actions:
            got = await client.exchange(exchange.sent, count_messages(exchange.received))
            assert mask(got, ["LastCall"]).decode() == mask(exchange.received, ["LastCall"]).decode()
        await client.close()


# --- round-2 scenarios lived again ---------------------------------------------------------------
Hook = Callable[["ScenarioClient"], Awaitable[None]]
# Not simulated: chan_pjsip's registration and security events, the AMI session's own events.
NOISE = frozenset(
    {"FullyBooted", "SuccessfulAuth", "ChallengeSent", "PeerStatus", "ContactStatus", "FailedACL"}
)


def sent_actions(path: Path) -> list[bytes]:
    """The exact actions of a ``.sent.txt`` file (CRLF written there as the text ``\\r\\n``)."""
    actions: list[bytes] = []
    for block in path.read_text(encoding="utf-8").split("##### ")[1:]:
        lines = block.splitlines()[1:]
        actions.append("".join(line.removesuffix("\\r\\n") + "\r\n" for line in lines if line).encode())
    return actions


def action_id(action: bytes) -> str:
    match = re.search(rb"^ActionID: (.*)\r$", action, re.M)
    assert match is not None, action
    return match.group(1).decode()


def is_event_or_reply(
    event: str, action_id: str | None = None, channel: str | None = None
) -> Callable[[AmiMessage], bool]:
    """Matches the event ``event`` (or, with ``event=""``, a reply) with the given ActionID/Channel."""

    def match(m: AmiMessage) -> bool:
        kind_ok = m.kind == "response" if not event else m.kind == "event" and m.name == event
        return (
            kind_ok
            and (action_id is None or m.action_id == action_id)
            and (channel is None or m.get("Channel") == channel)
        )

    return match


class ScenarioClient:
    """Sends recorded actions one by one (each after the previous reply) and keeps every message."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = AmiParser()
        self.messages: list[AmiMessage] = []

    async def wait_for(self, predicate: Callable[[AmiMessage], bool]) -> AmiMessage:
        index = 0
        while True:
            for message in self.messages[index:]:
                if predicate(message):
                    return message
            index = len(self.messages)
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            if not data:
                raise ConnectionError("AMI closed")
            self.messages.extend(self.parser.feed(data))

    async def play(self, actions: Sequence[bytes], hooks: dict[str, Hook]) -> None:
        for action in actions:
            aid = action_id(action)
            if aid in hooks:
                await hooks[aid](self)
            self.writer.write(action)
            await self.writer.drain()
            await self.wait_for(is_event_or_reply("", aid))
        self.writer.close()
        await self.writer.wait_closed()


async def live_again(
    pbx: SimulatedPbx, scenario: str, captures: Path, hooks: dict[str, Hook], skip: Sequence[str] = ()
) -> tuple[list[AmiMessage], list[AmiMessage]]:
    """Our messages and the recorded ones for ``scenario``, actions of ``skip`` left out of both."""
    actions = [
        a
        for a in sent_actions(captures / "round2" / f"ami_events_{scenario}.sent.txt")
        if action_id(a) not in skip
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", pbx.ami_port)
    client = ScenarioClient(reader, writer)
    await client.play(actions, hooks)
    stream = load_stream(captures, f"ami_events_{scenario}.raw")
    recorded = AmiParser().feed(stream.data)
    return kept(client.messages, skip), kept(recorded, skip)


def kept(messages: Sequence[AmiMessage], skip: Sequence[str]) -> list[AmiMessage]:
    return [
        m
        for m in messages
        if m.name not in NOISE and m.action_id not in skip and not (m.name or "").startswith("Contact")
    ]


TIME_FIELDS = frozenset({"LastPause", "LoginTime", "LastCall"})


def fields(message: AmiMessage) -> list[tuple[str, str]]:
    """Every header, epoch times reduced to whether they are set."""
    return [(k, ("set" if v != "0" else "0") if k in TIME_FIELDS else v) for k, v in message]


async def test_member_lifecycle_matches_recording(captures_dir: Path) -> None:
    config = SimConfig(speed=SPEED, queues=(QueueConfig("guichet"),), ami_users=USERS)

    async def register(client: ScenarioClient) -> None:
        pbx.device_changed("PJSIP/agent2", "NOT_INUSE")  # the softphone REGISTERs

    async def unregister(client: ScenarioClient) -> None:
        pbx.device_changed("PJSIP/agent2", "UNAVAILABLE")  # Expires: 0

    async with SimulatedPbx(config) as pbx:
        ours, recorded = await live_again(
            pbx,
            "member_lifecycle",
            captures_dir,
            {"r2-7": register, "r2-17": unregister},
            skip=("r2-6", "r2-8"),  # PJSIPShowContacts
        )
    assert [fields(m) for m in ours] == [fields(m) for m in recorded]


QUEUE_STORY = frozenset(
    {
        "QueueParams",
        "QueueMember",
        "QueueEntry",
        "QueueStatusComplete",
        "QueueSummary",
        "QueueSummaryComplete",
        "QueueCallerJoin",
        "QueueCallerLeave",
        "QueueMemberPause",
        "AgentCalled",
        "AgentConnect",
        "AgentComplete",
    }
)
# Follow the clock or the other channels' counters: left out of the comparison.
VOLATILE = frozenset({"Wait", "LongestHoldTime", "Holdtime", "HoldTime", "Uniqueid", "Linkedid"})


def story(messages: Sequence[AmiMessage]) -> list[list[tuple[str, str]]]:
    """Replies and queue events, without the agent leg's Dest* snapshot and volatile values."""
    return [
        [(k, v) for k, v in fields(m) if k not in VOLATILE and not k.startswith("Dest")]
        for m in messages
        if m.kind == "response" or m.name in QUEUE_STORY
    ]


async def test_priority_ordering_matches_recording(captures_dir: Path) -> None:
    agent = "Local/prioagent@agents"
    queue = QueueConfig(
        "prio", strategy="leastrecent", members=(MemberConfig(agent, name="Prio Agent", paused=True),)
    )
    extens = {
        str(400 + prio): (
            Step("NoOp", f"prio caller ${{CALLERID(num)}} via {400 + prio}"),
            Step("Answer"),
            Step("Set", f"QUEUE_PRIO={prio}"),
            Step("Queue", "prio,,,,120"),
            Step("Hangup"),
        )
        for prio in (0, 5, 10)
    }
    config = SimConfig(
        speed=SPEED, queues=(queue,), ami_users=USERS, dialplan=Dialplan({"from-sipp": extens})
    )

    async def three_callers(client: ScenarioClient) -> None:
        for prio in (0, 5, 10):
            handle = pbx.place_call(sipp_caller(f"555{prio:04d}", f"Caller Prio{prio}", str(400 + prio)))
            name = handle.channel.name
            await client.wait_for(is_event_or_reply("QueueCallerJoin", channel=name))

    async def wait_then_unpause(client: ScenarioClient) -> None:
        await asyncio.sleep(pbx.clock.real_delay(2.5))  # the callers waited 2.5 s or more, as recorded

    async def served(client: ScenarioClient) -> None:  # Prio5 (now 15, not immediate) is served last
        await client.wait_for(lambda m: m.name == "Hangup" and m.get("Channel") == "PJSIP/sipp-00000001")

    async with SimulatedPbx(config) as pbx:
        pbx.add_agent(SimAgent(agent, answer_delay=0, talk_time=3))
        ours, recorded = await live_again(
            pbx,
            "priority_ordering",
            captures_dir,
            {"r2-2": three_callers, "r2-11": wait_then_unpause, "r2-12": served},
        )
    joins = [(m.get("Position"), m.get("Count")) for m in ours if m.name == "QueueCallerJoin"]
    assert joins == [("1", "1"), ("1", "2"), ("1", "3")]
    assert story(ours) == story(recorded)


def originate_story(messages: Sequence[AmiMessage]) -> list[list[tuple[str, str]]]:
    """Replies and OriginateResponse events; channel counters and uniqueids reduced to shapes."""

    def shaped(key: str, value: str) -> str:
        if key == "Uniqueid":
            return re.sub(r"^\d+\.\d+$", "<epoch>.<n>", value)
        return re.sub(r"-[0-9a-f]{8};", "-<n>;", value) if key == "Channel" else value

    return [
        [(k, shaped(k, v)) for k, v in m]
        for m in messages
        if m.kind == "response" or m.name == "OriginateResponse"
    ]


async def test_originate_callbacks_match_recording(captures_dir: Path) -> None:
    outcomes = {
        "Local/ring-noanswer@callbacks": "noanswer",
        "PJSIP/citizen-dead": "noanswer",  # no 1xx ever: Asterisk reports it as ringing too
        "Local/busy@callbacks": "busy",
        "Local/nosuchexten@callbacks": "nosuch",
    }
    config = SimConfig(speed=SPEED, ami_users=USERS, originate_outcomes=outcomes, callback_talk_time=6)
    order = ["cb-42", "cb-43-noanswer", "cb-44-dead", "cb-45-busy", "cb-46-nosuch", "cb-47-sync-busy"]

    def after(previous: str) -> Hook:
        async def hook(client: ScenarioClient) -> None:
            await client.wait_for(is_event_or_reply("OriginateResponse", previous))

        return hook

    async with SimulatedPbx(config) as pbx:
        hooks = {aid: after(previous) for previous, aid in itertools.pairwise(order)}
        ours, recorded = await live_again(pbx, "originate_callback", captures_dir, hooks)
    assert [m.get("Response") for m in ours if m.kind == "response"][1:] == ["Success"] * 5 + [
        "Error",
        "Goodbye",
    ]
    assert [m.get("Reason") for m in ours if m.name == "OriginateResponse"] == ["4", "3", "3", "5", "0"]
    assert originate_story(ours) == originate_story(recorded)


async def test_synchronous_originate_replies_once_answered() -> None:
    config = SimConfig(speed=SPEED, ami_users=USERS, callback_talk_time=30)
    async with SimulatedPbx(config) as pbx:
        login = b"Action: Login\r\nActionID: l\r\nUsername: ivr\r\nSecret: ivr-secret\r\nEvents: on\r\n\r\n"
        originate = (
            b"Action: Originate\r\nActionID: sync\r\nChannel: Local/agent-first@callbacks\r\n"
            b"Context: callbacks\r\nExten: dial-citizen\r\nPriority: 1\r\nTimeout: 5000\r\n\r\n"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", pbx.ami_port)
        client = ScenarioClient(reader, writer)
        writer.write(login + originate)
        await client.wait_for(lambda m: m.name == "Hangup" and (m.get("Channel") or "").endswith(";1"))
        names = [m.name if m.kind == "event" else m.action_id for m in client.messages]
        assert "OriginateResponse" not in names
        assert names.index("sync") < names.index("Hangup")  # the reply did not wait for the talk
        reply = next(m for m in client.messages if m.action_id == "sync")
        assert (reply.get("Response"), reply.get("Message")) == ("Success", "Originate successfully queued")
        writer.close()
