"""Queued callbacks: a caller who chose to be called back keeps their place in the queue.

The contract between the AGI routes (``ivr/queue_exits.py``: the caller presses 1 while queued, the
callback leg confirms a human answered, the dialplan reports DIALSTATUS) and the engine's callback
keeper, which holds each request as a virtual caller with its original join time and priority, and
dials it agent-first when it reaches the head of its queue and an agent is free.

* :class:`CallbackKeeper`: the pure core (merge by E.164 number, order against the real callers of
  the live model, never more dials than free agents, retries within opening hours, attempts, then a
  back-office callback request) and a :class:`QueuedCallbacks` for a single process.
* :class:`CallbackDispatcher`: the AMI side, run by the leader node only (:func:`callback_duty` for
  ``Engine.add_duty``): ``Originate`` to the agent's phone into the dialplan's callback context,
  which dials the citizen once the agent answered; ``OriginateResponse`` followed by ActionID.
* :class:`SharedCallbacks`: the :class:`QueuedCallbacks` of every node (routes and API): requests and
  outcomes go through the state store's documents to the leader's keeper, which saves itself there
  after every change (what ``pending()`` lists, and what a new leader restores).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, Final, Protocol

from guichet.names import (
    EV_ORIGINATE_RESPONSE,
    GUICHET_CALLBACK_ID,
    GUICHET_CALLBACK_NUMBER,
    GUICHET_CITIZEN_ID,
    GUICHET_CONTACT_ID,
    GUICHET_QUEUE,
    GUICHET_REASON,
    H_ASYNC,
    H_CALLERID,
    H_CHANNEL,
    H_CONTEXT,
    H_EXTEN,
    H_PRIORITY,
    H_REASON,
    H_TIMEOUT,
    H_VARIABLE,
    ORIGINATE,
)
from ivr.callers import E164Number, normalise
from ivr.hours import Schedule, is_open, next_opening
from ivr.menu_engine import CallbackRequest, CallbackSink
from pbx_sim.dialplan import CALLBACK_DIAL_CONTEXT, CALLBACK_EXTEN
from routing.aging import AgingPolicy
from routing.ami import AmiMessage
from routing.ami_client import AmiResponse
from routing.errors import AmiError
from routing.live import AgentState, AgentView, WaitingCaller

log = logging.getLogger(__name__)


class CallbackOutcome(Enum):
    """How one attempt of a queued callback ended."""

    ANSWERED = "answered"  # the citizen answered and confirmed (pressed a key): served
    UNCONFIRMED = "unconfirmed"  # the line answered but nobody confirmed (voicemail...): not answered
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"  # congestion, unreachable number, trunk down
    AGENT_NO_ANSWER = "agent_no_answer"  # the agent's phone did not answer: the citizen was not dialled


@dataclass(frozen=True)
class QueuedCallbackRequest:
    """What the callback-offer route hands to the keeper once the caller confirmed their number."""

    number: str  # E.164, confirmed by the caller
    queue: str
    priority: int  # QUEUE_PRIO when the caller left the queue
    joined_at: float  # epoch seconds when the caller joined the queue: the place they keep
    caller_name: str = ""
    citizen_id: str | None = None
    contact_id: str | None = None
    reason: str | None = None
    origin_uniqueid: str = ""  # the call that asked (for the records)


@dataclass(frozen=True)
class QueuedCallback:
    """A request as the keeper holds it (read by the routing API's callback list)."""

    id: str
    request: QueuedCallbackRequest
    state: str  # "waiting", "dialing", "done" (answered), "failed" (attempts exhausted)
    attempts: int
    outcomes: tuple[CallbackOutcome, ...]  # every attempt's outcome, in order
    next_attempt_at: float | None  # epoch seconds; None while dialing or when finished
    merged: int = 0  # duplicate requests for the same number merged into this one
    agent: str | None = None  # while dialing: the agent's interface (PJSIP/<id>) rung for it
    agent_answered_at: float | None = None  # while dialing: when that agent answered (citizen dialled)


class QueuedCallbacks(Protocol):
    """The keeper as the AGI routes and the routing API see it."""

    async def keep(self, request: QueuedCallbackRequest) -> str:
        """Hold ``request`` (merged into a pending one for the same number); return the callback's id."""
        ...

    async def record_outcome(self, callback_id: str, outcome: CallbackOutcome, detail: str = "") -> None:
        """What the callback leg's routes saw; unknown ids are logged and ignored."""
        ...

    async def pending(self) -> Sequence[QueuedCallback]:
        """Every callback not finished, in serving order, then the finished ones of today."""
        ...


# --- the keeper ------------------------------------------------------------------------------------

WAITING: Final = "waiting"
DIALING: Final = "dialing"
DONE: Final = "done"
FAILED: Final = "failed"
_FINISHED: Final = frozenset({DONE, FAILED})
# Outcomes that count as an attempt on the citizen's line (AGENT_NO_ANSWER does not: nobody dialled them).
_CITIZEN_OUTCOMES: Final = frozenset(CallbackOutcome) - {CallbackOutcome.AGENT_NO_ANSWER}
# What a back-office callback request says when the queued callback never reached the citizen.
BACK_OFFICE_REASON: Final = "rappel en file d'attente sans réponse"


class LiveView(Protocol):
    """What the keeper reads of the live model (:class:`routing.live.LiveModel` has it)."""

    def callers(self, queue: str) -> Sequence[WaitingCaller]: ...

    def agents(self, now: float) -> Sequence[AgentView]: ...


@dataclass(frozen=True)
class Dial:
    """A dispatch decision: dial ``callback`` now, agent first, on ``interface`` (``PJSIP/<agent id>``)."""

    callback: QueuedCallback
    interface: str


@dataclass
class _Held:
    id: str
    request: QueuedCallbackRequest
    state: str = WAITING
    attempts: int = 0
    outcomes: list[CallbackOutcome] = field(default_factory=list)
    next_attempt_at: float | None = None
    merged: int = 0
    agent: str | None = None  # the interface rung (or talking) for this callback while dialing
    dial_started_at: float = 0.0
    agent_answered_at: float | None = None
    finished_at: float | None = None

    def view(self) -> QueuedCallback:
        return QueuedCallback(
            id=self.id,
            request=self.request,
            state=self.state,
            attempts=self.attempts,
            outcomes=tuple(self.outcomes),
            next_attempt_at=None if self.state in _FINISHED else self.next_attempt_at,
            merged=self.merged,
            agent=self.agent,
            agent_answered_at=self.agent_answered_at,
        )


def e164(number: str) -> str:
    """``number`` in E.164 (``06 12 34 56 78`` -> ``+33612345678``); ValueError when it cannot be dialled."""
    parsed = normalise(number)
    if not isinstance(parsed, E164Number):
        raise ValueError(f"callback number {number[:32]!r} is not a valid public phone number")
    return parsed.e164


def checked_request(request: QueuedCallbackRequest, now: float) -> QueuedCallbackRequest:
    """``request`` with its number in E.164; ValueError for a number that cannot be dialled, no queue
    or a join time that is not a past epoch time."""
    number = e164(request.number)
    if not request.queue:
        raise ValueError("a queued callback needs its queue")
    if not math.isfinite(request.joined_at) or request.joined_at > now:
        raise ValueError(f"callback join time {request.joined_at!r} is not a past epoch time")
    return replace(request, number=number)


def aged_priority(policy: AgingPolicy) -> Callable[[QueuedCallbackRequest, float], int]:
    """The keeper's ``priority_at`` with priority aging: a virtual caller scores as a real caller with
    the same base priority (QUEUE_PRIO) and join time would (:meth:`AgingPolicy.score`)."""

    def priority_at(request: QueuedCallbackRequest, now: float) -> int:
        caller = WaitingCaller(
            "", "", request.number, request.caller_name, request.joined_at, request.priority
        )
        return policy.score(caller, request.queue, now, base=request.priority).priority

    return priority_at


def _ahead(caller: WaitingCaller, priority: int, joined_at: float) -> bool:
    """Whether a real caller is served before a virtual one: (priority desc, join time asc)."""
    theirs = caller.priority or 0  # unknown: Asterisk's default
    return theirs > priority or (theirs == priority and caller.join_time <= joined_at)


def base_priority(request: QueuedCallbackRequest, now: float) -> int:
    """A virtual caller's priority without aging: the one it had when it left the queue."""
    return request.priority


class CallbackKeeper:
    """Holds queued callbacks as virtual callers and decides when, and on which agent, to dial them.

    The core is pure and synchronous (every method takes ``now``, epoch seconds): :meth:`hold`,
    :meth:`due`, :meth:`start_dial`, :meth:`agent_answered`, :meth:`note_outcome`, :meth:`expire`,
    :meth:`snapshot`.  The :class:`QueuedCallbacks` methods wrap them with ``clock`` for the AGI
    routes and the API.

    * A request for a number already pending (waiting or dialing) is merged into it: the earliest
      join time and the highest priority are kept, ``merged`` counts the duplicates; a waiting
      retry becomes due again at once (the citizen just called, they are reachable).
    * Attempts on the citizen (no answer, busy, failed, unconfirmed) are retried ``retry_s`` later,
      at the next opening of ``schedule`` when that falls outside opening hours, up to ``attempts``;
      then the callback is ``failed`` and handed to ``back_office`` (a callback request) by
      :meth:`file_failed`.  An agent who did not answer costs the citizen no attempt: the callback
      goes to another agent at once, and that agent gets no callback for ``agent_rest_s``.
    * ``priority_at(request, now)`` is a virtual caller's priority now: with priority aging, the
      score a real caller with the same base priority and join time would have (real callers'
      priorities rise while they wait; a callback's must too, or it would lose its place).
    * Guards, so that nothing stays stuck: a dial with no Originate outcome after ``dial_timeout_s``
      counts as the agent not answering; a dial whose agent answered but whose citizen outcome is
      never reported within ``outcome_timeout_s`` counts as a FAILED attempt.
    """

    def __init__(
        self,
        schedule: Schedule,
        *,
        retry_s: float = 600.0,
        attempts: int = 3,
        agent_rest_s: float = 30.0,
        dial_timeout_s: float = 60.0,
        outcome_timeout_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] | None = None,
        back_office: CallbackSink | None = None,
        priority_at: Callable[[QueuedCallbackRequest, float], int] = base_priority,
    ) -> None:
        if retry_s <= 0 or agent_rest_s < 0 or dial_timeout_s <= 0 or outcome_timeout_s <= 0:
            raise ValueError("callback delays must be positive")
        if attempts < 1:
            raise ValueError("a queued callback needs at least one attempt")
        self.schedule = schedule
        self._retry_s = retry_s
        self._attempts = attempts
        self._agent_rest_s = agent_rest_s
        self.dial_timeout_s = dial_timeout_s
        self._outcome_timeout_s = outcome_timeout_s
        self._clock = clock
        self._new_id = new_id or (lambda: uuid.uuid4().hex[:16])
        self._back_office = back_office
        self._priority_at = priority_at
        self._held: dict[str, _Held] = {}
        self._last_dial: dict[str, float] = {}  # interface -> when the keeper last dialled it
        self._resting: dict[str, float] = {}  # interface -> no callback before this (did not answer)
        self._to_file: list[QueuedCallback] = []
        self._aliases: dict[str, str] = {}  # id a node gave a merged request -> the callback's id
        self._saved = ""  # the last document written by save()

    # --- QueuedCallbacks ---------------------------------------------------------------------------
    async def keep(self, request: QueuedCallbackRequest) -> str:
        return self.hold(request, self._clock())

    async def record_outcome(self, callback_id: str, outcome: CallbackOutcome, detail: str = "") -> None:
        self.note_outcome(callback_id, outcome, self._clock(), detail)
        await self.file_failed()

    async def pending(self) -> Sequence[QueuedCallback]:
        return self.snapshot(self._clock())

    # --- the pure core -----------------------------------------------------------------------------
    def hold(self, request: QueuedCallbackRequest, now: float, callback_id: str | None = None) -> str:
        """Keep ``request`` (merged into a pending one for the same number); return the callback's id.

        ``callback_id``: the id a node already gave the request (:class:`SharedCallbacks`); merged, it
        stays an alias of the pending callback's id.  ValueError, holding nothing, for a number that
        cannot be dialled, no queue or a bad join time.
        """
        request = checked_request(request, now)
        for held in self._held.values():
            if held.state not in _FINISHED and held.request.number == request.number:
                self._merge(held, request, now)
                if callback_id is not None and callback_id != held.id:
                    self._aliases[callback_id] = held.id
                return held.id
        callback_id = callback_id or self._new_id()
        if callback_id in self._held:
            raise ValueError(f"callback id {callback_id!r} is already taken")
        self._held[callback_id] = _Held(callback_id, request)
        log.info(
            "queued callback %s kept for queue %s (priority %d)", callback_id, request.queue, request.priority
        )
        return callback_id

    def _merge(self, held: _Held, request: QueuedCallbackRequest, now: float) -> None:
        kept = held.request
        held.request = replace(
            kept,
            priority=max(kept.priority, request.priority),
            joined_at=min(kept.joined_at, request.joined_at),
            citizen_id=kept.citizen_id or request.citizen_id,
            contact_id=kept.contact_id or request.contact_id,
            caller_name=kept.caller_name or request.caller_name,
        )
        held.merged += 1
        if held.state == WAITING and held.next_attempt_at is not None and held.next_attempt_at > now:
            held.next_attempt_at = None
        log.info("queued callback %s: a duplicate request merged (%d so far)", held.id, held.merged)

    def is_open(self, now: float) -> bool:
        return is_open(self.schedule, datetime.fromtimestamp(now, UTC))

    def due(self, now: float, live: LiveView) -> list[Dial]:
        """The callbacks to dial now, each with its agent; nothing while ``schedule`` is closed.

        A waiting callback (its retry time reached) competes with the real callers of its queue by
        (priority desc, join time asc), as app_queue orders them: it is due when none is ahead of it.
        Each goes to a distinct AVAILABLE member of its queue that is neither dialling a callback
        nor resting, the least recently dialled by the keeper first: never more callbacks at once
        than free agents.
        """
        if not self.is_open(now):
            return []
        busy = {held.agent for held in self._held.values() if held.state == DIALING}
        free = [
            agent
            for agent in live.agents(now)
            if agent.state is AgentState.AVAILABLE
            and agent.interface not in busy
            and self._resting.get(agent.interface, now) <= now
        ]
        free.sort(key=lambda agent: self._last_dial.get(agent.interface, -math.inf))  # stable
        waiting = sorted(
            (h for h in self._held.values() if h.state == WAITING and (h.next_attempt_at or now) <= now),
            key=lambda h: self._serving_key(h, now),
        )
        dials: list[Dial] = []
        for held in waiting:
            queue = held.request.queue
            priority = self._priority_at(held.request, now)
            if any(_ahead(caller, priority, held.request.joined_at) for caller in live.callers(queue)):
                continue
            agent = next((a for a in free if queue in a.queues), None)
            if agent is None:
                continue
            free.remove(agent)
            dials.append(Dial(held.view(), agent.interface))
        return dials

    def _serving_key(self, held: _Held, now: float) -> tuple[int, float]:
        return (-self._priority_at(held.request, now), held.request.joined_at)

    def start_dial(self, callback_id: str, interface: str, now: float) -> None:
        """The dispatcher originates ``callback_id`` on ``interface`` (from :meth:`due`)."""
        held = self._held[callback_id]
        if held.state != WAITING:
            raise ValueError(f"callback {callback_id} is {held.state}, not waiting")
        held.state = DIALING
        held.agent = interface
        held.dial_started_at = now
        held.agent_answered_at = None
        held.next_attempt_at = None
        self._last_dial[interface] = now

    def cancel_dial(self, callback_id: str, now: float) -> None:
        """The Originate could not be sent: back to waiting, no outcome, the agent rests."""
        held = self._held.get(callback_id)
        if held is None or held.state != DIALING:
            return
        self._release(held, now, rest=True)
        held.state = WAITING

    def agent_answered(self, callback_id: str, now: float) -> None:
        """The agent picked up: the dialplan now dials the citizen; the routes report how it ended."""
        held = self._held.get(callback_id)
        if held is not None and held.state == DIALING:
            held.agent_answered_at = now

    def note_outcome(self, callback_id: str, outcome: CallbackOutcome, now: float, detail: str = "") -> None:
        """One attempt's outcome; unknown ids and outcomes for finished callbacks are logged and ignored."""
        held = self._held.get(self._aliases.get(callback_id, callback_id))
        if held is None:
            log.warning("outcome %s for unknown queued callback %.40r: ignored", outcome.value, callback_id)
            return
        if outcome is CallbackOutcome.AGENT_NO_ANSWER and held.state != DIALING:
            log.info("queued callback %s no longer dialing: agent outcome ignored", callback_id)
            return
        if held.state in _FINISHED:
            log.warning(
                "outcome %s for queued callback %s already %s: ignored",
                outcome.value,
                callback_id,
                held.state,
            )
            return
        log.info("queued callback %s: %s%s", callback_id, outcome.value, f" ({detail})" if detail else "")
        held.outcomes.append(outcome)
        self._release(held, now, rest=outcome is CallbackOutcome.AGENT_NO_ANSWER)
        if outcome in _CITIZEN_OUTCOMES:
            held.attempts += 1
        if outcome is CallbackOutcome.ANSWERED:
            self._finish(held, DONE, now)
        elif held.attempts >= self._attempts:
            self._finish(held, FAILED, now)
            self._to_file.append(held.view())
        else:
            held.state = WAITING
            if outcome in _CITIZEN_OUTCOMES:
                held.next_attempt_at = self._retry_at(now + self._retry_s)

    def _release(self, held: _Held, now: float, *, rest: bool) -> None:
        if rest and held.agent is not None:
            self._resting[held.agent] = now + self._agent_rest_s
        held.agent = None
        held.agent_answered_at = None

    def _finish(self, held: _Held, state: str, now: float) -> None:
        held.state = state
        held.next_attempt_at = None
        held.finished_at = now

    def _retry_at(self, at: float) -> float:
        """``at`` if the schedule is open then, else its next opening."""
        opening = next_opening(self.schedule, datetime.fromtimestamp(at, UTC))
        return opening.timestamp() if opening is not None else at

    def expire(self, now: float) -> None:
        """Settle dials whose outcome never came (see the class guards); forget callbacks finished
        before today (local day of ``schedule``)."""
        for held in list(self._held.values()):
            if held.state != DIALING:
                continue
            if held.agent_answered_at is None and now - held.dial_started_at >= self.dial_timeout_s:
                self.note_outcome(held.id, CallbackOutcome.AGENT_NO_ANSWER, now, "no Originate outcome")
            elif (
                held.agent_answered_at is not None and now - held.agent_answered_at >= self._outcome_timeout_s
            ):
                self.note_outcome(held.id, CallbackOutcome.FAILED, now, "no citizen outcome reported")
        today = self._day(now)
        for held in list(self._held.values()):
            if held.finished_at is not None and self._day(held.finished_at) < today:
                del self._held[held.id]
        self._resting = {agent: until for agent, until in self._resting.items() if until > now}
        self._aliases = {alias: kept for alias, kept in self._aliases.items() if kept in self._held}

    def _day(self, at: float) -> date:
        return datetime.fromtimestamp(at, self.schedule.tz).date()

    def snapshot(self, now: float) -> list[QueuedCallback]:
        """Dialling callbacks, then waiting ones in serving order, then those finished today."""
        today = self._day(now)
        active = sorted(
            (h for h in self._held.values() if h.state not in _FINISHED),
            key=lambda h: (h.state != DIALING, *self._serving_key(h, now)),
        )
        finished = sorted(
            (
                h
                for h in self._held.values()
                if h.finished_at is not None and self._day(h.finished_at) == today
            ),
            key=lambda h: h.finished_at or 0.0,
        )
        return [held.view() for held in (*active, *finished)]

    def get(self, callback_id: str) -> QueuedCallback | None:
        held = self._held.get(self._aliases.get(callback_id, callback_id))
        return held.view() if held is not None else None

    async def file_failed(self) -> None:
        """Hand every callback that exhausted its attempts to ``back_office`` as a callback request.

        A sink that raises keeps the callback for the next call (logged): nothing is lost.  Without a
        back office, a failed callback is only logged and shown by :meth:`snapshot` (state "failed").
        """
        while self._to_file:
            callback = self._to_file[0]
            if self._back_office is None:
                log.warning("queued callback %s failed; no back office to file it to", callback.id)
            else:
                try:
                    await self._back_office.record(self._back_office_request(callback))
                except Exception:
                    log.exception("filing failed queued callback %s: will retry", callback.id)
                    return
            self._to_file.pop(0)

    def _back_office_request(self, callback: QueuedCallback) -> CallbackRequest:
        request = callback.request
        return CallbackRequest(
            number=request.number,
            service=request.queue,
            reason=request.reason or BACK_OFFICE_REASON,
            requested_at=datetime.fromtimestamp(request.joined_at, self.schedule.tz),
            caller_name=request.caller_name,
            citizen_id=request.citizen_id,
        )

    # --- shared between engine nodes (the leader's keeper) -----------------------------------------
    async def take_inbox(self, store: DocumentStore) -> int:
        """Apply the requests and outcomes nodes left in the store (oldest first); how many were taken.

        Each is removed before it is applied (a document another node removed first is skipped); one
        that cannot be read or applied is logged and dropped.
        """
        entries: list[tuple[float, str, dict[str, Any]]] = []
        for ident, text in (await store.documents(INBOX_KIND)).items():
            try:
                entry = json.loads(text)
                entries.append((float(entry["at"]), ident, entry))
            except (ValueError, TypeError, KeyError) as exc:
                log.error("unreadable queued-callback inbox entry %.40r dropped: %s", ident, exc)
                await store.remove_document(INBOX_KIND, ident)
        taken = 0
        for at, ident, entry in sorted(entries, key=lambda item: item[:2]):
            if not await store.remove_document(INBOX_KIND, ident):
                continue
            taken += 1
            try:
                if entry.get("op") == "keep":
                    self.hold(_request_from(entry["request"]), at, str(entry["id"]))
                else:
                    outcome = CallbackOutcome(entry["outcome"])
                    self.note_outcome(str(entry["id"]), outcome, at, str(entry.get("detail", "")))
            except (ValueError, TypeError, KeyError) as exc:
                log.error("queued-callback inbox entry %.40r dropped: %s", ident, exc)
        return taken

    async def save(self, store: DocumentStore, now: float) -> None:
        """Write the callbacks (in :meth:`snapshot` order) for the other nodes and a next leader."""
        listed = [self._held[c.id] for c in self.snapshot(now)]  # what pending() lists, in order
        shown = {h.id for h in listed}
        listed += [h for h in self._held.values() if h.id not in shown]  # finished before today
        text = json.dumps(
            {
                "callbacks": [_held_data(h) for h in listed],
                "aliases": self._aliases,
                "to_file": [c.id for c in self._to_file],
            },
            ensure_ascii=False,
            sort_keys=True,
        )
        if text != self._saved:
            await store.put_document(CALLBACKS_KIND, CALLBACKS_DOCUMENT, text)
            self._saved = text

    async def restore(self, store: DocumentStore) -> int:
        """Replace the callbacks with the ones last saved (a new leader); how many were read.

        An unreadable document is set aside (``unreadable-<epoch>`` of the same kind) and the keeper
        starts empty: a human can read it, the callbacks of later requests are dialled meanwhile.
        """
        text = (await store.documents(CALLBACKS_KIND)).get(CALLBACKS_DOCUMENT)
        if text is None:
            return 0
        try:
            held, aliases, to_file = _keeper_data(text)
        except ValueError as exc:
            aside = f"unreadable-{self._clock():.0f}"
            log.error("saved queued callbacks unreadable (%s): kept as %s, starting empty", exc, aside)
            await store.put_document(CALLBACKS_KIND, aside, text)
            held, aliases, to_file = [], {}, []
        self._held = {h.id: h for h in held}
        self._aliases = aliases
        self._to_file = [self._held[i].view() for i in to_file if i in self._held]
        self._saved = text
        return len(held)


