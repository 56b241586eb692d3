"""The call flows as data, mirroring the priorities of extensions.conf.

A :class:`Dialplan` maps contexts to extensions to a tuple of :class:`Step`
(priority = index + 1).  ``Application`` and ``AppData`` are kept as the text
extensions.conf would hold, so a later check can compare them line by line
with ``asterisk_conf/extensions.conf``.  The simulated PBX interprets the few
applications used here: Answer, NoOp, Set, AGI, GotoIf, Playback, Queue, Dial
(with its U() subroutine), Return, Hangup.

The flow of :func:`inbound_dialplan` (fail-safe: losing the engine never loses
the call; an AGI that fails leaves its variables unset and the next step runs)::

    [from-citizens]
    Answer()
    Set(CHANNEL(language)=fr)
    AGI(agi://host:port/ivr)
    GotoIf($["${GUICHET_IVR_DONE}" = "1" & "${GUICHET_QUEUE}${GUICHET_TRANSFER}" != ""]?handoff)
    Playback(<apology>)                    ; engine down, closed at once, variables missing
    Queue(<fallback queue>,,,,<max wait>)
    Hangup()
    handoff: GotoIf($["${GUICHET_TRANSFER}" != ""]?transfer)
    queue: Set(QUEUE_PRIO=${GUICHET_PRIO})
    Set(GUICHET_QUEUED_AT=${EPOCH})        ; the place a queued callback keeps
    Queue(${GUICHET_QUEUE},,,,<max wait>)
    AGI(agi://host:port/overflow,${QUEUESTATUS},${QUEUEPOSITION},${QUEUEWAIT},${GUICHET_QUEUE})
    general: Queue(<fallback queue>,,,,<max wait>)  ; timeout, joinempty... (or a declined callback)
    Hangup()                               ; the overflow route hung up itself after a callback request
    transfer: Dial(PJSIP/${GUICHET_TRANSFER}@<trunk>,<ring time>)   ; emergencies (119)
    Hangup()

    [queue-exit]                           ; a key pressed while queued (queues.conf context=)
    _X => AGI(agi://host:port/callback-offer)   ; accepted: the route hangs up
    GotoIf($["${GUICHET_QUEUE}" = ""]?general)
    Queue(${GUICHET_QUEUE},,,,<max wait>)  ; back in the queue (QUEUE_PRIO and GUICHET_QUEUED_AT kept)
    AGI(agi://host:port/overflow,...)
    general: Queue(<fallback queue>,,,,<max wait>)
    Hangup()

    [callback-dial]                        ; Originate enters here once the AGENT answered
    s => Dial(PJSIP/${GUICHET_CALLBACK_NUMBER}@<trunk>,<ring>,gU(callback-confirm^${GUICHET_CALLBACK_ID}))
    AGI(agi://host:port/callback-result,${DIALSTATUS},${GUICHET_CALLBACK_ID},${GUICHET_CALLBACK_CONFIRMED})
    Hangup()

    [callback-confirm]                     ; Dial's U() subroutine, on the citizen's answered leg
    s => AGI(agi://host:port/callback-confirm,${ARG1})   ; GOSUB_RESULT=CONTINUE when nobody confirmed
    Set(MASTER_CHANNEL(GUICHET_CALLBACK_CONFIRMED)=${GUICHET_CALLBACK_CONFIRMED})  ; the agent's leg
    Return()

Dial's ``U(context^arg...)`` runs ``s`` priority 1 of that context on the called channel once it
answered and before the bridge (app_dial.c: "The subroutine execution starts in the named context at
the s exten and priority 1"), the arguments as ARG1...; GOSUB_RESULT ABORT hangs up both legs,
CONTINUE hangs up the callee and the caller goes on with DIALSTATUS=ANSWER, unset bridges them.
``g`` lets the agent's leg go on to callback-result when the citizen hangs up (even during the
subroutine).  MASTER_CHANNEL() is the channel named by the linkedid: the originated agent leg.  An
engine down on the callback legs leaves the citizen bridged to the agent unconfirmed, never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from guichet.names import (
    APOLOGY_SOUND,
    DIALSTATUS,
    GUICHET_CALLBACK_CONFIRMED,
    GUICHET_CALLBACK_ID,
    GUICHET_CALLBACK_NUMBER,
    GUICHET_IVR_DONE,
    GUICHET_PRIO,
    GUICHET_QUEUE,
    GUICHET_QUEUED_AT,
    GUICHET_TRANSFER,
    QUEUE_PRIO,
    QUEUEPOSITION,
    QUEUESTATUS,
    QUEUEWAIT,
    ROUTE_CALLBACK_CONFIRM,
    ROUTE_CALLBACK_OFFER,
    ROUTE_CALLBACK_RESULT,
    ROUTE_OVERFLOW,
)

INBOUND_CONTEXT = "from-citizens"
QUEUE_EXIT_CONTEXT = "queue-exit"
# A queued callback: Originate(Channel=<agent>, Context=CALLBACK_DIAL_CONTEXT, Exten=CALLBACK_EXTEN,
# Priority=1, Variable=GUICHET_CALLBACK_NUMBER=<E.164>, Variable=GUICHET_CALLBACK_ID=<id>).
CALLBACK_DIAL_CONTEXT = "callback-dial"
CALLBACK_CONFIRM_CONTEXT = "callback-confirm"  # Dial's U() subroutine on the citizen's leg
CALLBACK_EXTEN = "s"


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
    overflow: bool = True,
    exit_route: str = ROUTE_CALLBACK_OFFER,
    trunk: str = "trunk",
    transfer_ring_s: int = 60,
    callback_ring_s: int = 30,
    requeue: bool = True,
) -> Dialplan:
    """The call flows (see the module docstring); ``agi_url`` is ``agi://host:port``.

    ``overflow=False`` leaves out the overflow AGI after the service queue, ``requeue=False`` the
    fallback queue after it (both to replay recordings made with a dialplan that hung up there).
    """
    general = Step("Queue", f"{fallback_queue},,,,{max_wait_s}", label="general")
    queued: list[Step] = [Step("Queue", f"${{{GUICHET_QUEUE}}},,,,{max_wait_s}")]
    if overflow:
        status = f"${{{QUEUESTATUS}}},${{{QUEUEPOSITION}}},${{{QUEUEWAIT}}},${{{GUICHET_QUEUE}}}"
        queued.append(Step("AGI", f"{agi_url}/{ROUTE_OVERFLOW},{status}"))
    if requeue:
        # Queue() only returns while the caller is still there (timeout, joinempty...): never hang up on
        # them, the general front office takes the call.
        queued.append(general)
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
        Step("Set", f"{QUEUE_PRIO}=${{{GUICHET_PRIO}}}", label="queue"),
        Step("Set", f"{GUICHET_QUEUED_AT}=${{EPOCH}}"),
        *queued,
        Step("Hangup"),
        Step("Dial", f"PJSIP/${{{GUICHET_TRANSFER}}}@{trunk},{transfer_ring_s}", label="transfer"),
        Step("Hangup"),
    )
    back_in_queue = (
        Step("AGI", f"{agi_url}/{exit_route}"),
        Step("GotoIf", f'$["${{{GUICHET_QUEUE}}}" = ""]?general'),
        *queued,
        *(() if requeue else (general,)),
        Step("Hangup"),
    )
    confirm = f"{CALLBACK_CONFIRM_CONTEXT}^${{{GUICHET_CALLBACK_ID}}}"  # at s,1 of the context
    outcome = f"${{{DIALSTATUS}}},${{{GUICHET_CALLBACK_ID}}},${{{GUICHET_CALLBACK_CONFIRMED}}}"
    callback_dial = (
        Step("Dial", f"PJSIP/${{{GUICHET_CALLBACK_NUMBER}}}@{trunk},{callback_ring_s},gU({confirm})"),
        Step("AGI", f"{agi_url}/{ROUTE_CALLBACK_RESULT},{outcome}"),
        Step("Hangup"),
    )
    callback_confirm = (
        Step("AGI", f"{agi_url}/{ROUTE_CALLBACK_CONFIRM},${{ARG1}}"),
        Step(
            "Set",
            f"MASTER_CHANNEL({GUICHET_CALLBACK_CONFIRMED})=${{{GUICHET_CALLBACK_CONFIRMED}}}",
        ),
        Step("Return"),
    )
    return Dialplan(
        {
            # the single number as the trunk sends it: national digits, or E.164 with its '+'
            INBOUND_CONTEXT: {"_X.": inbound, "_+X.": inbound},
            QUEUE_EXIT_CONTEXT: {"_X": back_in_queue},
            CALLBACK_DIAL_CONTEXT: {CALLBACK_EXTEN: callback_dial},
            CALLBACK_CONFIRM_CONTEXT: {"s": callback_confirm},  # Dial U() always starts at s,1
        }
    )
