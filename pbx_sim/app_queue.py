"""app_queue's behaviour as a pure model: queues, members, callers, counters.

No I/O and no clock of its own: every method that needs the time takes ``now``
(simulated epoch seconds).  The simulated PBX drives it and turns its answers
into AMI events.  What it reproduces (Asterisk 22, checked against the
recordings and app_queue.c):

* callers ordered by priority, then arrival: a new caller goes ahead of every
  caller of lower priority (``QueueCallerJoin`` then says Position=1);
  ``QueueChangePriorityCaller`` stores the priority and re-inserts the caller
  only with ``Immediate: yes``;
* ring strategies ``rrmemory`` (round robin, remembering the last member rung)
  and ``leastrecent`` (the member whose last call ended longest ago), lower
  penalty first; one member rung at a time per caller (no ``ringall``);
* members are rung only when not paused, not in wrap-up and, with
  ``ringinuse=no`` (the only mode modelled), when their device is free
  (NOT_INUSE or UNKNOWN); autofill: the first N waiting callers are served
  when N members are free;
* ``joinempty`` conditions (``no`` = penalty,paused,invalid) -> JOINEMPTY;
* counters as app_queue computes them: Holdtime and TalkTime exponential
  averages, Completed (at the end of the call), Abandoned (also on a queue
  timeout), ServicelevelPerf / ServicelevelPerf2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from pbx_sim.channels import Channel, Headers

STRATEGIES = ("rrmemory", "leastrecent")
JOINEMPTY_CONDITIONS = frozenset(
    {"penalty", "paused", "invalid", "unavailable", "inuse", "ringing", "unknown", "wrapup"}
)


class QueueError(Exception):
    """An app_queue operation refused (the message is Asterisk's reason)."""


class DeviceStatus(IntEnum):
    """``ast_device_state`` values, as QueueMember* events show them in ``Status``."""

    UNKNOWN = 0
    NOT_INUSE = 1
    INUSE = 2
    BUSY = 3
    INVALID = 4
    UNAVAILABLE = 5
    RINGING = 6
    RINGINUSE = 7
    ONHOLD = 8


def parse_joinempty(value: str) -> frozenset[str]:
    """queues.conf ``joinempty``: yes (always join), no (penalty,paused,invalid) or a list."""
    text = value.strip().lower()
    if text in ("yes", ""):
        return frozenset()
    if text in ("no", "strict", "loose"):
        extra = {"unavailable"} if text == "strict" else set()
        return frozenset({"penalty", "paused", "invalid", *extra})
    conditions = frozenset(part.strip() for part in text.split(","))
    unknown = conditions - JOINEMPTY_CONDITIONS
    if unknown:
        raise ValueError(f"joinempty: unknown condition(s) {', '.join(sorted(unknown))}")
    return conditions


@dataclass(frozen=True)
class MemberConfig:
    """A static member, as ``member => interface,penalty,name,state_interface,,wrapuptime,paused``."""

    interface: str
    name: str = ""
    state_interface: str = ""
    penalty: int = 0
    paused: bool = False
    wrapuptime: int | None = None


@dataclass(frozen=True)
class QueueConfig:
    """One queue of queues.conf (the options the engine relies on)."""

    name: str
    strategy: str = "rrmemory"
    timeout: float = 15.0  # ring timeout per member attempt (s)
    retry: float = 5.0  # pause before trying again after a ring-no-answer (s)
    wrapuptime: int = 0
    servicelevel: int = 0
    joinempty: str = "yes"
    context: str | None = None  # exit context: a digit that is an extension there leaves the queue
    exit_digits: frozenset[str] = frozenset()
    maxlen: int = 0
    weight: int = 0
    members: tuple[MemberConfig, ...] = ()

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"queue {self.name}: strategy {self.strategy!r} not modelled; "
                f"use one of {', '.join(STRATEGIES)}"
            )
        if self.timeout <= 0 or self.retry < 0:
            raise ValueError(f"queue {self.name}: timeout must be > 0 and retry >= 0")
        parse_joinempty(self.joinempty)
        if self.exit_digits and self.context is None:
            raise ValueError(f"queue {self.name}: exit_digits need an exit context")