# --- every node: requests and outcomes go to the leader's keeper through the store -------------------

INBOX_KIND: Final = "queued-callback-inbox"  # requests and outcomes any node hands to the leader
CALLBACKS_KIND: Final = "queued-callbacks"  # the leader's keeper, as saved after every change
CALLBACKS_DOCUMENT: Final = "keeper"


class DocumentStore(Protocol):
    """Durable documents shared by the engine nodes (:class:`routing.state.StateStore` has them)."""

    async def put_document(self, kind: str, ident: str, text: str) -> None: ...

    async def remove_document(self, kind: str, ident: str) -> bool: ...

    async def documents(self, kind: str) -> dict[str, str]: ...


class SharedCallbacks:
    """:class:`QueuedCallbacks` on any engine node: what the AGI routes and the API use.

    ``keep`` checks the request and leaves it in the store's inbox with a new id; ``record_outcome``
    leaves the outcome there; the leader's keeper takes them at its next tick (:meth:`CallbackKeeper.
    take_inbox`).  ``pending`` reads what the leader saved, plus the requests not taken yet.
    """

    def __init__(
        self,
        store: DocumentStore,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_id = new_id or (lambda: uuid.uuid4().hex[:16])

    async def keep(self, request: QueuedCallbackRequest) -> str:
        now = self._clock()
        request = checked_request(request, now)
        callback_id = self._new_id()
        entry = {"op": "keep", "id": callback_id, "at": now, "request": asdict(request)}
        await self._store.put_document(INBOX_KIND, f"keep-{callback_id}", json.dumps(entry))
        return callback_id

    async def record_outcome(self, callback_id: str, outcome: CallbackOutcome, detail: str = "") -> None:
        entry = {"op": "outcome", "id": callback_id, "at": self._clock(), "outcome": outcome.value}
        if detail:
            entry["detail"] = detail
        await self._store.put_document(INBOX_KIND, f"outcome-{uuid.uuid4().hex}", json.dumps(entry))

    async def pending(self) -> Sequence[QueuedCallback]:
        saved = (await self._store.documents(CALLBACKS_KIND)).get(CALLBACKS_DOCUMENT)
        listed = [h.view() for h in _keeper_data(saved)[0]] if saved is not None else []
        known = {c.id for c in listed}
        for ident, text in (await self._store.documents(INBOX_KIND)).items():
            try:
                entry = json.loads(text)
                if entry.get("op") == "keep" and entry["id"] not in known:
                    request = _request_from(entry["request"])
                    listed.append(QueuedCallback(str(entry["id"]), request, WAITING, 0, (), None))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning("unreadable queued-callback inbox entry %.40r not listed: %s", ident, exc)
        return listed


def _held_data(held: _Held) -> dict[str, Any]:
    data = asdict(held)
    data["outcomes"] = [outcome.value for outcome in held.outcomes]
    return data


def _request_from(data: Any) -> QueuedCallbackRequest:
    if not isinstance(data, dict):
        raise ValueError("a queued callback request must be an object")
    return QueuedCallbackRequest(**data)


def _keeper_data(text: str) -> tuple[list[_Held], dict[str, str], list[str]]:
    """The callbacks, aliases and ids to file of a saved keeper; ValueError when unreadable."""
    try:
        data = json.loads(text)
        held = []
        for item in data["callbacks"]:
            fields = dict(item)
            fields["request"] = _request_from(fields["request"])
            fields["outcomes"] = [CallbackOutcome(value) for value in fields["outcomes"]]
            entry = _Held(**fields)
            if entry.state not in (WAITING, DIALING, DONE, FAILED):
                raise ValueError(f"unknown state {entry.state!r}")
            held.append(entry)
        return held, dict(data["aliases"]), [str(i) for i in data["to_file"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"unreadable saved queued callbacks: {exc!r}") from exc


# --- the driver ------------------------------------------------------------------------------------

ORIGINATE_ANSWERED: Final = "4"  # OriginateResponse Reason: the originated channel answered
CALLBACK_CALLER_NAME: Final = "Rappel"  # what the agent's phone shows before the citizen's name
_MAX_CALLER_NAME: Final = 40
_MAX_UNCLAIMED: Final = 64
_UNSAFE: Final = re.compile(r'[\x00-\x1f\x7f"<>\\,;|]')


class ActionSender(Protocol):
    """What the dispatcher needs of the AMI client (:class:`routing.ami_client.AmiClient` has it)."""

    async def send_action(self, action: str, headers: Sequence[tuple[str, str]]) -> AmiResponse: ...


def _safe(value: str, limit: int = 80) -> str:
    """A value safe in a CallerID or a ``Variable:`` header (no quotes, separators, control chars)."""
    return " ".join(_UNSAFE.sub(" ", value).split())[:limit]


def originate_headers(
    callback: QueuedCallback, interface: str, context: str, ring_s: float
) -> list[tuple[str, str]]:
    """The Originate of ``callback``: the agent's phone first, then ``context`` (``s``) dials the citizen."""
    request = callback.request
    name = _safe(f"{CALLBACK_CALLER_NAME} {request.caller_name}", _MAX_CALLER_NAME).strip()
    variables = {
        GUICHET_CALLBACK_ID: callback.id,
        GUICHET_CALLBACK_NUMBER: request.number,
        GUICHET_QUEUE: request.queue,
        GUICHET_CITIZEN_ID: request.citizen_id or "",
        GUICHET_CONTACT_ID: request.contact_id or "",
        GUICHET_REASON: request.reason or "",
    }
    return [
        (H_CHANNEL, interface),
        (H_CONTEXT, context),
        (H_EXTEN, CALLBACK_EXTEN),
        (H_PRIORITY, "1"),
        (H_TIMEOUT, str(round(ring_s * 1000))),
        (H_CALLERID, f'"{name}" <{request.number}>'),
        (H_ASYNC, "true"),
        *((H_VARIABLE, f"{key}={_safe(value)}") for key, value in variables.items() if value),
    ]


class CallbackDispatcher:
    """Dials due callbacks over AMI (agent first) and follows each Originate to its outcome.

    ``tick`` settles stuck dials, asks the keeper which callbacks are due and originates each one
    on its agent's phone (``Channel: PJSIP/<agent>``, ``Timeout``: ``agent_ring_s``); the dialplan
    of ``context`` dials the citizen once the agent answered.  Subscribe :meth:`on_originate_response`
    to ``OriginateResponse``: Reason 4 means the agent answered (the routes then report the citizen's
    outcome through :meth:`CallbackKeeper.record_outcome`), anything else that the agent did not.
    Only the leader node runs it.  With ``store``, each tick first takes the requests and outcomes
    the nodes left there and ends by saving the keeper for them (:class:`SharedCallbacks`).
    """

    def __init__(
        self,
        keeper: CallbackKeeper,
        ami: ActionSender,
        live: LiveView,
        *,
        clock: Callable[[], float] = time.time,
        context: str = CALLBACK_DIAL_CONTEXT,
        agent_ring_s: float = 20.0,
        store: DocumentStore | None = None,
    ) -> None:
        if not 0 < agent_ring_s < keeper.dial_timeout_s:
            raise ValueError(
                f"agent_ring_s {agent_ring_s:g} must be positive and below dial_timeout_s "
                f"{keeper.dial_timeout_s:g}"
            )
        self._keeper = keeper
        self._ami = ami
        self._live = live
        self._clock = clock
        self._context = context
        self._ring_s = agent_ring_s
        self._store = store
        self._by_action: dict[str, str] = {}  # Originate ActionID -> callback id
        # OriginateResponses read before send_action returned their ActionID (same read buffer)
        self._unclaimed: OrderedDict[str, AmiMessage] = OrderedDict()

    async def tick(self) -> list[Dial]:
        """One round: settle, dial what is due; returns the dials whose Originate was accepted."""
        keeper = self._keeper
        if self._store is not None and await keeper.take_inbox(self._store):
            await keeper.save(self._store, self._clock())  # taken from the inbox: saved at once
        keeper.expire(self._clock())
        dials = keeper.due(self._clock(), self._live)
        for dial in dials:  # all at once: outcomes and requests may arrive while an Originate is sent
            keeper.start_dial(dial.callback.id, dial.interface, self._clock())
        sent: list[Dial] = []
        for dial in dials:
            headers = originate_headers(dial.callback, dial.interface, self._context, self._ring_s)
            try:
                reply = await self._ami.send_action(ORIGINATE, headers)
            except AmiError as exc:
                log.warning(
                    "Originate of callback %s on %s failed: %s", dial.callback.id, dial.interface, exc
                )
                keeper.cancel_dial(dial.callback.id, self._clock())
                continue
            sent.append(dial)
            action_id = reply.response.action_id
            if action_id is None:
                continue  # followed by the dial timeout only
            early = self._unclaimed.pop(action_id, None)
            if early is None:
                self._by_action[action_id] = dial.callback.id
            else:
                self._settle(dial.callback.id, early)
        await keeper.file_failed()
        if self._store is not None:
            await keeper.save(self._store, self._clock())
        return sent

    def on_originate_response(self, event: AmiMessage) -> None:
        """AMI subscriber of ``OriginateResponse`` (a plain function, as AmiClient wants)."""
        action_id = event.action_id
        if action_id is None:
            return
        callback_id = self._by_action.pop(action_id, None)
        if callback_id is not None:
            self._settle(callback_id, event)
            return
        self._unclaimed[action_id] = event
        while len(self._unclaimed) > _MAX_UNCLAIMED:
            self._unclaimed.popitem(last=False)

    def _settle(self, callback_id: str, event: AmiMessage) -> None:
        reason = event.get(H_REASON) or ""
        if reason == ORIGINATE_ANSWERED:
            self._keeper.agent_answered(callback_id, self._clock())
        else:
            self._keeper.note_outcome(
                callback_id, CallbackOutcome.AGENT_NO_ANSWER, self._clock(), f"Originate Reason {reason}"
            )

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Tick every ``interval_s`` until ``stop`` is set; a failing tick is logged, the next one runs."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("queued callback dispatch failed; retrying in %g s", interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


class AmiLink(ActionSender, Protocol):
    """An AMI client that also delivers events (:class:`routing.ami_client.AmiClient`)."""

    def subscribe(self, event_name: str, callback: Callable[[AmiMessage], None]) -> Callable[[], None]: ...


def callback_duty(
    keeper: CallbackKeeper,
    live: LiveView,
    *,
    store: DocumentStore | None = None,
    interval_s: float = 1.0,
    clock: Callable[[], float] = time.time,
    context: str = CALLBACK_DIAL_CONTEXT,
    agent_ring_s: float = 20.0,
) -> Callable[[AmiLink, asyncio.Event], Awaitable[None]]:
    """The dispatcher as an engine duty (``Engine.add_duty``): on the leader's AMI client, following
    its OriginateResponses, ticking every ``interval_s`` until ``stop`` is set.

    With ``store``, the keeper first restores what the previous leader saved (retried every
    ``interval_s`` while the store fails: saving a stale keeper would lose callbacks), then each tick
    takes the nodes' inbox and saves the keeper (:class:`SharedCallbacks` on every node).
    """

    async def duty(ami: AmiLink, stop: asyncio.Event) -> None:
        while store is not None and not stop.is_set():
            try:
                log.info("queued callbacks restored: %d", await keeper.restore(store))
                break
            except Exception:
                log.exception("restoring queued callbacks failed; retrying in %g s", interval_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
        dispatcher = CallbackDispatcher(
            keeper, ami, live, clock=clock, context=context, agent_ring_s=agent_ring_s, store=store
        )
        unsubscribe = ami.subscribe(EV_ORIGINATE_RESPONSE, dispatcher.on_originate_response)
        try:
            await dispatcher.run(interval_s, stop)
        finally:
            unsubscribe()

    return duty
