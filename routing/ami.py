"""Sans-I/O codec of the Asterisk Manager Interface (AMI 11, Asterisk 22): bytes in, frozen messages out.

No sockets here: :class:`AmiParser` turns received bytes into :class:`AmiMessage` objects and
:func:`encode_message` / :func:`encode_action` turn headers into bytes.  The asyncio client
(``routing.ami_client``) and the simulated PBX's AMI server both sit on top of it.

Wire format, as recorded from a real Asterisk 22 (``asterisk-captures/``):

* the server first writes a banner line ``Asterisk Call Manager/11.0.0\\r\\n`` (no blank line after it);
* then messages: ``Name: value`` lines ended by CRLF, a message ended by an empty line (CRLF CRLF).
  Header order matters and names repeat (``Variable:`` in Originate, ``ChanVariable`` in events), so a
  message keeps the ordered tuple of every ``(name, value)`` pair, empty values included
  (``PausedReason: ``).
* Values are given RAW.  Asterisk C-escapes some fields (channel-snapshot CallerIDName /
  ConnectedLineName, VarSet Value, NewCallerid) and not others (Newexten AppData, AGIExec Command):
  only the caller knows which, so it calls :func:`unescape_c` on the fields known to be escaped.

Decisions on the odd bytes:

* **Stray bare LF.** A PJSIPShowContacts error reply carries ``Message: No Contacts found\\n\\r\\n\\r\\n``
  (round 2, member_lifecycle).  Only CRLF CRLF ends a message (so that reply stays one message and the
  next one is untouched); inside a message a bare LF ends a line like CRLF does (Asterisk's own
  manager reads lines up to LF and strips one CR), and the blank line it leaves is dropped.  The
  value above is therefore ``No Contacts found``.  A bare CR stays in its value.
* **Lines without ``": "``** (the old ``Response: Follows`` command output, ``--END COMMAND--``) are kept,
  in order, in :attr:`AmiMessage.body`; a line ``Name:`` with nothing after the colon is a header with
  an empty value.  Empty lines before a message (stray CRLFs) are skipped.
* **Bytes that are not UTF-8** are decoded with U+FFFD replacement (Asterisk does the same for SIP
  caller names); the message is kept.
* **Garbage** (a NUL byte, a message with no Event / Response / Action header, a missing banner) and
  every exceeded limit raise :class:`~routing.errors.AmiProtocolError`; after that the parser is
  unusable (the connection must be dropped).  EOF in the middle of a message is reported by
  :meth:`AmiParser.feed_eof`.

Speed: the parser works on whole chunks: one ``rfind`` of CRLF CRLF from a remembered offset, one
check for NUL and bare LF, one decode and one ``split`` into messages; then per message one
``split`` into lines and one comprehension over ``str.partition`` (C-level ``map``), building the
tuple of pairs directly; the message object is filled through its slot descriptors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import chain, repeat
from typing import Final, Literal, cast

from guichet.names import H_ACTION, H_ACTION_ID, H_EVENT, H_RESPONSE, H_SECRET
from routing.errors import AmiProtocolError

__all__ = [
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "AmiMessage",
    "AmiParser",
    "MessageKind",
    "encode_action",
    "encode_message",
    "is_secret_header",
    "unescape_c",
]

MessageKind = Literal["event", "response", "action"]
Header = tuple[str, str]

DEFAULT_MAX_LINE_BYTES: Final = 64 * 1024
DEFAULT_MAX_HEADERS: Final = 1024
DEFAULT_MAX_MESSAGE_BYTES: Final = 1024 * 1024
MAX_BANNER_BYTES: Final = 256
BANNER_PREFIX: Final = "Asterisk Call Manager/"

_KINDS: Final[dict[str, MessageKind]] = {H_EVENT: "event", H_RESPONSE: "response", H_ACTION: "action"}
_KINDS_LOWER: Final[dict[str, MessageKind]] = {k.lower(): v for k, v in _KINDS.items()}
_MASKED: Final = "********"
_TERMINATOR: Final = b"\r\n\r\n"
_SEP: Final = ": "


class AmiMessage:
    """One AMI message: the ordered ``(name, value)`` headers (duplicates and empty values kept).

    Immutable.  ``kind`` is ``"event"``, ``"response"`` or ``"action"`` and ``name`` the value of the
    first Event / Response / Action header.  ``body`` holds the lines that were not ``Name: value``.
    ``get`` and ``[]`` use a case-insensitive dict built on first use.

    The headers are kept as one flat tuple ``(name1, value1, name2, value2, ...)``: one object per
    message instead of one per header, which halves what the garbage collector has to walk when
    events pour in; :attr:`headers` builds the pairs when asked.
    """

    __slots__ = ("_flat", "_index", "body", "kind", "name")

    _flat: tuple[str, ...]
    body: tuple[str, ...]
    kind: MessageKind
    name: str
    _index: dict[str, str]

    def __init__(self, headers: Iterable[Header], body: Iterable[str] = ()) -> None:
        """Build a message from headers (a simulated server, tests); ValueError without a kind header."""
        pairs = tuple((str(n), str(v)) for n, v in headers)
        found = _find_kind(pairs)
        if found is None:
            raise ValueError("an AMI message needs an Event, Response or Action header")
        _init(self, pairs, tuple(body), found[0], found[1])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"AmiMessage is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"AmiMessage is immutable (cannot delete {name!r})")

    @property
    def headers(self) -> tuple[Header, ...]:
        """Every header, in order, as ``(name, value)`` pairs with the raw (not unescaped) values."""
        flat = self._flat
        return tuple(zip(flat[::2], flat[1::2], strict=True))

    def _lookup(self) -> dict[str, str]:
        try:
            return self._index
        except AttributeError:
            flat = self._flat
            # Reversed, so that the first header of a repeated name wins.
            index = dict(zip(map(str.lower, flat[-2::-2]), flat[::-2], strict=True))
            _set_index(self, index)
            return index

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first header called ``name`` (case-insensitive), else ``default``."""
        return self._lookup().get(name.lower(), default)

    def get_all(self, name: str) -> tuple[str, ...]:
        """Every value of the headers called ``name`` (case-insensitive), in order."""
        lname = name.lower()
        flat = self._flat
        return tuple(v for n, v in zip(flat[::2], flat[1::2], strict=True) if n.lower() == lname)

    def __getitem__(self, name: str) -> str:
        value = self._lookup().get(name.lower())
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    def __iter__(self) -> Iterator[Header]:
        return iter(self.headers)

    def __len__(self) -> int:
        return len(self._flat) // 2

    @property
    def action_id(self) -> str | None:
        """The ActionID header, if any."""
        return self.get(H_ACTION_ID)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AmiMessage):
            return NotImplemented
        return self._flat == other._flat and self.body == other.body

    def __hash__(self) -> int:
        return hash((self._flat, self.body))

    def __repr__(self) -> str:
        shown = [(n, _MASKED if is_secret_header(n) else v) for n, v in self.headers]
        extra = f", body={self.body!r}" if self.body else ""
        return f"AmiMessage({shown!r}{extra})"


