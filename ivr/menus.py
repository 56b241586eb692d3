"""Voice menus as data: the model, the YAML loader and the checks.

One menu tree per ``*.yaml`` file of a directory (``dialplans/`` by default); the
tree's name is the file's stem.  The format is described for a département's IT
staff in ``dialplans/README.md``.

The loader works on PyYAML's composed node graph (``yaml.compose`` with the safe
loader: nothing is ever constructed from tags) so that every error names the
file, the line and the key.  It reports *every* error of every file at once,
sorted by file and line: :func:`check_menus` returns them, :func:`load_menus`
raises them in a :class:`MenuValidationError` or returns the :class:`MenuSet`.

Checks: YAML syntax, unknown node type, missing or unknown field (with a
"did you mean"), wrong value type, missing prompt text, bad digit map (keys
must be one of ``0-9 * #``; YAML reads ``1:`` as a number and ``0x1:`` or
``01:`` as the number 1, both are handled), duplicate keys, unknown target
node or tree, unreachable node, loop without exit (nodes from which no queue,
transfer, callback or hangup can be reached), unknown queue, bad urgency,
retries and timeouts out of range.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, TypeAlias

import yaml

logger = logging.getLogger(__name__)

DIGITS: Final = "0123456789*#"
URGENCIES: Final = ("normal", "high", "urgent")  # mapped to QUEUE_PRIO by the urgency rules
TIMEOUT_RANGE_S: Final = (1, 30)
RETRIES_RANGE: Final = (0, 5)
DEFAULT_TIMEOUT_S: Final = 5
DEFAULT_RETRIES: Final = 2

_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
_SOUND_RE: Final = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*\Z")
_NUMBER_RE: Final = re.compile(r"\+?[0-9]{2,20}\Z")
_STR_TAG: Final = "tag:yaml.org,2002:str"
_INT_TAG: Final = "tag:yaml.org,2002:int"
_FLOAT_TAG: Final = "tag:yaml.org,2002:float"


# --- Issues -------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class MenuIssue:
    """One error in a menu file: where (file, 1-based line, dotted key) and what."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:" if self.line else f"{self.file}:"
        return f"{where} {self.key}: {self.message}" if self.key else f"{where} {self.message}"


class MenuError(Exception):
    """Base class of the errors of the menu loader."""


class MenuValidationError(MenuError):
    """The menus are invalid; ``errors`` holds every issue, sorted by file and line."""

    def __init__(self, errors: Iterable[MenuIssue]) -> None:
        self.errors: tuple[MenuIssue, ...] = tuple(sorted(errors))
        super().__init__("\n".join(str(issue) for issue in self.errors))


# --- Model --------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """What the caller hears: a French text, optionally a recorded sound (Asterisk name, no extension)."""

    text: str
    file: str | None = None


@dataclass(frozen=True)
class PromptNode:
    """Say a prompt, then go to ``next``."""

    name: str
    line: int
    prompt: Prompt
    next: str


@dataclass(frozen=True)
class Choice:
    """One key of a menu: the node it leads to and the words a caller may say instead."""

    digit: str
    next: str
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class MenuNode:
    """Collect one key (or a keyword); after ``retries`` replays with no valid answer, go to ``fallback``."""

    name: str
    line: int
    prompt: Prompt
    choices: tuple[Choice, ...]
    fallback: str
    timeout_s: int = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    no_input: str | None = None  # said when no key came in time (else the menu is replayed as is)
    invalid: str | None = None  # said after a key the menu does not offer

    @property
    def digits(self) -> str:
        """Every key the menu accepts (the escape digits of the prompt)."""
        return "".join(choice.digit for choice in self.choices)

    def choice(self, digit: str) -> Choice | None:
        return next((choice for choice in self.choices if choice.digit == digit), None)


@dataclass(frozen=True)
class InfoNode:
    """Answer a question directly; key 1 goes to ``agent``, anything else (or nothing) to ``next``."""

    name: str
    line: int
    prompt: Prompt
    agent: str
    next: str
    timeout_s: int = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class QueueNode:
    """Hand the call back to the dialplan for a service queue, with an urgency and a reason code."""

    name: str
    line: int
    queue: str
    urgency: str
    reason: str
    prompt: Prompt | None = None


@dataclass(frozen=True)
class TransferNode:
    """Transfer to an external number (emergencies, e.g. 119)."""

    name: str
    line: int
    number: str
    reason: str
    prompt: Prompt | None = None


