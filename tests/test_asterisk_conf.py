"""asterisk_conf/: generated from the simulator's own dialplan data, and parsed back to prove it."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

import guichet.names
from guichet import asterisk_conf
from guichet.asterisk_conf import (
    DEFAULT_AGI_URL,
    EXTENSIONS_CONF,
    QUEUES_CONF,
    AsteriskConfigError,
    QueueSettings,
    render_extensions,
    render_extensions_conf,
    render_queues,
    render_queues_conf,
)
from guichet.names import GUICHET_IVR_DONE, GUICHET_QUEUE, GUICHET_TRANSFER
from ivr.menus import QueueNode, load_menus
from ivr.services import GENERAL_QUEUE, SERVICE_QUEUES
from pbx_sim.dialplan import (
    INBOUND_CONTEXT,
    QUEUE_EXIT_CONTEXT,
    Dialplan,
    Step,
    evaluate_gotoif,
    inbound_dialplan,
    substitute,
)
from tests.conftest import REPO

CONF_DIR = REPO / "asterisk_conf"
RUN = "run `guichet asterisk-config` and commit the result"
# --- a small extensions.conf reader (exten/same lines, labels, priorities) ----------------------

_SECTION = re.compile(r"^\[(?P<name>[^\]]+)\](?P<rest>.*)$")
_EXTEN = re.compile(
    r"^exten\s*=>\s*(?P<pattern>[^,]+),(?P<prio>[^,(]+)(?:\((?P<label>[^)]*)\))?,(?P<app>.*)$"
)
_SAME = re.compile(r"^same\s*=>\s*(?P<prio>[^,(]+)(?:\((?P<label>[^)]*)\))?,(?P<app>.*)$")
_APP = re.compile(r"^(?P<app>[A-Za-z][A-Za-z0-9_]*)\((?P<data>.*)\)$")
_SETTING = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9_-]*)\s*=>?\s*(?P<value>.*)$")


def strip_comment(line: str) -> str:
    """Asterisk's rule: an unescaped ';' starts a comment."""
    return re.split(r"(?<!\\);", line, maxsplit=1)[0].strip()


def parse_extensions(text: str) -> tuple[Dialplan, dict[str, dict[str, str]]]:
    """The contexts as a Dialplan, and the settings sections ([general], [globals]) as dicts."""
    contexts: dict[str, dict[str, tuple[Step, ...]]] = {}
    settings: dict[str, dict[str, str]] = {}
    section = ""
    pattern = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = strip_comment(raw)
        if not line:
            continue
        where = f"extensions.conf:{number}: {raw!r}"
        if (header := _SECTION.match(line)) is not None:
            assert not header["rest"], f"{where}: nothing may follow a section name (a template marker?)"
            section, pattern = header["name"], ""
            if section in ("general", "globals"):
                settings[section] = {}
            else:
                assert section not in contexts, f"{where}: context defined twice"
                contexts[section] = {}
            continue
        if section in settings:
            setting = _SETTING.match(line)
            assert setting is not None, f"{where}: not a key = value line"
            settings[section][setting["key"]] = setting["value"]
            continue
        assert section, f"{where}: outside any section"
        if (exten := _EXTEN.match(line)) is not None:
            pattern = exten["pattern"].strip()
            assert exten["prio"] == "1", f"{where}: an extension must start at priority 1"
            assert pattern not in contexts[section], f"{where}: extension defined twice"
            contexts[section][pattern] = ()
            match = exten
        else:
            same = _SAME.match(line)
            assert same is not None, f"{where}: neither exten => nor same =>"
            assert pattern, f"{where}: same => before any exten =>"
            assert same["prio"] == "n", f"{where}: same => must use priority n"
            match = same
        app = _APP.match(match["app"])
        assert app is not None, f"{where}: expected App(data)"
        step = Step(app["app"], app["data"], match["label"] or "")
        contexts[section][pattern] = (*contexts[section][pattern], step)
    return Dialplan(contexts), settings


def as_dict(dialplan: Dialplan) -> dict[str, dict[str, tuple[Step, ...]]]:
    return {context: dict(extens) for context, extens in dialplan.contexts.items()}


def committed(name: str) -> str:
    return (CONF_DIR / name).read_text(encoding="utf-8")


def sections(text: str) -> dict[str, dict[str, str]]:
    """A key = value config file (queues.conf): section -> key -> value (the last one wins)."""
    found: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = strip_comment(raw)
        if not line:
            continue
        if (header := _SECTION.match(line)) is not None:
            assert not header["rest"], f"line {number}: {raw!r}: nothing may follow a section name"
            assert header["name"] not in found, f"line {number}: section [{header['name']}] twice"
            current = found[header["name"]] = {}
            continue
        setting = _SETTING.match(line)
        assert setting is not None and current is not None, f"line {number}: {raw!r}: not key = value"
        current[setting["key"]] = setting["value"]
    return found


