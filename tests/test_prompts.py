"""``guichet prompts build`` with the real espeak-ng and sox, and ``menus check --sounds``.

espeak-ng and sox must be installed (``apt-get install espeak-ng sox``; run.sh
does it): without them these tests fail, they do not skip.
"""

from __future__ import annotations

import io
import shutil
import wave
from pathlib import Path

import pytest

from guichet.names import APOLOGY_SOUND
from ivr import menu_check, prompts
from ivr.menus import MenuSet, load_menus
from ivr.prompt_names import MAX_TEXT_CHARS, tts_name
from ivr.prompts import (
    DIALPLAN_SOUNDS,
    BuildReport,
    PromptBuildError,
    Tools,
    build_prompts,
    find_tools,
    tts_texts,
)
from tests.conftest import REPO

DIALPLANS = REPO / "dialplans"
GOODBYE = "Merci de votre appel. Au revoir."  # the default menu's au-revoir text, used there only


def load(directory: Path) -> MenuSet:
    return load_menus(directory, menu_check.DEFAULT_QUEUES)


@pytest.fixture(scope="session")
def tools() -> Tools:
    try:
        return find_tools()
    except PromptBuildError as exc:
        pytest.fail(f"the prompt tests need the real programs: {exc}")


@pytest.fixture(scope="session")
def built(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildReport]:
    """The default menu's prompts, built once (in parallel) for the whole session."""
    out = tmp_path_factory.mktemp("sounds")
    return out, build_prompts(load(DIALPLANS), out, jobs=4, tools=tools)


def wav_seconds(path: Path) -> float:
    """The duration of an Asterisk ``wav`` file, after checking its format."""
    header = path.read_bytes()[:36]
    assert header[:4] == b"RIFF" and header[8:12] == b"WAVE", path
    assert int.from_bytes(header[20:22], "little") == 1, f"{path}: not plain PCM (format tag 1)"
    with wave.open(str(path)) as sound:
        assert sound.getnchannels() == 1, path
        assert sound.getsampwidth() == 2, path
        assert sound.getframerate() == 8000, path
        assert sound.getcomptype() == "NONE", path
        return float(sound.getnframes() / sound.getframerate())


def copy_menus(tmp_path: Path) -> Path:
    menus = tmp_path / "dialplans"
    shutil.copytree(DIALPLANS, menus, ignore=shutil.ignore_patterns("*.md"))
    return menus


def test_every_prompt_of_the_default_menu_is_an_asterisk_wav(built: tuple[Path, BuildReport]) -> None:
    out, report = built
    texts = tts_texts(load(DIALPLANS))
    assert len(texts) >= 20
    assert APOLOGY_SOUND in texts, "the fail-safe dialplan's apology is built too"
    assert sorted(report.built) == sorted(texts) and not report.up_to_date
    for name, text in texts.items():
        path = out / f"{name}.wav"
        assert name.startswith("guichet/tts-") or name in DIALPLAN_SOUNDS
        assert path.stat().st_mode & 0o777 == 0o644, "Asterisk must be able to read it"
        seconds = wav_seconds(path)
        words_per_s = len(text.split()) / seconds
        # espeak-ng at 150 words a minute: about 2.5 words a second
        assert seconds > 0.3 and 1.0 < words_per_s < 5.0, (name, text, seconds)
    assert not [p for p in (out / "guichet").iterdir() if p.name.startswith(".")], "temporary files left"


def test_second_run_builds_nothing(built: tuple[Path, BuildReport], tools: Tools) -> None:
    out, first = built
    before = {p: p.stat().st_mtime_ns for p in (out / "guichet").iterdir()}
    again = build_prompts(load(DIALPLANS), out, tools=tools)
    assert again.built == ()
    assert sorted(again.up_to_date) == sorted(first.built)
    assert {p: p.stat().st_mtime_ns for p in (out / "guichet").iterdir()} == before


