"""Opening hours, French public holidays and business-hours deadlines (pure, no I/O).

* :func:`french_public_holidays` computes the closed days of any year: the fixed ones, the
  Easter-based ones (Easter by the anonymous Gregorian computus) and, for the Alsace-Moselle
  départements, Good Friday and 26 December.  Whit Monday is a public holiday; an authority
  that makes it its *journée de solidarité* (a worked day) says so with
  ``solidarity_day_on_whit_monday``; otherwise it is closed like the others.
* A :class:`Schedule` is the opening hours of one service (or of the platform): ranges per
  weekday, public holidays closed, exceptional closures (date ranges with a reason) and
  exceptional openings (a day with its own ranges, which wins over everything else that day).
  Times are wall-clock times in the schedule's time zone (Europe/Paris by default), turned
  into instants day by day so that the DST changes never stretch or shrink a day wrongly.
* :func:`parse_hours` / :func:`parse_schedule` build schedules from plain dicts (what YAML
  gives), with errors that name the key (``hours.apa.monday[1]: '25:00' is not a time HH:MM``).
* :func:`is_open`, :func:`next_opening`, :func:`closed_message` (French text suited to
  speech synthesis: "Il rouvrira lundi 30 novembre à 8 h 30.", then what the caller can do
  meanwhile) and :func:`describe_hours` (the weekly hours, for an informational answer).
* :func:`add_business_hours` and :func:`business_hours_between` count open time only, for the
  deadlines of callback requests (the KPI "callback SLA").

The clock is always passed in: nothing here reads the current time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

logger = logging.getLogger(__name__)

PARIS: Final = "Europe/Paris"
DEFAULT_HORIZON_DAYS: Final = 366
MINUTES_PER_DAY: Final = 24 * 60

WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
FRENCH_WEEKDAYS: Final = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
FRENCH_MONTHS: Final = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)


class HoursConfigError(ValueError):
    """Opening hours given as data are wrong; the message starts with the key's path."""


class NoOpeningError(LookupError):
    """A schedule is never open within the search horizon."""


# --------------------------------------------------------------------------- holidays


def easter_sunday(year: int) -> date:
    """Easter Sunday of ``year`` (Gregorian calendar, anonymous Gregorian computus)."""
    if year < 1583:
        raise ValueError(f"{year}: the Gregorian computus applies from 1583 on")
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    leap = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * leap) // 451
    month, day = divmod(h + leap - 7 * m + 114, 31)
    return date(year, month, day + 1)


def whit_monday(year: int) -> date:
    """Whit Monday (lundi de Pentecôte): Easter + 50 days."""
    return easter_sunday(year) + timedelta(days=50)


@lru_cache(maxsize=256)
def _holidays(year: int, alsace_moselle: bool) -> Mapping[date, str]:
    easter = easter_sunday(year)
    named = [
        (date(year, 1, 1), "Jour de l'an"),
        (easter + timedelta(days=1), "Lundi de Pâques"),
        (date(year, 5, 1), "Fête du Travail"),
        (date(year, 5, 8), "Victoire 1945"),
        (easter + timedelta(days=39), "Ascension"),
        (whit_monday(year), "Lundi de Pentecôte"),
        (date(year, 7, 14), "Fête nationale"),
        (date(year, 8, 15), "Assomption"),
        (date(year, 11, 1), "Toussaint"),
        (date(year, 11, 11), "Armistice 1918"),
        (date(year, 12, 25), "Noël"),
    ]
    if alsace_moselle:
        named += [(easter - timedelta(days=2), "Vendredi saint"), (date(year, 12, 26), "Saint-Étienne")]
    days: dict[date, str] = {}
    for day, name in sorted(named, key=lambda pair: pair[0]):
        # Ascension can fall on 1 or 8 May (2008, 1975): one day, both names.
        days[day] = f"{days[day]} et {name}" if day in days else name
    return days


def french_public_holidays(year: int, *, alsace_moselle: bool = False) -> dict[date, str]:
    """The French public holidays of ``year`` (date -> French name), in date order.

    Two holidays on one day share it: "Fête du Travail et Ascension" (2008).

    ``alsace_moselle`` adds Good Friday and 26 December (Bas-Rhin, Haut-Rhin, Moselle).
    """
    return dict(_holidays(year, alsace_moselle))


