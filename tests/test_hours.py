"""Opening hours, French public holidays and business-hours deadlines (ivr.hours)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.hours import (
    WEEKDAYS,
    Closure,
    ExceptionalOpening,
    HoursConfigError,
    NoOpeningError,
    Schedule,
    TimeRange,
    add_business_hours,
    business_hours_between,
    closed_message,
    describe_hours,
    easter_sunday,
    french_public_holidays,
    is_open,
    next_opening,
    parse_hours,
    parse_schedule,
)

PARIS = ZoneInfo("Europe/Paris")
OFFICE = ["08:30-12:30", "13:30-17:00"]  # 7.5 open hours a day
WORKDAYS = {day: OFFICE for day in WEEKDAYS[:5]}


def paris(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=PARIS)


def schedule(name: str = "apa", **body: Any) -> Schedule:
    return parse_schedule(
        name, {**WORKDAYS, "label": f"le service {name.upper()}", **body}, path=f"hours.{name}"
    )


APA = schedule()


# --------------------------------------------------------------------------- holidays


@pytest.mark.parametrize(
    ("year", "easter"),
    [
        (2024, date(2024, 3, 31)),
        (2025, date(2025, 4, 20)),
        (2026, date(2026, 4, 5)),
        (2027, date(2027, 3, 28)),
        (2038, date(2038, 4, 25)),  # the latest possible date
        (2285, date(2285, 3, 22)),  # the earliest possible date
        (2000, date(2000, 4, 23)),
    ],
)
def test_easter_known_dates(year: int, easter: date) -> None:
    assert easter_sunday(year) == easter


def test_holidays_of_2026() -> None:
    assert french_public_holidays(2026) == {
        date(2026, 1, 1): "Jour de l'an",
        date(2026, 4, 6): "Lundi de Pâques",
        date(2026, 5, 1): "Fête du Travail",
        date(2026, 5, 8): "Victoire 1945",
        date(2026, 5, 14): "Ascension",
        date(2026, 5, 25): "Lundi de Pentecôte",
        date(2026, 7, 14): "Fête nationale",
        date(2026, 8, 15): "Assomption",
        date(2026, 11, 1): "Toussaint",
        date(2026, 11, 11): "Armistice 1918",
        date(2026, 12, 25): "Noël",
    }


@pytest.mark.parametrize(
    ("year", "day", "name"),
    [
        (2008, date(2008, 5, 1), "Fête du Travail et Ascension"),
        (1975, date(1975, 5, 8), "Victoire 1945 et Ascension"),
    ],
)
def test_two_holidays_on_one_day(year: int, day: date, name: str) -> None:
    holidays = french_public_holidays(year)
    assert holidays[day] == name
    assert len(holidays) == 10


def test_alsace_moselle_adds_good_friday_and_saint_stephen() -> None:
    extra = french_public_holidays(2026, alsace_moselle=True).keys() - french_public_holidays(2026).keys()
    assert extra == {date(2026, 4, 3), date(2026, 12, 26)}


def test_the_result_is_a_copy() -> None:
    french_public_holidays(2026).clear()
    assert len(french_public_holidays(2026)) == 11


def test_easter_before_the_gregorian_calendar_is_refused() -> None:
    with pytest.raises(ValueError, match="1583"):
        easter_sunday(1500)


@given(st.integers(min_value=1583, max_value=9999), st.booleans())
def test_easter_based_holidays_fall_on_the_right_weekdays(year: int, alsace: bool) -> None:
    easter = easter_sunday(year)
    assert easter.weekday() == 6
    assert date(year, 3, 22) <= easter <= date(year, 4, 25)
    holidays = french_public_holidays(year, alsace_moselle=alsace)
    names = {name: day for day, names in holidays.items() for name in names.split(" et ")}
    assert names["Lundi de Pâques"].weekday() == 0
    assert names["Ascension"].weekday() == 3
    assert names["Ascension"] == easter + timedelta(days=39)
    assert names["Lundi de Pentecôte"].weekday() == 0
    assert len(names) == (13 if alsace else 11)
    assert all(day.year == year for day in holidays)
    assert list(holidays) == sorted(holidays)
    if alsace:
        assert names["Vendredi saint"].weekday() == 4


# --------------------------------------------------------------------------- is_open / next_opening


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (paris(2026, 11, 30, 8, 29), False),
        (paris(2026, 11, 30, 8, 30), True),
        (paris(2026, 11, 30, 12, 29), True),
        (paris(2026, 11, 30, 12, 30), False),
        (paris(2026, 11, 30, 13, 30), True),
        (paris(2026, 11, 30, 17, 0) - timedelta(microseconds=1), True),
        (paris(2026, 11, 30, 17, 0), False),
        (paris(2026, 11, 28, 10, 0), False),  # Saturday
        (paris(2026, 11, 11, 10, 0), False),  # Armistice, a Wednesday
        (paris(2026, 12, 25, 10, 0), False),  # Christmas, a Friday
        (datetime(2026, 11, 30, 7, 30, tzinfo=UTC), True),  # 8:30 in Paris (UTC+1)
        (datetime(2026, 6, 1, 6, 29, tzinfo=UTC), False),  # 8:29 in Paris (UTC+2)
        (datetime(2026, 6, 1, 6, 30, tzinfo=UTC), True),
    ],
)
def test_is_open(at: datetime, expected: bool) -> None:
    assert is_open(APA, at) is expected


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        is_open(APA, datetime(2026, 11, 30, 10, 0))
    with pytest.raises(ValueError, match="aware"):
        add_business_hours(APA, datetime(2026, 11, 30, 10, 0), 1)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (paris(2026, 11, 28, 15, 0), paris(2026, 11, 30, 8, 30)),  # Saturday -> Monday
        (paris(2026, 11, 30, 12, 45), paris(2026, 11, 30, 13, 30)),  # lunch break
        (paris(2026, 11, 30, 10, 0), paris(2026, 11, 30, 10, 0)),  # open: now
        (paris(2026, 11, 10, 18, 0), paris(2026, 11, 12, 8, 30)),  # over Armistice
        (paris(2026, 5, 13, 17, 0), paris(2026, 5, 15, 8, 30)),  # over Ascension
    ],
)
def test_next_opening(at: datetime, expected: datetime) -> None:
    found = next_opening(APA, at)
    assert found == expected
    assert found is not None
    assert found.tzinfo == PARIS


def test_next_opening_gives_up_after_the_horizon() -> None:
    never = parse_schedule("never", {}, path="hours.never")
    assert next_opening(never, paris(2026, 11, 30)) is None
    closed = schedule(closures=[{"from": "2026-12-01", "to": "2027-01-31", "reason": "travaux"}])
    assert next_opening(closed, paris(2026, 11, 30, 18), horizon_days=30) is None
    assert next_opening(closed, paris(2026, 11, 30, 18)) == paris(2027, 2, 1, 8, 30)


def test_exceptional_closure() -> None:
    closed = schedule(
        closures=[{"from": date(2026, 12, 24), "to": date(2026, 12, 31), "reason": "fermeture"}]
    )
    assert not is_open(closed, paris(2026, 12, 28, 10))
    assert is_open(closed, paris(2026, 12, 23, 10))
    assert next_opening(closed, paris(2026, 12, 23, 18)) == paris(2027, 1, 4, 8, 30)


def test_exceptional_opening_wins_over_weekend_holiday_and_closure() -> None:
    special = schedule(
        closures=[{"from": "2026-12-01", "to": "2026-12-31"}],
        openings=[
            {"date": "2026-12-05", "ranges": ["09:00-12:00"], "reason": "journée portes ouvertes"},
            {"date": "2026-12-25", "ranges": ["10:00-11:00"]},
        ],
    )
    assert is_open(special, paris(2026, 12, 5, 9))  # a Saturday in the closure
    assert not is_open(special, paris(2026, 12, 5, 12))
    assert is_open(special, paris(2026, 12, 25, 10, 30))  # Christmas
    assert not is_open(special, paris(2026, 12, 7, 10))  # the closure otherwise holds
    assert next_opening(special, paris(2026, 12, 5, 12)) == paris(2026, 12, 25, 10)


def test_alsace_moselle_and_solidarity_day_and_open_holidays() -> None:
    good_friday, whit_monday = paris(2026, 4, 3, 10), paris(2026, 5, 25, 10)
    assert is_open(APA, good_friday)
    assert not is_open(schedule(alsace_moselle=True), good_friday)
    assert not is_open(schedule(alsace_moselle=True), paris(2025, 12, 26, 10))
    assert not is_open(APA, whit_monday)
    assert is_open(schedule(solidarity_day_on_whit_monday=True), whit_monday)
    assert not is_open(schedule(solidarity_day_on_whit_monday=True), paris(2026, 5, 14, 10))
    assert is_open(schedule(public_holidays="open"), paris(2026, 11, 11, 10))


# --------------------------------------------------------------------------- DST

NIGHT = parse_schedule("night", {"sunday": ["01:00-05:00"], "saturday": ["02:00-03:00"]}, path="hours.night")


def test_dst_spring_forward() -> None:
    # 29 March 2026: 02:00 CET jumps to 03:00 CEST; 01:00-05:00 lasts 3 real hours.
    assert business_hours_between(NIGHT, paris(2026, 3, 29), paris(2026, 3, 30)) == 3.0
    assert is_open(NIGHT, datetime(2026, 3, 29, 1, 30, tzinfo=UTC))  # 03:30 CEST
    assert not is_open(NIGHT, datetime(2026, 3, 29, 3, 0, tzinfo=UTC))  # 05:00 CEST
    assert add_business_hours(NIGHT, paris(2026, 3, 29), 2) == datetime(2026, 3, 29, 2, 0, tzinfo=UTC)
    # Monday after the change: the office opens at 08:30 summer time.
    assert next_opening(APA, paris(2026, 3, 28, 12)) == datetime(2026, 3, 30, 6, 30, tzinfo=UTC)
    # Friday 16:00 + 24 h: 1 (Fri) + 7.5 + 7.5 + 7.5 (Mon-Wed) + 0.5 on Thursday.
    assert add_business_hours(APA, paris(2026, 3, 27, 16), 24) == paris(2026, 4, 2, 9)


def test_dst_fall_back() -> None:
    # 25 October 2026: 03:00 CEST goes back to 02:00 CET; 01:00-05:00 lasts 5 real hours.
    assert business_hours_between(NIGHT, paris(2026, 10, 25), paris(2026, 10, 26)) == 5.0
    assert is_open(NIGHT, datetime(2026, 10, 25, 0, 30, tzinfo=UTC))  # first 02:30
    assert is_open(NIGHT, datetime(2026, 10, 25, 1, 30, tzinfo=UTC))  # second 02:30
    assert not is_open(NIGHT, datetime(2026, 10, 25, 4, 0, tzinfo=UTC))  # 05:00 CET
    assert next_opening(APA, paris(2026, 10, 24, 12)) == datetime(2026, 10, 26, 7, 30, tzinfo=UTC)


def test_a_range_inside_the_spring_gap_does_not_exist() -> None:
    # Saturday 02:00-03:00 on an ordinary Saturday: 1 h; the Saturday before the change is ordinary too.
    assert business_hours_between(NIGHT, paris(2026, 3, 28), paris(2026, 3, 28, 12)) == 1.0
    gap = parse_schedule("gap", {"sunday": ["02:00-03:00"]}, path="hours.gap")
    assert business_hours_between(gap, paris(2026, 3, 29), paris(2026, 3, 30)) == 0.0
    assert next_opening(gap, paris(2026, 3, 29)) == paris(2026, 4, 5, 2)
    assert not is_open(gap, datetime(2026, 3, 29, 1, 0, tzinfo=UTC))  # 03:00 CEST
    # A range that starts in the gap begins when the clocks say that time shifted by 1 h.
    late = parse_schedule("late", {"sunday": ["02:30-04:00"]}, path="hours.late")
    assert business_hours_between(late, paris(2026, 3, 29), paris(2026, 3, 30)) == 0.5
    assert next_opening(late, paris(2026, 3, 29)) == paris(2026, 3, 29, 3, 30)
    # In autumn the wall-clock hour 02:00-03:00 happens twice: 2 real hours.
    assert business_hours_between(gap, paris(2026, 10, 25), paris(2026, 10, 26)) == 2.0


# --------------------------------------------------------------------------- closed message


@pytest.mark.parametrize(
    ("at", "text"),
    [
        (
            paris(2026, 11, 28, 15),
            "Le service APA est actuellement fermé. Il rouvrira lundi 30 novembre à 8 h 30.",
        ),
        (
            paris(2026, 11, 30, 12, 45),
            "Le service APA est actuellement fermé. Il rouvrira aujourd'hui à 13 h 30.",
        ),
        (paris(2026, 11, 30, 18), "Le service APA est actuellement fermé. Il rouvrira demain à 8 h 30."),
        (paris(2026, 12, 1, 7), "Le service APA est actuellement fermé. Il rouvrira aujourd'hui à 8 h 30."),
        (
            paris(2027, 2, 27, 9),
            "Le service APA est actuellement fermé. Il rouvrira lundi 1er mars à 8 h 30.",
        ),
        (
            paris(2026, 8, 14, 18),
            "Le service APA est actuellement fermé. Il rouvrira lundi 17 août à 8 h 30.",
        ),
    ],
)
def test_closed_message(at: datetime, text: str) -> None:
    assert closed_message(APA, at) == text


def test_closed_message_feminine_label_and_times() -> None:
    platform = parse_schedule(
        "platform",
        {"label": "la plateforme d'accueil", "feminine": True, "friday": ["09:05-12:00", "14:00-18:00"]},
        path="hours.platform",
    )
    assert closed_message(platform, paris(2026, 11, 26, 20)) == (
        "La plateforme d'accueil est actuellement fermée. Elle rouvrira demain à 9 h 05."
    )
    assert closed_message(platform, paris(2026, 11, 27, 12)).endswith("Elle rouvrira aujourd'hui à 14 h.")


def test_closed_message_without_reopening_and_when_open() -> None:
    never = parse_schedule("never", {"label": "le service RSA"}, path="hours.never")
    assert closed_message(never, paris(2026, 11, 30)) == "Le service RSA est actuellement fermé."
    with pytest.raises(ValueError, match="open"):
        closed_message(APA, paris(2026, 11, 30, 10))


def test_closed_message_ends_with_the_advice() -> None:
    advice = "Vous pouvez laisser une demande de rappel en tapant 1."
    assert closed_message(schedule(advice=advice), paris(2026, 11, 30, 18)) == (
        f"Le service APA est actuellement fermé. Il rouvrira demain à 8 h 30. {advice}"
    )


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            {},
            "Le service APA est ouvert du lundi au vendredi de 8 h 30 à 12 h 30 et de 13 h 30 à 17 h,"
            " sauf les jours fériés.",
        ),
        (
            {"friday": ["09:00-12:00"], "saturday": ["09:00-12:00"], "public_holidays": "open"},
            "Le service APA est ouvert du lundi au jeudi de 8 h 30 à 12 h 30 et de 13 h 30 à 17 h,"
            " et le vendredi et le samedi de 9 h à 12 h.",
        ),
        (
            {"tuesday": [], "wednesday": ["14:00-24:00"], "thursday": []},
            "Le service APA est ouvert le lundi de 8 h 30 à 12 h 30 et de 13 h 30 à 17 h,"
            " le mercredi de 14 h à minuit, et le vendredi de 8 h 30 à 12 h 30 et de 13 h 30 à 17 h,"
            " sauf les jours fériés.",
        ),
        (
            {**{day: [] for day in WEEKDAYS}, "feminine": True},
            "Le service APA n'a pas d'horaires d'ouverture réguliers.",
        ),
    ],
)
def test_describe_hours(body: dict[str, Any], text: str) -> None:
    assert describe_hours(schedule(**body)) == text


def test_describe_hours_agrees_with_a_feminine_label() -> None:
    platform = parse_schedule(
        "p", {"label": "la plateforme", "feminine": True, "sunday": ["10:00-11:00"]}, path="p"
    )
    assert (
        describe_hours(platform)
        == "La plateforme est ouverte le dimanche de 10 h à 11 h, sauf les jours fériés."
    )


def test_default_label_names_the_service() -> None:
    plain = parse_schedule("pmi", {}, path="hours.pmi")
    assert closed_message(plain, paris(2026, 11, 30)) == "Le service pmi est actuellement fermé."


# --------------------------------------------------------------------------- business hours


@pytest.mark.parametrize(
    ("start", "hours", "deadline"),
    [
        # Friday 16:00, 24 business hours: 1 + 7.5 (Mon) + 7.5 (Tue) + 7.5 (Wed) + 0.5 (Thu).
        (paris(2026, 11, 27, 16), 24, paris(2026, 12, 3, 9)),
        # Wednesday before Ascension: 1 h, Thursday closed, then 7 h on the bridge Friday.
        (paris(2026, 5, 13, 16), 8, paris(2026, 5, 15, 16, 30)),
        # Friday 8 May (holiday) 16:00: Monday to Wednesday 22.5 h, Ascension, 1.5 h on Friday.
        (paris(2026, 5, 8, 16), 24, paris(2026, 5, 15, 10)),
        # A deadline that ends at closing time stays there.
        (paris(2026, 11, 30, 8, 30), 7.5, paris(2026, 11, 30, 17)),
        (paris(2026, 11, 30, 12, 0), 0.5, paris(2026, 11, 30, 12, 30)),
        (paris(2026, 11, 30, 12, 0), 0.75, paris(2026, 11, 30, 13, 45)),
        # Requested on a Saturday: counting starts on Monday.
        (paris(2026, 11, 28, 11), 1, paris(2026, 11, 30, 9, 30)),
        (paris(2026, 11, 28, 11), 0, paris(2026, 11, 28, 11)),
    ],
)
def test_add_business_hours(start: datetime, hours: float, deadline: datetime) -> None:
    assert add_business_hours(APA, start, hours) == deadline
    assert business_hours_between(APA, start, deadline) == hours


def test_ascension_bridge_closed_and_whit_monday() -> None:
    bridge = schedule(closures=[{"from": "2026-05-15", "reason": "pont de l'Ascension"}])
    # Wed 1 h, Thu Ascension, Fri bridge, Mon 18 7.5, Tue 7.5, Wed 7.5, then 0.5 h on Thursday 21.
    assert add_business_hours(bridge, paris(2026, 5, 13, 16), 24) == paris(2026, 5, 21, 9)
    # Across Whit Monday (25 May): Friday 22 16:00 + 8 h -> Tuesday 26 16:30.
    assert add_business_hours(bridge, paris(2026, 5, 22, 16), 8) == paris(2026, 5, 26, 16, 30)


def test_business_hours_between() -> None:
    assert business_hours_between(APA, paris(2026, 11, 27, 16), paris(2026, 11, 30, 10)) == 2.5
    assert business_hours_between(APA, paris(2026, 11, 30), paris(2026, 12, 7)) == 37.5
    assert business_hours_between(APA, paris(2026, 11, 9), paris(2026, 11, 16)) == 30.0  # Armistice week
    assert business_hours_between(APA, paris(2026, 11, 30, 10), paris(2026, 11, 30, 9)) == 0.0
    assert business_hours_between(APA, paris(2026, 11, 28), paris(2026, 11, 29)) == 0.0


def test_add_business_hours_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="negative"):
        add_business_hours(APA, paris(2026, 11, 30), -1)
    never = parse_schedule("never", {}, path="hours.never")
    with pytest.raises(NoOpeningError, match="never"):
        add_business_hours(never, paris(2026, 11, 30), 1, horizon_days=10)


instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
).map(lambda at: at.replace(microsecond=0))


@settings(max_examples=200, deadline=None)
@given(instants, st.floats(min_value=0, max_value=300, allow_nan=False))
def test_add_then_measure_gives_back_the_hours(start: datetime, hours: float) -> None:
    deadline = add_business_hours(APA, start, hours)
    assert deadline >= start
    assert business_hours_between(APA, start, deadline) == pytest.approx(hours, abs=1e-6)
    if hours > 1e-6:
        # The deadline is reached while open (or exactly at a closing time).
        assert is_open(APA, deadline - timedelta(microseconds=1))


@settings(max_examples=200, deadline=None)
@given(
    instants,
    st.integers(min_value=0, max_value=20 * 24 * 60),
    st.integers(min_value=0, max_value=20 * 24 * 60),
)
def test_business_hours_add_up(start: datetime, first: int, second: int) -> None:
    middle = start + timedelta(minutes=first)
    end = middle + timedelta(minutes=second)
    whole = business_hours_between(APA, start, end)
    assert whole == pytest.approx(
        business_hours_between(APA, start, middle) + business_hours_between(APA, middle, end)
    )
    assert whole <= (end - start) / timedelta(hours=1)


@settings(max_examples=200, deadline=None)
@given(instants)
def test_next_opening_is_open_and_nothing_opens_before(at: datetime) -> None:
    found = next_opening(APA, at)
    assert found is not None
    assert is_open(APA, found)
    assert (found == at) is is_open(APA, at)
    assert business_hours_between(APA, at, found) == 0.0


# --------------------------------------------------------------------------- parsing

YAML_HOURS = """
hours:
  platform:
    label: la plateforme d'accueil
    feminine: true
    monday: ["08:30-12:30", "13:30-17:00"]
    tuesday: ["08:30-17:00"]
    saturday:
    alsace_moselle: true
    closures:
      - {from: 2026-12-24, to: 2026-12-31, reason: fermeture exceptionnelle}
    openings:
      - {date: 2026-12-05, ranges: ["09:00-12:00"], reason: forum}
  emergencies:
    label: la cellule d'urgence
    public_holidays: open
    sunday: ["00:00-24:00"]
