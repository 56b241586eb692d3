"""The engine's resources in one object: the FastAGI server, the AMI client, the live model and store.

:class:`Engine` owns the server, the client and the live state store, starts them in order
and always stops them, whatever failed in between.  Every AMI event goes to the live model
(:class:`routing.live.LiveModel`), which is rebuilt from ``QueueStatus`` + ``CoreShowChannels``
after every (re)connection, before that connection's events are applied; the IVR variables of
callers first seen in that snapshot are read with ``Getvar``.  The model is mirrored into the store
(:class:`routing.mirror.StoreMirror`), which every node's web server reads.

Several engine processes may share one Redis (``[state] backend = "redis"``): all serve FastAGI,
exactly one (the holder of the :data:`AMI_LEASE` lease) consumes AMI, mirrors the model and runs the
tickers (its *duties*); when it dies, its lease expires and another node takes over, resyncing from
AMI.  With the default in-memory store the single process always holds the lease.  The AGI routes come from
:func:`ivr.routes.build_routes`, with the menu engine of :func:`default_menu_engine`
(the menus of ``dialplans/``, the hours and urgency rules of ``dialplans/settings/``)
unless given.  Invalid menus or settings raise :class:`ConfigError` before anything
listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

import yaml
from aiohttp import web

from desk.app import bound_port, build_app_from_settings, start_http
from guichet.config import ConfigError, Secret, Settings
from guichet.names import (
    GUICHET_CITIZEN_ID,
    GUICHET_CONTACT_ID,
    GUICHET_QUEUE,
    GUICHET_REASON,
    GUICHET_URGENCY,
    H_CHANNEL,
    H_VALUE,
    H_VARIABLE,
    QUEUE_PRIO,
)
from ivr.agi_server import FastAgiServer, RouteTable
from ivr.callers import CitizenDirectory, InMemoryDirectory
from ivr.hours import MINUTES_PER_DAY, PARIS, HoursConfigError, Schedule, TimeRange, parse_hours
from ivr.menu_engine import CallbackSink, InMemoryCallbackSink, MenuEngine
from ivr.menus import MenuValidationError, load_menus
from ivr.prompts import OnDemandPrompts, PromptBuildError, find_tools
from ivr.queue_exits import QueueExits, rules_from_settings
from ivr.routes import IVR_ROUTE, build_routes
from ivr.services import SERVICE_QUEUES
from ivr.speech import Recogniser, SpeechModelError, VoskRecogniser
from ivr.urgency import UrgencyConfigError, parse_rules
from routing.agents import CurrentAmi
from routing.aging import AgingPolicy, AgingTicker
from routing.ami import AmiMessage
from routing.ami_client import AmiClient, EventCallback
from routing.callbacks import CallbackKeeper, SharedCallbacks, aged_priority, callback_duty
from routing.errors import AmiActionError, AmiConnectionLost, AmiError, AmiTimeout
from routing.live import Change, LiveModel
from routing.live import WaitingCaller as LiveCaller
from routing.mirror import StoreMirror
from routing.state import MemoryStateStore, StateStore
from routing.state_redis import RedisStateStore

logger = logging.getLogger(__name__)

MENUS_DIR: Final = Path(__file__).resolve().parents[1] / "dialplans"
HOURS_FILE: Final = "settings/hours.yaml"
# The schedule of hours.yaml within which queued callbacks are dialled (the platform's opening hours).
CALLBACK_SCHEDULE: Final = "plateforme"
CALLBACK_TICK_S: Final = 1.0
URGENCY_FILE: Final = "settings/urgency.yaml"
# What a resync reads with Getvar for each caller first seen in a snapshot (6 actions at most); QUEUE_PRIO
# is the priority the caller joined with, the base of aging (QueueStatus gives the aged one).
RESYNC_VARIABLES: Final = (
    GUICHET_QUEUE,
    GUICHET_URGENCY,
    GUICHET_CITIZEN_ID,
    GUICHET_CONTACT_ID,
    GUICHET_REASON,
    QUEUE_PRIO,
)
AMI_LEASE: Final = "ami"  # the lease whose holder consumes AMI and runs the tickers
MIRROR_REFRESH_S: Final = 1.0  # the store is refreshed at least this often (a wrap-up ends without an event)
LEAD_RETRY_S: Final = 5.0  # a leader that could not log in to AMI gives the lease up this long

Duty = Callable[[AmiClient, asyncio.Event], Awaitable[None]]


def paris_now() -> datetime:
    """The real clock, in Europe/Paris (the engine's ``now`` in production)."""
    return datetime.now(ZoneInfo(PARIS))


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML syntax error: {exc}") from exc


def always_open(schedules: Mapping[str, Schedule]) -> dict[str, Schedule]:
    """The same schedules open day and night, every day (the demo runs at any hour)."""
    all_day = (TimeRange(0, MINUTES_PER_DAY),)
    return {
        name: dataclasses.replace(
            schedule, weekly=(all_day,) * 7, holidays_closed=False, closures=(), openings=()
        )
        for name, schedule in schedules.items()
    }


def menus_dir(settings: Settings) -> Path:
    """The configured menu folder, or the one shipped with Guichet."""
    return Path(settings.ivr.menus_dir) if settings.ivr.menus_dir else MENUS_DIR


def sounds_dir(settings: Settings) -> Path | None:
    """Where Asterisk plays Guichet's prompts from, when the engine may write there."""
    return Path(settings.ivr.sounds_dir) if settings.ivr.sounds_dir else None


def speech_recogniser(settings: Settings) -> Recogniser | None:
    """The configured speech model, loaded now (a wrong path stops the start-up); None: keys only."""
    ivr = settings.ivr
    if not ivr.speech_model:
        return None
    if not Path(ivr.record_dir).is_dir():
        raise ConfigError(f"{settings.source}: [ivr] record_dir: {ivr.record_dir} is not a directory")
    try:
        return VoskRecogniser(ivr.speech_model, threshold=ivr.speech_threshold)
    except SpeechModelError as exc:
        raise ConfigError(f"{settings.source}: [ivr] speech_model = {ivr.speech_model}: {exc}") from exc


def load_schedules(directory: Path) -> dict[str, Schedule]:
    """The opening hours of ``directory``'s ``settings/hours.yaml`` (HoursConfigError when invalid)."""
    return parse_hours(_read_yaml(directory / HOURS_FILE), path=str(directory / HOURS_FILE))


def callback_schedule(schedules: Mapping[str, Schedule], source: Path) -> Schedule:
    """The schedule within which queued callbacks are dialled; ConfigError when it is missing."""
    if CALLBACK_SCHEDULE not in schedules:
        raise ConfigError(
            f"{source / HOURS_FILE}: no schedule {CALLBACK_SCHEDULE!r} (queued callbacks are dialled in it)"
        )
    return schedules[CALLBACK_SCHEDULE]


def default_menu_engine(
    directory: Path = MENUS_DIR,
    *,
    citizens: CitizenDirectory | None = None,
    callbacks: CallbackSink | None = None,
    open_all_day: bool = False,
    now: Callable[[], datetime] = paris_now,
    sounds_dir: Path | None = None,
    recogniser: Recogniser | None = None,
    record_dir: Path = Path("/tmp"),
) -> MenuEngine:
    """The menus of ``directory``, its ``settings/hours.yaml`` and ``settings/urgency.yaml``.

    Raises :class:`ConfigError` with every issue (file, line, key) when anything is invalid.
    Until ``citizens/`` provides them, the directory and the callback sink live in memory.
    """
    try:
        schedules = load_schedules(directory)
        rules = parse_rules(_read_yaml(directory / URGENCY_FILE), key=str(directory / URGENCY_FILE))
        menus = load_menus(directory, SERVICE_QUEUES, known_schedules=schedules.keys())
    except (HoursConfigError, UrgencyConfigError) as exc:
        raise ConfigError(str(exc)) from exc
    except MenuValidationError as exc:
        raise ConfigError(f"invalid voice menus in {directory}:\n{exc}") from exc
    return MenuEngine(
        menus,
        schedules=always_open(schedules) if open_all_day else schedules,
        rules=rules,
        directory=citizens if citizens is not None else InMemoryDirectory(),
        callbacks=callbacks if callbacks is not None else InMemoryCallbackSink(),
        now=now,
        speak=_on_demand_prompts(sounds_dir),
        recogniser=recogniser,
        record_dir=record_dir,
    )


def default_menu_engine_of(settings: Settings) -> MenuEngine:
    """The menu engine the settings describe (menus, sounds folder, speech)."""
    return default_menu_engine(
        menus_dir(settings),
        sounds_dir=sounds_dir(settings),
        recogniser=speech_recogniser(settings),
        record_dir=Path(settings.ivr.record_dir),
    )


def _on_demand_prompts(sounds_dir: Path | None) -> Callable[[str], Awaitable[str]] | None:
    """With a sounds folder, texts known only during a call are synthesised into it."""
    if sounds_dir is None:
        return None
    try:
        return OnDemandPrompts(sounds_dir, find_tools()).speak
    except PromptBuildError as exc:
        raise ConfigError(f"[ivr] sounds_dir = {sounds_dir}: {exc}") from exc


def set_event_loop_policy(settings: Settings) -> None:
    """Use uvloop when configured (the bench table shows why) and installed."""
    if settings.loop != "uvloop":
        return
    try:
        import uvloop  # noqa: PLC0415 - optional at run time
    except ImportError:
        logger.warning("loop = uvloop but uvloop is not installed: using asyncio's default loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def make_store(settings: Settings) -> StateStore:
    """The configured live state store (Redis: connected lazily, checked by the first command)."""
    if settings.state.backend == "redis":
        return RedisStateStore.from_url(settings.state.redis_url, prefix=settings.state.prefix)
    return MemoryStateStore()


def node_name(settings: Settings) -> str:
    """This process's name in the AMI lease: ``[state] node``, or ``<hostname>:<pid>``."""
    return settings.state.node or f"{socket.gethostname()}:{os.getpid()}"


class Engine:
    """FastAGI server + AMI client + live state store, started together and always stopped together.

    ``routes``: the AGI routes (default: the voice menus of ``menus``, else of the settings, and the
    queue exits).  ``clock`` gives the time stamped on the live model's changes (epoch seconds).
    ``store``: the live state store to use (default: the configured one, owned and closed by the engine).
    """

    def __init__(
        self,
        settings: Settings,
        secret: Secret,
        routes: RouteTable | None = None,
        *,
        menus: MenuEngine | None = None,
        clock: Callable[[], float] = time.time,
        store: StateStore | None = None,
    ) -> None:
        self.settings = settings
        self.live = LiveModel({name: policy.wrapup_s for name, policy in settings.queues.items()})
        self.store = store if store is not None else make_store(settings)
        self._owns_store = store is None
        self.node = node_name(settings)
        self.mirror = StoreMirror(self.live, self.store, priority_reason=self._priority_reason)
        self._clock = clock
        self.aging_policy = AgingPolicy.from_settings(settings)
        self.callbacks = SharedCallbacks(self.store, clock=clock)  # queued callbacks, as every node sees them
        if routes is None:
            menus = menus or default_menu_engine_of(settings)
            routes = build_routes(menus, QueueExits(self.callbacks, rules_from_settings(settings)))
        if menus is not None:
            schedules = menus.schedules
        else:
            try:
                schedules = load_schedules(menus_dir(settings))
            except HoursConfigError as exc:
                raise ConfigError(str(exc)) from exc
        self.keeper = CallbackKeeper(
            callback_schedule(schedules, menus_dir(settings)),
            retry_s=settings.routing.callback_retry_s,
            attempts=settings.routing.callback_attempts,
            clock=clock,
            back_office=menus.callbacks if menus is not None else None,
            priority_at=aged_priority(self.aging_policy),
        )
        self._aging: AgingTicker | None = None
        self.agi = FastAgiServer(
            routes,
            host=settings.agi.host,
            port=settings.agi.port,
            env_timeout=settings.agi.env_timeout_s,
            command_timeout=settings.agi.command_timeout_s,
            session_timeout=settings.agi.session_timeout_s,
        )
        self._secret = secret
        self._subscriptions: list[tuple[str, EventCallback]] = []
        self._duties: list[tuple[str, Duty]] = []
        self.ami: AmiClient | None = None  # the events client, on the node holding the AMI lease only
        self.actions_ami: AmiClient | None = None  # every node's client for actions (Events: off)
        self._ami_port = settings.ami.port
        self._web: web.AppRunner | None = None
        self._changes: list[Change] = []
        self._dirty = asyncio.Event()
        self._leading: list[asyncio.Task[None]] = []  # the mirror and the duties, while leading
        self._stop_duties = asyncio.Event()
        self._lead_task: asyncio.Task[None] | None = None
        self.add_duty("aging", self._run_aging)
        self.add_duty(
            "queued-callbacks",
            callback_duty(self.keeper, self.live, store=self.store, interval_s=CALLBACK_TICK_S, clock=clock),
        )

    def subscribe(self, event: str, callback: EventCallback) -> None:
        """Deliver AMI events named ``event`` (or ``*``) to ``callback``, from the first login on."""
        self._subscriptions.append((event, callback))
        if self.ami is not None:
            self.ami.subscribe(event, callback)

    def add_duty(self, name: str, duty: Duty) -> None:
        """Run ``duty(ami, stop)`` while this node consumes AMI (a ticker); it ends once ``stop`` is set."""
        if any(known == name for known, _ in self._duties):
            raise ValueError(f"duty {name!r} is already registered")
        self._duties.append((name, duty))

    async def start(self) -> None:
        """Listen for FastAGI first (calls must never find it closed), then take the AMI lease or stand by.

        Fails fast when this node gets the lease but cannot log in (a bad secret, Asterisk unreachable) or
        when the store cannot be reached; a node whose lease is held by another returns at once (standby).
        """
        await self.start_agi()
        await self._start_actions()
        await self._start_web()
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lead_task = asyncio.create_task(self._lead(first), name="ami-lease")
        try:
            await first
        except BaseException:
            await self._stop_lead_task()
            raise

    async def start_agi(self) -> None:
        await self.agi.start()

    async def _start_actions(self) -> None:
        """Every node's own AMI client for actions (agents' login and pause), without events."""
        ami = self.settings.ami
        client = AmiClient(ami.host, ami.port, ami.username, self._secret.value, events="off")
        await client.start()
        self.actions_ami = client

    async def _start_web(self) -> None:
        """The web server of every node: it reads the shared store and acts through this node's AMI."""
        app = build_app_from_settings(
            self.settings,
            store=self.store,
            ami=CurrentAmi(lambda: self.actions_ami),
            callbacks=self.callbacks,
            clock=self._clock,
        )
        self._web = await start_http(app, self.settings.http.host, self.settings.http.port)

    async def _lead(self, first: asyncio.Future[None]) -> None:
        """Take the AMI lease whenever it is free; consume AMI and run the duties while holding it."""
        ttl = self.settings.state.lease_ttl_s
        while True:
            try:
                holder = await self.store.leader(AMI_LEASE)
            except Exception as exc:
                if not first.done():
                    first.set_exception(exc)
                    return
                logger.warning("live state store unreachable (%r): retrying", exc)
                await asyncio.sleep(ttl / 3)
                continue
            if holder not in (None, self.node):
                logger.info(
                    "standby: node %s consumes AMI; node %s serves FastAGI and the web", holder, self.node
                )
                if not first.done():
                    first.set_result(None)
            async with self.store.leadership(AMI_LEASE, self.node, ttl) as lead:
                try:
                    await self.connect_ami(self.settings.ami.port)
                except (AmiError, OSError) as exc:
                    if not first.done():
                        first.set_exception(exc)
                        return
                    logger.error("node %s holds the AMI lease but cannot log in: %s", self.node, exc)
                    await self._stop_leading()
                    await asyncio.sleep(LEAD_RETRY_S)
                    continue
                logger.info("node %s consumes AMI", self.node)
                if not first.done():
                    first.set_result(None)
                await lead.lost.wait()
                logger.warning("node %s lost the AMI lease: it stops consuming AMI", self.node)
                await self._stop_leading()

    async def connect_ami(self, port: int) -> None:
        """Log in to the AMI on ``port``; a bad secret raises at once (fail fast).

        From then on, every event updates :attr:`live`, resynced after every (re)connection and mirrored
        into the store, and the duties run.
        """
        ami = AmiClient(self.settings.ami.host, port, self.settings.ami.username, self._secret.value)
        ami.subscribe("*", self._apply_event)
        ami.on_connect(self._resync)
        for event, callback in self._subscriptions:
            ami.subscribe(event, callback)
        await self.mirror.adopt()
        await ami.start()
        self.ami = ami
        self._ami_port = port
        self._stop_duties = asyncio.Event()
        self._leading = [asyncio.create_task(self._mirror_loop(), name="mirror")]
        self._leading += [
            asyncio.create_task(self._run_duty(name, duty, ami), name=name) for name, duty in self._duties
        ]

    async def _run_aging(self, ami: AmiClient, stop: asyncio.Event) -> None:
        self._aging = AgingTicker(ami, self.live, self.aging_policy, self._clock)
        await self._aging.run(self.settings.routing.aging_interval_s, stop, on_changes=self._note_changes)

    def _priority_reason(self, caller: LiveCaller) -> str:
        score = self._aging.scores().get(caller.uniqueid) if self._aging is not None else None
        return score.explanation if score is not None else ""

    def _note_changes(self, changes: list[Change]) -> None:
        self._changes += changes
        self._dirty.set()

    async def _run_duty(self, name: str, duty: Duty, ami: AmiClient) -> None:
        try:
            await duty(ami, self._stop_duties)
        except Exception:
            logger.exception("duty %s failed; it stays stopped until this node leads again", name)

    async def _mirror_loop(self) -> None:
        """Mirror the model into the store after every batch of changes, and at least every second."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), MIRROR_REFRESH_S)
            self._dirty.clear()
            changes, self._changes = self._changes, []
            try:
                await self.mirror.sync(self._clock(), changes)
            except Exception as exc:  # the store is down: the next round writes what differs
                logger.warning("live state store not updated (%r): retrying", exc)

    async def _stop_leading(self) -> None:
        """Stop the duties (asked first, then cancelled), the mirror and the AMI client."""
        self._stop_duties.set()
        tasks, self._leading = self._leading, []
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        ami, self.ami = self.ami, None
        if ami is not None:
            await ami.close()

    async def _stop_lead_task(self) -> None:
        task, self._lead_task = self._lead_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _apply_event(self, event: AmiMessage) -> None:
        changes = self.live.apply(event, self._clock())
        if changes:
            self._note_changes(changes)

    async def _resync(self, ami: AmiClient) -> None:
        """Rebuild the live model from a snapshot, then read the IVR variables it cannot carry.

        A lost connection propagates: the client reconnects and resyncs again (at start, the engine
        fails fast as for any connection failure).  Any other failure (a refused or timed-out list,
        a malformed item) is logged and the model goes on from the events until the next resync.
        """
        try:
            status = await ami.send_action("QueueStatus")
            channels = await ami.send_action("CoreShowChannels")
            self._note_changes(self.live.rebuild(status.events, channels.events, self._clock()))
        except AmiConnectionLost:
            raise
        except (AmiError, ValueError) as exc:
            logger.error("live model resync failed, following AMI events only until the next one: %s", exc)
            return
        missing = self.live.channels_without_variables()
        for channel in missing:
            await self._read_variables(ami, channel)
        logger.info("live model resynced from AMI (%d callers' variables read)", len(missing))

    async def _read_variables(self, ami: AmiClient, channel: str) -> None:
        """Getvar of :data:`RESYNC_VARIABLES` on ``channel``; a channel gone meanwhile is skipped."""
        variables: dict[str, str] = {}
        for name in RESYNC_VARIABLES:
            try:
                reply = await ami.send_action("Getvar", [(H_CHANNEL, channel), (H_VARIABLE, name)])
            except (AmiActionError, AmiTimeout) as exc:
                logger.info("Getvar %s on %s failed (%s): its variables stay unknown", name, channel, exc)
                return
            value = reply.response.get(H_VALUE)
            if value:
                variables[name] = value
        self._note_changes(self.live.note_variables(channel, variables))

    async def close(self) -> None:
        try:
            await self._stop_lead_task()  # leaving the lease's block releases it
            await self._stop_leading()
        finally:
            try:
                if self.actions_ami is not None:
                    await self.actions_ami.close()
                if self._web is not None:
                    await self._web.cleanup()
                await self.agi.close()
            finally:
                if self._owns_store:
                    await self.store.close()

    def addresses(self) -> list[str]:
        lines = [f"FastAGI server: agi://{self.settings.agi.host}:{self.agi.port}/{IVR_ROUTE}"]
        if self._web is not None:
            lines.append(f"web API: http://{self.settings.http.host}:{bound_port(self._web)}/api/")
        if self.ami is not None:
            ami = self.settings.ami
            lines.append(f"AMI client of: {ami.host}:{self._ami_port} (user {ami.username})")
        return lines
