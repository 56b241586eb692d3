"""Caller recognition: the caller's number, display name, citizen lookup and repeat calls.

Everything on the call path here is pure and never raises on caller-controlled input:

* :func:`normalise` turns ``agi_callerid`` (plus ``agi_callingpres``) into one of four typed
  results: :class:`E164Number`, :class:`ShortNumber` (French service and emergency numbers such
  as ``3900`` or ``115``, which have no E.164 form), :class:`Withheld` or :class:`InvalidNumber`.
* :func:`display_name` undoes the one escaping Asterisk leaves in ``agi_calleridname``.
* :func:`recognise` decides, from the contacts the directory returned, whether the caller is a
  repeat caller about the same service, which open contact or request the agent must see, and
  which greeting to play.

:class:`CitizenDirectory` is the interface ``citizens/`` implements (SQLAlchemy);
:class:`InMemoryDirectory` is the implementation used by the tests and the demo until then.

Caller-ID presentation (``agi_callingpres``), from Asterisk's ``include/asterisk/callerid.h``:
the value is ``restriction | screening``.  Bits ``0x60`` are the restriction:
``0x00`` allowed (0-3), ``0x20`` restricted = presentation prohibited (32-35),
``0x40`` unavailable (64-67; 67 is ``AST_PRES_NUMBER_NOT_AVAILABLE``), ``0x60`` reserved
(96-99).  The low two bits are only the screening indicator (user-provided not screened,
passed, failed, network-provided).  Anything but "allowed" is treated as withheld: the number
Asterisk hands over then must not be used to identify the citizen.  A ``callingpres`` that is not
an integer in 0-255 is ignored (the number alone decides) and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

import phonenumbers
from phonenumbers import shortnumberinfo

logger = logging.getLogger(__name__)

DEFAULT_REGION: Final = "FR"
# Metropolitan France dials the overseas départements and collectivities with a national 0 number
# ("0690 ..." is a Guadeloupe mobile) although they have their own country codes.
FRENCH_OVERSEAS_REGIONS: Final = ("GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF")
# Longest caller number accepted; E.164 has at most 15 digits, this leaves room for spaces,
# a 00 prefix and punctuation.
MAX_NUMBER_CHARS: Final = 32
# Longest display name kept (characters, after unescaping).
MAX_DISPLAY_NAME_CHARS: Final = 200
# What SIP and Asterisk put in the caller number when it is withheld (compared case-insensitively).
WITHHELD_TOKENS: Final = frozenset(
    {"", "anonymous", "unknown", "restricted", "private", "withheld", "unavailable"}
)
_ALLOWED_NUMBER_CHARS: Final = frozenset("0123456789+ -.()")
PRES_RESTRICTION_MASK: Final = 0x60
PRES_ALLOWED: Final = 0x00
PRES_RESTRICTED: Final = 0x20
PRES_UNAVAILABLE: Final = 0x40
PRES_RESERVED: Final = 0x60
_PRES_REASONS: Final = {
    PRES_RESTRICTED: "presentation-restricted",
    PRES_UNAVAILABLE: "presentation-unavailable",
    PRES_RESERVED: "presentation-reserved",
}
GREETING_REPEAT_CALLER: Final = "rappel-deja-appele"


@dataclass(frozen=True, slots=True)
class E164Number:
    """A valid public number: ``e164`` such as ``+33612345678``, ``region`` such as ``FR``."""

    e164: str
    region: str


@dataclass(frozen=True, slots=True)
class ShortNumber:
    """A short service or emergency number valid in the region (``3900``, ``115``): not E.164."""

    digits: str
    region: str


@dataclass(frozen=True, slots=True)
class Withheld:
    """The caller hid the number, or the network could not give it.  ``reason`` says which."""

    reason: str


@dataclass(frozen=True, slots=True)
class InvalidNumber:
    """A number that is neither valid public nor a short number.  ``raw`` is cut to a safe length."""

    raw: str
    reason: str


CallerNumber = E164Number | ShortNumber | Withheld | InvalidNumber


def presentation_withheld_reason(callingpres: int | str | None) -> str | None:
    """The reason the presentation hides the number, or None when it allows it or is unusable."""
    if callingpres is None:
        return None
    if isinstance(callingpres, str):
        text = callingpres.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 3):
            logger.warning("ignoring a callingpres that is not a small integer: %.40r", callingpres)
            return None
        value = int(text)
    else:
        value = callingpres
    if not 0 <= value <= 255:
        logger.warning("ignoring an out-of-range callingpres: %d", value)
        return None
    return _PRES_REASONS.get(value & PRES_RESTRICTION_MASK)


def normalise(
    raw: str, callingpres: int | str | None = None, *, region: str = DEFAULT_REGION
) -> CallerNumber:
    """Classify the caller number Asterisk gives (``agi_callerid``); never raises on any string.

    Accepted forms: national (``0612345678``), international (``+33 6 12 34 56 78``,
    ``0033612345678``) and the bare country code Asterisk may send (``33612345678``).  Only ASCII
    digits, spaces, ``+ - . ( )`` are accepted: other characters (letters, quotes, line breaks,
    non-ASCII digits) make the number invalid rather than being silently converted.
    """
    pres_reason = presentation_withheld_reason(callingpres)
    if pres_reason is not None:
        return Withheld(pres_reason)
    text = raw.strip()
    if text.lower() in WITHHELD_TOKENS:
        return Withheld("no-number" if not text else text.lower())
    shown = text[:MAX_NUMBER_CHARS]
    if len(text) > MAX_NUMBER_CHARS:
        return InvalidNumber(shown, "too-long")
    if not set(text) <= _ALLOWED_NUMBER_CHARS:
        return InvalidNumber(shown, "unexpected-characters")
    parsed = _parse(text, region)
    if parsed is None:
        return InvalidNumber(shown, "unparsable")
    if phonenumbers.is_valid_number(parsed):
        return _e164(parsed)
    if shortnumberinfo.is_valid_short_number_for_region(parsed, region):
        return ShortNumber(phonenumbers.national_significant_number(parsed), region)
    if region == DEFAULT_REGION and text.startswith("0") and not text.startswith("00"):
        for overseas in FRENCH_OVERSEAS_REGIONS:
            candidate = _parse(text, overseas)
            if candidate is not None and phonenumbers.is_valid_number(candidate):
                return _e164(candidate)
    return InvalidNumber(shown, "not-a-valid-number")


def _parse(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


def _e164(parsed: phonenumbers.PhoneNumber) -> E164Number:
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return E164Number(e164, phonenumbers.region_code_for_number(parsed) or "ZZ")


def display_name(raw: str | bytes) -> str:
    r"""The caller's display name from ``agi_calleridname``; never raises.

    Asterisk removes only the outer quotes of the SIP display-name and keeps its backslash
    escapes: ``Zoé \"VIP\" <Dupré>`` arrives for ``"Zoé \"VIP\" <Dupré>"``.  This undoes
    exactly ``\"`` and ``\\``; every other character (quotes, ``< > &``, a lone backslash,
    UTF-8) stays verbatim.  Bytes are decoded as UTF-8, invalid sequences replaced.  The result
    is cut to :data:`MAX_DISPLAY_NAME_CHARS` characters.
    """
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    # Each output character consumes at most two input characters: bound the work first.
    text = text[: 2 * MAX_DISPLAY_NAME_CHARS + 1]
    out: list[str] = []
    i = 0
    while i < len(text) and len(out) < MAX_DISPLAY_NAME_CHARS:
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


# --- Citizen directory --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CitizenRef:
    """A citizen known under a number: the id shown on the citizen card."""

    citizen_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ContactRef:
    """One past contact (call, form, visit) of the number, about one service.

    ``request_id`` is the request (e.g. a callback request) the contact opened, if any.
    ``opened_at`` must be timezone-aware.
    """

    contact_id: str
    service: str
    opened_at: datetime
    closed: bool
    request_id: str | None = None


class CitizenDirectory(Protocol):
    """Look-ups the IVR needs from the citizen records (``citizens/`` implements it)."""

    async def find_by_number(self, e164: str) -> CitizenRef | None:
        """The citizen known under this E.164 number, if any."""
        ...

    async def recent_contacts(self, e164: str, since: datetime) -> list[ContactRef]:
        """Contacts of this number opened at or after ``since``, newest first."""
        ...


def _require_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {moment!r}")


class InMemoryDirectory:
    """A :class:`CitizenDirectory` in memory, for tests and the demo."""

    def __init__(self) -> None:
        self._citizens: dict[str, CitizenRef] = {}
        self._contacts: dict[str, list[ContactRef]] = {}

    def add_citizen(self, e164: str, citizen: CitizenRef) -> None:
        self._citizens[e164] = citizen

    def add_contact(self, e164: str, contact: ContactRef) -> None:
        _require_aware(contact.opened_at, "ContactRef.opened_at")
        self._contacts.setdefault(e164, []).append(contact)

    async def find_by_number(self, e164: str) -> CitizenRef | None:
        return self._citizens.get(e164)

    async def recent_contacts(self, e164: str, since: datetime) -> list[ContactRef]:
        _require_aware(since, "since")
        found = [c for c in self._contacts.get(e164, ()) if c.opened_at >= since]
        return sorted(found, key=lambda c: c.opened_at, reverse=True)


# --- Repeat callers -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recognition:
    """What the IVR learnt about the caller for one service.

    ``repeat_caller``: the number had a contact about the same service within the window (open or
    closed).  ``contact_id`` / ``request_id``: the most recent *open* such contact and its request,
    to pass on to the agent (None when every one is closed).  ``greeting``: the prompt key to play,
    None for an ordinary greeting.
    """

    repeat_caller: bool
    contact_id: str | None = None
    request_id: str | None = None
    greeting: str | None = None
    contacts_in_window: int = 0


NOT_RECOGNISED: Final = Recognition(repeat_caller=False)


def window_start(now: datetime, window_days: int) -> datetime:
    """The oldest ``opened_at`` that still counts: exactly ``window_days`` days before ``now``."""
    if window_days < 0:
        raise ValueError(f"window_days must be >= 0, got {window_days}")
    return now - timedelta(days=window_days)


def recognise(
    number: CallerNumber,
    contacts: Iterable[ContactRef],
    service: str,
    now: datetime,
    window_days: int,
) -> Recognition:
    """Is this caller a repeat caller about ``service``?  Pure: the contacts are given.

    A contact counts when it is about the same service and was opened at or after
    ``now - window_days`` (a contact exactly ``window_days`` days old counts; one dated slightly
    after ``now``, as clocks of two nodes may differ, counts too).  Only an :class:`E164Number`
    can be recognised: withheld, short and invalid numbers never are.
    """
    _require_aware(now, "now")
    start = window_start(now, window_days)
    if not isinstance(number, E164Number):
        return NOT_RECOGNISED
    same: Sequence[ContactRef] = sorted(
        (c for c in contacts if c.service == service and c.opened_at >= start),
        key=lambda c: c.opened_at,
        reverse=True,
    )
    if not same:
        return NOT_RECOGNISED
    open_contact = next((c for c in same if not c.closed), None)
    return Recognition(
        repeat_caller=True,
        contact_id=None if open_contact is None else open_contact.contact_id,
        request_id=None if open_contact is None else open_contact.request_id,
        greeting=GREETING_REPEAT_CALLER,
        contacts_in_window=len(same),
    )
