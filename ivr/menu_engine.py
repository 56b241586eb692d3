"""The menu engine: runs the voice menus of ``dialplans/`` during a call (AGI route ``ivr``).

The route handler is thin: it walks the tree from its start node, sends the AGI
commands each node needs, and asks pure functions for every decision (where a
menu key leads, which urgency and QUEUE_PRIO a queue node gives, which channel
variables hand the call back).  Whatever happens, the call is handed back to the
dialplan with somewhere to go:

* a **queue** node sets ``GUICHET_QUEUE``, ``GUICHET_PRIO`` (the QUEUE_PRIO),
  ``GUICHET_URGENCY``, ``GUICHET_REASON``, ``GUICHET_CITIZEN_ID`` /
  ``GUICHET_CONTACT_ID`` when known, and ``GUICHET_IVR_DONE=1`` last; the dialplan
  queues the call;
* a **transfer** node sets ``GUICHET_TRANSFER`` and ``GUICHET_IVR_DONE=1``; the
  dialplan dials the number;
* a **callback** node records the request in a :class:`CallbackSink`, says its
  prompt and hangs up (a caller whose number cannot be called back is queued to
  the service instead);
* after :data:`MAX_STEPS` nodes (a menu bug must never hold a call forever) or on
  any error other than a hang-up, the call goes to the general queue.

Caller recognition happens once, at the start: the number is normalised to E.164,
the citizen and the recent contacts are looked up (a failing directory only
costs the recognition, never the call).  A caller with a contact in the repeat
window hears :data:`REPEAT_CALLER_PROMPT`; at a queue node, a contact about *that*
service raises the urgency (the repeat-caller rule) and passes its id on.

The urgency **choice rules** are keyed by the names of the nodes the caller chose
with a menu key (e.g. ``apa-urgence``), in the order chosen.

**Closed hours.**  An ``hours`` node whose schedule is closed says
:func:`ivr.hours.closed_message` (when the schedule reopens, and the advice), as a
synthesised prompt named by :func:`ivr.prompt_names.tts_name`, then goes to its
``closed`` branch.  The message changes with the time of the call, so the prompt
builder cannot make every file in advance: when the file is missing, the engine
logs it and goes on to the closed branch (whose prompts are static and checked).

**Speech.**  With a :class:`~ivr.speech.Recogniser`, a menu whose choices have keywords
also listens: when GET DATA brings no key, the answer is recorded (RECORD FILE into
``record_dir``, the menu's keys ending the recording) and recognised.  A key pressed
while recording counts as that key, a recognised keyword as its key; anything else
(silence, an unsure or unknown word, an unreadable recording) is no input, and
:func:`after_menu_input` decides as for keys.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol

from guichet.names import (
    GUICHET_CALLBACK_ID,
    GUICHET_CITIZEN_ID,
    GUICHET_CONTACT_ID,
    GUICHET_IVR_DONE,
    GUICHET_PRIO,
    GUICHET_QUEUE,
    GUICHET_REASON,
    GUICHET_TRANSFER,
    GUICHET_URGENCY,
)
from ivr.agi import AgiEnv
from ivr.agi_server import AgiSession
from ivr.callers import (
    GREETING_REPEAT_CALLER,
    CallerNumber,
    CitizenDirectory,
    CitizenRef,
    ContactRef,
    E164Number,
    ShortNumber,
    display_name,
    normalise,
    recognise,
    window_start,
)
from ivr.errors import AgiCommandError, AgiError, AgiHangup
from ivr.hours import Schedule, closed_message, is_open
from ivr.menus import (
    CallbackNode,
    GotoNode,
    HangupNode,
    HoursNode,
    InfoNode,
    MenuNode,
    MenuSet,
    Node,
    Prompt,
    PromptNode,
    QueueNode,
    TransferNode,
)
from ivr.prompt_names import sound_name, tts_name
from ivr.prompts import PromptBuildError
from ivr.services import GENERAL_QUEUE
from ivr.speech import Recogniser, SpeechError, record_and_recognise
from ivr.urgency import Urgency, UrgencyRules, assess, parse_level

logger = logging.getLogger(__name__)

MAX_STEPS: Final = 200  # nodes visited per call before the engine gives up (general queue)
AGENT_KEY: Final = "1"  # the key of an informational answer that reaches an agent
FALLBACK_REASON: Final = "repli-accueil-general"  # GUICHET_REASON when the engine gives up
REPEAT_CALLER_PROMPT: Final = Prompt(
    "Nous voyons que vous nous avez déjà appelés ces derniers jours. "
    "Nous en tenons compte pour traiter votre appel."
)
# Prompts the engine says itself, by key, for the prompt builder (beside every menu's prompts).
ENGINE_PROMPTS: Final[Mapping[str, Prompt]] = {GREETING_REPEAT_CALLER: REPEAT_CALLER_PROMPT}


# --- Callback requests ----------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackRequest:
    """A caller asked to be called back: the number to call, the service, why and when."""

    number: str
    service: str
    reason: str
    requested_at: datetime
    caller_name: str = ""
    citizen_id: str | None = None
    channel: str = ""


class CallbackSink(Protocol):
    """Where callback requests go (the routing's callback list implements it)."""

    async def record(self, request: CallbackRequest) -> str:
        """Store the request; return its id."""
        ...


class InMemoryCallbackSink:
    """A :class:`CallbackSink` in memory, for tests and the demo."""

    def __init__(self) -> None:
        self.requests: list[CallbackRequest] = []

    async def record(self, request: CallbackRequest) -> str:
        self.requests.append(request)
        return f"cb-{len(self.requests)}"


# --- Pure decisions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """What the engine knows of the caller: the number, the citizen, the contacts in the window."""

    number: CallerNumber
    name: str = ""
    citizen: CitizenRef | None = None
    contacts: tuple[ContactRef, ...] = ()

    @property
    def greeting(self) -> str | None:
        """The greeting key: a caller with a recent contact (any service) is greeted as such."""
        return GREETING_REPEAT_CALLER if self.contacts else None


@dataclass(frozen=True)
class Go:
    """Leave a menu for ``target``; ``chosen`` when a key led there (it counts for the urgency rules)."""

    target: str
    chosen: bool


@dataclass(frozen=True)
class Replay:
    """Play the menu again, after ``feedback`` (a text) when there is one."""

    feedback: str | None


def after_menu_input(node: MenuNode, digits: str, failed_before: int) -> Go | Replay:
    """Where a menu goes after the caller typed ``digits`` ("" for no input).

    ``failed_before`` counts the earlier answers that were missing or invalid; after ``retries``
    replays the menu goes to its fallback.
    """
    choice = node.choice(digits) if digits else None
    if choice is not None:
        return Go(choice.next, chosen=True)
    if failed_before >= node.retries:
        return Go(node.fallback, chosen=False)
    return Replay(node.invalid if digits else node.no_input)


def callback_number(number: CallerNumber) -> str | None:
    """The number a callback can dial: E.164 or a valid short number; None when withheld or invalid."""
    if isinstance(number, E164Number):
        return number.e164
    if isinstance(number, ShortNumber):
        return number.digits
    return None


def queue_variables(
    node: QueueNode, caller: Caller, rules: UrgencyRules, now: datetime, choices: Sequence[str]
) -> list[tuple[str, str]]:
    """The channel variables that queue the call, ``GUICHET_IVR_DONE`` last."""
    recognition = recognise(caller.number, caller.contacts, node.queue, now, rules.repeat_caller.window_days)
    decision = assess(
        rules,
        parse_level(node.urgency, f"{node.name}.urgency"),
        repeat_caller=recognition.repeat_caller,
        choices=choices,
    )
    for explanation in decision.explanations:
        logger.info("urgency %s: %s", node.queue, explanation.text)
    variables = [
        (GUICHET_QUEUE, node.queue),
        (GUICHET_PRIO, str(decision.queue_prio)),
        (GUICHET_URGENCY, decision.level.key),
        (GUICHET_REASON, node.reason),
    ]
    if caller.citizen is not None:
        variables.append((GUICHET_CITIZEN_ID, caller.citizen.citizen_id))
    if recognition.contact_id is not None:
        variables.append((GUICHET_CONTACT_ID, recognition.contact_id))
    variables.append((GUICHET_IVR_DONE, "1"))
    return variables


def transfer_variables(node: TransferNode) -> list[tuple[str, str]]:
    """The channel variables that make the dialplan dial ``node.number``, ``GUICHET_IVR_DONE`` last."""
    return [(GUICHET_TRANSFER, node.number), (GUICHET_REASON, node.reason), (GUICHET_IVR_DONE, "1")]


def fallback_variables(rules: UrgencyRules) -> list[tuple[str, str]]:
    """The general queue at normal urgency, when the engine gives up on the menu."""
    return [
        (GUICHET_QUEUE, GENERAL_QUEUE),
        (GUICHET_PRIO, str(rules.queue_prio[Urgency.NORMAL])),
        (GUICHET_URGENCY, Urgency.NORMAL.key),
        (GUICHET_REASON, FALLBACK_REASON),
        (GUICHET_IVR_DONE, "1"),
    ]


class MenuLoopError(RuntimeError):
    """The call visited :data:`MAX_STEPS` nodes without reaching an end."""


# --- The engine -----------------------------------------------------------------------------


@dataclass
class _Call:
    """One call's state while it walks the menus."""

    session: AgiSession
    caller: Caller
    tree: str
    node: str
    choices: list[str] = field(default_factory=list)
    steps: int = 0
    recordings: int = 0  # RECORD FILE commands sent (each recording gets its own file)


class MenuEngine:
    """Runs a :class:`MenuSet` on route ``ivr``; ``now()`` must return an aware datetime."""

    def __init__(
        self,
        menus: MenuSet,
        *,
        schedules: Mapping[str, Schedule],
        rules: UrgencyRules,
        directory: CitizenDirectory,
        callbacks: CallbackSink,
        now: Callable[[], datetime],
        start_tree: str = "guichet",
        speak: Callable[[str], Awaitable[str]] | None = None,
        recogniser: Recogniser | None = None,
        record_dir: Path = Path("/tmp"),
    ) -> None:
        """``speak(text)`` returns the sound name of a text only known during the call (the
        closed message), synthesising it if needed; without it that name must already exist.
        ``recogniser``: menus with keywords also accept spoken answers, recorded by Asterisk
        into ``record_dir`` (which the engine must be able to read)."""
        if start_tree not in menus.trees:
            raise ValueError(f"no menu tree {start_tree!r} (trees: {', '.join(sorted(menus.trees))})")
        missing = sorted(
            {n.schedule for t in menus.trees.values() for n in t.nodes.values() if isinstance(n, HoursNode)}
            - schedules.keys()
        )
        if missing:
            raise ValueError(f"the menus use unknown schedule(s): {', '.join(missing)}")
        self.menus = menus
        self.schedules = schedules
        self.rules = rules
        self.directory = directory
        self.callbacks = callbacks
        self.now = now
        self.start_tree = start_tree
        self.speak = speak
        self.recogniser = recogniser
        self.record_dir = record_dir

    async def handle(self, session: AgiSession) -> None:
        """The AGI route: run the menus, always hand the call back with somewhere to go."""
        call: _Call | None = None
        try:
            await session.answer()
            caller = await self.recognise(session.env)
            call = _Call(session, caller, self.start_tree, self.menus.tree(self.start_tree).start)
            if caller.greeting is not None:
                await session.stream_file(sound_name(ENGINE_PROMPTS[caller.greeting]))
            await self._walk(call)
        except AgiHangup:
            where = f"{call.tree}:{call.node}" if call is not None else "the start"
            logger.info("call %s: the caller hung up at %s", session.channel, where)
        except Exception:
            where = f"{call.tree}:{call.node}" if call is not None else "the start"
            logger.exception("call %s: menu failed at %s; general queue", session.channel, where)
            try:
                await self._hand_back(session, fallback_variables(self.rules))
            except AgiError as exc:  # the session is gone: the dialplan's own fail-safe takes over
                logger.warning("call %s: could not hand the call back: %s", session.channel, exc)

    async def recognise(self, env: AgiEnv) -> Caller:
        """The caller's number, name, citizen and recent contacts (a failing directory: unknown)."""
        number = normalise(env.callerid, env.get("callingpres"))
        name = display_name(env.calleridname)
        if not isinstance(number, E164Number):
            return Caller(number, name)
        since = window_start(self.now(), self.rules.repeat_caller.window_days)
        try:
            citizen = await self.directory.find_by_number(number.e164)
            contacts = await self.directory.recent_contacts(number.e164, since)
        except Exception:
            logger.exception("citizen directory failed: caller not recognised")
            return Caller(number, name)
        return Caller(number, name, citizen, tuple(contacts))

    async def _walk(self, call: _Call) -> None:
        while True:
            call.steps += 1
            if call.steps > MAX_STEPS:
                raise MenuLoopError(f"{MAX_STEPS} menu nodes visited without an end")
            node = self.menus.tree(call.tree).node(call.node)
            target = await self._run(call, node)
            if target is None:
                return
            call.node = target

    async def _run(self, call: _Call, node: Node) -> str | None:
        """Run one node: the name of the next node of the current tree, or None when the call ends."""
        session = call.session
        match node:
            case PromptNode():
                await session.stream_file(sound_name(node.prompt))
                return node.next
            case MenuNode():
                return await self._menu(call, node)
            case InfoNode():
                pressed = await session.stream_file(sound_name(node.prompt), AGENT_KEY)
                if pressed is None:
                    pressed = await session.wait_for_digit(node.timeout_s * 1000)
                return node.agent if pressed == AGENT_KEY else node.next
            case HoursNode():
                return await self._hours(call, node)
            case QueueNode():
                await self._say(session, node.prompt)
                variables = queue_variables(node, call.caller, self.rules, self.now(), call.choices)
                logger.info("call %s -> queue %s (%s)", session.channel, node.queue, node.reason)
                await self._hand_back(session, variables)
                return None
            case TransferNode():
                await self._say(session, node.prompt)
                logger.info("call %s -> transfer to %s (%s)", session.channel, node.number, node.reason)
                await self._hand_back(session, transfer_variables(node))
                return None
            case CallbackNode():
                await self._callback(call, node)
                return None
            case GotoNode():
                if node.tree is not None:
                    call.tree = node.tree
                    return self.menus.tree(node.tree).start
                assert node.node is not None  # the loader guarantees exactly one of node / tree
                return node.node
            case HangupNode():
                await self._say(session, node.prompt)
                await session.hangup()
                return None

    async def _menu(self, call: _Call, node: MenuNode) -> str:
        failed = 0
        keywords = {choice.digit: choice.keywords for choice in node.choices if choice.keywords}
        while True:
            digits, _ = await call.session.get_data(sound_name(node.prompt), node.timeout_s * 1000, 1)
            if not digits and keywords and self.recogniser is not None:
                digits = await self._listen(call, node, keywords, self.recogniser)
            step = after_menu_input(node, digits, failed)
            if isinstance(step, Go):
                if step.chosen:
                    call.choices.append(step.target)
                return step.target
            failed += 1
            if step.feedback is not None:
                await call.session.stream_file(tts_name(step.feedback))

    async def _listen(
        self, call: _Call, node: MenuNode, keywords: Mapping[str, Sequence[str]], recogniser: Recogniser
    ) -> str:
        """The key the caller pressed or said while recorded; "" for no (usable) answer."""
        call.recordings += 1
        base = self.record_dir / f"guichet-{call.session.env.uniqueid}-{call.recordings}"
        try:
            result = await record_and_recognise(
                call.session,
                recogniser,
                keywords,
                str(base),
                escape_digits=node.digits,
                timeout_ms=node.timeout_s * 1000,
            )
        except (SpeechError, OSError, AgiCommandError) as exc:  # e.g. record_dir not shared with Asterisk
            logger.warning(
                "call %s: spoken answer at %s not recognised: %s", call.session.channel, node.name, exc
            )
            return ""
        return result.choice or ""  # record_and_recognise logged what was heard

    async def _hours(self, call: _Call, node: HoursNode) -> str:
        schedule = self.schedules[node.schedule]
        now = self.now()
        if is_open(schedule, now):
            return node.open
        message = closed_message(schedule, now)
        try:
            name = await self.speak(message) if self.speak is not None else tts_name(message)
            await call.session.stream_file(name)
        except (AgiCommandError, PromptBuildError) as exc:
            logger.warning("closed message of %s not played: %s", schedule.name, exc)
        return node.closed

    async def _callback(self, call: _Call, node: CallbackNode) -> None:
        session = call.session
        number = callback_number(call.caller.number)
        if number is None:  # nobody could call back: the service takes the call now
            logger.info("call %s: callback impossible (no number) -> queue %s", session.channel, node.service)
            queue = QueueNode(node.name, node.line, node.service, Urgency.NORMAL.key, node.reason)
            variables = queue_variables(queue, call.caller, self.rules, self.now(), call.choices)
            await self._hand_back(session, variables)
            return
        citizen = call.caller.citizen
        request = CallbackRequest(
            number=number,
            service=node.service,
            reason=node.reason,
            requested_at=self.now(),
            caller_name=call.caller.name,
            citizen_id=None if citizen is None else citizen.citizen_id,
            channel=session.channel,
        )
        request_id = await self.callbacks.record(request)
        logger.info("call %s: callback request %s for %s", session.channel, request_id, node.service)
        await session.set_variable(GUICHET_CALLBACK_ID, request_id)
        await session.set_variable(GUICHET_REASON, node.reason)
        await session.stream_file(sound_name(node.prompt))
        await session.hangup()

    @staticmethod
    async def _say(session: AgiSession, prompt: Prompt | None) -> None:
        if prompt is not None:
            await session.stream_file(sound_name(prompt))

    @staticmethod
    async def _hand_back(session: AgiSession, variables: Sequence[tuple[str, str]]) -> None:
        for name, value in variables:
            await session.set_variable(name, value)
