"""Menus as data: the loader, each check (with a small broken file), the default menu, ``menus check``."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from ivr.menu_check import DEFAULT_QUEUES, main
from ivr.menus import (
    CallbackNode,
    GotoNode,
    HangupNode,
    HoursNode,
    InfoNode,
    MenuIssue,
    MenuNode,
    MenuValidationError,
    PromptNode,
    QueueNode,
    TransferNode,
    check_menus,
    load_menus,
)
from ivr.services import GENERAL_QUEUE
from tests.conftest import REPO

# The queues of the small test menus below (not the product's: those are DEFAULT_QUEUES).
QUEUES = frozenset({"apa", "pmi", "mdph", "transport", "rsa", "general"})
DIALPLANS = REPO / "dialplans"

# A small valid tree; tests break one line of it.
GOOD = """\
start: accueil
nodes:
  accueil:
    type: prompt
    text: Bonjour.
    next: menu
  menu:
    type: menu
    text: Pour l'APA, tapez 1. Pour un conseiller, tapez 0.
    choices:
      "1": apa
      "0": general
    fallback: general
  apa:
    type: queue
    queue: apa
    urgency: high
    reason: apa
  general:
    type: queue
    queue: general
    urgency: normal
    reason: information-generale
"""


def write(directory: Path, text: str, name: str = "menu.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def issues_for(tmp_path: Path, text: str) -> list[tuple[int, str, str]]:
    write(tmp_path, text)
    issues = check_menus(tmp_path, QUEUES)
    assert all(issue.file == str(tmp_path / "menu.yaml") for issue in issues)
    return [(issue.line, issue.key, issue.message) for issue in issues]


def only_issue(tmp_path: Path, text: str) -> tuple[int, str, str]:
    found = issues_for(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


def test_good_tree_loads(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    menus = load_menus(tmp_path, QUEUES)
    tree = menus.tree("menu")
    assert tree.start == "accueil"
    menu = tree.node("menu")
    assert isinstance(menu, MenuNode)
    assert (menu.line, menu.digits, menu.fallback) == (7, "10", "general")
    assert (menu.timeout_s, menu.retries) == (5, 2)
    assert menu.choice("1") is not None and menu.choice("1").next == "apa"  # type: ignore[union-attr]
    assert menu.choice("7") is None
    assert tree.node("apa") == QueueNode("apa", 14, "apa", "high", "apa")


def test_yaml_syntax_error_has_its_line(tmp_path: Path) -> None:
    line, key, message = only_issue(tmp_path, GOOD.replace("    next: menu", "    next: [menu"))
    assert line == 7 and key == ""
    assert message.startswith("YAML syntax error")


def test_unquoted_star_key_is_a_syntax_error_with_a_hint(tmp_path: Path) -> None:
    line, _, message = only_issue(tmp_path, GOOD.replace('"0": general', "*: general"))
    assert line == 12
    assert "in quotes" in message


def test_tab_indent_hint(tmp_path: Path) -> None:
    _, _, message = only_issue(tmp_path, GOOD.replace("    next: menu", "\tnext: menu"))
    assert "not tabs" in message


def test_empty_file_and_wrong_top_level(tmp_path: Path) -> None:
    assert only_issue(tmp_path, "# rien\n")[2].startswith("empty file")
    line, _, message = only_issue(tmp_path, "- a\n- b\n")
    assert line == 1 and "expected a menu file" in message


def test_unknown_node_type(tmp_path: Path) -> None:
    line, key, message = only_issue(tmp_path, GOOD.replace("type: prompt", "type: promt"))
    assert (line, key) == (4, "nodes.accueil.type")
    assert "unknown node type 'promt'" in message and "did you mean 'prompt'" in message
    line, _, message = only_issue(tmp_path, GOOD.replace("type: prompt", "type: [prompt]"))
    assert line == 4 and message.startswith("unknown node type a list")


def test_missing_required_field(tmp_path: Path) -> None:
    line, key, message = only_issue(tmp_path, GOOD.replace("    fallback: general\n", ""))
    assert (line, key) == (8, "nodes.menu")
    assert message == "missing field 'fallback' for a menu node"


def test_missing_type(tmp_path: Path) -> None:
    line, key, message = only_issue(tmp_path, GOOD.replace("    type: prompt\n", ""))
    assert (line, key) == (4, "nodes.accueil")
    assert "missing field 'type'" in message


def test_unknown_field_typo(tmp_path: Path) -> None:
    found = issues_for(tmp_path, GOOD.replace("    next: menu", "    nxet: menu"))
    assert (6, "nodes.accueil.nxet") in [(line, key) for line, key, _ in found]
    typo = next(message for _, key, message in found if key == "nodes.accueil.nxet")
    assert "did you mean 'next'" in typo
    assert (4, "nodes.accueil", "missing field 'next' for a prompt node") in found


def test_unknown_target_node(tmp_path: Path) -> None:
    line, key, message = only_issue(tmp_path, GOOD.replace('"1": apa', '"1": apaa'))
    assert (line, key) == (11, "nodes.menu.choices.1.next")
    assert message == "unknown node 'apaa'; did you mean 'apa'?"


def test_unknown_start(tmp_path: Path) -> None:
    found = issues_for(tmp_path, GOOD.replace("start: accueil", "start: acceuil"))
    assert found == [(1, "start", "unknown node 'acceuil'; did you mean 'accueil'?")]


def test_unreachable_node(tmp_path: Path) -> None:
    orphan = GOOD + "  orphelin:\n    type: hangup\n"
    assert only_issue(tmp_path, orphan) == (
        24,
        "nodes.orphelin",
        "unreachable node: no path from 'accueil' leads here",
    )


def test_loop_without_exit(tmp_path: Path) -> None:
    text = """\
    start: accueil
    nodes:
      accueil:
        type: prompt
        text: Bonjour.
        next: menu
      menu:
        type: menu
        text: Tapez 1.
        choices:
          "1": encore
        fallback: accueil
      encore:
        type: prompt
        text: Encore.
        next: menu
    """
    assert only_issue(tmp_path, text) == (
        3,
        "nodes.accueil",
        "loop without exit: accueil -> menu -> encore -> accueil never reaches "
        "a queue, transfer, callback or hangup",
    )


def test_menu_repeating_itself_with_a_fallback_is_no_loop(tmp_path: Path) -> None:
    text = GOOD.replace('"0": general', '"0": general\n      "*": menu')
    assert issues_for(tmp_path, text) == []
    menu = load_menus(tmp_path, QUEUES).tree("menu").node("menu")
    assert isinstance(menu, MenuNode) and menu.digits == "10*"


def test_missing_and_empty_prompt_text(tmp_path: Path) -> None:
    line, key, message = only_issue(tmp_path, GOOD.replace("    text: Bonjour.\n", ""))
    assert (line, key, message) == (4, "nodes.accueil", "missing field 'text' for a prompt node")
    assert only_issue(tmp_path, GOOD.replace("text: Bonjour.", 'text: "  "')) == (
        5,
        "nodes.accueil.text",
        "empty text",
    )


def test_text_read_as_a_number(tmp_path: Path) -> None:
    line, key, message = only_issue(tmp_path, GOOD.replace("text: Bonjour.", "text: 119"))
    assert (line, key) == (5, "nodes.accueil.text")
    assert "read by YAML as int" in message and "quotes" in message


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ('"12"', "bad key '12' (read by YAML as str)"),
        ("12", "YAML reads the key 12 as the int 12"),
        ("0x1", "YAML reads the key 0x1 as the int 1"),
        ("01", "YAML reads the key 01 as the int 1"),
        ("yes", "YAML reads the key yes as the bool True"),
        ("1.5", "YAML reads the key 1.5 as the float 1.5"),
        ('"a"', "bad key 'a'"),
    ],
)
def test_bad_digit_map_key(tmp_path: Path, key: str, expected: str) -> None:
    line, _, message = only_issue(tmp_path, GOOD.replace('"1": apa', f'{key}: apa\n      "2": apa'))
    assert line == 11
    assert expected in message


def test_unquoted_digit_keys_are_accepted(tmp_path: Path) -> None:
    write(tmp_path, GOOD.replace('"1": apa', "1: apa").replace('"0": general', "0: general"))
    menu = load_menus(tmp_path, QUEUES).tree("menu").node("menu")
    assert isinstance(menu, MenuNode) and menu.digits == "10"


def test_duplicate_digit_even_when_written_two_ways(tmp_path: Path) -> None:
    line, key, message = only_issue(tmp_path, GOOD.replace('"0": general', "1: general"))
    assert (line, key, message) == (12, "nodes.menu.choices.1", "key 1 is already used at line 11")


def test_duplicate_node_and_duplicate_field(tmp_path: Path) -> None:
    text = GOOD + "  apa:\n    type: hangup\n"
    assert only_issue(tmp_path, text) == (24, "nodes.apa", "duplicate node (first at line 14)")
    text = GOOD.replace("    urgency: high\n", "    urgency: high\n    urgency: normal\n")
    assert only_issue(tmp_path, text) == (18, "nodes.apa.urgency", "duplicate field (first at line 17)")


def test_duplicate_keyword_in_a_menu(tmp_path: Path) -> None:
    text = GOOD.replace('"1": apa', '"1": {next: apa, keywords: [APA, autonomie]}').replace(
        '"0": general', '"0":\n        next: general\n        keywords: [conseiller, apa]'
    )
    assert only_issue(tmp_path, text) == (
        14,
        "nodes.menu.choices.0.keywords",
        "keyword 'apa' is already used at line 11",
    )


def test_unknown_queue_and_callback_service(tmp_path: Path) -> None:
    line, key, message = only_issue(tmp_path, GOOD.replace("queue: apa", "queue: apaa"))
    assert (line, key) == (16, "nodes.apa.queue")
    assert message.startswith("unknown queue 'apaa'; did you mean 'apa'?")
    text = GOOD.replace(
        "  apa:\n    type: queue\n    queue: apa", "  apa:\n    type: callback\n    service: psy"
    )
    text = text.replace(
        "    urgency: high\n    reason: apa\n", "    reason: apa\n    text: Nous vous rappellerons.\n"
    )
    assert only_issue(tmp_path, text)[1:] == (
        "nodes.apa.service",
        "unknown queue 'psy' (queues: apa, general, mdph, pmi, rsa, transport)",
    )


def test_bad_urgency(tmp_path: Path) -> None:
    assert only_issue(tmp_path, GOOD.replace("urgency: high", "urgency: HIGH")) == (
        17,
        "nodes.apa.urgency",
        "bad urgency 'HIGH' (one of: normal, high, urgent)",
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("timeout: 0", "0 is out of range: a whole number from 1 to 30"),
        ("timeout: 31", "31 is out of range: a whole number from 1 to 30"),
        ("timeout: 2.5", "2.5 is out of range"),
        ("timeout: cinq", "expected a whole number from 1 to 30, got 'cinq'"),
        ("retries: -1", "-1 is out of range: a whole number from 0 to 5"),
        ("retries: 6", "6 is out of range"),
    ],
)
def test_retries_and_timeouts_out_of_range(tmp_path: Path, line: str, expected: str) -> None:
    found_line, key, message = only_issue(
        tmp_path, GOOD.replace("    fallback: general\n", f"    fallback: general\n    {line}\n")
    )
    assert (found_line, key) == (14, f"nodes.menu.{line.partition(':')[0]}")
    assert message.startswith(expected)


def test_in_range_numbers_load(tmp_path: Path) -> None:
    write(
        tmp_path,
        GOOD.replace("    fallback: general\n", "    fallback: general\n    timeout: 8.0\n    retries: 0\n"),
    )
    menu = load_menus(tmp_path, QUEUES).tree("menu").node("menu")
    assert isinstance(menu, MenuNode) and (menu.timeout_s, menu.retries) == (8, 0)


def test_bad_node_name_transfer_number_sound_file_and_reason(tmp_path: Path) -> None:
    text = GOOD.replace("  general:\n", "  Général:\n")
    assert (19, "nodes") in [(line, key) for line, key, _ in issues_for(tmp_path, text)]
    extra = """\
  danger:
    type: transfer
    number: 11 9
    reason: Enfant En Danger
    text: Le 119.
    file: sons/119.wav