@dataclass
class QueueMember:
    """A member of one queue (its device status is shared through :class:`QueueSystem`)."""

    interface: str
    name: str
    state_interface: str
    penalty: int
    dynamic: bool
    wrapuptime: int
    login_time: int
    paused: bool = False
    paused_reason: str = ""
    status: DeviceStatus = DeviceStatus.UNAVAILABLE
    calls_taken: int = 0
    last_call: int = 0
    last_call_end: float = 0.0
    last_pause: int = 0
    in_call: bool = False
    ringinuse: bool = False

    def _common(self) -> Headers:
        return [
            ("StateInterface", self.state_interface),
            ("Membership", "dynamic" if self.dynamic else "static"),
            ("Penalty", str(self.penalty)),
            ("CallsTaken", str(self.calls_taken)),
            ("LastCall", str(self.last_call)),
            ("LastPause", str(self.last_pause)),
            ("LoginTime", str(self.login_time)),
            ("InCall", "1" if self.in_call else "0"),
            ("Status", str(int(self.status))),
            ("Paused", "1" if self.paused else "0"),
            ("PausedReason", self.paused_reason),
        ]

    def event_headers(self, queue: str) -> Headers:
        """Fields of QueueMemberStatus / Added / Removed / Pause / Penalty, in order."""
        return [
            ("Queue", queue),
            ("MemberName", self.name),
            ("Interface", self.interface),
            *self._common(),
            ("Ringinuse", "1" if self.ringinuse else "0"),
            ("Wrapuptime", str(self.wrapuptime)),
        ]

    def status_headers(self, queue: str) -> Headers:
        """Fields of a QueueStatus ``QueueMember`` list item (without ActionID)."""
        return [
            ("Queue", queue),
            ("Name", self.name),
            ("Location", self.interface),
            *self._common(),
            ("Wrapuptime", str(self.wrapuptime)),
        ]

    @property
    def logged_in(self) -> bool:
        return self.status not in (DeviceStatus.UNAVAILABLE, DeviceStatus.INVALID)

    @property
    def available(self) -> bool:
        """app_queue's ``is_member_available``: what ``Queue:<queue>_avail`` follows."""
        if not self.logged_in or self.paused:
            return False
        return self.ringinuse or self.status in (DeviceStatus.NOT_INUSE, DeviceStatus.UNKNOWN)

    @property
    def free(self) -> bool:
        """Device available and not paused (QUEUE_MEMBER(q,free), QueueSummary Available)."""
        return self.status in (DeviceStatus.NOT_INUSE, DeviceStatus.UNKNOWN) and not self.paused

    def in_wrapup(self, now: float) -> bool:
        return self.wrapuptime > 0 and self.last_call_end > 0 and now < self.last_call_end + self.wrapuptime


@dataclass
class QueueCaller:
    """A caller waiting in a queue."""

    channel: Channel
    priority: int
    join_time: float
    original_position: int = 0
    ringing: str | None = None  # interface being rung
    next_try: float = 0.0  # not before this time (retry after a ring-no-answer)
    last_rung: str | None = None

    def entry_headers(self, queue: str, position: int, now: float) -> Headers:
        """Fields of a QueueStatus ``QueueEntry`` list item (without ActionID)."""
        chan = self.channel
        return [
            ("Queue", queue),
            ("Position", str(position)),
            ("Channel", chan.name),
            ("Uniqueid", chan.uniqueid),
            ("CallerIDNum", chan.caller_num or "unknown"),
            ("CallerIDName", chan.caller_name or "unknown"),
            ("ConnectedLineNum", chan.connected_num or "unknown"),
            ("ConnectedLineName", chan.connected_name or "unknown"),
            ("Wait", str(int(now - self.join_time))),
            ("Priority", str(self.priority)),
        ]


