"""FastAGI codec, sans-I/O (like h11): bytes in, typed frozen events out; no sockets, no asyncio.

Both sides of the protocol live here:

* :class:`AgiServerConnection` - the engine's side.  Feed it what Asterisk sends with
  :meth:`~AgiServerConnection.receive_data` (``b""`` = EOF) and pull events with
  :meth:`~AgiServerConnection.next_event`; encode commands with
  :meth:`~AgiServerConnection.send_command`.
* :class:`AgiClientConnection` - Asterisk's side, for the simulated PBX and the load client:
  writes the environment block and replies exactly as Asterisk 22 does (``"\\n"`` line ends)
  and parses command lines with the same argument parser as Asterisk (``res_agi.c``
  ``parse_args``), so ``encode_command`` -> ``parse_command_line`` round-trips exactly.

Text decoding: every line is decoded as UTF-8 with ``errors="replace"``.  Asterisk already
replaces invalid UTF-8 in caller names by U+FFFD (see the round-2 recordings), and ``replace``
guarantees that no lone surrogate reaches the database, the logs or a JSON encoder; the price
is that an invalid byte that Asterisk did not replace is not preserved.

Security: :func:`encode_command` makes it impossible for caller-controlled text to inject a
second command or to split an argument.  Asterisk reads one command per line (into a 2048-byte
buffer) and splits it with ``parse_args``: double quotes group, and a backslash escapes the
next character both inside and outside quotes.  Every argument that needs it is quoted with
``"`` and ``\\`` escaped; CR, LF and NUL are rejected (nothing can escape a newline), and so are
lines longer than Asterisk's buffer (Asterisk would run the overflow as a second command).
Application-level syntax is NOT the codec's business: a comma inside an EXEC argument still
separates application arguments, and GET FULL VARIABLE evaluates ``${...}`` - never pass caller
text as a GET FULL VARIABLE expression.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Final, NamedTuple

from ivr.errors import AgiProtocolError

__all__ = [
    "MAX_COMMAND_ARGS",
    "MAX_COMMAND_BYTES",
    "NEED_DATA",
    "AgiClientConnection",
    "AgiEnv",
    "AgiServerConnection",
    "ClientEvent",
    "Command",
    "ConnectionClosed",
    "EnvironmentReceived",
    "HangupNotice",
    "NeedData",
    "Reply",
    "ServerEvent",
    "encode_command",
    "parse_command_line",
    "quote_arg",
]

MAX_COMMAND_BYTES: Final = 2047
"""Longest command line Asterisk reads as one command, ``"\\n"`` included (AGI_BUF_LEN - 1)."""
MAX_COMMAND_ARGS: Final = 127
"""Asterisk keeps at most MAX_ARGS - 1 = 127 words of a command and silently drops the rest."""
DEFAULT_MAX_LINE: Final = 8192
DEFAULT_MAX_ENV_BYTES: Final = 16384
DEFAULT_MAX_ENV_LINES: Final = 256
DEFAULT_MAX_USAGE_LINES: Final = 64

_ENCODING: Final = "utf-8"
_ERRORS: Final = "replace"


class NeedData(enum.Enum):
    """Type of the :data:`NEED_DATA` sentinel."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by ``next_event`` / ``next_command`` when more bytes are needed."""


