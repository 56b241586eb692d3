"""The softphone harness's own logic, without Asterisk: DTMF pcaps, processes, polling, the engine's files.

Stand-in processes (small Python scripts) play Asterisk and the engine where the harness only needs a
process that behaves like one; the engine's files are read back by the engine's own loaders.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import struct
import sys
import threading
import tomllib
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from guichet.config import load_settings
from ivr.hours import is_open, parse_hours
from softphone_test import dtmf, harness, sipp
from softphone_test.harness import AgentAccount, EngineApi, Harness, HarnessError, Ports

PARIS = ZoneInfo("Europe/Paris")


# --- DTMF pcaps ---------------------------------------------------------------------------------


def _rtp_packets(path: Path) -> list[tuple[float, bytes]]:
    """(capture time, RTP bytes) of every packet of a pcap written by dtmf.write_digits."""
    data = path.read_bytes()
    offset, packets = 24, []
    while offset < len(data):
        seconds, micros, length, _ = struct.unpack_from("<IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + length]
        offset += 16 + length
        ip_header = (frame[14] & 0x0F) * 4
        packets.append((seconds + micros / 1e6, frame[14 + ip_header + 8 :]))
    return packets


def test_keys_become_one_renumbered_stream(tmp_path: Path) -> None:
    cursor = dtmf.write_digits(tmp_path / "menu.pcap", "11", gap_ms=300, cursor=dtmf.RtpCursor(500, 16000))
    dtmf.write_digits(tmp_path / "queued.pcap", "1#", gap_ms=300, cursor=cursor)
    menu, queued = _rtp_packets(tmp_path / "menu.pcap"), _rtp_packets(tmp_path / "queued.pcap")
    stream = [rtp for _, rtp in menu + queued]
    assert dtmf.decode_events(stream) == "111#"
    sequence = [struct.unpack_from("!H", rtp, 2)[0] for rtp in stream]
    assert sequence[0] == 500
    assert all(b >= a for a, b in itertools.pairwise(sequence))  # end packets repeat theirs
    timestamps = sorted({struct.unpack_from("!I", rtp, 4)[0] for rtp in stream})
    assert timestamps == [16000, 16000 + 2400, 16000 + 4800, 16000 + 7200]  # 300 ms at 8 kHz apart
    starts = [at for at, rtp in menu if rtp[1] & 0x80]  # the marker bit opens each key
    assert [round(at - starts[0], 3) for at in starts] == [0.0, 0.3]


def test_debians_files_played_as_they_are_lose_a_repeated_key() -> None:
    one = _rtp_packets(dtmf.DEBIAN_PCAPS / "dtmf_2833_1.pcap")
    assert dtmf.decode_events([rtp for _, rtp in one + one]) == "1"


def test_an_empty_key_list_writes_a_pcap_without_packets(tmp_path: Path) -> None:
    dtmf.write_digits(tmp_path / "none.pcap", "")
    assert _rtp_packets(tmp_path / "none.pcap") == []
    assert (tmp_path / "none.pcap").stat().st_size == 24  # the pcap header only


@pytest.mark.parametrize(
    ("keys", "gap_ms", "message"),
    [("1a", 400, r"unknown DTMF key\(s\) a: use 0-9"), ("12", 150, "at least 200 ms apart")],
)
def test_bad_keys_are_refused(tmp_path: Path, keys: str, gap_ms: int, message: str) -> None:
    with pytest.raises(dtmf.DtmfPcapError, match=message):
        dtmf.write_digits(tmp_path / "x.pcap", keys, gap_ms=gap_ms)
    assert not (tmp_path / "x.pcap").exists()


def test_missing_debian_pcaps_are_named(tmp_path: Path) -> None:
    with pytest.raises(dtmf.DtmfPcapError, match="install Debian's sip-tester"):
        dtmf.write_digits(tmp_path / "x.pcap", "1", source_dir=tmp_path / "nowhere")


def test_citizen_needs_a_menu_key_and_a_known_end(tmp_path: Path) -> None:
    with pytest.raises(sipp.SippError, match="at least one menu key"):
        sipp.CitizenKeys(menu="").write(tmp_path)
    with pytest.raises(sipp.SippError, match="end='later'"):
        sipp.citizen(
            "c", local_port=1, media_port=2, remote="x", number="1", caller="2", end="later", menu_delay_ms=0
        )


def test_register_refuses_credentials_that_would_break_the_injection_file() -> None:
    for password in ("a;b", "a]b", "a b"):
        with pytest.raises(sipp.SippError, match="cannot hold"):
            sipp.agent_softphone(
                "r", local_port=1, media_port=2, remote="x", agent="agent1", password=password,
                registered_ms=1, end="wait",
            )  # fmt: skip


# --- processes ----------------------------------------------------------------------------------

STAND_IN = """
import signal, sys, time
name, order = sys.argv[1], sys.argv[2]
def stop(*_):
    with open(order, "a") as f:
        f.write(name + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop if sys.argv[3] == "polite" else signal.SIG_IGN)
