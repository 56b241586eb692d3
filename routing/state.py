"""Live state store: the live model that the desk and the wallboard read, behind one interface.

Two implementations share the contract (and the contract tests):

* :class:`MemoryStateStore` (this module): one process, the default.
* :class:`routing.state_redis.RedisStateStore`: several engine processes sharing one Redis (hashes and
  sorted sets, pub/sub for live updates, a lease so that exactly one process consumes AMI and runs the
  tickers while all of them serve FastAGI and the web).

What the store holds:

* waiting callers per queue, in serving order: priority descending, then join time ascending, then
  arrival order (the order in which the store first saw each caller, kept when a caller is updated:
  like app_queue, an equal-priority newcomer goes behind those already there);
* agents (state, paused reason, queues, since) and calls in progress;
* durable documents by kind and id (queue counters, queued callbacks, requests for the AMI consumer);
* batches of writes (:meth:`StateStore.batch`) that readers see whole, their message published last;
* a publish/subscribe bus of plain-string messages (JSON when structured) for live updates;
* named leader leases: :meth:`StateStore.try_acquire_leader` / :meth:`~StateStore.renew_leader` /
  :meth:`~StateStore.release_leader`, and the :class:`Leadership` helper (``async with
  store.leadership(name, owner, ttl_s) as lead``) that waits for the lease, renews it in the
  background and sets ``lead.lost`` as soon as it can no longer be sure to hold it, so that the holder
  stops consuming AMI.

Text from callers (names) is stored verbatim and returned intact. Records are immutable dataclasses.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, fields, replace
from types import TracebackType
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

# Join times accepted: epoch seconds below this (year 5138) keep the serving rank's fixed width.
MAX_JOINED_AT = 1e11
# Priorities accepted by the store (Asterisk's QUEUE_PRIO is an int; this range is far beyond any use).
MAX_PRIORITY = 10**9
MIN_PRIORITY = -(10**9)


class StateStoreError(Exception):
    """Base class of the live state store's errors."""


class StateStoreClosed(StateStoreError):
    """The store was closed: no more reads, writes or subscriptions."""


class CorruptRecord(StateStoreError):
    """A stored record cannot be decoded (a field is missing or not valid JSON)."""


@dataclass(frozen=True, slots=True)
class WaitingCaller:
    """A caller waiting in a queue (from QueueCallerJoin and the IVR's GUICHET_* variables)."""

    uniqueid: str
    channel: str
    queue: str
    caller_number: str
    caller_name: str
    priority: int
    joined_at: float  # epoch seconds
    service: str
    urgency: str
    citizen_id: str | None = None
    contact_id: str | None = None
    reason: str | None = None  # the IVR choice that routed the call
    # Why the caller has this priority (aging's explanation, in French, for supervisors).
    priority_reason: str = ""


