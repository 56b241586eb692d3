"""The AGI routes around the queues: overflow after Queue(), the queued-callback offer, the callback legs.

The dialplan (``pbx_sim.dialplan.inbound_dialplan``) calls them:

* ``overflow`` right after the service ``Queue()``, with ``QUEUESTATUS, QUEUEPOSITION, QUEUEWAIT,
  queue``.  A caller the queue gave back (TIMEOUT, JOINEMPTY, LEAVEEMPTY, JOINUNAVAIL, LEAVEUNAVAIL,
  FULL) goes where the queue's rule says: ``general`` sets ``GUICHET_QUEUE`` to the general queue and
  the dialplan queues the call there; ``callback`` offers a queued callback (accepted: the route
  confirms and hangs up; declined: the general queue).  Other statuses: nothing to do.  The dialplan's
  next step is the general queue whatever happens, so an engine down still reaches the front office.
* ``callback-offer`` in the queue's exit context (the caller pressed a key while queued; the key is the
  extension): ``1`` offers the callback, any other key - or a caller who gives up on the offer - goes
  back into the queue (the dialplan queues ``${GUICHET_QUEUE}`` again, the general queue when unset).
* ``callback-confirm`` on the citizen's leg of a callback (Dial's U() subroutine): a key ``1`` confirms
  a human answered (``GUICHET_CALLBACK_CONFIRMED=1``, outcome ANSWERED, the bridge follows); no key
  (voicemail, nobody) sets ``GOSUB_RESULT=CONTINUE`` (Dial hangs the citizen up) and records UNCONFIRMED.
* ``callback-result`` on the agent's leg once Dial() returned: DIALSTATUS NOANSWER / BUSY / CONGESTION...
  records NO_ANSWER / BUSY / FAILED; an answered dial was recorded by ``callback-confirm`` (it passed
  ``GUICHET_CALLBACK_CONFIRMED`` back through MASTER_CHANNEL()), unless that route never decided.

The offer itself: the caller's number (E.164 from the caller id) is said digit by digit and confirmed
with 1, or typed (withheld number, or 2 for another one) and checked as a French or international
number; then the request goes to the keeper (:class:`routing.callbacks.QueuedCallbacks`) with the
queue, QUEUE_PRIO and the original join time (``GUICHET_QUEUED_AT``), and the caller hears that they
keep their place.  The caller-id name goes to the keeper only, never into an AGI command.

Handlers are thin; the decisions (:func:`overflow_action`, :func:`offer_step`, :func:`parse_typed_number`,
:func:`result_outcome`...) are pure functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

import phonenumbers

from guichet.config import Settings
from guichet.names import (
    GOSUB_RESULT,
    GUICHET_CALLBACK_CONFIRMED,
    GUICHET_CALLBACK_ID,
    GUICHET_CITIZEN_ID,
    GUICHET_CONTACT_ID,
    GUICHET_QUEUE,
    GUICHET_QUEUED_AT,
    GUICHET_REASON,
    QUEUE_PRIO,
    QUEUEWAIT,
    ROUTE_CALLBACK_CONFIRM,
    ROUTE_CALLBACK_OFFER,
    ROUTE_CALLBACK_RESULT,
    ROUTE_OVERFLOW,
)
from ivr.agi_server import AgiSession, RouteTable
from ivr.callers import E164Number, display_name, normalise
from ivr.errors import AgiCommandError, AgiError, AgiHangup
from ivr.prompt_names import tts_name
from ivr.prompts import QUEUE_EXIT_TEXTS, QueueExitTexts
from ivr.services import GENERAL_QUEUE
from routing.callbacks import CallbackOutcome, QueuedCallbackRequest, QueuedCallbacks

logger = logging.getLogger(__name__)

# QUEUESTATUS values with which Queue() hands a caller back who was never served.
OVERFLOW_STATUSES: Final = frozenset(
    {"TIMEOUT", "JOINEMPTY", "LEAVEEMPTY", "JOINUNAVAIL", "LEAVEUNAVAIL", "FULL"}
)
RULE_GENERAL: Final = "general"
RULE_CALLBACK: Final = "callback"
OFFER_KEY: Final = "1"  # the exit digit (and the overflow key) that asks for a callback
CONFIRM_KEY: Final = "1"
OTHER_NUMBER_KEY: Final = "2"
KEY_TIMEOUT_MS: Final = 6000
NUMBER_TIMEOUT_MS: Final = 15000
MAX_NUMBER_DIGITS: Final = 15  # E.164 at most; GET DATA also stops at '#'
MAX_ROUNDS: Final = 3  # unanswered or invalid answers before the caller goes back to the queue
CONFIRM_PLAYS: Final = 2  # the citizen's leg hears the confirmation this many times at most
MAX_JOIN_AGE_S: Final = 86400.0  # a GUICHET_QUEUED_AT older than this is not trusted
MAX_CLOCK_SKEW_S: Final = 300.0  # ... nor one further in the future (Asterisk's clock against ours)
_CALLBACK_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


# --- Pure decisions --------------------------------------------------------------------------------


class OverflowAction(Enum):
    NOTHING = "nothing"  # the caller was not given back by the queue (or was served)
    GENERAL = "general"  # the general front-office queue
    OFFER_CALLBACK = "offer-callback"


def overflow_action(status: str, queue: str, rules: Mapping[str, str]) -> OverflowAction:
    """What the ``overflow`` route does for a caller Queue() returned with ``status`` from ``queue``.

    ``rules``: queue -> ``general`` or ``callback``; a queue without a rule goes to the general queue.
    """
    if status.strip().upper() not in OVERFLOW_STATUSES:
        return OverflowAction.NOTHING
    if rules.get(queue) == RULE_CALLBACK:
        return OverflowAction.OFFER_CALLBACK
    return OverflowAction.GENERAL


def rules_from_settings(settings: Settings) -> dict[str, str]:
    """Queue -> overflow rule, from ``[queues.<name>] overflow``."""
    return {name: policy.overflow for name, policy in settings.queues.items()}


def spoken_digits(number: E164Number) -> str:
    """The digits to say for ``number``: the national form for French numbers (``0612345678``), else
    the international digits without ``+``."""
    parsed = phonenumbers.parse(number.e164)
    if number.region == "FR":
        national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
        return "".join(c for c in national if c.isdigit())
    return number.e164.lstrip("+")


def parse_typed_number(digits: str) -> E164Number | None:
    """A number typed on the keypad (``0612345678``, ``0033612345678``) as E.164; None if not callable."""
    if not digits or not digits.isdigit():
        return None
    number = normalise(digits)
    return number if isinstance(number, E164Number) else None


class OfferStep(Enum):
    CONFIRMED = "confirmed"
    RETYPE = "retype"
    ASK_AGAIN = "ask-again"
    GIVE_UP = "give-up"


def offer_step(key: str | None, rounds_before: int) -> OfferStep:
    """After the caller heard their number and ``1 confirm / 2 another number``: what comes next."""
    if key == CONFIRM_KEY:
        return OfferStep.CONFIRMED
    if key == OTHER_NUMBER_KEY:
        return OfferStep.RETYPE
    return OfferStep.GIVE_UP if rounds_before + 1 >= MAX_ROUNDS else OfferStep.ASK_AGAIN


def joined_at(queued_at: str | None, queue_wait: str | None, now: float) -> float:
    """The epoch second the caller joined the queue: ``GUICHET_QUEUED_AT`` when believable, else now
    minus ``QUEUEWAIT``, else now."""
    for value, from_wait in ((queued_at, False), (queue_wait, True)):
        try:
            number = float(value or "")
        except ValueError:
            continue
        moment = now - number if from_wait else number
        if now - MAX_JOIN_AGE_S <= moment <= now + MAX_CLOCK_SKEW_S:
            return moment
    return now


def parse_priority(value: str | None) -> int:
    """QUEUE_PRIO as the channel holds it (0 when unset or not an integer)."""
    try:
        return int((value or "0").strip())
    except ValueError:
        return 0


def valid_callback_id(value: str) -> bool:
    return 0 < len(value) <= 64 and set(value) <= _CALLBACK_ID_CHARS


_FAILED_DIALS: Final = frozenset(
    {"CONGESTION", "CHANUNAVAIL", "DONTCALL", "TORTURE", "INVALIDARGS", "CANCEL"}
)


def result_outcome(dialstatus: str, confirmed: str) -> tuple[CallbackOutcome, str] | None:
    """What ``callback-result`` records for a dial that ended with ``dialstatus`` (None: nothing, the
    confirm route already did).  ``confirmed`` is ``GUICHET_CALLBACK_CONFIRMED`` as the agent's leg
    sees it ("" when the confirm route never decided)."""
    status = dialstatus.strip().upper()
    if status == "ANSWER":
        if confirmed in ("0", "1"):
            return None
        return CallbackOutcome.UNCONFIRMED, "answered, confirmation not reached"
    if status == "NOANSWER":
        return CallbackOutcome.NO_ANSWER, status
    if status == "BUSY":
        return CallbackOutcome.BUSY, status
    if status in _FAILED_DIALS:
        return CallbackOutcome.FAILED, status
    return CallbackOutcome.FAILED, f"unexpected DIALSTATUS {status[:20]!r}"


# --- The routes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What the callback request needs, read from the channel."""

    queue: str
    priority: int
    joined_at: float
    citizen_id: str | None
    contact_id: str | None
    reason: str | None