# --------------------------------------------------------------------------- environment
class AgiEnv(Mapping[str, str]):
    """The ``agi_*`` environment block: an immutable str -> str mapping, keys without ``agi_``.

    Built from the (key, value) pairs in the order Asterisk sent them.  ``calleridname`` keeps
    the backslashes exactly as sent (Asterisk only removes the outer quotes of the SIP display
    name: ``Zoé \\"VIP\\" <Dupré>``).  Missing keys read as ``""`` through the properties.
    Equal (and hashed) by its pairs.
    """

    __slots__ = ("_map", "_pairs")
    _map: dict[str, str]
    _pairs: tuple[tuple[str, str], ...] | None

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        pairs = tuple(pairs)
        object.__setattr__(self, "_pairs", pairs)
        object.__setattr__(self, "_map", dict(pairs))

    @classmethod
    def _from_dict(cls, mapping: dict[str, str]) -> AgiEnv:
        """Wrap a dict the caller hands over (no copy, no re-hashing; pairs built on first use)."""
        env = cls.__new__(cls)
        object.__setattr__(env, "_pairs", None)
        object.__setattr__(env, "_map", mapping)
        return env

    @classmethod
    def of(cls, mapping: Mapping[str, str]) -> AgiEnv:
        """Build from a mapping whose keys may carry the ``agi_`` prefix or not."""
        return cls(tuple((k.removeprefix("agi_"), v) for k, v in mapping.items()))

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The (key, value) pairs in the order Asterisk sent them."""
        pairs = self._pairs
        if pairs is None:
            pairs = tuple(self._map.items())
            object.__setattr__(self, "_pairs", pairs)
        return pairs

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"AgiEnv is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"AgiEnv is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AgiEnv):
            return self.pairs == other.pairs
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.pairs)

    def __repr__(self) -> str:
        return f"AgiEnv(pairs={self.pairs!r})"

    def __getitem__(self, key: str) -> str:
        return self._map[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def _get(self, key: str) -> str:
        return self._map.get(key, "")

    @property
    def channel(self) -> str:
        return self._get("channel")

    @property
    def uniqueid(self) -> str:
        return self._get("uniqueid")

    @property
    def callerid(self) -> str:
        return self._get("callerid")

    @property
    def calleridname(self) -> str:
        return self._get("calleridname")

    @property
    def dnid(self) -> str:
        return self._get("dnid")

    @property
    def context(self) -> str:
        return self._get("context")

    @property
    def extension(self) -> str:
        return self._get("extension")

    @property
    def priority(self) -> str:
        return self._get("priority")

    @property
    def network_script(self) -> str:
        """The path after ``agi://host:port/``: the route name."""
        return self._get("network_script")

    @property
    def request(self) -> str:
        return self._get("request")

    @property
    def language(self) -> str:
        return self._get("language")

    @property
    def args(self) -> tuple[str, ...]:
        """``agi_arg_1`` .. ``agi_arg_N`` in order (an empty argument stays ``""``)."""
        out: list[str] = []
        while (value := self._map.get(f"arg_{len(out) + 1}")) is not None:
            out.append(value)
        return tuple(out)


# --------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class EnvironmentReceived:
    env: AgiEnv


class Reply(NamedTuple):
    """One reply of Asterisk to one command (immutable; a NamedTuple, the cheapest to build).

    * ``code``: 200, 510, 511, 520 ...
    * ``result``: the integer after ``result=`` (``None`` when absent or not an integer, e.g.
      GET DATA digits ``"12*"`` or the empty result of a GET DATA timeout).
    * ``data``: the text in parentheses, ``None`` when absent; ``"200 result=1 ()"`` gives
      ``""`` (set but empty).  Never unescaped: Asterisk does not escape it.
    * ``endpos``: the ``endpos=`` sample offset of media commands.
    * ``timeout``: the data is exactly ``timeout`` (GET DATA, RECORD FILE).  ``data`` keeps the
      text because GET VARIABLE of a variable whose value is ``timeout`` sends the same bytes.
    * ``text``: everything after the code (``"result=1 (bar)"``, ``"Invalid or unknown command"``).
    * ``usage``: the usage lines of a multi-line ``520-`` block.
    * ``result_text``: the raw result (GET DATA returns the digits there: ``"0612"``).
    """

    code: int
    result: int | None
    data: str | None
    endpos: int | None
    timeout: bool
    text: str
    usage: tuple[str, ...] = ()
    result_text: str | None = None