@dataclass(frozen=True, slots=True)
class AgentState:
    """An agent's presence: ``state`` is e.g. available, ringing, talking, wrapup, paused, logged_out."""

    agent: str  # the agent's identifier (its queue member interface, e.g. PJSIP/agent-101)
    name: str
    state: str
    paused_reason: str
    queues: tuple[str, ...]
    since: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class CallInProgress:
    """A call connected to an agent (AgentConnect) and not yet ended."""

    uniqueid: str
    queue: str
    agent: str
    caller_number: str
    started_at: float  # epoch seconds
    caller_name: str = ""
    citizen_id: str | None = None  # the card the desk pops
    contact_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent view of the whole live model (taken atomically)."""

    callers: Mapping[str, tuple[WaitingCaller, ...]]  # queue -> callers in serving order
    agents: Mapping[str, AgentState]
    calls: Mapping[str, CallInProgress]


_R = TypeVar("_R", WaitingCaller, AgentState, CallInProgress)


def encode_record(record: WaitingCaller | AgentState | CallInProgress) -> dict[str, str]:
    """A record as a flat mapping of field name -> JSON text (the shape of a Redis hash)."""
    return {f.name: json.dumps(getattr(record, f.name), ensure_ascii=False) for f in fields(record)}


def decode_record(kind: type[_R], raw: Mapping[str, str]) -> _R:
    """The inverse of :func:`encode_record`; keys that are not fields of ``kind`` are ignored."""
    values: dict[str, Any] = {}
    for f in fields(kind):
        if f.name not in raw:
            raise CorruptRecord(f"{kind.__name__} record lacks field {f.name!r}")
        try:
            values[f.name] = json.loads(raw[f.name])
        except ValueError as exc:
            raise CorruptRecord(f"{kind.__name__} field {f.name!r} is not JSON: {exc}") from exc
    record = kind(**values)
    if isinstance(record, AgentState):
        return replace(record, queues=tuple(record.queues))
    return record


def check_caller(caller: WaitingCaller) -> None:
    """Reject a caller that the store could not order or key (ValueError with the reason)."""
    if not caller.uniqueid:
        raise ValueError("waiting caller without a uniqueid")
    if not caller.queue:
        raise ValueError(f"waiting caller {caller.uniqueid!r} without a queue")
    if isinstance(caller.priority, bool) or not isinstance(caller.priority, int):
        raise ValueError(f"caller {caller.uniqueid!r}: priority must be an int, not {caller.priority!r}")
    if not MIN_PRIORITY <= caller.priority <= MAX_PRIORITY:
        raise ValueError(
            f"caller {caller.uniqueid!r}: priority {caller.priority} outside [{MIN_PRIORITY}, {MAX_PRIORITY}]"
        )
    if not 0 <= caller.joined_at < MAX_JOINED_AT:  # also rejects NaN
        raise ValueError(
            f"caller {caller.uniqueid!r}: join time {caller.joined_at!r} is not an epoch in seconds"
        )


SERVING_RANK_LENGTH = 29  # characters of serving_rank()'s result


def serving_rank(caller: WaitingCaller) -> str:
    """A fixed-width text key whose lexical order is the serving order (priority desc, join time asc).

    Exact (integers, microseconds), unlike a float score mixing priority and time. Both stores append
    the arrival sequence number to break ties.
    """
    return f"{MAX_PRIORITY - caller.priority:010d}:{round(caller.joined_at * 1_000_000):017d}:"


def check_name(what: str, value: str) -> None:
    if not value:
        raise ValueError(f"{what} must not be empty")


def check_ttl(ttl_s: float) -> None:
    if not (math.isfinite(ttl_s) and ttl_s >= 0.001):
        raise ValueError(f"lease ttl must be at least 1 ms, not {ttl_s!r}")


class Subscription(abc.ABC):
    """Messages published on one channel since the subscription was made, in publish order.

    Iterate with ``async for``; the iteration ends when the subscription or its store is closed.
    """

    @abc.abstractmethod
    async def get(self) -> str | None:
        """The next message, waiting for it; None once the subscription is closed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving (idempotent)."""

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        while (message := await self.get()) is not None:
            yield message

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class StoreWriter(Protocol):
    """The writes a :meth:`StateStore.batch` groups (the store's own methods; removals return nothing
    useful inside a batch)."""

    async def put_caller(self, caller: WaitingCaller) -> None: ...
    async def remove_caller(self, uniqueid: str) -> object: ...
    async def put_agent(self, agent: AgentState) -> None: ...
    async def remove_agent(self, agent: str) -> object: ...
    async def put_call(self, call: CallInProgress) -> None: ...
    async def remove_call(self, uniqueid: str) -> object: ...
    async def put_document(self, kind: str, ident: str, text: str) -> None: ...
    async def publish(self, channel: str, message: str) -> None: ...


class StateStore(abc.ABC):
    """The live state store's contract (see the module's docstring)."""

    @abc.abstractmethod
    def batch(self) -> AbstractAsyncContextManager[StoreWriter]:
        """``async with store.batch() as writes:`` the writes made through ``writes`` take effect together
        when the block ends without an error (none of them otherwise, on Redis): no reader ever sees
        half of them, and a message published in the block reaches subscribers once they all hold."""

    # --- waiting callers
    @abc.abstractmethod
    async def put_caller(self, caller: WaitingCaller) -> None:
        """Add a caller, or replace it (same uniqueid; it may change queue or priority)."""

    @abc.abstractmethod
    async def remove_caller(self, uniqueid: str) -> bool:
        """Forget a waiting caller; False when it was not there."""

    @abc.abstractmethod
    async def get_caller(self, uniqueid: str) -> WaitingCaller | None: ...

    @abc.abstractmethod
    async def waiting(self, queue: str) -> list[WaitingCaller]:
        """The callers waiting in ``queue``, in serving order."""

    # --- agents
    @abc.abstractmethod
    async def put_agent(self, agent: AgentState) -> None: ...

    @abc.abstractmethod
    async def remove_agent(self, agent: str) -> bool: ...

    @abc.abstractmethod
    async def get_agent(self, agent: str) -> AgentState | None: ...

    # --- calls in progress
    @abc.abstractmethod
    async def put_call(self, call: CallInProgress) -> None: ...

    @abc.abstractmethod
    async def remove_call(self, uniqueid: str) -> bool: ...

    @abc.abstractmethod
    async def get_call(self, uniqueid: str) -> CallInProgress | None: ...

    # --- documents: durable texts by kind and id (queued callbacks, requests waiting for the leader)
    @abc.abstractmethod
    async def put_document(self, kind: str, ident: str, text: str) -> None:
        """Store ``text`` (JSON, typically) as document ``ident`` of ``kind``, replacing any previous one."""

    @abc.abstractmethod
    async def remove_document(self, kind: str, ident: str) -> bool:
        """Forget a document; False when it was not there (another node took it first)."""

    @abc.abstractmethod
    async def documents(self, kind: str) -> dict[str, str]:
        """Every document of ``kind``, by id."""

    # --- the whole model
    @abc.abstractmethod
    async def snapshot(self) -> Snapshot:
        """Everything, read atomically (no write of another task or process half-seen)."""

    # --- live updates
    @abc.abstractmethod
    async def publish(self, channel: str, message: str) -> None: ...

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> Subscription:
        """A subscription that already receives: every message published after this returns."""

    # --- leader lease
    @abc.abstractmethod
    async def try_acquire_leader(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take lease ``name`` for ``ttl_s`` if free or expired (or refresh it if ``owner`` holds it)."""

    @abc.abstractmethod
    async def renew_leader(self, name: str, owner: str, ttl_s: float) -> bool:
        """Extend the lease to ``ttl_s`` from now; False if ``owner`` no longer holds it (lost)."""

    @abc.abstractmethod
    async def release_leader(self, name: str, owner: str) -> bool:
        """Give the lease up; False (and no effect) if ``owner`` does not hold it."""

    @abc.abstractmethod
    async def leader(self, name: str) -> str | None:
        """The current holder of lease ``name``, if any."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every resource and end every subscription (idempotent)."""

    def leadership(self, name: str, owner: str, ttl_s: float) -> Leadership:
        """``async with store.leadership(name, owner, ttl_s) as lead:`` see :class:`Leadership`."""
        return Leadership(self, name, owner, ttl_s)


