"""Running SIPp: the scenarios of this folder, their command lines, their outcome and statistics.

A :class:`SippSpec` is one SIPp process: a scenario of ``scenarios/`` (the citizen, the agent's
softphone) or ``peers/`` (the SIPp stand-ins for Asterisk used in CI), its ports, its ``-key`` keywords
and ``-set`` variables, and an optional injection file.  :func:`prepare_run_dir` copies the scenarios
into a run folder, where the citizen's DTMF pcaps are written (``pcap/menu.pcap``, ``pcap/queued.pcap``:
SIPp looks for a relative pcap next to the scenario), and where every SIPp writes its statistics,
errors, messages and logs (``<name>_*.``), which :class:`SippResult` reads back.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from softphone_test.dtmf import RtpCursor, duration_ms, write_digits

HERE: Final = Path(__file__).resolve().parent
SCENARIOS: Final = HERE / "scenarios"
PEERS: Final = HERE / "peers"
SIPP: Final = "sipp"  # Debian's sip-tester
LOOPBACK: Final = "127.0.0.1"
MENU_PCAP: Final = "pcap/menu.pcap"
QUEUED_PCAP: Final = "pcap/queued.pcap"
ENDS: Final = ("bye", "wait", "callback")
# SIPp's exit codes (sipp(1)): 0 every call succeeded, 1 at least one failed, 97 stopped by an internal
# command, 99 ended with no call processed, 255 fatal error.
EXIT_OK: Final = 0
SIPP_EXIT_MARGIN_S: Final = 30.0


class SippError(RuntimeError):
    """A SIPp process cannot be prepared or did not end as expected."""


def prepare_run_dir(run_dir: Path) -> Path:
    """Copy every scenario of ``scenarios/`` and ``peers/`` into ``run_dir``; return it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (SCENARIOS, PEERS):
        for scenario in folder.glob("*.xml"):
            shutil.copyfile(scenario, run_dir / scenario.name)
    return run_dir


@dataclass(frozen=True)
class CitizenKeys:
    """The keys a citizen presses: in the voice menu, then (optionally) while queued.

    ``write`` puts them in the run folder's pcaps, numbered as one RTP stream (SIPp loads both pcaps
    of the scenario, so the queued one is written even without a key).
    """

    menu: str
    queued: str = ""
    gap_ms: int = 400

    def write(self, run_dir: Path) -> None:
        if not self.menu:
            raise SippError("the citizen scenario presses at least one menu key")
        cursor = write_digits(run_dir / MENU_PCAP, self.menu, gap_ms=self.gap_ms, cursor=RtpCursor())
        write_digits(run_dir / QUEUED_PCAP, self.queued, gap_ms=self.gap_ms, cursor=cursor)

    @property
    def menu_ms(self) -> int:
        return duration_ms(self.menu, self.gap_ms)


@dataclass(frozen=True)
class SippSpec:
    """One SIPp process of a test."""

    name: str  # names its trace files in the run folder
    scenario: str  # file name in the run folder (see prepare_run_dir)
    local_port: int
    media_port: int
    remote: str | None = None  # host:port for a UAC; None for a UAS
    service: str | None = None  # -s: the user part of the Request-URI
    calls: int = 1
    keys: Mapping[str, str] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    injection: Sequence[str] = ()  # lines of the -inf file (first one: SEQUENTIAL)
    auto_answer: bool = False  # -aa: 200 to OPTIONS/INFO/NOTIFY/UPDATE (a qualifying registrar)
    ooc_scenario: str | None = None  # -oocsf: runs the requests of dialogs this process did not start
    timeout_s: float = 120.0  # SIPp stops, failed, after this

    def argv(self, run_dir: Path) -> list[str]:
        args = [SIPP, "-sf", str(run_dir / self.scenario)]
        if self.remote is not None:
            args.append(self.remote)
        args += ["-i", LOOPBACK, "-mi", LOOPBACK, "-p", str(self.local_port), "-mp", str(self.media_port)]
        args += ["-m", str(self.calls), "-nostdin", "-timeout", f"{int(self.timeout_s)}s", "-timeout_error"]
        if self.service is not None:
            args += ["-s", self.service]
        for key, value in self.keys.items():
            args += ["-key", key, value]
        for variable, value in self.variables.items():
            args += ["-set", variable, value]
        if self.injection:
            args += ["-inf", str(self.injection_file(run_dir))]
        if self.auto_answer:
            args.append("-aa")
        if self.ooc_scenario is not None:
            args += ["-oocsf", str(run_dir / self.ooc_scenario)]
        base = run_dir / self.name
        args += [
            "-trace_stat",
            "-stf",
            f"{base}_stats.csv",
            "-trace_err",
            "-error_file",
            f"{base}_errors.log",
        ]
        args += ["-trace_msg", "-message_file", f"{base}_messages.log", "-trace_logs", "-log_file"]
        args.append(f"{base}_logs.log")
        return args

    def injection_file(self, run_dir: Path) -> Path:
        return run_dir / f"{self.name}.csv"

    def prepare(self, run_dir: Path) -> list[str]:
        """Write the injection file (if any); the command line to run."""
        if not (run_dir / self.scenario).is_file():
            raise SippError(f"{self.name}: no scenario {self.scenario} in {run_dir} (prepare_run_dir)")
        if self.injection:
            self.injection_file(run_dir).write_text("\n".join(self.injection) + "\n", encoding="utf-8")
        return self.argv(run_dir)