print(name, "started", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN, encoding="utf-8")
    return script


def _wait_for_log(process: harness.ManagedProcess, text: str) -> None:
    harness.wait_until(lambda: text in process.log_tail(), what=text, timeout_s=30, watch=[process])


def test_processes_stop_last_started_first_even_when_the_test_fails(tmp_path: Path, stand_in: Path) -> None:
    order = tmp_path / "order.txt"
    with pytest.raises(AssertionError) as failure, Harness(tmp_path / "run") as run:
        for name in ("asterisk", "engine", "sipp"):
            _wait_for_log(
                run.start(name, [sys.executable, str(stand_in), name, str(order), "polite"]), "started"
            )
        raise AssertionError("the test failed")
    assert order.read_text().split() == ["sipp", "engine", "asterisk"]
    assert all(not process.alive for process in run.processes)
    report = "\n".join(failure.value.__notes__)
    assert "run folder:" in report
    assert "--- engine (exit 0)" in report
    assert "engine started" in report


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path, stand_in: Path) -> None:
    with Harness(tmp_path) as run:
        stubborn = run.start(
            "stubborn", [sys.executable, str(stand_in), "x", "/dev/null", "ignore"], grace_s=0.5
        )
        _wait_for_log(stubborn, "started")
    assert stubborn.returncode == -signal.SIGKILL


def test_two_processes_cannot_share_a_name(tmp_path: Path) -> None:
    with Harness(tmp_path) as run:
        run.start("a", [sys.executable, "-c", "pass"])
        with pytest.raises(HarnessError, match="already started"):
            run.start("a", [sys.executable, "-c", "pass"])


def test_wait_until_returns_the_first_truthy_value() -> None:
    values: Iterator[dict[str, list[str]] | None] = iter([None, {}, {"queues": []}])
    assert harness.wait_until(lambda: next(values), what="x", timeout_s=30, interval_s=0.01) == {"queues": []}


def test_wait_until_fails_with_the_last_state_seen() -> None:
    with pytest.raises(HarnessError, match=r"caller queued: not within 0.2 s; last seen: \{'queues': \[\]\}"):
        harness.wait_until(
            lambda: None,
            what="caller queued",
            timeout_s=0.2,
            interval_s=0.05,
            describe=lambda: {"queues": []},
        )


def test_wait_until_fails_at_once_when_a_watched_process_died(tmp_path: Path) -> None:
    with Harness(tmp_path) as run:
        dead = run.start("engine", [sys.executable, "-c", "print('configuration error: no secret'); exit(2)"])
        dead.popen.wait()
        with pytest.raises(
            HarnessError, match=r"engine exited with 2; its log:\nconfiguration error: no secret"
        ):
            harness.wait_until(lambda: None, what="never", timeout_s=600, watch=[dead])


# --- Asterisk (a stand-in binary) ------------------------------------------------------------------