class Leadership:
    """Hold a leader lease for the duration of an ``async with`` block.

    Entering waits until the lease is acquired (retrying every ``ttl_s / 3``). While inside, a task
    renews it every ``ttl_s / 3``; :attr:`lost` is set when a renewal says another owner holds it, or
    when renewals keep failing (store unreachable) until the next attempt would come after the lease
    expired. The holder must stop leader-only work (AMI, tickers) as soon as ``lost`` is set. Leaving
    stops the renewals and releases the lease (if still held).
    """

    def __init__(self, store: StateStore, name: str, owner: str, ttl_s: float) -> None:
        check_name("lease name", name)
        check_name("lease owner", owner)
        check_ttl(ttl_s)
        self.store = store
        self.name = name
        self.owner = owner
        self.ttl_s = ttl_s
        self.lost = asyncio.Event()
        self._interval = ttl_s / 3
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Leadership:
        while True:
            if await self.store.try_acquire_leader(self.name, self.owner, self.ttl_s):
                break
            await asyncio.sleep(self._interval)
        log.info("lease %s acquired by %s", self.name, self.owner)
        self._task = asyncio.create_task(self._keep(time.monotonic()), name=f"lease-{self.name}")
        return self

    async def _keep(self, acquired_at: float) -> None:
        last_ok = acquired_at
        while True:
            await asyncio.sleep(self._interval)
            try:
                held = await self.store.renew_leader(self.name, self.owner, self.ttl_s)
            except Exception as exc:  # any backend's error (Redis down...): retry while the lease lasts
                log.warning("lease %s: renewal failed: %r", self.name, exc)
                if time.monotonic() + self._interval < last_ok + self.ttl_s:
                    continue
                held = False
            if not held:
                log.warning("lease %s lost by %s", self.name, self.owner)
                self.lost.set()
                return
            last_ok = time.monotonic()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.lost.is_set():
            with contextlib.suppress(StateStoreClosed):
                await self.store.release_leader(self.name, self.owner)


_CLOSED = object()


class QueueSubscription(Subscription):
    """A subscription fed by :meth:`deliver`; ``on_close`` (awaited once) detaches it from its source."""

    def __init__(self, on_close: Callable[[QueueSubscription], Awaitable[None]]) -> None:
        self._on_close = on_close
        self._queue: asyncio.Queue[str | object] = asyncio.Queue()
        self._closed = False

    def deliver(self, message: str) -> None:
        self._queue.put_nowait(message)

    def end(self) -> None:
        """No more messages: readers get what was delivered, then the end."""
        self._queue.put_nowait(_CLOSED)

    async def get(self) -> str | None:
        message = await self._queue.get()
        if message is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # later get() calls end as well
            return None
        assert isinstance(message, str)
        return message

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._on_close(self)
            self.end()


