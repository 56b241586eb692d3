"""The live model of queues, waiting callers, agents and calls in progress, built from AMI.

Pure: no I/O and no clock of its own.  :meth:`LiveModel.apply` takes one AMI event and the time it
was received and returns what changed; :meth:`LiveModel.rebuild` replaces the state from a
``QueueStatus`` + ``CoreShowChannels`` snapshot (after a reconnect, or when the engine starts while
calls are already up).  What each event carries is taken from the recordings of a real Asterisk 22
(``asterisk-captures/``):

* ``QueueCallerJoin`` has Position and Count, no priority: the caller is inserted at Position (a
  higher-priority caller goes ahead, the others are renumbered without an event).  The priority is
  the ``QUEUE_PRIO`` seen by VarSet on the channel before the join (0, Asterisk's default, when none
  was seen), or the ``Priority`` of a ``QueueStatus`` ``QueueEntry``.
* ``QueueChangePriorityCaller`` emits **no event**: the engine, which sends it, reports a successful
  change with :meth:`LiveModel.note_priority_change` (moving the caller only with ``Immediate``, as
  Asterisk does); the next rebuild from ``QueueStatus`` corrects anything else.
* An answered call: Join, AgentCalled, ..., **QueueCallerLeave then AgentConnect**, ...,
  AgentComplete.  A hang-up while queued: QueueCallerAbandon, Leave, then Hangup.  A queue timeout:
  QueueCallerAbandon, Leave, then ``VarSet QUEUESTATUS=TIMEOUT``: counted as *overflowed*, not
  abandoned (DESIGN.md's KPI dictionary).  A key exit: Leave only (counted as *exited* once the
  channel hangs up or joins another queue without being answered).
* Agents are queue members: ``QueueMemberAdded/Status/Pause/Penalty`` and the ``QueueMember`` list
  item carry the same fields (Status = device state, Paused, PausedReason, InCall, LastCall,
  Wrapuptime); the state shown is derived from them and from the Agent* events.

After a rebuild, a caller still waiting keeps its join time and IVR variables, callers that joined
during the gap are added (and counted offered), callers that left during the gap are counted as
``unresolved`` unless found talking to an agent (then answered): no call is stale, lost or counted
twice.  Calls in progress are kept while their caller channel is still up and the agent still in a
call; new ones are paired through ``CoreShowChannel`` ``BridgeId`` (caller channel + a channel of a
member's interface in the same bridge).  IVR variables of a channel first seen in a snapshot are
unknown (AMI's lists do not carry them): :meth:`LiveModel.channels_without_variables` names them so
that the engine fetches them with ``Getvar`` and hands them over with :meth:`LiveModel.note_variables`.
A caller whose outcome was pending at the rebuild (left, not yet hung up) keeps it while its channel
is up; otherwise it is counted ``unresolved``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Final, Literal

from guichet.names import (
    EV_AGENT_CALLED,
    EV_AGENT_COMPLETE,
    EV_AGENT_CONNECT,
    EV_AGENT_RING_NO_ANSWER,
    EV_HANGUP,
    EV_QUEUE_CALLER_ABANDON,
    EV_QUEUE_CALLER_JOIN,
    EV_QUEUE_CALLER_LEAVE,
    EV_QUEUE_MEMBER_ADDED,
    EV_QUEUE_MEMBER_PAUSE,
    EV_QUEUE_MEMBER_PENALTY,
    EV_QUEUE_MEMBER_REMOVED,
    EV_QUEUE_MEMBER_STATUS,
    EV_VARSET,
    GUICHET_CITIZEN_ID,
    GUICHET_CONTACT_ID,
    GUICHET_QUEUE,
    GUICHET_REASON,
    GUICHET_URGENCY,
    H_BRIDGE_ID,
    H_CALLER_ID_NAME,
    H_CALLER_ID_NUM,
    H_CHANNEL,
    H_DEST_CHANNEL,
    H_DURATION,
    H_INTERFACE,
    H_MEMBER_NAME,
    H_PAUSED,
    H_POSITION,
    H_PRIORITY,
    H_QUEUE,
    H_UNIQUEID,
    H_VALUE,
    H_VARIABLE,
    QUEUE_PRIO,
    QUEUESTATUS,
)
from routing.ami import AmiMessage, unescape_c

__all__ = [
    "AgentState",
    "AgentView",
    "CallView",
    "Change",
    "ChangeKind",
    "LiveModel",
    "LiveSnapshot",
    "QueueCounters",
    "QueueView",
    "WaitingCaller",
]

log = logging.getLogger(__name__)

ChangeKind = Literal[
    "caller_joined",
    "caller_left",
    "caller_updated",
    "queue_reordered",
    "agent_updated",
    "agent_removed",
    "call_started",
    "call_ended",
    "counters",
    "rebuilt",
]

# Device states (ast_device_state) as QueueMember* events give them in Status.
_INVALID: Final = 4
_UNAVAILABLE: Final = 5
_RINGING: Final = frozenset({6, 7})
_IN_USE: Final = frozenset({2, 3, 8})
_UNKNOWN_VALUES: Final = frozenset({"", "<unknown>", "unknown"})
# IVR variables copied onto the waiting caller (service, urgency, citizen, contact, reason).
_IVR_VARIABLES: Final = (
    GUICHET_QUEUE,
    GUICHET_URGENCY,
    GUICHET_CITIZEN_ID,
    GUICHET_CONTACT_ID,
    GUICHET_REASON,
)
_KEPT_VARIABLES: Final = frozenset({*_IVR_VARIABLES, QUEUE_PRIO})


class AgentState(Enum):
    """What the desk and the wallboard show for an agent (a logged-in queue member)."""

    AVAILABLE = "available"
    RINGING = "ringing"
    TALKING = "talking"
    WRAPUP = "wrapup"
    PAUSED = "paused"
    UNAVAILABLE = "unavailable"  # logged in (member) but the device is not registered


@dataclass(frozen=True)
class Change:
    """One thing that changed: ``key`` is a channel (callers, calls) or an interface (agents)."""

    kind: ChangeKind
    key: str = ""
    queue: str = ""


@dataclass(frozen=True)
class WaitingCaller:
    channel: str
    uniqueid: str
    caller_num: str
    caller_name: str
    join_time: float
    priority: int | None = None  # None: unknown (Asterisk's default is 0)
    service: str | None = None
    urgency: str | None = None
    citizen_id: str | None = None
    contact_id: str | None = None
    reason: str | None = None


@dataclass
class QueueCounters:
    """Events seen per queue (KPIs come later): each offered call ends in one outcome at most."""

    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    overflowed: int = 0  # queue timeout (QueueCallerAbandon + QUEUESTATUS=TIMEOUT)
    exited: int = 0  # left with a digit (callback offer...)
    unresolved: int = 0  # left while AMI was down, outcome unknown


@dataclass(frozen=True)
class CallView:
    caller_channel: str
    caller_uniqueid: str
    agent_channel: str
    interface: str
    queue: str
    since: float
    # Who the agent talks to (the card the desk pops): the caller's ids and the IVR's variables.
    caller_num: str = ""
    caller_name: str = ""
    citizen_id: str | None = None
    contact_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AgentView:
    interface: str
    name: str
    queues: tuple[str, ...]
    state: AgentState
    paused_reason: str = ""


@dataclass(frozen=True)
class QueueView:
    name: str
    callers: tuple[WaitingCaller, ...]


@dataclass(frozen=True)
class LiveSnapshot:
    queues: tuple[QueueView, ...]
    agents: tuple[AgentView, ...]
    calls: tuple[CallView, ...]


@dataclass
class _Membership:
    name: str
    status: int
    paused: bool
    paused_reason: str
    in_call: bool
    last_call: int
    wrapuptime: int


@dataclass
class _Agent:
    interface: str
    memberships: dict[str, _Membership] = field(default_factory=dict)
    ringing_for: str | None = None  # caller channel (AgentCalled until answer / no answer / leave)


@dataclass
class _Queue:
    name: str
    callers: list[WaitingCaller] = field(default_factory=list)
    counters: QueueCounters = field(default_factory=QueueCounters)

    def index_of(self, channel: str) -> int:
        for index, caller in enumerate(self.callers):
            if caller.channel == channel:
                return index
        return -1


@dataclass
class _Left:
    """A caller that left a queue and whose outcome is not known yet."""

    queue: str
    abandoned: bool = False


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _text(value: str | None) -> str:
    return "" if value is None or value in _UNKNOWN_VALUES else unescape_c(value)


def _required(event: AmiMessage, name: str) -> str:
    value = event.get(name)
    if not value:
        raise ValueError(f"AMI {event.name} without {name}: {event.headers!r}")
    return value


def _belongs_to(channel: str, interface: str) -> bool:
    """``PJSIP/agent1-00000005`` and ``Local/a@agents-00000002;1`` are channels of those interfaces."""
    return channel.startswith(interface + "-")


class LiveModel:
    """Queues, waiting callers, agents and calls in progress, from AMI events and snapshots.

    ``queue_wrapup`` gives the queues' own ``wrapuptime`` (a member's Wrapuptime of 0 means the
    queue's); unknown queues have none.
    """

    def __init__(self, queue_wrapup: Mapping[str, int] | None = None) -> None:
        self._queue_wrapup = dict(queue_wrapup or {})
        self._queues: dict[str, _Queue] = {}
        self._agents: dict[str, _Agent] = {}
        self._calls: dict[str, CallView] = {}  # by caller channel
        self._variables: dict[str, dict[str, str]] = {}  # channel -> kept variables
        self._left: dict[str, _Left] = {}  # caller channel -> pending outcome
        self._unknown_variables: set[str] = set()
        self._handlers = {
            EV_VARSET: self._on_varset,
            EV_QUEUE_CALLER_JOIN: self._on_join,
            EV_QUEUE_CALLER_ABANDON: self._on_abandon,
            EV_QUEUE_CALLER_LEAVE: self._on_leave,
            EV_AGENT_CALLED: self._on_agent_called,
            EV_AGENT_RING_NO_ANSWER: self._on_ring_no_answer,
            EV_AGENT_CONNECT: self._on_agent_connect,
            EV_AGENT_COMPLETE: self._on_agent_complete,
            EV_HANGUP: self._on_hangup,
            EV_QUEUE_MEMBER_ADDED: self._on_member,
            EV_QUEUE_MEMBER_STATUS: self._on_member,
            EV_QUEUE_MEMBER_PAUSE: self._on_member,
            EV_QUEUE_MEMBER_PENALTY: self._on_member,
            EV_QUEUE_MEMBER_REMOVED: self._on_member_removed,
        }

    # --- reading ---------------------------------------------------------------------------
    @property
    def followed_events(self) -> frozenset[str]:
        """The AMI events :meth:`apply` acts on (any other is ignored)."""
        return frozenset(self._handlers)

    def queue_names(self) -> list[str]:
        return list(self._queues)

    def callers(self, queue: str) -> tuple[WaitingCaller, ...]:
        """Waiting callers of ``queue`` in serving order (empty for an unknown queue)."""
        found = self._queues.get(queue)
        return tuple(found.callers) if found is not None else ()

    def counters(self, queue: str) -> QueueCounters:
        found = self._queues.get(queue)
        return replace(found.counters) if found is not None else QueueCounters()

    def calls(self) -> tuple[CallView, ...]:
        return tuple(self._calls.values())

    def agent(self, interface: str, now: float) -> AgentView | None:
        agent = self._agents.get(interface)
        return self._view(agent, now) if agent is not None else None

    def agents(self, now: float) -> tuple[AgentView, ...]:
        return tuple(self._view(agent, now) for agent in self._agents.values())

    def snapshot(self, now: float) -> LiveSnapshot:
        return LiveSnapshot(
            queues=tuple(QueueView(q.name, tuple(q.callers)) for q in self._queues.values()),
            agents=self.agents(now),
            calls=self.calls(),
        )

    def queue_prio(self, channel: str) -> int | None:
        """The ``QUEUE_PRIO`` seen on ``channel``: its priority before any QueueChangePriorityCaller
        (which leaves the variable as it is); an empty value counts as 0 (Asterisk's default), None
        when the variable was never seen (e.g. a caller first seen in a snapshot)."""
        value = self._variables.get(channel, {}).get(QUEUE_PRIO)
        return None if value is None else _int(value)

    def channels_without_variables(self) -> list[str]:
        """Waiting callers first seen in a snapshot: their IVR variables are unknown (use Getvar)."""
        return sorted(self._unknown_variables)

    def _view(self, agent: _Agent, now: float) -> AgentView:
        members = agent.memberships
        first = next(iter(members.values()))
        paused = [m for m in members.values() if m.paused]
        in_call = any(c.interface == agent.interface for c in self._calls.values())
        statuses = {m.status for m in members.values()}
        if in_call or any(m.in_call for m in members.values()) or statuses & _IN_USE:
            state = AgentState.TALKING
        elif agent.ringing_for is not None or statuses & _RINGING:
            state = AgentState.RINGING
        elif statuses <= {_INVALID, _UNAVAILABLE}:
            state = AgentState.UNAVAILABLE
        elif len(paused) == len(members):
            state = AgentState.PAUSED
        elif any(self._in_wrapup(queue, m, now) for queue, m in members.items()):
            state = AgentState.WRAPUP
        else:
            state = AgentState.AVAILABLE
        return AgentView(
            interface=agent.interface,
            name=first.name,
            queues=tuple(members),
            state=state,
            paused_reason=paused[0].paused_reason if state is AgentState.PAUSED else "",
        )

    def _in_wrapup(self, queue: str, member: _Membership, now: float) -> bool:
        wrapup = member.wrapuptime or self._queue_wrapup.get(queue, 0)
        return wrapup > 0 and member.last_call > 0 and now < member.last_call + wrapup

    # --- events ----------------------------------------------------------------------------
    def apply(self, event: AmiMessage, now: float) -> list[Change]:
        """Apply one AMI event received at ``now``; events the model does not follow are ignored.

        Raises ValueError (naming the event) when a followed event lacks a field it needs.
        """
        handler = self._handlers.get(event.name)
        if handler is None or event.kind != "event":
            return []
        return handler(event, now)

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue(name)
        return queue

    def _on_varset(self, event: AmiMessage, now: float) -> list[Change]:
        name = event.get(H_VARIABLE) or ""
        channel = event.get(H_CHANNEL)
        if channel is None:
            return []
        value = unescape_c(event.get(H_VALUE) or "")
        if name == QUEUESTATUS:
            return self._resolve(channel, overflow=value == "TIMEOUT")
        return self._store_variables(channel, {name: value})

    def _store_variables(self, channel: str, variables: Mapping[str, str]) -> list[Change]:
        kept = {name: value for name, value in variables.items() if name in _KEPT_VARIABLES}
        if not kept:
            return []
        self._variables.setdefault(channel, {}).update(kept)
        changes: list[Change] = []
        if not kept.keys() & set(_IVR_VARIABLES):
            return changes
        for queue in self._queues.values():
            index = queue.index_of(channel)
            if index >= 0:
                queue.callers[index] = _with_variables(queue.callers[index], self._variables[channel])
                changes.append(Change("caller_updated", channel, queue.name))
        return changes

    def _on_join(self, event: AmiMessage, now: float) -> list[Change]:
        channel = _required(event, H_CHANNEL)
        queue = self._queue(_required(event, H_QUEUE))
        changes = self._resolve(channel, overflow=False)
        if queue.index_of(channel) >= 0:
            log.warning("QueueCallerJoin of %s already waiting in %s: ignored", channel, queue.name)
            return changes
        caller = self._caller(channel, _required(event, H_UNIQUEID), event, join_time=now, priority=None)
        position = _int(event.get(H_POSITION), len(queue.callers) + 1)
        queue.callers.insert(max(0, min(position - 1, len(queue.callers))), caller)
        queue.counters.offered += 1
        changes.append(Change("caller_joined", channel, queue.name))
        return changes

    def _caller(
        self, channel: str, uniqueid: str, source: AmiMessage, join_time: float, priority: int | None
    ) -> WaitingCaller:
        variables = self._variables.get(channel, {})
        if priority is None and QUEUE_PRIO in variables:
            priority = _int(variables[QUEUE_PRIO])
        caller = WaitingCaller(
            channel=channel,
            uniqueid=uniqueid,
            caller_num=_text(source.get(H_CALLER_ID_NUM)),
            caller_name=_text(source.get(H_CALLER_ID_NAME)),
            join_time=join_time,
            priority=priority,
        )
        return _with_variables(caller, variables)

    def _on_abandon(self, event: AmiMessage, now: float) -> list[Change]:
        channel = _required(event, H_CHANNEL)
        queue = self._queues.get(_required(event, H_QUEUE))
        # Events sent between a reconnection and its snapshot arrive after the rebuild: a caller the
        # snapshot no longer holds was already counted (unresolved) and must not be counted twice.
        if queue is not None and queue.index_of(channel) >= 0:
            self._left[channel] = _Left(queue.name, abandoned=True)
        return []

    def _on_leave(self, event: AmiMessage, now: float) -> list[Change]:
        channel = _required(event, H_CHANNEL)
        queue = self._queue(_required(event, H_QUEUE))
        changes = self._stop_ringing(channel)
        index = queue.index_of(channel)
        if index < 0:
            return changes
        del queue.callers[index]
        self._left.setdefault(channel, _Left(queue.name))
        changes.append(Change("caller_left", channel, queue.name))
        return changes

    def _stop_ringing(self, channel: str) -> list[Change]:
        """Agents rung for ``channel`` stop ringing (it left, or hung up)."""
        changes = []
        for agent in self._agents.values():
            if agent.ringing_for == channel:
                agent.ringing_for = None
                changes.append(Change("agent_updated", agent.interface))
        return changes

    def _resolve(self, channel: str, overflow: bool) -> list[Change]:
        """The outcome of a caller that left a queue without being answered."""
        left = self._left.pop(channel, None)
        if left is None:
            return []
        counters = self._queue(left.queue).counters
        if not left.abandoned:
            counters.exited += 1
        elif overflow:
            counters.overflowed += 1
        else:
            counters.abandoned += 1
        return [Change("counters", channel, left.queue)]

    def _on_agent_called(self, event: AmiMessage, now: float) -> list[Change]:
        agent = self._agents.get(_required(event, H_INTERFACE))
        if agent is None:
            return []
        agent.ringing_for = _required(event, H_CHANNEL)
        return [Change("agent_updated", agent.interface)]

    def _on_ring_no_answer(self, event: AmiMessage, now: float) -> list[Change]:
        agent = self._agents.get(_required(event, H_INTERFACE))
        if agent is None or agent.ringing_for is None:
            return []
        agent.ringing_for = None
        return [Change("agent_updated", agent.interface)]

    def _on_agent_connect(self, event: AmiMessage, now: float) -> list[Change]:
        channel = _required(event, H_CHANNEL)
        interface = _required(event, H_INTERFACE)
        queue = _required(event, H_QUEUE)
        self._left.pop(channel, None)
        if channel in self._calls:  # already paired by a rebuild from a later snapshot: counted there
            return []
        self._queue(queue).counters.answered += 1
        self._calls[channel] = self._call_view(
            channel,
            _required(event, H_UNIQUEID),
            event.get(H_DEST_CHANNEL) or "",
            interface,
            queue,
            since=now,
            caller_ids=(_text(event.get(H_CALLER_ID_NUM)), _text(event.get(H_CALLER_ID_NAME))),
        )
        changes = [Change("counters", channel, queue), Change("call_started", channel, queue)]
        agent = self._agents.get(interface)
        if agent is not None:
            agent.ringing_for = None
            changes.append(Change("agent_updated", interface))
        return changes

    def _call_view(
        self,
        channel: str,
        uniqueid: str,
        agent_channel: str,
        interface: str,
        queue: str,
        *,
        since: float,
        caller_ids: tuple[str, str],
    ) -> CallView:
        variables = self._variables.get(channel, {})
        return CallView(
            caller_channel=channel,
            caller_uniqueid=uniqueid,
            agent_channel=agent_channel,
            interface=interface,
            queue=queue,
            since=since,
            caller_num=caller_ids[0],
            caller_name=caller_ids[1],
            citizen_id=variables.get(GUICHET_CITIZEN_ID),
            contact_id=variables.get(GUICHET_CONTACT_ID),
            reason=variables.get(GUICHET_REASON),
        )

    def _on_agent_complete(self, event: AmiMessage, now: float) -> list[Change]:
        channel = _required(event, H_CHANNEL)
        changes = self._end_call(channel)
        agent = self._agents.get(_required(event, H_INTERFACE))
        member = agent.memberships.get(event.get(H_QUEUE) or "") if agent is not None else None
        if agent is not None and member is not None:
            member.last_call = int(now)  # as app_queue stores it (whole seconds)
            changes.append(Change("agent_updated", agent.interface))
        return changes

    def _end_call(self, channel: str) -> list[Change]:
        call = self._calls.pop(channel, None)
        if call is None:
            return []
        return [Change("call_ended", channel, call.queue), Change("agent_updated", call.interface)]

    def _on_hangup(self, event: AmiMessage, now: float) -> list[Change]:
        channel = _required(event, H_CHANNEL)
        self._variables.pop(channel, None)
        self._unknown_variables.discard(channel)
        changes = self._resolve(channel, overflow=False)
        changes += self._end_call(channel)
        changes += self._stop_ringing(channel)
        for call in list(self._calls.values()):
            if call.agent_channel == channel:
                changes += self._end_call(call.caller_channel)
        for queue in self._queues.values():  # a Leave was missed: never keep a dead caller
            index = queue.index_of(channel)
            if index >= 0:
                del queue.callers[index]
                changes.append(Change("caller_left", channel, queue.name))
        return changes

    def _on_member(self, event: AmiMessage, now: float) -> list[Change]:
        queue = _required(event, H_QUEUE)
        interface = _required(event, H_INTERFACE)
        self._set_member(queue, interface, event.get(H_MEMBER_NAME) or interface, event)
        return [Change("agent_updated", interface, queue)]

    def _set_member(self, queue: str, interface: str, name: str, fields: AmiMessage) -> None:
        self._queue(queue)
        agent = self._agents.get(interface)
        if agent is None:
            agent = self._agents[interface] = _Agent(interface)
        agent.memberships[queue] = _Membership(
            name=name,
            status=_int(fields.get("Status")),
            paused=fields.get(H_PAUSED) == "1",
            paused_reason=fields.get("PausedReason") or "",
            in_call=fields.get("InCall") == "1",
            last_call=_int(fields.get("LastCall")),
            wrapuptime=_int(fields.get("Wrapuptime")),
        )

    def _on_member_removed(self, event: AmiMessage, now: float) -> list[Change]:
        interface = _required(event, H_INTERFACE)
        agent = self._agents.get(interface)
        if agent is None or agent.memberships.pop(_required(event, H_QUEUE), None) is None:
            return []
        if agent.memberships:
            return [Change("agent_updated", interface)]
        del self._agents[interface]
        return [Change("agent_removed", interface)]

    # --- the engine's own actions ------------------------------------------------------------
    def note_priority_change(self, queue: str, channel: str, priority: int, immediate: bool) -> list[Change]:
        """A QueueChangePriorityCaller the engine sent succeeded (Asterisk emits no event for it).

        The priority is stored; with ``immediate`` the caller moves ahead of every caller of lower
        priority (unknown priorities count as 0, Asterisk's default), as app_queue re-inserts it.
        """
        found = self._queues.get(queue)
        index = found.index_of(channel) if found is not None else -1
        if found is None or index < 0:
            return []
        caller = replace(found.callers.pop(index), priority=priority)
        if not immediate:
            found.callers.insert(index, caller)
            return [Change("caller_updated", channel, queue)]
        target = len(found.callers)
        for i, other in enumerate(found.callers):
            if priority > (other.priority or 0):
                target = i
                break
        found.callers.insert(target, caller)
        return [Change("caller_updated", channel, queue), Change("queue_reordered", "", queue)]

    def note_variables(self, channel: str, variables: Mapping[str, str]) -> list[Change]:
        """Channel variables the engine read itself (``Getvar`` for :meth:`channels_without_variables`)."""
        self._unknown_variables.discard(channel)
        return self._store_variables(channel, variables)

    # --- snapshot ------------------------------------------------------------------------------
    def rebuild(
        self,
        queue_status_events: Iterable[AmiMessage],
        core_show_channels_events: Iterable[AmiMessage],
        now: float,
    ) -> list[Change]:
        """Replace the state from a QueueStatus and a CoreShowChannels list taken at ``now``.

        List items of other names (QueueStatusComplete...) are skipped; a QueueEntry or QueueMember
        without its key fields raises ValueError.
        """
        channels = {
            _required(item, H_CHANNEL): item
            for item in core_show_channels_events
            if item.name == "CoreShowChannel"
        }
        previous = {c.uniqueid: (q.name, c) for q in self._queues.values() for c in q.callers}
        counters = {name: q.counters for name, q in self._queues.items()}
        old_calls = self._calls
        old_left = self._left
        self._queues = {}
        self._agents = {}
        self._calls = {}
        # a caller that left before the snapshot keeps its pending outcome while its channel is up
        self._left = {ch: left for ch, left in old_left.items() if ch in channels}
        self._variables = {ch: v for ch, v in self._variables.items() if ch in channels}
        self._unknown_variables &= set(channels)
        entries: list[tuple[int, AmiMessage]] = []
        for item in queue_status_events:
            if item.name == "QueueParams":
                self._queue(_required(item, H_QUEUE))
            elif item.name == "QueueMember":
                location = _required(item, "Location")
                self._set_member(_required(item, H_QUEUE), location, item.get("Name") or location, item)
            elif item.name == "QueueEntry":
                entries.append((_int(item.get(H_POSITION)), item))
        for name, kept in counters.items():
            self._queue(name).counters = kept
        for _, item in sorted(entries, key=lambda pair: pair[0]):
            self._rebuild_entry(item, previous, now)
        self._rebuild_calls(old_calls, channels, now)
        waiting = {c.uniqueid for q in self._queues.values() for c in q.callers}
        answered = {call.caller_uniqueid for call in self._calls.values()}
        for channel, left in old_left.items():
            if channel not in self._left:  # its outcome (hangup, QUEUESTATUS) was missed
                self._queue(left.queue).counters.unresolved += 1
        for uniqueid, (queue_name, _) in previous.items():
            if uniqueid in waiting:
                continue
            gone = self._queue(queue_name).counters
            if uniqueid in answered:
                gone.answered += 1
            else:
                gone.unresolved += 1
        return [Change("rebuilt")]

    def _rebuild_entry(
        self, item: AmiMessage, previous: Mapping[str, tuple[str, WaitingCaller]], now: float
    ) -> None:
        queue = self._queue(_required(item, H_QUEUE))
        channel = _required(item, H_CHANNEL)
        uniqueid = _required(item, H_UNIQUEID)
        priority = _int(item.get(H_PRIORITY))
        known = previous.get(uniqueid)
        if known is not None and known[0] == queue.name:
            queue.callers.append(replace(known[1], priority=priority))
            return
        # QueueStatus does not C-escape CallerIDName (unlike event snapshots): taken as is.
        caller = WaitingCaller(
            channel=channel,
            uniqueid=uniqueid,
            caller_num=_plain(item.get(H_CALLER_ID_NUM)),
            caller_name=_plain(item.get(H_CALLER_ID_NAME)),
            join_time=now - _int(item.get("Wait")),
            priority=priority,
        )
        queue.callers.append(_with_variables(caller, self._variables.get(channel, {})))
        queue.counters.offered += 1
        if channel not in self._variables:
            self._unknown_variables.add(channel)

    def _rebuild_calls(
        self, old_calls: Mapping[str, CallView], channels: Mapping[str, AmiMessage], now: float
    ) -> None:
        for caller_channel, call in old_calls.items():
            agent = self._agents.get(call.interface)
            busy = agent is not None and any(
                m.in_call or m.status in _IN_USE for m in agent.memberships.values()
            )
            if caller_channel in channels and busy:
                self._calls[caller_channel] = call
        bridges: dict[str, list[str]] = {}
        for name, item in channels.items():
            bridge = item.get(H_BRIDGE_ID)
            if bridge:
                bridges.setdefault(bridge, []).append(name)
        for members in bridges.values():
            self._pair(members, channels, now)

    def _pair(self, bridged: list[str], channels: Mapping[str, AmiMessage], now: float) -> None:
        """A bridge holding a channel of a member's interface and another channel: a call."""
        for agent_channel in bridged:
            agent = next((a for a in self._agents.values() if _belongs_to(agent_channel, a.interface)), None)
            if agent is None:
                continue
            for caller_channel in bridged:
                if caller_channel == agent_channel or caller_channel in self._calls:
                    continue
                queue = next(
                    (q for q, m in agent.memberships.items() if m.in_call), next(iter(agent.memberships))
                )
                item = channels[caller_channel]
                self._calls[caller_channel] = self._call_view(
                    caller_channel,
                    _required(item, H_UNIQUEID),
                    agent_channel,
                    agent.interface,
                    queue,
                    since=now - _duration(channels[agent_channel].get(H_DURATION)),
                    # CoreShowChannel does not C-escape CallerIDName (like QueueStatus): taken as is
                    caller_ids=(_plain(item.get(H_CALLER_ID_NUM)), _plain(item.get(H_CALLER_ID_NAME))),
                )


def _with_variables(caller: WaitingCaller, variables: Mapping[str, str]) -> WaitingCaller:
    """The caller with the IVR's variables seen on its channel."""
    if not variables:
        return caller
    return replace(
        caller,
        service=variables.get(GUICHET_QUEUE, caller.service),
        urgency=variables.get(GUICHET_URGENCY, caller.urgency),
        citizen_id=variables.get(GUICHET_CITIZEN_ID, caller.citizen_id),
        contact_id=variables.get(GUICHET_CONTACT_ID, caller.contact_id),
        reason=variables.get(GUICHET_REASON, caller.reason),
    )


def _plain(value: str | None) -> str:
    return "" if value is None or value in _UNKNOWN_VALUES else value


def _duration(value: str | None) -> float:
    """CoreShowChannel ``Duration`` (``HH:MM:SS``) in seconds; 0 when absent or malformed."""
    try:
        hours, minutes, seconds = (int(part) for part in (value or "").split(":"))
    except ValueError:
        return 0.0
    return float(hours * 3600 + minutes * 60 + seconds)
