"""Spoken menu answers end to end: the menu engine records with RECORD FILE on the simulated PBX,
which writes what the scripted caller says; the real Vosk Korean model recognises it.

The menu is written here with Korean keywords (see tests/test_speech.py: the words this model
truly recognises from espeak-ng audio).  Assertions are on what the simulated PBX observed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from guichet.config import ConfigError, Secret, parse_settings
from guichet.engine import Engine, default_menu_engine, default_menu_engine_of
from guichet.names import GUICHET_QUEUE, GUICHET_REASON
from ivr.agi_server import FastAgiServer
from ivr.menu_engine import MenuEngine
from ivr.menus import MenuNode
from ivr.prompt_names import sound_name, tts_name
from ivr.routes import build_routes
from ivr.speech import SpeechResult, VoskRecogniser, read_wav
from pbx_sim import CallerScript, KeyPress
from pbx_sim.agi_client import write_recording
from tests.conftest import REPO
from tests.test_menu_engine import NUMBER, OPEN, Observed, place
from tests.test_speech import MODEL_PATH, speak

MENU = """\
start: menu
nodes:
  menu:
    type: menu
    text: Pour maman, dites-le ou tapez 1. Pour papa, dites-le ou tapez 2.
    no_input: Nous n'avons pas entendu votre choix.
    timeout: 2
    retries: 1
    choices:
      "1":
        next: apa
        keywords: [엄마]
      "2":
        next: pmi
        keywords: [아빠]
    fallback: accueil
  apa:
    type: queue
    text: Un conseiller autonomie va vous répondre.
    queue: apa
    urgency: normal
    reason: parole-apa
  pmi:
    type: queue
    text: Un conseiller PMI va vous répondre.
    queue: pmi
    urgency: normal
    reason: parole-pmi
  accueil:
    type: queue
    text: Un conseiller va vous répondre.
    queue: accueil
    urgency: normal
    reason: parole-repli
