"""The IVR session every benchmarked server runs, and what the load client expects of it.

A typical 10-command session: answer, set the language, read the caller number, play a welcome
prompt, read a menu digit, play a service prompt, read an urgency digit, hand the call back to the
dialplan with GUICHET_QUEUE / GUICHET_PRIO / GUICHET_IVR_DONE.  Each server implements these
steps with its own API; the load client checks every command line against ``STEPS`` and answers
with the reply Asterisk 22 gave to the same command in the recordings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from guichet.names import CHANNEL_LANGUAGE, GUICHET_IVR_DONE, GUICHET_PRIO, GUICHET_QUEUE

# Arguments of the flow, shared by every implementation so that they send the same commands.
LANGUAGE = "fr"
CALLER_NUM_VAR = "CALLERID(num)"
PROMPT_WELCOME = "welcome"
PROMPT_MENU = "menu"
PROMPT_SERVICE = "apa-info"
PROMPT_URGENCY = "urgency"
DIGIT_TIMEOUT_MS = 5000
MAX_DIGITS = 1
QUEUE = "apa"
PRIO = "5"
IVR_DONE = "1"

ENV_RECORDING = "agi_test_1.txt"
_ENV_HEADER = "### raw environment block"


@dataclass(frozen=True, slots=True)
class Step:
    """One command the server must send (canonical text, no newline) and Asterisk's reply line."""

    command: str
    reply: bytes

    @property
    def line(self) -> bytes:
        """The command as the bare limit server writes it."""
        return self.command.encode() + b"\n"

    @property
    def tokens(self) -> tuple[bytes, ...]:
        """Words a received command must start with, quotes removed (pyst2 quotes every argument)."""
        return tuple(normalize(self.command.encode()))


def normalize(command: bytes) -> list[bytes]:
    """Split a command line into words, ignoring double quotes: pyst2 sends ``SET VARIABLE "A" "b"``."""
    return command.replace(b'"', b"").split()


# Replies as recorded from Asterisk 22 (asterisk-captures/agi_test_1.txt and README "Facts").
STEPS: tuple[Step, ...] = (
    Step("ANSWER", b"200 result=0\n"),
    Step(f"SET VARIABLE {CHANNEL_LANGUAGE} {LANGUAGE}", b"200 result=1\n"),
    Step(f"GET VARIABLE {CALLER_NUM_VAR}", b"200 result=1 (5551234)\n"),
    Step(f'STREAM FILE {PROMPT_WELCOME} ""', b"200 result=0 endpos=11234\n"),
    Step(f"GET DATA {PROMPT_MENU} {DIGIT_TIMEOUT_MS} {MAX_DIGITS}", b"200 result=1\n"),
    Step(f'STREAM FILE {PROMPT_SERVICE} ""', b"200 result=0 endpos=20640\n"),
    Step(f"GET DATA {PROMPT_URGENCY} {DIGIT_TIMEOUT_MS} {MAX_DIGITS}", b"200 result=5\n"),
    Step(f"SET VARIABLE {GUICHET_QUEUE} {QUEUE}", b"200 result=1\n"),
    Step(f"SET VARIABLE {GUICHET_PRIO} {PRIO}", b"200 result=1\n"),
    Step(f"SET VARIABLE {GUICHET_IVR_DONE} {IVR_DONE}", b"200 result=1\n"),
)


def load_env_block(captures: Path) -> bytes:
    """The agi_ environment block Asterisk sent in ``agi_test_1.txt``, with its terminating blank line."""
    path = captures / ENV_RECORDING
    lines = path.read_text(encoding="utf-8").split("\n")
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(_ENV_HEADER)) + 1
        end = lines.index("", start)
    except (StopIteration, ValueError):
        raise ValueError(f"{path}: no '{_ENV_HEADER}' section ending with a blank line") from None
    block = lines[start:end]
    if not block or not all(line.startswith("agi_") and ": " in line for line in block):
        raise ValueError(f"{path}: the environment block holds lines that are not 'agi_<name>: <value>'")
    return "".join(line + "\n" for line in block).encode("utf-8") + b"\n"