# --- (1) the committed files are what the generator renders ------------------------------------


def test_committed_extensions_conf_is_what_the_generator_renders() -> None:
    assert committed(EXTENSIONS_CONF) == render_extensions_conf(), (
        f"asterisk_conf/{EXTENSIONS_CONF} differs from the generator: {RUN}"
    )


def test_committed_queues_conf_is_what_the_generator_renders() -> None:
    text = render_queues_conf()
    assert committed(QUEUES_CONF) == text, f"asterisk_conf/{QUEUES_CONF} differs from the generator: {RUN}"


def test_every_generated_file_starts_with_the_do_not_edit_comment() -> None:
    text = render_extensions_conf()
    first = text.splitlines()[0]
    assert first.startswith("; generated by guichet asterisk-config") and "do not edit" in first
    assert render_queues(("apa",)).splitlines()[0].startswith("; generated by guichet asterisk-config")


# --- (2) the committed extensions.conf, parsed back, is the simulator's dialplan step by step ----


def test_committed_extensions_conf_is_the_simulated_pbx_flow_step_by_step() -> None:
    parsed, _ = parse_extensions(committed(EXTENSIONS_CONF))
    expected = as_dict(inbound_dialplan(DEFAULT_AGI_URL))
    got = as_dict(parsed)
    assert list(got) == list(expected), f"contexts differ: {RUN}"
    for context, extens in expected.items():
        assert list(got[context]) == list(extens), f"[{context}] extensions differ: {RUN}"
        for pattern, steps in extens.items():
            for priority, (mine, sim) in enumerate(zip(got[context][pattern], steps, strict=False), 1):
                assert mine == sim, f"[{context}] {pattern} priority {priority}: {mine} != {sim}: {RUN}"
            assert len(got[context][pattern]) == len(steps), f"[{context}] {pattern}: step count: {RUN}"


@pytest.mark.parametrize(
    "dialplan",
    [
        inbound_dialplan(DEFAULT_AGI_URL),
        inbound_dialplan("agi://10.0.0.7:4600", overflow=True, max_wait_s=90, fallback_queue="accueil"),
        inbound_dialplan("hagi://agi.example.org", trunk="ovh", exit_route="rappel"),
    ],
    ids=["default", "overflow", "hagi"],
)
def test_render_then_parse_gives_the_same_dialplan(dialplan: Dialplan) -> None:
    parsed, settings = parse_extensions(render_extensions(dialplan))
    assert as_dict(parsed) == as_dict(dialplan)
    assert set(settings) == {"general", "globals"}


def test_a_changed_step_is_seen_by_the_step_by_step_check() -> None:
    dialplan = inbound_dialplan(DEFAULT_AGI_URL)
    steps = list(dialplan.contexts[INBOUND_CONTEXT]["_X."])
    steps[1] = Step("Set", "CHANNEL(language)=en")
    changed = Dialplan({**dialplan.contexts, INBOUND_CONTEXT: {"_X.": tuple(steps)}})
    parsed, _ = parse_extensions(render_extensions(changed))
    assert as_dict(parsed) != as_dict(dialplan)


def test_labels_and_priorities_land_where_the_simulator_expects_them() -> None:
    text = committed(EXTENSIONS_CONF)
    assert "exten => _X.,1,Answer()" in text
    assert " same => n(handoff),GotoIf(" in text
    assert " same => n(transfer),Dial(" in text
    assert f"[{QUEUE_EXIT_CONTEXT}]\nexten => _X,1,AGI({DEFAULT_AGI_URL}/callback-offer)" in text


# --- (3) every GUICHET_* name of the dialplan is a constant of guichet/names.py ------------------


def test_every_guichet_variable_in_the_dialplan_is_defined_in_names() -> None:
    text = committed(EXTENSIONS_CONF)
    used = set(re.findall(r"\$\{(GUICHET_[A-Za-z0-9_]*)\}", text)) | set(
        re.findall(r"\b(GUICHET_[A-Za-z0-9_]*)=", text)
    )
    defined = {value for name, value in vars(guichet.names).items() if name.startswith("GUICHET_")}
    assert {GUICHET_IVR_DONE, GUICHET_QUEUE, GUICHET_TRANSFER} <= used
    assert used <= defined, f"not in guichet/names.py: {sorted(used - defined)}"
    assert set(re.findall(r"\bGUICHET_[A-Za-z0-9_]*", text)) <= defined


# --- (4) every queue the menus and the dialplan name exists --------------------------------------


