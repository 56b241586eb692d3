"""Routing: live-model updates per second, and AgentConnect -> subscriber delay (memory and Redis).

* Updates: every event of the recorded AMI streams, parsed once before the clock starts, applied to a fresh
  :class:`routing.live.LiveModel` per replay.  The alternative is what a dashboard polling Asterisk does:
  rebuild the whole model from a ``QueueStatus`` + ``CoreShowChannels`` snapshot (here one of the
  recorded replies, 1 queue, its members and callers) on every change.  The limit only looks each event's
  handler up by name (a dict) and calls a no-op.
* Delay: a loopback AMI server (login, empty resync lists) writes an ``AgentConnect`` on the socket; the
  clock stops when a subscriber of the store's live channel receives the engine's message about it (AMI
  parser -> live model -> mirror -> store -> pub/sub).  The limits: the same bytes written on a bare
  loopback socket to a bare Protocol (memory), and a bare Redis PUBLISH -> subscriber with redis-py (Redis).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from bench.ami import chunked, load_corpus, load_stream
from guichet.config import Secret, Settings
from guichet.engine import Engine
from ivr.agi_server import RouteTable
from routing.ami import AmiMessage, AmiParser
from routing.live import LiveModel
from routing.mirror import LIVE_CHANNEL
from routing.state import MemoryStateStore, StateStore, Subscription
from routing.state_redis import RedisStateStore
from tests.redis_server import running_redis_server

REPLY_FILE = "ami_actions_replies_after_calls.txt.raw"


def recorded_events(captures: Path) -> list[AmiMessage]:
    parser = AmiParser(expect_banner=False)
    messages = [m for chunk in chunked(load_corpus(captures)) for m in parser.feed(chunk)]
    return [m for m in messages if m.kind == "event"]


def recorded_snapshot(captures: Path) -> tuple[list[AmiMessage], list[AmiMessage]]:
    """The QueueStatus and CoreShowChannels list items of a recorded reply file."""
    parser = AmiParser(expect_banner=False)
    messages = [m for chunk in chunked(load_stream(captures / REPLY_FILE)) for m in parser.feed(chunk)]
    status = [m for m in messages if m.name in ("QueueParams", "QueueMember", "QueueEntry")]
    channels = [m for m in messages if m.name == "CoreShowChannel"]
    if not status:
        raise ValueError(f"{REPLY_FILE}: no QueueStatus list items recorded")
    return status, channels


@dataclass(frozen=True)
class UpdateResult:
    name: str
    events: int
    followed: int  # events of the kinds the model acts on
    seconds: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


def _median_seconds(run: Callable[[], None], repetitions: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repetitions):
        started = time.perf_counter_ns()
        run()
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1e9


def measure_updates(captures: Path, replays: int, repetitions: int) -> list[UpdateResult]:
    events = recorded_events(captures)
    status, channels = recorded_snapshot(captures)

    def ours() -> None:
        for _ in range(replays):
            model = LiveModel()
            for event in events:
                model.apply(event, 0.0)

    def polling() -> None:
        model = LiveModel()
        for _ in range(replays):
            for _event in events:
                model.rebuild(status, channels, 0.0)

    handlers: dict[str, Callable[[AmiMessage, float], None]] = {
        name: lambda event, now: None for name in {event.name for event in events}
    }

    def limit() -> None:
        for _ in range(replays):
            for event in events:
                handler = handlers.get(event.name)
                if handler is not None:
                    handler(event, 0.0)

    count = len(events) * replays
    followed = sum(1 for event in events if event.name in LiveModel().followed_events) * replays
    return [
        UpdateResult(name, count, followed, _median_seconds(run, repetitions))
        for name, run in (
            ("ours: LiveModel.apply per event", ours),
            ("alternative: rebuild from QueueStatus + CoreShowChannels per event (polling)", polling),
            ("limit: dispatch by event name to a no-op", limit),
        )
    ]


# --- AgentConnect -> subscriber -------------------------------------------------------------------

BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def _agent_connect(n: int) -> bytes:
    return (
        "Event: AgentConnect\r\nPrivilege: agent,all\r\n"
        f"Channel: PJSIP/citizen-{n:08x}\r\nUniqueid: 1764345600.{n}\r\nCallerIDNum: 0611223344\r\n"
        "CallerIDName: Zoé\r\nQueue: apa\r\nInterface: PJSIP/a101\r\nMemberName: Marie Durand\r\n"
        f"DestChannel: PJSIP/a101-{n:08x}\r\nHoldTime: 12\r\nRingTime: 2\r\n\r\n"
    ).encode()


def _hangup(n: int) -> bytes:
    channel = f"PJSIP/citizen-{n:08x}"
    return f"Event: Hangup\r\nPrivilege: call,all\r\nChannel: {channel}\r\nCause: 16\r\n\r\n".encode()


class LoopbackAmi:
    """Just enough of Asterisk's AMI for the engine to log in and resync (empty lists)."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BANNER)
        parser = AmiParser(expect_banner=False)
        self.writer = writer
        while data := await reader.read(65536):
            for action in parser.feed(data):
                writer.write(self._reply(action))
                if action.name == "Login":
                    self.connected.set()

    @staticmethod
    def _reply(action: AmiMessage) -> bytes:
        action_id = action.get("ActionID") or ""
        if action.name not in ("QueueStatus", "CoreShowChannels"):
            return f"Response: Success\r\nActionID: {action_id}\r\nMessage: OK\r\n\r\n".encode()
        complete = "QueueStatusComplete" if action.name == "QueueStatus" else "CoreShowChannelsComplete"
        return (
            f"Response: Success\r\nActionID: {action_id}\r\nEventList: start\r\nMessage: will follow\r\n\r\n"
            f"Event: {complete}\r\nActionID: {action_id}\r\nEventList: Complete\r\nListItems: 0\r\n\r\n"
        ).encode()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass(frozen=True)