def citizen(
    name: str,
    *,
    local_port: int,
    media_port: int,
    remote: str,
    number: str,
    caller: str,
    end: str,
    menu_delay_ms: int,
    stay_ms: int = 0,
    timeout_s: float = 120.0,
) -> SippSpec:
    """``scenarios/citizen.xml``: ``caller`` dials ``number``, presses the keys of the run folder's
    pcaps, then ends as ``end`` says (see the scenario's header)."""
    if end not in ENDS:
        raise SippError(f"{name}: end={end!r}: expected one of {', '.join(ENDS)}")
    variables = {"menu_delay_ms": str(menu_delay_ms), "stay_ms": str(stay_ms), "end": end}
    return SippSpec(
        name, "citizen.xml", local_port, media_port, remote=remote, service=number,
        keys={"caller": caller}, variables=variables, timeout_s=timeout_s,
    )  # fmt: skip


def agent_answer(
    name: str, *, local_port: int, media_port: int, end: str, hold_ms: int = 0, calls: int = 1,
    rtp_port: int | None = None, timeout_s: float = 120.0,
) -> SippSpec:  # fmt: skip
    """``scenarios/agent_answer.xml``: answers ``calls`` calls, hangs up after ``hold_ms`` (end=bye) or
    waits for the caller's BYE (end=wait).  ``rtp_port``: where the SDP asks for RTP (default: its own)."""
    if end not in ("bye", "wait"):
        raise SippError(f"{name}: end={end!r}: expected bye or wait")
    return SippSpec(
        name, "agent_answer.xml", local_port, media_port, calls=calls,
        keys={"rtp_port": str(rtp_port if rtp_port is not None else media_port)},
        variables={"hold_ms": str(hold_ms), "end": end}, auto_answer=True, timeout_s=timeout_s,
    )  # fmt: skip


def agent_softphone(
    name: str, *, local_port: int, media_port: int, remote: str, agent: str, password: str,
    registered_ms: int, end: str, hold_ms: int = 0, timeout_s: float = 120.0,
) -> SippSpec:  # fmt: skip
    """An agent's softphone in one process: ``scenarios/agent_register.xml`` registers ``agent``
    (refresh after ``registered_ms``, unregister after as long again) and ``agent_answer.xml`` answers
    every call and OPTIONS sent to it (end=bye: hangs up after ``hold_ms``; end=wait: the caller does)."""
    for what, value in (("agent", agent), ("password", password)):
        if any(char in value for char in ";[]\n\r ="):
            raise SippError(f"{name}: the {what} cannot hold ';', '[', ']', '=', a space or a newline")
    if end not in ("bye", "wait"):
        raise SippError(f"{name}: end={end!r}: expected bye or wait")
    return SippSpec(
        name, "agent_register.xml", local_port, media_port, remote=remote,
        keys={"rtp_port": str(media_port)},
        variables={"registered_ms": str(registered_ms), "end": end, "hold_ms": str(hold_ms)},
        injection=("SEQUENTIAL", f"{agent};[authentication username={agent} password={password}]"),
        ooc_scenario="agent_answer.xml", timeout_s=timeout_s,
    )  # fmt: skip


@dataclass(frozen=True)
class SippStats:
    """SIPp's cumulative counters at the end of its run (the last line of ``-trace_stat``)."""

    successful: int
    failed: int
    unexpected_messages: int
    max_udp_retrans: int
    timeouts: int

    @classmethod
    def read(cls, path: Path) -> SippStats:
        try:
            with path.open(encoding="utf-8", errors="replace", newline="") as handle:
                rows = list(csv.DictReader(handle, delimiter=";"))
        except OSError as exc:
            raise SippError(f"no SIPp statistics at {path}: {exc.strerror}") from exc
        if not rows:
            raise SippError(f"{path}: no statistics line")
        last = rows[-1]
        try:
            return cls(
                successful=int(last["SuccessfulCall(C)"]),
                failed=int(last["FailedCall(C)"]),
                unexpected_messages=int(last["FailedUnexpectedMessage(C)"]),
                max_udp_retrans=int(last["FailedMaxUDPRetrans(C)"]),
                timeouts=int(last["FailedTimeoutOnRecv(C)"]),
            )
        except (KeyError, ValueError) as exc:
            raise SippError(f"{path}: unexpected statistics columns ({exc})") from exc


@dataclass(frozen=True)
class SippResult:
    """How a SIPp process ended, with its statistics and traces."""

    spec: SippSpec
    returncode: int
    stats: SippStats | None
    errors: str
    logs: str

    @classmethod
    def collect(cls, spec: SippSpec, run_dir: Path, returncode: int) -> SippResult:
        base = run_dir / spec.name
        stats_file = Path(f"{base}_stats.csv")
        stats = SippStats.read(stats_file) if stats_file.exists() else None
        return cls(
            spec, returncode, stats, _read(Path(f"{base}_errors.log")), _read(Path(f"{base}_logs.log"))
        )

    @property
    def ok(self) -> bool:
        """Every call succeeded, none failed."""
        return (
            self.returncode == EXIT_OK
            and self.stats is not None
            and self.stats.successful == self.spec.calls
            and self.stats.failed == 0
        )

    def report(self) -> str:
        head = f"{self.spec.name}: exit {self.returncode}, {self.stats}"
        return f"{head}\nerrors:\n{self.errors}\nlogs:\n{self.logs}"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
