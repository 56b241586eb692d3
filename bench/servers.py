"""The FastAGI servers under test, each run alone in a subprocess: ``python -m bench.servers KIND LOOP``.

The process listens on 127.0.0.1 (a free port), prints ``READY <port>`` on stdout, then obeys its
stdin: each ``cpu`` line is answered with ``CPU <ns>`` (user + system CPU time of this process, from
``resource.getrusage``); end of stdin closes the server and ends the process.  Every server runs
the same flow (``bench.flow.STEPS``) for each connection, then closes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, cast

from bench.flow import (
    CALLER_NUM_VAR,
    DIGIT_TIMEOUT_MS,
    IVR_DONE,
    LANGUAGE,
    MAX_DIGITS,
    PRIO,
    PROMPT_MENU,
    PROMPT_SERVICE,
    PROMPT_URGENCY,
    PROMPT_WELCOME,
    QUEUE,
    STEPS,
)
from guichet.names import CHANNEL_LANGUAGE, GUICHET_IVR_DONE, GUICHET_PRIO, GUICHET_QUEUE
from ivr.agi_server import AgiSession, FastAgiServer, RouteTable

HOST = "127.0.0.1"
ROUTE = "test"  # agi_network_script of the recorded environment block (agi://127.0.0.1:4573/test)
LOOPS = ("asyncio", "uvloop")
KINDS = ("ours", "panoramisk", "task-floor", "direct-floor", "limit")

Closer = Callable[[], Awaitable[None]]


# --- (d) the limit: write each command, read one line per reply, nothing else ------------------
_LINES = tuple(step.line for step in STEPS)


class _LineProtocol(asyncio.Protocol):
    """Finds the end of the env block, then each reply line ('\\n'), and hands them to the subclass."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._env_done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data
        if not self._env_done:
            end = buf.find(b"\n\n")
            if end < 0:
                self._buf = buf
                return
            buf = buf[end + 2 :]
            self._env_done = True
            self.on_env()
        while (nl := buf.find(b"\n")) >= 0:
            line, buf = buf[:nl], buf[nl + 1 :]
            self.on_line(line)
        self._buf = buf

    def on_env(self) -> None:
        raise NotImplementedError

    def on_line(self, line: bytes) -> None:
        raise NotImplementedError


class LimitProtocol(_LineProtocol):
    """Writes the 10 commands, one per reply line, from the receive callback itself."""

    def __init__(self) -> None:
        super().__init__()
        self._step = 0

    def on_env(self) -> None:
        assert self._transport is not None
        self._transport.write(_LINES[0])

    def on_line(self, line: bytes) -> None:
        assert self._transport is not None
        self._step += 1
        if self._step == len(_LINES):
            self._transport.close()
        else:
            self._transport.write(_LINES[self._step])


async def start_limit() -> tuple[int, Closer]:
    server = await asyncio.get_running_loop().create_server(LimitProtocol, HOST, 0)
    return _port(server), _closer(server)


# --- floors of a coroutine handler API: the limit's work, written as ``await command(...)`` ------
async def _minimal_flow(command: Callable[[bytes], Awaitable[bytes]]) -> None:
    for line in _LINES:
        await command(line)


