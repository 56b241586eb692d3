"""FastAGI benchmark: every server runs the same flow against the same load client, in one run.

Each socket server runs alone in its own subprocess (``bench.servers``), started once and kept up
for the whole run; repetitions are interleaved across servers so that a slow moment of the machine
does not fall on one server only.  Server CPU per session = the server process's own rusage delta
over a batch / sessions.  Process-per-call (pyst2) CPU = the reaped children's rusage delta plus the
CPU the parent spent in fork/exec, / calls.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.client import (
    Batch,
    FlowError,
    ProcessCost,
    ServerProcess,
    agi_session,
    children_cpu_ns,
    pyst2_session,
    run_batch,
)

logger = logging.getLogger(__name__)

PYST2 = "pyst2"
PROCESS_LOOP = "process"  # process-per-call has no event loop
BATCH_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ServerSpec:
    kind: str  # a bench.servers kind, or PYST2
    loop: str
    label: str


SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec("ours", "asyncio", "ours (ivr.agi_server)"),
    ServerSpec("ours", "uvloop", "ours (ivr.agi_server)"),
    ServerSpec("panoramisk", "asyncio", "panoramisk 1.4 fast_agi"),
    ServerSpec("panoramisk", "uvloop", "panoramisk 1.4 fast_agi"),
    ServerSpec("task-floor", "asyncio", "floor: coroutine, Task + Future"),
    ServerSpec("task-floor", "uvloop", "floor: coroutine, Task + Future"),
    ServerSpec("direct-floor", "asyncio", "floor: coroutine resumed in data_received"),
    ServerSpec("direct-floor", "uvloop", "floor: coroutine resumed in data_received"),
    ServerSpec("limit", "asyncio", "limit: bare Protocol"),
    ServerSpec("limit", "uvloop", "limit: bare Protocol"),
    ServerSpec(PYST2, PROCESS_LOOP, "process-per-call pyst2 0.5.1"),
)


@dataclass(frozen=True)
class Settings:
    sessions: int  # per repetition, concurrent mode
    sequential_sessions: int
    concurrency: int
    repetitions: int
    warmup: int
    pyst2_sessions: int

    def __post_init__(self) -> None:
        for name in ("sessions", "sequential_sessions", "concurrency", "repetitions", "pyst2_sessions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


@dataclass
class Row:
    """Measurements of one server on one loop at one concurrency, pooled over repetitions."""

    spec: ServerSpec
    concurrency: int
    rates: list[float] = field(default_factory=list)  # sessions/s per repetition
    cpu_per_session_ns: list[float] = field(default_factory=list)  # per repetition
    latencies: list[int] = field(default_factory=list)  # every command round trip, ns
    error: str | None = None  # the server failed the flow: no figures

    def add(self, batch: Batch, cpu_ns: int) -> None:
        self.rates.append(batch.per_second)
        self.cpu_per_session_ns.append(cpu_ns / batch.sessions)
        self.latencies += batch.latencies

    @property
    def per_second(self) -> float:
        return statistics.median(self.rates)

    @property
    def cpu_ms(self) -> float:
        return statistics.median(self.cpu_per_session_ns) / 1e6

    def percentile_us(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3


Session = Callable[[list[int]], Awaitable[None]]


async def _measure_server(
    server: ServerProcess, session: Session, sessions: int, concurrency: int
) -> tuple[Batch, int]:
    before = server.cpu_ns()
    batch = await run_batch(session, sessions, concurrency, BATCH_TIMEOUT_S)
    return batch, server.cpu_ns() - before


async def _measure_pyst2(env: bytes, sessions: int, concurrency: int) -> tuple[Batch, int]:
    cost = ProcessCost()
    before = children_cpu_ns()
    batch = await run_batch(lambda lat: pyst2_session(env, lat, cost), sessions, concurrency, BATCH_TIMEOUT_S)
    return batch, children_cpu_ns() - before + cost.spawn_ns


async def run(
    env: bytes, repo: Path, settings: Settings, specs: tuple[ServerSpec, ...] = SERVERS
) -> list[Row]:
    """Measure every server of ``specs`` in concurrent and sequential mode; one Row per (server, mode).

    A server that fails the flow (or cannot start) gets rows with ``error`` set; the others go on.
    """
    modes: list[tuple[int, int]] = [(settings.concurrency, settings.sessions)]
    if settings.concurrency > 1:
        modes.append((1, settings.sequential_sessions))
    rows = {(spec, conc): Row(spec, conc) for spec in specs for conc, _ in modes}
    servers: dict[ServerSpec, ServerProcess] = {}

    def fail(spec: ServerSpec, exc: Exception) -> None:
        logger.warning("%s on %s failed: %s", spec.kind, spec.loop, exc)
        for conc, _ in modes:
            rows[spec, conc].error = f"{type(exc).__name__}: {exc}"

    try:
        for spec in specs:
            if spec.kind != PYST2:
                try:
                    servers[spec] = ServerProcess(spec.kind, spec.loop, repo)
                except (FlowError, OSError) as exc:
                    fail(spec, exc)
        working = dict(servers)
        for rep in range(-1 if settings.warmup else 0, settings.repetitions):  # -1: warm-up round
            for conc, sessions in modes:
                if rep < 0 and conc == 1:
                    continue
                for spec, server in list(working.items()):
                    count = settings.warmup if rep < 0 else sessions
                    logger.info(
                        "rep %d: %s/%s, %d sessions, %d at a time", rep + 1, spec.kind, spec.loop, count, conc
                    )
                    try:
                        batch, cpu = await _measure_server(server, _agi(server.port, env), count, conc)
                    except (FlowError, OSError) as exc:
                        fail(spec, exc)
                        del working[spec]
                        continue
                    if rep >= 0:
                        rows[spec, conc].add(batch, cpu)
    finally:
        for server in servers.values():
            server.stop()
    # Process-per-call last, with every server process stopped and reaped: RUSAGE_CHILDREN then
    # grows only with the per-call processes.
    for spec in specs:
        if spec.kind == PYST2:
            for conc, _ in modes:
                logger.info("process-per-call: %d calls, %d at a time", settings.pyst2_sessions, conc)
                try:
                    rows[spec, conc].add(*await _measure_pyst2(env, settings.pyst2_sessions, conc))
                except (FlowError, OSError) as exc:
                    fail(spec, exc)
                    break
    return list(rows.values())


def _agi(port: int, env: bytes) -> Session:
    def session(latencies: list[int]) -> Awaitable[None]:
        return agi_session(port, env, latencies)

    return session
