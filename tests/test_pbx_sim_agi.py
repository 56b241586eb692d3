"""The simulated PBX's FastAGI side against the recorded transcripts, byte for byte.

Each recorded session (``agi_*.txt``) is replayed: the simulated PBX runs the recorded
extension (same dialplan steps, same caller, same key presses, same queue), connects to a
responder that sends the recorded commands, and must write the recorded environment block and
the recorded replies.  Only the channel counter, the uniqueid counter and the TCP port differ
(they depend on how many calls the PBX had before and on the free port): they are mapped.
The AMI events of the IVR calls are compared with the recorded streams the same way.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pbx_sim import (
    CallerScript,
    CallOutcome,
    Dialplan,
    KeyPress,
    MemberConfig,
    QueueConfig,
    SimAgent,
    SimConfig,
    SimulatedPbx,
    Step,
    inbound_dialplan,
)
from routing.ami import AmiMessage, AmiParser
from tests.agi_transcripts import Transcript, load_transcripts
from tests.sim_fixtures import AgiResponder, AmiReader

SPEED = 25.0  # margins: a few ms of real scheduling jitter must stay well under 1 s simulated
# Durations that give the recorded endpos values (samples at 8 kHz).
SOUNDS = {"hello-world": 11234 / 8000, "beep": 3404 / 8000, "tt-monkeys": 10.0}
AGI = "{agi}"  # replaced by agi://127.0.0.1:<responder port> in the steps below
SIPP = "SIPp Caller"
ZOE_UTF8 = 'Zoé \\"VIP\\" <Dupré>'  # the SIP display name with only its outer quotes removed
ZOE_LATIN1 = 'Zo\ufffd \\"VIP\\" <Dupr\ufffd>'  # ISO-8859-1 bytes replaced by U+FFFD at SIP parse


@dataclass(frozen=True)
class Replay:
    """How to make the simulated PBX live one recorded FastAGI session again."""

    script: CallerScript
    steps: tuple[Step, ...]  # the recorded extension, priority 1 first
    agistatus: str | None  # AGISTATUS the recording shows after the AGI (None: not recorded)
    queues: tuple[QueueConfig, ...] = ()
    extra: dict[str, dict[str, tuple[Step, ...]]] = field(default_factory=dict)
    agents: tuple[str, ...] = ()  # registered devices (Local agents that exist)


def sipp(
    number: str, name: str, dnid: str, keys: Sequence[KeyPress] = (), hangup_after_s: float | None = None
) -> CallerScript:
    """A SIPp caller of the recordings: endpoint sipp, context from-sipp."""
    return CallerScript(
        number, name, dnid, keys, hangup_after_s=hangup_after_s, endpoint="sipp", context="from-sipp"
    )


def ivr(noop: str, script: str, after: str) -> tuple[Step, ...]:
    return (
        Step("NoOp", noop),
        Step("Answer"),
        Step("AGI", f"{AGI}/{script}"),
        Step("NoOp", after),
        Step("Hangup"),
    )


def queue_then_agi(queue: str) -> tuple[Step, ...]:
    return (
        Step("NoOp", "queue timeout overflow test"),
        Step("Answer"),
        Step("Queue", f"{queue},,,,5"),
        Step("NoOp", "QUEUESTATUS=${QUEUESTATUS} QUEUEPOSITION=${QUEUEPOSITION} QUEUEWAIT=${QUEUEWAIT}"),
        Step("AGI", f"{AGI}/overflow,${{QUEUESTATUS}},${{QUEUEPOSITION}},${{QUEUEWAIT}},{queue}"),
        Step("NoOp", "AGISTATUS=${AGISTATUS}"),
        Step("Hangup"),
    )


def paused_queue(name: str, agent: str, joinempty: str = "yes", context: str | None = None) -> QueueConfig:
    return QueueConfig(
        name, members=(MemberConfig(agent, paused=True),), joinempty=joinempty, context=context
    )


REPLAYS: dict[str, Replay] = {
    # extension 100: '1' during GET DATA, '2' 2.58 s into tt-monkeys (endpos=20640)
    "agi_test_1": Replay(
        sipp("5551234", SIPP, "100", keys=[KeyPress(1.0, "1"), KeyPress(2.58, "2")]),
        (
            Step("NoOp", 'AGI test from "${CALLERID(name)}" <${CALLERID(num)}>'),
            Step("Answer"),
            Step("AGI", f"{AGI}/test,arg1,arg two"),
            Step("NoOp", "after AGI: AGISTATUS=${AGISTATUS} FOO=${FOO}"),
            Step("Hangup"),
        ),
        "FAILURE",
    ),
    "agi_agi-hangup_2": Replay(
        sipp("5551234", SIPP, "101"), (Step("Answer"), Step("AGI", f"{AGI}/agi-hangup")), "HANGUP"
    ),
    # the caller hangs up during GET DATA (10 s timeout)
    "agi_caller-hangup_3": Replay(
        sipp("sipp", "sipp", "102", hangup_after_s=8.0),
        (Step("Answer"), Step("AGI", f"{AGI}/caller-hangup")),
        "HANGUP",
    ),
    "agi_agi_record_and_vars_recvars_3": Replay(
        sipp("0612345678", ZOE_UTF8, "700"),
        ivr(
            "AGI record+vars, caller name=[${CALLERID(name)}] num=[${CALLERID(num)}]",
            "recvars",
            "after AGI: AGISTATUS=${AGISTATUS} GUICHET_NOTE=[${GUICHET_NOTE}]"
            " CALLERID(all)=[${CALLERID(all)}]",
        ),
        "SUCCESS",
    ),
    "agi_agi_record_and_vars_names_4": Replay(
        sipp("0612345678", ZOE_LATIN1, "701"),
        ivr("AGI names, caller name=[${CALLERID(name)}]", "names", "after AGI: AGISTATUS=${AGISTATUS}"),
        "SUCCESS",
    ),
    # "1" pressed 2.4 s into the queue wait leaves exitq for [queue-exit] 1
    "agi_exit_with_digit_callback-offer_1": Replay(
        sipp("5551234", SIPP, "500", keys=[KeyPress(2.4, "1")]),
        (
            Step("NoOp", "exit-with-digit test"),
            Step("Answer"),
            Step("Queue", "exitq,,,,30"),
            Step("NoOp", "back from Queue without digit: QUEUESTATUS=${QUEUESTATUS}"),
            Step("Hangup"),
        ),
        None,
        queues=(paused_queue("exitq", "Local/exitagent@agents", context="queue-exit"),),
        extra={
            "queue-exit": {
                "1": (
                    Step("NoOp", "left queue with digit 1: QUEUESTATUS=[${QUEUESTATUS}]"),
                    Step("AGI", f"{AGI}/callback-offer,${{QUEUESTATUS}},${{QUEUEPOSITION}}"),
                    Step("NoOp", "AGISTATUS=${AGISTATUS} CALLBACK_REQUESTED=${CALLBACK_REQUESTED}"),
                    Step("Hangup"),
                )
            }
        },
    ),
    "agi_queue_timeout_overflow_overflow_1": Replay(
        sipp("5551234", SIPP, "600"),
        queue_then_agi("ovf"),
        None,
        queues=(paused_queue("ovf", "Local/ovfagent@agents"),),
        agents=("Local/ovfagent@agents",),
    ),
    "agi_queue_timeout_overflow_joinempty_overflow_2": Replay(
        sipp("5551234", SIPP, "601"),
        queue_then_agi("ovfne"),
        None,
        queues=(paused_queue("ovfne", "Local/ovfagent@agents", joinempty="no"),),
        agents=("Local/ovfagent@agents",),
    ),
}


def transcripts(captures: Path) -> dict[str, Transcript]:
    return {t.name: t for t in load_transcripts(captures)}


def test_every_recorded_session_is_replayed(captures_dir: Path) -> None:
    with_commands = {name for name, t in transcripts(captures_dir).items() if t.exchanges}
    assert with_commands == set(REPLAYS)


def recorded_epoch(transcript: Transcript) -> float:
    match = re.search(rb"^agi_uniqueid: (\d+)\.", transcript.env_bytes, re.M)
    assert match is not None
    return float(match.group(1))


def with_agi(steps: Sequence[Step], url: str) -> tuple[Step, ...]:
    return tuple(Step(s.app, s.data.replace(AGI, url), s.label) for s in steps)


@dataclass
class Run:
    pbx: SimulatedPbx
    agi: AgiResponder
    ami: AmiReader


@pytest.fixture
async def runs() -> AsyncIterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        await run.ami.close()
        await run.pbx.stop()
        await run.agi.stop()


async def replay(replay: Replay, transcript: Transcript, runs: list[Run]) -> tuple[Run, CallOutcome]:
    agi = AgiResponder([command for command, _ in transcript.exchanges])
    await agi.start()
    url = f"agi://127.0.0.1:{agi.port}"
    contexts = {"from-sipp": {replay.script.dnid: with_agi(replay.steps, url)}}
    contexts |= {
        ctx: {ext: with_agi(steps, url) for ext, steps in extens.items()}
        for ctx, extens in replay.extra.items()
    }
    config = SimConfig(
        agi_port=agi.port,
        speed=SPEED,
        queues=replay.queues,
        dialplan=Dialplan(contexts),
        sounds=SOUNDS,
        epoch=recorded_epoch(transcript),
        agi_thread_id=int(env_value(transcript.env_bytes, "threadid")),
    )
    pbx = SimulatedPbx(config)
    await pbx.start()
    ami = await AmiReader.connect(pbx.ami_port)
    runs.append(Run(pbx, agi, ami))
    for interface in replay.agents:
        pbx.add_agent(SimAgent(interface))
    handle = pbx.place_call(replay.script)
    outcome = await handle.finished
    await ami.wait_for(lambda m: m.name == "Hangup" and m.get("Channel") == handle.channel.name)
    return runs[-1], outcome


def env_value(env: bytes, key: str) -> bytes:
    match = re.search(rb"^agi_" + key.encode() + rb": (.*)$", env, re.M)
    assert match is not None, key
    return match.group(1)


def replacements(recorded_env: bytes, our_env: bytes) -> list[tuple[str, str]]:
    """Recorded -> ours for what depends on the PBX's past and the free port: channel, uniqueid,
    ``host:port/`` of the FastAGI URL."""
    pairs = [(env_value(recorded_env, key), env_value(our_env, key)) for key in ("channel", "uniqueid")]
    pairs.append((host_port(env_value(recorded_env, "request")), host_port(env_value(our_env, "request"))))
    return [(old.decode(), new.decode()) for old, new in pairs]


def host_port(url: bytes) -> bytes:
    match = re.match(rb"agi://([^/]+/)", url)
    assert match is not None, url
    return match.group(1)


def mapped(text: str, pairs: Sequence[tuple[str, str]]) -> str:
    """Channel names and URLs are replaced inside any text; a uniqueid only as a whole value
    (the recorded RECORD FILE command names its file after the recorded uniqueid)."""
    for old, new in pairs:
        if text == old:
            return new
        if "/" in old:
            text = text.replace(old, new)
    return text


def env_mapped(env: bytes, pairs: Sequence[tuple[str, str]]) -> bytes:
    """The environment block with each value mapped (bytes kept as they are otherwise)."""
    lines = env.decode().split("\n")[:-1]
    out = []
    for line in lines:
        key, sep, value = line.partition(": ")
        out.append(key + sep + mapped(value, pairs) + "\n")
    return "".join(out).encode()


@pytest.mark.parametrize("name", sorted(REPLAYS))
async def test_replies_and_environment_match_recording(
    name: str, captures_dir: Path, runs: list[Run]
) -> None:
    transcript = transcripts(captures_dir)[name]
    run, outcome = await replay(REPLAYS[name], transcript, runs)
    assert len(run.agi.envs) == 1
    env = run.agi.envs[0]
    pairs = replacements(transcript.env_bytes, env)
    assert env == env_mapped(transcript.env_bytes, pairs)
    got = [reply.decode() for reply in run.agi.replies]
    want = ["".join(line + "\n" for line in lines) for _, lines in transcript.exchanges]
    assert list(zip([c for c, _ in transcript.exchanges], got, strict=True)) == list(
        zip([c for c, _ in transcript.exchanges], want, strict=True)
    )
    if REPLAYS[name].agistatus is not None:
        assert outcome.agistatus == REPLAYS[name].agistatus


# --- the AMI events of the IVR calls ------------------------------------------------------------
# Not simulated (noise for the engine): chan_pjsip's SIPDOMAIN and RTP statistics, RTCP reports,
# CDR events, and the AMI session's own FullyBooted / SuccessfulAuth.
NOISE_EVENTS = frozenset({"FullyBooted", "SuccessfulAuth", "RTCPSent", "Cdr"})


def is_noise(message: AmiMessage) -> bool:
    if message.kind != "event" or message.name in NOISE_EVENTS:
        return True
    variable = message.get("Variable") or ""
    return message.name == "VarSet" and (variable == "SIPDOMAIN" or variable.startswith("RTPAUDIOQOS"))


def call_events(messages: Sequence[AmiMessage], channel: str) -> list[AmiMessage]:
    """The events of ``channel``'s call: its own, and the device changes until its last one."""
    events = [m for m in messages if not is_noise(m)]
    indexes = [i for i, m in enumerate(events) if m.get("Channel") == channel]
    assert indexes, f"no event of {channel}"
    last = indexes[-1]
    while last + 1 < len(events) and events[last + 1].name == "DeviceStateChange":
        last += 1
    return [
        m
        for m in events[indexes[0] : last + 1]
        if m.get("Channel") == channel or m.name == "DeviceStateChange"
    ]


