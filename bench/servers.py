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
from collections.abc import Awaitable, Callable
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
KINDS = ("ours", "panoramisk", "limit")

Closer = Callable[[], Awaitable[None]]


# --- (d) the limit: write each command, read one line per reply, nothing else ------------------
_LINES = tuple(step.line for step in STEPS)


class LimitProtocol(asyncio.Protocol):
    """Writes the 10 commands, one per reply line; finds the end of the env block and each '\\n', no more."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._step = -1  # -1: reading the environment block

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        buf = self._buf + data
        if self._step < 0:
            end = buf.find(b"\n\n")
            if end < 0:
                self._buf = buf
                return
            buf = buf[end + 2 :]
            self._step = 0
            transport.write(_LINES[0])
        while (nl := buf.find(b"\n")) >= 0:
            buf = buf[nl + 1 :]
            self._step += 1
            if self._step == len(_LINES):
                transport.close()
                return
            transport.write(_LINES[self._step])
        self._buf = buf


async def start_limit() -> tuple[int, Closer]:
    server = await asyncio.get_running_loop().create_server(LimitProtocol, HOST, 0)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers", description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("loop", choices=LOOPS)
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop  # noqa: PLC0415 - optional event loop

        uvloop.run(serve(args.kind))
    else:
        asyncio.run(serve(args.kind))


if __name__ == "__main__":
    main(sys.argv[1:])