class QueueExits:
    """The four routes; ``callbacks`` is the keeper, ``rules`` queue -> ``general`` / ``callback``."""

    def __init__(
        self,
        callbacks: QueuedCallbacks,
        rules: Mapping[str, str],
        *,
        general_queue: str = GENERAL_QUEUE,
        texts: QueueExitTexts = QUEUE_EXIT_TEXTS,
        now: Callable[[], float] = time.time,
    ) -> None:
        unknown = sorted(q for q, rule in rules.items() if rule not in (RULE_GENERAL, RULE_CALLBACK))
        if unknown:
            raise ValueError(
                f"overflow rule must be {RULE_GENERAL!r} or {RULE_CALLBACK!r}: {', '.join(unknown)}"
            )
        self.callbacks = callbacks
        self.rules = dict(rules)
        self.general_queue = general_queue
        self.texts = texts
        self.now = now

    def register(self, routes: RouteTable) -> None:
        routes.add(ROUTE_OVERFLOW, self.overflow)
        routes.add(ROUTE_CALLBACK_OFFER, self.callback_offer)
        routes.add(ROUTE_CALLBACK_CONFIRM, self.callback_confirm)
        routes.add(ROUTE_CALLBACK_RESULT, self.callback_result)

    # --- overflow ------------------------------------------------------------------------------------
    async def overflow(self, session: AgiSession) -> None:
        args = session.env.args
        status = args[0] if args else ""
        queue = args[3] if len(args) > 3 else ""
        action = overflow_action(status, queue, self.rules)
        logger.info("call %s: queue %.40r gave %.20r: %s", session.channel, queue, status, action.value)
        if action is OverflowAction.NOTHING:
            return
        try:
            if (
                action is OverflowAction.OFFER_CALLBACK
                and await self._choose(session, self.texts.overflow_offer) == OFFER_KEY
                and await self._offer(session, queue) is not None
            ):
                return
            await session.set_variable(GUICHET_QUEUE, self.general_queue)
        except AgiHangup:
            logger.info("call %s: hung up during the overflow", session.channel)

    # --- callback-offer (the queue's exit context) ---------------------------------------------------
    async def callback_offer(self, session: AgiSession) -> None:
        key = session.env.extension
        try:
            queue = await session.get_variable(GUICHET_QUEUE) or ""
            if queue not in self.rules and queue != self.general_queue:
                queue = self.general_queue
                await session.set_variable(GUICHET_QUEUE, queue)
            if key != OFFER_KEY:
                logger.info("call %s: key %.3r while queued: back in %s", session.channel, key, queue)
                return
            if await self._offer(session, queue) is None:
                await self._say(session, self.texts.back_in_queue)
        except AgiHangup:
            logger.info("call %s: hung up during the callback offer", session.channel)

    async def _offer(self, session: AgiSession, queue: str) -> str | None:
        """Confirm a number and hand the request to the keeper; the callback id, or None (back to the
        queue).  After a request was kept the caller hears so and is hung up."""
        number = await self._confirmed_number(session)
        if number is None:
            return None
        context = await self._context(session, queue)
        request = QueuedCallbackRequest(
            number=number.e164,
            queue=context.queue,
            priority=context.priority,
            joined_at=context.joined_at,
            caller_name=display_name(session.env.calleridname),
            citizen_id=context.citizen_id,
            contact_id=context.contact_id,
            reason=context.reason,
            origin_uniqueid=session.env.uniqueid,
        )
        try:
            callback_id = await self.callbacks.keep(request)
        except Exception:
            logger.exception("call %s: the callback keeper refused the request", session.channel)
            await self._say(session, self.texts.not_kept)
            return None
        logger.info("call %s: queued callback %s in %s", session.channel, callback_id, context.queue)
        if valid_callback_id(callback_id):
            await session.set_variable(GUICHET_CALLBACK_ID, callback_id)
        await self._say(session, self.texts.kept)
        await session.hangup()
        return callback_id

    async def _confirmed_number(self, session: AgiSession) -> E164Number | None:
        number = normalise(session.env.callerid, session.env.get("callingpres"))
        candidate = number if isinstance(number, E164Number) else None
        for rounds in range(MAX_ROUNDS):
            if candidate is None:
                candidate = await self._typed_number(session)
                if candidate is None:
                    return None
            step = offer_step(await self._say_number(session, candidate), rounds)
            if step is OfferStep.CONFIRMED:
                return candidate
            if step is OfferStep.GIVE_UP:
                return None
            if step is OfferStep.RETYPE:
                candidate = None
        return None

    async def _say_number(self, session: AgiSession, number: E164Number) -> str | None:
        """ "Nous vous rappellerons au 06 12 34 56 78. Tapez 1 pour confirmer, 2 ..." -> the key pressed."""
        keys = CONFIRM_KEY + OTHER_NUMBER_KEY
        key = await session.stream_file(tts_name(self.texts.number_intro), keys)
        if key is None:
            reply = await session.command("SAY", "DIGITS", spoken_digits(number), keys)
            if reply.result == -1:
                raise AgiHangup("SAY DIGITS: channel hung up", reply)
            key = chr(reply.result) if reply.result else None
        if key is None:
            key = await self._choose(session, self.texts.number_choice)
        return key

    async def _typed_number(self, session: AgiSession) -> E164Number | None:
        for _ in range(MAX_ROUNDS):
            digits, _ = await session.get_data(
                tts_name(self.texts.ask_number), NUMBER_TIMEOUT_MS, MAX_NUMBER_DIGITS
            )
            number = parse_typed_number(digits)
            if number is not None:
                return number
            if digits:
                await self._say(session, self.texts.invalid_number)
        return None

    async def _context(self, session: AgiSession, queue: str) -> _Context:
        async def var(name: str) -> str | None:
            value = await session.get_variable(name)
            return value or None

        return _Context(
            queue=queue,
            priority=parse_priority(await var(QUEUE_PRIO)),
            joined_at=joined_at(await var(GUICHET_QUEUED_AT), await var(QUEUEWAIT), self.now()),
            citizen_id=await var(GUICHET_CITIZEN_ID),
            contact_id=await var(GUICHET_CONTACT_ID),
            reason=await var(GUICHET_REASON),
        )

    # --- callback-confirm (the citizen's leg) --------------------------------------------------------
    async def callback_confirm(self, session: AgiSession) -> None:
        args = session.env.args
        callback_id = args[0] if args else ""
        try:
            confirmed = False
            for _ in range(CONFIRM_PLAYS):
                if await self._choose(session, self.texts.confirm_call) == CONFIRM_KEY:
                    confirmed = True
                    break
            await session.set_variable(GUICHET_CALLBACK_CONFIRMED, "1" if confirmed else "0")
            if not confirmed:
                await session.set_variable(GOSUB_RESULT, "CONTINUE")
        except AgiHangup:  # the result route records it (GUICHET_CALLBACK_CONFIRMED stays unset)
            logger.info("callback %.64r: the citizen hung up before confirming", callback_id)
            return
        outcome = CallbackOutcome.ANSWERED if confirmed else CallbackOutcome.UNCONFIRMED
        await self._record(callback_id, outcome, "confirmed" if confirmed else "no key pressed")

    # --- callback-result (the agent's leg) -----------------------------------------------------------
    async def callback_result(self, session: AgiSession) -> None:
        args = (*session.env.args, "", "", "")
        dialstatus, callback_id, confirmed = args[0], args[1], args[2]
        decided = result_outcome(dialstatus, confirmed)
        if decided is not None:
            await self._record(callback_id, *decided)
        if confirmed == "1":  # the two were bridged: nothing more to tell the agent
            return
        try:
            await self._say(session, self.texts.not_reached)
        except AgiError as exc:
            logger.info("callback %.64r: the agent's leg is gone: %s", callback_id, exc)

    async def _record(self, callback_id: str, outcome: CallbackOutcome, detail: str) -> None:
        if not valid_callback_id(callback_id):
            logger.warning(
                "callback outcome %s for an invalid id %.64r: not recorded", outcome.value, callback_id
            )
            return
        try:
            await self.callbacks.record_outcome(callback_id, outcome, detail)
        except Exception:
            logger.exception("callback %s: outcome %s not recorded", callback_id, outcome.value)

    # --- helpers -------------------------------------------------------------------------------------
    @staticmethod
    async def _choose(session: AgiSession, text: str) -> str | None:
        """Say ``text`` and wait for one key; None when none came."""
        digits, _ = await session.get_data(tts_name(text), KEY_TIMEOUT_MS, 1)
        return digits[:1] or None

    @staticmethod
    async def _say(session: AgiSession, text: str) -> None:
        try:
            await session.stream_file(tts_name(text))
        except AgiCommandError as exc:  # a missing sound never loses the call
            logger.warning("prompt %s not played: %s", tts_name(text), exc)
