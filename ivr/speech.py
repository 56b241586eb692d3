"""Speech recognition of a menu answer: a recogniser interface and its Vosk implementation.

A menu node offers keys and, for each key, words a caller may say instead
(:attr:`ivr.menus.Choice.keywords`).  A :class:`Recogniser` turns the caller's answer
(8 kHz 16-bit mono signed linear PCM, what Asterisk records) into a
:class:`SpeechResult`: the chosen key, or ``None`` with the reason.

:class:`VoskRecogniser` restricts Vosk's decoding graph to the node's keywords (a
runtime grammar, plus ``[unk]`` when the model has it), and accepts a result only when
**every** word of the matched keywords has a confidence ≥ ``threshold``: the minimum,
not the mean, because keywords are one or two words long and a mean would let one
well-heard word hide a guessed one.

How the caller's audio reaches the recogniser (see ``agi_scripts/README.md``):

* **RECORD FILE** (the menu engine's path, :func:`record_and_recognise`): the engine
  asks Asterisk to record the answer to a WAV file, the escape digits being the menu's
  keys (so a key press always wins and ends the recording), then recognises the file in
  a worker thread.  The file must be readable by the engine: same host, or a shared
  directory when the FastAGI server runs elsewhere.
* **EAGI** (``agi_scripts/speech_capture.py``): Asterisk runs a script on its own host
  that reads the audio from file descriptor 3 and sets ``GUICHET_SPEECH_*`` variables.

DTMF is never the recogniser's business: the menu keys stay accepted whatever is said.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import unicodedata
import wave
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from ivr.errors import AgiCommandError, AgiHangup

if TYPE_CHECKING:
    from ivr.agi_server import AgiSession

logger = logging.getLogger(__name__)

SAMPLE_RATE: Final = 8000
SAMPLE_WIDTH: Final = 2  # bytes: 16-bit signed linear, little-endian
DEFAULT_THRESHOLD: Final = 0.6
UNK: Final = "[unk]"
_CHUNK_BYTES: Final = SAMPLE_RATE * SAMPLE_WIDTH // 4  # 0.25 s per AcceptWaveform call


class Reason(enum.StrEnum):
    """Why a :class:`SpeechResult` has (or has not) a choice."""

    RECOGNISED = "recognised"
    DTMF = "dtmf"  # the caller pressed a key instead of speaking
    NO_SPEECH = "no speech"  # nothing recognised (silence, noise, or no word of the grammar)
    NOT_A_KEYWORD = "not a keyword"  # only unknown words ([unk]) were heard
    AMBIGUOUS = "ambiguous"  # keywords of two different choices were heard
    LOW_CONFIDENCE = "low confidence"  # a keyword was heard, below the threshold
    NO_KEYWORDS = "no usable keyword"  # none of the node's keywords is in the model's vocabulary


@dataclass(frozen=True)
class SpeechResult:
    """The outcome of one answer: ``choice`` is a menu key or ``None`` (then ``reason`` says why).

    ``text`` is what the recogniser heard (``[unk]`` for a word outside the grammar);
    ``confidence`` is the lowest confidence of the matched keyword words (0.0 when none).
    """

    choice: str | None
    text: str
    confidence: float
    reason: Reason


class Recogniser(Protocol):
    """Turns one answer into a choice among ``keywords`` (menu key -> words said instead)."""

    def recognise(self, audio: bytes, keywords: Mapping[str, Sequence[str]]) -> SpeechResult:
        """``audio``: 8 kHz 16-bit mono signed linear PCM (little-endian).  Blocking: call it
        from a worker thread in the event loop (:func:`recognise_wav` does)."""
        ...


class VocabularyModel(Protocol):
    """What :func:`check_keywords` needs of a model (``vosk.Model`` has it)."""

    def vosk_model_find_word(self, word: str) -> int: ...


class SpeechError(Exception):
    """Base class of the errors of this module."""


class SpeechModelError(SpeechError):
    """The speech model cannot be loaded (missing path, not a model, vosk not installed)."""


class SpeechAudioError(SpeechError, ValueError):
    """The audio is not 8 kHz 16-bit mono PCM."""


def normalise_keyword(text: str) -> str:
    """A keyword as the grammar holds it: NFC, lower case, single spaces (accents are kept:
    Vosk's French vocabulary spells ``aide sociale``, ``hôpital``)."""
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


def check_keywords(model: VocabularyModel, words: Iterable[str]) -> tuple[str, ...]:
    """The keywords (normalised, in the given order, without duplicates) that ``model`` cannot
    recognise: at least one of their words is missing from its vocabulary."""
    missing: dict[str, None] = {}
    for keyword in words:
        phrase = normalise_keyword(keyword)
        if not phrase or any(model.vosk_model_find_word(word) < 0 for word in phrase.split()):
            missing[phrase] = None
    return tuple(missing)


@dataclass(frozen=True)
class _Grammar:
    """A node's keywords compiled for Vosk: the grammar JSON and each phrase's choice."""

    json: str | None  # None: no usable keyword
    phrases: Mapping[tuple[str, ...], str]  # phrase words -> choice key
    longest: int


class VoskRecogniser:
    """:class:`Recogniser` backed by a Vosk model directory (``model_path`` from configuration).

    The model is loaded once, here, so that a wrong path stops the server at start-up.
    ``Model(lang=...)`` is never used: it downloads.  Thread-safe: each call builds its own
    ``KaldiRecognizer`` on the shared model; grammars are cached per keyword set.
    """

    def __init__(self, model_path: str | os.PathLike[str], *, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"speech confidence threshold must be between 0 and 1, got {threshold!r}")
        path = Path(model_path)
        if not path.is_dir():
            raise SpeechModelError(f"Vosk model directory not found: {path}")
        if not (path / "am").is_dir() or not (path / "conf").is_dir():
            raise SpeechModelError(f"not a Vosk model directory (no am/ and conf/ inside): {path}")
        try:
            import vosk  # type: ignore[import-untyped]  # noqa: PLC0415 - optional [speech] extra
        except ImportError as exc:
            raise SpeechModelError(
                "speech recognition needs the vosk package: pip install 'guichet[speech]'"
            ) from exc
        vosk.SetLogLevel(-1)  # Kaldi writes its LOG lines to stderr: keep only warnings and errors
        self._vosk: Any = vosk
        try:
            self.model: VocabularyModel = vosk.Model(str(path))
        except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
            raise SpeechModelError(f"cannot load the Vosk model at {path}: {exc}") from exc
        self.model_path = path
        self.threshold = threshold
        self._has_unk = self.model.vosk_model_find_word(UNK) >= 0
        self._grammars: dict[tuple[tuple[str, tuple[str, ...]], ...], _Grammar] = {}
        logger.info("Vosk model loaded from %s (threshold %.2f)", path, threshold)

    def _grammar(self, keywords: Mapping[str, Sequence[str]]) -> _Grammar:
        key = tuple((choice, tuple(words)) for choice, words in keywords.items())
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = self._grammars[key] = self._compile(keywords)
        return grammar

    def _compile(self, keywords: Mapping[str, Sequence[str]]) -> _Grammar:
        phrases: dict[tuple[str, ...], str] = {}
        for choice, words in keywords.items():
            unknown = set(check_keywords(self.model, words))
            for keyword in words:
                phrase = normalise_keyword(keyword)
                if phrase in unknown:
                    logger.warning(
                        "speech keyword %r of key %s skipped: not in the model's vocabulary", keyword, choice
                    )
                    continue
                owner = phrases.setdefault(tuple(phrase.split()), choice)
                if owner != choice:
                    raise ValueError(f"speech keyword {phrase!r} is given for two keys: {owner} and {choice}")
        if not phrases:
            return _Grammar(None, {}, 0)
        grammar = [" ".join(phrase) for phrase in phrases]
        if self._has_unk:
            grammar.append(UNK)
        return _Grammar(json.dumps(grammar, ensure_ascii=False), phrases, max(map(len, phrases)))

    def recognise(self, audio: bytes, keywords: Mapping[str, Sequence[str]]) -> SpeechResult:
        if len(audio) % SAMPLE_WIDTH:
            raise SpeechAudioError(f"16-bit audio must have an even number of bytes, got {len(audio)}")
        grammar = self._grammar(keywords)
        if grammar.json is None:
            return SpeechResult(None, "", 0.0, Reason.NO_KEYWORDS)
        recognizer = self._vosk.KaldiRecognizer(self.model, SAMPLE_RATE, grammar.json)
        recognizer.SetWords(True)
        words: list[tuple[str, float]] = []
        for start in range(0, len(audio), _CHUNK_BYTES):
            if recognizer.AcceptWaveform(audio[start : start + _CHUNK_BYTES]):
                words += _words(recognizer.Result())
        words += _words(recognizer.FinalResult())
        return self._decide(words, grammar)

    def _decide(self, words: list[tuple[str, float]], grammar: _Grammar) -> SpeechResult:
        text = " ".join(word for word, _ in words)
        if not words:
            return SpeechResult(None, text, 0.0, Reason.NO_SPEECH)
        choices: set[str] = set()
        confidences: list[float] = []
        i = 0
        while i < len(words):  # longest keyword first at each position; [unk] and strays skipped
            for size in range(min(grammar.longest, len(words) - i), 0, -1):
                choice = grammar.phrases.get(tuple(word for word, _ in words[i : i + size]))
                if choice is not None:
                    choices.add(choice)
                    confidences += [conf for _, conf in words[i : i + size]]
                    i += size
                    break
            else:
                i += 1
        if not choices:
            return SpeechResult(None, text, 0.0, Reason.NOT_A_KEYWORD)
        confidence = min(confidences)
        if len(choices) > 1:
            return SpeechResult(None, text, confidence, Reason.AMBIGUOUS)
        if confidence < self.threshold:
            return SpeechResult(None, text, confidence, Reason.LOW_CONFIDENCE)
        return SpeechResult(choices.pop(), text, confidence, Reason.RECOGNISED)


def _words(result_json: str) -> list[tuple[str, float]]:
    """(word, confidence) pairs of one Vosk result (``SetWords(True)``)."""
    result = json.loads(result_json)
    return [(str(item["word"]), float(item["conf"])) for item in result.get("result", ())]


def read_wav(path: str | os.PathLike[str]) -> bytes:
    """The PCM frames of a WAV file as Asterisk's ``RECORD FILE ... wav`` writes it
    (RIFF, Microsoft PCM, 16-bit mono 8000 Hz); any other format is a :class:`SpeechAudioError`."""
    try:
        with wave.open(os.fspath(path), "rb") as wav:
            fmt = (wav.getframerate(), wav.getsampwidth(), wav.getnchannels())
            if fmt != (SAMPLE_RATE, SAMPLE_WIDTH, 1):
                raise SpeechAudioError(
                    f"{path}: {fmt[0]} Hz, {8 * fmt[1]}-bit, {fmt[2]} channel(s); "
                    f"expected {SAMPLE_RATE} Hz 16-bit mono"
                )
            return wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise SpeechAudioError(f"{path}: not a PCM WAV file ({exc})") from exc


async def recognise_wav(
    recogniser: Recogniser, path: str | os.PathLike[str], keywords: Mapping[str, Sequence[str]]
) -> SpeechResult:
    """Read and recognise a WAV file in a worker thread (the event loop keeps serving calls)."""

    def work() -> SpeechResult:
        return recogniser.recognise(read_wav(path), keywords)

    return await asyncio.get_running_loop().run_in_executor(None, work)


async def record_and_recognise(
    session: AgiSession,
    recogniser: Recogniser,
    keywords: Mapping[str, Sequence[str]],
    base_path: str,
    *,
    escape_digits: str,
    timeout_ms: int = 4000,
    silence_s: int = 2,
) -> SpeechResult:
    """Record the caller's answer with ``RECORD FILE`` and recognise it.

    ``base_path``: where Asterisk writes, without extension (``.wav`` is appended, as in the
    round-2 recording: ``RECORD FILE /tmp/rec-<uniqueid> wav "#" 4000 0 s=2`` wrote
    ``/tmp/rec-<uniqueid>.wav``); it must be readable here.  A key among ``escape_digits``
    ends the recording and wins: ``SpeechResult(key, "", 1.0, Reason.DTMF)``.  ``s=N`` ends
    it after N seconds of silence (and suppresses the beep).  The file is deleted afterwards
    (it is the caller's voice); a failure to delete is logged.
    """
    if timeout_ms <= 0 or silence_s <= 0:
        raise ValueError("RECORD FILE needs a positive timeout and silence duration")
    reply = await session.command(
        "RECORD",
        "FILE",
        base_path,
        "wav",
        escape_digits,
        str(timeout_ms),
        "0",
        f"s={silence_s}",
        reply_timeout=timeout_ms / 1000 + 10.0,
    )
    path = base_path + ".wav"
    try:
        if reply.result == -1 and reply.data == "writefile":  # Asterisk could not create the file
            raise AgiCommandError(f"RECORD FILE: Asterisk cannot write {path}", reply)
        if reply.result == -1:
            raise AgiHangup("RECORD FILE: channel hung up", reply)
        if reply.result is None or reply.result < 0:
            raise AgiCommandError(f"RECORD FILE: unexpected result {reply.text!r}", reply)
        if reply.result > 0:  # result=<ASCII code of the key> (dtmf)
            return SpeechResult(chr(reply.result), "", 1.0, Reason.DTMF)
        result = await recognise_wav(recogniser, path, keywords)
        logger.info(
            "speech on %s: %s (%r, %.2f)", session.channel, result.reason, result.text, result.confidence
        )
        return result
    finally:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("cannot delete the recording %s: %s", path, exc)