def test_editing_one_text_rebuilds_exactly_one_file(
    built: tuple[Path, BuildReport], tools: Tools, tmp_path: Path
) -> None:
    menus = copy_menus(tmp_path)
    path = menus / "guichet.yaml"
    source = path.read_text(encoding="utf-8")
    edited = "Merci de votre appel. À bientôt."
    assert source.count(f"text: {GOODBYE}\n") == 1
    path.write_text(source.replace(f"text: {GOODBYE}\n", f"text: {edited}\n"), encoding="utf-8")
    out = tmp_path / "sounds"
    shutil.copytree(built[0], out)

    report = build_prompts(load(menus), out, jobs=1, prune=True, tools=tools)

    assert report.built == (tts_name(edited),)
    assert len(report.up_to_date) == len(built[1].built) - 1
    assert report.pruned == (tts_name(GOODBYE),)
    assert not (out / f"{tts_name(GOODBYE)}.wav").exists()
    assert wav_seconds(out / f"{tts_name(edited)}.wav") > 0.3


def test_menus_check_sounds_reports_a_missing_file_then_passes(
    built: tuple[Path, BuildReport], tmp_path: Path
) -> None:
    path = DIALPLANS / "guichet.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    goodbye_line = lines.index(f"    text: {GOODBYE}") + 1
    sounds = tmp_path / "sounds"
    shutil.copytree(built[0], sounds)
    (sounds / f"{tts_name(GOODBYE)}.wav").unlink()

    out = io.StringIO()
    assert menu_check.main([str(DIALPLANS), "--sounds", str(sounds)], out) == 1
    assert out.getvalue().splitlines() == [
        f"{path}:{goodbye_line}: nodes.au-revoir.text: prompt sound missing: {tts_name(GOODBYE)} "
        "(run guichet prompts build)",
        f"1 error(s) in 1 file(s) under {DIALPLANS}",
    ]

    out = io.StringIO()
    assert menu_check.main([str(DIALPLANS), "--sounds", str(built[0])], out) == 0, out.getvalue()
    assert menu_check.main([str(DIALPLANS)], io.StringIO()) == 0  # without --sounds, files are not looked at


def test_recorded_files_are_counted_and_checked(
    built: tuple[Path, BuildReport], tools: Tools, tmp_path: Path
) -> None:
    menus = copy_menus(tmp_path)
    path = menus / "guichet.yaml"
    source = path.read_text(encoding="utf-8")
    path.write_text(
        source.replace(f"text: {GOODBYE}\n", f"text: {GOODBYE}\n    file: custom/au-revoir\n"),
        encoding="utf-8",
    )
    sounds = tmp_path / "sounds"
    shutil.copytree(built[0], sounds)
    report = build_prompts(load(menus), sounds, tools=tools)
    assert report.built == () and report.recorded == ("custom/au-revoir",)
    assert report.missing_recorded == ("custom/au-revoir",)

    out = io.StringIO()
    assert menu_check.main([str(menus), "--sounds", str(sounds)], out) == 1
    assert "nodes.au-revoir.file: prompt sound missing: custom/au-revoir (a recorded file" in out.getvalue()
    (sounds / "custom").mkdir()
    shutil.copy(sounds / f"{tts_name(GOODBYE)}.wav", sounds / "custom" / "au-revoir.wav")
    assert menu_check.main([str(menus), "--sounds", str(sounds)], io.StringIO()) == 0


def test_hostile_texts_are_only_spoken(tools: Tools, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    victim = tmp_path / "victim"
    victim.write_text("still here")
    pwned = tmp_path / "pwned"
    hostile = [
        "--help",
        f"-w {tmp_path / 'owned.wav'}",
        f"$(rm -f {victim}) et `touch {pwned}`",
        f"\"guillemets\" 'apostrophes' ; touch {pwned} && rm -rf {victim} | cat",
        "Première ligne.\nDeuxième ligne.\n-v en\n--stdin",
    ]
    report = build_prompts(load(DIALPLANS), tmp_path / "sounds", extra_texts=hostile, tools=tools)
    names = [tts_name(text) for text in hostile]
    assert set(names) <= set(report.built)
    for name in names:
        assert wav_seconds(tmp_path / "sounds" / f"{name}.wav") > 0.3
    assert victim.read_text() == "still here"
    assert not pwned.exists() and not (tmp_path / "owned.wav").exists()
    assert list(work.iterdir()) == []
    # newlines are spoken through: both lines are in the sound, not just the first
    one_line = build_prompts(
        load(DIALPLANS), tmp_path / "sounds", extra_texts=["Première ligne."], tools=tools
    )
    short = wav_seconds(tmp_path / "sounds" / f"{one_line.built[0]}.wav")
    assert wav_seconds(tmp_path / "sounds" / f"{names[-1]}.wav") > 2 * short


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty prompt text"),
        ("   \n", "empty prompt text"),
        ("a" * (MAX_TEXT_CHARS + 1), f"prompt text too long: {MAX_TEXT_CHARS + 1} characters"),
        ("Bonjour\x00", "control character U+0000"),
    ],
)
def test_text_limits(text: str, expected: str) -> None:
    with pytest.raises(PromptBuildError, match="extra text 1") as caught:
        tts_texts(load(DIALPLANS), [text])
    assert expected in str(caught.value)


