"""The simulated PBX facade: configuration, calls, agents, dispatch, AMI server, Originate."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pbx_sim.ami_server import AmiServer
from pbx_sim.app_queue import CallQueue, DeviceStatus, QueueConfig, QueueError, QueueMember, QueueSystem
from pbx_sim.call import DEVICE_STATES, Call, CallOutcome
from pbx_sim.channels import AmiEvent, Channel, ChannelFactory, ChannelState
from pbx_sim.clock import SimClock
from pbx_sim.dialplan import Dialplan, inbound_dialplan
from pbx_sim.scenario import Callee, CallerScript, Delay, SimAgent, as_delay

logger = logging.getLogger(__name__)

ORIGINATE_REASONS = {"answer": 4, "noanswer": 3, "busy": 5, "nosuch": 0}


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulated PBX needs; ``ami_port=0`` picks a free port."""

    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    ami_host: str = "127.0.0.1"
    ami_port: int = 0
    ami_users: Mapping[str, str] = field(default_factory=lambda: {"guichet": "secret"})
    speed: float = 1.0
    seed: int = 1
    queues: Sequence[QueueConfig] = ()
    dialplan: Dialplan | None = None  # default: inbound_dialplan(agi://agi_host:agi_port)
    sounds: Mapping[str, float] | None = None  # None: every sound exists and lasts default_sound_s
    default_sound_s: float = 1.5
    originate_outcomes: Mapping[str, str] = field(
        default_factory=dict
    )  # "Tech/data" -> answer|noanswer|busy|nosuch
    callback_talk_time: float | Delay = 30.0  # an originated call whose Context/Exten is not in the dialplan
    # Dial(): the dialled number -> who answers (numbers not listed: Callee(), answering after 3 s)
    callees: Mapping[str, Callee] = field(default_factory=dict)
    epoch: float | None = None
    agi_thread_id: int = 140342399125184  # agi_threadid of every FastAGI session (as recorded)

    def __post_init__(self) -> None:
        for target, outcome in self.originate_outcomes.items():
            if outcome not in ORIGINATE_REASONS:
                raise ValueError(
                    f"originate outcome for {target}: {outcome!r} not in {sorted(ORIGINATE_REASONS)}"
                )


@dataclass
class CallHandle:
    """A placed call: ``await handle.finished`` gives its :class:`CallOutcome`."""

    script: CallerScript
    channel: Channel
    finished: asyncio.Future[CallOutcome]