@dataclass(frozen=True)
class CallbackNode:
    """Record a callback request for a service, tell the caller, and end the call."""

    name: str
    line: int
    service: str
    reason: str
    prompt: Prompt


@dataclass(frozen=True)
class GotoNode:
    """Continue at another node of this tree, or at the start of another file's tree."""

    name: str
    line: int
    node: str | None = None
    tree: str | None = None


@dataclass(frozen=True)
class HoursNode:
    """Go to ``open`` when the named schedule is open now, to ``closed`` otherwise."""

    name: str
    line: int
    schedule: str
    open: str
    closed: str


@dataclass(frozen=True)
class HangupNode:
    """Say an optional goodbye and hang up."""

    name: str
    line: int
    prompt: Prompt | None = None


Node: TypeAlias = (
    PromptNode
    | MenuNode
    | InfoNode
    | QueueNode
    | TransferNode
    | CallbackNode
    | GotoNode
    | HoursNode
    | HangupNode
)
TERMINAL_TYPES: Final = (QueueNode, TransferNode, CallbackNode, HangupNode)


@dataclass(frozen=True)
class MenuTree:
    """The nodes of one file; the call enters at ``start``."""

    name: str
    file: Path
    start: str
    nodes: Mapping[str, Node]
    description: str | None = None

    def node(self, name: str) -> Node:
        return self.nodes[name]


@dataclass(frozen=True)
class MenuSet:
    """Every tree of a directory, by name (the file's stem)."""

    trees: Mapping[str, MenuTree]

    def tree(self, name: str) -> MenuTree:
        return self.trees[name]


# --- Field specs per node type ------------------------------------------------

_PROMPT_FIELDS: Final = frozenset({"text", "file"})
_SPECS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    # type: (required fields, optional fields); "type" itself is implied
    "prompt": (frozenset({"text", "next"}), frozenset({"file"})),
    "menu": (
        frozenset({"text", "choices", "fallback"}),
        frozenset({"file", "timeout", "retries", "no_input", "invalid"}),
    ),
    "info": (frozenset({"text", "agent", "next"}), frozenset({"file", "timeout"})),
    "queue": (frozenset({"queue", "urgency", "reason"}), _PROMPT_FIELDS),
    "transfer": (frozenset({"number", "reason"}), _PROMPT_FIELDS),
    "callback": (frozenset({"service", "reason", "text"}), frozenset({"file"})),
    "goto": (frozenset(), frozenset({"node", "tree"})),
    "hours": (frozenset({"schedule", "open", "closed"}), frozenset()),
    "hangup": (frozenset(), _PROMPT_FIELDS),
}
_CHOICE_FIELDS: Final = frozenset({"next", "keywords"})
_TREE_FIELDS: Final = (frozenset({"start", "nodes"}), frozenset({"description"}))


@dataclass(frozen=True)
class _Ref:
    """A reference from a node to a node of the same tree (or, with ``tree``, to another tree)."""

    source: str
    key: str
    line: int
    target: str
    tree: bool = False


@dataclass
class _FileResult:
    name: str
    path: Path
    start: str = ""
    start_line: int = 0
    description: str | None = None
    declared: dict[str, int] = field(default_factory=dict)  # node name -> line
    nodes: dict[str, Node] = field(default_factory=dict)
    refs: list[_Ref] = field(default_factory=list)
    parsed: bool = False  # the top level was readable (start + nodes)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r} (read by YAML as {node.tag.rsplit(':', 1)[-1]})"


def _scalar(node: yaml.ScalarNode) -> object:
    """The value YAML's safe loader gives a plain scalar (e.g. ``0x1`` -> 1, ``yes`` -> True)."""
    try:
        return yaml.safe_load(node.value)
    except yaml.YAMLError:
        return node.value