"""


class SpyRecogniser:
    """The real recogniser, counting the answers it was asked to recognise."""

    def __init__(self, recogniser: VoskRecogniser) -> None:
        self.recogniser = recogniser
        self.results: list[SpeechResult] = []

    def recognise(self, audio: bytes, keywords: Mapping[str, Sequence[str]]) -> SpeechResult:
        result = self.recogniser.recognise(audio, keywords)
        self.results.append(result)
        return result


@pytest.fixture(scope="module")
def vosk() -> VoskRecogniser:
    return VoskRecogniser(MODEL_PATH)


def menu_dir(folder: Path) -> Path:
    """The speech menu beside a copy of the shipped settings (hours and urgency rules)."""
    (folder / "settings").mkdir(parents=True)
    for settings in (REPO / "dialplans" / "settings").glob("*.yaml"):
        (folder / "settings" / settings.name).write_text(
            settings.read_text(encoding="utf-8"), encoding="utf-8"
        )
    (folder / "guichet.yaml").write_text(MENU, encoding="utf-8")
    return folder


async def call(engine: MenuEngine, script: CallerScript) -> Observed:
    async with FastAgiServer(build_routes(engine), port=0) as server:
        return await place(server.port, script)


def recordings(seen: Observed) -> list[str]:
    return [c for c in seen.agi_commands() if c.startswith("RECORD FILE")]


@pytest.fixture
def rig(tmp_path: Path, vosk: VoskRecogniser) -> tuple[MenuEngine, SpyRecogniser, Path]:
    spy = SpyRecogniser(vosk)
    records = tmp_path / "records"
    records.mkdir()
    engine = default_menu_engine(
        menu_dir(tmp_path / "menus"), now=lambda: OPEN, recogniser=spy, record_dir=records
    )
    return engine, spy, records


@pytest.mark.parametrize(("word", "queue"), [("엄마", "apa"), ("아빠", "pmi")])
async def test_a_spoken_keyword_chooses_its_key(
    rig: tuple[MenuEngine, SpyRecogniser, Path], word: str, queue: str
) -> None:
    engine, spy, records = rig
    seen = await call(engine, CallerScript(NUMBER, utterances=[speak(word)]))
    assert seen.variables[GUICHET_QUEUE] == seen.outcome.queue == queue
    assert seen.variables[GUICHET_REASON] == f"parole-{queue}"
    [command] = recordings(seen)
    assert re.fullmatch(
        rf"RECORD FILE {re.escape(str(records))}/guichet-[0-9.]+-1 wav 12 2000 0 s=2", command
    )
    assert [(r.choice, r.text) for r in spy.results] == [({"apa": "1", "pmi": "2"}[queue], word)]
    assert list(records.iterdir()) == []  # the caller's voice is not kept


async def test_a_key_pressed_while_recording_wins_without_recognition(
    rig: tuple[MenuEngine, SpyRecogniser, Path],
) -> None:
    engine, spy, _ = rig
    # GET DATA listens 3.5 s (1.5 s prompt + 2 s timeout); 2 is pressed 0.5 s into the recording,
    # while the caller says 엄마 (key 1).
    seen = await call(engine, CallerScript(NUMBER, keys=[KeyPress(4.0, "2")], utterances=[speak("엄마")]))
    assert seen.outcome.queue == "pmi"
    assert len(recordings(seen)) == 1
    assert spy.results == []


async def test_silence_is_no_input_then_the_fallback(rig: tuple[MenuEngine, SpyRecogniser, Path]) -> None:
    engine, spy, records = rig
    seen = await call(engine, CallerScript(NUMBER))
    assert seen.outcome.queue == "accueil"
    assert seen.variables[GUICHET_REASON] == "parole-repli"
    menu = engine.menus.tree("guichet").node("menu")
    assert isinstance(menu, MenuNode) and menu.no_input is not None
    assert seen.played(tts_name(menu.no_input))
    assert sum(sound_name(menu.prompt) in c for c in seen.agi_commands()) == 1 + menu.retries
    assert [c.split()[-4:] for c in recordings(seen)] == [["12", "2000", "0", "s=2"]] * (1 + menu.retries)
    assert [r.choice for r in spy.results] == [None, None]
    assert list(records.iterdir()) == []


async def test_a_recording_asterisk_cannot_write_is_no_input_not_a_lost_call(
    tmp_path: Path, vosk: VoskRecogniser
) -> None:
    spy = SpyRecogniser(vosk)
    unwritable = tmp_path / "not-there"  # Asterisk answers "200 result=-1 (writefile)"
    engine = default_menu_engine(
        menu_dir(tmp_path / "menus"), now=lambda: OPEN, recogniser=spy, record_dir=unwritable
    )
    seen = await call(engine, CallerScript(NUMBER, utterances=[speak("엄마")]))
    assert seen.outcome.queue == "accueil"  # the fallback, after the retries: the call is not dropped
    assert len(recordings(seen)) == 2
    assert spy.results == []


async def test_a_key_during_get_data_needs_no_recording(rig: tuple[MenuEngine, SpyRecogniser, Path]) -> None:
    engine, spy, _ = rig
    seen = await call(engine, CallerScript(NUMBER, keys=[KeyPress(0.5, "1")], utterances=[speak("아빠")]))
    assert seen.outcome.queue == "apa"
    assert recordings(seen) == []
    assert spy.results == []


async def test_without_a_recogniser_the_menu_only_takes_keys(tmp_path: Path) -> None:
    engine = default_menu_engine(menu_dir(tmp_path), now=lambda: OPEN)
    seen = await call(engine, CallerScript(NUMBER, utterances=[speak("엄마")]))
    assert seen.outcome.queue == "accueil"
    assert recordings(seen) == []


# --- configuration ------------------------------------------------------------------------------
def settings_of(tmp_path: Path, **ivr: object) -> Engine:
    return Engine(
        parse_settings({"ivr": {"menus_dir": str(menu_dir(tmp_path)), **ivr}}, "guichet.toml"), Secret("x")
    )


def test_a_missing_speech_model_refuses_to_start_naming_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    message = f"guichet.toml: [ivr] speech_model = {missing}: Vosk model directory not found"
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_of(tmp_path, speech_model=str(missing))


def test_a_threshold_out_of_range_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=re.escape("[ivr] speech_threshold: must be between 0 and 1, got 1.5")
    ):
        settings_of(tmp_path, speech_model=str(MODEL_PATH), speech_threshold=1.5)


def test_a_missing_record_dir_refuses_to_start(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=re.escape(f"[ivr] record_dir: {missing} is not a directory")):
        settings_of(tmp_path, speech_model=str(MODEL_PATH), record_dir=str(missing))


def test_configured_speech_reaches_the_menu_engine(tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    settings = parse_settings(
        {
            "ivr": {
                "menus_dir": str(menu_dir(tmp_path / "menus")),
                "speech_model": str(MODEL_PATH),
                "speech_threshold": 0.7,
                "record_dir": str(records),
            }
        },
        "guichet.toml",
    )
    engine = default_menu_engine_of(settings)
    assert isinstance(engine.recogniser, VoskRecogniser)
    assert (engine.recogniser.model_path, engine.recogniser.threshold) == (MODEL_PATH, 0.7)
    assert engine.record_dir == records
    assert default_menu_engine_of(parse_settings({}, "guichet.toml")).recogniser is None


# --- the simulated RECORD FILE ------------------------------------------------------------------
def test_the_simulated_recording_holds_exactly_endpos_samples(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    write_recording(str(path), b"\x01\x02" * 3, 5)  # padded with silence
    assert read_wav(path) == b"\x01\x02" * 3 + bytes(4)
    write_recording(str(path), b"\x01\x02" * 3, 2)  # cut where the recording ended
    assert read_wav(path) == b"\x01\x02" * 2


def test_an_utterance_must_be_16_bit() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        CallerScript(NUMBER, utterances=[b"\x00\x00\x00"])
