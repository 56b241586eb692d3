"""asyncio FastAGI server: routes, sessions with typed command helpers, limits, counters.

Asterisk never times out a FastAGI server (round-2 recordings, scenario 7): a server that
stalls holds the call forever.  So this server always ends a session itself and hands the call
back to the dialplan by closing the socket: when the environment block does not arrive within
``env_timeout`` (or exceeds ``max_env_bytes``), when a reply does not arrive within
``command_timeout``, when the whole session exceeds ``session_timeout``, when the route is
unknown, when the bytes are garbage, and when the handler raises.  A failing session is logged
with its channel name (never a variable's value) and never affects the other sessions.

Built on ``asyncio.Protocol``, and the handler coroutine is driven by the protocol itself: a
command yields a private marker, and ``data_received`` resumes the handler with
``coro.send(reply)`` (or ``coro.throw(error)`` on hangup, timeout, EOF, server close) - no Task,
no Future, no extra loop iteration per command.  When the handler awaits anything else (a
future of asyncio, a database driver, ``asyncio.sleep``...), the session is *promoted*: the
suspended coroutine moves into a real Task, which waits for that future and resumes it, and
from then on that session's commands use one Future each.  The rule this gives a handler:

* ``asyncio.current_task()`` is None until the handler's first non-AGI await; so
  ``asyncio.timeout()`` (which needs a Task) works only after one - ``await asyncio.sleep(0)``
  first to get a Task, or rely on the server's ``command_timeout`` / ``session_timeout``.
  ``asyncio.wait_for`` and ``gather`` work everywhere (they run their argument in a Task of its
  own, and a command awaited there uses a Future).
* One command at a time per session (a second concurrent one raises RuntimeError).

The environment, reply and session deadlines are plain numbers on each connection; one timer
for the whole server sweeps them every ``sweep_interval`` (a quarter of the smallest timeout,
at most 1 s; a ``reply_timeout`` shorter than that fires up to ``sweep_interval`` late), in both
modes.  Server ``close()`` cancels every handler where it waits, and every handler coroutine is
closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any, Final, cast

from ivr.agi import (
    DEFAULT_MAX_ENV_BYTES,
    NEED_DATA,
    AgiEnv,
    AgiServerConnection,
    EnvironmentReceived,
    HangupNotice,
    Reply,
)
from ivr.errors import AgiCommandError, AgiError, AgiHangup, AgiProtocolError, AgiTimeout

__all__ = ["AgiSession", "FastAgiServer", "Handler", "RouteTable", "ServerStats"]

logger = logging.getLogger(__name__)

Handler = Callable[["AgiSession"], Awaitable[None]]
_Driven = Coroutine[Any, Any, None] | Generator[Any, Any, None]

UNKNOWN_ROUTE: Final = "UnknownRoute"
SESSION_TIMEOUT: Final = "SessionTimeout"
CANCELLED: Final = "Cancelled"
CONNECTION_CLOSED: Final = "ConnectionClosed"


class RouteTable:
    """Route name (``agi_network_script``) -> handler.  Explicit, no import side effects."""

    def __init__(self) -> None:
        self._routes: dict[str, Handler] = {}

    def add(self, name: str, handler: Handler) -> None:
        if name in self._routes:
            raise ValueError(f"AGI route {name!r} is already registered")
        self._routes[name] = handler

    def route(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`."""

        def register(handler: Handler) -> Handler:
            self.add(name, handler)
            return handler

        return register

    def get(self, name: str) -> Handler | None:
        return self._routes.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._routes

    def names(self) -> list[str]:
        return sorted(self._routes)


@dataclass
class ServerStats:
    """Connections started, completed (handler returned), failed by error type, open now.

    ``failed`` keys: an exception type name (``AgiHangup``, ``AgiTimeout``,
    ``AgiProtocolError``, ``ValueError`` ...) or ``UnknownRoute``, ``SessionTimeout``,
    ``Cancelled`` (server closing), ``ConnectionClosed`` (closed before the environment block).
    """

    started: int = 0
    completed: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    current: int = 0


def _command_name(words: tuple[str, ...]) -> str:
    """The leading upper-case words (``SET VARIABLE``): loggable, unlike the arguments."""
    name = []
    for word in words[:3]:
        if not (word.isalpha() and word.isascii() and word.isupper()):
            break
        name.append(word)
    return " ".join(name) or "?"


