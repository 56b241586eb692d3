"""Asterisk's AMI side: an asyncio server speaking AMI 11 like the recordings.

Banner, Login (``Authentication accepted`` / ``Authentication failed``, then the session
ends), FullyBooted after login, Events on/off, Ping, CoreStatus, CoreSettings, Logoff,
CoreShowChannels, Getvar, QueueStatus, QueueSummary (list replies: EventList start, items with
ActionID last and no Privilege, ...Complete with ListItems), QueueAdd/Remove/Pause/Penalty,
QueueChangePriorityCaller, Originate (async: Success at once, then OriginateResponse),
Hangup, unknown action error.  The events an action causes follow its reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pbx_sim.agi_client import ASTERISK_VERSION
from pbx_sim.app_queue import QueueError
from pbx_sim.channels import AmiEvent, Headers
from routing.ami import AmiMessage, AmiParser, encode_message
from routing.errors import AmiProtocolError

if TYPE_CHECKING:
    from pbx_sim.pbx import SimulatedPbx

logger = logging.getLogger(__name__)

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
CORE_SETTINGS = (
    ("AMIversion", "11.0.0"),
    ("AsteriskVersion", ASTERISK_VERSION),
    ("SystemName", ""),
    ("CoreMaxCalls", "0"),
    ("CoreMaxLoadAvg", "0.000000"),
    ("CoreRunUser", ""),
    ("CoreRunGroup", ""),
    ("CoreMaxFilehandles", "0"),
    ("CoreRealTimeEnabled", "No"),
    ("CoreCDRenabled", "Yes"),
    ("CoreHTTPenabled", "No"),
    ("SoundsSearchCustomDir", "No"),
)
MAX_PENDING_BYTES = 8 * 1024 * 1024


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("yes", "true", "y", "t", "1", "on")


class AmiSession:
    """One connected AMI client."""

    def __init__(self, server: AmiServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.pbx = server.pbx
        self.reader = reader
        self.writer = writer
        self.authenticated = False
        self.events = False
        self.closing = False

    def send(self, headers: Headers) -> None:
        if self.writer.is_closing():
            return
        transport = self.writer.transport
        if transport.get_write_buffer_size() > MAX_PENDING_BYTES:
            logger.warning("AMI client too slow, dropping its connection")
            self.writer.close()
            return
        self.writer.write(encode_message(headers))

    def reply(self, message: AmiMessage, response: str, *headers: tuple[str, str]) -> None:
        out: Headers = [("Response", response)]
        if message.action_id is not None:
            out.append(("ActionID", message.action_id))
        self.send(out + list(headers))

    def error(self, message: AmiMessage, text: str) -> None:
        self.reply(message, "Error", ("Message", text))

    def success(self, message: AmiMessage, text: str) -> None:
        self.reply(message, "Success", ("Message", text))

    def send_list(
        self, message: AmiMessage, intro: str, items: list[tuple[str, Headers]], complete: str
    ) -> None:
        """A list reply: start, items (ActionID last, no Privilege), complete with ListItems."""
        self.reply(message, "Success", ("EventList", "start"), ("Message", intro))
        action_id = message.action_id
        for name, fields in items:
            tail = [("ActionID", action_id)] if action_id is not None else []
            self.send([("Event", name), *fields, *tail])
        end: Headers = [("Event", complete)]
        if action_id is not None:
            end.append(("ActionID", action_id))
        self.send([*end, ("EventList", "Complete"), ("ListItems", str(len(items)))])

    async def run(self) -> None:
        parser = AmiParser(expect_banner=False)
        self.writer.write(BANNER)
        try:
            while not self.closing:
                data = await self.reader.read(65536)
                if not data:
                    parser.feed_eof()
                    break
                for message in parser.feed(data):
                    if self.closing:
                        break
                    self.handle(message)
                await self.writer.drain()
        except (AmiProtocolError, ConnectionError) as exc:
            logger.info("AMI client dropped: %s", exc)
        finally:
            self.server.sessions.discard(self)
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()

    def handle(self, message: AmiMessage) -> None:
        action = (message.get("Action") or "").strip()
        key = action.lower()
        if not self.authenticated and key not in ("login", "logoff", "challenge"):
            self.error(message, "Permission denied")
            return
        handler = getattr(self, f"_action_{key}", None)
        if handler is None:
            self.error(
                message,
                f"Invalid/unknown command: {action}. Use Action: ListCommands to show available commands.",
            )
            return
        # Asterisk publishes an action's events through stasis: they follow its reply.
        with self.server.events_after_reply():
            try:
                handler(message)
            except QueueError as exc:
                self.error(message, str(exc))
            except ValueError as exc:
                self.error(message, str(exc))

    # --- session ---------------------------------------------------------------------
    def _action_login(self, message: AmiMessage) -> None:
        user = message.get("Username") or ""
        secret = self.server.users.get(user)
        if self.authenticated:
            self.success(message, "Already authenticated")
            return
        if secret is None or secret != (message.get("Secret") or ""):
            logger.info("AMI login refused for user %r", user)
            self.error(message, "Authentication failed")
            self.closing = True  # manager.c ends the session after a failed login
            return
        self.authenticated = True
        events = (message.get("Events") or "on").strip().lower()
        self.events = events not in ("off", "no", "false", "0")
        self.success(message, "Authentication accepted")
        if self.events:
            uptime = str(int(self.pbx.clock.now() - self.server.started_at))
            self.send(
                [
                    ("Event", "FullyBooted"),
                    ("Privilege", "system,all"),
                    ("Uptime", uptime),
                    ("LastReload", uptime),
                    ("Status", "Fully Booted"),
                ]
            )

    def _action_logoff(self, message: AmiMessage) -> None:
        self.reply(message, "Goodbye", ("Message", "Thanks for all the fish."))
        self.closing = True

    def _action_ping(self, message: AmiMessage) -> None:
        self.reply(message, "Success", ("Ping", "Pong"), ("Timestamp", f"{self.pbx.clock.now():.6f}"))

    def _action_corestatus(self, message: AmiMessage) -> None:
        started = time.localtime(self.server.started_at)
        date, clock = time.strftime("%Y-%m-%d", started), time.strftime("%H:%M:%S", started)
        self.reply(
            message,
            "Success",
            ("CoreStartupDate", date),
            ("CoreStartupTime", clock),
            ("CoreReloadDate", date),
            ("CoreReloadTime", clock),
            ("CoreCurrentCalls", str(len(self.pbx.calls))),
            ("CoreProcessedCalls", str(self.pbx.processed_calls)),
        )

    def _action_coresettings(self, message: AmiMessage) -> None:
        self.reply(message, "Success", *CORE_SETTINGS)

    def _action_events(self, message: AmiMessage) -> None:
        mask = (message.get("EventMask") or "").strip().lower()
        self.events = mask not in ("off", "no", "false", "0", "")
        self.reply(message, "Success", ("Events", "On" if self.events else "Off"))

    # --- channels --------------------------------------------------------------------------
    def _action_coreshowchannels(self, message: AmiMessage) -> None:
        now = self.pbx.clock.now()
        items = []
        for chan in self.pbx.channels():
            seconds = int(now - float(chan.uniqueid.split(".")[0]))
            duration = f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
            items.append(
                (
                    "CoreShowChannel",
                    [
                        *chan.snapshot(),
                        ("Application", ""),
                        ("ApplicationData", ""),
                        ("Duration", duration),
                        ("BridgeId", ""),
                    ],
                )
            )
        # Asterisk writes ActionID first in CoreShowChannel items.
        self.reply(message, "Success", ("EventList", "start"), ("Message", "Channels will follow"))
        tail = [("ActionID", message.action_id)] if message.action_id is not None else []
        for name, fields in items:
            self.send([("Event", name), *tail, *fields])
        self.send(
            [
                ("Event", "CoreShowChannelsComplete"),
                *tail,
                ("EventList", "Complete"),
                ("ListItems", str(len(items))),
            ]
        )

    def _action_getvar(self, message: AmiMessage) -> None:
        """A channel's variable or function (Response: Success, Variable, Value; unset: empty)."""
        variable = message.get("Variable")
        if not variable:
            self.error(message, "No variable specified")
            return
        name = message.get("Channel")
        value = ""  # the simulated PBX has no global variables
        if name:
            call = self.pbx.calls.get(name)
            if call is None:
                self.error(message, "No such channel")
                return
            value = call.lookup(variable) or ""
        self.reply(message, "Success", ("Variable", variable), ("Value", value))

    def _action_hangup(self, message: AmiMessage) -> None:
        name = message.get("Channel") or ""
        call = self.pbx.calls.get(name)
        if call is None:
            self.error(message, "No such channel")
            return
        call.request_hangup(cause=message.get("Cause") or "16", soft=True)
        self.success(message, "Channel Hungup")

    def _action_originate(self, message: AmiMessage) -> None:
        if not message.get("Channel"):
            self.error(message, "Channel not specified")
            return
        headers = {name: value for name, value in message}
        variables = list(message.get_all("Variable"))
        if _true(message.get("Async")):
            self.success(message, "Originate successfully queued")
            self.pbx.originate(headers, variables, message.action_id)
            return

        def _result(answered: bool) -> None:  # a synchronous Originate replies once answered (or not)
            if answered:
                self.success(message, "Originate successfully queued")
            else:
                self.error(message, "Originate failed")

        task = asyncio.ensure_future(
            self.pbx.originate_now(headers, variables, None, report=False, on_result=_result)
        )
        self.server.track(task)

    # --- queues ---------------------------------------------------------------------------
    def _queue_names(self, message: AmiMessage) -> list[str]:
        wanted = message.get("Queue")
        return [name for name in self.pbx.queues.queues if not wanted or name == wanted]

    def _action_queuestatus(self, message: AmiMessage) -> None:
        now = self.pbx.clock.now()
        member_filter = message.get("Member")
        items: list[tuple[str, Headers]] = []
        for name in self._queue_names(message):
            queue = self.pbx.queues.queues[name]
            items.append(("QueueParams", queue.params_headers()))
            for member in queue.members.values():
                if not member_filter or member_filter in (member.interface, member.name):
                    items.append(("QueueMember", member.status_headers(name)))
            for position, caller in enumerate(queue.callers, start=1):
                items.append(("QueueEntry", caller.entry_headers(name, position, now)))
        self.send_list(message, "Queue status will follow", items, "QueueStatusComplete")

    def _action_queuesummary(self, message: AmiMessage) -> None:
        now = self.pbx.clock.now()
        items: list[tuple[str, Headers]] = [
            ("QueueSummary", self.pbx.queues.queues[name].summary_headers(now))
            for name in self._queue_names(message)
        ]
        self.send_list(message, "Queue summary will follow", items, "QueueSummaryComplete")

    def _action_queueadd(self, message: AmiMessage) -> None:
        queue, interface = message.get("Queue"), message.get("Interface")
        if not queue or not interface:
            self.error(message, "'Queue' and 'Interface' not specified.")
            return
        try:
            penalty = int(message.get("Penalty") or 0)
        except ValueError:
            penalty = 0
        try:
            self.pbx.queue_add(
                queue,
                interface,
                name=message.get("MemberName") or "",
                state_interface=message.get("StateInterface") or "",
                penalty=penalty,
                paused=_true(message.get("Paused")),
                reason=message.get("Reason") or "",
            )
        except QueueError as exc:
            prefix = (
                "Unable to add interface to queue"
                if str(exc) == "No such queue"
                else "Unable to add interface"
            )
            self.error(message, f"{prefix}: {exc}")
            return
        self.success(message, "Added interface to queue")

    def _action_queueremove(self, message: AmiMessage) -> None:
        queue, interface = message.get("Queue"), message.get("Interface")
        if not queue or not interface:
            self.error(message, "Need 'Queue' and 'Interface' parameters.")
            return
        try:
            self.pbx.queue_remove(queue, interface)
        except QueueError as exc:
            prefix = (
                "Unable to remove interface from queue"
                if str(exc) == "No such queue"
                else "Unable to remove interface"
            )
            self.error(message, f"{prefix}: {exc}")
            return
        self.success(message, "Removed interface from queue")

    def _action_queuepause(self, message: AmiMessage) -> None:
        interface, paused = message.get("Interface"), message.get("Paused")
        if not interface or paused is None:
            self.error(message, "Need 'Interface' and 'Paused' parameters.")
            return
        try:
            self.pbx.queue_pause(interface, _true(paused), message.get("Reason") or "", message.get("Queue"))
        except QueueError:
            self.error(message, "Interface not found")
            return
        self.success(message, f"Interface {'paused' if _true(paused) else 'unpaused'} successfully")

    def _action_queuepenalty(self, message: AmiMessage) -> None:
        interface, penalty = message.get("Interface"), message.get("Penalty")
        if not interface or penalty is None:
            self.error(message, "Need 'Interface' and 'Penalty' parameters.")
            return
        try:
            value = int(penalty)
        except ValueError:
            self.error(message, "Invalid penalty")
            return
        try:
            self.pbx.queue_penalty(interface, value, message.get("Queue"))
        except QueueError:
            self.error(message, "Invalid interface, queuename or penalty")
            return
        self.success(message, "Interface penalty set successfully")

    def _action_queuechangeprioritycaller(self, message: AmiMessage) -> None:
        queue, caller, priority = message.get("Queue"), message.get("Caller"), message.get("Priority")
        if not queue:
            self.error(message, "'Queue' not specified.")
            return
        if not caller:
            self.error(message, "'Caller' not specified.")
            return
        try:
            value = int(priority or "")
        except ValueError:
            self.error(message, "'Priority' need integer.")
            return
        try:
            self.pbx.change_priority(queue, caller, value, _true(message.get("Immediate")))
        except QueueError as exc:
            self.error(message, f"Unable to change priority caller on queue: {exc}")
            return
        self.success(message, "Priority change for caller on queue")