class SimulatedPbx:
    """Asterisk 22 as seen by the engine: FastAGI client, AMI server, app_queue semantics."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.clock = SimClock(config.speed, config.epoch)
        self.rng = random.Random(config.seed)
        self.dialplan = config.dialplan or inbound_dialplan(f"agi://{config.agi_host}:{config.agi_port}")
        self.astdb: dict[tuple[str, str], str] = {}
        self.agents: dict[str, SimAgent] = {}
        self.calls: dict[str, Call] = {}
        self.queues: QueueSystem
        self._factory: ChannelFactory
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._server: AmiServer | None = None
        self._started = False
        self.processed_calls = 0  # CoreStatus CoreProcessedCalls: inbound calls placed
        self._queue_devices: dict[str, str] = {}  # Queue:<q>_avail / Queue:<q>_pause_<iface> states

    # --- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            raise RuntimeError("simulated PBX already started")
        self.clock.start()
        self._factory = ChannelFactory(self.clock)
        self.queues = QueueSystem(self.config.queues, self.clock.now())
        for queue in self.queues.queues.values():  # states at load: no event
            self._queue_devices[f"Queue:{queue.name}_avail"] = queue.avail_state()
            for member in queue.members.values():
                self._queue_devices[_pause_device(queue, member)] = _pause_state(member)
        self._server = AmiServer(self, self.config.ami_host, self.config.ami_port, self.config.ami_users)
        await self._server.start()
        self._started = True

    @property
    def ami_port(self) -> int:
        if self._server is None:
            raise RuntimeError("start() the simulated PBX first")
        return self._server.port

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.stop()
        self._started = False

    async def __aenter__(self) -> SimulatedPbx:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _later(self, seconds: float, callback: Any) -> None:
        self._timers = [
            t for t in self._timers if not t.cancelled() and t.when() > asyncio.get_running_loop().time()
        ]
        self._timers.append(self.clock.call_later(seconds, callback))

    # --- events ----------------------------------------------------------------------
    def emit(self, event: AmiEvent) -> None:
        if self._server is not None:
            self._server.broadcast(event)

    def emit_member(self, name: str, queue: CallQueue, member: QueueMember) -> None:
        self.emit(AmiEvent(name, "agent,all", tuple(member.event_headers(queue.name))))

    def emit_bridge(self, name: str, bridge: str, count: int, channel: Channel | None = None) -> None:
        headers = [
            ("BridgeUniqueid", bridge),
            ("BridgeType", "basic"),
            ("BridgeTechnology", "simple_bridge"),
            ("BridgeCreator", "<unknown>"),
            ("BridgeName", "<unknown>"),
            ("BridgeNumChannels", str(count)),
            ("BridgeVideoSourceMode", "none"),
        ]
        if channel is not None:
            headers += channel.snapshot()
        self.emit(AmiEvent(name, "call,all", tuple(headers)))

    def new_bridge_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def sample(self, value: float | Delay) -> float:
        return as_delay(value).sample(self.rng)

    def sound_duration(self, name: str) -> float | None:
        if self.config.sounds is None:
            return self.config.default_sound_s
        return self.config.sounds.get(name)

    # --- devices and members -----------------------------------------------------------
    def device_changed(self, device: str, state: str) -> None:
        """A device changed state: DeviceStateChange, QueueMemberStatus for its members, then
        ``Queue:<queue>_avail`` where it changed."""
        status = DEVICE_STATES[state]
        if self.queues.device_status(device) == status and device in self.queues.devices:
            return
        self.emit(AmiEvent("DeviceStateChange", "call,all", (("Device", device), ("State", state))))
        for queue, member in self.queues.set_device_state(device, status):
            self.emit_member("QueueMemberStatus", queue, member)
            self.update_avail(queue)

    def queue_device(self, device: str, state: str) -> None:
        """app_queue's pseudo-devices: DeviceStateChange only when the state changes."""
        if self._queue_devices.get(device) == state:
            return
        self._queue_devices[device] = state
        self.emit(AmiEvent("DeviceStateChange", "call,all", (("Device", device), ("State", state))))

    def update_avail(self, queue: CallQueue) -> None:
        self.queue_device(f"Queue:{queue.name}_avail", queue.avail_state())

    def add_agent(self, agent: SimAgent) -> None:
        """Register the agent's softphone (device NOT_INUSE) and add its static memberships."""
        if agent.interface in self.agents:
            raise ValueError(f"agent {agent.interface} already added")
        self.agents[agent.interface] = agent
        now = self.clock.now()
        for queue_name in agent.queues:
            self.queues.add_member(
                queue_name,
                agent.interface,
                now,
                name=agent.name,
                penalty=agent.penalty,
                paused=agent.paused,
                dynamic=False,
                wrapuptime=agent.wrapup,
            )
        self.device_changed(agent.interface, "NOT_INUSE")
        self.dispatch()

    def new_agent_channel(self, member: QueueMember, caller: Channel) -> Channel:
        tech, _, resource = member.interface.partition("/")
        if tech == "Local":
            exten, _, context = resource.partition("@")
            chan, _ = self._factory.local_pair(exten, context or "default", caller.linkedid)
        else:
            chan = self._factory.pjsip(resource, "agents", caller.exten, caller.linkedid)
        chan.caller_num = caller.exten
        chan.connected_num, chan.connected_name = caller.caller_num, caller.caller_name
        return chan

    def new_outbound_channel(self, endpoint: str, number: str, caller: Channel) -> Channel:
        """The called party's channel of a Dial() to ``number`` through ``endpoint``."""
        dest = self._factory.pjsip(endpoint, "from-trunk", number, caller.linkedid)
        dest.caller_num = caller.caller_num
        dest.connected_num, dest.connected_name = caller.caller_num, caller.caller_name
        return dest

    def member_call_done(self, member: QueueMember) -> None:
        self.device_changed(member.state_interface, "NOT_INUSE")
        if member.wrapuptime:
            self._later(member.wrapuptime, self.dispatch)
        self.dispatch()

    def dispatch(self) -> None:
        """Give free members to waiting callers, queue by queue, in service order."""
        if not self._started:
            return
        now = self.clock.now()
        busy = self.queues.ringing_interfaces()
        for queue in self.queues.queues.values():
            for caller, member in queue.assignments(now, busy):
                call = self.calls.get(caller.channel.name)
                if call is None:
                    continue
                queue.mark_rung(caller, member)
                busy.add(member.interface)
                call.assign(member)

    # --- calls ----------------------------------------------------------------------------
    def place_call(self, script: CallerScript) -> CallHandle:
        """Start an inbound call at once; the handle's ``finished`` resolves with its outcome."""
        if not self._started:
            raise RuntimeError("start() the simulated PBX before placing calls")
        chan = self._factory.pjsip(script.endpoint, script.context, script.dnid)
        chan.state = ChannelState.RING
        chan.caller_num, chan.caller_name = script.number, script.name
        call = Call(self, script, chan, self.config.agi_thread_id)
        self.processed_calls += 1
        self.calls[chan.name] = call
        task = self._spawn(call.run())
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[CallOutcome] = loop.create_future()

        def _done(done: asyncio.Task[CallOutcome]) -> None:
            if finished.done():
                return
            if done.cancelled():
                finished.cancel()
            elif done.exception() is not None:
                finished.set_exception(done.exception())  # type: ignore[arg-type]
            else:
                finished.set_result(done.result())

        task.add_done_callback(_done)
        return CallHandle(script, chan, finished)

    def call_ended(self, call: Call) -> None:
        self.calls.pop(call.channel.name, None)

    def call_by_uniqueid(self, uniqueid: str) -> Call | None:
        """The live call whose channel has ``uniqueid`` (MASTER_CHANNEL's master)."""
        return next((c for c in self.calls.values() if c.channel.uniqueid == uniqueid), None)

    # --- AMI actions (queues) -----------------------------------------------------------
    def queue_add(self, queue: str, interface: str, **kwargs: Any) -> None:
        """QueueAdd: the member's pause device, QueueMemberAdded, then the queue's avail device."""
        member = self.queues.add_member(queue, interface, self.clock.now(), **kwargs)
        call_queue = self.queues.queue(queue)
        self.queue_device(_pause_device(call_queue, member), _pause_state(member))
        self.emit_member("QueueMemberAdded", call_queue, member)
        self.update_avail(call_queue)
        self.dispatch()

    def queue_remove(self, queue: str, interface: str) -> None:
        member = self.queues.queue(queue).members.get(interface)
        if member is not None and not member.dynamic:
            raise QueueError("Not a dynamic member")
        removed = self.queues.remove_member(queue, interface)
        self.emit_member("QueueMemberRemoved", self.queues.queue(queue), removed)
        self.update_avail(self.queues.queue(queue))

    def queue_pause(self, interface: str, paused: bool, reason: str, queue: str | None) -> None:
        """QueuePause: per queue, the pause device, the avail device, then QueueMemberPause."""
        for q, member in self.queues.set_paused(interface, paused, reason, self.clock.now(), queue):
            self.queue_device(_pause_device(q, member), _pause_state(member))
            self.update_avail(q)
            self.emit_member("QueueMemberPause", q, member)
        self.dispatch()

    def queue_penalty(self, interface: str, penalty: int, queue: str | None) -> None:
        for q, member in self.queues.set_penalty(interface, penalty, queue):
            self.emit_member("QueueMemberPenalty", q, member)
        self.dispatch()

    def change_priority(self, queue: str, caller: str, priority: int, immediate: bool) -> None:
        self.queues.queue(queue).change_priority(caller, priority, immediate)
        self.dispatch()

    def channels(self) -> list[Channel]:
        return [call.channel for call in self.calls.values()]

    # --- Originate ----------------------------------------------------------------------
    def originate(self, headers: Mapping[str, str], variables: Sequence[str], action_id: str | None) -> None:
        """Async Originate: the outcome comes later as OriginateResponse."""
        _ = self._spawn(self.originate_now(headers, variables, action_id, report=True))

    async def originate_now(
        self,
        headers: Mapping[str, str],
        variables: Sequence[str],
        action_id: str | None,
        *,
        report: bool,
        on_result: Callable[[bool], None] | None = None,
    ) -> bool:
        """Place the call; True when answered.  ``report``: emit OriginateResponse (Async only:
        a synchronous Originate's reply is its only outcome, as recorded); ``on_result`` is
        called as soon as the outcome is known (before the answered call's talk time).

        Once answered, the channel runs ``Context,Exten,Priority`` of the dialplan when that
        extension exists (as Asterisk does: e.g. the callback context dialling the citizen, its
        Variable headers set); otherwise it talks ``callback_talk_time`` and hangs up.  An agent's
        phone (a :class:`SimAgent` interface) rings, is in use during the call, then free again."""
        target = headers.get("Channel", "")
        tech, _, resource = target.partition("/")
        context = headers.get("Context", "")
        exten = headers.get("Exten", "")
        priority = int(headers.get("Priority") or "1")
        timeout = float(headers.get("Timeout", "30000")) / 1000
        cid_name, cid_num = _split_callerid(headers.get("CallerID", ""))
        outcome = self.config.originate_outcomes.get(target, "answer")
        agent = self.agents.get(target)
        if agent is not None and agent.answer_delay is None:
            outcome = "noanswer"
        if tech == "Local":
            lexten, _, lcontext = resource.partition("@")
            chan, two = self._factory.local_pair(lexten, lcontext or "default")
            created = [chan, two]
        else:
            chan = self._factory.pjsip(resource, "default", "s")
            created = [chan]
        for c in created:
            self.emit(c.event("Newchannel", "call,all"))
        if agent is not None:
            self.device_changed(agent.interface, "RINGING")
        for c in created if outcome != "nosuch" else ():
            if cid_num or cid_name:
                c.caller_num, c.caller_name = cid_num, cid_name
                self.emit(
                    c.event(
                        "NewCallerid",
                        "call,all",
                        ("CID-CallingPres", "0 (Presentation Allowed, Not Screened)"),
                    )
                )
        for var in variables:
            name, _, value = var.partition("=")
            for c in created:
                c.variables[name] = value
                self.emit(c.event("VarSet", "dialplan,all", ("Variable", name), ("Value", value)))
        if outcome == "answer":
            delay = (
                self.sample(agent.answer_delay)
                if agent is not None and agent.answer_delay is not None
                else 1.0
            )
            await self.clock.sleep(min(delay, timeout))
        elif outcome == "noanswer":
            await self.clock.sleep(timeout)
        success = outcome == "answer"
        response: list[tuple[str, str]] = []
        if action_id is not None:
            response.append(("ActionID", action_id))
        response += [
            ("Response", "Success" if success else "Failure"),
            ("Channel", chan.name if success else target),
            ("Context", context),
            ("Exten", exten),
            ("Reason", str(ORIGINATE_REASONS[outcome])),
            ("Uniqueid", chan.uniqueid if success else "<unknown>"),
            ("CallerIDNum", cid_num or "<unknown>"),
            ("CallerIDName", cid_name or "<unknown>"),
        ]
        if success:
            for c in created:
                c.state = ChannelState.UP
                self.emit(c.event("Newstate", "call,all"))
            if agent is not None:
                self.device_changed(agent.interface, "INUSE")
        if report:
            self.emit(AmiEvent("OriginateResponse", "call,all", tuple(response)))
        if on_result is not None:
            on_result(success)
        if success and self.dialplan.has_exten(context, exten):
            script = CallerScript(
                number=cid_num, name=cid_name, dnid=exten, endpoint=resource, context=context
            )
            call = Call(self, script, chan, self.config.agi_thread_id, device_end=None)
            self.calls[chan.name] = call
            await call.run_at(context, exten, priority)
        elif success:
            await self.clock.sleep(self.sample(self.config.callback_talk_time))
        for c in reversed(created):
            if c.hung_up:
                continue
            cause = (
                ("16", "Normal Clearing")
                if success
                else ("17", "User busy")
                if outcome == "busy"
                else ("0", "Unknown")
            )
            self.emit(c.event("Hangup", "call,all", ("Cause", cause[0]), ("Cause-txt", cause[1])))
            c.hung_up = True
        if agent is not None:
            self.device_changed(agent.interface, "NOT_INUSE")
            self.dispatch()
        return success

    # --- view -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Queues, callers and members now (for the demo's console view)."""
        now = self.clock.now()
        return {
            "time": now,
            "queues": {
                name: {
                    "callers": [
                        {
                            "channel": c.channel.name,
                            "caller": c.channel.caller_num,
                            "priority": c.priority,
                            "wait_s": round(now - c.join_time, 1),
                            "ringing": c.ringing,
                        }
                        for c in q.callers
                    ],
                    "members": [
                        {
                            "interface": m.interface,
                            "name": m.name,
                            "status": DeviceStatus(m.status).name,
                            "paused": m.paused,
                            "in_call": m.in_call,
                            "calls_taken": m.calls_taken,
                        }
                        for m in q.members.values()
                    ],
                    "completed": q.completed,
                    "abandoned": q.abandoned,
                }
                for name, q in self.queues.queues.items()
            },
            "calls": len(self.calls),
        }


def _pause_device(queue: CallQueue, member: QueueMember) -> str:
    return f"Queue:{queue.name}_pause_{member.interface}"


def _pause_state(member: QueueMember) -> str:
    return "INUSE" if member.paused else "NOT_INUSE"


def _split_callerid(value: str) -> tuple[str, str]:
    """``"Name" <num>`` -> (name, num)."""
    value = value.strip()
    if "<" in value and value.endswith(">"):
        name, _, num = value[:-1].partition("<")
        return name.strip().strip('"'), num.strip()
    return "", value