class MemoryStateStore(StateStore):
    """The live state in this process's memory; every operation completes without yielding, so atomic.

    ``clock`` (monotonic seconds) times the leases.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._callers: dict[str, WaitingCaller] = {}
        self._order: dict[str, tuple[str, int]] = {}  # uniqueid -> (serving rank, arrival sequence)
        self._arrivals = itertools.count()
        self._agents: dict[str, AgentState] = {}
        self._calls: dict[str, CallInProgress] = {}
        self._subscribers: dict[str, list[QueueSubscription]] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # name -> (owner, expiry)
        self._documents: dict[str, dict[str, str]] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StateStoreClosed("the live state store is closed")

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[StoreWriter]:
        # Every write completes without yielding: nothing else runs until the block awaits something else.
        self._check_open()
        yield self

    async def put_caller(self, caller: WaitingCaller) -> None:
        self._check_open()
        check_caller(caller)
        old = self._order.get(caller.uniqueid)
        arrival = old[1] if old is not None else next(self._arrivals)
        self._callers[caller.uniqueid] = caller
        self._order[caller.uniqueid] = (serving_rank(caller), arrival)

    async def remove_caller(self, uniqueid: str) -> bool:
        self._check_open()
        self._order.pop(uniqueid, None)
        return self._callers.pop(uniqueid, None) is not None

    async def get_caller(self, uniqueid: str) -> WaitingCaller | None:
        self._check_open()
        return self._callers.get(uniqueid)

    def _ordered(self, queue: str) -> list[WaitingCaller]:
        return sorted(
            (c for c in self._callers.values() if c.queue == queue),
            key=lambda c: self._order[c.uniqueid],
        )

    async def waiting(self, queue: str) -> list[WaitingCaller]:
        self._check_open()
        return self._ordered(queue)

    async def put_agent(self, agent: AgentState) -> None:
        self._check_open()
        check_name("agent id", agent.agent)
        self._agents[agent.agent] = agent

    async def remove_agent(self, agent: str) -> bool:
        self._check_open()
        return self._agents.pop(agent, None) is not None

    async def get_agent(self, agent: str) -> AgentState | None:
        self._check_open()
        return self._agents.get(agent)

    async def put_call(self, call: CallInProgress) -> None:
        self._check_open()
        check_name("call uniqueid", call.uniqueid)
        self._calls[call.uniqueid] = call

    async def remove_call(self, uniqueid: str) -> bool:
        self._check_open()
        return self._calls.pop(uniqueid, None) is not None

    async def get_call(self, uniqueid: str) -> CallInProgress | None:
        self._check_open()
        return self._calls.get(uniqueid)

    async def put_document(self, kind: str, ident: str, text: str) -> None:
        self._check_open()
        check_name("document kind", kind)
        check_name("document id", ident)
        self._documents.setdefault(kind, {})[ident] = text

    async def remove_document(self, kind: str, ident: str) -> bool:
        self._check_open()
        return self._documents.get(kind, {}).pop(ident, None) is not None

    async def documents(self, kind: str) -> dict[str, str]:
        self._check_open()
        return dict(self._documents.get(kind, {}))

    async def snapshot(self) -> Snapshot:
        self._check_open()
        queues = sorted({c.queue for c in self._callers.values()})
        return Snapshot(
            callers={q: tuple(self._ordered(q)) for q in queues},
            agents=dict(self._agents),
            calls=dict(self._calls),
        )

    async def publish(self, channel: str, message: str) -> None:
        self._check_open()
        for subscription in self._subscribers.get(channel, ()):
            subscription.deliver(message)

    async def subscribe(self, channel: str) -> Subscription:
        self._check_open()
        subscribers = self._subscribers.setdefault(channel, [])

        async def detach(subscription: QueueSubscription) -> None:
            subscribers.remove(subscription)
            if not subscribers and self._subscribers.get(channel) is subscribers:
                del self._subscribers[channel]

        subscription = QueueSubscription(detach)
        subscribers.append(subscription)
        return subscription

    def _holder(self, name: str) -> str | None:
        lease = self._leases.get(name)
        if lease is None:
            return None
        if lease[1] <= self._clock():
            del self._leases[name]
            return None
        return lease[0]

    async def try_acquire_leader(self, name: str, owner: str, ttl_s: float) -> bool:
        self._check_open()
        check_ttl(ttl_s)
        if self._holder(name) not in (None, owner):
            return False
        self._leases[name] = (owner, self._clock() + ttl_s)
        return True

    async def renew_leader(self, name: str, owner: str, ttl_s: float) -> bool:
        self._check_open()
        check_ttl(ttl_s)
        if self._holder(name) != owner:
            return False
        self._leases[name] = (owner, self._clock() + ttl_s)
        return True

    async def release_leader(self, name: str, owner: str) -> bool:
        self._check_open()
        if self._holder(name) != owner:
            return False
        del self._leases[name]
        return True

    async def leader(self, name: str) -> str | None:
        self._check_open()
        return self._holder(name)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscribers in list(self._subscribers.values()):
            for subscription in list(subscribers):
                await subscription.close()
        self._leases.clear()