# --------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class TimeRange:
    """An opening range within a day, in minutes since midnight: ``start < end <= 1440``."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= MINUTES_PER_DAY:
            raise ValueError(f"bad time range {self.start}-{self.end} (minutes since midnight)")

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


@dataclass(frozen=True)
class Closure:
    """Closed from ``first`` to ``last`` (both included), e.g. a 'fermeture exceptionnelle'."""

    first: date
    last: date
    reason: str

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"closure ends ({self.last}) before it starts ({self.first})")

    def covers(self, day: date) -> bool:
        return self.first <= day <= self.last


@dataclass(frozen=True)
class ExceptionalOpening:
    """Open on ``day`` with these ranges only, whatever the weekly schedule, holidays and closures say."""

    day: date
    ranges: tuple[TimeRange, ...]
    reason: str


@dataclass(frozen=True)
class Schedule:
    """Opening hours of one service or of the platform.

    ``weekly`` holds 7 tuples of ranges, Monday first (an empty tuple: closed that weekday).
    ``label`` is how the messages name it ("le service APA"); ``feminine`` agrees them with a
    feminine label ("la plateforme ... est actuellement fermée. Elle ...").  ``advice`` ends
    the closed message: what the caller can do meanwhile.
    """

    name: str
    weekly: tuple[tuple[TimeRange, ...], ...]
    label: str = ""
    feminine: bool = False
    advice: str = ""
    timezone: str = PARIS
    holidays_closed: bool = True
    alsace_moselle: bool = False
    solidarity_day_on_whit_monday: bool = False
    closures: tuple[Closure, ...] = ()
    openings: tuple[ExceptionalOpening, ...] = ()
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.weekly) != 7:
            raise ValueError(f"weekly must hold 7 days (Monday first), not {len(self.weekly)}")
        for ranges in (*self.weekly, *(o.ranges for o in self.openings)):
            _check_disjoint(ranges)
        days = [o.day for o in self.openings]
        if len(set(days)) != len(days):
            raise ValueError("two exceptional openings on the same day")
        object.__setattr__(self, "_tz", ZoneInfo(self.timezone))
        if not self.label:
            object.__setattr__(self, "label", f"le service {self.name}")

    @property
    def tz(self) -> ZoneInfo:
        return self._tz

    def ranges_on(self, day: date) -> tuple[TimeRange, ...]:
        """The opening ranges of a local calendar day, every rule applied."""
        for opening in self.openings:
            if opening.day == day:
                return opening.ranges
        if any(closure.covers(day) for closure in self.closures):
            return ()
        if self.holidays_closed:
            holiday = day in _holidays(day.year, self.alsace_moselle)
            if holiday and not (self.solidarity_day_on_whit_monday and day == whit_monday(day.year)):
                return ()
        return self.weekly[day.weekday()]


def _check_disjoint(ranges: Sequence[TimeRange]) -> None:
    for before, after in pairwise(ranges):
        if after.start < before.end:
            raise ValueError(f"ranges {before} and {after} overlap or are not in order")


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# --------------------------------------------------------------------------- instants


def _aware(at: datetime, what: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime (with a time zone), got {at.isoformat()}")
    return at


def _instant(schedule: Schedule, day: date, minutes: int) -> datetime:
    """The UTC instant of a wall-clock time of a local day (1440 = the next midnight).

    Python's ``fold=0`` rule: a time repeated by the autumn change is its first occurrence; a
    time skipped by the spring change is read shifted by the change (02:15 -> 03:15 CEST).
    """
    if minutes == MINUTES_PER_DAY:
        day, minutes = day + timedelta(days=1), 0
    local = datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=schedule.tz)
    return local.astimezone(UTC)


def _day_intervals(schedule: Schedule, day: date) -> Iterator[tuple[datetime, datetime]]:
    """The UTC intervals of a local day; one may be empty or reversed in the spring gap (never open)."""
    for rng in schedule.ranges_on(day):
        yield _instant(schedule, day, rng.start), _instant(schedule, day, rng.end)


def _intervals_from(
    schedule: Schedule, start: datetime, *, until: datetime | None = None, max_gap_days: int | None = None
) -> Iterator[tuple[datetime, datetime]]:
    """Open intervals (UTC) after ``start``, clipped to [start, until].

    Stops at ``until``, or after ``max_gap_days`` consecutive local days without an opening.
    """
    day = start.astimezone(schedule.tz).date()
    last_day = until.astimezone(schedule.tz).date() if until is not None else None
    empty_days = 0
    while last_day is None or day <= last_day:
        found = False
        for opens, closes in _day_intervals(schedule, day):
            begin, end = max(opens, start), closes if until is None else min(closes, until)
            if begin < end:
                found = True
                yield begin, end
        empty_days = 0 if found else empty_days + 1
        if max_gap_days is not None and empty_days > max_gap_days:
            return
        day += timedelta(days=1)


def is_open(schedule: Schedule, at: datetime) -> bool:
    """Whether the schedule is open at the instant ``at`` (an aware datetime)."""
    at = _aware(at, "at")
    day = at.astimezone(schedule.tz).date()
    return any(begin <= at < end for begin, end in _day_intervals(schedule, day))


def next_opening(
    schedule: Schedule, at: datetime, *, horizon_days: int = DEFAULT_HORIZON_DAYS
) -> datetime | None:
    """The first instant at or after ``at`` when the schedule is open (``at`` itself if open).

    The result is in the schedule's time zone; ``None`` when nothing opens within
    ``horizon_days`` consecutive closed days.
    """
    at = _aware(at, "at")
    for begin, _end in _intervals_from(schedule, at, max_gap_days=horizon_days):
        return begin.astimezone(schedule.tz)
    return None


# --------------------------------------------------------------------------- message


def speech_time(local: datetime | time) -> str:
    """A time as French speech synthesis reads it well: '8 h 30', '14 h', '9 h 05'."""
    return _speech_minutes(local.hour * 60 + local.minute)


def _speech_minutes(minutes: int) -> str:
    if minutes == MINUTES_PER_DAY:
        return "minuit"
    hour, minute = divmod(minutes, 60)
    return f"{hour} h" if minute == 0 else f"{hour} h {minute:02d}"


def speech_day(day: date, today: date) -> str:
    """'aujourd'hui', 'demain', or 'lundi 30 novembre' / 'vendredi 1er mai'."""
    if day == today:
        return "aujourd'hui"
    if day == today + timedelta(days=1):
        return "demain"
    number = "1er" if day.day == 1 else str(day.day)
    return f"{FRENCH_WEEKDAYS[day.weekday()]} {number} {FRENCH_MONTHS[day.month - 1]}"


