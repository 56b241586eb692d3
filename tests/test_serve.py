"""`guichet serve` as operators run it: a process, a TOML file, the secret in the environment, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

from pbx_sim import CallerScript, KeyPress, QueueConfig, SimConfig, SimulatedPbx
from tests.conftest import REPO

SECRET = "s3cr3t-never-logged"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_serve(config: Path, secret: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "GUICHET_AMI_SECRET": secret}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "guichet.cli", "serve", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


async def read_until(proc: asyncio.subprocess.Process, marker: str, lines: list[str]) -> None:
    assert proc.stderr is not None
    while True:
        raw = await asyncio.wait_for(proc.stderr.readline(), timeout=30)
        if not raw:
            raise AssertionError(f"guichet serve exited before {marker!r}: {''.join(lines)}")
        lines.append(raw.decode())
        if marker in lines[-1]:
            return


async def test_serve_routes_calls_then_stops_on_sigterm(tmp_path: Path) -> None:
    agi_port = free_port()
    queues = [QueueConfig(name) for name in ("apa", "pmi", "mdph", "transport", "rsa", "accueil")]
    sim = SimulatedPbx(SimConfig(agi_port=agi_port, ami_users={"guichet": SECRET}, speed=20.0, queues=queues))
    await sim.start()
    config = tmp_path / "guichet.toml"
    config.write_text(
        f'loop = "asyncio"\n[agi]\nport = {agi_port}\n[ami]\nport = {sim.ami_port}\n'
        f'[ivr]\nmenus_dir = "{REPO / "dialplans"}"\n[http]\nport = {free_port()}\n',
        encoding="utf-8",
    )
    proc = await start_serve(config, SECRET)
    lines: list[str] = []
    try:
        await read_until(proc, "AMI client of", lines)
        # Key 9 (child in danger: 119) works whether the platform is open or closed at the real time now.
        outcome = await sim.place_call(CallerScript("0612345678", keys=[KeyPress(0.5, "9")])).finished
        assert outcome.agistatus == "SUCCESS"
        assert outcome.transferred_to == "119"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
        assert proc.stderr is not None
        lines.append((await proc.stderr.read()).decode())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sim.stop()
    log = "".join(lines)
    assert "SIGTERM: stopping" in log
    assert SECRET not in log
    assert "Traceback" not in log


async def test_serve_refuses_a_wrong_secret(tmp_path: Path) -> None:
    sim = SimulatedPbx(SimConfig(agi_port=free_port(), ami_users={"guichet": SECRET}))
    await sim.start()
    config = tmp_path / "guichet.toml"
    config.write_text(f"[agi]\nport = {free_port()}\n[ami]\nport = {sim.ami_port}\n", encoding="utf-8")
    try:
        proc = await start_serve(config, "wrong-secret")
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        await sim.stop()
    assert proc.returncode == 1
    assert "cannot log in to the AMI" in err.decode()
    assert "wrong-secret" not in err.decode()


async def test_serve_refuses_invalid_menus(tmp_path: Path) -> None:
    menus = tmp_path / "menus"
    (menus / "settings").mkdir(parents=True)
    for name in ("hours.yaml", "urgency.yaml"):
        (menus / "settings" / name).write_bytes((REPO / "dialplans" / "settings" / name).read_bytes())
    (menus / "guichet.yaml").write_text("start: a\nnodes:\n  a:\n    type: qeue\n", encoding="utf-8")
    config = tmp_path / "guichet.toml"
    config.write_text(f'[ivr]\nmenus_dir = "{menus}"\n', encoding="utf-8")
    proc = await start_serve(config, SECRET)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 2
    assert f"{menus / 'guichet.yaml'}:4: nodes.a.type:" in err.decode()


async def test_serve_says_why_it_cannot_start_without_a_traceback(tmp_path: Path) -> None:
    """A web port already taken, then a Redis nobody listens on: one clear line each, exit 1."""
    sim = SimulatedPbx(SimConfig(agi_port=free_port(), ami_users={"guichet": SECRET}))
    await sim.start()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    base = f"[agi]\nport = {free_port()}\n[ami]\nport = {sim.ami_port}\n"
    cases = [
        (f"[http]\nport = {taken.getsockname()[1]}\n", "guichet: cannot listen or connect:"),
        (
            f'[http]\nport = {free_port()}\n[state]\nbackend = "redis"\n'
            f'redis_url = "redis://127.0.0.1:{free_port()}/0"\n',
            "guichet: cannot reach the live state store (Redis):",
        ),
    ]
    try:
        for extra, message in cases:
            config = tmp_path / "guichet.toml"
            config.write_text(base + extra, encoding="utf-8")
            proc = await start_serve(config, SECRET)
            _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
            assert proc.returncode == 1, err.decode()
            assert message in err.decode()
            assert "Traceback" not in err.decode()
    finally:
        taken.close()
        await sim.stop()
