"""The SIP-level test harness: a real Asterisk 22, ``guichet serve`` against it, SIPp softphones.

A :class:`Harness` owns a run folder and every process it starts; leaving its ``with`` block stops
them in reverse order (SIGTERM, then SIGKILL after a grace period), whether the test passed or
failed, and a failing test gets the logs of every process as a note of its exception.  On top of it:

* :func:`render_asterisk_config` runs ``guichet asterisk-config`` into the run folder (loopback
  ports of this run), and :func:`start_asterisk` boots ``$ASTERISK_BIN -C <dir>/asterisk.conf -f``
  and waits until ``core waitfullybooted`` answers;
* :func:`write_engine_files` writes the engine's side: ``guichet.toml`` (the ports of this run, the
  agents), the users file with a supervisor, and a copy of the voice menus whose schedules are open
  day and night (a test must not depend on the hour); :func:`start_engine` runs ``guichet serve``
  and waits until its HTTP API answers;
* :class:`EngineApi` logs in to the engine's JSON API and reads ``GET /api/live``;
  :func:`wait_until` polls any condition with a deadline, failing early when a process died.

No Asterisk can be installed on Debian 12 here: the tests that need one read its path from
``ASTERISK_BIN`` (:func:`asterisk_binary`) and are skipped with :data:`NO_ASTERISK` otherwise.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import wave
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import yaml

from desk.auth import SESSION_KEY_ENV, hash_password
from guichet.config import AmiSettings, sip_secret_variable
from ivr.menus import HoursNode, PromptNode, load_menus
from ivr.prompt_names import SOUND_EXTENSION, sound_name
from ivr.services import SERVICE_QUEUES
from softphone_test import sipp

LOOPBACK: Final = "127.0.0.1"
REPO: Final = Path(__file__).resolve().parents[1]
MENUS: Final = REPO / "dialplans"
HOURS_FILE: Final = Path("settings") / "hours.yaml"
NO_ASTERISK: Final = "ASTERISK_BIN is not set: no Asterisk 22 on this machine"
ASTERISK_BIN_ENV: Final = "ASTERISK_BIN"
AMI_SECRET_ENV: Final = AmiSettings().secret_env
STOP_GRACE_S: Final = 10.0
BOOT_TIMEOUT_S: Final = 60.0
LOG_TAIL_LINES: Final = 80
SUPERVISOR: Final = "superviseur"
DAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

T = TypeVar("T")


class HarnessError(RuntimeError):
    """Something the harness started failed, or a condition did not hold in time."""


# --- ports ------------------------------------------------------------------------------------


def free_tcp_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def free_udp_ports(count: int = 4) -> int:
    """The first of ``count`` consecutive UDP ports free on loopback (SIPp binds its media port and
    the one two above it)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((LOOPBACK, 0))
            first: int = probe.getsockname()[1]
        if first + count > 65535:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    sock.bind((LOOPBACK, port))
            except OSError:
                continue
            return first
    raise HarnessError(f"no {count} consecutive free UDP ports on {LOOPBACK}")


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one run."""

    sip: int
    ami: int
    agi: int
    http: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(sip=free_udp_ports(1), ami=free_tcp_port(), agi=free_tcp_port(), http=free_tcp_port())


# --- processes ---------------------------------------------------------------------------------


@dataclass
class ManagedProcess:
    """A process the harness started, with its output in a log file."""

    name: str
    argv: Sequence[str]
    cwd: Path
    log_path: Path
    popen: subprocess.Popen[bytes]
    returncode: int | None = None

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM, then SIGKILL after ``grace_s``; the exit code (idempotent)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.returncode = self.popen.returncode
        return self.returncode

    def kill(self) -> int:
        """SIGKILL now (a crash, as far as the others can tell); the exit code."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.returncode = self.popen.wait()
        return self.returncode

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if not self.alive:
            raise HarnessError(
                f"{self.name} exited with {self.popen.returncode}; its log:\n{self.log_tail()}"
            )