def literal_queues(dialplan: Dialplan) -> set[str]:
    return {
        step.data.split(",")[0]
        for extens in dialplan.contexts.values()
        for steps in extens.values()
        for step in steps
        if step.app == "Queue" and not step.data.startswith("${")
    }


def menu_queues() -> set[str]:
    menus = load_menus(REPO / "dialplans", SERVICE_QUEUES)
    return {
        node.queue
        for tree in menus.trees.values()
        for node in tree.nodes.values()
        if isinstance(node, QueueNode)
    }


def test_the_dialplan_falls_back_to_the_general_service_queue() -> None:
    assert literal_queues(inbound_dialplan(DEFAULT_AGI_URL)) == {GENERAL_QUEUE}
    assert GENERAL_QUEUE in SERVICE_QUEUES
    assert menu_queues() <= set(SERVICE_QUEUES)


def test_every_queue_of_the_menus_and_the_dialplan_is_in_queues_conf() -> None:
    queues = set(sections(committed(QUEUES_CONF))) - {"general"}
    needed = set(SERVICE_QUEUES) | menu_queues() | literal_queues(inbound_dialplan(DEFAULT_AGI_URL))
    assert needed <= queues, f"missing from queues.conf: {sorted(needed - queues)}"


# --- (5) syntax sanity against the configs that booted on the recorded Asterisk 22 ---------------

# Keys the generated queues.conf uses that the recorded configs did not exercise (documented in
# Asterisk 22's queues.conf; asterisk_conf/README.md says why each is there).
NOT_IN_RECORDINGS = {
    "announce-position",
    "servicelevel",
    "setinterfacevar",
    "setqueuevar",
}


def test_generated_queues_conf_uses_the_recorded_syntax(captures_dir: Path) -> None:
    recorded = sections((captures_dir / "round2/conf/queues.conf").read_text(encoding="utf-8"))
    recorded_keys = {key for values in recorded.values() for key in values}
    names = SERVICE_QUEUES
    found = sections(render_queues(names))
    assert list(found) == ["general", *names]
    assert set(found["general"]) <= set(recorded["general"]) | {"persistentmembers"}
    for name in names:
        queue = found[name]
        assert set(queue) - recorded_keys <= NOT_IN_RECORDINGS, f"[{name}]: keys never booted"
        assert "member" not in queue, "agents log in with QueueAdd: no static member"
        assert queue["ringinuse"] == "no"
        assert queue["joinempty"] == "yes" and queue["leavewhenempty"] == "no"
        assert "context" not in queue, "no exit digit until the callback-offer route exists"
        assert queue["strategy"] == "leastrecent"


def test_generated_extensions_conf_uses_the_recorded_syntax(captures_dir: Path) -> None:
    # the recorded file goes through the same reader: this also proves the reader on real syntax
    _, recorded = parse_extensions((captures_dir / "round2/conf/extensions.conf").read_text(encoding="utf-8"))
    _, mine = parse_extensions(committed(EXTENSIONS_CONF))
    assert mine["general"] == recorded["general"] | {"writeprotect": "yes"}
    for raw in committed(EXTENSIONS_CONF).splitlines():
        assert "(!)" not in raw, "a (!) template marker makes Asterisk ignore the section"


def test_the_reader_refuses_a_template_marker_and_stray_lines() -> None:
    with pytest.raises(AssertionError, match="template"):
        parse_extensions("[from-citizens](!)\nexten => _X.,1,Answer()\n")
    with pytest.raises(AssertionError, match="same => before"):
        parse_extensions("[c]\n same => n,Answer()\n")
    with pytest.raises(AssertionError, match="priority 1"):
        parse_extensions("[c]\nexten => 1,2,Answer()\n")


# --- (6) the fail-safe right after the AGI -------------------------------------------------------


def failsafe_target(variables: dict[str, str]) -> str | None:
    """Where the GotoIf right after the IVR's AGI jumps, given the variables the engine left."""
    parsed, _ = parse_extensions(committed(EXTENSIONS_CONF))
    steps = parsed.contexts[INBOUND_CONTEXT]["_X."]
    agi = next(i for i, step in enumerate(steps) if step.app == "AGI" and step.data.endswith("/ivr"))
    gotoif = steps[agi + 1]
    assert gotoif.app == "GotoIf" and f"${{{GUICHET_IVR_DONE}}}" in gotoif.data
    return evaluate_gotoif(substitute(gotoif.data, lambda name: variables.get(name, "")))