class AgiSession:
    """One FastAGI session as seen by a route handler.

    :meth:`command` sends any command and returns the 200 :class:`~ivr.agi.Reply`; it raises
    :class:`AgiHangup` on 511 and when the connection is gone, :class:`AgiCommandError` on
    510 / 520 (and any other non-200 code), :class:`AgiTimeout` after ``command_timeout`` (the
    session is then closed), ValueError for an argument that cannot be sent (CR/LF/NUL).
    The typed helpers document their own result-code mapping.
    """

    __slots__ = ("_proto", "env")

    def __init__(self, proto: _AgiProtocol, env: AgiEnv) -> None:
        self._proto = proto
        self.env = env

    @property
    def hung_up(self) -> bool:
        """Asterisk sent its ``HANGUP`` line, or closed the connection."""
        return self._proto.hung_up

    @property
    def channel(self) -> str:
        return self.env.channel

    @types.coroutine
    def command(self, *words: str, reply_timeout: float | None = None) -> Generator[Any, Any, Reply]:
        """Send one command (``await session.command("GET", "VARIABLE", name)``);
        ``reply_timeout`` overrides the server's ``command_timeout``."""
        proto = self._proto
        if proto._closed is not None:
            raise AgiHangup(f"{_command_name(words)}: session closed ({proto._closed})")
        if proto._awaiting or proto._waiter is not None:
            raise RuntimeError("AgiSession.command() called while another command awaits its reply")
        data = proto._codec.send_command(*words)
        proto._waiting_for = words
        timeout = proto._command_timeout if reply_timeout is None else reply_timeout
        proto._deadline = proto._clock() + timeout
        proto._write(data)
        if proto._driving:  # direct mode: the protocol resumes us with the reply (or throws)
            proto._awaiting = True
            reply = yield _AWAIT_REPLY
        else:  # in a Task: one future per command
            waiter: asyncio.Future[Reply] = proto._loop.create_future()
            proto._waiter = waiter
            try:
                reply = yield from waiter
            except asyncio.CancelledError:
                proto._abort(AgiHangup(f"{_command_name(words)}: cancelled while awaiting its reply"))
                raise
        code = reply[0]
        if code == 200:
            return cast(Reply, reply)
        if code == 511:
            raise AgiHangup(f"{_command_name(words)}: {reply.text}", reply)
        raise AgiCommandError(f"{_command_name(words)}: {reply.code} {reply.text}", reply)

    async def answer(self) -> None:
        """ANSWER: ``result=0`` ok; ``-1`` -> AgiHangup."""
        reply = await self.command("ANSWER")
        if reply.result == -1:
            raise AgiHangup("ANSWER failed: channel gone", reply)

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None:
        """STREAM FILE: the escape digit pressed, or None when played to the end.

        ``result=-1``: AgiHangup when Asterisk already sent its HANGUP line or when
        ``endpos>0`` (the channel went away during playback); otherwise (``endpos=0`` on a
        live channel) AgiCommandError: the sound file does not exist.
        """
        reply = await self.command("STREAM", "FILE", name, escape_digits)
        return self._digit(reply, f"STREAM FILE {name}")

    def _digit(self, reply: Reply, what: str) -> str | None:
        result = reply.result
        if result is None or result < -1:
            raise AgiCommandError(f"{what}: unexpected result {reply.text!r}", reply)
        if result == -1:
            if self.hung_up or (reply.endpos or 0) > 0:
                raise AgiHangup(f"{what}: channel hung up", reply)
            raise AgiCommandError(f"{what}: sound file not found", reply)
        return chr(result) if result else None

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        """GET DATA: (digits, timed_out).  ``result=-1`` -> AgiHangup.  Digits are returned as
        text (leading zeros kept); the dial-plan style timeout adds ``(timeout)``."""
        reply = await self.command("GET", "DATA", prompt, str(timeout_ms), str(max_digits))
        if reply.result == -1:
            raise AgiHangup("GET DATA: channel hung up", reply)
        return reply.result_text or "", reply.timeout

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        """WAIT FOR DIGIT: the digit, or None on timeout (``result=0``); ``-1`` -> AgiHangup."""
        reply = await self.command("WAIT", "FOR", "DIGIT", str(timeout_ms))
        if reply.result == -1:
            raise AgiHangup("WAIT FOR DIGIT: channel hung up", reply)
        if reply.result is None or reply.result < 0:
            raise AgiCommandError(f"WAIT FOR DIGIT: unexpected result {reply.text!r}", reply)
        return chr(reply.result) if reply.result else None

    async def set_variable(self, name: str, value: str) -> None:
        """SET VARIABLE (value sent quoted as needed: quotes, spaces, UTF-8 arrive intact)."""
        await self.command("SET", "VARIABLE", name, value)

    async def get_variable(self, name: str) -> str | None:
        """GET VARIABLE: None when unset (``result=0``), ``""`` when set but empty."""
        return self._variable(await self.command("GET", "VARIABLE", name))

    async def get_full_variable(self, expression: str) -> str | None:
        """GET FULL VARIABLE: evaluates ``${...}`` - never pass caller-controlled text."""
        return self._variable(await self.command("GET", "FULL", "VARIABLE", expression))

    @staticmethod
    def _variable(reply: Reply) -> str | None:
        if reply.result != 1:
            return None
        return reply.data if reply.data is not None else ""

    async def exec(self, app: str, *args: str) -> int:
        """EXEC app with its arguments joined by ``,`` (Asterisk passes EXEC one options word).

        Returns the application's result (0 normally, -1 usually = hangup inside the app);
        ``result=-2`` (unknown application) -> AgiCommandError.
        """
        words = ("EXEC", app, ",".join(args)) if args else ("EXEC", app)
        reply = await self.command(*words)
        if reply.result == -2:
            raise AgiCommandError(f"EXEC {app}: unknown application", reply)
        if reply.result is None:
            raise AgiCommandError(f"EXEC {app}: unexpected result {reply.text!r}", reply)
        return reply.result

    async def verbose(self, message: str, level: int = 1) -> None:
        """VERBOSE message level (``result=1``)."""
        await self.command("VERBOSE", message, str(level))

    async def hangup(self) -> None:
        """HANGUP the channel; Asterisk then writes its ``HANGUP`` line before the next reply."""
        await self.command("HANGUP")

    async def set_music(self, on: bool, class_: str = "default") -> None:
        """SET MUSIC ON class / SET MUSIC OFF (``result=0``)."""
        if on:
            await self.command("SET", "MUSIC", "ON", class_)
        else:
            await self.command("SET", "MUSIC", "OFF")

    async def channel_status(self) -> int:
        """CHANNEL STATUS: Asterisk's state number (6 = up); ``-1`` -> AgiHangup."""
        reply = await self.command("CHANNEL", "STATUS")
        if reply.result is None:
            raise AgiCommandError(f"CHANNEL STATUS: unexpected result {reply.text!r}", reply)
        if reply.result == -1:
            raise AgiHangup("CHANNEL STATUS: no such channel", reply)
        return reply.result