def _suggest(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class _FileReader:
    """Reads one composed YAML document; records an issue for each mistake and never stops early."""

    def __init__(
        self,
        path: Path,
        issues: list[MenuIssue],
        known_queues: Collection[str],
        known_schedules: Collection[str] | None,
    ) -> None:
        self.path = path
        self.issues = issues
        self.known_queues = known_queues
        self.known_schedules = known_schedules
        self.result = _FileResult(path.stem, path)

    def error(self, node: yaml.Node | int, key: str, message: str) -> None:
        line = node if isinstance(node, int) else _line(node)
        self.issues.append(MenuIssue(str(self.path), line, key, message))

    # -- generic readers (each returns a placeholder after recording an error) --

    def mapping(
        self, node: yaml.Node, key: str, required: frozenset[str], optional: frozenset[str], what: str
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The fields of a mapping by name, checking duplicates, unknown and missing fields."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, key, f"expected {what} (a mapping of fields), got {_kind(node)}")
            return {}
        allowed = required | optional
        fields: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if name is None or key_node.tag != _STR_TAG:
                self.error(key_node, key, f"field names are words, got {_kind(key_node)}")
                continue
            where = f"{key}.{name}" if key else name
            if name in fields:
                self.error(key_node, where, f"duplicate field (first at line {_line(fields[name][0])})")
            elif name not in allowed:
                self.error(
                    key_node,
                    where,
                    f"unknown field for {what}{_suggest(name, allowed)} "
                    f"(fields: {', '.join(sorted(allowed))})",
                )
            else:
                fields[name] = (key_node, value_node)
        for name in sorted(required - fields.keys()):
            self.error(node, key, f"missing field {name!r} for {what}")
        return fields

    def text(self, fields: Mapping[str, tuple[yaml.Node, yaml.Node]], key: str, name: str) -> str | None:
        """An optional non-empty string field."""
        if name not in fields:
            return None
        value = fields[name][1]
        if not isinstance(value, yaml.ScalarNode) or value.tag != _STR_TAG:
            self.error(value, f"{key}.{name}", f"expected a text, got {_kind(value)}; put it in quotes")
            return ""
        if not value.value.strip():
            self.error(value, f"{key}.{name}", "empty text")
            return ""
        return str(value.value)

    def required_text(self, fields: Mapping[str, tuple[yaml.Node, yaml.Node]], key: str, name: str) -> str:
        return self.text(fields, key, name) or ""  # a missing field was reported by mapping()

    def pattern(
        self,
        fields: Mapping[str, tuple[yaml.Node, yaml.Node]],
        key: str,
        name: str,
        regex: re.Pattern[str],
        explain: str,
    ) -> str | None:
        value = self.text(fields, key, name)
        if value and not regex.match(value):
            self.error(fields[name][1], f"{key}.{name}", f"{value!r} is not {explain}")
        return value

    def integer(
        self,
        fields: Mapping[str, tuple[yaml.Node, yaml.Node]],
        key: str,
        name: str,
        bounds: tuple[int, int],
        default: int,
    ) -> int:
        if name not in fields:
            return default
        value = fields[name][1]
        low, high = bounds
        if not isinstance(value, yaml.ScalarNode) or value.tag not in (_INT_TAG, _FLOAT_TAG):
            self.error(
                value, f"{key}.{name}", f"expected a whole number from {low} to {high}, got {_kind(value)}"
            )
            return default
        number = _scalar(value)
        if not isinstance(number, int | float) or not float(number).is_integer() or not low <= number <= high:
            self.error(
                value, f"{key}.{name}", f"{value.value} is out of range: a whole number from {low} to {high}"
            )
            return default
        return int(number)

    def target(
        self, fields: Mapping[str, tuple[yaml.Node, yaml.Node]], source: str, key: str, name: str
    ) -> str:
        """A node name of this tree (checked once every node is known)."""
        value = self.text(fields, key, name)
        if value:
            self.result.refs.append(_Ref(source, f"{key}.{name}", _line(fields[name][1]), value))
        return value or ""

    def prompt(self, fields: Mapping[str, tuple[yaml.Node, yaml.Node]], key: str) -> Prompt | None:
        text = self.text(fields, key, "text")
        sound = self.pattern(
            fields,
            key,
            "file",
            _SOUND_RE,
            "a sound name (letters, digits, - and _, folders with /, no extension)",
        )
        if text is None:
            if sound is not None:
                self.error(fields["file"][0], f"{key}.file", "a recorded file needs its text too")
            return None
        return Prompt(text, sound)

    def required_prompt(self, fields: Mapping[str, tuple[yaml.Node, yaml.Node]], key: str) -> Prompt:
        return self.prompt(fields, key) or Prompt("")

    # -- the document --

    def read(self, document: yaml.Node) -> None:
        fields = self.mapping(document, "", *_TREE_FIELDS, "a menu file")
        if not fields:
            return
        self.result.description = self.text(fields, "", "description")
        if "start" in fields:
            self.result.start = self.required_text(fields, "", "start")
            self.result.start_line = _line(fields["start"][1])
        if "nodes" not in fields:
            return
        nodes = fields["nodes"][1]
        if not isinstance(nodes, yaml.MappingNode) or not nodes.value:
            self.error(nodes, "nodes", f"expected a mapping of node names to nodes, got {_kind(nodes)}")
            return
        self.result.parsed = "start" in fields
        for key_node, value_node in nodes.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else ""
            if (
                not isinstance(key_node, yaml.ScalarNode)
                or key_node.tag != _STR_TAG
                or not _NAME_RE.match(name)
            ):
                self.error(
                    key_node,
                    "nodes",
                    f"bad node name {_kind(key_node)}: lower-case letters, digits, - and _, "
                    "starting with a letter or digit",
                )
                continue
            if name in self.result.declared:
                self.error(
                    key_node, f"nodes.{name}", f"duplicate node (first at line {self.result.declared[name]})"
                )
                continue
            self.result.declared[name] = _line(key_node)
            before = len(self.issues)
            node = self.node(name, _line(key_node), value_node)
            if node is not None and len(self.issues) == before:
                self.result.nodes[name] = node

    def node(self, name: str, line: int, value: yaml.Node) -> Node | None:
        key = f"nodes.{name}"
        type_node = None
        if isinstance(value, yaml.MappingNode):
            type_node = next((v for k, v in value.value if getattr(k, "value", None) == "type"), None)
        if type_node is None:
            if isinstance(value, yaml.MappingNode):
                self.error(value, key, f"missing field 'type' (one of: {', '.join(_SPECS)})")
            else:
                self.error(value, key, f"expected a node (a mapping of fields), got {_kind(value)}")
            return None
        kind = type_node.value if isinstance(type_node, yaml.ScalarNode) else None
        if kind not in _SPECS:
            shown = _kind(type_node) if kind is None else f"{kind!r}{_suggest(kind, _SPECS)}"
            self.error(type_node, f"{key}.type", f"unknown node type {shown} (types: {', '.join(_SPECS)})")
            return None
        required, optional = _SPECS[kind]
        fields = self.mapping(value, key, required, optional | {"type"}, f"a {kind} node")
        return _BUILDERS[kind](self, name, line, key, fields)

    def choices(self, name: str, key: str, value: yaml.Node) -> tuple[Choice, ...]:
        """The digit map of a menu node."""
        key = f"{key}.choices"
        if not isinstance(value, yaml.MappingNode) or not value.value:
            self.error(value, key, f"expected a mapping of keys (0-9, * or #) to nodes, got {_kind(value)}")
            return ()
        found: dict[str, int] = {}
        keywords: dict[str, int] = {}
        choices: list[Choice] = []
        for key_node, choice_node in value.value:
            digit = self.digit(key_node, key)
            if digit is None:
                continue
            where = f"{key}.{digit}"
            if digit in found:
                self.error(key_node, where, f"key {digit} is already used at line {found[digit]}")
                continue
            found[digit] = _line(key_node)
            fields: dict[str, tuple[yaml.Node, yaml.Node]]
            if isinstance(choice_node, yaml.ScalarNode):
                fields = {"next": (key_node, choice_node)}
            else:
                fields = self.mapping(choice_node, where, frozenset({"next"}), _CHOICE_FIELDS, "a choice")
            target = self.target(fields, name, where, "next")
            words = self.keywords(fields, where)
            for word, word_line in words:
                if word in keywords:
                    self.error(
                        word_line,
                        f"{where}.keywords",
                        f"keyword {word!r} is already used at line {keywords[word]}",
                    )
                keywords.setdefault(word, word_line)
            choices.append(Choice(digit, target, tuple(word for word, _ in words)))
        return tuple(choices)

    def digit(self, node: yaml.Node, key: str) -> str | None:
        """A digit-map key: a single 0-9, * or #, whether YAML read it as a text or (for 0-9) a number."""
        raw = node.value if isinstance(node, yaml.ScalarNode) else None
        if isinstance(raw, str) and len(raw) == 1 and raw in DIGITS and node.tag in (_STR_TAG, _INT_TAG):
            return raw
        if isinstance(node, yaml.ScalarNode) and node.tag != _STR_TAG:
            self.error(
                node,
                f"{key}.{raw}",
                f"YAML reads the key {raw} as the {node.tag.rsplit(':', 1)[-1]} {_scalar(node)!r}, "
                "not as a phone key: "
                'a key is one of 0-9, * or #; write it in quotes, e.g. "1"',
            )
        else:
            self.error(
                node, key, f"bad key {_kind(node)}: a key is one of 0-9, * or # (in quotes for * and #)"
            )
        return None

    def keywords(self, fields: Mapping[str, tuple[yaml.Node, yaml.Node]], key: str) -> list[tuple[str, int]]:
        if "keywords" not in fields:
            return []
        value = fields["keywords"][1]
        if not isinstance(value, yaml.SequenceNode) or not value.value:
            self.error(value, f"{key}.keywords", f"expected a list of words or phrases, got {_kind(value)}")
            return []
        words: list[tuple[str, int]] = []
        for item in value.value:
            if not isinstance(item, yaml.ScalarNode) or item.tag != _STR_TAG or not item.value.strip():
                self.error(item, f"{key}.keywords", f"expected a word or phrase, got {_kind(item)}")
            else:
                words.append((" ".join(item.value.lower().split()), _line(item)))
        return words

    def known_queue(self, fields: Mapping[str, tuple[yaml.Node, yaml.Node]], key: str, name: str) -> str:
        queue = self.required_text(fields, key, name)
        if queue and queue not in self.known_queues:
            self.error(
                fields[name][1],
                f"{key}.{name}",
                f"unknown queue {queue!r}{_suggest(queue, self.known_queues)} "
                f"(queues: {', '.join(sorted(self.known_queues))})",
            )
        return queue

    def reason(self, fields: Mapping[str, tuple[yaml.Node, yaml.Node]], key: str) -> str:
        return (
            self.pattern(
                fields, key, "reason", _NAME_RE, "a reason code (lower-case letters, digits, - and _)"
            )
            or ""
        )


# --- Builders, one per node type ------------------------------------------------

_Fields: TypeAlias = Mapping[str, tuple[yaml.Node, yaml.Node]]


def _build_prompt(r: _FileReader, name: str, line: int, key: str, f: _Fields) -> Node:
    return PromptNode(name, line, r.required_prompt(f, key), r.target(f, name, key, "next"))


def _build_menu(r: _FileReader, name: str, line: int, key: str, f: _Fields) -> Node:
    choices = r.choices(name, key, f["choices"][1]) if "choices" in f else ()
    return MenuNode(
        name,
        line,
        r.required_prompt(f, key),
        choices,
        r.target(f, name, key, "fallback"),
        r.integer(f, key, "timeout", TIMEOUT_RANGE_S, DEFAULT_TIMEOUT_S),
        r.integer(f, key, "retries", RETRIES_RANGE, DEFAULT_RETRIES),
        r.text(f, key, "no_input"),
        r.text(f, key, "invalid"),
    )


def _build_info(r: _FileReader, name: str, line: int, key: str, f: _Fields) -> Node:
    return InfoNode(
        name,
        line,
        r.required_prompt(f, key),
        r.target(f, name, key, "agent"),
        r.target(f, name, key, "next"),
        r.integer(f, key, "timeout", TIMEOUT_RANGE_S, DEFAULT_TIMEOUT_S),
    )


def _build_queue(r: _FileReader, name: str, line: int, key: str, f: _Fields) -> Node:
    urgency = r.required_text(f, key, "urgency")
    if urgency and urgency not in URGENCIES:
        r.error(
            f["urgency"][1], f"{key}.urgency", f"bad urgency {urgency!r} (one of: {', '.join(URGENCIES)})"
        )
    return QueueNode(name, line, r.known_queue(f, key, "queue"), urgency, r.reason(f, key), r.prompt(f, key))


def _build_transfer(r: _FileReader, name: str, line: int, key: str, f: _Fields) -> Node:
    number = r.pattern(f, key, "number", _NUMBER_RE, "a phone number (2 to 20 digits, optional leading +)")
    return TransferNode(name, line, number or "", r.reason(f, key), r.prompt(f, key))


def _build_callback(r: _FileReader, name: str, line: int, key: str, f: _Fields) -> Node:
    return CallbackNode(
        name, line, r.known_queue(f, key, "service"), r.reason(f, key), r.required_prompt(f, key)
    )


def _build_goto(r: _FileReader, name: str, line: int, key: str, f: _Fields) -> Node:
    if ("node" in f) == ("tree" in f):
        r.error(line, key, "a goto node needs exactly one of 'node' (this file) or 'tree' (another file)")
        return GotoNode(name, line)
    if "node" in f:
        return GotoNode(name, line, node=r.target(f, name, key, "node"))
    tree = r.required_text(f, key, "tree")
    if tree:
        r.result.refs.append(_Ref(name, f"{key}.tree", _line(f["tree"][1]), tree, tree=True))
    return GotoNode(name, line, tree=tree)


def _build_hours(r: _FileReader, name: str, line: int, key: str, f: _Fields) -> Node:
    schedule = r.required_text(f, key, "schedule")
    if schedule and r.known_schedules is not None and schedule not in r.known_schedules:
        r.error(
            f["schedule"][1],
            f"{key}.schedule",
            f"unknown schedule {schedule!r}{_suggest(schedule, r.known_schedules)} "
            f"(schedules: {', '.join(sorted(r.known_schedules))})",
        )
    return HoursNode(
        name,
        line,
        schedule,
        r.target(f, name, key, "open"),
        r.target(f, name, key, "closed"),
    )


def _build_hangup(r: _FileReader, name: str, line: int, key: str, f: _Fields) -> Node:
    return HangupNode(name, line, r.prompt(f, key))


_BUILDERS: Final[dict[str, Callable[[_FileReader, str, int, str, _Fields], Node]]] = {
    "prompt": _build_prompt,
    "menu": _build_menu,
    "info": _build_info,
    "queue": _build_queue,
    "transfer": _build_transfer,
    "callback": _build_callback,
    "goto": _build_goto,
    "hours": _build_hours,
    "hangup": _build_hangup,
}


# --- Files, graph checks and the public API ----------------------------------------

_TERMINAL_WORDS: Final = "a queue, transfer, callback or hangup"
_SYNTAX_HINTS: Final = (
    ("alias", 'a key or value starting with * or & must be in quotes, e.g. "*"'),
    ("anchor", 'a key or value starting with * or & must be in quotes, e.g. "*"'),
    ("'\\t'", "indent with spaces, not tabs"),
)


def _read_file(
    path: Path,
    issues: list[MenuIssue],
    known_queues: Collection[str],
    known_schedules: Collection[str] | None,
) -> _FileResult | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        issues.append(MenuIssue(str(path), 0, "", f"cannot read the file: {exc}"))
        return None
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = f"{exc.problem} ({exc.context})" if exc.context else str(exc.problem)
        hint = next((f"; {h}" for word, h in _SYNTAX_HINTS if word in problem), "")
        issues.append(
            MenuIssue(str(path), mark.line + 1 if mark else 0, "", f"YAML syntax error: {problem}{hint}")
        )
        return None
    except yaml.YAMLError as exc:
        issues.append(MenuIssue(str(path), 0, "", f"YAML syntax error: {exc}"))
        return None
    if document is None:
        issues.append(MenuIssue(str(path), 1, "", "empty file: a menu file has 'start' and 'nodes'"))
        return None
    reader = _FileReader(path, issues, known_queues, known_schedules)
    reader.read(document)
    return reader.result


def _reach(
    start: Iterable[tuple[str, str]], edges: Mapping[tuple[str, str], list[tuple[str, str]]]
) -> set[tuple[str, str]]:
    """Every node reachable in one step or more from ``start``."""
    seen: set[tuple[str, str]] = set()
    todo = [target for node in start for target in edges.get(node, ())]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, ()))
    return seen