@dataclass
class CallQueue:
    """One queue: its members in configuration order, its callers in service order, its counters."""

    config: QueueConfig
    members: dict[str, QueueMember] = field(default_factory=dict)
    callers: list[QueueCaller] = field(default_factory=list)
    holdtime: int = 0
    talktime: int = 0
    completed: int = 0
    abandoned: int = 0
    completed_in_sl: int = 0
    abandoned_in_sl: int = 0
    rr_last: str | None = None

    @property
    def name(self) -> str:
        return self.config.name

    # --- callers -----------------------------------------------------------------
    def position_of(self, channel_name: str) -> int:
        """1-based position of a caller, 0 when absent."""
        for index, caller in enumerate(self.callers):
            if caller.channel.name == channel_name:
                return index + 1
        return 0

    def caller(self, channel_name: str) -> QueueCaller:
        position = self.position_of(channel_name)
        if not position:
            raise QueueError("No such caller")
        return self.callers[position - 1]

    def _insert(self, caller: QueueCaller) -> int:
        index = len(self.callers)
        for i, other in enumerate(self.callers):
            if caller.priority > other.priority:
                index = i
                break
        self.callers.insert(index, caller)
        return index + 1

    def can_join(self, now: float) -> bool:
        """False when ``joinempty`` forbids joining (QUEUESTATUS=JOINEMPTY)."""
        conditions = parse_joinempty(self.config.joinempty)
        if not conditions:
            return True
        return any(self._counts_for_join(member, conditions, now) for member in self.members.values())

    @staticmethod
    def _counts_for_join(member: QueueMember, conditions: frozenset[str], now: float) -> bool:
        blocked_by_status = {
            DeviceStatus.INVALID: "invalid",
            DeviceStatus.UNAVAILABLE: "unavailable",
            DeviceStatus.INUSE: "inuse",
            DeviceStatus.RINGING: "ringing",
            DeviceStatus.UNKNOWN: "unknown",
        }.get(member.status)
        if blocked_by_status in conditions:
            return False
        if member.paused and "paused" in conditions:
            return False
        return not ("wrapup" in conditions and (member.in_call or member.in_wrapup(now)))

    def join(self, channel: Channel, priority: int, now: float) -> QueueCaller:
        """Add a caller (ahead of every lower-priority caller); raises QueueError when it cannot join."""
        if self.position_of(channel.name):
            raise QueueError(f"{channel.name} is already in queue {self.name}")
        if self.config.maxlen and len(self.callers) >= self.config.maxlen:
            raise QueueError("FULL")
        if not self.can_join(now):
            raise QueueError("JOINEMPTY")
        caller = QueueCaller(channel=channel, priority=priority, join_time=now)
        caller.original_position = self._insert(caller)
        return caller

    def leave(self, channel_name: str) -> int:
        """Remove a caller; returns the position it had (1-based)."""
        position = self.position_of(channel_name)
        if not position:
            raise QueueError("No such caller")
        del self.callers[position - 1]
        return position

    def change_priority(self, channel_name: str, priority: int, immediate: bool) -> None:
        """QueueChangePriorityCaller: store the priority; move the caller only when ``immediate``."""
        caller = self.caller(channel_name)
        caller.priority = priority
        if immediate:
            self.callers.remove(caller)
            self._insert(caller)

    # --- dispatch ----------------------------------------------------------------
    def ringable(self, member: QueueMember, now: float) -> bool:
        return member.free and not member.in_wrapup(now) and not member.in_call

    def _strategy_order(self, candidates: list[QueueMember]) -> list[QueueMember]:
        if self.config.strategy == "leastrecent":
            return sorted(candidates, key=lambda m: (m.penalty, m.last_call_end))
        order = list(self.members)
        start = order.index(self.rr_last) + 1 if self.rr_last in order else 0
        rotation = {iface: (i - start) % len(order) for i, iface in enumerate(order)}
        return sorted(candidates, key=lambda m: (m.penalty, rotation[m.interface]))

    def assignments(self, now: float, busy: Iterable[str] = ()) -> list[tuple[QueueCaller, QueueMember]]:
        """Which waiting callers ring which members now, in service order.

        ``busy`` lists interfaces already rung for a caller of any queue.
        """
        taken = set(busy)
        result: list[tuple[QueueCaller, QueueMember]] = []
        for caller in self.callers:
            if caller.ringing is not None or caller.next_try > now:
                continue
            candidates = [
                m for m in self.members.values() if m.interface not in taken and self.ringable(m, now)
            ]
            if not candidates:
                break
            member = self._strategy_order(candidates)[0]
            taken.add(member.interface)
            result.append((caller, member))
        return result

    def mark_rung(self, caller: QueueCaller, member: QueueMember) -> None:
        caller.ringing = member.interface
        caller.last_rung = member.interface
        self.rr_last = member.interface

    def ring_no_answer(self, caller: QueueCaller, now: float) -> None:
        caller.ringing = None
        caller.next_try = now + self.config.retry

    # --- counters ----------------------------------------------------------------
    def record_connect(self, caller: QueueCaller, now: float) -> tuple[int, bool]:
        """The caller was answered: returns (holdtime s, answered within the service level)."""
        holdtime = int(now - caller.join_time)
        self.holdtime = ((self.holdtime << 2) - self.holdtime + holdtime) >> 2
        return holdtime, holdtime <= self.config.servicelevel

    def record_complete(self, member: QueueMember, talktime: int, in_sl: bool, now: float) -> None:
        """The answered call ended (app_queue's update_queue)."""
        member.calls_taken += 1
        member.last_call = int(now)
        member.last_call_end = now
        member.in_call = False
        self.completed += 1
        if in_sl:
            self.completed_in_sl += 1
        if self.completed == 1:
            self.talktime = talktime
        else:
            self.talktime = ((self.talktime << 2) - self.talktime + talktime) >> 2

    def record_abandon(self, caller: QueueCaller, now: float) -> int:
        """The caller hung up or timed out while queued; returns its hold time (s)."""
        holdtime = int(now - caller.join_time)
        self.abandoned += 1
        if holdtime <= self.config.servicelevel:
            self.abandoned_in_sl += 1
        return holdtime

    # --- reports -----------------------------------------------------------------
    def params_headers(self) -> Headers:
        """Fields of a QueueStatus ``QueueParams`` list item (without ActionID)."""
        done = self.completed
        perf = 100 * self.completed_in_sl / done if done else 0.0
        both = done + self.abandoned
        perf2 = 100 * (self.completed_in_sl + self.abandoned_in_sl) / both if both else 0.0
        return [
            ("Queue", self.name),
            ("Max", str(self.config.maxlen)),
            ("Strategy", self.config.strategy),
            ("Calls", str(len(self.callers))),
            ("Holdtime", str(self.holdtime)),
            ("TalkTime", str(self.talktime)),
            ("Completed", str(self.completed)),
            ("Abandoned", str(self.abandoned)),
            ("ServiceLevel", str(self.config.servicelevel)),
            ("ServicelevelPerf", f"{perf:.1f}"),
            ("ServicelevelPerf2", f"{perf2:.1f}"),
            ("Weight", str(self.config.weight)),
        ]

    def summary_headers(self, now: float) -> Headers:
        """Fields of a ``QueueSummary`` list item (without ActionID)."""
        members = list(self.members.values())
        longest = max((int(now - c.join_time) for c in self.callers), default=0)
        return [
            ("Queue", self.name),
            ("LoggedIn", str(sum(m.logged_in for m in members))),
            ("Available", str(sum(m.logged_in and m.free for m in members))),
            ("Callers", str(len(self.callers))),
            ("HoldTime", str(self.holdtime)),
            ("TalkTime", str(self.talktime)),
            ("LongestHoldTime", str(longest)),
        ]

    def avail_state(self) -> str:
        """State of the ``Queue:<name>_avail`` device: NOT_INUSE when a member is available."""
        return "NOT_INUSE" if any(m.available for m in self.members.values()) else "INUSE"

    def member_function(self, option: str, now: float, interface: str = "") -> int:
        """``QUEUE_MEMBER(queue,option[,interface])``: logged, free, ready, count, paused, penalty."""
        members = list(self.members.values())
        if option == "logged":
            return sum(m.logged_in for m in members)
        if option == "free":
            return sum(m.free for m in members)
        if option == "ready":
            return sum(m.free and not m.in_wrapup(now) for m in members)
        if option == "count":
            return len(members)
        if option in ("paused", "penalty", "ignorebusy"):
            member = self.members.get(interface)
            if member is None:
                return 0 if option != "penalty" else -1
            return int(member.paused) if option == "paused" else member.penalty if option == "penalty" else 0
        raise QueueError(f"Invalid option {option!r} for QUEUE_MEMBER")


