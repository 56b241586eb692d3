"""Loaders for the recorded AMI byte streams of a real Asterisk 22 (``asterisk-captures/``).

* :func:`load_streams` — every ``ami_events_*.raw`` (round 1 and ``round2/``): the exact bytes, banner
  first, with the messages its ``.raw.index`` lists, in order.
* :func:`load_exchanges` — ``ami_actions_replies*.txt.raw``: for each action, the exact bytes sent
  and the exact bytes received, cut at the ``##### >>> SENT >>>`` / ``##### <<< RECEIVED <<<`` markers.

Index formats (see the READMEs): round 1 has one line per received message, ``Response: Success
(ActionID=cap1)`` or ``EventName   Channel=...``; round 2 prefixes each line with ``+ <seconds>`` and
adds ``[banner]``, ``>>> SENT`` and ``###`` note lines, which are not received messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_RESPONSE_LINE = re.compile(r"^Response: (\S+) \(ActionID=([^)]*)\)")
_TIME_PREFIX = re.compile(r"^\+\s*[0-9.]+\s+")
SENT_MARKER = b"##### >>> SENT >>>\n"
RECEIVED_MARKER = b"##### <<< RECEIVED <<<\n"


@dataclass(frozen=True)
class IndexEntry:
    """One received message as a ``.index`` file lists it."""

    kind: str  # "event" or "response"
    name: str  # event name, or the Response value (Success, Error, Goodbye)
    action_id: str | None  # given by the index for responses only


@dataclass(frozen=True)
class RecordedStream:
    path: Path
    data: bytes
    index: tuple[IndexEntry, ...]

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class RecordedExchange:
    action: str
    sent: bytes
    received: bytes


def parse_index(path: Path) -> tuple[IndexEntry, ...]:
    entries: list[IndexEntry] = []
    for raw_line in path.read_text(encoding="utf-8").splitlines():
        if not raw_line.strip() or raw_line.startswith("#"):
            continue
        line = _TIME_PREFIX.sub("", raw_line)
        if line.startswith(("[banner]", ">>> SENT", "###")):
            continue
        match = _RESPONSE_LINE.match(line)
        if match:
            entries.append(IndexEntry("response", match.group(1), match.group(2)))
        else:
            entries.append(IndexEntry("event", line.split()[0], None))
    return tuple(entries)


def stream_paths(captures_dir: Path) -> list[Path]:
    paths = sorted(captures_dir.glob("ami_events_*.raw")) + sorted(
        (captures_dir / "round2").glob("ami_events_*.raw")
    )
    if not paths:
        raise FileNotFoundError(f"no ami_events_*.raw under {captures_dir}")
    return paths


def load_streams(captures_dir: Path) -> list[RecordedStream]:
    return [
        RecordedStream(path, path.read_bytes(), parse_index(path.with_name(path.name + ".index")))
        for path in stream_paths(captures_dir)
    ]


def load_stream(captures_dir: Path, name: str) -> RecordedStream:
    """One stream by file name, e.g. ``ami_events_member_lifecycle.raw``."""
    for stream in load_streams(captures_dir):
        if stream.name == name:
            return stream
    raise FileNotFoundError(name)


def load_exchanges(path: Path) -> list[RecordedExchange]:
    """The (sent, received) byte blocks of an ``ami_actions_replies*.txt.raw`` file, in order.

    Each received block is exactly what Asterisk wrote (ending with CRLF CRLF); the single LF the
    recorder put after it, before the next marker, is not part of it.
    """
    data = path.read_bytes()
    exchanges: list[RecordedExchange] = []
    for chunk in data.split(SENT_MARKER)[1:]:
        sent, marker, received = chunk.partition(RECEIVED_MARKER)
        if not marker:
            raise ValueError(f"{path.name}: a SENT block without a RECEIVED block")
        if received.endswith(b"\r\n\r\n\n"):
            received = received[:-1]
        if not (sent.endswith(b"\r\n\r\n") and received.endswith(b"\r\n\r\n")):
            raise ValueError(f"{path.name}: a block does not end with CRLF CRLF")
        action = sent.split(b"\r\n", 1)[0].decode().removeprefix("Action: ")
        exchanges.append(RecordedExchange(action, sent, received))
    return exchanges


def replies_by_action(path: Path) -> dict[str, RecordedExchange]:
    """The exchanges of a replies file by action name (the last one when an action was sent twice)."""
    return {ex.action: ex for ex in load_exchanges(path)}
