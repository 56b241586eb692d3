"""AMI parsing speed: the recorded Asterisk 22 streams, replayed in memory through each parser.

The corpus is every ``*.raw`` file of the recordings (round 1 and round 2), banner line removed; the
two ``ami_actions_replies*.raw`` files also carry the recorder's ``##### >>> SENT`` / ``<<< RECEIVED``
markers, so only their received bytes are kept.  The corpus is repeated N times and cut into
fixed-size chunks (as socket reads would deliver it) before the clock starts.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK_BYTES = 4096
BANNER_PREFIX = b"Asterisk Call Manager/"
_MARKER = re.compile(rb"^##### (>>> SENT >>>|<<< RECEIVED <<<)\n", re.MULTILINE)


def _received_bytes(data: bytes, path: Path) -> bytes:
    """Keep what Asterisk sent in a transcript with recorder markers (the recorder adds one LF after most)."""
    parts = _MARKER.split(data)
    kept = [parts[0].removesuffix(b"\n")]  # the banner line
    for direction, section in zip(parts[1::2], parts[2::2], strict=True):
        if direction.startswith(b"<<<"):
            received = section[:-1] if section.endswith(b"\r\n\r\n\n") else section
            if not received.endswith(b"\r\n\r\n"):
                raise ValueError(f"{path}: a received section does not end with a complete AMI message")
            kept.append(received)
    return b"".join(kept)


def load_stream(path: Path) -> bytes:
    """The AMI bytes of one recording, banner removed; every message ends with CRLF CRLF."""
    data = path.read_bytes()
    if _MARKER.search(data):
        data = _received_bytes(data, path)
    if not data.startswith(BANNER_PREFIX):
        raise ValueError(f"{path}: does not start with the AMI banner {BANNER_PREFIX!r}")
    data = data[data.index(b"\r\n") + 2 :]
    if not data.endswith(b"\r\n\r\n"):
        raise ValueError(f"{path}: does not end with a complete AMI message")
    return data


def load_corpus(captures: Path) -> bytes:
    """Every recorded AMI stream (round 1 then round 2), concatenated."""
    paths = sorted(captures.glob("*.raw")) + sorted((captures / "round2").glob("*.raw"))
    if not paths:
        raise ValueError(f"no *.raw AMI recordings under {captures}")
    return b"".join(load_stream(path) for path in paths)


def chunked(data: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --- the parsers: each returns the messages, and counts headers afterwards (outside the clock) -------
def _feed_ours(chunks: Sequence[bytes]) -> list[Any]:
    from routing.ami import AmiParser  # noqa: PLC0415 - imported only when measured

    parser = AmiParser(expect_banner=False)
    out: list[Any] = []
    feed = parser.feed
    for chunk in chunks:
        out += feed(chunk)
    parser.feed_eof()
    return out


def parse_ours(chunks: Sequence[bytes]) -> list[Any]:
    """Every message with its headers at hand (``headers`` is read, in case it is ever made lazy)."""
    messages = _feed_ours(chunks)
    for message in messages:
        message.headers  # noqa: B018 - inside the clock on purpose
    return messages


def parse_panoramisk(chunks: Sequence[bytes]) -> list[Any]:
    """panoramisk 1.4's own receive path: ``AMIProtocol.data_received`` -> ``Message.from_line``."""
    from panoramisk.ami_protocol import AMIProtocol  # noqa: PLC0415

    out: list[Any] = []

    class Collecting(AMIProtocol):  # type: ignore[misc]
        def handle_message(self, message: Any) -> None:  # where panoramisk dispatches to the app
            out.append(message)

    protocol = Collecting()
    protocol.connection_made(None)  # no transport is used on the receive path
    receive = protocol.data_received
    for chunk in chunks:
        receive(chunk)
    return out


def parse_bare(chunks: Sequence[bytes]) -> list[Any]:
    """The limit: split on CRLF CRLF, then each line on ': ' into a dict of bytes. No checks at all."""
    out: list[dict[bytes, bytes]] = []
    rest = b""
    for chunk in chunks:
        blocks = (rest + chunk).split(b"\r\n\r\n")
        rest = blocks.pop()
        for block in blocks:
            message = {}
            for line in block.split(b"\r\n"):
                kv = line.split(b": ", 1)
                if len(kv) == 2:
                    message[kv[0]] = kv[1]
            out.append(message)
    return out


def _headers_ours(messages: list[Any]) -> int:
    return sum(len(m) for m in messages)


def _headers_panoramisk(messages: list[Any]) -> int:
    # Message stores the body as a 'content' key; repeated names become one key holding a list.
    total = 0
    for m in messages:
        for key in m:
            value = m[key]
            if key != "content":
                total += len(value) if isinstance(value, list) else 1
    return total


def _headers_bare(messages: list[Any]) -> int:
    return sum(len(m) for m in messages)


@dataclass(frozen=True)
class Parser:
    name: str
    parse: Callable[[Sequence[bytes]], list[Any]]
    count_headers: Callable[[list[Any]], int]


PARSERS: tuple[Parser, ...] = (
    Parser("ours (routing.ami.AmiParser), every header", parse_ours, _headers_ours),
    Parser("panoramisk 1.4 (AMIProtocol.data_received)", parse_panoramisk, _headers_panoramisk),
    Parser("limit: bare split", parse_bare, _headers_bare),
)
OURS_FULL = PARSERS[0].name  # the one the 0.65x target applies to
BARE = PARSERS[-1].name


@dataclass(frozen=True)
class AmiResult:
    parser: str
    messages: int
    headers: int
    seconds: float  # median of the repetitions
    megabytes: float

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds


def measure(corpus: bytes, replays: int, repetitions: int) -> list[AmiResult]:
    """Parse the corpus repeated ``replays`` times with each parser; one warm-up, median of the rest."""
    if replays < 1 or repetitions < 1:
        raise ValueError(f"replays and repetitions must be >= 1, got {replays} and {repetitions}")
    chunks = chunked(corpus * replays)
    results = []
    for parser in PARSERS:
        messages = parser.parse(chunks)  # warm-up, and the output whose headers are counted
        times = []
        for _ in range(repetitions):
            started = time.perf_counter_ns()
            parser.parse(chunks)
            times.append(time.perf_counter_ns() - started)
        results.append(
            AmiResult(
                parser=parser.name,
                messages=len(messages),
                headers=parser.count_headers(messages),
                seconds=statistics.median(times) / 1e9,
                megabytes=len(corpus) * replays / 1e6,
            )
        )
    return results
