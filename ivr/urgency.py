"""Urgency levels, the rules that raise them, and their QUEUE_PRIO.

A menu node that routes to a queue gives a base level; rules then raise it:

* the **repeat caller** rule (the caller already called about the same service within
  ``window_days`` days, see :func:`ivr.callers.recognise`) raises it by a configured number of
  steps;
* **choice** rules, keyed by the id of a menu choice the caller made (e.g. an elderly person
  living alone), raise it by some steps and/or to at least some level.

The level never goes above the top level (:attr:`Urgency.URGENT`).  Each rule that matched
leaves an :class:`Explanation` (in French, for supervisors), also when it changed nothing.
Emergencies that must leave the platform (119 for a child in danger, 15, 17...) are *transfers*
in the menu, not an urgency: no level here replaces them.

Each rule is a non-decreasing function of the level that never lowers it, so adding a matching
rule never lowers the result.

QUEUE_PRIO: app_queue serves the highest priority first; the default mapping leaves gaps so
that the routing's priority aging can move a caller up without reaching the next level.

The rules are read from plain dicts (the ``urgency`` section of a YAML file)::

    queue_prio: {normal: 0, high: 10, urgent: 20}
    repeat_caller: {window_days: 7, raise: 1}
    choices:
      apa-personne-seule: {at_least: high, why: "Personne âgée seule à domicile"}
      pmi-inquietude-enfant: {raise: 2}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import pairwise
from typing import Final


class Urgency(IntEnum):
    """Urgency levels, ordered."""

    NORMAL = 0
    HIGH = 1
    URGENT = 2

    @property
    def key(self) -> str:
        """The name used in configuration files (``normal``, ``high``, ``urgent``)."""
        return self.name.lower()

    @property
    def label_fr(self) -> str:
        return _LABELS_FR[self]


_LABELS_FR: Final = {Urgency.NORMAL: "normale", Urgency.HIGH: "élevée", Urgency.URGENT: "urgente"}
TOP_LEVEL: Final = max(Urgency)
DEFAULT_QUEUE_PRIO: Final[Mapping[Urgency, int]] = {Urgency.NORMAL: 0, Urgency.HIGH: 10, Urgency.URGENT: 20}
DEFAULT_REPEAT_WINDOW_DAYS: Final = 7
DEFAULT_REPEAT_STEP: Final = 1
REPEAT_CALLER_RULE: Final = "repeat_caller"


class UrgencyConfigError(ValueError):
    """The urgency rules are malformed; ``key`` is the dotted path of the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True, slots=True)
class Raise:
    """Raise the level by ``steps`` and then to at least ``at_least``; ``why`` is shown to supervisors."""

    steps: int = 0
    at_least: Urgency = Urgency.NORMAL
    why: str = ""

    def apply(self, level: Urgency) -> Urgency:
        return Urgency(min(max(level + self.steps, self.at_least), TOP_LEVEL))


@dataclass(frozen=True, slots=True)
class RepeatCallerRule:
    window_days: int = DEFAULT_REPEAT_WINDOW_DAYS
    step: Raise = field(default_factory=lambda: Raise(steps=DEFAULT_REPEAT_STEP))


@dataclass(frozen=True, slots=True)
class UrgencyRules:
    queue_prio: Mapping[Urgency, int] = field(default_factory=lambda: dict(DEFAULT_QUEUE_PRIO))
    repeat_caller: RepeatCallerRule = field(default_factory=RepeatCallerRule)
    choices: Mapping[str, Raise] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Explanation:
    """One rule that matched: which, the level before and after, and a French sentence."""

    rule: str
    before: Urgency
    after: Urgency
    text: str


@dataclass(frozen=True, slots=True)
class UrgencyDecision:
    level: Urgency
    queue_prio: int
    explanations: tuple[Explanation, ...]


def assess(
    rules: UrgencyRules,
    base: Urgency,
    *,
    repeat_caller: bool = False,
    choices: Iterable[str] = (),
) -> UrgencyDecision:
    """Apply the rules to the base level: the repeat caller rule first, then the choice rules in
    the order the caller made the choices (each choice counted once)."""
    level = base
    explanations: list[Explanation] = []

    def run(rule_name: str, rule: Raise, what: str) -> None:
        nonlocal level
        before = level
        level = rule.apply(before)
        if level > before:
            change = f"urgence {before.label_fr} → {level.label_fr}"
        elif before == TOP_LEVEL:
            change = f"urgence déjà au niveau maximal ({before.label_fr})"
        else:
            change = f"urgence inchangée ({before.label_fr})"
        explanations.append(Explanation(rule_name, before, level, f"{what} : {change}"))

    if repeat_caller:
        step = rules.repeat_caller.step
        run(
            REPEAT_CALLER_RULE,
            step,
            step.why
            or f"Déjà appelé pour ce service depuis moins de {rules.repeat_caller.window_days} jours",
        )
    seen: set[str] = set()
    for choice in choices:
        rule = rules.choices.get(choice)
        if rule is None or choice in seen:
            continue
        seen.add(choice)
        run(f"choice:{choice}", rule, rule.why or f"Choix « {choice} »")
    return UrgencyDecision(level, rules.queue_prio[level], tuple(explanations))


