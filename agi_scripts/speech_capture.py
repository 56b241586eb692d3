#!/usr/bin/env python3
"""EAGI script: listen to the caller, recognise a menu keyword, set GUICHET_SPEECH_* variables.

Run by Asterisk on its own host (``EAGI()``, see ``agi_scripts/README.md``)::

    same => n,EAGI(speech_capture.py,--model,/var/lib/guichet/vosk-fr,--keywords,/etc/guichet/menu.json)

Asterisk gives the script the ``agi_*`` environment on stdin, reads its commands on
stdout (pyst2's ``asterisk.agi.AGI``), and writes the caller's audio to file descriptor 3
(EAGI): 8 kHz 16-bit signed linear mono, in real time.  The script reads up to
``--max-seconds`` of audio, stopping earlier after ``--silence`` seconds of quiet that
follow speech, recognises it with :class:`ivr.speech.VoskRecogniser`, then sets:

* ``GUICHET_SPEECH_CHOICE``: the menu key chosen, empty when none;
* ``GUICHET_SPEECH_TEXT``: what was heard;
* ``GUICHET_SPEECH_CONFIDENCE``: the keyword's confidence, ``0.00`` to ``1.00``;
* ``GUICHET_SPEECH_REASON``: why (``recognised``, ``no speech``, ``low confidence``...).

Keywords: ``--keywords FILE`` (a JSON object: key -> list of words) and/or ``--choice
KEY=word|other words`` (repeatable; ``|`` separates the keywords of a key, since a comma
separates the arguments of EAGI()).  The model is loaded at every call (a new process
each time): measure it for your model, the RECORD FILE path of the engine loads it once.
Exit status 0 when the variables are set, 1 on an error (logged on stderr; the dialplan
then finds GUICHET_SPEECH_CHOICE empty).
"""

from __future__ import annotations

import argparse
import array
import io
import json
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import BinaryIO

from asterisk.agi import AGI, AGIException

from guichet.names import (
    GUICHET_SPEECH_CHOICE,
    GUICHET_SPEECH_CONFIDENCE,
    GUICHET_SPEECH_REASON,
    GUICHET_SPEECH_TEXT,
)
from ivr.agi import quote_arg
from ivr.speech import DEFAULT_THRESHOLD, SAMPLE_RATE, SAMPLE_WIDTH, SpeechError, VoskRecogniser

logger = logging.getLogger("guichet.speech_capture")

EAGI_AUDIO_FD = 3
FRAME_BYTES = SAMPLE_RATE * SAMPLE_WIDTH // 50  # 20 ms, Asterisk's usual frame


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="EAGI: recognise a spoken menu keyword")
    parser.add_argument("--model", required=True, help="Vosk model directory")
    parser.add_argument("--keywords", help="JSON file: an object key -> list of keywords")
    parser.add_argument(
        "--choice",
        action="append",
        default=[],
        metavar="KEY=WORDS",
        help="a key and its keywords, '|'-separated",
    )
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--max-seconds", type=float, default=5.0, help="longest answer listened to")
    parser.add_argument("--silence", type=float, default=1.0, help="quiet seconds after speech that end it")
    parser.add_argument(
        "--level", type=int, default=300, help="RMS level (of 32767) above which a frame is speech"
    )
    args = parser.parse_args(argv)
    if args.max_seconds <= 0 or args.silence <= 0:
        parser.error("--max-seconds and --silence must be positive")
    return args