def _slot_setter(name: str) -> Callable[[AmiMessage, object], None]:
    """The raw slot writer, to fill an immutable message without going through __setattr__."""
    return cast(Callable[[AmiMessage, object], None], AmiMessage.__dict__[name].__set__)


_set_flat = _slot_setter("_flat")
_set_body = _slot_setter("body")
_set_kind = _slot_setter("kind")
_set_name = _slot_setter("name")
_set_index = _slot_setter("_index")
_new_message = object.__new__
_chain_lists = chain.from_iterable
_split = str.split
_SEPS = repeat(_SEP)  # endless, shared by every split
_ONCE = repeat(1)


def _init(msg: AmiMessage, headers: tuple[Header, ...], body: tuple[str, ...], kind: str, name: str) -> None:
    _set_flat(msg, tuple(chain.from_iterable(headers)))
    _set_body(msg, body)
    _set_kind(msg, kind)
    _set_name(msg, name)


def _find_kind(headers: Iterable[Header]) -> tuple[MessageKind, str] | None:
    for hname, value in headers:
        kind = _KINDS_LOWER.get(hname.lower())
        if kind is not None:
            return kind, value
    return None


def _split_lines(lines: list[str]) -> tuple[tuple[Header, ...], tuple[str, ...]]:
    """Headers and body lines of a message's lines (blank lines dropped)."""
    headers: list[Header] = []
    body: list[str] = []
    for line in lines:
        name, sep, value = line.partition(_SEP)
        if sep:
            headers.append((name, value))
        elif line.endswith(":"):
            headers.append((line[:-1], ""))
        elif line:
            body.append(line)
    return tuple(headers), tuple(body)