def _check_graph(results: list[_FileResult], issues: list[MenuIssue]) -> None:
    trees = {result.name: result for result in results}
    edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
    exits: set[tuple[str, str]] = set()
    for r in results:
        for name in r.declared:
            edges[(r.name, name)] = []
            node = r.nodes.get(name)
            if node is None or isinstance(node, TERMINAL_TYPES):
                exits.add((r.name, name))  # a node that failed to load is not blamed for a loop
        if r.parsed and r.start and r.start not in r.declared:
            issues.append(
                MenuIssue(
                    str(r.path),
                    r.start_line,
                    "start",
                    f"unknown node {r.start!r}{_suggest(r.start, r.declared)}",
                )
            )
        for ref in r.refs:
            if ref.tree:
                tree = trees.get(ref.target)
                if tree is None:
                    issues.append(
                        MenuIssue(
                            str(r.path),
                            ref.line,
                            ref.key,
                            f"unknown tree {ref.target!r}{_suggest(ref.target, trees)} "
                            "(a tree is a file's name without .yaml)",
                        )
                    )
                elif tree.start in tree.declared:
                    edges[(r.name, ref.source)].append((tree.name, tree.start))
            elif ref.target in r.declared:
                edges[(r.name, ref.source)].append((r.name, ref.target))
            else:
                issues.append(
                    MenuIssue(
                        str(r.path),
                        ref.line,
                        ref.key,
                        f"unknown node {ref.target!r}{_suggest(ref.target, r.declared)}",
                    )
                )
    for r in results:
        # A node that failed to load or a reference to an unknown node may hide edges (a typo's intended
        # target would be reported as well): only a fully resolved tree is checked for unreachable nodes.
        resolved = all(ref.tree or ref.target in r.declared for ref in r.refs)
        if r.parsed and resolved and r.start in r.declared and len(r.nodes) == len(r.declared):
            inside = {k: [t for t in v if t[0] == r.name] for k, v in edges.items() if k[0] == r.name}
            reached = _reach([(r.name, r.start)], inside) | {(r.name, r.start)}
            for name, line in r.declared.items():
                if (r.name, name) not in reached:
                    issues.append(
                        MenuIssue(
                            str(r.path),
                            line,
                            f"nodes.{name}",
                            f"unreachable node: no path from {r.start!r} leads here",
                        )
                    )
    reverse: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for source, targets in edges.items():
        for target in targets:
            reverse.setdefault(target, []).append(source)
    can_exit = exits | _reach(exits, reverse)
    stuck = {node: _reach([node], edges) for node in edges if node not in can_exit}
    reported: set[tuple[str, str]] = set()
    for member, reached in stuck.items():
        if member in reported or member not in reached:
            continue
        cycle = sorted(
            (other for other in reached if member in stuck.get(other, ())),
            key=lambda n: (str(trees[n[0]].path), trees[n[0]].declared[n[1]]),
        )
        reported.update(cycle)
        first = cycle[0]
        names = " -> ".join(name if tree == first[0] else f"{tree}:{name}" for tree, name in [*cycle, first])
        issues.append(
            MenuIssue(
                str(trees[first[0]].path),
                trees[first[0]].declared[first[1]],
                f"nodes.{first[1]}",
                f"loop without exit: {names} never reaches {_TERMINAL_WORDS}",
            )
        )