# --- Parsing ------------------------------------------------------------------------------------

_LEVELS_BY_KEY: Final = {level.key: level for level in Urgency}
_LEVEL_NAMES: Final = ", ".join(_LEVELS_BY_KEY)
_RULE_KEYS: Final = ("raise", "at_least", "why")


def parse_level(value: object, key: str) -> Urgency:
    """A level from its configuration name (``normal``, ``high``, ``urgent``)."""
    if not isinstance(value, str) or value not in _LEVELS_BY_KEY:
        raise UrgencyConfigError(key, f"unknown urgency level {value!r} (expected one of {_LEVEL_NAMES})")
    return _LEVELS_BY_KEY[value]


def _mapping(value: object, key: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise UrgencyConfigError(key, f"expected a mapping, got {type(value).__name__}")
    for sub in value:
        if not isinstance(sub, str):
            raise UrgencyConfigError(key, f"keys must be strings, got {sub!r}")
    return value


def _check_keys(data: Mapping[str, object], allowed: Iterable[str], key: str) -> None:
    allowed_set = set(allowed)
    for sub in data:
        if sub not in allowed_set:
            raise UrgencyConfigError(
                f"{key}.{sub}", f"unknown key (expected one of {', '.join(sorted(allowed_set))})"
            )


def _int(value: object, key: str, minimum: int) -> int:
    # bool is an int subclass: "raise: yes" must not mean 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise UrgencyConfigError(key, f"expected an integer, got {value!r}")
    if value < minimum:
        raise UrgencyConfigError(key, f"must be >= {minimum}, got {value}")
    return value


def _raise_rule(data: Mapping[str, object], key: str, *, default_steps: int, may_be_noop: bool) -> Raise:
    steps = _int(data.get("raise", default_steps), f"{key}.raise", 0)
    at_least = parse_level(data["at_least"], f"{key}.at_least") if "at_least" in data else Urgency.NORMAL
    why = data.get("why", "")
    if not isinstance(why, str):
        raise UrgencyConfigError(f"{key}.why", f"expected a text, got {why!r}")
    if steps == 0 and at_least == Urgency.NORMAL and not may_be_noop:
        raise UrgencyConfigError(key, "the rule raises nothing: give 'raise' (>= 1) or 'at_least'")
    return Raise(steps=steps, at_least=at_least, why=why)


def parse_rules(data: object, key: str = "urgency") -> UrgencyRules:
    """Read the rules from a plain dict; :class:`UrgencyConfigError` names the offending key."""
    root = _mapping(data, key)
    _check_keys(root, ("queue_prio", "repeat_caller", "choices"), key)

    queue_prio = dict(DEFAULT_QUEUE_PRIO)
    if "queue_prio" in root:
        prio_key = f"{key}.queue_prio"
        given = _mapping(root["queue_prio"], prio_key)
        for name, value in given.items():
            level = parse_level(name, f"{prio_key}.{name}")
            queue_prio[level] = _int(value, f"{prio_key}.{name}", 0)
        ordered = [queue_prio[level] for level in Urgency]
        if any(low >= high for low, high in pairwise(ordered)):
            shown = ", ".join(f"{level.key}={queue_prio[level]}" for level in Urgency)
            raise UrgencyConfigError(prio_key, f"must strictly increase with the level, got {shown}")

    repeat = RepeatCallerRule()
    if "repeat_caller" in root:
        repeat_key = f"{key}.repeat_caller"
        given = _mapping(root["repeat_caller"], repeat_key)
        _check_keys(given, (*_RULE_KEYS, "window_days"), repeat_key)
        window = _int(given.get("window_days", DEFAULT_REPEAT_WINDOW_DAYS), f"{repeat_key}.window_days", 1)
        # raise: 0 is allowed here: repeat callers are then greeted but not moved up.
        step = _raise_rule(given, repeat_key, default_steps=DEFAULT_REPEAT_STEP, may_be_noop=True)
        repeat = RepeatCallerRule(window_days=window, step=step)

    choices: dict[str, Raise] = {}
    if "choices" in root:
        choices_key = f"{key}.choices"
        for choice, value in _mapping(root["choices"], choices_key).items():
            choice_key = f"{choices_key}.{choice}"
            rule = _mapping(value, choice_key)
            _check_keys(rule, _RULE_KEYS, choice_key)
            choices[choice] = _raise_rule(rule, choice_key, default_steps=0, may_be_noop=False)

    return UrgencyRules(queue_prio=queue_prio, repeat_caller=repeat, choices=choices)
