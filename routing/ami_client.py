"""Asyncio AMI client on top of the sans-I/O codec (``routing.ami``).

Why not panoramisk's Manager underneath: its parser drops headers with an empty value (``Value: ``,
``PausedReason: ``; 50 of the 429 recorded events lose one), so it fails "every header kept" before
any other test; our own client is small and is tested on the same recordings.

Behaviour:

* :meth:`AmiClient.start` connects and logs in, failing fast (:class:`AmiAuthError` for a refused
  login, naming the user but never the secret; :class:`AmiConnectionLost` when nothing answers).
  From then on the client reconnects forever with exponential backoff and jitter, logs in again and
  awaits every :meth:`~AmiClient.on_connect` hook (e.g. a QueueStatus / CoreShowChannels resync)
  after EVERY (re)connection, before it delivers any event of that connection: events that arrive
  meanwhile are held, then delivered in order.  A hook that raises makes the connection count as
  failed (logged; the client reconnects and runs the hooks again), except in :meth:`start`, where the
  error propagates.
* :meth:`AmiClient.send_action` gives each action a unique ActionID, matches the reply by ActionID
  (events and other replies may come in between) and, when the reply says ``EventList: start``,
  collects the events carrying that ActionID until the ``EventList: Complete`` one.  Those list
  events are NOT delivered to subscribers.  Other events that carry an ActionID (OriginateResponse
  of an async Originate) are.  A reply arriving after its action timed out is dropped (a late list's
  events then reach subscribers).
* Subscribers are plain (synchronous) functions, called in arrival order, specific subscribers of
  an event name before ``"*"`` ones; a callback that raises is logged and the others still run.  A
  callback that needs to await schedules its own task: an awaiting callback would stall the reader,
  and one awaiting an action reply would deadlock it.
* :meth:`AmiClient.close` sends Logoff (Asterisk answers ``Response: Goodbye``) and closes.

Nothing happens at import time; everything is owned by the AmiClient object.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from guichet.names import H_EVENT_LIST, H_EVENTS, H_MESSAGE, H_SECRET, H_USERNAME
from routing.ami import AmiMessage, AmiParser, encode_action
from routing.errors import (
    AmiActionError,
    AmiAuthError,
    AmiConnectionLost,
    AmiError,
    AmiProtocolError,
    AmiTimeout,
)

__all__ = ["AmiClient", "AmiResponse", "ConnectHook", "EventCallback"]

log = logging.getLogger(__name__)

ConnectHook = Callable[["AmiClient"], Awaitable[None]]
EventCallback = Callable[[AmiMessage], None]
Headers = Iterable[tuple[str, str]] | Mapping[str, str]

_OK_RESPONSES = frozenset({"success", "goodbye", "follows"})
_READ_SIZE = 65536
_LOGOFF_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class AmiResponse:
    """The reply to an action; for a list action, the listed events and the closing event too."""

    response: AmiMessage
    events: tuple[AmiMessage, ...] = ()
    complete: AmiMessage | None = None  # the ``EventList: Complete`` event of a list action

    @property
    def ok(self) -> bool:
        return self.response.name.lower() in _OK_RESPONSES

    @property
    def message(self) -> str | None:
        return self.response.get(H_MESSAGE)


class _Pending:
    __slots__ = ("action", "events", "future", "listing", "response")

    def __init__(self, action: str, future: asyncio.Future[AmiResponse]) -> None:
        self.action = action
        self.future = future
        self.response: AmiMessage | None = None
        self.events: list[AmiMessage] = []
        self.listing = False


class _Connection:
    """One TCP connection to Asterisk and what belongs to it alone."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = AmiParser()
        self.pending: dict[str, _Pending] = {}
        self.lists_open = 0
        self.logged_in = False
        self.live = False  # events go to subscribers (else they are held until the hooks are done)
        self.held: list[AmiMessage] = []
        self.closed = asyncio.Event()
        self.reader_task: asyncio.Task[None] | None = None