class AmiServer:
    """Listens for AMI clients and broadcasts events to those with Events on."""

    def __init__(self, pbx: SimulatedPbx, host: str, port: int, users: Mapping[str, str]) -> None:
        self.pbx = pbx
        self.host = host
        self.requested_port = port
        self.users: dict[str, str] = dict(users)
        self.sessions: set[AmiSession] = set()
        self.port = 0
        self.started_at = 0.0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._held: list[AmiEvent] | None = None

    async def start(self) -> None:
        self.started_at = self.pbx.clock.now()
        self._server = await asyncio.start_server(self._client, self.host, self.requested_port)
        self.port = self._server.sockets[0].getsockname()[1]

    def track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = AmiSession(self, reader, writer)
        self.sessions.add(session)
        task = asyncio.current_task()
        if task is not None:
            self.track(task)
        await session.run()

    @contextlib.contextmanager
    def events_after_reply(self) -> Iterator[None]:
        """Hold the events broadcast inside the block; send them when it ends."""
        if self._held is not None:
            yield
            return
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            for event in held:
                self.broadcast(event)

    def broadcast(self, event: AmiEvent) -> None:
        if self._held is not None:
            self._held.append(event)
            return
        headers = event.to_headers()
        for session in list(self.sessions):
            if session.authenticated and session.events:
                session.send(headers)

    def drop_clients(self) -> int:
        """Close every client's connection from this side (an Asterisk restart); how many were open."""
        sessions = list(self.sessions)
        for session in sessions:
            session.writer.close()
        return len(sessions)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.writer.close()
        # Closing the writers ends every session's read loop (EOF); a synchronous Originate
        # still waiting for its call is cancelled.
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
