"""Caller recognition: number normalisation, withheld numbers, display names, directory, repeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.callers import (
    GREETING_REPEAT_CALLER,
    MAX_DISPLAY_NAME_CHARS,
    MAX_NUMBER_CHARS,
    NOT_RECOGNISED,
    CitizenDirectory,
    CitizenRef,
    ContactRef,
    E164Number,
    InMemoryDirectory,
    InvalidNumber,
    Recognition,
    ShortNumber,
    Withheld,
    display_name,
    normalise,
    presentation_withheld_reason,
    recognise,
)
from tests.agi_transcripts import parse_transcript

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
MOBILE = E164Number("+33612345678", "FR")


# --- normalise ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0612345678", MOBILE),
        ("+33 6 12 34 56 78", MOBILE),
        ("0033612345678", MOBILE),
        ("33612345678", MOBILE),
        ("06.12.34.56.78", MOBILE),
        ("06-12-34-56-78", MOBILE),
        ("  0612345678\t", MOBILE),
        ("0612345678\r", MOBILE),  # a stray CR is whitespace
        ("0141234567", E164Number("+33141234567", "FR")),
        ("+32 2 555 12 12", E164Number("+3225551212", "BE")),
        ("+44 20 7946 0958", E164Number("+442079460958", "GB")),
        # A Guadeloupe mobile dialled with its national 0 from metropolitan France.
        ("0690001234", E164Number("+590690001234", "GP")),
        ("3900", ShortNumber("3900", "FR")),
        ("115", ShortNumber("115", "FR")),
        ("119", ShortNumber("119", "FR")),
        ("36 46", ShortNumber("3646", "FR")),
    ],
)
def test_normalise_valid(raw: str, expected: E164Number | ShortNumber) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("5551234", "not-a-valid-number"),  # the SIPp caller of the recordings
        ("06123", "not-a-valid-number"),
        ("+", "unparsable"),
        ("sipp", "unexpected-characters"),
        ("dial-citizen", "unexpected-characters"),  # a Local ;2 leg's caller number
        ('06"12345678', "unexpected-characters"),
        ("0612345678\nHANGUP", "unexpected-characters"),
        ("٠٦١٢٣٤٥٦٧٨", "unexpected-characters"),  # Arabic-Indic digits, not converted
        ("０６１２３４５６７８", "unexpected-characters"),  # full-width digits
        ("<script>", "unexpected-characters"),
        ("0" * 10_000, "too-long"),
        ("1" * (MAX_NUMBER_CHARS + 1), "too-long"),
    ],
)
def test_normalise_invalid(raw: str, reason: str) -> None:
    result = normalise(raw)
    assert isinstance(result, InvalidNumber)
    assert result.reason == reason
    assert len(result.raw) <= MAX_NUMBER_CHARS


@pytest.mark.parametrize(
    ("raw", "callingpres", "reason"),
    [
        ("", None, "no-number"),
        ("   ", None, "no-number"),
        ("anonymous", None, "anonymous"),
        ("Anonymous", None, "anonymous"),
        ("unknown", None, "unknown"),
        ("Restricted", None, "restricted"),
        ("private", None, "private"),
        # Presentation prohibited (0x20 | screening 0-3): the number is there but must not be used.
        ("0612345678", "32", "presentation-restricted"),
        ("0612345678", "33", "presentation-restricted"),
        ("0612345678", "34", "presentation-restricted"),
        ("0612345678", 35, "presentation-restricted"),
        # Unavailable (0x40 | screening); 67 is AST_PRES_NUMBER_NOT_AVAILABLE.
        ("0612345678", "64", "presentation-unavailable"),
        ("0612345678", "67", "presentation-unavailable"),
        ("0612345678", "97", "presentation-reserved"),
        ("0612345678", " 32 ", "presentation-restricted"),
        ("anonymous", "0", "anonymous"),
    ],
)
def test_withheld(raw: str, callingpres: int | str | None, reason: str) -> None:
    assert normalise(raw, callingpres) == Withheld(reason)


@pytest.mark.parametrize("callingpres", [None, "0", "1", "2", "3", 0, 3, "", "abc", "-32", "256", 999, "3.2"])
def test_allowed_or_unusable_presentation_keeps_the_number(callingpres: int | str | None) -> None:
    assert normalise("0612345678", callingpres) == MOBILE


def test_presentation_mapping_covers_every_restriction_value() -> None:
    for value in range(256):
        reason = presentation_withheld_reason(value)
        assert (reason is None) == (value & 0x60 == 0), value


def test_normalise_the_recorded_environment(captures_dir: Path) -> None:
    transcript = parse_transcript(captures_dir / "round2" / "agi_agi_record_and_vars_recvars_3.txt")
    env = dict(
        line.split(": ", 1) for line in transcript.env_bytes.decode("utf-8").splitlines() if ": " in line
    )
    assert normalise(env["agi_callerid"], env["agi_callingpres"]) == MOBILE


@given(st.text(max_size=300), st.one_of(st.none(), st.integers(), st.text(max_size=10)))
def test_normalise_never_raises(raw: str, callingpres: int | str | None) -> None:
    result = normalise(raw, callingpres)
    assert isinstance(result, E164Number | ShortNumber | Withheld | InvalidNumber)
    if isinstance(result, E164Number):
        assert result.e164.startswith("+")
        assert result.e164[1:].isdigit()
        assert len(result.e164) <= 16


@given(st.from_regex(r"0[67][5-8][0-9]{7}", fullmatch=True))
def test_every_french_mobile_is_e164(raw: str) -> None:
    assert normalise(raw) == E164Number("+33" + raw[1:], "FR")


# --- display_name -------------------------------------------------------------------------------


def test_display_name_on_the_recorded_bytes(captures_dir: Path) -> None:
    transcript = parse_transcript(captures_dir / "round2" / "agi_agi_record_and_vars_recvars_3.txt")
    line = next(x for x in transcript.env_bytes.split(b"\n") if x.startswith(b"agi_calleridname: "))
    raw = line.removeprefix(b"agi_calleridname: ")
    assert raw == b'Zo\xc3\xa9 \\"VIP\\" <Dupr\xc3\xa9>'
    assert display_name(raw) == 'Zoé "VIP" <Dupré>'
    assert display_name(raw.decode("utf-8")) == 'Zoé "VIP" <Dupré>'


def test_display_name_on_the_latin1_recording(captures_dir: Path) -> None:
    # Asterisk replaced the ISO-8859-1 é by U+FFFD itself: the name keeps the replacement char.
    transcript = parse_transcript(captures_dir / "round2" / "agi_agi_record_and_vars_names_4.txt")
    line = next(x for x in transcript.env_bytes.split(b"\n") if x.startswith(b"agi_calleridname: "))
    assert display_name(line.removeprefix(b"agi_calleridname: ")) == 'Zo\ufffd "VIP" <Dupr\ufffd>'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ""),
        ("SIPp Caller", "SIPp Caller"),
        (r"a\\b", "a\\b"),
        (r"a\b", r"a\b"),  # only \" and \\ are escapes
        ("trailing\\", "trailing\\"),
        (r"\\\"", '\\"'),
        ('"already plain"', '"already plain"'),
        ("<b>Dupont & fils</b>", "<b>Dupont & fils</b>"),
        ("line\nbreak", "line\nbreak"),
        (b"\xff\xfeZ", "\ufffd\ufffdZ"),
    ],
)
def test_display_name_cases(raw: str | bytes, expected: str) -> None:
    assert display_name(raw) == expected


def test_display_name_is_bounded() -> None:
    assert display_name("é" * 10_000) == "é" * MAX_DISPLAY_NAME_CHARS
    assert display_name('\\"' * 10_000) == '"' * MAX_DISPLAY_NAME_CHARS


@given(st.text(max_size=500))
def test_display_name_never_raises_and_is_bounded(raw: str) -> None:
    assert len(display_name(raw)) <= MAX_DISPLAY_NAME_CHARS


@given(st.text(alphabet=st.characters(blacklist_characters='\\"'), max_size=MAX_DISPLAY_NAME_CHARS))
def test_display_name_keeps_text_without_escapes(raw: str) -> None:
    assert display_name(raw) == raw


@given(st.text(max_size=MAX_DISPLAY_NAME_CHARS))
def test_display_name_undoes_sip_quoting(name: str) -> None:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    assert display_name(escaped) == name


# --- directory ----------------------------------------------------------------------------------


def contact(
    contact_id: str,
    service: str,
    age: timedelta,
    *,
    closed: bool = False,
    request_id: str | None = None,
) -> ContactRef:
    return ContactRef(contact_id, service, NOW - age, closed, request_id)


async def test_in_memory_directory() -> None:
    directory = InMemoryDirectory()
    checked: CitizenDirectory = directory  # the Protocol is satisfied (mypy checks this line)
    directory.add_citizen(MOBILE.e164, CitizenRef("c-1", "Zoé Dupré"))
    old = contact("k-1", "apa", timedelta(days=30))
    mid = contact("k-2", "apa", timedelta(days=3))
    new = contact("k-3", "pmi", timedelta(hours=1))
    for item in (old, new, mid):
        directory.add_contact(MOBILE.e164, item)
    assert await checked.find_by_number(MOBILE.e164) == CitizenRef("c-1", "Zoé Dupré")
    assert await checked.find_by_number("+33100000000") is None
    assert await checked.recent_contacts(MOBILE.e164, NOW - timedelta(days=7)) == [new, mid]
    assert await checked.recent_contacts(MOBILE.e164, NOW - timedelta(days=30)) == [new, mid, old]
    assert await checked.recent_contacts("+33100000000", NOW - timedelta(days=30)) == []


async def test_in_memory_directory_refuses_naive_datetimes() -> None:
    directory = InMemoryDirectory()
    with pytest.raises(ValueError, match="opened_at must be a timezone-aware"):
        directory.add_contact(MOBILE.e164, ContactRef("k", "apa", datetime(2026, 1, 1), False))
    with pytest.raises(ValueError, match="since must be a timezone-aware"):
        await directory.recent_contacts(MOBILE.e164, datetime(2026, 1, 1))


# --- recognise ----------------------------------------------------------------------------------

WINDOW = 7


@pytest.mark.parametrize(
    ("contacts", "expected"),
    [
        ([], NOT_RECOGNISED),
        # Exactly N days old: inside the window.  One second more: outside.
        (
            [contact("k-1", "apa", timedelta(days=WINDOW))],
            Recognition(True, "k-1", None, GREETING_REPEAT_CALLER, 1),
        ),
        ([contact("k-1", "apa", timedelta(days=WINDOW, seconds=1))], NOT_RECOGNISED),
        # Another service does not count.
        ([contact("k-1", "pmi", timedelta(days=1))], NOT_RECOGNISED),
        # A closed contact still makes a repeat caller, with nothing to pass on.
        (
            [contact("k-1", "apa", timedelta(days=1), closed=True, request_id="r-1")],
            Recognition(True, None, None, GREETING_REPEAT_CALLER, 1),
        ),
        # The most recent open contact is passed on, with its request, even if a closed one is newer.
        (
            [
                contact("k-1", "apa", timedelta(days=5), request_id="r-1"),
                contact("k-2", "apa", timedelta(days=2), request_id="r-2"),
                contact("k-3", "apa", timedelta(hours=2), closed=True),
                contact("k-4", "pmi", timedelta(hours=1), request_id="r-4"),
            ],
            Recognition(True, "k-2", "r-2", GREETING_REPEAT_CALLER, 3),
        ),
        # A contact dated a little after now (clock skew between nodes) counts.
        (
            [contact("k-1", "apa", -timedelta(seconds=2))],
            Recognition(True, "k-1", None, GREETING_REPEAT_CALLER, 1),
        ),
    ],
)
def test_recognise(contacts: list[ContactRef], expected: Recognition) -> None:
    assert recognise(MOBILE, contacts, "apa", NOW, WINDOW) == expected


@pytest.mark.parametrize(
    "number",
    [Withheld("anonymous"), ShortNumber("3900", "FR"), InvalidNumber("sipp", "unexpected-characters")],
)
def test_only_real_numbers_are_recognised(number: Withheld | ShortNumber | InvalidNumber) -> None:
    contacts = [contact("k-1", "apa", timedelta(days=1))]
    assert recognise(number, contacts, "apa", NOW, WINDOW) == NOT_RECOGNISED


def test_recognise_with_a_zero_day_window() -> None:
    today = contact("k-1", "apa", timedelta(0))
    earlier = contact("k-2", "apa", timedelta(minutes=1))
    assert recognise(MOBILE, [today, earlier], "apa", NOW, 0).contacts_in_window == 1


def test_recognise_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="window_days must be >= 0"):
        recognise(MOBILE, [], "apa", NOW, -1)
    with pytest.raises(ValueError, match="now must be a timezone-aware"):
        recognise(MOBILE, [], "apa", datetime(2026, 1, 1), WINDOW)


async def test_recognise_from_the_directory() -> None:
    # The way the menu engine chains them: normalise, ask the directory, recognise.
    directory = InMemoryDirectory()
    directory.add_contact(MOBILE.e164, contact("k-9", "mdph", timedelta(days=2), request_id="r-9"))
    number = normalise("0612345678", "0")
    assert isinstance(number, E164Number)
    contacts = await directory.recent_contacts(number.e164, NOW - timedelta(days=WINDOW))
    assert recognise(number, contacts, "mdph", NOW, WINDOW) == Recognition(
        True, "k-9", "r-9", GREETING_REPEAT_CALLER, 1
    )