@pytest.mark.parametrize(
    "variables",
    [
        {"AGISTATUS": "FAILURE"},  # engine down: refused in ~1 ms
        {"AGISTATUS": "SUCCESS"},  # accepted then closed at once: SUCCESS, nothing set
        {"AGISTATUS": "SUCCESS", GUICHET_QUEUE: "apa"},  # died before GUICHET_IVR_DONE
        {"AGISTATUS": "SUCCESS", GUICHET_IVR_DONE: "1"},  # done, but neither queue nor number
    ],
    ids=["refused", "accept-close", "no-ivr-done", "no-destination"],
)
def test_failsafe_falls_through_to_the_apology_and_the_general_queue(variables: dict[str, str]) -> None:
    assert failsafe_target(variables) is None
    parsed, _ = parse_extensions(committed(EXTENSIONS_CONF))
    steps = parsed.contexts[INBOUND_CONTEXT]["_X."]
    after = [step.app for step in steps[4:7]]
    assert after == ["Playback", "Queue", "Hangup"]
    assert steps[5].data.split(",")[0] == GENERAL_QUEUE


@pytest.mark.parametrize(
    "variables",
    [{GUICHET_IVR_DONE: "1", GUICHET_QUEUE: "apa"}, {GUICHET_IVR_DONE: "1", GUICHET_TRANSFER: "119"}],
)
def test_a_call_handed_back_on_purpose_goes_to_the_handoff(variables: dict[str, str]) -> None:
    assert failsafe_target(variables) == "handoff"


# --- the generator's own checks and main() ---------------------------------------------------------


def test_a_queue_named_general_is_refused_with_the_reason() -> None:
    with pytest.raises(AsteriskConfigError, match=r"'General' is reserved.*global settings"):
        render_queues(("apa", "General"))


@pytest.mark.parametrize(
    ("queues", "settings", "message"),
    [
        ((), None, "no queue"),
        (("apa", "APA"), None, "twice"),
        (("a;b",), None, "queue name"),
        (("apa",), QueueSettings(strategy="fastest"), "strategy 'fastest'"),
        (("apa",), QueueSettings(wrapuptime_s=-1), "wrapuptime_s"),
    ],
)
def test_bad_queue_input_is_refused(
    queues: tuple[str, ...], settings: QueueSettings | None, message: str
) -> None:
    with pytest.raises(AsteriskConfigError, match=message):
        render_queues(queues, settings)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (Step("Playback", "a;b"), "comment"),
        (Step("Playback", "a\nb"), "newline"),
        (Step("Play back", "a"), "application name"),
        (Step("Answer", label="bad label"), "label"),
    ],
)
def test_a_step_asterisk_would_misread_is_refused(step: Step, message: str) -> None:
    with pytest.raises(AsteriskConfigError, match=message):
        render_extensions(Dialplan({"c": {"_X.": (step,)}}))


def test_main_writes_both_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asterisk_conf, "SERVICE_QUEUES", ("apa", "accueil"))
    out = io.StringIO()
    assert asterisk_conf.main(["--out", str(tmp_path), "--agi-url", "agi://10.1.2.3:4600/"], out=out) == 0
    extensions = (tmp_path / EXTENSIONS_CONF).read_text(encoding="utf-8")
    assert extensions == render_extensions_conf("agi://10.1.2.3:4600")
    assert "AGI(agi://10.1.2.3:4600/ivr)" in extensions
    assert list(sections((tmp_path / QUEUES_CONF).read_text(encoding="utf-8"))) == [
        "general",
        "apa",
        "accueil",
    ]
    assert out.getvalue().count("wrote ") == 2


def test_main_writes_nothing_when_a_file_cannot_be_rendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(asterisk_conf, "SERVICE_QUEUES", ("apa", "general"))
    assert asterisk_conf.main(["--out", str(tmp_path)], out=io.StringIO()) == 1
    assert list(tmp_path.iterdir()) == []
    assert "'general' is reserved" in capsys.readouterr().err


def test_main_refuses_a_bad_agi_url_or_a_missing_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(asterisk_conf, "SERVICE_QUEUES", ("apa", "accueil"))
    with pytest.raises(SystemExit) as exit_info:
        asterisk_conf.main(["--out", str(tmp_path), "--agi-url", "http://x/ivr"])
    assert exit_info.value.code == 2
    assert "agi://HOST[:PORT]" in capsys.readouterr().err
    assert asterisk_conf.main(["--out", str(tmp_path / "nope")], out=io.StringIO()) == 1
    assert "no such folder" in capsys.readouterr().err


def test_the_exit_context_is_written_only_when_asked() -> None:
    with_exit = sections(render_queues(["apa"], QueueSettings(exit_context=QUEUE_EXIT_CONTEXT)))
    assert with_exit["apa"]["context"] == QUEUE_EXIT_CONTEXT