def closed_message(schedule: Schedule, at: datetime, *, horizon_days: int = DEFAULT_HORIZON_DAYS) -> str:
    """The French message for a caller reaching a closed service, saying when it reopens.

    ``Le service APA est actuellement fermé. Il rouvrira lundi 30 novembre à 8 h 30.``
    Raises ValueError if the schedule is open at ``at``.
    """
    reopening = next_opening(schedule, at, horizon_days=horizon_days)
    if reopening == at:
        raise ValueError(f"{schedule.name} is open at {at.isoformat()}")
    closed, pronoun = ("fermée", "Elle") if schedule.feminine else ("fermé", "Il")
    sentences = [f"{_capitalised(schedule.label)} est actuellement {closed}."]
    if reopening is not None:
        today = at.astimezone(schedule.tz).date()
        when = f"{speech_day(reopening.date(), today)} à {speech_time(reopening)}"
        sentences.append(f"{pronoun} rouvrira {when}.")
    if schedule.advice:
        sentences.append(schedule.advice)
    return " ".join(sentences)


def describe_hours(schedule: Schedule) -> str:
    """The weekly opening hours as a French sentence for speech synthesis.

    ``Le service APA est ouvert du lundi au vendredi de 8 h 30 à 12 h 30 et de 13 h 30 à 17 h,
    sauf les jours fériés.``  Exceptional closures and openings are not described.
    """
    groups: list[tuple[int, int, tuple[TimeRange, ...]]] = []  # first day, last day, ranges
    for index, ranges in enumerate(schedule.weekly):
        if groups and groups[-1][1] == index - 1 and groups[-1][2] == ranges:
            groups[-1] = (groups[-1][0], index, ranges)
        elif ranges:
            groups.append((index, index, ranges))
    label = _capitalised(schedule.label)
    if not groups:
        return f"{label} n'a pas d'horaires d'ouverture réguliers."
    parts = []
    for first, last, ranges in groups:
        a, b = FRENCH_WEEKDAYS[first], FRENCH_WEEKDAYS[last]
        days = f"le {a}" if first == last else f"le {a} et le {b}" if last == first + 1 else f"du {a} au {b}"
        spans = " et ".join(f"de {_speech_minutes(r.start)} à {_speech_minutes(r.end)}" for r in ranges)
        parts.append(f"{days} {spans}")
    listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])}, et {parts[-1]}"
    except_holidays = ", sauf les jours fériés" if schedule.holidays_closed else ""
    return f"{label} est {'ouverte' if schedule.feminine else 'ouvert'} {listed}{except_holidays}."


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------- business hours