@dataclass(frozen=True, slots=True)
class HangupNotice:
    """Asterisk's unsolicited ``HANGUP`` line: the channel hung up (may come twice)."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """EOF at a frame boundary."""


@dataclass(frozen=True, slots=True)
class Command:
    """A command line as Asterisk parses it."""

    words: tuple[str, ...]
    raw: str


_new_reply: Final = tuple.__new__  # builds a Reply without the Python-level NamedTuple __new__

ServerEvent = EnvironmentReceived | Reply | HangupNotice | ConnectionClosed
ClientEvent = Command | ConnectionClosed

# Memos of the two pure functions on the hot path (the same commands and replies come back call
# after call).  Only short lines are kept, and a full memo starts again empty: bounded memory
# whatever the callers send.
_MEMO_LINE: Final = 160
_MEMO_SIZE: Final = 2048
_ENCODED: Final[dict[tuple[str, ...], bytes]] = {}
_REPLIES: Final[dict[bytes, Reply]] = {}

_HANGUP_NOTICE: Final = HangupNotice()
_CONNECTION_CLOSED: Final = ConnectionClosed()


# --------------------------------------------------------------------------- quoting
_NEEDS_QUOTING: Final = re.compile(r'[ \t"\\\r\n\x00]')
_FORBIDDEN: Final = re.compile(r"[\r\n\x00]")
_BLANKS: Final = re.compile(r"[ \t]+")


def quote_arg(arg: str) -> str:
    """Quote one argument for Asterisk's ``parse_args`` (bare when it needs nothing).

    Raises ValueError on CR, LF or NUL: Asterisk reads one command per line, and no escape
    can protect a newline.
    """
    if not arg:
        return '""'
    if _NEEDS_QUOTING.search(arg) is None:
        return arg
    bad = _FORBIDDEN.search(arg)
    if bad is not None:
        raise ValueError(
            f"AGI argument contains {bad.group()!r} at index {bad.start()}: CR, LF and NUL cannot be "
            "sent to Asterisk (one command per line)"
        )
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_command(*words: str) -> bytes:
    """Encode one command line (``"\\n"`` terminated UTF-8) that Asterisk splits back into ``words``."""
    if not words:
        raise ValueError("an AGI command needs at least one word")
    if "" not in words and _NEEDS_QUOTING.search("".join(words)) is None:
        line = " ".join(words)  # the usual case: no word needs quoting (one search for all)
    else:
        search = _NEEDS_QUOTING.search
        quoted = [w if w and search(w) is None else quote_arg(w) for w in words]
        if quoted[0] is not words[0]:
            raise ValueError(
                f"invalid AGI command word {words[0][:40]!r}: pass each word of the command name "
                "separately, e.g. encode_command('GET', 'VARIABLE', name)"
            )
        line = " ".join(quoted)
    if len(words) > MAX_COMMAND_ARGS:
        raise ValueError(f"AGI command has {len(words)} words; Asterisk keeps only {MAX_COMMAND_ARGS}")
    if line[:7].lower() == "failure":
        raise ValueError("an AGI command line may not start with 'failure' (Asterisk aborts the AGI)")
    try:
        data = (line + "\n").encode(_ENCODING)
    except UnicodeEncodeError as exc:
        raise ValueError(f"AGI command contains a lone surrogate at index {exc.start}; not UTF-8") from None
    if len(data) > MAX_COMMAND_BYTES:
        raise ValueError(
            f"AGI command line is {len(data)} bytes; Asterisk reads at most {MAX_COMMAND_BYTES} "
            "and would run the rest as another command"
        )
    return data


def parse_command_line(line: str) -> tuple[str, ...]:
    """Split a command line exactly like Asterisk's ``res_agi.c`` ``parse_args``.

    Spaces and tabs separate words; ``"`` toggles quoting (an opening quote after blanks
    starts a word, so ``""`` is an empty word); ``\\`` makes the next character literal inside
    and outside quotes (a trailing lone backslash is dropped); words beyond 127 are dropped.
    """
    if '"' not in line and "\\" not in line:
        return tuple(w for w in _BLANKS.split(line) if w)[:MAX_COMMAND_ARGS]
    words: list[list[str]] = []
    quoted = escaped = False
    blank = True
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and blank and len(words) < MAX_COMMAND_ARGS:
                words.append([])
                blank = False
            continue
        if (ch in " \t") and not quoted and not escaped:
            blank = True
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        escaped = False
        if blank:
            if len(words) >= MAX_COMMAND_ARGS:
                continue
            words.append([])
            blank = False
        words[-1].append(ch)
    return tuple("".join(w) for w in words)


# --------------------------------------------------------------------------- line reader
class _LineReader:
    """A byte buffer split into ``\\n`` lines; remembers where it last searched."""

    def __init__(self, max_line: int) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0
        self._eof = False
        self._max_line = max_line

    def receive_data(self, data: bytes) -> None:
        """Add bytes received from the peer; ``b""`` means EOF."""
        if self._eof:
            raise RuntimeError("receive_data() called after EOF")
        if not data:
            self._eof = True
            return
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = self._scan = 0
        elif self._pos > 65536:
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0
        self._buf += data

    def _next_line(self) -> bytearray | None:
        """The next complete line without its ``\\n``, or None (no complete line yet)."""
        buf = self._buf
        nl = buf.find(b"\n", self._scan)
        if nl < 0:
            self._scan = len(buf)
            if self._scan - self._pos > self._max_line:
                raise AgiProtocolError(f"line longer than {self._max_line} bytes")
            return None
        pos = self._pos
        if nl - pos > self._max_line:
            raise AgiProtocolError(f"line longer than {self._max_line} bytes")
        self._pos = self._scan = nl + 1
        return buf[pos:nl]

    @property
    def _partial(self) -> bool:
        return self._pos < len(self._buf)


# --------------------------------------------------------------------------- engine side
class _State(enum.Enum):
    ENV = 1
    COMMANDS = 2
    CLOSED = 3
    ERROR = 4


class AgiServerConnection(_LineReader):
    """The engine's side of one FastAGI connection.

    ``next_event()`` returns NEED_DATA or, in order: one :class:`EnvironmentReceived`, then
    :class:`Reply` / :class:`HangupNotice` events, and :class:`ConnectionClosed` on EOF at a
    frame boundary.  It raises :class:`AgiProtocolError` on garbage, on a limit exceeded, on a
    reply that answers no command, and on EOF inside a frame; after an error every call raises.
    """

    def __init__(
        self,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_env_bytes: int = DEFAULT_MAX_ENV_BYTES,
        max_env_lines: int = DEFAULT_MAX_ENV_LINES,
        max_usage_lines: int = DEFAULT_MAX_USAGE_LINES,
    ) -> None:
        super().__init__(max_line)
        self._state = _State.ENV
        self._max_env_bytes = max_env_bytes
        self._max_env_lines = max_env_lines
        self._max_usage_lines = max_usage_lines
        self._pending = 0
        self._env_lines = 0  # newlines of an incomplete environment block, counted once
        self._multi_code = ""
        self._multi_text = ""
        self._multi_lines: list[str] | None = None
        self._error: AgiProtocolError | None = None

    @property
    def env_received(self) -> bool:
        return self._state is not _State.ENV

    def send_command(self, *words: str) -> bytes:
        """Encode a command (see :func:`encode_command`) and count it as awaiting a reply."""
        data = _ENCODED.get(words)
        if data is None:
            data = encode_command(*words)
            if len(data) <= _MEMO_LINE:
                if len(_ENCODED) >= _MEMO_SIZE:
                    _ENCODED.clear()
                _ENCODED[words] = data
        self._pending += 1
        return data

    def receive_reply(self, data: bytes) -> Reply | None:
        """Fast path of ``receive_data(data)`` + ``next_event()`` for the usual chunk: nothing
        buffered, one command awaiting its reply, and ``data`` is exactly one ``200 result=``
        line.  Returns its Reply; otherwise None, and ``data`` is NOT consumed (use
        :meth:`receive_data`)."""
        if not (
            self._pending == 1
            and self._pos == len(self._buf)
            and self._state is _State.COMMANDS
            and self._multi_lines is None
            and not self._eof
        ):
            return None
        reply = _REPLIES.get(data)
        if reply is None:
            if not (
                data.startswith(b"200 result=")
                and data.find(b"\n") == len(data) - 1
                and len(data) <= self._max_line
            ):
                return None
            reply = _parse_result(data[:-1].decode(_ENCODING, _ERRORS))
            if len(data) <= _MEMO_LINE:
                if len(_REPLIES) >= _MEMO_SIZE:
                    _REPLIES.clear()
                _REPLIES[data] = reply
        self._pending = 0
        return reply

    def next_event(self) -> ServerEvent | NeedData:
        buf, pos = self._buf, self._pos
        if pos == len(buf) and not self._eof and self._error is None:
            return NEED_DATA  # everything consumed: the common case after a reply
        if (
            self._pending > 0
            and self._multi_lines is None
            and self._state is _State.COMMANDS
            and buf.startswith(b"200 result=", pos)
        ):  # fast path for the usual complete one-line reply; anything else takes the loop
            nl = buf.find(b"\n", self._scan)
            if 0 <= nl - pos <= self._max_line:
                self._pos = self._scan = nl + 1
                self._pending -= 1
                return _parse_result(buf[pos:nl].decode(_ENCODING, _ERRORS))
        try:
            while self._state is _State.COMMANDS:
                line = self._next_line()
                if line is None:
                    break
                reply = self._reply_line(line.decode(_ENCODING, _ERRORS))
                if reply is not None:
                    return reply
            else:
                if self._state is _State.ENV:
                    event = self._read_env()
                    if event is not None:
                        return event
                elif self._state is _State.CLOSED:
                    return _CONNECTION_CLOSED
                else:
                    raise AgiProtocolError(str(self._error))
            if self._eof:
                return self._at_eof()
            return NEED_DATA
        except AgiProtocolError as exc:
            self._state = _State.ERROR
            self._error = exc
            raise

    def _at_eof(self) -> ConnectionClosed:
        if self._state is _State.ENV and self._partial:
            raise AgiProtocolError("EOF inside the environment block")
        if self._partial:
            raise AgiProtocolError("EOF in the middle of a line")
        if self._multi_lines is not None:
            raise AgiProtocolError(f"EOF inside a multi-line {self._multi_code} reply")
        self._state = _State.CLOSED
        return _CONNECTION_CLOSED

    def _read_env(self) -> EnvironmentReceived | None:
        """The whole environment block at once (up to the blank line), or None if incomplete."""
        buf, pos = self._buf, self._pos
        if buf.startswith(b"\n", pos):
            end, text, count = pos + 1, "", 0
        else:
            blank = buf.find(b"\n\n", max(pos, self._scan - 1))
            if blank < 0:
                self._env_lines += buf.count(b"\n", self._scan)
                self._scan = len(buf)
                if self._scan - pos > self._max_env_bytes:
                    raise AgiProtocolError(f"environment block larger than {self._max_env_bytes} bytes")
                if self._scan - pos >= 4 and not buf.startswith(b"agi_", pos):
                    raise AgiProtocolError(f"not an AGI environment block: {bytes(buf[pos : pos + 40])!r}")
                if self._env_lines > self._max_env_lines:
                    raise AgiProtocolError(f"environment block has more than {self._max_env_lines} lines")
                return None
            end = blank + 2
            text = buf[pos:blank].decode(_ENCODING, _ERRORS)
            count = text.count("\n") + 1
        if end - pos > self._max_env_bytes:
            raise AgiProtocolError(f"environment block larger than {self._max_env_bytes} bytes")
        if count > self._max_env_lines:
            raise AgiProtocolError(f"environment block has more than {self._max_env_lines} lines")
        mapping: dict[str, str] = {}
        if text:
            if text.count("\nagi_") != count - 1 or not text.startswith("agi_"):
                bad = next(ln for ln in text.split("\n") if not ln.startswith("agi_"))
                raise AgiProtocolError(f"malformed environment line {bad[:80]!r}")
            try:  # C-level iteration only: every line starts with "agi_"; split them at their first ": "
                mapping = dict(map(str.split, text[4:].split("\nagi_"), repeat(": "), repeat(1)))
            except ValueError:
                bad = next(ln for ln in text.split("\n") if ": " not in ln)
                raise AgiProtocolError(f"malformed environment line {bad[:80]!r}") from None
        if "" in mapping:
            raise AgiProtocolError("malformed environment line with an empty agi_ key")
        if len(mapping) != count:
            raise AgiProtocolError("duplicate key in the environment block")
        env = AgiEnv._from_dict(mapping)
        self._pos = self._scan = end
        self._state = _State.COMMANDS
        return EnvironmentReceived(env)

    def _reply_line(self, line: str) -> Reply | HangupNotice | None:
        if self._multi_lines is not None:
            return self._usage_line(line)
        if line.startswith("200 result=") and self._pending > 0:
            self._pending -= 1
            return _parse_result(line)
        if line == "HANGUP":
            return _HANGUP_NOTICE
        code, sep, text = line[:3], line[3:4], line[4:]
        if not (code.isdigit() and code.isascii()) or sep not in (" ", "-"):
            raise AgiProtocolError(f"malformed reply line {line[:80]!r}")
        if sep == "-":
            if self._pending <= 0:
                raise AgiProtocolError(f"reply {line[:80]!r} answers no command")
            self._multi_code, self._multi_text, self._multi_lines = code, text, []
            return None
        return self._answered(Reply(int(code), None, None, None, False, text))

    def _usage_line(self, line: str) -> Reply | None:
        assert self._multi_lines is not None
        if line.startswith(self._multi_code + " "):
            reply = Reply(
                int(self._multi_code), None, None, None, False, self._multi_text, tuple(self._multi_lines)
            )
            self._multi_lines = None
            return self._answered(reply)
        if len(self._multi_lines) >= self._max_usage_lines:
            raise AgiProtocolError(f"multi-line reply longer than {self._max_usage_lines} lines")
        self._multi_lines.append(line)
        return None

    def _answered(self, reply: Reply) -> Reply:
        if self._pending <= 0:
            raise AgiProtocolError(f"reply {reply.code} {reply.text[:80]!r} answers no command")
        self._pending -= 1
        return reply


def _to_int(text: str) -> int | None:
    body = text[1:] if text.startswith("-") else text
    if body.isdigit() and body.isascii():
        return int(text)
    return None


def _parse_result(line: str) -> Reply:
    """Parse a ``200 result=...`` line (data between the first `` (`` and the last ``)``)."""
    rest = line[11:]
    result_text, _, tail = rest.partition(" ")
    endpos: int | None = None
    data: str | None = None
    if tail:
        if tail.startswith("endpos="):
            endpos = _to_int(tail[7:])
            if endpos is not None:
                tail = ""
        else:
            before, sep, number = tail.rpartition(" endpos=")
            if sep:
                endpos = _to_int(number)
                if endpos is not None:
                    tail = before
        if len(tail) >= 2 and tail[0] == "(" and tail[-1] == ")":
            data = tail[1:-1]
    result = int(result_text) if result_text.isdigit() and result_text.isascii() else _to_int(result_text)
    return _new_reply(Reply, (200, result, data, endpos, data == "timeout", line[4:], (), result_text))


# --------------------------------------------------------------------------- Asterisk side
_DEFAULT_TEXTS: Final = {
    510: "Invalid or unknown command",
    511: "Command Not Permitted on a dead channel or intercept routine",
    520: "Invalid command syntax.  Proper usage not available.",
}


def _check_line_text(what: str, text: str) -> None:
    if "\n" in text:
        raise ValueError(f"{what} contains a newline: {text[:80]!r}")


class AgiClientConnection(_LineReader):
    """Asterisk's side of one FastAGI connection (simulated PBX, load client).

    Writes what Asterisk 22 writes (``"\\n"`` line ends) and parses the engine's command lines
    with Asterisk's argument parser.  A command line longer than Asterisk's buffer
    (:data:`MAX_COMMAND_BYTES`), a NUL byte, or EOF in the middle of a line raise
    :class:`AgiProtocolError`.
    """

    def __init__(self, *, max_line: int = MAX_COMMAND_BYTES - 1) -> None:
        super().__init__(max_line)
        self._closed = False

    @staticmethod
    def environment_block(env: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
        """The ``agi_*`` block in the given order, ending with the blank line.

        Keys may be given with or without the ``agi_`` prefix (``"channel"`` and
        ``"agi_channel"`` both write ``agi_channel``).
        """
        pairs = env.items() if isinstance(env, Mapping) else env
        lines = []
        for key, value in pairs:
            name = key if key.startswith("agi_") else "agi_" + key
            _check_line_text("environment key", name)
            _check_line_text(f"value of {name}", value)
            if ": " in name or name == "agi_":
                raise ValueError(f"invalid environment key {name!r}")
            lines.append(f"{name}: {value}\n")
        lines.append("\n")
        return "".join(lines).encode(_ENCODING)

    def next_command(self) -> Command | ConnectionClosed | NeedData:
        if self._closed:
            return _CONNECTION_CLOSED
        line = self._next_line()
        if line is None:
            if not self._eof:
                return NEED_DATA
            if self._partial:
                raise AgiProtocolError("EOF in the middle of a command line")
            self._closed = True
            return _CONNECTION_CLOSED
        if b"\x00" in line:
            raise AgiProtocolError("NUL byte in a command line")
        raw = line.decode(_ENCODING, _ERRORS)
        return Command(parse_command_line(raw), raw)

    @staticmethod
    def format_reply(
        code: int = 200,
        result: int | str | None = None,
        data: str | None = None,
        endpos: int | None = None,
        *,
        text: str | None = None,
    ) -> bytes:
        """One reply line.  ``200`` needs ``result`` (``"200 result=1 (bar) endpos=3"``); other
        codes take ``text`` or Asterisk's own wording for 510 / 511 / 520."""
        if code == 200:
            if result is None:
                raise ValueError("a 200 reply needs a result")
            out = f"200 result={result}"
            if data is not None:
                out += f" ({data})"
            if endpos is not None:
                out += f" endpos={endpos}"
        else:
            if result is not None or data is not None or endpos is not None:
                raise ValueError(f"a {code} reply carries text only")
            body = text if text is not None else _DEFAULT_TEXTS.get(code)
            if body is None:
                raise ValueError(f"no default text for code {code}; pass text=")
            out = f"{code} {body}"
        _check_line_text("reply", out)
        return (out + "\n").encode(_ENCODING)

    @staticmethod
    def usage_reply(lines: Iterable[str]) -> bytes:
        """The multi-line ``520-`` block Asterisk writes for a command used wrongly."""
        body = list(lines)
        for line in body:
            _check_line_text("usage line", line)
        out = ["520-Invalid command syntax.  Proper usage follows:", *body, "520 End of proper usage."]
        return ("\n".join(out) + "\n").encode(_ENCODING)

    @staticmethod
    def hangup_notice() -> bytes:
        """The unsolicited line Asterisk writes when the channel hangs up."""
        return b"HANGUP\n"