class _AwaitReply:
    """The private marker a command yields in direct mode ("resume me with the reply")."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<awaiting an AGI reply>"


_AWAIT_REPLY: Final = _AwaitReply()


@types.coroutine
def _adopt(coro: _Driven, first: object) -> Generator[Any, Any, None]:
    """Run a handler suspended outside any Task inside the current Task.

    ``first`` is what the handler yielded (an asyncio future, or None for ``sleep(0)``): the Task
    waits for it, then the handler resumes exactly as if the Task had run it from the start.
    """
    value = first
    while True:
        try:
            yield value
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # a cancellation (or a bad yield) goes to the handler
            try:
                value = coro.throw(exc)
            except StopIteration:
                return
            continue
        yield from cast(Generator[Any, Any, None], coro)  # types.coroutine: may yield from a coroutine
        return


def _loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time`` - as the C function ``time.monotonic`` when that is what asyncio's loop
    calls (one Python frame less per command); other loops (uvloop) keep their own clock."""
    if type(loop).time is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


def _not_connected(data: bytes) -> None:
    raise RuntimeError("FastAGI connection not made yet")


class _AgiProtocol(asyncio.Protocol):
    """One connection: feeds the codec and drives the handler (directly, or through its Task)."""

    def __init__(self, server: FastAgiServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self._clock = _loop_clock(loop)
        self._codec = AgiServerConnection(max_env_bytes=server.max_env_bytes)
        self._transport: asyncio.Transport | None = None
        self._write: Callable[[bytes], object] = _not_connected
        self._command_timeout = server.command_timeout
        self._route = ""
        self._coro: _Driven | None = None  # the handler, from its start to its end
        self._driving = False  # True while data_received & co run the handler (direct mode)
        self._awaiting = False  # direct mode: the handler waits for a reply
        self._waiter: asyncio.Future[Reply] | None = None  # Task mode: the same
        self._task: asyncio.Task[None] | None = None  # set once the handler is promoted
        self._waiting_for: tuple[str, ...] = ()
        self._deadline: float | None = None
        self._session_deadline: float | None = None
        self._session_expired = False
        self._closed: AgiError | None = None
        self._pre_session_failure: str | None = CONNECTION_CLOSED
        self._counted = False
        self.hung_up = False
        self.channel = "?"

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._write = transport.write
        stats = self._server.stats
        stats.started += 1
        stats.current += 1
        self._server._connections.add(self)
        self._deadline = self._clock() + self._server.env_timeout

    def data_received(self, data: bytes) -> None:
        if self._awaiting:  # direct mode, the usual chunk: one complete "200 result=" line
            reply = self._codec.receive_reply(data)
            if reply is not None:
                self._deadline = None
                self._awaiting = False
                self._resume(reply, None)
                return
        self._codec.receive_data(data)
        self._drain()

    def eof_received(self) -> bool:
        self._codec.receive_data(b"")
        self._drain()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._deadline = None
        self._shut("the FastAGI connection is closed")
        if self._pre_session_failure is not None:
            self._count(self._pre_session_failure)

    # -- events
    def _drain(self) -> None:
        codec = self._codec
        try:
            while True:
                event = codec.next_event()
                if event is NEED_DATA:
                    return
                if type(event) is Reply:
                    self._deadline = None
                    if self._awaiting:
                        self._awaiting = False
                        self._resume(event, None)
                    else:
                        waiter = self._waiter
                        self._waiter = None
                        if waiter is not None and not waiter.done():
                            waiter.set_result(event)
                elif type(event) is HangupNotice:
                    self.hung_up = True
                elif type(event) is EnvironmentReceived:
                    self._start_session(event.env)
                else:
                    self.hung_up = True
                    self._shut("Asterisk closed the FastAGI connection")
                    return
        except AgiProtocolError as exc:
            logger.warning("FastAGI protocol error on %s: %s; closing the session", self.channel, exc)
            self._abort(exc)

    def _start_session(self, env: AgiEnv) -> None:
        self._deadline = None
        self.channel = env.channel or "?"
        route = self._route = env.network_script
        handler = self._server.routes.get(route)
        if handler is None:
            logger.warning(
                "unknown FastAGI route %r for %s; closing so the dialplan continues", route[:80], self.channel
            )
            self._pre_session_failure = UNKNOWN_ROUTE
            self._shut(f"unknown route {route[:80]!r}")
            return
        self._pre_session_failure = None
        self._session_deadline = self._clock() + self._server.session_timeout
        try:
            awaitable = handler(AgiSession(self, env))
            self._coro = awaitable if type(awaitable) is types.CoroutineType else awaitable.__await__()
        except Exception as exc:  # a handler that raises at once, or returns no awaitable
            self._end(self._outcome(exc))
            return
        self._resume(None, None)

    # -- driving the handler
    def _resume(self, reply: Reply | None, exc: BaseException | None) -> None:
        """Direct mode: run the handler until it awaits its next reply, ends, or awaits something
        else (then it moves into a Task)."""
        coro = self._coro
        assert coro is not None
        self._driving = True
        try:
            yielded = coro.send(reply) if exc is None else coro.throw(exc)
        except StopIteration:
            self._end(None)
            return
        except BaseException as failure:
            self._end(self._outcome(failure))
            if not isinstance(failure, Exception | asyncio.CancelledError):
                raise
            return
        finally:
            self._driving = False
        if yielded is not _AWAIT_REPLY:
            self._task = self._loop.create_task(self._run_promoted(coro, yielded))

    async def _run_promoted(self, coro: _Driven, first: object) -> None:
        outcome: str | None = None
        try:
            await _adopt(coro, first)
        except asyncio.CancelledError as exc:
            # the watchdog cancels an expired session: that cancellation ends here
            assert self._task is not None
            if not self._session_expired or self._task.uncancel() > 0:
                outcome = CANCELLED
                raise
            outcome = self._outcome(exc)
        except Exception as exc:
            outcome = self._outcome(exc)
        finally:
            self._end(outcome)

    def _outcome(self, exc: BaseException) -> str:
        """Log how the handler failed; the name it is counted under."""
        route = self._route
        if isinstance(exc, asyncio.CancelledError):
            if not self._session_expired:
                return CANCELLED
            logger.warning(
                "FastAGI route %r on %s exceeded session_timeout (%ss); handing the call back",
                route,
                self.channel,
                self._server.session_timeout,
            )
            return SESSION_TIMEOUT
        outcome = type(exc).__name__
        if isinstance(exc, AgiHangup):
            logger.info("FastAGI route %r on %s: hangup (%s)", route, self.channel, exc)
        elif isinstance(exc, AgiError):
            logger.warning("FastAGI route %r on %s: %s: %s", route, self.channel, outcome, exc)
        else:
            logger.error("FastAGI route %r failed on %s", route, self.channel, exc_info=exc)
        return outcome

    def _end(self, outcome: str | None) -> None:
        self._count(outcome)
        self._shut("the FastAGI session is finished")

    # -- deadlines (checked by the server's sweep, see FastAgiServer._sweep)
    def check_deadlines(self, now: float) -> None:
        """End the session past its session deadline, or its environment / reply deadline."""
        if self._closed is not None:
            return
        if self._session_deadline is not None and now >= self._session_deadline:
            self._session_expired = True
            self._closed = AgiTimeout(f"session_timeout ({self._server.session_timeout}s) exceeded")
            self.cancel()
            self._shut(self._closed)
            return
        if self._deadline is None or now < self._deadline:
            return
        if self._codec.env_received:
            message = f"no reply to {_command_name(self._waiting_for)} within the command timeout"
        else:
            message = f"no complete environment block within {self._server.env_timeout}s"
        logger.warning("FastAGI %s on %s; closing the session", message, self.channel)
        self._abort(AgiTimeout(message))

    # -- ending
    def _shut(self, reason: AgiError | str) -> None:
        """No more commands: fail the pending one with ``reason`` (a message = AgiHangup) and
        close the socket.  Only the first reason counts."""
        if self._closed is None:
            self._closed = reason if isinstance(reason, AgiError) else AgiHangup(reason)
        if self._awaiting and not self._driving:
            self._awaiting = False
            self._resume(None, self._closed)
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._closed)
        if self._transport is not None:
            self._transport.close()

    def _abort(self, reason: AgiError) -> None:
        if self._pre_session_failure == CONNECTION_CLOSED:
            self._pre_session_failure = type(reason).__name__
        self._shut(reason)

    def _count(self, outcome: str | None) -> None:
        if self._counted:
            return
        self._counted = True
        stats = self._server.stats
        stats.current -= 1
        if outcome is None:
            stats.completed += 1
        else:
            stats.failed[outcome] += 1

    def cancel(self) -> asyncio.Task[None] | None:
        """Server shutdown or session timeout: cancel the handler where it waits (or close the
        socket if none runs).  Returns the handler's Task when it runs in one."""
        if self._task is None and self._awaiting and not self._driving:
            self._awaiting = False
            self._resume(None, asyncio.CancelledError())
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            return task
        self._shut("the FastAGI server is closing")
        return None

    def after_cancel(self) -> None:
        """After server shutdown: close the handler if its Task was cancelled before it could
        resume it, and count a session that has not been counted yet."""
        if self._coro is not None:
            self._coro.close()
        self._count(CANCELLED)
        self._shut("the FastAGI session is finished")