class AmiClient:
    """A long-lived AMI connection: actions with replies, event subscriptions, resync hooks."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        reconnect_backoff: tuple[float, float] = (0.5, 30.0),
        action_timeout: float = 10.0,
        events: str = "on",
        rng: random.Random | None = None,
    ) -> None:
        first, cap = reconnect_backoff
        if not 0 < first <= cap:
            raise ValueError("reconnect_backoff must be (first_delay, max_delay) with 0 < first <= max")
        if action_timeout <= 0:
            raise ValueError("action_timeout must be positive")
        self._host = host
        self._port = port
        self._username = username
        self._secret = secret
        self._backoff = (first, cap)
        self._action_timeout = action_timeout
        self._events = events
        self._rng = rng or random.Random()
        self._id_prefix = f"guichet-{uuid.uuid4().hex[:8]}"
        self._ids = itertools.count(1)
        self._hooks: list[ConnectHook] = []
        self._subscribers: dict[str, list[EventCallback]] = {}
        self._conn: _Connection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"AmiClient({self._host}:{self._port}, user={self._username!r}, connected={self.connected})"

    # --- registration --------------------------------------------------------------------

    def on_connect(self, hook: ConnectHook) -> None:
        """Register a coroutine function awaited after every (re)connection, before events flow."""
        if hook in self._hooks:
            raise ValueError(f"connect hook {hook!r} is already registered")
        self._hooks.append(hook)

    def subscribe(self, event_name: str, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event named ``event_name`` (``"*"``: every event).

        Returns the function that unsubscribes.  The same callback twice for one name raises.
        """
        if inspect.iscoroutinefunction(callback):
            raise TypeError("AMI event callbacks must be plain functions (schedule a task to await)")
        callbacks = self._subscribers.setdefault(event_name, [])
        if callback in callbacks:
            raise ValueError(f"{callback!r} is already subscribed to {event_name!r}")
        callbacks.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                callbacks.remove(callback)

        return unsubscribe

    # --- life cycle ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and conn.logged_in and not conn.closed.is_set()

    async def start(self) -> None:
        """Connect and log in (raising on failure); then keep the connection up until close()."""
        if self._supervisor is not None:
            raise RuntimeError("AmiClient already started")
        self._closing = False
        conn = await self._open()
        self._supervisor = asyncio.create_task(self._supervise(conn), name="ami-reconnect")

    async def close(self) -> None:
        """Log off (``Response: Goodbye``) and close; pending actions fail with AmiConnectionLost."""
        self._closing = True
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        conn = self._conn
        if conn is None:
            return
        if conn.logged_in and not conn.closed.is_set():
            try:
                await self._request(conn, "Logoff", (), min(self._action_timeout, _LOGOFF_TIMEOUT))
            except AmiError as exc:
                log.debug("AMI Logoff not acknowledged: %s", exc)
        await self._shutdown(conn)

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port), self._action_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise AmiConnectionLost(f"cannot connect to AMI at {self._host}:{self._port}: {exc}") from exc
        conn = _Connection(reader, writer)
        conn.reader_task = asyncio.create_task(self._read_loop(conn), name="ami-reader")
        self._conn = conn
        try:
            login = await self._request(
                conn,
                "Login",
                [(H_USERNAME, self._username), (H_SECRET, self._secret), (H_EVENTS, self._events)],
                self._action_timeout,
            )
            if not login.ok:
                raise AmiAuthError(
                    f"AMI login refused for user {self._username!r} at {self._host}:{self._port}: "
                    f"{login.message or login.response.name}"
                )
            conn.logged_in = True
            log.info("AMI logged in as %r at %s:%s", self._username, self._host, self._port)
            for hook in list(self._hooks):
                await hook(self)
        except BaseException:
            await self._shutdown(conn)
            raise
        held, conn.held = conn.held, []
        conn.live = True
        for event in held:
            self._deliver(event)
        return conn

    async def _supervise(self, conn: _Connection) -> None:
        attempt = 0
        while True:
            await conn.closed.wait()
            if self._closing:
                return
            log.warning("AMI connection to %s:%s lost; reconnecting", self._host, self._port)
            while True:
                await asyncio.sleep(self._reconnect_delay(attempt))
                attempt += 1
                try:
                    conn = await self._open()
                except AmiAuthError as exc:
                    log.error("%s", exc)
                except (AmiError, OSError) as exc:
                    log.warning("AMI reconnection failed: %s", exc)
                except Exception:
                    log.exception("AMI connect hook failed; the connection will be retried")
                else:
                    attempt = 0
                    break

    def _reconnect_delay(self, attempt: int) -> float:
        first, cap = self._backoff
        delay = min(cap, first * 2.0 ** min(attempt, 32))
        return delay * (0.5 + self._rng.random() / 2)

    async def _shutdown(self, conn: _Connection) -> None:
        conn.writer.close()
        task = conn.reader_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._teardown(conn, "connection closed")
        with contextlib.suppress(OSError):
            await conn.writer.wait_closed()

    def _teardown(self, conn: _Connection, reason: str) -> None:
        if conn.closed.is_set():
            return
        conn.closed.set()
        conn.writer.close()
        pending = list(conn.pending.values())
        conn.pending.clear()
        conn.lists_open = 0
        for item in pending:
            if not item.future.done():
                item.future.set_exception(AmiConnectionLost(f"AMI {item.action}: {reason}"))
        if self._conn is conn:
            self._conn = None

    # --- reading -------------------------------------------------------------------------

    async def _read_loop(self, conn: _Connection) -> None:
        reason = "connection closed by Asterisk"
        try:
            while True:
                data = await conn.reader.read(_READ_SIZE)
                if not data:
                    conn.parser.feed_eof()
                    break
                for msg in conn.parser.feed(data):
                    self._dispatch(conn, msg)
        except AmiProtocolError as exc:
            reason = f"AMI protocol error: {exc}"
            log.warning("dropping the AMI connection: %s", exc)
        except OSError as exc:
            reason = f"connection error: {exc}"
        except asyncio.CancelledError:
            reason = "connection closed"
            raise
        finally:
            self._teardown(conn, reason)

    def _dispatch(self, conn: _Connection, msg: AmiMessage) -> None:
        if msg.kind == "event":
            if conn.lists_open and self._collect(conn, msg):
                return
            if conn.live:
                self._deliver(msg)
            else:
                conn.held.append(msg)
        elif msg.kind == "response":
            action_id = msg.action_id
            pending = conn.pending.get(action_id) if action_id is not None else None
            if action_id is None or pending is None or pending.response is not None:
                log.debug("AMI reply to no waiting action (ActionID %r)", action_id)
                return
            pending.response = msg
            if (msg.get(H_EVENT_LIST) or "").lower() == "start":
                pending.listing = True
                conn.lists_open += 1
            else:
                self._finish(conn, action_id, pending, None)
        else:
            log.warning("unexpected AMI %s %r from the server, ignored", msg.kind, msg.name)

    def _collect(self, conn: _Connection, event: AmiMessage) -> bool:
        """Add ``event`` to the list action it belongs to, if any; True when it did."""
        action_id = event.action_id
        pending = conn.pending.get(action_id) if action_id is not None else None
        if action_id is None or pending is None or not pending.listing:
            return False
        if (event.get(H_EVENT_LIST) or "").lower() == "complete":
            self._finish(conn, action_id, pending, event)
        else:
            pending.events.append(event)
        return True

    def _finish(
        self, conn: _Connection, action_id: str, pending: _Pending, complete: AmiMessage | None
    ) -> None:
        self._forget(conn, action_id)
        assert pending.response is not None
        if not pending.future.done():
            pending.future.set_result(AmiResponse(pending.response, tuple(pending.events), complete))

    @staticmethod
    def _forget(conn: _Connection, action_id: str) -> None:
        pending = conn.pending.pop(action_id, None)
        if pending is not None and pending.listing:
            conn.lists_open -= 1

    def _deliver(self, event: AmiMessage) -> None:
        callbacks = (*self._subscribers.get(event.name, ()), *self._subscribers.get("*", ()))
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("AMI subscriber %r failed on %s", callback, event.name)

    # --- actions -------------------------------------------------------------------------

    async def send_action(
        self,
        action: str,
        headers: Headers = (),
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-action limit, part of the interface
        check: bool = True,
    ) -> AmiResponse:
        """Send an action and return its reply (with the list events for a list action).

        Raises AmiActionError for ``Response: Error`` (unless ``check=False``), AmiTimeout,
        AmiConnectionLost when not connected or when the connection drops meanwhile, and
        ValueError for a header holding CR / LF (nothing is sent then).
        """
        if action.lower() in ("login", "logoff"):
            raise ValueError(f"{action} is done by start() / close(), not send_action()")
        conn = self._conn
        if conn is None or not conn.logged_in or conn.closed.is_set():
            raise AmiConnectionLost(f"AMI {action}: not connected to {self._host}:{self._port}")
        reply = await self._request(
            conn, action, headers, self._action_timeout if timeout is None else timeout
        )
        if check and not reply.ok:
            raise AmiActionError(action, reply.response)
        return reply

    async def _request(self, conn: _Connection, action: str, headers: Headers, wait_s: float) -> AmiResponse:
        action_id = f"{self._id_prefix}-{next(self._ids)}"
        data = encode_action(action, headers, action_id)
        if conn.closed.is_set():
            raise AmiConnectionLost(f"AMI {action}: connection closed")
        future: asyncio.Future[AmiResponse] = asyncio.get_running_loop().create_future()
        conn.pending[action_id] = _Pending(action, future)
        log.debug("AMI action %s (ActionID %s)", action, action_id)
        try:
            conn.writer.write(data)
            await conn.writer.drain()
            return await asyncio.wait_for(future, wait_s)
        except TimeoutError:
            raise AmiTimeout(f"AMI {action}: no complete reply within {wait_s:g} s") from None
        except OSError as exc:
            raise AmiConnectionLost(f"AMI {action}: {exc}") from exc
        finally:
            self._forget(conn, action_id)
