"""Loader for the recorded FastAGI transcripts (``agi_*.txt``) of the Asterisk captures.

Three shapes exist in the recordings:

* a normal session (round 1 and round 2): the environment block, then ``>>>`` command lines
  and ``<<<`` raw reply lines.  Round-2 files also give the block as Python bytes reprs (the
  exact bytes); round-1 files only as text, so the text lines + ``"\\n"`` are used there.
* a "stall" session (round 2): every line Asterisk sent as ``<<< b'...'`` - the environment
  block, then unsolicited ``HANGUP`` lines answering no command, sometimes ``[EOF: ...]``.
* "accept-close" (round 2): the listener closed at once; Asterisk sent nothing that was read.
  Such a file gives ``env_bytes == b""`` and no exchange.

Replies following the same command (``HANGUP`` then the reply) belong to that command.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

_LINE = re.compile(r"^(>>>|<<<) (.*?)    \[\+\d+\.\d+\]$")
_ENV_TEXT_HEADER = "### raw environment block"
_ENV_BYTES_HEADER = "### same block as Python bytes repr"
_EXCHANGE_HEADER = "### command/reply exchange"
_EOF_MARK = "[EOF: Asterisk closed the socket]"


@dataclass(frozen=True)
class Transcript:
    name: str
    env_bytes: bytes
    exchanges: list[tuple[str, list[str]]]
    trailing_lines: list[str] = field(default_factory=list)
    """Lines Asterisk sent that answer no command (the stall listener's ``HANGUP`` lines)."""
    asterisk_eof: bool = False
    """The recording shows Asterisk closing the socket itself."""

    @property
    def accepted_only(self) -> bool:
        """Nothing was read (the accept-then-close listener)."""
        return not self.env_bytes and not self.exchanges

    def asterisk_bytes(self) -> bytes:
        """Everything Asterisk wrote, in order, as one byte stream."""
        lines = [line for _, replies in self.exchanges for line in replies] + self.trailing_lines
        return self.env_bytes + "".join(line + "\n" for line in lines).encode()


def parse_transcript(path: Path) -> Transcript:
    lines = path.read_text(encoding="utf-8").splitlines()
    env_text: list[str] = []
    env_repr: list[bytes] = []
    exchanges: list[tuple[str, list[str]]] = []
    trailing: list[str] = []
    eof = False
    section = ""
    for line in lines:
        if line.startswith("###"):
            if line.startswith(_ENV_TEXT_HEADER):
                section = "env-text"
            elif line.startswith(_ENV_BYTES_HEADER):
                section = "env-bytes"
            elif line.startswith(_EXCHANGE_HEADER):
                section = "exchange"
            continue
        if section == "env-text":
            env_text.append(line)
            continue
        if section == "env-bytes":
            env_repr.append(ast.literal_eval(line.strip()))
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"{path.name}: unexpected line {line!r}")
        direction, text = match.groups()
        if direction == ">>>":
            exchanges.append((text, []))
        elif text == _EOF_MARK:
            eof = True
        elif text.startswith("b'"):
            raw: bytes = ast.literal_eval(text)
            if env_repr and env_repr[-1] == b"\n":
                trailing.append(raw.decode().removesuffix("\n"))
            else:
                env_repr.append(raw)
        elif exchanges:
            exchanges[-1][1].append(text)
        else:
            raise ValueError(f"{path.name}: reply before any command: {line!r}")
    if env_repr:
        env_bytes = b"".join(env_repr)
    elif env_text:
        if env_text[-1] != "":
            raise ValueError(f"{path.name}: environment block without its blank line")
        env_bytes = "".join(t + "\n" for t in env_text).encode()
    else:
        env_bytes = b""
    return Transcript(path.stem, env_bytes, exchanges, trailing, eof)


def load_transcripts(captures_dir: Path) -> list[Transcript]:
    """Every ``agi_*.txt`` of ``captures_dir`` and ``captures_dir/round2``, sorted by name."""
    paths = sorted([*captures_dir.glob("agi_*.txt"), *(captures_dir / "round2").glob("agi_*.txt")])
    if not paths:
        raise FileNotFoundError(f"no agi_*.txt transcript under {captures_dir}")
    return [parse_transcript(p) for p in paths]