class FastAgiServer:
    """The FastAGI server: ``async with FastAgiServer(routes, port=0) as server: ...``."""

    def __init__(
        self,
        routes: RouteTable,
        *,
        host: str = "127.0.0.1",
        port: int = 4573,
        session_timeout: float = 600.0,
        command_timeout: float = 60.0,
        env_timeout: float = 5.0,
        max_env_bytes: int = DEFAULT_MAX_ENV_BYTES,
    ) -> None:
        for name, value in (
            ("session_timeout", session_timeout),
            ("command_timeout", command_timeout),
            ("env_timeout", env_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if max_env_bytes < 1:
            raise ValueError(f"max_env_bytes must be >= 1, got {max_env_bytes!r}")
        self.routes = routes
        self.host = host
        self._requested_port = port
        self.session_timeout = session_timeout
        self.command_timeout = command_timeout
        self.env_timeout = env_timeout
        self.max_env_bytes = max_env_bytes
        self.stats = ServerStats()
        self._connections: set[_AgiProtocol] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.sweep_interval = min(1.0, max(0.01, min(session_timeout, command_timeout, env_timeout) / 4))
        """How often the deadlines are checked: a timeout fires up to this much late."""

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("FastAgiServer already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _AgiProtocol(self, loop), self.host, self._requested_port
        )
        self._sweeper = loop.call_later(self.sweep_interval, self._sweep, loop, _loop_clock(loop))
        logger.info("FastAGI server listening on %s:%s", self.host, self.port)

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("FastAgiServer is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop accepting, cancel running handlers, close every connection."""
        server = self._server
        if server is None:
            return
        self._server = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        server.close()
        protos = list(self._connections)
        tasks = [task for proto in protos if (task := proto.cancel()) is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        for proto in protos:
            proto.after_cancel()
        await server.wait_closed()

    def _sweep(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float]) -> None:
        """Every ``sweep_interval``: end the sessions past a deadline (one timer for the whole
        server instead of one per connection or per command)."""
        self._sweeper = loop.call_later(self.sweep_interval, self._sweep, loop, clock)
        now = clock()
        for proto in list(self._connections):
            proto.check_deadlines(now)

    async def __aenter__(self) -> FastAgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