def _load(
    directory: Path, known_queues: Collection[str], known_schedules: Collection[str] | None
) -> tuple[list[_FileResult], list[MenuIssue]]:
    issues: list[MenuIssue] = []
    if not directory.is_dir():
        return [], [MenuIssue(str(directory), 0, "", "not a directory")]
    paths = sorted(directory.glob("*.yaml"))
    issues.extend(
        MenuIssue(str(path), 0, "", "menu files end in .yaml: rename it, or it is ignored")
        for path in sorted(directory.glob("*.yml"))
    )
    if not paths:
        issues.append(MenuIssue(str(directory), 0, "", "no menu file (*.yaml) in this directory"))
    results = [
        r for path in paths if (r := _read_file(path, issues, known_queues, known_schedules)) is not None
    ]
    _check_graph(results, issues)
    return results, sorted(issues)


def check_menus(
    directory: Path | str, known_queues: Collection[str], *, known_schedules: Collection[str] | None = None
) -> list[MenuIssue]:
    """Every error of every menu file of ``directory``, sorted by file and line (empty: all good).

    ``known_queues`` are the queue (and callback service) names the menus may use;
    ``known_schedules``, when given, the schedule names that ``hours`` nodes may use.
    """
    return _load(Path(directory), known_queues, known_schedules)[1]


def load_menus(
    directory: Path | str, known_queues: Collection[str], *, known_schedules: Collection[str] | None = None
) -> MenuSet:
    """Load and check every menu tree of ``directory``; raise :class:`MenuValidationError` on any error."""
    results, issues = _load(Path(directory), known_queues, known_schedules)
    if issues:
        raise MenuValidationError(issues)
    trees = {
        r.name: MenuTree(r.name, r.path, r.start, MappingProxyType(dict(r.nodes)), r.description)
        for r in results
    }
    logger.info("loaded %d menu tree(s) from %s: %s", len(trees), directory, ", ".join(trees))
    return MenuSet(MappingProxyType(trees))
