"""Garbage thrown at the FastAGI codec and at a running server: no hang, no crash, no spin."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.agi import (
    MAX_COMMAND_ARGS,
    NEED_DATA,
    AgiClientConnection,
    AgiServerConnection,
    Command,
    ConnectionClosed,
    ServerEvent,
    parse_command_line,
)
from ivr.agi_server import AgiSession, FastAgiServer, RouteTable
from ivr.errors import AgiProtocolError
from tests.test_agi_codec import TRANSCRIPTS
from tests.test_agi_server import ENV, FakeAsterisk, wait_until

_PIECES = [
    b"\n",
    b"HANGUP\n",
    b"200 result=",
    b"200 result=0\n",
    b"200 result=1 (",
    b")",
    b" endpos=",
    b"520-Invalid\n",
    b"520 End of proper usage.\n",
    b"510 Invalid or unknown command\n",
    b"agi_network_script: ivr\n",
    b"agi_x: y\n",
    b"\xff\xfe",
    b"\x00",
    b"\r\n",
    b"x" * 300,
]
_GARBAGE = st.lists(st.one_of(st.binary(max_size=64), st.sampled_from(_PIECES)), max_size=24).map(b"".join)
_PREFIXES = st.sampled_from([b"", ENV, *(t.env_bytes for t in TRANSCRIPTS[:3])])


def _drain_engine(conn: AgiServerConnection, budget: int) -> tuple[list[ServerEvent], bool]:
    """Events until NEED_DATA / ConnectionClosed / error; asserts it never spins."""
    events: list[ServerEvent] = []
    for _ in range(budget):
        try:
            event = conn.next_event()
        except AgiProtocolError:
            return events, True
        if event is NEED_DATA:
            return events, False
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events, False
    raise AssertionError("next_event() kept returning events: it spins")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=_PREFIXES,
    garbage=_GARBAGE,
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
    commands=st.integers(0, 4),
)
def test_engine_codec_survives_garbage(prefix: bytes, garbage: bytes, cuts: list[int], commands: int) -> None:
    conn = AgiServerConnection(max_line=512, max_env_bytes=2048)
    for _ in range(commands):
        conn.send_command("NOOP")
    data = prefix + garbage
    budget = data.count(b"\n") + 3
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    for start, end in itertools.pairwise(bounds):
        conn.receive_data(data[start:end])
        events, failed = _drain_engine(conn, budget)
        if failed:
            return
    conn.receive_data(b"")
    events, failed = _drain_engine(conn, budget)
    assert failed or (events and events[-1] == ConnectionClosed()), "EOF left the codec waiting"


@settings(max_examples=300)
@given(data=_GARBAGE, cut=st.integers(min_value=0, max_value=2000))
def test_asterisk_side_codec_survives_garbage(data: bytes, cut: int) -> None:
    conn = AgiClientConnection()
    for chunk in (data[:cut], data[cut:]):
        if chunk:
            conn.receive_data(chunk)
    conn.receive_data(b"")
    for _ in range(data.count(b"\n") + 2):
        try:
            event = conn.next_command()
        except AgiProtocolError:
            return
        assert event is not NEED_DATA, "EOF left the codec waiting"
        if isinstance(event, ConnectionClosed):
            return
        assert isinstance(event, Command) and len(event.words) <= MAX_COMMAND_ARGS
    raise AssertionError("next_command() kept returning commands: it spins")


@given(st.text(max_size=300))
def test_parse_command_line_never_fails(line: str) -> None:
    words = parse_command_line(line)
    assert len(words) <= MAX_COMMAND_ARGS
    assert all(isinstance(w, str) for w in words)


# ------------------------------------------------------------------ a running server
async def _normal_session(port: int) -> None:
    fake = await FakeAsterisk.connect(port)
    fake.send(ENV)
    assert await fake.next_command() == Command(("ANSWER",), "ANSWER")
    fake.send(b"200 result=0\n")
    assert await fake.next_command() == Command(("GET", "VARIABLE", "FOO"), "GET VARIABLE FOO")
    fake.send(b"200 result=1 (bar)\n")
    assert await fake.next_command() == ConnectionClosed()
    fake.close()


async def _garbage_client(port: int, data: bytes, half_close: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    if half_close:
        writer.write_eof()
    while await reader.read(65536):  # whatever the server says, it must end by closing
        pass
    writer.close()


async def _attack(streams: list[tuple[bytes, bool]]) -> FastAgiServer:
    values: list[str | None] = []
    routes = RouteTable()

    @routes.route("ivr")
    async def handler(session: AgiSession) -> None:
        await session.answer()
        values.append(await session.get_variable("FOO"))

    server = FastAgiServer(
        routes, port=0, env_timeout=0.2, command_timeout=0.2, session_timeout=2.0, max_env_bytes=2048
    )
    async with asyncio.timeout(20):  # hang guard
        async with server:
            await asyncio.gather(
                _normal_session(server.port),
                *(_garbage_client(server.port, data, half) for data, half in streams),
            )
            await _normal_session(server.port)
            await wait_until(lambda: server.stats.current == 0)
    assert values.count("bar") >= 2
    return server


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams=st.lists(st.tuples(st.builds(bytes.__add__, _PREFIXES, _GARBAGE), st.booleans()), max_size=4))
def test_running_server_survives_garbage(streams: list[tuple[bytes, bool]]) -> None:
    server = asyncio.run(_attack(streams))
    stats = server.stats
    assert stats.started == len(streams) + 2
    assert stats.completed + sum(stats.failed.values()) == stats.started
    assert stats.completed >= 2