class QueueSystem:
    """Every queue of the PBX plus the device states their members follow."""

    def __init__(self, configs: Iterable[QueueConfig], now: float) -> None:
        self.queues: dict[str, CallQueue] = {}
        self.devices: dict[str, DeviceStatus] = {}
        for config in configs:
            if config.name in self.queues:
                raise ValueError(f"queue {config.name} configured twice")
            queue = CallQueue(config)
            self.queues[config.name] = queue
            for member in config.members:
                self.add_member(
                    config.name,
                    member.interface,
                    now,
                    name=member.name,
                    state_interface=member.state_interface,
                    penalty=member.penalty,
                    paused=member.paused,
                    dynamic=False,
                    wrapuptime=member.wrapuptime,
                )

    def queue(self, name: str) -> CallQueue:
        try:
            return self.queues[name]
        except KeyError:
            raise QueueError("No such queue") from None

    def device_status(self, device: str) -> DeviceStatus:
        return self.devices.get(device, DeviceStatus.UNAVAILABLE)

    def set_device_state(self, device: str, status: DeviceStatus) -> list[tuple[CallQueue, QueueMember]]:
        """A device changed state: returns the members whose Status changed (QueueMemberStatus)."""
        self.devices[device] = status
        changed = []
        for queue in self.queues.values():
            for member in queue.members.values():
                if member.state_interface == device and member.status != status:
                    member.status = status
                    changed.append((queue, member))
        return changed

    def add_member(
        self,
        queue_name: str,
        interface: str,
        now: float,
        *,
        name: str = "",
        state_interface: str = "",
        penalty: int = 0,
        paused: bool = False,
        reason: str = "",
        dynamic: bool = True,
        wrapuptime: int | None = None,
    ) -> QueueMember:
        """QueueAdd (or a static member at load); QueueError('Already there') when present."""
        queue = self.queue(queue_name)
        if interface in queue.members:
            raise QueueError("Already there")
        state = state_interface or interface
        member = QueueMember(
            interface=interface,
            name=name or interface,
            state_interface=state,
            penalty=penalty,
            dynamic=dynamic,
            wrapuptime=queue.config.wrapuptime if wrapuptime is None else wrapuptime,
            login_time=int(now),
            paused=paused,
            paused_reason=reason if paused else "",
            last_pause=int(now) if paused else 0,
            status=self.device_status(state),
        )
        queue.members[interface] = member
        return member

    def remove_member(self, queue_name: str, interface: str) -> QueueMember:
        """QueueRemove; QueueError('Not there') when absent."""
        queue = self.queue(queue_name)
        member = queue.members.pop(interface, None)
        if member is None:
            raise QueueError("Not there")
        return member

    def set_paused(
        self, interface: str, paused: bool, reason: str, now: float, queue_name: str | None = None
    ) -> list[tuple[CallQueue, QueueMember]]:
        """QueuePause in one queue or (no queue) in all; QueueError when the interface is nowhere."""
        targets = (
            [(self.queue(queue_name), None)] if queue_name else [(q, None) for q in self.queues.values()]
        )
        changed = []
        for queue, _ in targets:
            member = queue.members.get(interface)
            if member is None:
                continue
            member.paused = paused
            member.paused_reason = reason if paused else ""
            if paused:
                member.last_pause = int(now)
            changed.append((queue, member))
        if not changed:
            raise QueueError("Interface not found")
        return changed

    def set_penalty(
        self, interface: str, penalty: int, queue_name: str | None = None
    ) -> list[tuple[CallQueue, QueueMember]]:
        """QueuePenalty in one queue or in all; QueueError when the interface is nowhere."""
        queues = [self.queue(queue_name)] if queue_name else list(self.queues.values())
        changed = []
        for queue in queues:
            member = queue.members.get(interface)
            if member is not None:
                member.penalty = penalty
                changed.append((queue, member))
        if not changed:
            raise QueueError("Invalid interface, queuename or penalty")
        return changed

    def ringing_interfaces(self) -> set[str]:
        return {c.ringing for q in self.queues.values() for c in q.callers if c.ringing is not None}
