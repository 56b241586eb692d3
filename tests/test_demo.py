"""`guichet demo` end to end: engine + simulated PBX + callers and agents, and the command line."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from guichet.cli import main
from guichet.demo import DemoOptions, demo_agents, run_demo
from guichet.names import APOLOGY_SOUND
from tests.conftest import REPO


async def test_demo_serves_every_call_and_shows_it() -> None:
    out = io.StringIO()
    result = await run_demo(DemoOptions(speed=40.0, calls=8, rate_per_min=12.0, agents=3, seed=7), out)
    text = out.getvalue()
    assert result.placed == 8
    assert len(result.outcomes) == 8
    # Every call went through the engine's menu (no fallback) and reached a queue.
    assert all(o.agistatus == "SUCCESS" and o.queue for o in result.outcomes)
    assert "8 finished, 0 sent to the general queue by the fail-safe dialplan" in text
    board = result.board
    assert sum(q.joined for q in board.queues.values()) == 8
    answered = sum(1 for o in result.outcomes if o.answered_by)
    assert sum(q.answered for q in board.queues.values()) == answered
    assert answered > 0
    assert "FastAGI server: agi://127.0.0.1:" in text
    assert "simulated AMI server: 127.0.0.1:" in text


def test_demo_agents_are_bounded() -> None:
    assert len(demo_agents(4)) == 4
    with pytest.raises(ValueError, match="1 to 4 agents"):
        demo_agents(5)


def test_cli_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--speed", "0"])
    assert "must be > 0" in capsys.readouterr().err
    assert main(["demo", "--agents", "9"]) == 2
    assert "1 to 4 agents" in capsys.readouterr().err


def test_serve_without_secret_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUICHET_AMI_SECRET", raising=False)
    proc = subprocess.run(
        [sys.executable, "-m", "guichet.cli", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "GUICHET_AMI_SECRET" in proc.stderr


def test_demo_command_runs_and_stops() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "guichet.cli",
            "demo",
            "--speed",
            "40",
            "--calls",
            "3",
            "--summary-every",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--- 3 calls placed, 3 finished, 0 sent to the general queue by the fail-safe" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_cli_menus_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["menus", "check", str(REPO / "dialplans")]) == 0
    assert "no error" in capsys.readouterr().out
    (tmp_path / "broken.yaml").write_text("start: a\nnodes:\n  a:\n    type: qeue\n", encoding="utf-8")
    assert main(["menus", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'broken.yaml'}:4: nodes.a.type:" in out


def test_cli_prompts_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompts", "build", str(REPO / "dialplans"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0 recorded file(s) referenced" in out
    built = sorted((tmp_path / "guichet").glob("*.wav"))
    assert tmp_path / f"{APOLOGY_SOUND}.wav" in built
    assert f"{len(built)} built" in out


def test_cli_asterisk_config_writes_what_is_committed(tmp_path: Path) -> None:
    assert main(["asterisk-config", "--out", str(tmp_path)]) == 0
    for name in ("extensions.conf", "queues.conf"):
        assert (tmp_path / name).read_text(encoding="utf-8") == (REPO / "asterisk_conf" / name).read_text(
            encoding="utf-8"
        )
