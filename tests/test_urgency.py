"""Urgency levels, rules that raise them, QUEUE_PRIO, and parsing the rules from YAML."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ivr.urgency import (
    DEFAULT_QUEUE_PRIO,
    REPEAT_CALLER_RULE,
    Raise,
    RepeatCallerRule,
    Urgency,
    UrgencyConfigError,
    UrgencyRules,
    assess,
    parse_rules,
)

RULES_YAML = """
urgency:
  queue_prio: {normal: 0, high: 10, urgent: 20}
  repeat_caller: {window_days: 7, raise: 1}
  choices:
    apa-personne-seule: {at_least: high, why: "Personne âgée seule à domicile"}
    pmi-inquietude-enfant: {raise: 2}
    mdph-urgence: {raise: 1, at_least: urgent}
"""


@pytest.fixture
def rules() -> UrgencyRules:
    return parse_rules(yaml.safe_load(RULES_YAML)["urgency"])


def test_parse_the_example(rules: UrgencyRules) -> None:
    assert rules == UrgencyRules(
        queue_prio={Urgency.NORMAL: 0, Urgency.HIGH: 10, Urgency.URGENT: 20},
        repeat_caller=RepeatCallerRule(window_days=7, step=Raise(steps=1)),
        choices={
            "apa-personne-seule": Raise(at_least=Urgency.HIGH, why="Personne âgée seule à domicile"),
            "pmi-inquietude-enfant": Raise(steps=2),
            "mdph-urgence": Raise(steps=1, at_least=Urgency.URGENT),
        },
    )


def test_defaults() -> None:
    rules = parse_rules({})
    assert rules == UrgencyRules()
    assert rules.queue_prio == DEFAULT_QUEUE_PRIO
    assert rules.repeat_caller == RepeatCallerRule(window_days=7, step=Raise(steps=1))
    # app_queue serves the highest QUEUE_PRIO first: more urgent = higher number.
    assert (
        DEFAULT_QUEUE_PRIO[Urgency.NORMAL]
        < DEFAULT_QUEUE_PRIO[Urgency.HIGH]
        < DEFAULT_QUEUE_PRIO[Urgency.URGENT]
    )


def test_no_rule_keeps_the_base(rules: UrgencyRules) -> None:
    for base in Urgency:
        decision = assess(rules, base)
        assert (decision.level, decision.queue_prio, decision.explanations) == (
            base,
            rules.queue_prio[base],
            (),
        )


def test_repeat_caller_raises_by_its_step(rules: UrgencyRules) -> None:
    decision = assess(rules, Urgency.NORMAL, repeat_caller=True)
    assert (decision.level, decision.queue_prio) == (Urgency.HIGH, 10)
    [why] = decision.explanations
    assert (why.rule, why.before, why.after) == (REPEAT_CALLER_RULE, Urgency.NORMAL, Urgency.HIGH)
    assert why.text == "Déjà appelé pour ce service depuis moins de 7 jours : urgence normale → élevée"


def test_vulnerable_choice_sets_a_floor(rules: UrgencyRules) -> None:
    decision = assess(rules, Urgency.NORMAL, choices=["apa", "apa-personne-seule"])
    assert decision.level == Urgency.HIGH
    [why] = decision.explanations
    assert why.rule == "choice:apa-personne-seule"
    assert why.text == "Personne âgée seule à domicile : urgence normale → élevée"
    # A floor does not lower nor raise a caller already above it, but is still explained.
    decision = assess(rules, Urgency.URGENT, choices=["apa-personne-seule"])
    assert decision.level == Urgency.URGENT
    assert decision.explanations[0].text.endswith("urgence déjà au niveau maximal (urgente)")


def test_floor_below_the_current_level_is_explained_as_unchanged() -> None:
    rules = parse_rules({"choices": {"seule": {"at_least": "high"}}})
    decision = assess(rules, Urgency.HIGH, choices=["seule"])
    assert decision.level == Urgency.HIGH
    assert decision.explanations[0].text == "Choix « seule » : urgence inchangée (élevée)"


def test_rules_add_up_and_are_capped(rules: UrgencyRules) -> None:
    decision = assess(rules, Urgency.NORMAL, repeat_caller=True, choices=["pmi-inquietude-enfant"])
    assert (decision.level, decision.queue_prio) == (Urgency.URGENT, 20)
    assert [(e.before, e.after) for e in decision.explanations] == [
        (Urgency.NORMAL, Urgency.HIGH),
        (Urgency.HIGH, Urgency.URGENT),
    ]
    decision = assess(rules, Urgency.HIGH, choices=["pmi-inquietude-enfant"])
    assert decision.level == Urgency.URGENT  # HIGH + 2 capped at the top


def test_unknown_and_repeated_choices_are_ignored(rules: UrgencyRules) -> None:
    decision = assess(rules, Urgency.NORMAL, choices=["inconnu", "apa-personne-seule", "apa-personne-seule"])
    assert decision.level == Urgency.HIGH
    assert len(decision.explanations) == 1


def test_repeat_caller_without_raise_is_greeted_but_not_moved() -> None:
    rules = parse_rules({"repeat_caller": {"raise": 0, "why": "Rappel"}})
    decision = assess(rules, Urgency.NORMAL, repeat_caller=True)
    assert decision.level == Urgency.NORMAL
    assert decision.explanations[0].text == "Rappel : urgence inchangée (normale)"


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ([], "urgency", "expected a mapping, got list"),
        (
            {"choice": {}},
            "urgency.choice",
            "unknown key (expected one of choices, queue_prio, repeat_caller)",
        ),
        ({"queue_prio": {"critical": 30}}, "urgency.queue_prio.critical", "unknown urgency level 'critical'"),
        ({"queue_prio": {"high": "10"}}, "urgency.queue_prio.high", "expected an integer, got '10'"),
        ({"queue_prio": {"high": -1}}, "urgency.queue_prio.high", "must be >= 0, got -1"),
        ({"queue_prio": {"high": 0}}, "urgency.queue_prio", "must strictly increase with the level"),
        ({"queue_prio": {"urgent": 5}}, "urgency.queue_prio", "normal=0, high=10, urgent=5"),
        ({"repeat_caller": 2}, "urgency.repeat_caller", "expected a mapping, got int"),
        ({"repeat_caller": {"window_days": 0}}, "urgency.repeat_caller.window_days", "must be >= 1"),
        ({"repeat_caller": {"days": 3}}, "urgency.repeat_caller.days", "unknown key"),
        ({"repeat_caller": {"raise": True}}, "urgency.repeat_caller.raise", "expected an integer, got True"),
        ({"choices": {"x": {}}}, "urgency.choices.x", "the rule raises nothing"),
        ({"choices": {"x": {"raise": 0}}}, "urgency.choices.x", "the rule raises nothing"),
        ({"choices": {"x": None}}, "urgency.choices.x", "expected a mapping, got NoneType"),
        ({"choices": {"x": {"at_least": "URGENT"}}}, "urgency.choices.x.at_least", "unknown urgency level"),
        ({"choices": {"x": {"raise": 1, "why": 3}}}, "urgency.choices.x.why", "expected a text, got 3"),
        ({"choices": {"x": {"raise": 1, "level": "high"}}}, "urgency.choices.x.level", "unknown key"),
        ({"choices": {1: {"raise": 1}}}, "urgency.choices", "keys must be strings, got 1"),
    ],
)
def test_parse_errors_name_the_key(data: object, key: str, message: str) -> None:
    with pytest.raises(UrgencyConfigError) as caught:
        parse_rules(data)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")
    assert message in str(caught.value)


def test_parse_error_uses_the_given_root_key() -> None:
    with pytest.raises(UrgencyConfigError) as caught:
        parse_rules({"choices": {"x": {}}}, key="dialplans/main.yaml:urgency")
    assert caught.value.key == "dialplans/main.yaml:urgency.choices.x"


# --- properties ---------------------------------------------------------------------------------

raise_rules = st.builds(
    Raise,
    steps=st.integers(min_value=0, max_value=3),
    at_least=st.sampled_from(Urgency),
)


@given(
    base=st.sampled_from(Urgency),
    rule_list=st.lists(raise_rules, max_size=6),
    repeat=st.booleans(),
    data=st.data(),
)
def test_priority_is_monotonic_in_the_rules_that_match(
    base: Urgency, rule_list: list[Raise], repeat: bool, data: st.DataObject
) -> None:
    rules = UrgencyRules(
        repeat_caller=RepeatCallerRule(step=Raise(steps=1)),
        choices={f"c{i}": rule for i, rule in enumerate(rule_list)},
    )
    all_choices = list(rules.choices)
    fewer = data.draw(st.lists(st.sampled_from(all_choices), unique=True) if all_choices else st.just([]))
    more = fewer + [c for c in all_choices if c not in fewer]
    low = assess(rules, base, repeat_caller=False, choices=fewer)
    high = assess(rules, base, repeat_caller=repeat, choices=more)
    assert base <= low.level <= high.level <= Urgency.URGENT
    assert low.queue_prio <= high.queue_prio
    assert len(high.explanations) == len(more) + repeat