def add_business_hours(
    schedule: Schedule, start: datetime, hours: float, *, horizon_days: int = DEFAULT_HORIZON_DAYS
) -> datetime:
    """The instant when ``hours`` of open time have elapsed since ``start`` (schedule's time zone).

    A deadline that ends exactly at a closing time is that closing time.  ``hours == 0``
    gives ``start``.  Raises NoOpeningError if the schedule stays closed ``horizon_days``
    days in a row before the hours are used up.
    """
    start = _aware(start, "start")
    if hours < 0:
        raise ValueError(f"hours must not be negative, got {hours}")
    remaining = timedelta(hours=hours)
    if not remaining:
        return start.astimezone(schedule.tz)
    for begin, end in _intervals_from(schedule, start, max_gap_days=horizon_days):
        if end - begin >= remaining:
            return (begin + remaining).astimezone(schedule.tz)
        remaining -= end - begin
    raise NoOpeningError(f"{schedule.name} is closed for more than {horizon_days} days in a row")


def business_hours_between(schedule: Schedule, start: datetime, end: datetime) -> float:
    """Open hours between two instants (0 if ``end`` is not after ``start``)."""
    start, end = _aware(start, "start"), _aware(end, "end")
    if end <= start:
        return 0.0
    total = sum((e - b for b, e in _intervals_from(schedule, start, until=end)), timedelta())
    return total / timedelta(hours=1)


# --------------------------------------------------------------------------- parsing

_TIME_RE: Final = re.compile(r"(\d{1,2}):(\d{2})")
_SCHEDULE_KEYS: Final = frozenset(
    {
        *WEEKDAYS,
        "label",
        "feminine",
        "advice",
        "timezone",
        "public_holidays",
        "alsace_moselle",
        "solidarity_day_on_whit_monday",
        "closures",
        "openings",
    }
)


def parse_hours(data: object, *, path: str = "hours") -> dict[str, Schedule]:
    """Schedules by name from a mapping ``{name: {monday: ["08:30-12:30", ...], ...}}``."""
    mapping = _mapping(data, path)
    return {
        str(name): parse_schedule(str(name), body, path=f"{path}.{name}") for name, body in mapping.items()
    }


def parse_schedule(name: str, data: object, *, path: str) -> Schedule:
    """One schedule from a plain dict; every error names its key (``hours.apa.monday[1]: ...``).

    Keys: ``monday`` ... ``sunday`` (lists of "HH:MM-HH:MM", absent = closed), ``label``,
    ``feminine``, ``advice``, ``timezone``, ``public_holidays`` ("closed" or "open"), ``alsace_moselle``,
    ``solidarity_day_on_whit_monday``, ``closures`` (``{from, to, reason}``, ``to`` defaults
    to ``from``) and ``openings`` (``{date, ranges, reason}``).
    """
    body = _mapping(data, path)
    unknown = sorted(str(key) for key in body if key not in _SCHEDULE_KEYS)
    if unknown:
        raise HoursConfigError(
            f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_SCHEDULE_KEYS))})"
        )
    weekly = tuple(_ranges(body.get(day, []), f"{path}.{day}") for day in WEEKDAYS)
    timezone = _string(body.get("timezone", PARIS), f"{path}.timezone")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise HoursConfigError(f"{path}.timezone: unknown time zone {timezone!r}") from exc
    public_holidays = body.get("public_holidays", "closed")
    if public_holidays not in ("closed", "open"):
        raise HoursConfigError(f"{path}.public_holidays: {public_holidays!r} is not 'closed' or 'open'")
    closures = tuple(
        _closure(item, f"{path}.closures[{i}]")
        for i, item in enumerate(_list(body.get("closures", []), f"{path}.closures"))
    )
    openings = tuple(
        _opening(item, f"{path}.openings[{i}]")
        for i, item in enumerate(_list(body.get("openings", []), f"{path}.openings"))
    )
    seen: dict[date, int] = {}
    for i, opening in enumerate(openings):
        if opening.day in seen:
            raise HoursConfigError(
                f"{path}.openings[{i}]: {opening.day} already has an opening (openings[{seen[opening.day]}])"
            )
        seen[opening.day] = i
    return Schedule(
        name=name,
        weekly=weekly,
        label=_string(body.get("label", ""), f"{path}.label"),
        feminine=_bool(body.get("feminine", False), f"{path}.feminine"),
        advice=_string(body.get("advice", ""), f"{path}.advice"),
        timezone=timezone,
        holidays_closed=public_holidays == "closed",
        alsace_moselle=_bool(body.get("alsace_moselle", False), f"{path}.alsace_moselle"),
        solidarity_day_on_whit_monday=_bool(
            body.get("solidarity_day_on_whit_monday", False), f"{path}.solidarity_day_on_whit_monday"
        ),
        closures=closures,
        openings=openings,
    )