def load_keywords(path: str | None, choices: Sequence[str]) -> dict[str, list[str]]:
    """The keywords of ``--keywords FILE`` then of each ``--choice KEY=a|b``; ValueError if malformed."""
    keywords: dict[str, list[str]] = {}
    if path is not None:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
        if not isinstance(data, dict) or not all(
            isinstance(words, list) and all(isinstance(word, str) for word in words)
            for words in data.values()
        ):
            raise ValueError(f"{path}: expected a JSON object of key -> list of keywords")
        for key, words in data.items():
            keywords.setdefault(str(key), []).extend(words)
    for choice in choices:
        key, sep, words = choice.partition("=")
        if not sep or not key or not words:
            raise ValueError(f"--choice {choice!r}: expected KEY=word|other words")
        keywords.setdefault(key, []).extend(word for word in words.split("|") if word.strip())
    if not keywords:
        raise ValueError("no keywords: give --keywords FILE or --choice KEY=WORDS")
    return keywords


def rms(frame: bytes) -> float:
    samples = array.array("h", frame[: len(frame) - len(frame) % SAMPLE_WIDTH])
    if sys.byteorder == "big":
        samples.byteswap()
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def capture(audio: BinaryIO, max_seconds: float, silence_s: float, level: int) -> bytes:
    """Read the caller's answer: until ``max_seconds`` of audio, EOF (hang-up), or ``silence_s``
    of frames below ``level`` after at least one frame above it."""
    limit = int(max_seconds * SAMPLE_RATE) * SAMPLE_WIDTH
    quiet_limit = int(silence_s * SAMPLE_RATE) * SAMPLE_WIDTH
    pcm = bytearray()
    heard = False
    quiet = 0
    while len(pcm) < limit:
        frame = audio.read(min(FRAME_BYTES, limit - len(pcm)))
        if not frame:
            break
        pcm += frame
        if rms(frame) >= level:
            heard, quiet = True, 0
        elif heard:
            quiet += len(frame)
            if quiet >= quiet_limit:
                break
    return bytes(pcm)


def set_variables(agi: AGI, values: Mapping[str, str]) -> None:
    for name, value in values.items():
        # pyst2's own quoting does not escape quotes: ours does (ivr.agi.quote_arg).
        agi.execute("SET VARIABLE", name, quote_arg(value))


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="speech_capture: %(levelname)s %(message)s"
    )
    args = parse_args(argv)
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", write_through=True)
    with open(os.devnull, "w") as quiet:  # pyst2 traces the environment (caller number) on stderr
        agi = AGI(stdin=stdin, stdout=stdout, stderr=quiet)
        try:
            return run(agi, args)
        except AGIException as exc:  # hang-up (SIGHUP, result=-1) or an unexpected reply
            logger.warning("AGI: %r", exc)
            return 1
        except ValueError as exc:  # pyst2 fails so (int("")) when stdin ends: Asterisk went away
            logger.warning("AGI: no reply from Asterisk (%s)", exc)
            return 1


def run(agi: AGI, args: argparse.Namespace) -> int:
    """Capture, recognise, set the variables (the body of :func:`main`)."""
    try:
        keywords = load_keywords(args.keywords, args.choice)
        recogniser = VoskRecogniser(args.model, threshold=args.threshold)
        with os.fdopen(EAGI_AUDIO_FD, "rb", buffering=0) as audio:
            pcm = capture(audio, args.max_seconds, args.silence, args.level)
        result = recogniser.recognise(pcm, keywords)
    except (OSError, ValueError, SpeechError) as exc:
        logger.error("%s", exc)
        set_variables(agi, {GUICHET_SPEECH_CHOICE: "", GUICHET_SPEECH_REASON: "error"})
        return 1
    logger.info(
        "%s: %.1f s of audio, %s (%r, %.2f)",
        agi.env.get("agi_channel", "?"),
        len(pcm) / (SAMPLE_RATE * SAMPLE_WIDTH),
        result.reason,
        result.text,
        result.confidence,
    )
    set_variables(
        agi,
        {
            GUICHET_SPEECH_CHOICE: result.choice or "",
            GUICHET_SPEECH_TEXT: result.text,
            GUICHET_SPEECH_CONFIDENCE: f"{result.confidence:.2f}",
            GUICHET_SPEECH_REASON: str(result.reason),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