def test_text_at_the_limit_is_accepted() -> None:
    text = "a" * MAX_TEXT_CHARS
    assert tts_texts(load(DIALPLANS), [text])[tts_name(text)] == text


def test_too_long_menu_text_is_a_check_error(tmp_path: Path) -> None:
    menus = copy_menus(tmp_path)
    path = menus / "guichet.yaml"
    long_text = "Merci " * 200
    path.write_text(
        path.read_text(encoding="utf-8").replace(f"text: {GOODBYE}\n", f"text: {long_text.strip()}\n"),
        encoding="utf-8",
    )
    out = io.StringIO()
    assert menu_check.main([str(menus)], out) == 1
    assert "nodes.au-revoir.text: prompt text too long: 1199 characters (at most 1000)" in out.getvalue()
    out = io.StringIO()
    assert prompts.main([str(menus), "--out", str(tmp_path / "sounds")], out) == 1
    assert "prompt text too long" in out.getvalue()
    assert not (tmp_path / "sounds").exists()


def test_missing_tool_names_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PromptBuildError, match=r"espeak-ng and sox not found.*apt-get install espeak-ng sox"):
        find_tools()
    out = io.StringIO()
    assert prompts.main([str(DIALPLANS), "--out", str(tmp_path / "sounds")], out) == 1
    assert "install the Debian package(s) espeak-ng sox" in out.getvalue()


def test_failed_synthesis_leaves_no_file(tools: Tools, tmp_path: Path) -> None:
    broken = Tools(espeak=tools.espeak, sox=shutil.which("false") or "/bin/false")
    out = tmp_path / "sounds"
    count = len(tts_texts(load(DIALPLANS)))
    with pytest.raises(
        PromptBuildError,
        match=rf"(?s){count} prompt\(s\) failed \(0 built\):\n.*: sox exited with status 1.*"
        rf"\.\.\. and {count - 5} more\Z",
    ):
        build_prompts(load(DIALPLANS), out, jobs=2, tools=broken)
    assert list((out / "guichet").iterdir()) == []


def test_command_line_builds_then_reports_up_to_date(tmp_path: Path, tools: Tools) -> None:
    sounds = tmp_path / "sounds"
    texts = tts_texts(load(DIALPLANS), ["Le service est fermé."])
    out = io.StringIO()
    assert (
        prompts.main([str(DIALPLANS), "--out", str(sounds), "--jobs", "3"], out, ["Le service est fermé."])
        == 0
    )
    lines = out.getvalue().splitlines()
    assert len([line for line in lines if line.startswith("[")]) == len(texts)  # one progress line per file
    assert lines[-1] == f"{sounds}: {len(texts)} built, 0 already up to date, 0 recorded file(s) referenced"
    out = io.StringIO()
    assert prompts.main([str(DIALPLANS), "--out", str(sounds), "--prune"], out) == 0
    assert out.getvalue().splitlines() == [
        f"{sounds}: 0 built, {len(texts) - 1} already up to date, 0 recorded file(s) referenced, "
        "1 stale file(s) removed"
    ]
    out = io.StringIO()
    assert prompts.main([str(DIALPLANS), "--out", str(sounds), "--jobs", "0"], out) == 1
    assert "jobs: from 1 to 32, not 0" in out.getvalue()