def shape(events: Sequence[AmiMessage], pairs: Sequence[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Every header of every event, ids mapped to ours, the random AGI CommandId left out."""
    return [[(k, mapped(v, pairs)) for k, v in m if k != "CommandId"] for m in events]


IVR_CALLS = {
    "agi_test_1": "ami_events_agi_call_100.raw",
    "agi_agi-hangup_2": "ami_events_agi_call_101_agi_hangup.raw",
    "agi_caller-hangup_3": "ami_events_agi_call_102_caller_hangup.raw",
    "agi_agi_record_and_vars_recvars_3": "round2/ami_events_agi_record_and_vars.raw",
    "agi_agi_record_and_vars_names_4": "round2/ami_events_agi_record_and_vars.raw",
}


@pytest.mark.parametrize("name", sorted(IVR_CALLS))
async def test_ivr_call_events_match_recording(name: str, captures_dir: Path, runs: list[Run]) -> None:
    transcript = transcripts(captures_dir)[name]
    run, _ = await replay(REPLAYS[name], transcript, runs)
    pairs = replacements(transcript.env_bytes, run.agi.envs[0])
    channel = pairs[0][0]
    recorded = call_events(AmiParser().feed((captures_dir / IVR_CALLS[name]).read_bytes()), channel)
    ours = call_events(run.ami.messages, pairs[0][1])
    assert shape(ours, []) == shape(recorded, pairs)
    starts = [m.get("CommandId") for m in ours if m.name == "AGIExecStart"]
    ends = [m.get("CommandId") for m in ours if m.name == "AGIExecEnd"]
    assert starts == ends and len(set(starts)) == len(starts) == len(transcript.exchanges)


# --- FastAGI server down, closing at once, or stalling (round 2, scenario 7) ------------------------
def free_port() -> int:
    """A port where nothing listens (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def fallback_call(url_port: int) -> CallOutcome:
    """A citizen's call through the inbound flow, its IVR at ``url_port``."""
    dialplan = inbound_dialplan(f"agi://127.0.0.1:{url_port}", fallback_queue="general")
    config = SimConfig(
        agi_port=url_port,
        speed=SPEED,
        dialplan=dialplan,
        queues=(QueueConfig("general", joinempty="no"),),
        sounds=SOUNDS | {"guichet/service-indisponible": 2.0},
    )
    async with SimulatedPbx(config) as pbx:
        return await pbx.place_call(CallerScript("0612345678", "Citizen")).finished


FALLBACK = ["from-citizens,3900,5:Playback", "from-citizens,3900,6:Queue"]


async def test_engine_down_gives_failure_and_the_fallback() -> None:
    outcome = await fallback_call(free_port())
    assert outcome.agistatus == "FAILURE"
    assert outcome.path[4:6] == FALLBACK
    assert outcome.queuestatus == "JOINEMPTY"


async def test_accept_then_close_gives_success_and_the_fallback(captures_dir: Path) -> None:
    accepted: list[bool] = []

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(True)
        writer.close()

    assert transcripts(captures_dir)["agi_agi_server_down_accept-close_10"].accepted_only
    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    try:
        outcome = await fallback_call(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
    assert accepted == [True]
    assert outcome.agistatus == "SUCCESS"  # an EOF before any command reads as a finished script
    assert outcome.path[4:6] == FALLBACK


class StallServer:
    """Reads everything, never sends a command; closes only when told to (or at Asterisk's EOF)."""

    def __init__(self) -> None:
        self.received = b""
        self.hangup_seen = asyncio.Event()
        self.release = asyncio.Event()
        self.done = asyncio.Event()
        self.pbx_closed = False
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        release = asyncio.ensure_future(self.release.wait())
        while True:
            read = asyncio.ensure_future(reader.read(4096))
            await asyncio.wait((read, release), return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                break
            data = read.result()
            if not data:
                self.pbx_closed = True
                break
            self.received += data
            if b"\n\nHANGUP\n" in self.received:
                self.hangup_seen.set()
        release.cancel()
        writer.close()
        self.done.set()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


FAILSAFE = (
    Step("Answer"),
    Step("Set", "T0=${STRFTIME(,,%s.%6q)}"),
    Step("AGI", f"{AGI}/ivr"),
    Step("Set", "T1=${STRFTIME(,,%s.%6q)}"),
    Step("NoOp", "RESULT stall: AGISTATUS=${AGISTATUS}"),
    Step("Hangup"),
)


async def stall_call(transcript: Transcript, steps: tuple[Step, ...], server: StallServer) -> SimulatedPbx:
    await server.start()
    url = f"agi://127.0.0.1:{server.port}"
    config = SimConfig(
        agi_port=server.port,
        speed=SPEED,
        dialplan=Dialplan({"agi-failsafe": {"_80X": with_agi(steps, url)}}),
        epoch=recorded_epoch(transcript),
        agi_thread_id=int(env_value(transcript.env_bytes, "threadid")),
    )
    pbx = SimulatedPbx(config)
    await pbx.start()
    return pbx


def stall_script(transcript: Transcript) -> CallerScript:
    dnid = env_value(transcript.env_bytes, "dnid").decode()
    return CallerScript("sipp", "sipp", dnid, hangup_after_s=3.5, endpoint="sipp", context="agi-failsafe")


async def test_stalling_server_holds_the_call_until_it_closes(captures_dir: Path) -> None:
    transcript = transcripts(captures_dir)["agi_agi_server_down_stall_11"]
    server = StallServer()
    pbx = await stall_call(transcript, FAILSAFE, server)
    try:
        handle = pbx.place_call(stall_script(transcript))
        await server.hangup_seen.wait()
        await asyncio.sleep(pbx.clock.real_delay(5.0))  # the recorded listener kept the socket 5 s more
        assert not handle.finished.done()  # no read timeout on the PBX side
        server.release.set()
        outcome = await handle.finished
    finally:
        await pbx.stop()
        await server.stop()
    assert outcome.agistatus == "HANGUP"
    assert not server.pbx_closed
    pairs = replacements(transcript.env_bytes, server.received.split(b"\n\n")[0] + b"\n\n")
    assert server.received == env_mapped(transcript.asterisk_bytes(), pairs)


async def test_agiexitonhangup_closes_the_socket_at_the_hangup(captures_dir: Path) -> None:
    transcript = transcripts(captures_dir)["agi_agi_server_down_stall_12"]
    steps = (FAILSAFE[0], Step("Set", "AGIEXITONHANGUP=yes"), *FAILSAFE[1:])
    server = StallServer()
    pbx = await stall_call(transcript, steps, server)
    try:
        outcome = await pbx.place_call(stall_script(transcript)).finished
        await server.done.wait()
    finally:
        server.release.set()
        await pbx.stop()
        await server.stop()
    assert outcome.agistatus == "HANGUP"
    assert transcript.asterisk_eof and server.pbx_closed
    pairs = replacements(transcript.env_bytes, server.received.split(b"\n\n")[0] + b"\n\n")
    assert server.received == env_mapped(transcript.asterisk_bytes(), pairs)
