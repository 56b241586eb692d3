"""FastAGI server tests over loopback, with a fake Asterisk replaying the recordings."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ivr.agi import NEED_DATA, AgiClientConnection, Command, ConnectionClosed, Reply
from ivr.agi_server import AgiSession, FastAgiServer, RouteTable
from ivr.errors import AgiCommandError, AgiHangup, AgiTimeout
from tests.agi_transcripts import Transcript
from tests.test_agi_codec import TRANSCRIPTS, env_from_text, expected_events, meant

ENV = AgiClientConnection.environment_block(
    {"network_script": "ivr", "channel": "PJSIP/sipp-00000042", "uniqueid": "1795869006.42"}
)


class FakeAsterisk:
    """Asterisk's side of one connection, driven by the test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = AgiClientConnection()

    @classmethod
    async def connect(cls, port: int) -> FakeAsterisk:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def next_command(self) -> Command | ConnectionClosed:
        while (event := self.conn.next_command()) is NEED_DATA:
            self.conn.receive_data(await self.reader.read(65536))
        assert not isinstance(event, type(NEED_DATA))
        return event

    def close(self) -> None:
        self.writer.close()


async def wait_until(condition: Callable[[], bool]) -> None:
    """Let the server's callbacks run until ``condition`` holds (a hang guard, not a timing)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition never became true")


Script = list[tuple[tuple[str, ...], bytes]]


async def run_script(
    handler: Callable[[AgiSession], Awaitable[None]], script: Script, **server_kw: Any
) -> FastAgiServer:
    """Serve one session of ``handler``; the fake Asterisk checks each command's words and
    answers the scripted bytes, then expects the server to close the connection."""
    routes = RouteTable()
    routes.add("ivr", handler)
    async with FastAgiServer(routes, port=0, **server_kw) as server:
        fake = await FakeAsterisk.connect(server.port)
        fake.send(ENV)
        for words, reply in script:
            command = await fake.next_command()
            assert isinstance(command, Command), f"expected {words}, got {command}"
            assert command.words == words
            fake.send(reply)
        assert await fake.next_command() == ConnectionClosed()
        fake.close()
        await wait_until(lambda: server.stats.current == 0)
    return server


# ------------------------------------------------------------------ replay of the recordings
COMMAND_SESSIONS = [t for t in TRANSCRIPTS if t.exchanges]


@pytest.mark.parametrize("t", COMMAND_SESSIONS, ids=lambda t: t.name)
async def test_replay_recorded_session(t: Transcript) -> None:
    words_list = [meant(command) for command, _ in t.exchanges]
    outcomes: list[tuple[Reply | Exception, bool]] = []

    async def handler(session: AgiSession) -> None:
        assert session.env == env_from_text(t)
        for words in words_list:
            try:
                outcome: Reply | Exception = await session.command(*words)
            except (AgiHangup, AgiCommandError) as exc:
                outcome = exc
            outcomes.append((outcome, session.hung_up))

    routes = RouteTable()
    routes.add(env_from_text(t).network_script, handler)
    async with FastAgiServer(routes, port=0) as server:
        fake = await FakeAsterisk.connect(server.port)
        fake.send(t.env_bytes)
        for (_, replies), words in zip(t.exchanges, words_list, strict=True):
            command = await fake.next_command()
            assert isinstance(command, Command)
            assert command.words == words
            fake.send("".join(line + "\n" for line in replies).encode())
        assert await fake.next_command() == ConnectionClosed()
        fake.close()
    assert (server.stats.completed, server.stats.current) == (1, 0)

    hung_up = False
    assert len(outcomes) == len(t.exchanges)
    for (_, replies), (outcome, seen_hangup) in zip(t.exchanges, outcomes, strict=True):
        events = expected_events(replies)
        hung_up = hung_up or "HANGUP" in replies
        reply = events[-1]
        assert isinstance(reply, Reply)
        assert seen_hangup == hung_up
        if reply.code == 200:
            assert outcome == reply
        elif reply.code == 511:
            assert isinstance(outcome, AgiHangup) and outcome.reply == reply
        else:
            assert isinstance(outcome, AgiCommandError) and outcome.reply == reply
            assert outcome.usage == reply.usage


def _transcript(suffix: str) -> Transcript:
    return next(t for t in TRANSCRIPTS if t.name.endswith(suffix))


async def test_replay_stall_with_double_hangup_and_eof() -> None:
    """Round 2, 804: HANGUP twice then Asterisk closes; the pending command gets AgiHangup."""
    t = _transcript("stall_12")
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        try:
            await session.verbose("waiting")
        except AgiHangup as exc:
            seen.append(exc)
        seen.append(session.hung_up)
        with pytest.raises(AgiHangup):
            await session.answer()

    routes = RouteTable()
    routes.add("ivr", handler)
    async with FastAgiServer(routes, port=0) as server:
        fake = await FakeAsterisk.connect(server.port)
        fake.send(t.env_bytes)
        command = await fake.next_command()
        assert isinstance(command, Command) and command.words == ("VERBOSE", "waiting", "1")
        fake.send("".join(line + "\n" for line in t.trailing_lines).encode())
        assert t.asterisk_eof
        fake.close()
        await wait_until(lambda: server.stats.current == 0)
    assert isinstance(seen[0], AgiHangup) and seen[1] is True
    assert server.stats.completed == 1


async def test_replay_stall_without_eof_is_ended_by_command_timeout() -> None:
    """Round 2, 802: Asterisk writes HANGUP and waits forever; the engine must close."""
    t = _transcript("stall_11")
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        try:
            await session.verbose("waiting")
        except AgiTimeout as exc:
            seen.append(exc)
            seen.append(session.hung_up)
            raise

    routes = RouteTable()
    routes.add("ivr", handler)
    async with FastAgiServer(routes, port=0, command_timeout=0.2) as server:
        fake = await FakeAsterisk.connect(server.port)
        fake.send(t.env_bytes)
        assert isinstance(await fake.next_command(), Command)
        fake.send("".join(line + "\n" for line in t.trailing_lines).encode())
        assert await fake.next_command() == ConnectionClosed()
        fake.close()
        await wait_until(lambda: server.stats.current == 0)
    assert isinstance(seen[0], AgiTimeout) and seen[1] is True
    assert server.stats.failed["AgiTimeout"] == 1


async def test_replay_accept_close_counts_without_handler() -> None:
    called: list[AgiSession] = []

    async def handler(session: AgiSession) -> None:
        called.append(session)

    routes = RouteTable()
    routes.add("ivr", handler)
    async with FastAgiServer(routes, port=0) as server:
        fake = await FakeAsterisk.connect(server.port)
        fake.close()
        await wait_until(lambda: server.stats.current == 0 and server.stats.started == 1)
    assert not called
    assert server.stats.failed["ConnectionClosed"] == 1


# ------------------------------------------------------------------ typed helpers
async def test_stream_file_helpers() -> None:
    results: list[object] = []

    async def handler(session: AgiSession) -> None:
        results.append(await session.stream_file("tt-monkeys", "0123456789*#"))
        results.append(await session.stream_file("hello-world"))
        with pytest.raises(AgiCommandError, match="sound file not found"):
            await session.stream_file("no-such-sound-file")
        with pytest.raises(AgiHangup):
            await session.stream_file("beep")  # HANGUP line came first: the -1 is a hangup
        with pytest.raises(AgiHangup):
            await session.stream_file("beep")  # 511 on the dead channel

    await run_script(
        handler,
        [
            (("STREAM", "FILE", "tt-monkeys", "0123456789*#"), b"200 result=50 endpos=20640\n"),
            (("STREAM", "FILE", "hello-world", ""), b"200 result=0 endpos=11234\n"),
            (("STREAM", "FILE", "no-such-sound-file", ""), b"200 result=-1 endpos=0\n"),
            (("STREAM", "FILE", "beep", ""), b"HANGUP\n200 result=-1 endpos=0\n"),
            (
                ("STREAM", "FILE", "beep", ""),
                b"511 Command Not Permitted on a dead channel or intercept routine\n",
            ),
        ],
    )
    assert results == ["2", None]


async def test_digit_helpers() -> None:
    results: list[object] = []

    async def handler(session: AgiSession) -> None:
        results.append(await session.get_data("beep", 5000, 1))
        results.append(await session.get_data("beep", 5000, 10))
        results.append(await session.get_data("beep", 5000, 4))
        results.append(await session.wait_for_digit(300))
        results.append(await session.wait_for_digit(300))
        with pytest.raises(AgiHangup):
            await session.get_data("beep", 10000, 4)

    await run_script(
        handler,
        [
            (("GET", "DATA", "beep", "5000", "1"), b"200 result=1\n"),
            (("GET", "DATA", "beep", "5000", "10"), b"200 result=0612 (timeout)\n"),
            (("GET", "DATA", "beep", "5000", "4"), b"200 result= (timeout)\n"),
            (("WAIT", "FOR", "DIGIT", "300"), b"200 result=0\n"),
            (("WAIT", "FOR", "DIGIT", "300"), b"200 result=35\n"),
            (("GET", "DATA", "beep", "10000", "4"), b"200 result=-1\n"),
        ],
    )
    assert results == [("1", False), ("0612", True), ("", True), None, "#"]


async def test_variable_helpers_quote_hostile_text() -> None:
    hostile = 'Mme "X" rappel \\ ; HANGUP'
    results: list[object] = []

    async def handler(session: AgiSession) -> None:
        await session.set_variable("GUICHET_NOTE", hostile)
        results.append(await session.get_variable("GUICHET_NOTE"))
        results.append(await session.get_variable("QUEUEWAIT"))
        results.append(await session.get_variable("QUEUEPOSITION"))
        results.append(await session.get_full_variable("${CALLERID(name)}"))
        with pytest.raises(ValueError, match="CR, LF and NUL"):
            await session.set_variable("GUICHET_NOTE", "x\nEXEC System reboot")
        await session.verbose("still in sync", 3)

    await run_script(
        handler,
        [
            (("SET", "VARIABLE", "GUICHET_NOTE", hostile), b"200 result=1\n"),
            (("GET", "VARIABLE", "GUICHET_NOTE"), f"200 result=1 ({hostile})\n".encode()),
            (("GET", "VARIABLE", "QUEUEWAIT"), b"200 result=1 ()\n"),
            (("GET", "VARIABLE", "QUEUEPOSITION"), b"200 result=0\n"),
            (
                ("GET", "FULL", "VARIABLE", "${CALLERID(name)}"),
                '200 result=1 (Zoé \\"VIP\\" <Dupré>)\n'.encode(),
            ),
            (("VERBOSE", "still in sync", "3"), b"200 result=1\n"),
        ],
    )
    assert results == [hostile, "", None, 'Zoé \\"VIP\\" <Dupré>']


async def test_channel_helpers() -> None:
    results: list[object] = []

    async def handler(session: AgiSession) -> None:
        await session.answer()
        results.append(await session.exec("Playback", "beep"))
        results.append(await session.exec("Dial", "PJSIP/agent2", "30"))
        with pytest.raises(AgiCommandError, match="unknown application"):
            await session.exec("NoSuchApplication", "x")
        await session.set_music(True)
        await session.set_music(False)
        results.append(await session.channel_status())
        await session.hangup()
        with pytest.raises(AgiCommandError) as usage:
            await session.command("GET", "DATA")
        results.append(usage.value.usage)
        with pytest.raises(AgiCommandError, match="510"):
            await session.command("NOSUCHCOMMAND", "foo")
        with pytest.raises(AgiHangup):
            await session.answer()

    await run_script(
        handler,
        [
            (("ANSWER",), b"200 result=0\n"),
            (("EXEC", "Playback", "beep"), b"200 result=0\n"),
            (("EXEC", "Dial", "PJSIP/agent2,30"), b"200 result=-1\n"),
            (("EXEC", "NoSuchApplication", "x"), b"200 result=-2\n"),
            (("SET", "MUSIC", "ON", "default"), b"200 result=0\n"),
            (("SET", "MUSIC", "OFF"), b"200 result=0\n"),
            (("CHANNEL", "STATUS"), b"200 result=6\n"),
            (("HANGUP",), b"200 result=1\n"),
            (("GET", "DATA"), AgiClientConnection.usage_reply(["line one", "line two"])),
            (("NOSUCHCOMMAND", "foo"), b"HANGUP\n510 Invalid or unknown command\n"),
            (("ANSWER",), AgiClientConnection.format_reply(511)),
        ],
    )
    assert results == [0, -1, 6, ("line one", "line two")]


# ------------------------------------------------------------------ failures and limits
async def test_unknown_route_closes_at_once() -> None:
    routes = RouteTable()
    async with FastAgiServer(routes, port=0) as server:
        fake = await FakeAsterisk.connect(server.port)
        fake.send(ENV)
        assert await fake.next_command() == ConnectionClosed()
        fake.close()
    assert server.stats.failed["UnknownRoute"] == 1


async def test_handler_exception_closes_socket_and_server_carries_on() -> None:
    calls: list[str] = []
    routes = RouteTable()

    @routes.route("ivr")
    async def handler(session: AgiSession) -> None:
        calls.append(session.channel)
        if len(calls) == 1:
            raise RuntimeError("boom")
        await session.answer()

    async with FastAgiServer(routes, port=0) as server:
        first = await FakeAsterisk.connect(server.port)
        first.send(ENV)
        assert await first.next_command() == ConnectionClosed()
        second = await FakeAsterisk.connect(server.port)
        second.send(ENV)
        assert await second.next_command() == Command(("ANSWER",), "ANSWER")
        second.send(b"200 result=0\n")
        assert await second.next_command() == ConnectionClosed()
        for fake in (first, second):
            fake.close()
        await wait_until(lambda: server.stats.current == 0)
    assert server.stats.failed["RuntimeError"] == 1
    assert server.stats.completed == 1
    assert calls == ["PJSIP/sipp-00000042"] * 2


async def test_client_closing_before_blank_line_ends_session_while_another_is_served() -> None:
    routes = RouteTable()

    @routes.route("ivr")
    async def handler(session: AgiSession) -> None:
        await session.answer()

    async with FastAgiServer(routes, port=0) as server:
        partial = await FakeAsterisk.connect(server.port)
        partial.send(ENV[:-1])  # everything but the blank line
        full = await FakeAsterisk.connect(server.port)
        full.send(ENV)
        assert isinstance(await full.next_command(), Command)
        partial.writer.write_eof()
        await wait_until(lambda: server.stats.failed["AgiProtocolError"] == 1)
        full.send(b"200 result=0\n")
        assert await full.next_command() == ConnectionClosed()
        assert await partial.next_command() == ConnectionClosed()
        for fake in (partial, full):
            fake.close()
        await wait_until(lambda: server.stats.current == 0)
    assert server.stats.completed == 1


async def test_env_timeout_closes() -> None:
    routes = RouteTable()
    routes.add("ivr", AgiSession.answer)
    async with FastAgiServer(routes, port=0, env_timeout=0.1) as server:
        fake = await FakeAsterisk.connect(server.port)
        fake.send(ENV[:20])
        assert await fake.next_command() == ConnectionClosed()
        fake.close()
        await wait_until(lambda: server.stats.current == 0)
    assert server.stats.failed["AgiTimeout"] == 1


async def test_over_long_env_closes() -> None:
    routes = RouteTable()
    routes.add("ivr", AgiSession.answer)
    async with FastAgiServer(routes, port=0, max_env_bytes=256) as server:
        fake = await FakeAsterisk.connect(server.port)
        fake.send(b"".join(b"agi_arg_%d: %s\n" % (i, b"x" * 40) for i in range(1, 20)))
        assert await fake.next_command() == ConnectionClosed()
        fake.close()
        await wait_until(lambda: server.stats.current == 0)
    assert server.stats.failed["AgiProtocolError"] == 1


async def test_session_timeout_hands_the_call_back() -> None:
    async def handler(session: AgiSession) -> None:
        await session.answer()
        await asyncio.Event().wait()

    server = await run_script(handler, [(("ANSWER",), b"200 result=0\n")], session_timeout=0.2)
    assert server.stats.failed["SessionTimeout"] == 1


async def test_close_cancels_running_sessions() -> None:
    started = asyncio.Event()

    async def handler(session: AgiSession) -> None:
        started.set()
        await asyncio.Event().wait()

    routes = RouteTable()
    routes.add("ivr", handler)
    server = FastAgiServer(routes, port=0)
    await server.start()
    fake = await FakeAsterisk.connect(server.port)
    fake.send(ENV)
    await started.wait()
    await server.close()
    assert await fake.next_command() == ConnectionClosed()
    fake.close()
    assert server.stats.failed["Cancelled"] == 1
    assert server.stats.current == 0


async def test_command_after_asterisk_closed_raises_hangup() -> None:
    seen: list[object] = []
    closed = asyncio.Event()

    async def handler(session: AgiSession) -> None:
        await closed.wait()
        await wait_until(lambda: session.hung_up)
        try:
            await session.answer()
        except AgiHangup as exc:
            seen.append(exc)

    routes = RouteTable()
    routes.add("ivr", handler)
    async with FastAgiServer(routes, port=0) as server:
        fake = await FakeAsterisk.connect(server.port)
        fake.send(ENV)
        fake.writer.write_eof()
        closed.set()
        assert await fake.next_command() == ConnectionClosed()
        fake.close()
        await wait_until(lambda: server.stats.current == 0)
    assert len(seen) == 1 and "closed" in str(seen[0])


def test_route_table() -> None:
    routes = RouteTable()

    @routes.route("ivr")
    async def handler(session: AgiSession) -> None:
        await session.answer()

    assert routes.get("ivr") is handler
    assert "ivr" in routes and routes.names() == ["ivr"]
    with pytest.raises(ValueError, match="already registered"):
        routes.add("ivr", handler)
    assert routes.get("other") is None


def test_server_rejects_bad_limits() -> None:
    with pytest.raises(ValueError, match="command_timeout"):
        FastAgiServer(RouteTable(), command_timeout=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = FastAgiServer(RouteTable()).port


def test_works_under_uvloop() -> None:
    """uvloop: its transports are not asyncio.Transport and its clock is its own."""
    uvloop = pytest.importorskip("uvloop")
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        await session.answer()
        seen.append(await session.get_variable("FOO"))
        try:
            await session.verbose("nobody answers")
        except AgiTimeout as exc:
            seen.append(exc)
            raise

    async def scenario() -> FastAgiServer:
        routes = RouteTable()
        routes.add("ivr", handler)
        async with FastAgiServer(routes, port=0, command_timeout=0.2) as server:
            fake = await FakeAsterisk.connect(server.port)
            fake.send(ENV)
            for reply in (b"200 result=0\n", b"200 result=1 (bar)\n"):
                assert isinstance(await fake.next_command(), Command)
                fake.send(reply)
            assert isinstance(await fake.next_command(), Command)  # VERBOSE, never answered
            assert await fake.next_command() == ConnectionClosed()
            fake.close()
            await wait_until(lambda: server.stats.current == 0)
        return server

    async def guarded() -> FastAgiServer:
        async with asyncio.timeout(20):  # hang guard: fail instead of blocking the suite
            return await scenario()

    server = uvloop.run(guarded())
    assert seen[0] == "bar" and isinstance(seen[1], AgiTimeout)
    assert server.stats.failed["AgiTimeout"] == 1


# ------------------------------------------------------------------ direct mode and promotion
# A handler runs straight from the protocol's callbacks (no Task) until it awaits something that
# is not an AGI command; it then moves into a Task for the rest of the session.  Every scenario
# below runs on both event loops.
LOOPS = ["asyncio", "uvloop"]


def run_on(loop: str, scenario: Callable[[], Awaitable[None]]) -> None:
    async def guarded() -> None:
        async with asyncio.timeout(20):  # hang guard: fail instead of blocking the suite
            await scenario()

    if loop == "uvloop":
        pytest.importorskip("uvloop").run(guarded())
    else:
        asyncio.run(guarded())


def serve(handler: Callable[[AgiSession], Awaitable[None]], **server_kw: Any) -> FastAgiServer:
    routes = RouteTable()
    routes.add("ivr", handler)
    return FastAgiServer(routes, port=0, **server_kw)


@pytest.mark.parametrize("loop", LOOPS)
def test_handler_moves_into_a_task_at_its_first_foreign_await(loop: str) -> None:
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        seen.append(asyncio.current_task())
        await session.answer()
        seen.append(asyncio.current_task())
        await asyncio.sleep(0.001)
        seen.append(asyncio.current_task())
        seen.append(await session.get_variable("FOO"))
        await asyncio.sleep(0)
        seen.append(await session.get_variable("BAR"))

    async def scenario() -> None:
        server = await run_script(
            handler,
            [
                (("ANSWER",), b"200 result=0\n"),
                (("GET", "VARIABLE", "FOO"), b"200 result=1 (foo)\n"),
                (("GET", "VARIABLE", "BAR"), b"200 result=1 (bar)\n"),
            ],
        )
        assert (server.stats.completed, server.stats.current) == (1, 0)

    run_on(loop, scenario)
    assert seen[:2] == [None, None]  # direct mode: no Task
    assert isinstance(seen[2], asyncio.Task)
    assert seen[3:] == ["foo", "bar"]


@pytest.mark.parametrize("loop", LOOPS)
def test_timeout_and_wait_for_after_a_foreign_await(loop: str) -> None:
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        await asyncio.sleep(0)  # the documented way to get a Task before asyncio.timeout()
        try:
            async with asyncio.timeout(0.01):
                await asyncio.Event().wait()
        except TimeoutError:
            seen.append("timed out")
        async with asyncio.timeout(10):
            await session.answer()
        seen.append(await asyncio.wait_for(session.get_variable("FOO"), 10))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 0.01)
        await session.set_variable("GUICHET_DONE", "1")

    async def scenario() -> None:
        server = await run_script(
            handler,
            [
                (("ANSWER",), b"200 result=0\n"),
                (("GET", "VARIABLE", "FOO"), b"200 result=1 (foo)\n"),
                (("SET", "VARIABLE", "GUICHET_DONE", "1"), b"200 result=1\n"),
            ],
        )
        assert server.stats.completed == 1

    run_on(loop, scenario)
    assert seen == ["timed out", "foo"]


@pytest.mark.parametrize("loop", LOOPS)
def test_handler_raising_after_promotion_closes_and_counts(loop: str) -> None:
    async def handler(session: AgiSession) -> None:
        await session.answer()
        await asyncio.sleep(0)
        await session.verbose("promoted")
        raise ValueError("boom after promotion")

    async def scenario() -> None:
        server = await run_script(
            handler,
            [(("ANSWER",), b"200 result=0\n"), (("VERBOSE", "promoted", "1"), b"200 result=1\n")],
        )
        assert server.stats.failed["ValueError"] == 1 and server.stats.completed == 0

    run_on(loop, scenario)


@pytest.mark.parametrize("promoted", [False, True], ids=["direct", "promoted"])
@pytest.mark.parametrize("loop", LOOPS)
def test_close_ends_a_waiting_session(loop: str, promoted: bool) -> None:
    """server.close() while the handler awaits a reply (direct) or an asyncio future (Task)."""
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        try:
            if promoted:
                await asyncio.Event().wait()
            else:
                await session.answer()  # never answered
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def scenario() -> None:
        server = serve(handler)
        await server.start()
        fake = await FakeAsterisk.connect(server.port)
        fake.send(ENV)
        if not promoted:
            assert isinstance(await fake.next_command(), Command)
        await wait_until(lambda: server.stats.started == 1)
        await asyncio.sleep(0.01)  # let a promoted handler reach its await
        await server.close()
        assert await fake.next_command() == ConnectionClosed()
        fake.close()
        assert server.stats.failed["Cancelled"] == 1 and server.stats.current == 0

    run_on(loop, scenario)
    assert seen == ["cancelled"]


@pytest.mark.parametrize("promoted", [False, True], ids=["direct", "promoted"])
@pytest.mark.parametrize("loop", LOOPS)
def test_command_timeout_in_both_modes(loop: str, promoted: bool) -> None:
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        if promoted:
            await asyncio.sleep(0)
        try:
            await session.answer()
        except AgiTimeout as exc:
            seen.append(exc)
            raise

    async def scenario() -> None:
        async with serve(handler, command_timeout=0.1) as server:
            fake = await FakeAsterisk.connect(server.port)
            fake.send(ENV)
            assert isinstance(await fake.next_command(), Command)  # never answered
            assert await fake.next_command() == ConnectionClosed()
            fake.close()
            await wait_until(lambda: server.stats.current == 0)
        assert server.stats.failed["AgiTimeout"] == 1

    run_on(loop, scenario)
    assert len(seen) == 1 and "ANSWER" in str(seen[0])


@pytest.mark.parametrize("promoted", [False, True], ids=["direct", "promoted"])
def test_session_timeout_while_awaiting_a_reply(promoted: bool) -> None:
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        if promoted:
            await asyncio.sleep(0)
        try:
            await session.answer()  # never answered; command_timeout is longer
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def scenario() -> None:
        async with serve(handler, session_timeout=0.1, command_timeout=30) as server:
            fake = await FakeAsterisk.connect(server.port)
            fake.send(ENV)
            assert isinstance(await fake.next_command(), Command)
            assert await fake.next_command() == ConnectionClosed()
            fake.close()
            await wait_until(lambda: server.stats.current == 0)
        assert server.stats.failed["SessionTimeout"] == 1

    run_on("asyncio", scenario)
    assert seen == ["cancelled"]


def test_hangup_reply_resumes_a_direct_handler_that_keeps_going() -> None:
    """Asterisk closes while the handler waits: AgiHangup there, then every command fails at once."""
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        for _ in range(2):
            try:
                await session.answer()
            except AgiHangup as exc:
                seen.append(str(exc))

    async def scenario() -> None:
        async with serve(handler) as server:
            fake = await FakeAsterisk.connect(server.port)
            fake.send(ENV)
            assert isinstance(await fake.next_command(), Command)
            fake.close()
            await wait_until(lambda: server.stats.current == 0)
        assert server.stats.completed == 1

    run_on("asyncio", scenario)
    assert len(seen) == 2 and "closed" in str(seen[1])


def test_a_command_from_another_task_uses_a_future() -> None:
    """A command awaited in a Task of the handler's own (gather) works, with the handler promoted;
    two at once is refused."""
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        (value,) = await asyncio.gather(session.get_variable("FOO"))
        seen.append(value)
        with pytest.raises(RuntimeError, match="another command"):
            await asyncio.gather(session.answer(), session.answer())

    async def scenario() -> None:
        async with serve(handler) as server:
            fake = await FakeAsterisk.connect(server.port)
            fake.send(ENV)
            assert await fake.next_command() == Command(("GET", "VARIABLE", "FOO"), "GET VARIABLE FOO")
            fake.send(b"200 result=1 (foo)\n")
            assert await fake.next_command() == Command(("ANSWER",), "ANSWER")  # the first one only
            assert await fake.next_command() == ConnectionClosed()
            fake.close()
            await wait_until(lambda: server.stats.current == 0)
        assert server.stats.completed == 1

    run_on("asyncio", scenario)
    assert seen == ["foo"]


def test_handler_returning_no_awaitable_is_counted_and_closed() -> None:
    def handler(session: AgiSession) -> None:
        session.channel  # noqa: B018 - a plain function, not a coroutine function

    async def scenario() -> None:
        async with serve(handler) as server:  # type: ignore[arg-type]
            fake = await FakeAsterisk.connect(server.port)
            fake.send(ENV)
            assert await fake.next_command() == ConnectionClosed()
            fake.close()
            await wait_until(lambda: server.stats.current == 0)
        assert server.stats.failed["AttributeError"] == 1

    run_on("asyncio", scenario)


def test_reply_timeout_overrides_command_timeout() -> None:
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        await session.command("ANSWER", reply_timeout=30)
        try:
            await session.command("WAIT", "FOR", "DIGIT", "-1", reply_timeout=0.05)
        except AgiTimeout as exc:
            seen.append(exc)

    async def scenario() -> None:
        async with serve(handler, command_timeout=60) as server:
            assert server.sweep_interval == 1.0
            fake = await FakeAsterisk.connect(server.port)
            fake.send(ENV)
            assert await fake.next_command() == Command(("ANSWER",), "ANSWER")
            fake.send(b"200 result=0\n")
            assert isinstance(await fake.next_command(), Command)  # never answered
            assert await fake.next_command() == ConnectionClosed()
            fake.close()
            await wait_until(lambda: server.stats.current == 0)
        assert server.stats.completed == 1

    run_on("asyncio", scenario)
    assert len(seen) == 1 and "WAIT FOR DIGIT" in str(seen[0])