class AmiParser:
    """Incremental AMI parser.

    Call :meth:`feed` with every chunk received; it returns the complete messages, in order (maybe
    none).  Call :meth:`feed_eof` when the peer closed.  ``expect_banner=True`` (a client reading
    Asterisk) requires the ``Asterisk Call Manager/x.y.z`` line first and exposes it as
    :attr:`banner`; a server parsing actions passes ``expect_banner=False``.

    Limits (lines, headers, message size) count bytes while a message is incomplete and decoded
    characters once it is.  Every protocol violation raises :class:`AmiProtocolError`; the parser
    then stays failed.
    """

    def __init__(
        self,
        *,
        expect_banner: bool = True,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if min(max_line_bytes, max_headers, max_message_bytes) < 1:
            raise ValueError("AMI parser limits must be positive")
        self.banner: str | None = None
        self._need_banner = expect_banner
        self._max_line = max_line_bytes
        self._max_headers = max_headers
        self._max_message = max_message_bytes
        self._buf = b""
        self._scan = 0  # offset in _buf where the search for CRLF CRLF resumes
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[AmiMessage]:
        """Add received bytes; return the messages they complete."""
        if self._failed is not None:
            raise AmiProtocolError(f"AMI parser already failed: {self._failed}")
        buf = self._buf + data if self._buf else bytes(data)
        try:
            return self._consume(buf)
        except AmiProtocolError as exc:
            self._failed = str(exc)
            self._buf = b""
            raise

    def feed_eof(self) -> None:
        """The peer closed: raise AmiProtocolError if a message (or the banner) was cut short."""
        if self._failed is not None:
            raise AmiProtocolError(f"AMI parser already failed: {self._failed}")
        if self._buf.strip(b"\r\n") or (self._need_banner and self._buf):
            self._failed = "EOF in the middle of a message"
            raise AmiProtocolError(
                f"AMI connection closed in the middle of a message ({len(self._buf)} bytes pending)"
            )

    def _consume(self, buf: bytes) -> list[AmiMessage]:
        pos = 0
        if self._need_banner:
            pos = self._read_banner(buf)
            if self._need_banner:
                self._buf = buf
                return []
        out: list[AmiMessage] = []
        last = buf.rfind(_TERMINATOR, max(pos, self._scan))
        if last >= 0:
            region = buf[pos : last + 4]
            pos = last + 4
            self._parse_region(region, out)
        rest = buf[pos:]
        self._check_partial(rest)
        self._buf = rest
        self._scan = max(0, len(rest) - 3)
        return out

    def _parse_region(self, region: bytes, out: list[AmiMessage]) -> None:
        """Parse complete messages (region ends with CRLF CRLF) into ``out``."""
        if b"\x00" in region:
            raise AmiProtocolError("NUL byte in the AMI stream (binary garbage)")
        if len(region) > self._max_message and max(map(len, region.split(_TERMINATOR))) > self._max_message:
            raise AmiProtocolError(f"AMI message larger than {self._max_message} bytes")
        # One C-speed check per chunk: with no bare LF, every message takes the fast path.
        clean = region.count(b"\n") == region.count(b"\r\n")
        blocks = region.decode("utf-8", "replace").split("\r\n\r\n")
        blocks.pop()  # the empty string after the last terminator
        max_line = self._max_line
        many_lines = 3 * self._max_headers
        append = out.append
        for text in blocks:
            size = len(text)
            if size > max_line and max(map(len, text.split("\n"))) > max_line + 1:
                raise AmiProtocolError(f"AMI header line longer than {max_line} bytes")
            if size > many_lines and text.count("\n") >= self._max_headers:
                raise AmiProtocolError(f"AMI message with more than {self._max_headers} lines")
            if clean or text.count("\n") == text.count("\r\n"):
                lines = text.split("\r\n")
                # Each "Name: value" line splits in two; a line without ": " gives one item only.
                flat = tuple(_chain_lists(map(_split, lines, _SEPS, _ONCE)))
                if len(flat) == 2 * len(lines):
                    kind = _KINDS.get(flat[0])
                    if kind is not None:
                        msg = _new_message(AmiMessage)  # filled inline: a helper call costs ~10 %
                        _set_flat(msg, flat)
                        _set_body(msg, ())
                        _set_kind(msg, kind)
                        _set_name(msg, flat[1])
                        append(msg)
                        continue
            slow = self._parse_slow(text)
            if slow is not None:
                append(slow)

    def _read_banner(self, buf: bytes) -> int:
        eol = buf.find(b"\n")
        if eol < 0:
            if len(buf) > MAX_BANNER_BYTES:
                raise AmiProtocolError(f"no AMI banner line within {MAX_BANNER_BYTES} bytes")
            return 0
        line = buf[:eol].rstrip(b"\r").decode("utf-8", "replace")
        if not line.startswith(BANNER_PREFIX):
            raise AmiProtocolError(f"expected the AMI banner {BANNER_PREFIX!r}..., got {line[:60]!r}")
        self.banner = line
        self._need_banner = False
        self._scan = 0
        return eol + 1

    def _check_partial(self, rest: bytes) -> None:
        size = len(rest)
        if size > self._max_message:
            raise AmiProtocolError(f"AMI message larger than {self._max_message} bytes")
        if size > self._max_line:
            tail = size - rest.rfind(b"\n") - 1
            if tail > self._max_line:
                raise AmiProtocolError(f"AMI header line longer than {self._max_line} bytes")
        if b"\x00" in rest:
            raise AmiProtocolError("NUL byte in the AMI stream (binary garbage)")

    def _parse_slow(self, text: str) -> AmiMessage | None:
        """CRLF or bare LF line ends, blank lines, body lines, kind header not first."""
        headers, body = _split_lines(text.replace("\r\n", "\n").split("\n"))
        if not headers and not body:
            return None
        found = _find_kind(headers)
        if found is None:
            first = (headers[0][0] if headers else body[0])[:40]
            raise AmiProtocolError(f"AMI message without Event, Response or Action header (starts {first!r})")
        msg = _new_message(AmiMessage)
        _init(msg, headers, body, found[0], found[1])
        return msg


def _check_header(name: str, value: str) -> None:
    if not name or name != name.strip() or any(c in name for c in ":\r\n\x00"):
        raise ValueError(f"invalid AMI header name {name!r}: it must be non-empty, without ':', CR, LF, NUL")
    if "\r" in value or "\n" in value or "\x00" in value:
        # The value itself is not shown: it may be a secret, and it is what an attacker controls.
        raise ValueError(f"AMI header {name!r}: its value contains CR, LF or NUL (header injection refused)")


def encode_message(headers: Iterable[Header] | Mapping[str, str]) -> bytes:
    """Encode headers as one AMI message (``Name: value`` CRLF lines, then CRLF).

    Raises ValueError when a name is empty or holds ``:``, CR, LF or NUL, or a value holds CR, LF or
    NUL, so that a caller-ID name can never inject a header or an action.
    """
    items = cast(Iterable[Header], headers.items() if isinstance(headers, Mapping) else headers)
    parts: list[str] = []
    for name, value in items:
        _check_header(name, value)
        parts.append(f"{name}: {value}\r\n")
    if not parts:
        raise ValueError("an AMI message needs at least one header")
    parts.append("\r\n")
    return "".join(parts).encode("utf-8")


def encode_action(
    action: str, headers: Iterable[Header] | Mapping[str, str] = (), action_id: str | None = None
) -> bytes:
    """Encode ``Action``, then ``ActionID`` (if given), then ``headers`` (order kept, duplicates allowed)."""
    items = list(cast(Iterable[Header], headers.items() if isinstance(headers, Mapping) else headers))
    for name, _ in items:
        if name.lower() in ("action", "actionid"):
            raise ValueError(f"pass the {name} header as a parameter of encode_action, not in headers")
    first: list[Header] = [(H_ACTION, action)]
    if action_id is not None:
        first.append((H_ACTION_ID, action_id))
    return encode_message(first + items)


def is_secret_header(name: str) -> bool:
    """True for headers whose value must never be logged."""
    return name.lower() == H_SECRET.lower()


_C_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}


def unescape_c(value: str) -> str:
    """Undo Asterisk's ``ast_escape_c`` (used on CallerIDName, VarSet Value, ...).

    ``Zoé \\\\\\"VIP\\\\\\" <Dupré>`` (as sent in AMI) becomes ``Zoé \\"VIP\\" <Dupré>``.  An unknown
    escape or a trailing backslash is kept as is.
    """
    if "\\" not in value:
        return value
    out: list[str] = []
    i = 0
    size = len(value)
    while i < size:
        j = value.find("\\", i)
        if j < 0 or j == size - 1:
            out.append(value[i:])
            break
        out.append(value[i:j])
        repl = _C_ESCAPES.get(value[j + 1])
        out.append(repl if repl is not None else value[j : j + 2])
        i = j + 2
    return "".join(out)