class DelayResult:
    name: str
    samples: list[float]  # seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _next_with(subscription: Subscription, word: str) -> None:
    """Wait for the next message naming ``word`` (a change kind)."""
    while (message := await subscription.get()) is not None and word not in message:
        pass


async def _engine_delays(store: StateStore, subscriber_store: StateStore, samples: int) -> list[float]:
    ami = LoopbackAmi()
    await ami.start()
    engine = Engine(Settings(), Secret("bench"), RouteTable(), store=store)
    subscription = await subscriber_store.subscribe(LIVE_CHANNEL)
    delays = []
    try:
        await engine.connect_ami(ami.port)
        await ami.connected.wait()
        writer = ami.writer
        assert writer is not None
        for n in range(samples + 20):
            started = time.perf_counter()
            writer.write(_agent_connect(n))
            await _next_with(subscription, "call_started")
            if n >= 20:  # warm-up
                delays.append(time.perf_counter() - started)
            writer.write(_hangup(n))
            await _next_with(subscription, "call_ended")
    finally:
        await subscription.close()
        await engine.close()
        await ami.stop()
    return delays


async def _socket_delays(samples: int) -> list[float]:
    """The limit: the same bytes on a loopback socket, read by a bare Protocol."""
    received: asyncio.Queue[float] = asyncio.Queue()

    class Bare(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            received.put_nowait(time.perf_counter())

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Bare, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    delays = []
    for n in range(samples + 20):
        started = time.perf_counter()
        writer.write(_agent_connect(n))
        arrived = await received.get()
        if n >= 20:
            delays.append(arrived - started)
    writer.close()
    server.close()
    await server.wait_closed()
    return delays


async def _redis_delays(url: str, samples: int) -> list[float]:
    """The limit through Redis: a bare PUBLISH -> subscriber with redis-py."""
    publisher = aioredis.Redis.from_url(url, decode_responses=True)
    subscriber = aioredis.Redis.from_url(url, decode_responses=True)
    pubsub = subscriber.pubsub()
    await pubsub.subscribe("bench")
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    delays = []
    try:
        for n in range(samples + 20):
            started = time.perf_counter()
            await publisher.publish("bench", "x")
            while await pubsub.get_message(timeout=1.0) is None:
                pass
            if n >= 20:
                delays.append(time.perf_counter() - started)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await publisher.aclose()
        await subscriber.aclose()
    return delays


@asynccontextmanager
async def _redis_url() -> AsyncIterator[str]:
    with running_redis_server() as server:
        yield server.url


async def measure_delays(samples: int) -> list[DelayResult]:
    memory = MemoryStateStore()
    results = [
        DelayResult(
            "memory store: ours (AMI socket -> model -> store -> subscriber)",
            await _engine_delays(memory, memory, samples),
        ),
        DelayResult("memory store: limit (bare socket -> Protocol)", await _socket_delays(samples)),
    ]
    async with _redis_url() as url:
        writer, reader = RedisStateStore.from_url(url), RedisStateStore.from_url(url)
        try:
            ours = await _engine_delays(writer, reader, samples)
        finally:
            await writer.close()
            await reader.close()
        results.append(DelayResult("Redis store: ours (another client subscribed)", ours))
        bare = await _redis_delays(url, samples)
        results.append(DelayResult("Redis store: limit (bare PUBLISH -> subscriber)", bare))
    return results


async def measure(
    captures: Path, *, replays: int, repetitions: int, samples: int
) -> tuple[list[UpdateResult], list[DelayResult]]:
    return measure_updates(captures, replays, repetitions), await measure_delays(samples)