class Harness:
    """Owns a run folder and the processes started in it; stops them all, last started first."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.processes: list[ManagedProcess] = []
        self.log_folders: list[Path] = []  # their files' tails go into the report too
        self._stack = contextlib.ExitStack()
        run_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Harness:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._stack.close()  # stops the processes in reverse order
        finally:
            if exc is not None:
                exc.add_note(self.report())

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        grace_s: float = STOP_GRACE_S,
    ) -> ManagedProcess:
        """Start ``argv``; it is stopped when the harness closes (or earlier with ``stop``)."""
        if any(process.name == name for process in self.processes):
            raise HarnessError(f"a process named {name!r} was already started")
        log_path = self.run_dir / f"{name}.log"
        folder = cwd or self.run_dir
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                list(argv), cwd=folder, env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        process = ManagedProcess(name, list(argv), folder, log_path, popen)
        self.processes.append(process)
        self._stack.callback(process.stop, grace_s)
        return process

    def sipp_folder(self, name: str, keys: sipp.CitizenKeys | None = None) -> Path:
        """A folder of this run with the scenarios (and a citizen's key pcaps): one per citizen, as the
        pcaps' names are fixed."""
        folder = sipp.prepare_run_dir(self.run_dir / name)
        if keys is not None:
            keys.write(folder)
        return folder

    def start_sipp(self, spec: sipp.SippSpec, folder: Path | None = None) -> ManagedProcess:
        """Start a SIPp process in ``folder`` (default: the run folder, prepared with sipp_folder or
        prepare_run_dir); its traces are written there."""
        folder = folder or self.run_dir
        return self.start(spec.name, spec.prepare(folder), cwd=folder)

    def finish_sipp(self, spec: sipp.SippSpec, process: ManagedProcess) -> sipp.SippResult:
        """Wait for a SIPp process to end by itself (its -timeout bounds it); its result."""
        try:
            returncode = process.popen.wait(timeout=spec.timeout_s + sipp.SIPP_EXIT_MARGIN_S)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{spec.name}: SIPp did not stop after its -timeout") from None
        return sipp.SippResult.collect(spec, process.cwd, returncode)

    def report(self) -> str:
        """Every process's command, state and log tail (for a failing test's report)."""
        parts = [f"run folder: {self.run_dir}"]
        for process in self.processes:
            state = "running" if process.alive else f"exit {process.popen.returncode}"
            parts.append(f"--- {process.name} ({state}): {' '.join(process.argv)}\n{process.log_tail()}")
        for folder in self.log_folders:
            for path in sorted(folder.glob("*")):
                if path.is_file():
                    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
                    parts.append(f"--- {path}\n" + "\n".join(lines))
        return "\n".join(parts)


def wait_until(
    condition: Callable[[], T | None],
    *,
    what: str,
    timeout_s: float,
    interval_s: float = 0.25,
    watch: Sequence[ManagedProcess] = (),
    describe: Callable[[], object] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    Fails at once when a watched process has exited, and after ``timeout_s`` with ``describe()``
    (the last state seen) in the message.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        for process in watch:
            process.check_alive()
        if time.monotonic() >= deadline:
            seen = f"; last seen: {describe()!r}" if describe is not None else ""
            raise HarnessError(f"{what}: not within {timeout_s} s{seen}")
        time.sleep(interval_s)


# --- Asterisk ----------------------------------------------------------------------------------


def asterisk_binary(environ: Mapping[str, str] | None = None) -> Path | None:
    """The Asterisk 22 binary named by ``ASTERISK_BIN``, when it is set and executable."""
    environ = os.environ if environ is None else environ
    value = environ.get(ASTERISK_BIN_ENV, "")
    if not value:
        return None
    path = Path(value)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def skip_reason(environ: Mapping[str, str] | None = None) -> str | None:
    """Why the Asterisk suite cannot run here (None: it can)."""
    environ = os.environ if environ is None else environ
    if not environ.get(ASTERISK_BIN_ENV):
        return NO_ASTERISK
    if asterisk_binary(environ) is None:
        return f"ASTERISK_BIN={environ[ASTERISK_BIN_ENV]} is not an executable file"
    if shutil.which(sipp.SIPP) is None:
        return "sipp is not installed (Debian package sip-tester)"
    return None


def guichet_command(python: str = sys.executable) -> list[str]:
    return [python, "-m", "guichet.cli"]


@dataclass(frozen=True)
class AsteriskInstall:
    """Where the Asterisk 22 under test keeps its modules and data (sounds, documentation, music)."""

    binary: Path
    modules_dir: Path
    data_dir: Path

    @classmethod
    def of(cls, binary: Path, environ: Mapping[str, str] | None = None) -> AsteriskInstall:
        """From ``ASTERISK_MODULES_DIR`` / ``ASTERISK_DATA_DIR``, else beside ``<prefix>/sbin/asterisk``:
        ``<prefix>/lib/asterisk/modules`` and ``<prefix>/var/lib/asterisk`` (``/var/lib/asterisk`` for
        the ``/usr`` prefix)."""
        environ = os.environ if environ is None else environ
        prefix = binary.parent.parent
        var = Path("/var") if prefix == Path("/usr") else prefix / "var"
        modules = environ.get("ASTERISK_MODULES_DIR") or str(prefix / "lib" / "asterisk" / "modules")
        data = environ.get("ASTERISK_DATA_DIR") or str(var / "lib" / "asterisk")
        return cls(binary, Path(modules), Path(data))


def render_asterisk_config(
    out_dir: Path,
    config: Path,
    ports: Ports,
    *,
    environ: Mapping[str, str],
    install: AsteriskInstall | None = None,
    sounds: bool = False,
    python: str = sys.executable,
) -> Path:
    """``guichet asterisk-config`` for this run's ports into ``out_dir``; the asterisk.conf path.

    ``environ`` carries the secrets (AMI, agents' SIP passwords); ``sounds`` also builds the prompts.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        *guichet_command(python), "asterisk-config", "--config", str(config), "--out", str(out_dir),
        "--sip-port", str(ports.sip), "--ami-port", str(ports.ami),
        "--agi-url", f"agi://{LOOPBACK}:{ports.agi}",
    ]  # fmt: skip
    if install is not None:
        argv += ["--modules-dir", str(install.modules_dir), "--data-dir", str(install.data_dir)]
    if sounds:
        argv.append("--sounds")
    done = subprocess.run(argv, env=dict(environ), capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0 or "not rendered" in done.stderr:
        raise HarnessError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    conf = out_dir / "asterisk.conf"
    if not conf.is_file():
        raise HarnessError(f"guichet asterisk-config wrote no {conf}")
    return conf


def asterisk_cli(binary: Path, conf: Path, command: str, *, timeout_s: float = 30.0) -> tuple[int, str]:
    """Run one CLI command on the running Asterisk of ``conf``: (exit code, output)."""
    try:
        done = subprocess.run(
            [str(binary), "-C", str(conf), "-rx", command],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return 124, f"{command}: no answer within {timeout_s} s"
    return done.returncode, done.stdout + done.stderr


def start_asterisk(
    harness: Harness, binary: Path, conf: Path, *, boot_timeout_s: float = BOOT_TIMEOUT_S
) -> ManagedProcess:
    """Boot Asterisk in the foreground on ``conf``; return once ``core waitfullybooted`` answers.

    Its log folder (``var/log`` of the rendered folder) goes into the harness's report.
    """
    harness.log_folders.append(conf.parent / "var" / "log")
    process = harness.start("asterisk", [str(binary), "-C", str(conf), "-f", "-n", "-vvv"], grace_s=20.0)

    def booted() -> bool:
        code, _ = asterisk_cli(binary, conf, "core waitfullybooted", timeout_s=10.0)
        return code == 0

    wait_until(
        booted, what="Asterisk fully booted", timeout_s=boot_timeout_s, interval_s=0.5, watch=[process]
    )
    return process


# --- the engine ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentAccount:
    """An agent of the run: its id (PJSIP endpoint), skills (queues) and SIP password."""

    agent_id: str
    skills: tuple[str, ...]
    sip_password: str

    @property
    def secret_variable(self) -> str:
        return sip_secret_variable(self.agent_id)


@dataclass(frozen=True)
class EngineFiles:
    """What :func:`write_engine_files` wrote, and the environment that goes with it."""

    config: Path
    users_file: Path
    menus_dir: Path
    environ: Mapping[str, str] = field(repr=False)
    supervisor_password: str = field(repr=False)


def open_all_day_menus(target: Path, source: Path = MENUS) -> Path:
    """A copy of the voice menus whose every schedule is open day and night, holidays included."""
    shutil.copytree(source, target)
    hours = yaml.safe_load((source / HOURS_FILE).read_text(encoding="utf-8"))
    if not isinstance(hours, dict):
        raise HarnessError(f"{source / HOURS_FILE}: expected a mapping of schedules")
    opened: dict[str, Any] = {}
    for name, schedule in hours.items():
        kept = {k: v for k, v in schedule.items() if k not in (*DAYS, "closures", "openings")}
        opened[name] = {**kept, **{day: ["00:00-24:00"] for day in DAYS}, "public_holidays": "open"}
    (target / HOURS_FILE).write_text(yaml.safe_dump(opened, allow_unicode=True), encoding="utf-8")
    return target


def engine_toml(ports: Ports, agents: Sequence[AgentAccount], users_file: Path, menus_dir: Path) -> str:
    """guichet.toml for this run: loopback ports, the menus copy, the users file, the agents."""
    lines = [
        'loop = "asyncio"',
        "[agi]", f'host = "{LOOPBACK}"', f"port = {ports.agi}",
        "[ami]", f'host = "{LOOPBACK}"', f"port = {ports.ami}",
        f'secret_env = "{AMI_SECRET_ENV}"',
        "[ivr]", f"menus_dir = {json.dumps(str(menus_dir))}",
        "[http]", f'host = "{LOOPBACK}"', f"port = {ports.http}",
        f"users_file = {json.dumps(str(users_file))}",
    ]  # fmt: skip
    for agent in agents:
        lines += [f"[agents.{agent.agent_id}]", f"skills = {json.dumps(list(agent.skills))}"]
    return "\n".join(lines) + "\n"


def write_engine_files(
    folder: Path,
    ports: Ports,
    agents: Sequence[AgentAccount],
    *,
    base_environ: Mapping[str, str] | None = None,
) -> EngineFiles:
    """guichet.toml, the users file (one supervisor), the menus copy, and the secrets' environment."""
    folder.mkdir(parents=True, exist_ok=True)
    menus_dir = open_all_day_menus(folder / "menus")
    supervisor_password = secrets.token_urlsafe(12)
    users_file = folder / "users.toml"
    password_hash = hash_password(supervisor_password)
    users_file.write_text(
        f'[users.{SUPERVISOR}]\nrole = "supervisor"\npassword_hash = "{password_hash}"\n', encoding="utf-8"
    )
    users_file.chmod(0o600)
    config = folder / "guichet.toml"
    config.write_text(engine_toml(ports, agents, users_file, menus_dir), encoding="utf-8")
    environ = dict(os.environ if base_environ is None else base_environ)
    environ[AMI_SECRET_ENV] = secrets.token_urlsafe(16)
    environ[SESSION_KEY_ENV] = secrets.token_urlsafe(32)
    for agent in agents:
        environ[agent.secret_variable] = agent.sip_password
    return EngineFiles(config, users_file, menus_dir, environ, supervisor_password)


def before_first_menu_ms(menus_dir: Path, sounds_dir: Path, tree: str = "guichet") -> int:
    """How long the prompts said before the first menu of ``tree`` last (the schedules are open).

    Keys pressed then are lost (STREAM FILE without escape digits): the first menu key must come
    later.  Reads the built prompts (``guichet asterisk-config --sounds``) under ``sounds_dir``.
    """
    menus = load_menus(menus_dir, SERVICE_QUEUES).tree(tree)
    total_ms = 0
    node = menus.node(menus.start)
    for _ in range(len(menus.nodes)):
        if isinstance(node, HoursNode):
            node = menus.node(node.open)
        elif isinstance(node, PromptNode):
            path = sounds_dir / f"{sound_name(node.prompt)}{SOUND_EXTENSION}"
            try:
                with wave.open(str(path)) as sound:
                    total_ms += sound.getnframes() * 1000 // sound.getframerate()
            except (OSError, wave.Error) as exc:
                raise HarnessError(f"prompt {node.name}: cannot read {path}: {exc}") from exc
            node = menus.node(node.next)
        else:
            return total_ms
    raise HarnessError(f"menu tree {tree}: no menu reached from {menus.start}")


class EngineApi:
    """The engine's JSON API as a supervisor: ``POST /api/session`` once, then GETs with the cookie."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")
            raise HarnessError(f"{method} {path}: HTTP {exc.code}: {detail}") from None

    def login(self, login: str, password: str) -> None:
        self.request("POST", "/api/session", {"login": login, "password": password})

    def live(self) -> dict[str, Any]:
        snapshot = self.request("GET", "/api/live")
        if not isinstance(snapshot, dict):
            raise HarnessError(f"GET /api/live: expected an object, got {snapshot!r}")
        return snapshot

    def agent_action(self, agent_id: str, action: str, reason: str | None = None) -> Any:
        body = {"reason": reason} if reason is not None else {}
        return self.request("POST", f"/api/agents/{agent_id}/{action}", body)

    def answers(self) -> bool:
        """True once the HTTP server accepts connections (any HTTP status counts)."""
        try:
            self.request("GET", "/api/session")
        except HarnessError:
            return True
        except OSError:
            return False
        return True


def start_engine(
    harness: Harness,
    files: EngineFiles,
    *,
    name: str = "guichet-serve",
    python: str = sys.executable,
    timeout_s: float = 60.0,
) -> tuple[ManagedProcess, EngineApi]:
    """``guichet serve`` on the run's config; once its API answers, a supervisor session on it."""
    argv = [*guichet_command(python), "serve", "--config", str(files.config)]
    process = harness.start(name, argv, env=files.environ, cwd=REPO)
    api = EngineApi(f"http://{LOOPBACK}:{_http_port(files.config)}")
    wait_until(api.answers, what="guichet serve's HTTP API", timeout_s=timeout_s, watch=[process])
    api.login(SUPERVISOR, files.supervisor_password)
    return process, api


def _http_port(config: Path) -> int:
    port = tomllib.loads(config.read_text(encoding="utf-8"))["http"]["port"]
    return int(port)


# --- reading the live snapshot ------------------------------------------------------------------


def waiting_callers(live: Mapping[str, Any], queue: str) -> list[dict[str, Any]]:
    """The callers waiting in ``queue`` in the snapshot (served first, first)."""
    for entry in live.get("queues", ()):
        if entry.get("name") == queue:
            return list(entry.get("waiting", ()))
    return []


def find_caller(live: Mapping[str, Any], number_suffix: str) -> tuple[str, dict[str, Any]] | None:
    """(queue, caller) of the waiting caller whose number ends with ``number_suffix``."""
    for entry in live.get("queues", ()):
        for caller in entry.get("waiting", ()):
            if str(caller.get("caller_number", "")).endswith(number_suffix):
                return entry.get("name", ""), caller
    return None


def find_call(live: Mapping[str, Any], number_suffix: str) -> dict[str, Any] | None:
    """The call in progress (caller connected to an agent) of the caller ``number_suffix``."""
    for call in live.get("calls", ()):
        if str(call.get("caller_number", "")).endswith(number_suffix):
            return dict(call)
    return None


def queue_counters(live: Mapping[str, Any], queue: str) -> dict[str, Any]:
    """The live model's counters of ``queue`` (offered, answered, abandoned...) in the snapshot."""
    for entry in live.get("queues", ()):
        if entry.get("name") == queue:
            counters = entry.get("counters")
            if not isinstance(counters, dict):
                raise HarnessError(
                    f"GET /api/live shows no counters for queue {queue}: the API must carry the live "
                    "model's QueueCounters as queues[].counters"
                )
            return dict(counters)
    raise HarnessError(f"GET /api/live has no queue {queue}")


def find_agent(live: Mapping[str, Any], agent_id: str) -> dict[str, Any] | None:
    for agent in live.get("agents", ()):
        if agent.get("id") == agent_id or agent.get("interface") == f"PJSIP/{agent_id}":
            return dict(agent)
    return None