def _mapping(data: object, path: str) -> Mapping[object, object]:
    if not isinstance(data, Mapping):
        raise HoursConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data


def _list(data: object, path: str) -> Sequence[object]:
    if not isinstance(data, list | tuple):
        raise HoursConfigError(f"{path}: expected a list, got {type(data).__name__}")
    return data


def _string(data: object, path: str) -> str:
    if not isinstance(data, str):
        raise HoursConfigError(f"{path}: expected a string, got {data!r}")
    return data


def _bool(data: object, path: str) -> bool:
    if not isinstance(data, bool):
        raise HoursConfigError(f"{path}: expected true or false, got {data!r}")
    return data


def _minutes(text: str, path: str, *, allow_midnight_end: bool) -> int:
    match = _TIME_RE.fullmatch(text.strip())
    hour, minute = (int(match.group(1)), int(match.group(2))) if match else (-1, -1)
    if allow_midnight_end and (hour, minute) == (24, 0):
        return MINUTES_PER_DAY
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise HoursConfigError(f"{path}: {text.strip()!r} is not a time HH:MM")
    return hour * 60 + minute


def _ranges(data: object, path: str) -> tuple[TimeRange, ...]:
    if data is None:
        return ()
    ranges: list[TimeRange] = []
    for i, item in enumerate(_list(data, path)):
        item_path = f"{path}[{i}]"
        if not isinstance(item, str) or item.count("-") != 1:
            hint = " (quote it in YAML)" if isinstance(item, int) else ""
            raise HoursConfigError(f"{item_path}: expected a range 'HH:MM-HH:MM', got {item!r}{hint}")
        first, last = item.split("-")
        start = _minutes(first, item_path, allow_midnight_end=False)
        end = _minutes(last, item_path, allow_midnight_end=True)
        if end <= start:
            raise HoursConfigError(f"{item_path}: {item!r} ends before it starts")
        if ranges and start < ranges[-1].end:
            raise HoursConfigError(f"{item_path}: {item!r} overlaps or comes before {ranges[-1]}")
        ranges.append(TimeRange(start, end))
    return tuple(ranges)


def _date(data: object, path: str) -> date:
    if isinstance(data, date) and not isinstance(data, datetime):
        return data
    if isinstance(data, str):
        try:
            return date.fromisoformat(data.strip())
        except ValueError:
            pass
    raise HoursConfigError(f"{path}: {data!r} is not a date YYYY-MM-DD")


def _closure(data: object, path: str) -> Closure:
    body = _mapping(data, path)
    unknown = sorted(str(key) for key in body if key not in ("from", "to", "reason"))
    if unknown:
        raise HoursConfigError(f"{path}: unknown key {unknown[0]!r} (known: from, reason, to)")
    if "from" not in body:
        raise HoursConfigError(f"{path}: missing key 'from'")
    first = _date(body["from"], f"{path}.from")
    last = _date(body.get("to", first), f"{path}.to")
    if last < first:
        raise HoursConfigError(f"{path}.to: {last} is before from ({first})")
    return Closure(first, last, _string(body.get("reason", "fermeture exceptionnelle"), f"{path}.reason"))


def _opening(data: object, path: str) -> ExceptionalOpening:
    body = _mapping(data, path)
    unknown = sorted(str(key) for key in body if key not in ("date", "ranges", "reason"))
    if unknown:
        raise HoursConfigError(f"{path}: unknown key {unknown[0]!r} (known: date, ranges, reason)")
    for key in ("date", "ranges"):
        if key not in body:
            raise HoursConfigError(f"{path}: missing key {key!r}")
    ranges = _ranges(body["ranges"], f"{path}.ranges")
    if not ranges:
        raise HoursConfigError(f"{path}.ranges: an exceptional opening needs at least one range")
    return ExceptionalOpening(
        _date(body["date"], f"{path}.date"),
        ranges,
        _string(body.get("reason", "ouverture exceptionnelle"), f"{path}.reason"),
    )
