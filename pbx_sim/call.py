"""One simulated inbound call: the caller's channel running the dialplan, the IVR and the queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from guichet.names import (
    AGISTATUS,
    DIALSTATUS,
    GOSUB_RESULT,
    QUEUE_PRIO,
    QUEUEPOSITION,
    QUEUESTATUS,
    QUEUEWAIT,
)
from pbx_sim.agi_client import AgiSession, ChannelHungUp
from pbx_sim.app_queue import CallQueue, DeviceStatus, QueueCaller, QueueError, QueueMember
from pbx_sim.channels import Channel, ChannelState, escape_c
from pbx_sim.dialplan import evaluate_gotoif, label_index, substitute
from pbx_sim.scenario import Callee, CallerScript, KeyPress, SimAgent

if TYPE_CHECKING:
    from pbx_sim.pbx import SimulatedPbx

logger = logging.getLogger(__name__)

_FUNCTION = re.compile(r"^([A-Z_]+)\((.*)\)$")
_MASTER_CHANNEL = re.compile(r"^MASTER_CHANNEL\((.+)\)$")
_GOSUB_OPTION = re.compile(r"U\(([^()]*)\)")
_GOSUB_RESULTS = frozenset({"ABORT", "CONTINUE", "BUSY", "CONGESTION", "CHANUNAVAIL"})
DTMF_DURATION_MS = 280  # RFC 2833 digits of the recordings (SIPp's dtmf_2833 pcaps)
# Dial() to a number no test scripted: it answers after ringing 3 s and hangs up after 20 s.
DEFAULT_CALLEE = Callee()
# Dial()'s DialEnd status and the callee channel's Hangup cause for the callees that never answer.
_DIAL_FAILURES = {
    "busy": ("BUSY", "17", "User busy"),
    "congestion": ("CONGESTION", "34", "Circuit/channel congestion"),
    "chanunavail": ("CHANUNAVAIL", "20", "Subscriber absent"),
}


@dataclass
class CallOutcome:
    """How a call ended, for tests, benchmarks and the demo."""

    answered_by: str | None = None
    queue: str | None = None
    waited_s: float = 0.0
    talked_s: float = 0.0
    abandoned: bool = False
    queuestatus: str | None = None
    agistatus: str | None = None
    transferred_to: str | None = None  # the number Dial() reached (an emergency transfer, a callback)
    dialstatus: str | None = None  # DIALSTATUS of the last Dial()
    gosub_result: str | None = None  # GOSUB_RESULT the callee's U() subroutine left ("" when unset)
    path: list[str] = field(default_factory=list)  # "context,exten,priority:App" of every step run


class Call:
    """The caller side of a call: dialplan interpreter, keypad, AGI, Queue()."""

    def __init__(
        self,
        pbx: SimulatedPbx,
        script: CallerScript,
        channel: Channel,
        thread_id: int,
        *,
        device_end: str | None = "UNAVAILABLE",
    ) -> None:
        """``device_end``: the state of ``PJSIP/<script.endpoint>`` once the call is over (an
        unregistered caller's phone; a registered agent's is NOT_INUSE; None: no device)."""
        self.pbx = pbx
        self.device_end = device_end
        self.script = script
        self.channel = channel
        self.thread_id = thread_id
        self.hangup_event = asyncio.Event()
        self.outcome = CallOutcome()
        self._presses: deque[KeyPress] = deque(script.key_presses())
        self._digits: deque[str] = deque()
        self._wait_left = self._presses[0].delay_s if self._presses else 0.0
        self._assigned: asyncio.Queue[QueueMember] = asyncio.Queue()
        self.queue_entry: QueueCaller | None = None
        self.last_read_s = 0.0
        self._normal_clearing = False  # Hangup() ran or a bridge ended: Hangup Cause 16, else 0
        self.in_bridge = False

    # --- channel helpers ------------------------------------------------------------
    @property
    def hung_up(self) -> bool:
        return self.hangup_event.is_set()

    def emit(self, name: str, privilege: str, *extra: tuple[str, str], dest: Channel | None = None) -> None:
        self.pbx.emit(self.channel.event(name, privilege, *extra, dest=dest))

    def set_var(self, name: str, value: str) -> None:
        if name == "CHANNEL(language)":
            self.channel.language = value
            return
        master = _MASTER_CHANNEL.match(name)
        if master is not None:  # the channel whose uniqueid is our linkedid; ourselves when gone
            target = self.pbx.call_by_uniqueid(self.channel.linkedid) or self
            target.set_var(master.group(1), value)
            return
        self.channel.variables[name] = value
        self.emit("VarSet", "dialplan,all", ("Variable", name), ("Value", escape_c(value)))

    def answer(self) -> None:
        if self.channel.state != ChannelState.UP:
            self.channel.state = ChannelState.UP
            self.emit("Newstate", "call,all")

    def set_callerid(self, value: str) -> None:
        match = re.match(r'^\s*"?(.*?)"?\s*<(.*)>\s*$', value)
        if match:
            self.channel.caller_name, self.channel.caller_num = match.group(1), match.group(2)
        else:
            self.channel.caller_name, self.channel.caller_num = "", value
        self.emit("NewCallerid", "call,all", ("CID-CallingPres", "0 (Presentation Allowed, Not Screened)"))

    def request_hangup(self, cause: str = "16", soft: bool = False) -> None:
        """The caller hangs up (or the AGI asked for it): every waiting coroutine wakes up."""
        if self.hung_up:
            return
        if soft:
            self.emit("SoftHangupRequest", "call,all", ("Cause", cause))
        else:
            self.emit("HangupRequest", "call,all")
        self.hangup_event.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep simulated seconds (``math.inf``: until the hangup); False when the channel hung up."""
        if self.hung_up:
            return False
        timeout = None if math.isinf(seconds) else self.pbx.clock.real_delay(seconds)
        try:
            await asyncio.wait_for(self.hangup_event.wait(), timeout)
        except TimeoutError:
            return True
        return False

    # --- variables and functions ----------------------------------------------------
    def lookup(self, expr: str) -> str | None:
        """A variable or dialplan function value; None when unset."""
        chan = self.channel
        builtins = {
            "CHANNEL": chan.name,
            "UNIQUEID": chan.uniqueid,
            "CONTEXT": chan.context,
            "EXTEN": chan.exten,
            "PRIORITY": str(chan.priority),
            "CALLERID(num)": chan.caller_num,
            "CALLERID(name)": chan.caller_name,
            "CALLERID(all)": f'"{chan.caller_name}" <{chan.caller_num}>',
            "CHANNEL(name)": chan.name,
            "CHANNEL(language)": chan.language,
            "CHANNEL(uniqueid)": chan.uniqueid,
            "EPOCH": str(int(self.pbx.clock.now())),
        }
        if expr in builtins:
            return builtins[expr]
        match = _FUNCTION.match(expr)
        if match is not None:
            return self._function(match.group(1), match.group(2).split(","))
        return chan.variables.get(expr)

    def _function(self, name: str, args: list[str]) -> str:
        now = self.pbx.clock.now()
        try:
            if name == "QUEUE_MEMBER" and len(args) >= 2:
                queue = self.pbx.queues.queue(args[0])
                return str(queue.member_function(args[1], now, args[2] if len(args) > 2 else ""))
            if name == "QUEUE_WAITING_COUNT":
                return str(len(self.pbx.queues.queue(args[0]).callers))
        except QueueError:
            return "0"
        return ""

    def expand(self, text: str) -> str:
        return substitute(text, lambda expr: self.lookup(expr) or "")

    # --- keypad -------------------------------------------------------------------------
    async def read_digit(self, timeout_s: float | None, accept: str | None) -> str | None:
        """Wait for the caller's next digit (None on timeout); raises ChannelHungUp.

        Presses not in ``accept`` (when given) are swallowed, as Asterisk ignores them.
        :attr:`last_read_s` then holds the simulated seconds this read lasted, computed from
        the script (not measured), so ``endpos`` values are exact whatever the clock speed.
        """
        self.last_read_s = 0.0
        while True:
            if self.hung_up:
                raise ChannelHungUp
            if self._digits:
                wait = self._presses[0].gap_s if self._presses else 0.0
            elif self._presses:
                wait = self._wait_left
            else:
                wait = None
            left = None if timeout_s is None else max(0.0, timeout_s - self.last_read_s)
            if wait is None or (left is not None and left < wait):
                if left is None:
                    await self.hangup_event.wait()
                    raise ChannelHungUp
                if not await self._timed(left):
                    raise ChannelHungUp
                if self._presses and not self._digits:
                    self._wait_left = max(0.0, self._wait_left - left)
                self.last_read_s += left
                return None
            if not await self._timed(wait):
                raise ChannelHungUp
            self.last_read_s += wait
            digit = self._next_digit()
            self.emit("DTMFBegin", "dtmf,all", ("Digit", digit), ("Direction", "Received"))
            self.emit(
                "DTMFEnd",
                "dtmf,all",
                ("Digit", digit),
                ("DurationMs", str(DTMF_DURATION_MS)),
                ("Direction", "Received"),
            )
            if accept is None or digit in accept:
                return digit

    async def _timed(self, seconds: float) -> bool:
        """Sleep that keeps the remaining key delay right when cancelled."""
        started = self.pbx.clock.now()
        try:
            return await self.sleep(seconds)
        except asyncio.CancelledError:
            if self._presses and not self._digits:
                self._wait_left = max(0.0, self._wait_left - (self.pbx.clock.now() - started))
            raise

    def _next_digit(self) -> str:
        if not self._digits:
            press = self._presses[0]
            self._digits.extend(press.digits)
        digit = self._digits.popleft()
        if not self._digits:
            self._presses.popleft()
            self._wait_left = self._presses[0].delay_s if self._presses else 0.0
        return digit

    # --- dialplan ---------------------------------------------------------------------
    async def run(self) -> CallOutcome:
        """Run the dialplan from the inbound context until Hangup or the caller hangs up."""
        chan = self.channel
        self.pbx.emit(chan.event("Newchannel", "call,all"))
        timer = None
        if self.script.hangup_after_s is not None:
            timer = self.pbx.clock.call_later(self.script.hangup_after_s, self.request_hangup)
        try:
            await self._run_dialplan(chan.context, chan.exten, 0)
        finally:
            if timer is not None:
                timer.cancel()
            self._finish()
        return self.outcome

    async def run_at(self, context: str, exten: str, priority: int) -> CallOutcome:
        """Run the dialplan of an already announced channel from ``context,exten,priority``
        (an Originate once answered) until it ends."""
        try:
            await self._run_dialplan(context, exten, priority - 1)
        finally:
            self._finish()
        return self.outcome

    async def gosub(self, context: str, exten: str, priority: int, args: list[str]) -> None:
        """Run a subroutine on this channel (Dial's U() on the called party) until Return() or its end;
        ``args`` arrive as ARG1..ARGn."""
        for number, arg in enumerate(args, 1):
            self.set_var(f"ARG{number}", arg)
        await self._run_dialplan(context, exten, priority - 1)

    async def _run_dialplan(self, context: str, exten: str, index: int) -> None:
        chan = self.channel
        chan.context, chan.exten = context, exten
        steps = self.pbx.dialplan.find(context, exten)
        while steps is not None and index < len(steps) and not self.hung_up:
            step = steps[index]
            chan.priority = index + 1
            data = self.expand(step.data)
            self.outcome.path.append(f"{chan.context},{chan.exten},{chan.priority}:{step.app}")
            self.emit(
                "Newexten",
                "dialplan,all",
                ("Extension", chan.exten),
                ("Application", step.app),
                ("AppData", data),
            )
            if step.app == "Hangup":
                self._normal_clearing = True
                self.request_hangup(soft=True)
                return
            if step.app == "Return":
                return
            if step.app == "GotoIf":
                target = evaluate_gotoif(data)
                index = label_index(steps, target) if target else index + 1
                continue
            if step.app == "Dial":
                await self._dial(data)
            elif step.app == "Queue":
                jump = await self._queue(data)
                if jump is not None:
                    context, exten = jump
                    chan.context, chan.exten = context, exten
                    steps = self.pbx.dialplan.find(context, exten)
                    index = 0
                    continue
            else:
                await self.exec_app(step.app, data)
            index += 1

    async def exec_app(self, app: str, data: str) -> int:
        """Run one application (dialplan step or AGI EXEC); -2 when unknown."""
        if app == "Answer":
            self.answer()
            self.pbx.device_changed(f"PJSIP/{self.script.endpoint}", "INUSE")
        elif app == "Set":
            name, _, value = data.partition("=")
            self.set_var(name, value)
        elif app == "Playback":
            duration = self.pbx.sound_duration(data)
            status = "FAILED"
            if duration is not None and await self.sleep(duration):
                status = "SUCCESS"
            self.set_var("PLAYBACKSTATUS", status)
        elif app == "Wait":
            await self.sleep(float(data or 0))
        elif app == "AGI":
            url, *args = data.split(",")
            status = await AgiSession(self, url, args).run()
            self.outcome.agistatus = status
            self.set_var(AGISTATUS, status)
        elif app != "NoOp":
            return -2
        return 0

    def _finish(self) -> None:
        """The channel goes away: Hangup, then the caller's (unregistered) device is UNAVAILABLE.

        As recorded: after Hangup() or a bridged call, ``Hangup`` carries Cause 16; a channel
        that left the dialplan already hung up (caller, AGI HANGUP, AMI Hangup) first gets the
        PBX's own ``SoftHangupRequest`` (Cause 16), then ``Hangup`` with Cause 0 (Unknown).
        """
        if self.channel.hung_up:
            return
        self.channel.hung_up = True
        if self._normal_clearing or not self.hung_up:
            cause = ("16", "Normal Clearing")
        else:
            self.emit("SoftHangupRequest", "call,all", ("Cause", "16"))
            cause = ("0", "Unknown")
        self.hangup_event.set()
        self.emit("Hangup", "call,all", ("Cause", cause[0]), ("Cause-txt", cause[1]))
        if self.device_end is not None:
            self.pbx.device_changed(f"PJSIP/{self.script.endpoint}", self.device_end)
        self.pbx.call_ended(self)

    # --- Dial() -------------------------------------------------------------------------
    async def _dial(self, data: str) -> None:
        """Dial(PJSIP/<number>@<endpoint>[,<ring s>[,<options>]]) with options ``g`` and
        ``U(context[^arg...])``, as app_dial.c does them.

        The callee behaves as the PBX's :class:`~pbx_sim.scenario.Callee` for ``number`` says.  Once it
        answered (DIALSTATUS=ANSWER), the U() subroutine runs on its channel from ``s`` priority 1 with
        ARG1.. set; then GOSUB_RESULT ``ABORT`` hangs up both legs, ``CONTINUE`` hangs up the callee and
        the caller goes on, ``BUSY`` / ``CONGESTION`` / ``CHANUNAVAIL`` also set DIALSTATUS; unset, the
        two are bridged, and when the callee ends the bridge the caller goes on only with ``g`` (Dial()
        returns -1 otherwise).  Events as recorded: DIALSTATUS / ANSWEREDTIME / DIALEDTIME emptied,
        DialBegin, DialState RINGING, DialEnd (after the subroutine: its GOSUB_RESULT, else ANSWER).
        """
        target, _, rest = data.partition(",")
        timeout, _, options = rest.partition(",")
        dial_string = target.partition("/")[2]
        number, _, endpoint = dial_string.partition("@")
        pbx = self.pbx
        callee = pbx.config.callees.get(number, DEFAULT_CALLEE)
        for var in (DIALSTATUS, "ANSWEREDTIME", "DIALEDTIME"):
            self.set_var(var, "")
        dest = pbx.new_outbound_channel(endpoint or number, number, self.channel)
        pbx.emit(dest.event("Newchannel", "call,all"))
        self.emit("DialBegin", "call,all", ("DialString", dial_string), dest=dest)
        started = pbx.clock.now()
        if callee.result in _DIAL_FAILURES:
            status, cause, cause_txt = _DIAL_FAILURES[callee.result]
            self._dial_over(dest, status, started, (cause, cause_txt))
            return
        dest.state = ChannelState.RINGING
        pbx.emit(dest.event("Newstate", "call,all"))
        self.emit("DialState", "call,all", ("DialStatus", "RINGING"), dest=dest)
        ring_s = float(timeout) if timeout else math.inf
        answers = callee.result == "answer" and callee.answer_after_s < ring_s
        if not await self.sleep(callee.answer_after_s if answers else ring_s):
            self._dial_over(dest, "CANCEL", started)
            return
        if not answers:
            self._dial_over(dest, "NOANSWER", started)
            return
        dest.state = ChannelState.UP
        pbx.emit(dest.event("Newstate", "call,all"))
        self.set_var(DIALSTATUS, "ANSWER")
        self.outcome.transferred_to = number
        answered = pbx.clock.now()
        leg = Call(pbx, callee_script(callee, dest, number), dest, self.thread_id, device_end=None)
        gosub = _GOSUB_OPTION.search(options)
        result = await self._predial_gosub(leg, gosub.group(1)) if gosub is not None else ""
        if result not in _GOSUB_RESULTS:  # unset (or not one Dial acts on): the two are bridged
            result = ""
        self.emit("DialEnd", "call,all", ("DialStatus", result or "ANSWER"), dest=dest)
        status = result if result in ("BUSY", "CONGESTION", "CHANUNAVAIL") else "ANSWER"
        go_on = result not in ("", "ABORT")
        if result == "" and not self.hung_up:
            if not leg.hung_up:
                await self._bridge(dest, leg, callee.talk_s)
            go_on = "g" in _GOSUB_OPTION.sub("", options)  # the callee hung up: go on only with g
        ended = pbx.clock.now()
        self.set_var("ANSWEREDTIME", str(int(ended - answered)))
        self.set_var("DIALEDTIME", str(int(ended - started)))
        self.set_var(DIALSTATUS, status)
        self.outcome.dialstatus = status
        pbx.emit(dest.event("Hangup", "call,all", ("Cause", "16"), ("Cause-txt", "Normal Clearing")))
        dest.hung_up = True
        if not go_on and not self.hung_up:  # Dial() returns -1: the caller is hung up
            self._normal_clearing = True
            self.request_hangup(soft=True)

    def _dial_over(
        self, dest: Channel, status: str, started: float, cause: tuple[str, str] = ("0", "Unknown")
    ) -> None:
        """A dial that never connected: DialEnd, the callee's Hangup, DIALSTATUS and DIALEDTIME."""
        self.emit("DialEnd", "call,all", ("DialStatus", status), dest=dest)
        self.pbx.emit(dest.event("Hangup", "call,all", ("Cause", cause[0]), ("Cause-txt", cause[1])))
        dest.hung_up = True
        self.set_var("DIALEDTIME", str(int(self.pbx.clock.now() - started)))
        self.set_var(DIALSTATUS, status)
        self.outcome.dialstatus = status

    async def _predial_gosub(self, leg: Call, spec: str) -> str:
        """Dial's U(context[^arg...]) on the answered callee, from ``s`` priority 1 of ``context`` (as
        app_dial does); its GOSUB_RESULT in upper case ("" when unset)."""
        context, *args = spec.split("^")
        routine = asyncio.ensure_future(leg.gosub(context, "s", 1, args))
        caller_gone = asyncio.ensure_future(self.hangup_event.wait())
        await asyncio.wait([routine, caller_gone], return_when=asyncio.FIRST_COMPLETED)
        if not routine.done():  # the caller hung up: Asterisk hangs the callee up too
            leg.request_hangup()
        await routine
        caller_gone.cancel()
        result = leg.channel.variables.get(GOSUB_RESULT, "").upper()
        self.outcome.gosub_result = result
        return result

    async def _bridge(self, dest: Channel, leg: Call, talk_s: float) -> None:
        """Bridge the caller with the callee until one hangs up (the callee after ``talk_s``)."""
        pbx = self.pbx
        bridge = pbx.new_bridge_id()
        pbx.emit_bridge("BridgeCreate", bridge, 0)
        pbx.emit_bridge("BridgeEnter", bridge, 1, dest)
        pbx.emit_bridge("BridgeEnter", bridge, 2, self.channel)
        self.in_bridge = True
        leg.in_bridge = True
        callee_hangs_up = await self.sleep(talk_s)
        if callee_hangs_up:
            pbx.emit(dest.event("HangupRequest", "call,all"))
        pbx.emit_bridge("BridgeLeave", bridge, 1, self.channel)
        pbx.emit_bridge("BridgeLeave", bridge, 0, dest)
        pbx.emit_bridge("BridgeDestroy", bridge, 0)
        self.in_bridge = False
        leg.in_bridge = False

    # --- Queue() ------------------------------------------------------------------------
    def assign(self, member: QueueMember) -> None:
        """Called by the PBX's dispatcher: ring ``member`` for this caller."""
        self._assigned.put_nowait(member)

    async def _queue(self, data: str) -> tuple[str, str] | None:
        """Queue(name,,,,timeout); returns (context, exten) when the caller left with a digit."""
        args = data.split(",")
        name = args[0]
        timeout = float(args[4]) if len(args) > 4 and args[4] else None
        for var in (
            "ANSWEREDTIME",
            "ANSWEREDTIME_MS",
            "DIALEDTIME",
            "DIALEDTIME_MS",
            QUEUEWAIT,
            "QUEUEWAIT_MS",
        ):
            self.set_var(var, "")
        clock = self.pbx.clock
        started = clock.now()
        self.outcome.queue = name
        try:
            queue = self.pbx.queues.queue(name)
            entry = queue.join(self.channel, int(self.channel.variables.get(QUEUE_PRIO) or 0), started)
        except QueueError as exc:
            status = str(exc) if str(exc) in ("JOINEMPTY", "FULL") else "UNKNOWN"
            logger.warning("Unable to join queue '%s'", name)
            self.outcome.queuestatus = status
            self.set_var(QUEUESTATUS, status)
            return None
        self.queue_entry = entry
        self.emit(
            "QueueCallerJoin",
            "agent,all",
            ("Queue", name),
            ("Position", str(entry.original_position)),
            ("Count", str(len(queue.callers))),
        )
        self.emit("MusicOnHoldStart", "call,all", ("Class", "default"))
        self.pbx.dispatch()
        deadline = None if timeout is None else started + timeout
        try:
            return await self._wait_in_queue(queue, entry, deadline)
        finally:
            self.queue_entry = None

    def _queue_times(self, wait: float, dialed: float, answered: float) -> None:
        self.set_var(QUEUEWAIT, str(int(wait)))
        self.set_var("QUEUEWAIT_MS", str(int(wait) * 1000))
        self.set_var("DIALEDTIME", str(int(dialed)))
        self.set_var("DIALEDTIME_MS", str(int(dialed * 1000)))
        self.set_var("ANSWEREDTIME", str(int(answered)))
        self.set_var("ANSWEREDTIME_MS", str(int(answered * 1000)))

    def _leave(self, queue: CallQueue, entry: QueueCaller) -> None:
        position = queue.leave(self.channel.name)
        self.emit("MusicOnHoldStop", "call,all")
        self.emit(
            "QueueCallerLeave",
            "agent,all",
            ("Queue", queue.name),
            ("Position", str(position)),
            ("Count", str(len(queue.callers))),
        )
        self.set_var(QUEUEPOSITION, str(position))
        self.pbx.dispatch()

    def _abandon(self, queue: CallQueue, entry: QueueCaller, timed_out: bool) -> None:
        now = self.pbx.clock.now()
        position = queue.position_of(self.channel.name)
        holdtime = queue.record_abandon(entry, now)
        self.outcome.waited_s = now - entry.join_time
        self.outcome.abandoned = not timed_out
        if not timed_out:
            self._queue_times(now - entry.join_time, now - entry.join_time, 0)
        self.set_var("ABANDONED", "TRUE")
        self.emit(
            "QueueCallerAbandon",
            "agent,all",
            ("Queue", queue.name),
            ("Position", str(position)),
            ("OriginalPosition", str(entry.original_position)),
            ("HoldTime", str(holdtime)),
        )
        if timed_out:
            self._queue_times(now - entry.join_time, now - entry.join_time, 0)

    async def _wait_in_queue(
        self, queue: CallQueue, entry: QueueCaller, deadline: float | None
    ) -> tuple[str, str] | None:
        clock = self.pbx.clock
        exit_context = queue.config.context
        while True:
            left = None if deadline is None else deadline - clock.now()
            event = await self._next_queue_event(left, exit_context is not None)
            if isinstance(event, QueueMember):
                result = await self._ring(queue, entry, event, deadline)
                if result == "connected":
                    return None
                if isinstance(result, tuple):
                    return result
                if result in ("hangup", "timeout"):
                    event = result
                else:
                    continue
            if event == "hangup":
                self._abandon(queue, entry, timed_out=False)
                self._leave(queue, entry)
                return None
            if event == "timeout":
                self._abandon(queue, entry, timed_out=True)
                self._leave(queue, entry)
                self.outcome.queuestatus = "TIMEOUT"
                self.set_var(QUEUESTATUS, "TIMEOUT")
                return None
            if isinstance(event, str) and len(event) == 1:
                jump = self._exit_with_digit(queue, entry, event)
                if jump is not None:
                    return jump

    async def _next_queue_event(self, left: float | None, digits: bool) -> QueueMember | str:
        """The next thing that happens to a waiting caller: a member to ring, a digit, hangup, timeout."""
        if self.hung_up:
            return "hangup"
        if left is not None and left <= 0:
            return "timeout"
        waiters: list[asyncio.Future[object]] = [
            asyncio.ensure_future(self._assigned.get()),
            asyncio.ensure_future(self.hangup_event.wait()),
        ]
        if digits:
            waiters.append(asyncio.ensure_future(self.read_digit(None, accept=None)))
        timeout = None if left is None else self.pbx.clock.real_delay(left)
        done, pending = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, ChannelHungUp):
                await task
        assigned, hangup, *digit = waiters
        if assigned in done:
            member = assigned.result()
            assert isinstance(member, QueueMember)
            return member
        if hangup in done:
            return "hangup"
        if digit and digit[0] in done and digit[0].exception() is None:
            return str(digit[0].result())
        return "hangup" if self.hung_up else "timeout"

    def _exit_with_digit(self, queue: CallQueue, entry: QueueCaller, digit: str) -> tuple[str, str] | None:
        context = queue.config.context
        if context is None or not self.pbx.dialplan.has_exten(context, digit):
            return None
        now = self.pbx.clock.now()
        wait = now - entry.join_time
        self.set_var(QUEUEWAIT, str(int(wait)))
        self.set_var("QUEUEWAIT_MS", str(int(wait) * 1000))
        self.set_var("DIALEDTIME", str(int(wait)))
        self.set_var("ANSWEREDTIME", "0")
        self.channel.context, self.channel.exten, self.channel.priority = context, digit, 0
        self.emit(
            "Newexten",
            "dialplan,all",
            ("Extension", digit),
            ("Application", "Queue"),
            ("AppData", queue.name),
        )
        self.outcome.waited_s = wait
        self._leave(queue, entry)
        return context, digit

    async def _ring(
        self, queue: CallQueue, entry: QueueCaller, member: QueueMember, deadline: float | None
    ) -> str | tuple[str, str]:
        """Ring one member: 'connected', 'noanswer', 'hangup', 'timeout' or an exit (context, exten)."""
        pbx = self.pbx
        clock = pbx.clock
        agent = pbx.agents.get(member.interface)
        agent_chan = pbx.new_agent_channel(member, self.channel)
        pbx.emit(agent_chan.event("Newchannel", "call,all"))
        self.emit(
            "AgentCalled",
            "agent,all",
            ("Queue", queue.name),
            ("Interface", member.interface),
            ("MemberName", member.name),
            dest=agent_chan,
        )
        self.emit("DialBegin", "call,all", ("DialString", member.interface), dest=agent_chan)
        agent_chan.state = ChannelState.RINGING
        pbx.emit(agent_chan.event("Newstate", "call,all"))
        pbx.device_changed(member.state_interface, "RINGING")
        self.emit("DialState", "call,all", ("DialStatus", "RINGING"), dest=agent_chan)
        ring_started = clock.now()
        ring_for = queue.config.timeout
        if deadline is not None:
            ring_for = min(ring_for, max(0.0, deadline - ring_started))
        answer_delay = None if agent is None or agent.answer_delay is None else pbx.sample(agent.answer_delay)
        answers = answer_delay is not None and answer_delay < ring_for
        event = await self._next_queue_event(
            answer_delay if answers else ring_for, queue.config.context is not None
        )
        if event == "timeout" and answers:
            return await self._connect(
                queue=queue,
                entry=entry,
                member=member,
                agent_chan=agent_chan,
                agent=agent,
                ring_started=ring_started,
            )
        entry.ringing = None
        status = "NOANSWER" if event == "timeout" else "CANCEL"
        if event == "timeout":
            self.emit(
                "AgentRingNoAnswer",
                "agent,all",
                ("Queue", queue.name),
                ("Interface", member.interface),
                ("MemberName", member.name),
                ("RingTime", str(int(ring_for * 1000))),
                dest=agent_chan,
            )
            queue.ring_no_answer(entry, clock.now())
            clock.call_later(queue.config.retry, pbx.dispatch)
        self.emit("DialEnd", "call,all", ("DialStatus", status), dest=agent_chan)
        if status == "NOANSWER":
            # Asterisk also ends the outgoing leg's dial as CANCEL when it hangs it up.
            self.emit("DialEnd", "call,all", ("DialStatus", "CANCEL"), dest=agent_chan)
        pbx.emit(agent_chan.event("Hangup", "call,all", ("Cause", "0"), ("Cause-txt", "Unknown")))
        pbx.device_changed(member.state_interface, "NOT_INUSE")
        pbx.dispatch()
        if event == "timeout":
            reached_deadline = deadline is not None and clock.now() >= deadline - 1e-6
            return "timeout" if reached_deadline else "noanswer"
        if isinstance(event, str) and len(event) == 1:
            jump = self._exit_with_digit(queue, entry, event)
            return jump if jump is not None else "noanswer"
        return "hangup"

    async def _connect(
        self,
        *,
        queue: CallQueue,
        entry: QueueCaller,
        member: QueueMember,
        agent_chan: Channel,
        agent: SimAgent | None,
        ring_started: float,
    ) -> str:
        pbx = self.pbx
        clock = pbx.clock
        now = clock.now()
        agent_chan.state = ChannelState.UP
        agent_chan.connected_num, agent_chan.connected_name = (
            self.channel.caller_num,
            self.channel.caller_name,
        )
        pbx.emit(agent_chan.event("Newstate", "call,all"))
        self.emit("DialEnd", "call,all", ("DialStatus", "ANSWER"), dest=agent_chan)
        member.in_call = True
        pbx.device_changed(member.state_interface, "INUSE")
        holdtime, in_sl = queue.record_connect(entry, now)
        self._leave(queue, entry)
        self.set_var(QUEUEWAIT, str(holdtime))
        self.set_var("QUEUEWAIT_MS", str(holdtime * 1000))
        self.emit(
            "AgentConnect",
            "agent,all",
            ("Queue", queue.name),
            ("Interface", member.interface),
            ("MemberName", member.name),
            ("HoldTime", str(holdtime)),
            ("RingTime", str(int(now - ring_started))),
            dest=agent_chan,
        )
        bridge = pbx.new_bridge_id()
        pbx.emit_bridge("BridgeCreate", bridge, 0)
        pbx.emit_bridge("BridgeEnter", bridge, 1, agent_chan)
        pbx.emit_bridge("BridgeEnter", bridge, 2, self.channel)
        self.in_bridge = True
        self.outcome.answered_by = member.interface
        self.outcome.waited_s = holdtime
        talk = pbx.sample(agent.talk_time) if agent is not None else 60.0
        agent_hangs_up = await self.sleep(talk)
        ended = clock.now()
        talked = int(ended - now)
        self.outcome.talked_s = ended - now
        if agent_hangs_up:
            pbx.emit(agent_chan.event("HangupRequest", "call,all"))
        self.emit(
            "AgentComplete",
            "agent,all",
            ("Queue", queue.name),
            ("Interface", member.interface),
            ("MemberName", member.name),
            ("HoldTime", str(holdtime)),
            ("TalkTime", str(talked)),
            ("Reason", "agent" if agent_hangs_up else "caller"),
            dest=agent_chan,
        )
        pbx.emit_bridge("BridgeLeave", bridge, 1, self.channel)
        pbx.emit_bridge("BridgeLeave", bridge, 0, agent_chan)
        pbx.emit_bridge("BridgeDestroy", bridge, 0)
        self.in_bridge = False
        self._queue_times(holdtime, ended - entry.join_time, ended - now)
        pbx.emit(agent_chan.event("Hangup", "call,all", ("Cause", "16"), ("Cause-txt", "Normal Clearing")))
        queue.record_complete(member, talked, in_sl, ended)
        pbx.member_call_done(member)
        self._normal_clearing = True
        self.request_hangup(soft=True)
        return "connected"


DEVICE_STATES = {
    "NOT_INUSE": DeviceStatus.NOT_INUSE,
    "INUSE": DeviceStatus.INUSE,
    "RINGING": DeviceStatus.RINGING,
    "UNAVAILABLE": DeviceStatus.UNAVAILABLE,
}


def callee_script(callee: Callee, dest: Channel, number: str) -> CallerScript:
    """The called party as a scripted channel: the keys it presses once answered."""
    return CallerScript(
        number=dest.caller_num,
        name=dest.caller_name,
        dnid=number,
        keys=tuple(callee.keys),
        endpoint=dest.device.partition("/")[2],
        context=dest.context,
    )