FAKE_ASTERISK = """#!{python}
import pathlib, sys, time
args = sys.argv[1:]
conf = pathlib.Path(args[args.index("-C") + 1])
marker = conf.parent / "booted"
if "-rx" in args:
    assert args[args.index("-rx") + 1] == "core waitfullybooted"
    sys.exit(0 if marker.exists() else 1)
if "broken" in conf.read_text():
    print("ERROR: cannot load pjsip.conf", flush=True)
    sys.exit(1)
print("Asterisk starting", args, flush=True)
time.sleep(1.0)
marker.write_text("yes")
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def fake_asterisk(tmp_path: Path) -> Path:
    binary = tmp_path / "asterisk"
    binary.write_text(FAKE_ASTERISK.format(python=sys.executable), encoding="utf-8")
    binary.chmod(0o755)
    return binary


def test_start_asterisk_returns_once_fully_booted(tmp_path: Path, fake_asterisk: Path) -> None:
    conf = tmp_path / "conf" / "asterisk.conf"
    conf.parent.mkdir()
    conf.write_text("[directories]\n", encoding="utf-8")
    with Harness(tmp_path / "run") as run:
        process = harness.start_asterisk(run, fake_asterisk, conf)
        assert (conf.parent / "booted").exists()
        assert process.alive
        assert f"'-C', '{conf}', '-f'" in process.log_tail()
    assert not process.alive


def test_start_asterisk_reports_a_boot_failure_with_its_log(tmp_path: Path, fake_asterisk: Path) -> None:
    conf = tmp_path / "asterisk.conf"
    conf.write_text("broken\n", encoding="utf-8")
    (tmp_path / "var" / "log").mkdir(parents=True)
    (tmp_path / "var" / "log" / "messages.log").write_text("WARNING[42] res_pjsip.c: no transport\n")
    with (
        pytest.raises(HarnessError, match=r"cannot load pjsip\.conf") as failure,
        Harness(tmp_path / "run") as run,
    ):
        harness.start_asterisk(run, fake_asterisk, conf)
    assert "WARNING[42] res_pjsip.c: no transport" in "\n".join(failure.value.__notes__)


def test_skip_reason(tmp_path: Path, fake_asterisk: Path) -> None:
    assert harness.skip_reason({}) == harness.NO_ASTERISK
    assert harness.skip_reason({"ASTERISK_BIN": str(tmp_path / "none")}) == (
        f"ASTERISK_BIN={tmp_path / 'none'} is not an executable file"
    )
    assert harness.skip_reason({"ASTERISK_BIN": str(fake_asterisk)}) is None
    assert harness.asterisk_binary({"ASTERISK_BIN": str(fake_asterisk)}) == fake_asterisk


FAKE_GUICHET = """#!{python}
import json, pathlib, sys
args = sys.argv[1:]
pathlib.Path({record!r}).write_text(json.dumps(args))
if "broken" in args[args.index("--config") + 1]:
    print("guichet asterisk-config: [agents.x] bad", file=sys.stderr)
    sys.exit(1)
