"""The inbound call flow as data, mirroring the priorities of extensions.conf.

A :class:`Dialplan` maps contexts to extensions to a tuple of :class:`Step`
(priority = index + 1).  ``Application`` and ``AppData`` are kept as the text
extensions.conf would hold, so a later check can compare them line by line
with ``asterisk_conf/extensions.conf``.  The simulated PBX interprets the few
applications used here: Answer, NoOp, Set, AGI, GotoIf, Playback, Queue, Dial, Hangup.

The flow of :func:`inbound_dialplan` (fail-safe: losing the engine never loses
the call)::

    Answer()
    Set(CHANNEL(language)=fr)
    AGI(agi://host:port/ivr)
    GotoIf($["${GUICHET_IVR_DONE}" = "1" & "${GUICHET_QUEUE}${GUICHET_TRANSFER}" != ""]?handoff)
    Playback(<apology>)                    ; engine down, closed at once, variables missing
    Queue(<fallback queue>,,,,<max wait>)
    Hangup()
    handoff: GotoIf($["${GUICHET_TRANSFER}" != ""]?transfer)
    queue: Set(QUEUE_PRIO=${GUICHET_PRIO})
    Queue(${GUICHET_QUEUE},,,,<max wait>)
    [AGI(agi://host:port/overflow,${QUEUESTATUS},${QUEUEPOSITION},${QUEUEWAIT},${GUICHET_QUEUE})]
    Queue(<fallback queue>,,,,<max wait>)  ; the service queue timed out: the general front office
    Hangup()
    transfer: Dial(PJSIP/${GUICHET_TRANSFER}@<trunk>,<ring time>)   ; emergencies (119)
    Hangup()
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from guichet.names import (
    APOLOGY_SOUND,
    GUICHET_IVR_DONE,
    GUICHET_PRIO,
    GUICHET_QUEUE,
    GUICHET_TRANSFER,
    QUEUE_PRIO,
)

INBOUND_CONTEXT = "from-citizens"
QUEUE_EXIT_CONTEXT = "queue-exit"


@dataclass(frozen=True)
class Step:
    """One priority: ``exten => <pattern>,<n>(<label>),<app>(<data>)``."""

    app: str
    data: str = ""
    label: str = ""


@dataclass(frozen=True)
class Dialplan:
    """Contexts -> extension patterns -> steps."""

    contexts: Mapping[str, Mapping[str, tuple[Step, ...]]] = field(default_factory=dict)

    def find(self, context: str, exten: str) -> tuple[Step, ...] | None:
        """The steps of ``exten`` in ``context`` (exact match first, then ``_`` patterns)."""
        extens = self.contexts.get(context, {})
        if exten in extens:
            return extens[exten]
        for pattern, steps in extens.items():
            if pattern.startswith("_") and pattern_regex(pattern).fullmatch(exten):
                return steps
        return None

    def has_exten(self, context: str, exten: str) -> bool:
        return self.find(context, exten) is not None


_PATTERN_CHARS = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Asterisk extension pattern (``_X.``, ``_0Z``...) as a regex."""
    return re.compile("".join(_PATTERN_CHARS.get(c, re.escape(c)) for c in pattern[1:]))


def label_index(steps: tuple[Step, ...], label: str) -> int:
    """Index of the step carrying ``label``; ValueError when absent."""
    for index, step in enumerate(steps):
        if step.label == label:
            return index
    raise ValueError(f"no priority labelled {label!r}")


_VAR = re.compile(r"\$\{([^{}]+)\}")
_TERM = re.compile(r'^\s*"([^"]*)"\s*(=|!=)\s*"([^"]*)"\s*$')
_GOTOIF = re.compile(r"^\$\[(?P<expr>.*)\]\?(?P<then>[^:]*)(?::(?P<else>.*))?$")


def substitute(text: str, resolve: Callable[[str], str]) -> str:
    """Replace every ``${EXPR}`` with ``resolve(EXPR)`` (a variable or a function like CALLERID(num))."""
    return _VAR.sub(lambda m: resolve(m.group(1)), text)


def evaluate_gotoif(data: str) -> str | None:
    """``$["a" = "b" & "c" != ""]?then:else`` (already substituted) -> the label to jump to, or None."""
    match = _GOTOIF.match(data)
    if match is None:
        raise ValueError(f"GotoIf data not understood: {data!r}")
    result = True
    for term in match.group("expr").split("&"):
        parsed = _TERM.match(term)
        if parsed is None:
            raise ValueError(f"GotoIf condition not understood: {term!r}")
        left, op, right = parsed.groups()
        result = result and ((left == right) if op == "=" else (left != right))
    target = match.group("then") if result else match.group("else")
    return target or None


def inbound_dialplan(
    agi_url: str,
    *,
    fallback_queue: str = "accueil",
    max_wait_s: int = 600,
    apology: str = APOLOGY_SOUND,
    overflow: bool = False,
    exit_route: str = "callback-offer",
    trunk: str = "trunk",
    transfer_ring_s: int = 60,
    requeue: bool = True,
) -> Dialplan:
    """The inbound flow (see the module docstring); ``agi_url`` is ``agi://host:port``.

    ``requeue=False`` leaves out the fallback queue after the service queue (to replay recordings made
    with a dialplan that hung up there).
    """
    queue_steps: list[Step] = [
        Step("Set", f"{QUEUE_PRIO}=${{{GUICHET_PRIO}}}", label="queue"),
        Step("Queue", f"${{{GUICHET_QUEUE}}},,,,{max_wait_s}"),
    ]
    if overflow:
        queue_steps.append(
            Step(
                "AGI",
                f"{agi_url}/overflow,${{QUEUESTATUS}},${{QUEUEPOSITION}},${{QUEUEWAIT}},${{{GUICHET_QUEUE}}}",
            )
        )
    if requeue:
        # Queue() only returns while the caller is still there (timeout, joinempty...): never hang up on
        # them, the general front office takes the call.
        queue_steps.append(Step("Queue", f"{fallback_queue},,,,{max_wait_s}"))
    handed_back = f"${{{GUICHET_QUEUE}}}${{{GUICHET_TRANSFER}}}"  # a queue or a number to dial
    inbound = (
        Step("Answer"),
        Step("Set", "CHANNEL(language)=fr"),
        Step("AGI", f"{agi_url}/ivr"),
        Step("GotoIf", f'$["${{{GUICHET_IVR_DONE}}}" = "1" & "{handed_back}" != ""]?handoff'),
        Step("Playback", apology),
        Step("Queue", f"{fallback_queue},,,,{max_wait_s}"),
        Step("Hangup"),
        Step("GotoIf", f'$["${{{GUICHET_TRANSFER}}}" != ""]?transfer', label="handoff"),
        *queue_steps,
        Step("Hangup"),
        Step("Dial", f"PJSIP/${{{GUICHET_TRANSFER}}}@{trunk},{transfer_ring_s}", label="transfer"),
        Step("Hangup"),
    )
    exit_steps = (Step("AGI", f"{agi_url}/{exit_route}"), Step("Hangup"))
    return Dialplan({INBOUND_CONTEXT: {"_X.": inbound}, QUEUE_EXIT_CONTEXT: {"_X": exit_steps}})