"""


def test_parse_hours_from_yaml() -> None:
    hours = parse_hours(yaml.safe_load(YAML_HOURS)["hours"])
    platform = hours["platform"]
    assert platform.feminine and platform.alsace_moselle
    assert [str(r) for r in platform.weekly[0]] == ["08:30-12:30", "13:30-17:00"]
    assert platform.weekly[5] == () == platform.weekly[6]
    assert platform.closures[0].first == date(2026, 12, 24)
    assert platform.closures[0].reason == "fermeture exceptionnelle"
    assert platform.openings[0].day == date(2026, 12, 5)
    assert is_open(platform, paris(2026, 12, 5, 9))
    emergencies = hours["emergencies"]
    assert business_hours_between(emergencies, paris(2026, 11, 29), paris(2026, 11, 30, 12)) == 24.0
    assert is_open(emergencies, paris(2026, 11, 29, 23, 59))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"monday": ["08:30-12:30", "13:30-25:00"]}, "hours.apa.monday[1]: '25:00' is not a time HH:MM"),
        ({"monday": ["08:61-12:30"]}, "hours.apa.monday[0]: '08:61' is not a time HH:MM"),
        ({"monday": ["24:00-24:00"]}, "hours.apa.monday[0]: '24:00' is not a time HH:MM"),
        ({"monday": ["08:30"]}, "hours.apa.monday[0]: expected a range 'HH:MM-HH:MM', got '08:30'"),
        (
            {"monday": [510]},
            "hours.apa.monday[0]: expected a range 'HH:MM-HH:MM', got 510 (quote it in YAML)",
        ),
        ({"monday": "08:30-12:30"}, "hours.apa.monday: expected a list, got str"),
        ({"tuesday": ["12:00-10:00"]}, "hours.apa.tuesday[0]: '12:00-10:00' ends before it starts"),
        ({"friday": ["08:00-12:00", "11:00-13:00"]}, "hours.apa.friday[1]: '11:00-13:00' overlaps"),
        ({"mondy": []}, "hours.apa: unknown key 'mondy'"),
        ({"timezone": "Europe/Paaris"}, "hours.apa.timezone: unknown time zone 'Europe/Paaris'"),
        ({"public_holidays": "maybe"}, "hours.apa.public_holidays: 'maybe' is not 'closed' or 'open'"),
        ({"feminine": "yes"}, "hours.apa.feminine: expected true or false, got 'yes'"),
        ({"label": 3}, "hours.apa.label: expected a string, got 3"),
        ({"advice": ["x"]}, "hours.apa.advice: expected a string, got ['x']"),
        ({"closures": [{"to": "2026-12-01"}]}, "hours.apa.closures[0]: missing key 'from'"),
        (
            {"closures": [{"from": "2026-02-30"}]},
            "hours.apa.closures[0].from: '2026-02-30' is not a date YYYY-MM-DD",
        ),
        (
            {"closures": [{"from": "2026-12-02", "to": "2026-12-01"}]},
            "hours.apa.closures[0].to: 2026-12-01 is before from (2026-12-02)",
        ),
        ({"closures": [{"from": "2026-12-02", "until": "x"}]}, "hours.apa.closures[0]: unknown key 'until'"),
        ({"closures": {"from": "2026-12-02"}}, "hours.apa.closures: expected a list, got dict"),
        ({"openings": [{"date": "2026-12-05"}]}, "hours.apa.openings[0]: missing key 'ranges'"),
        (
            {"openings": [{"date": "2026-12-05", "ranges": []}]},
            "hours.apa.openings[0].ranges: an exceptional",
        ),
        (
            {"openings": [{"date": "2026-12-05", "ranges": ["09:00-25:00"]}]},
            "hours.apa.openings[0].ranges[0]: '25:00' is not a time HH:MM",
        ),
        (
            {"openings": [{"date": "2026-12-05", "ranges": ["09:00-10:00"]}] * 2},
            "hours.apa.openings[1]: 2026-12-05 already has an opening (openings[0])",
        ),
    ],
)
def test_parse_errors_name_the_key(body: dict[str, Any], message: str) -> None:
    with pytest.raises(HoursConfigError) as caught:
        parse_hours({"apa": body})
    assert str(caught.value).startswith(message)


def test_parse_refuses_a_non_mapping_and_a_datetime() -> None:
    with pytest.raises(HoursConfigError, match=r"^hours: expected a mapping, got list"):
        parse_hours([])
    with pytest.raises(HoursConfigError, match=r"^hours.apa: expected a mapping, got str"):
        parse_hours({"apa": "closed"})
    with pytest.raises(HoursConfigError, match=r"closures\[0\].from: .* is not a date"):
        parse_hours({"apa": {"closures": [{"from": datetime(2026, 12, 1, 10)}]}})


def test_schedule_checks_direct_construction() -> None:
    with pytest.raises(ValueError, match="7 days"):
        Schedule(name="x", weekly=((),) * 6)
    with pytest.raises(ValueError, match="bad time range"):
        TimeRange(600, 600)
    with pytest.raises(ValueError, match="bad time range"):
        TimeRange(0, 1441)
    with pytest.raises(ValueError, match="before it starts"):
        Closure(date(2026, 12, 2), date(2026, 12, 1), "x")
    with pytest.raises(ValueError, match="overlap"):
        Schedule(name="x", weekly=((TimeRange(600, 700), TimeRange(650, 800)), *((),) * 6))
    with pytest.raises(ValueError, match="overlap"):
        Schedule(name="x", weekly=((TimeRange(700, 800), TimeRange(600, 650)), *((),) * 6))
    twice = ExceptionalOpening(date(2026, 12, 5), (TimeRange(600, 700),), "forum")
    with pytest.raises(ValueError, match="same day"):
        Schedule(name="x", weekly=((),) * 7, openings=(twice, twice))