"""
    found = issues_for(tmp_path, GOOD.replace('"0": general', '"0": general\n      "9": danger') + extra)
    assert [key for _, key, _ in found] == ["nodes.danger.number", "nodes.danger.reason", "nodes.danger.file"]


def test_every_error_of_every_file_sorted(tmp_path: Path) -> None:
    write(
        tmp_path, GOOD.replace("urgency: high", "urgency: haute").replace("type: prompt", "type: x"), "b.yaml"
    )
    write(tmp_path, GOOD.replace("queue: general", "queue: accueil"), "a.yaml")
    write(tmp_path, "start: [\n", "c.yaml")
    write(tmp_path, GOOD, "old.yml")
    issues = check_menus(tmp_path, QUEUES)
    assert issues == sorted(issues)
    assert [(Path(i.file).name, i.line) for i in issues] == [
        ("a.yaml", 21),
        ("b.yaml", 4),
        ("b.yaml", 17),
        ("c.yaml", 2),
        ("old.yml", 0),
    ]
    with pytest.raises(MenuValidationError) as caught:
        load_menus(tmp_path, QUEUES)
    assert list(caught.value.errors) == issues
    assert str(issues[0]) in str(caught.value)


def test_node_that_failed_does_not_cascade(tmp_path: Path) -> None:
    # The menu is broken: its targets must not be reported unreachable, nor the tree as a loop.
    assert issues_for(tmp_path, GOOD.replace("    retries", "").replace("type: menu", "type: menuu")) == [
        (
            8,
            "nodes.menu.type",
            "unknown node type 'menuu'; did you mean 'menu'? (types: prompt, menu, "
            "info, queue, transfer, callback, goto, hours, hangup)",
        )
    ]


def test_goto_another_tree_and_cross_file_loop(tmp_path: Path) -> None:
    write(
        tmp_path,
        GOOD.replace('"1": apa', '"1": apa\n      "2": vers-apa')
        + "  vers-apa:\n    type: goto\n    tree: apa\n",
    )
    apa = """\
    start: menu-apa
    nodes:
      menu-apa:
        type: menu
        text: Tapez 1.
        choices:
          "1": fin
        fallback: fin
      fin:
        type: hangup
    """
    write(tmp_path, apa, "apa.yaml")
    menus = load_menus(tmp_path, QUEUES)
    assert menus.tree("menu").node("vers-apa") == GotoNode("vers-apa", 25, tree="apa")
    assert isinstance(menus.tree("apa").node("fin"), HangupNode)
    # A goto to a missing tree, and a loop that crosses files.
    write(tmp_path, apa.replace("type: hangup", "type: goto\n        tree: menu"), "apa.yaml")
    write(tmp_path, "start: a\nnodes:\n  a:\n    type: goto\n    tree: nulle-part\n", "z.yaml")
    found = [(Path(i.file).name, i.line, i.key, i.message) for i in check_menus(tmp_path, QUEUES)]
    assert found == [
        ("z.yaml", 5, "nodes.a.tree", "unknown tree 'nulle-part' (a tree is a file's name without .yaml)")
    ]
    write(
        tmp_path,
        "start: a\nnodes:\n  a:\n    type: goto\n    tree: y\n",
        "x.yaml",
    )
    write(tmp_path, "start: b\nnodes:\n  b:\n    type: goto\n    tree: x\n", "y.yaml")
    loops = [i for i in check_menus(tmp_path, QUEUES) if "loop" in i.message]
    assert [(Path(i.file).name, i.message) for i in loops] == [
        ("x.yaml", "loop without exit: a -> y:b -> a never reaches a queue, transfer, callback or hangup")
    ]


def test_goto_needs_exactly_one_target(tmp_path: Path) -> None:
    text = GOOD.replace("    type: prompt\n    text: Bonjour.\n    next: menu", "    type: goto")
    found = issues_for(tmp_path, text)
    assert found[0] == (
        3,
        "nodes.accueil",
        "a goto node needs exactly one of 'node' (this file) or 'tree' (another file)",
    )


def test_hours_schedule_checked_only_when_known(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    type: prompt\n    text: Bonjour.\n    next: menu",
        "    type: hours\n    schedule: plateforme\n    open: menu\n    closed: general",
    )
    write(tmp_path, text)
    assert load_menus(tmp_path, QUEUES).tree("menu").node("accueil") == HoursNode(
        "accueil", 3, "plateforme", "menu", "general"
    )
    assert check_menus(tmp_path, QUEUES, known_schedules={"plateforme"}) == []
    issue = check_menus(tmp_path, QUEUES, known_schedules={"platform"})[0]
    assert (issue.line, issue.key) == (5, "nodes.accueil.schedule")
    assert "did you mean 'platform'" in issue.message


def test_missing_directory_and_no_files(tmp_path: Path) -> None:
    assert check_menus(tmp_path / "absent", QUEUES) == [
        MenuIssue(str(tmp_path / "absent"), 0, "", "not a directory")
    ]
    assert [i.message for i in check_menus(tmp_path, QUEUES)] == ["no menu file (*.yaml) in this directory"]


# --- The default menu -------------------------------------------------------------


def test_default_menu_passes_the_checks() -> None:
    assert check_menus(DIALPLANS, DEFAULT_QUEUES, known_schedules={"plateforme"}) == []


def test_default_menu_covers_the_services() -> None:
    tree = load_menus(DIALPLANS, DEFAULT_QUEUES).tree("guichet")
    nodes = tree.nodes.values()
    assert {n.queue for n in nodes if isinstance(n, QueueNode)} == DEFAULT_QUEUES
    assert {n.urgency for n in nodes if isinstance(n, QueueNode)} == {"normal", "high", "urgent"}
    assert [n.number for n in nodes if isinstance(n, TransferNode)] == ["119"]
    assert any(isinstance(n, CallbackNode) for n in nodes)
    assert any(isinstance(n, InfoNode) for n in nodes)
    assert isinstance(tree.node(tree.start), PromptNode)
    main_menu = tree.node("menu-principal")
    assert isinstance(main_menu, MenuNode)
    assert main_menu.digits == "12345890"
    general = tree.node(main_menu.fallback)
    assert isinstance(general, QueueNode) and general.queue == GENERAL_QUEUE
    assert main_menu.choice("0") is not None and main_menu.choice("0").next == main_menu.fallback  # type: ignore[union-attr]
    transport = tree.node(main_menu.choice("4").next)  # type: ignore[union-attr]
    assert isinstance(transport, MenuNode)
    assert any(isinstance(tree.node(c.next), InfoNode) for c in transport.choices)


def test_readme_node_examples_follow_the_schema(tmp_path: Path) -> None:
    readme = (DIALPLANS / "README.md").read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in readme.split("```yaml\n")[1:]]
    examples = [block for block in blocks if not block.startswith("description")]
    assert len(examples) == 9  # one per node type
    for example in examples:
        name = example.split(":", 1)[0]
        write(tmp_path, f"start: {name}\nnodes:\n" + textwrap.indent(example, "  "))
        issues = check_menus(tmp_path, QUEUES)
        # The examples point to nodes they do not show: only those references may fail.
        assert all(issue.message.startswith(("unknown node", "unknown tree")) for issue in issues), issues


# --- guichet menus check ------------------------------------------------------------


def test_check_command_ok_and_errors(tmp_path: Path) -> None:
    out = io.StringIO()
    assert main([str(DIALPLANS)], out) == 0
    assert out.getvalue() == f"{DIALPLANS}: 1 menu file(s), no error\n"
    write(tmp_path, GOOD.replace("urgency: high", "urgency: vite").replace("queue: general", "queue: x"))
    out = io.StringIO()
    assert main([str(tmp_path)], out) == 1
    path = tmp_path / "menu.yaml"
    assert out.getvalue().splitlines() == [
        f"{path}:17: nodes.apa.urgency: bad urgency 'vite' (one of: normal, high, urgent)",
        f"{path}:21: nodes.general.queue: unknown queue 'x' (queues: {', '.join(sorted(DEFAULT_QUEUES))})",
        f"2 error(s) in 1 file(s) under {tmp_path}",
    ]
    out = io.StringIO()
    assert main([str(tmp_path), "--queue", "apa", "--queue", "x"], out) == 1
    assert len(out.getvalue().splitlines()) == 2
