"""The machine description and the result tables (Markdown, printed and written to docs/bench.md)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.ami import BARE, OURS_FULL, AmiResult
from bench.fastagi import PYST2, Row
from bench.routing import DelayResult, UpdateResult

LIMIT_RATIO_TARGET = 1.25  # ours' CPU per session at most 1.25x the bare limit's, same loop
PROCESS_ADVANTAGE_TARGET = 50.0  # at least 50x less CPU per call than process-per-call
AMI_SPEED_TARGET = 0.65  # ours parses at least 0.65x as many messages per second as the bare split


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine() -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"- date: {now}; load average before the run: {load} (other work on the machine skews the figures)\n"
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, Linux {platform.release()}\n"
        f"- Python {platform.python_version()}, uvloop {_version('uvloop')}, "
        f"panoramisk {_version('panoramisk')}, pyst2 {_version('pyst2')}\n"
    )


def _table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out) + "\n"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@dataclass(frozen=True)
class _Key:
    kind: str
    loop: str
    concurrency: int


def agi_table(rows: list[Row]) -> str:
    by_key = {_Key(r.spec.kind, r.spec.loop, r.concurrency): r for r in rows}
    pyst2 = {r.concurrency: r for r in rows if r.spec.kind == PYST2}
    lines = []
    for row in sorted(rows, key=lambda r: (-r.concurrency, r.spec.kind == PYST2)):
        if row.error is not None:
            failed = row.error if len(row.error) <= 120 else row.error[:117] + "..."
            lines.append(
                [row.spec.label, row.spec.loop, str(row.concurrency), *["—"] * 6, f"FAILED {failed}"]
            )
            continue
        limit = by_key.get(_Key("limit", row.spec.loop, row.concurrency))
        limit = limit if limit and limit.error is None else None
        process = pyst2.get(row.concurrency)
        process = process if process and process.error is None else None
        vs_limit = row.cpu_ms / limit.cpu_ms if limit and row.spec.kind != "limit" else None
        advantage = process.cpu_ms / row.cpu_ms if process and row.spec.kind != PYST2 else None
        targets = []
        if row.spec.kind == "ours":
            if vs_limit is not None:
                targets.append(f"≤{LIMIT_RATIO_TARGET}x limit {_verdict(vs_limit <= LIMIT_RATIO_TARGET)}")
            if advantage is not None:
                targets.append(
                    f"≥{PROCESS_ADVANTAGE_TARGET:.0f}x {_verdict(advantage >= PROCESS_ADVANTAGE_TARGET)}"
                )
        lines.append(
            [
                row.spec.label,
                row.spec.loop,
                str(row.concurrency),
                f"{row.per_second:,.0f}",
                f"{row.percentile_us(0.50):,.0f}",
                f"{row.percentile_us(0.99):,.0f}",
                f"{row.cpu_ms:.3f}",
                f"{vs_limit:.2f}x" if vs_limit is not None else "—",
                f"{advantage:,.0f}x" if advantage is not None else "—",
                ", ".join(targets) or "—",
            ]
        )
    header = [
        "server",
        "loop",
        "at a time",
        "sessions/s",
        "p50 round trip µs",
        "p99 round trip µs",
        "server CPU ms/session",
        "CPU vs limit (same loop)",
        "CPU advantage vs process-per-call",
        "targets",
    ]
    return _table(header, lines)


def ami_table(results: list[AmiResult]) -> str:
    bare = next(r for r in results if r.parser == BARE)
    lines = []
    for r in results:
        speed = r.per_second / bare.per_second
        target = "—"
        if r.parser == OURS_FULL:
            target = f"≥{AMI_SPEED_TARGET}x bare {_verdict(speed >= AMI_SPEED_TARGET)}"
        lines.append(
            [
                r.parser,
                f"{r.per_second:,.0f}",
                f"{r.megabytes / r.seconds:.1f}",
                f"{speed:.2f}x",
                f"{r.messages:,}",
                f"{r.headers:,} ({r.headers - bare.headers:+,})",
                target,
            ]
        )
    header = [
        "AMI parser",
        "messages/s",
        "MB/s",
        "speed vs bare split",
        "messages",
        "headers kept (vs bare)",
        "target",
    ]
    return _table(header, lines)


def updates_table(results: list[UpdateResult]) -> str:
    limit = results[-1]
    lines = [
        [
            r.name,
            f"{r.per_second:,.0f}",
            f"{1e6 / r.per_second:.2f}",
            f"{r.per_second / limit.per_second:.2f}x",
        ]
        for r in results
    ]
    return _table(["live model", "events/s", "µs/event", "vs limit"], lines)


def delays_table(results: list[DelayResult]) -> str:
    lines = [
        [
            r.name,
            str(len(r.samples)),
            f"{r.percentile(0.5) * 1e6:,.0f}",
            f"{r.percentile(0.99) * 1e6:,.0f}",
        ]
        for r in results
    ]
    header = ["AgentConnect written on the AMI socket -> subscriber", "samples", "p50 µs", "p99 µs"]
    return _table(header, lines)


def routing_text(updates: list[UpdateResult], delays: list[DelayResult]) -> str:
    return (
        f"Routing: every event of the recorded streams ({updates[0].events:,} events, "
        f"{updates[0].followed:,} of the kinds the model acts on) applied to the live model "
        "(fresh model per replay), "
        "against rebuilding the model from a recorded QueueStatus + CoreShowChannels snapshot on every event "
        "(what polling costs) and a bare dispatch; median of the repetitions.\n\n"
        f"{updates_table(updates)}\n"
        "Delay from an AgentConnect written by a loopback AMI server to the message of the engine's store "
        "reaching a subscriber (AMI parser, live model, mirror, store, pub/sub), one at a time.\n\n"
        f"{delays_table(delays)}"
    )


def render(machine_text: str, settings_text: str, rows: list[Row], ami: list[AmiResult]) -> str:
    return (
        f"{machine_text}- {settings_text}\n\n"
        "FastAGI: the same 10-command IVR flow per session; the load client (uvloop, same machine) plays "
        "Asterisk with the recorded replies. Round trip = client's write -> next command received. "
        "Server CPU = the server process's own user+system time (rusage) / sessions; process-per-call CPU = "
        "children's rusage + the parent's fork/exec CPU.\n\n"
        f"{agi_table(rows)}\n"
        "AMI: every recorded *.raw stream (banners removed) replayed in memory in 4 KiB chunks; "
        "median of the repetitions.\n\n"
        f"{ami_table(ami)}"
    )