class TaskFloorProtocol(_LineProtocol):
    """The usual asyncio way: the handler runs in a Task and awaits one Future per command."""

    def __init__(self) -> None:
        super().__init__()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[bytes] | None = None

    def on_env(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = self._loop.create_task(_minimal_flow(self._command))
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        assert self._transport is not None
        self._transport.close()

    async def _command(self, line: bytes) -> bytes:
        assert self._transport is not None and self._loop is not None
        self._waiter = self._loop.create_future()
        self._transport.write(line)
        return await self._waiter

    def on_line(self, line: bytes) -> None:
        waiter, self._waiter = self._waiter, None
        assert waiter is not None
        waiter.set_result(line)


class _Command:
    """Awaitable handing one command to the protocol that drives the coroutine; resumes with the reply."""

    __slots__ = ("line",)

    def __init__(self, line: bytes) -> None:
        self.line = line

    def __await__(self) -> Generator[_Command, bytes, bytes]:
        reply = yield self
        return reply


class DirectFloorProtocol(_LineProtocol):
    """The handler coroutine resumed from the receive callback itself (coro.send(reply)): no Task, no
    Future, no extra loop iteration per command."""

    def __init__(self) -> None:
        super().__init__()
        self._coro: Coroutine[Any, Any, None] | None = None

    def on_env(self) -> None:
        self._coro = _minimal_flow(_Command)
        self._resume(None)

    def on_line(self, line: bytes) -> None:
        self._resume(line)

    def _resume(self, reply: bytes | None) -> None:
        assert self._coro is not None and self._transport is not None
        try:
            command = self._coro.send(reply)
        except StopIteration:
            self._transport.close()
            return
        self._transport.write(command.line)


async def start_task_floor() -> tuple[int, Closer]:
    server = await asyncio.get_running_loop().create_server(TaskFloorProtocol, HOST, 0)
    return _port(server), _closer(server)


async def start_direct_floor() -> tuple[int, Closer]:
    server = await asyncio.get_running_loop().create_server(DirectFloorProtocol, HOST, 0)
    return _port(server), _closer(server)


# --- (b) panoramisk 1.4 FastAGI ------------------------------------------------------------------
async def panoramisk_flow(request: Any) -> None:
    """The flow with panoramisk's ``Request.send_command`` (it parses every reply into a dict)."""
    send = request.send_command
    await send("ANSWER")
    await send(f"SET VARIABLE {CHANNEL_LANGUAGE} {LANGUAGE}")
    await send(f"GET VARIABLE {CALLER_NUM_VAR}")
    await send(f'STREAM FILE {PROMPT_WELCOME} ""')
    await send(f"GET DATA {PROMPT_MENU} {DIGIT_TIMEOUT_MS} {MAX_DIGITS}")
    await send(f'STREAM FILE {PROMPT_SERVICE} ""')
    await send(f"GET DATA {PROMPT_URGENCY} {DIGIT_TIMEOUT_MS} {MAX_DIGITS}")
    await send(f"SET VARIABLE {GUICHET_QUEUE} {QUEUE}")
    await send(f"SET VARIABLE {GUICHET_PRIO} {PRIO}")
    await send(f"SET VARIABLE {GUICHET_IVR_DONE} {IVR_DONE}")


async def start_panoramisk() -> tuple[int, Closer]:
    from panoramisk.fast_agi import Application  # noqa: PLC0415 - only this server needs it

    app = Application()
    app.add_route(ROUTE, panoramisk_flow)
    server = await asyncio.start_server(app.handler, HOST, 0)
    return _port(server), _closer(server)


# --- (a) ours: ivr.agi_server.FastAgiServer with the AgiSession helpers ---------------------------
async def ours_flow(session: AgiSession) -> None:
    """The flow with the typed helpers (each reply parsed and checked, as a real route does)."""
    await session.answer()
    await session.set_variable(CHANNEL_LANGUAGE, LANGUAGE)
    await session.get_variable(CALLER_NUM_VAR)
    await session.stream_file(PROMPT_WELCOME)
    await session.get_data(PROMPT_MENU, DIGIT_TIMEOUT_MS, MAX_DIGITS)
    await session.stream_file(PROMPT_SERVICE)
    await session.get_data(PROMPT_URGENCY, DIGIT_TIMEOUT_MS, MAX_DIGITS)
    await session.set_variable(GUICHET_QUEUE, QUEUE)
    await session.set_variable(GUICHET_PRIO, PRIO)
    await session.set_variable(GUICHET_IVR_DONE, IVR_DONE)


async def start_ours() -> tuple[int, Closer]:
    routes = RouteTable()
    routes.add(ROUTE, ours_flow)
    server = FastAgiServer(routes, host=HOST, port=0)
    await server.start()
    return server.port, server.close


# --- plumbing -------------------------------------------------------------------------------------
def _port(server: asyncio.Server) -> int:
    port = server.sockets[0].getsockname()[1]
    assert isinstance(port, int)
    return port


def _closer(server: asyncio.Server) -> Closer:
    async def close() -> None:
        server.close()
        await server.wait_closed()

    return close


STARTERS: dict[str, Callable[[], Awaitable[tuple[int, Closer]]]] = {
    "limit": start_limit,
    "task-floor": start_task_floor,
    "direct-floor": start_direct_floor,
    "ours": start_ours,
    "panoramisk": start_panoramisk,
}


def cpu_ns() -> int:
    """User + system CPU time of this process so far, in nanoseconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round((usage.ru_utime + usage.ru_stime) * 1e9)


async def serve(kind: str) -> None:
    loop = asyncio.get_running_loop()
    port, close = await STARTERS[kind]()
    stdin_closed: asyncio.Future[None] = loop.create_future()
    pending = b""

    def on_control() -> None:
        nonlocal pending
        data = os.read(0, 4096)
        if not data:
            loop.remove_reader(0)
            stdin_closed.set_result(None)
            return
        pending += data
        while (nl := pending.find(b"\n")) >= 0:
            command, pending = pending[:nl].strip(), pending[nl + 1 :]
            if command != b"cpu":
                loop.remove_reader(0)
                stdin_closed.set_exception(ValueError(f"unknown control command {command!r}"))
                return
            os.write(1, b"CPU %d\n" % cpu_ns())

    loop.add_reader(0, on_control)
    os.write(1, b"READY %d\n" % port)
    try:
        await stdin_closed
    finally:
        await close()


def settle_malloc() -> None:
    """Make every server start from the same allocator state.

    asyncio reads each chunk into a fresh 256 KiB buffer.  glibc serves that from mmap (mmap + mremap +
    munmap per read) until the process has freed one block larger than that, which raises its mmap
    threshold; whether that already happened depends on what the process imported and did.  Freeing
    one 1 MiB block here settles it the same way for every server, as in any long-running process.
    """
    bytearray(1 << 20)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers", description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("loop", choices=LOOPS)
    args = parser.parse_args(argv)
    settle_malloc()
    if args.loop == "uvloop":
        import uvloop  # noqa: PLC0415 - optional event loop

        uvloop.run(serve(args.kind))
    else:
        asyncio.run(serve(args.kind))


if __name__ == "__main__":
    main(sys.argv[1:])