out = pathlib.Path(args[args.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
(out / "asterisk.conf").write_text("[directories]\\n")
"""


def test_render_asterisk_config_passes_the_runs_ports(tmp_path: Path) -> None:
    record = tmp_path / "argv.json"
    python = tmp_path / "python"
    python.write_text(FAKE_GUICHET.format(python=sys.executable, record=str(record)), encoding="utf-8")
    python.chmod(0o755)
    ports = Ports(sip=5160, ami=5138, agi=4673, http=8180)
    conf = harness.render_asterisk_config(
        tmp_path / "out", tmp_path / "guichet.toml", ports, environ=dict(os.environ), python=str(python)
    )
    assert conf == tmp_path / "out" / "asterisk.conf"
    args = json.loads(record.read_text())
    assert args[:2] == ["-m", "guichet.cli"]
    options = dict(zip(args[3::2], args[4::2], strict=False))
    assert options == {
        "--config": str(tmp_path / "guichet.toml"),
        "--out": str(tmp_path / "out"),
        "--sip-port": "5160",
        "--ami-port": "5138",
        "--agi-url": "agi://127.0.0.1:4673",
    }
    install = harness.AsteriskInstall.of(Path("/opt/ast22/sbin/asterisk"), {})
    harness.render_asterisk_config(
        tmp_path / "out2",
        tmp_path / "g.toml",
        ports,
        environ={},
        install=install,
        sounds=True,
        python=str(python),
    )
    args = json.loads(record.read_text())
    assert args[-5:] == [
        "--modules-dir",
        "/opt/ast22/lib/asterisk/modules",
        "--data-dir",
        "/opt/ast22/var/lib/asterisk",
        "--sounds",
    ]


def test_a_failed_rendering_says_why(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text(
        FAKE_GUICHET.format(python=sys.executable, record=str(tmp_path / "a.json")), encoding="utf-8"
    )
    python.chmod(0o755)
    with pytest.raises(HarnessError, match=r"failed \(1\):\nguichet asterisk-config: \[agents.x\] bad"):
        harness.render_asterisk_config(
            tmp_path / "out", tmp_path / "broken.toml", Ports.pick(), environ={}, python=str(python)
        )


def test_the_real_rendering_uses_the_runs_ports_and_secrets(tmp_path: Path) -> None:
    ports = Ports.pick()
    agent = AgentAccount("agent1", ("apa", "accueil"), "mot-de-passe-sip")
    files = harness.write_engine_files(tmp_path / "engine", ports, [agent])
    conf = harness.render_asterisk_config(tmp_path / "asterisk", files.config, ports, environ=files.environ)
    folder = conf.parent
    assert f"astetcdir => {folder}" in conf.read_text()
    assert f"bind = 127.0.0.1:{ports.sip}" in (folder / "pjsip.conf").read_text()
    assert "[agent1]" in (folder / "pjsip.conf").read_text()
    assert f"port = {ports.ami}" in (folder / "manager.conf").read_text()
    assert f"AGI(agi://127.0.0.1:{ports.agi}/ivr)" in (folder / "extensions.conf").read_text()
    secret = folder / "secrets" / "pjsip.conf"
    assert "password = mot-de-passe-sip" in secret.read_text()
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    assert files.environ["GUICHET_AMI_SECRET"] in (folder / "secrets" / "manager.conf").read_text()


def test_asterisk_install_folders() -> None:
    debian = harness.AsteriskInstall.of(Path("/usr/sbin/asterisk"), {})
    assert (debian.modules_dir, debian.data_dir) == (
        Path("/usr/lib/asterisk/modules"),
        Path("/var/lib/asterisk"),
    )
    chosen = harness.AsteriskInstall.of(
        Path("/opt/a/sbin/asterisk"), {"ASTERISK_MODULES_DIR": "/m", "ASTERISK_DATA_DIR": "/d"}
    )
    assert (chosen.modules_dir, chosen.data_dir) == (Path("/m"), Path("/d"))


# --- the engine's files ------------------------------------------------------------------------------


def test_engine_files_load_with_the_engines_own_loaders(tmp_path: Path) -> None:
    from desk.auth import load_users

    ports = Ports.pick()
    agents = [
        AgentAccount("agent1", ("apa", "accueil"), "sip-pw-1"),
        AgentAccount("agent-2", ("pmi",), "pw2"),
    ]
    files = harness.write_engine_files(tmp_path, ports, agents, base_environ={"PATH": "/usr/bin"})
    settings = load_settings(files.config)
    assert (settings.agi.port, settings.ami.port, settings.http.port) == (ports.agi, ports.ami, ports.http)
    assert settings.agi.host == settings.ami.host == settings.http.host == "127.0.0.1"
    assert {name: agent.skills for name, agent in settings.agents.items()} == {
        "agent1": ("apa", "accueil"),
        "agent-2": ("pmi",),
    }
    assert settings.sip_secret("agent-2", files.environ).value == "pw2"
    assert settings.ami_secret(files.environ).value == files.environ["GUICHET_AMI_SECRET"]
    assert files.environ["PATH"] == "/usr/bin"
    users = load_users(files.users_file, settings.agents.keys())
    supervisor = users.authenticate(harness.SUPERVISOR, files.supervisor_password)
    assert supervisor is not None
    assert supervisor.role == "supervisor"
    assert users.authenticate(harness.SUPERVISOR, "wrong") is None
    assert files.supervisor_password not in files.config.read_text()
    assert oct(files.users_file.stat().st_mode & 0o777) == "0o600"


def test_the_menus_copy_is_open_at_any_hour_and_on_holidays(tmp_path: Path) -> None:
    menus = harness.open_all_day_menus(tmp_path / "menus")
    assert sorted(p.name for p in menus.glob("*.yaml")) == sorted(
        p.name for p in harness.MENUS.glob("*.yaml")
    )
    original = parse_hours(yaml.safe_load((harness.MENUS / harness.HOURS_FILE).read_text(encoding="utf-8")))
    opened = parse_hours(yaml.safe_load((menus / harness.HOURS_FILE).read_text(encoding="utf-8")))
    assert opened.keys() == original.keys()
    christmas_night = datetime(2026, 12, 25, 3, 0, tzinfo=PARIS)
    sunday_evening = datetime(2026, 11, 29, 23, 59, tzinfo=PARIS)
    for name, schedule in opened.items():
        assert not is_open(original[name], christmas_night)
        assert is_open(schedule, christmas_night), name
        assert is_open(schedule, sunday_evening), name
        assert schedule.label == original[name].label


def test_the_first_menu_key_waits_for_the_prompts_before_the_menu(tmp_path: Path) -> None:
    import wave

    from ivr.menus import PromptNode, load_menus
    from ivr.prompt_names import sound_name
    from ivr.services import SERVICE_QUEUES

    tree = load_menus(harness.MENUS, SERVICE_QUEUES).tree("guichet")
    welcome = tree.node(tree.start)
    assert isinstance(welcome, PromptNode)
    with pytest.raises(HarnessError, match=f"prompt {welcome.name}: cannot read"):
        harness.before_first_menu_ms(harness.MENUS, tmp_path)
    path = tmp_path / f"{sound_name(welcome.prompt)}.wav"
    path.parent.mkdir(parents=True)
    with wave.open(str(path), "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(b"\0\0" * 8000 * 7)  # 7 s
    assert harness.before_first_menu_ms(harness.MENUS, tmp_path) == 7000


# --- the engine's API (a stand-in HTTP server on loopback) ----------------------------------------


class _FakeApi(BaseHTTPRequestHandler):
    password = "motdepasse"

    def _send(self, status: int, body: object, cookie: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/api/session" and body == {"login": "superviseur", "password": self.password}:
            self._send(200, {"login": "superviseur"}, "guichet_session=token; Path=/; HttpOnly")
        else:
            self._send(401, {"error": "bad_credentials", "message": "Identifiant ou mot de passe incorrect."})

    def do_GET(self) -> None:
        if "guichet_session=token" not in self.headers.get("Cookie", ""):
            self._send(401, {"error": "not_logged_in", "message": "Connectez-vous."})
        else:
            self._send(200, {"queues": [{"name": "apa", "waiting": [{"caller_number": "+33612345678"}]}]})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_engine_api_logs_in_then_reads_the_live_snapshot(fake_api: str) -> None:
    api = EngineApi(fake_api)
    assert api.answers()
    with pytest.raises(HarnessError, match="GET /api/live: HTTP 401"):
        api.live()
    with pytest.raises(HarnessError, match="POST /api/session: HTTP 401"):
        api.login("superviseur", "faux")
    api.login("superviseur", "motdepasse")
    live = api.live()
    assert harness.find_caller(live, "612345678") == ("apa", {"caller_number": "+33612345678"})
    assert harness.find_caller(live, "699999999") is None


FAKE_ENGINE = """#!{python}
# Stands in for `python -m guichet.cli serve --config FILE`: the API of guichet serve on [http] port,
# checking the supervisor's password against the users file with the engine's own hash.
import json, sys, tomllib
from http.server import BaseHTTPRequestHandler, HTTPServer
from desk.auth import verify_password
args = sys.argv[1:]
assert args[:3] == ["-m", "guichet.cli", "serve"], args
config = tomllib.load(open(args[args.index("--config") + 1], "rb"))
if "GUICHET_AMI_SECRET" not in __import__("os").environ:
    print("guichet: configuration error: no AMI secret", flush=True)
    sys.exit(2)
users = tomllib.load(open(config["http"]["users_file"], "rb"))["users"]
class Api(BaseHTTPRequestHandler):
    def _send(self, status, body, cookie=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = users.get(body["login"], {{}})
        if user and verify_password(body["password"], user["password_hash"]):
            self._send(200, {{"login": body["login"]}}, "s=ok; Path=/")
        else:
            self._send(401, {{"error": "bad_credentials"}})
    def do_GET(self):
        logged = "s=ok" in self.headers.get("Cookie", "")
        self._send(200 if logged else 401, {{"queues": [], "agents": [], "calls": []}})
print("serving", flush=True)
HTTPServer(("127.0.0.1", config["http"]["port"]), Api).serve_forever()
"""


def _fake_engine(tmp_path: Path) -> str:
    python = tmp_path / "engine-python"
    python.write_text(FAKE_ENGINE.format(python=sys.executable), encoding="utf-8")
    python.chmod(0o755)
    return str(python)


def test_start_engine_waits_for_its_api_and_logs_in_as_the_supervisor(tmp_path: Path) -> None:
    files = harness.write_engine_files(tmp_path / "engine", Ports.pick(), [])
    with Harness(tmp_path / "run") as run:
        process, api = harness.start_engine(run, files, python=_fake_engine(tmp_path))
        assert api.live() == {"queues": [], "agents": [], "calls": []}  # the stand-in wants the session
        assert process.alive
    assert not process.alive


def test_start_engine_reports_an_engine_that_stops(tmp_path: Path) -> None:
    files = harness.write_engine_files(tmp_path / "engine", Ports.pick(), [], base_environ={})
    environ = {k: v for k, v in files.environ.items() if k != "GUICHET_AMI_SECRET"}
    broken = harness.EngineFiles(files.config, files.users_file, files.menus_dir, environ, "x")
    with Harness(tmp_path / "run") as run, pytest.raises(HarnessError, match="no AMI secret"):
        harness.start_engine(run, broken, python=_fake_engine(tmp_path))


def test_queue_counters_are_read_or_their_absence_is_explained() -> None:
    live = {"queues": [{"name": "apa", "counters": {"abandoned": 2}}, {"name": "pmi", "waiting": []}]}
    assert harness.queue_counters(live, "apa") == {"abandoned": 2}
    with pytest.raises(HarnessError, match="must carry the live model's QueueCounters"):
        harness.queue_counters(live, "pmi")
    with pytest.raises(HarnessError, match="no queue rsa"):
        harness.queue_counters(live, "rsa")


def test_each_citizen_gets_its_own_folder_of_pcaps(tmp_path: Path) -> None:
    with Harness(tmp_path) as run:
        first = run.sipp_folder("citizen-1", sipp.CitizenKeys(menu="11"))
        second = run.sipp_folder("citizen-2", sipp.CitizenKeys(menu="0", queued="11"))
    assert (first / "citizen.xml").is_file()
    assert dtmf.decode_events([rtp for _, rtp in _rtp_packets(first / sipp.MENU_PCAP)]) == "11"
    assert dtmf.decode_events([rtp for _, rtp in _rtp_packets(second / sipp.MENU_PCAP)]) == "0"
    assert dtmf.decode_events([rtp for _, rtp in _rtp_packets(second / sipp.QUEUED_PCAP)]) == "11"
    assert _rtp_packets(first / sipp.QUEUED_PCAP) == []


def test_kill_is_a_crash(tmp_path: Path, stand_in: Path) -> None:
    order = tmp_path / "order.txt"
    with Harness(tmp_path / "run") as run:
        engine = run.start("engine", [sys.executable, str(stand_in), "engine", str(order), "polite"])
        _wait_for_log(engine, "started")
        assert engine.kill() == -signal.SIGKILL
    assert not order.exists()  # it had no chance to run its SIGTERM handler


def test_engine_api_does_not_answer_when_nothing_listens() -> None:
    assert not EngineApi(f"http://127.0.0.1:{harness.free_tcp_port()}", timeout_s=2).answers()


def test_snapshot_readers() -> None:
    live: dict[str, Any] = {
        "queues": [{"name": "apa", "waiting": [{"caller_number": "+33611111111", "priority": 20}]}],
        "agents": [{"id": "agent1", "interface": "PJSIP/agent1", "state": "in_call"}],
        "calls": [{"caller_number": "+33622222222", "agent": "PJSIP/agent1", "citizen_id": "c-1"}],
    }
    assert harness.waiting_callers(live, "apa") == [{"caller_number": "+33611111111", "priority": 20}]
    assert harness.waiting_callers(live, "pmi") == []
    assert harness.find_call(live, "622222222") == live["calls"][0]
    assert harness.find_call(live, "611111111") is None
    assert harness.find_agent(live, "agent1") == live["agents"][0]
    assert harness.find_agent(live, "agent2") is None


def test_ports_are_free_and_distinct() -> None:
    ports = Ports.pick()
    assert len({ports.sip, ports.ami, ports.agi, ports.http}) == 4
    first = harness.free_udp_ports(4)
    assert 1024 <= first <= 65535 - 3
    assert tomllib.loads(harness.engine_toml(ports, [], Path("/u"), Path("/m")))["http"]["port"] == ports.http
