"""``python -m bench``: measure every FastAGI server and AMI parser in one run and print one report.

Loopback only (127.0.0.1).  A full run takes about two minutes on 2 cores; ``--quick`` about 20 s.
A full run also rewrites docs/bench.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import uvloop

from bench import ami, fastagi, report, routing
from bench.client import CLIENT_CPUS, SERVER_CPUS, pin_client
from bench.flow import load_env_block
from tests.conftest import captures_path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bench.md"
DOC_INTRO = """# Benchmarks

`make bench` (= `.venv/bin/python -m bench`) measures, in one run on 127.0.0.1, the FastAGI servers
running the same 10-command IVR flow (ours, panoramisk, process-per-call pyst2, a bare asyncio
Protocol as the limit), the AMI parsers on the recorded Asterisk 22 streams, the live model's updates
per second and the delay from an AgentConnect on the AMI socket to a subscriber of the live state
(in memory and through a real redis-server started for the run).  Options:
`--quick`, `--sessions N`, `--no-write`; see `python -m bench --help`.  `python -m bench.profile
[ours|panoramisk|limit] [asyncio|uvloop]` shows where a server spends its CPU (cProfile).  This file
is rewritten by every full run.  The targets are printed as PASS/MISS, never asserted.

How to read it:
- CPU per session is the server process's own CPU, event loop included.  At 50 at a time a server
  that keeps up with the client wakes up for almost every message while a slower one handles several
  per wake-up, which flatters the slower one; one at a time, every server wakes up once per command.
- The two floors do the limit's work (no parsing at all) written as a coroutine handler that awaits
  each reply: through a Task and one Future per command (the usual asyncio way), or resumed directly
  from `data_received`.  They show what the handler API costs by itself, before any parsing.
- Every server process first frees a 1 MiB block, so that asyncio's 256 KiB receive buffer comes from
  the heap in all of them (otherwise glibc may mmap/munmap it on every read, depending on history).
- On a small shared VM the absolute figures move by tens of percent from run to run; repetitions are
  interleaved across servers, so the ratios within one run are steadier than the absolute values.
- The process-per-call p99 is the first command of each call: it waits for the interpreter to start.
- panoramisk's AMI parser drops the last header of a message when its value is empty (it strips the
  message, so `Value: ` loses its `": "`) and decodes as ASCII, dropping every non-ASCII byte.

## Latest run

"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer sessions and repetitions (~20 s)")
    parser.add_argument(
        "--sessions", type=int, help="sessions per repetition, concurrent mode (default 2000)"
    )
    parser.add_argument("--concurrency", type=int, default=50, help="sessions at a time (default 50)")
    parser.add_argument("--pyst2-sessions", type=int, help="process-per-call calls per mode (default 50)")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite docs/bench.md")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress on stderr")
    args = parser.parse_args(argv)
    for name in ("sessions", "concurrency", "pyst2_sessions"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def settings_for(args: argparse.Namespace) -> tuple[fastagi.Settings, int, int]:
    """FastAGI settings, AMI replays and AMI repetitions."""
    sessions = args.sessions or (300 if args.quick else 2000)
    agi = fastagi.Settings(
        sessions=sessions,
        sequential_sessions=max(1, sessions // 4),
        concurrency=args.concurrency,
        repetitions=1 if args.quick else 3,
        warmup=min(200, sessions),
        pyst2_sessions=args.pyst2_sessions or (10 if args.quick else 50),
    )
    return agi, (3 if args.quick else 20), (3 if args.quick else 5)


async def measure(args: argparse.Namespace) -> str:
    captures = captures_path()
    pin_client()
    settings, replays, ami_reps = settings_for(args)
    started = time.monotonic()
    machine = report.machine()
    rows = await fastagi.run(load_env_block(captures), REPO, settings)
    corpus = ami.load_corpus(captures)
    ami_results = ami.measure(corpus, replays, ami_reps)
    updates = routing.measure_updates(captures, replays, ami_reps)
    delays = await routing.measure_delays(100 if args.quick else 1000)
    reps = settings.repetitions
    settings_text = (
        f"run: {settings.sessions} sessions x {reps} repetitions at {settings.concurrency} at a time, "
        f"{settings.sequential_sessions} x {reps} one at a time, "
        f"{settings.pyst2_sessions} process-per-call calls per mode, "
        f"AMI corpus {len(corpus):,} bytes x {replays}; load client on CPU {sorted(CLIENT_CPUS)}, "
        f"servers on CPU {sorted(SERVER_CPUS)}; took {time.monotonic() - started:.0f} s"
    )
    text = report.render(machine, settings_text, rows, ami_results)
    return text + "\n" + report.routing_text(updates, delays)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    text = uvloop.run(measure(args))
    print(text)
    if not (args.quick or args.no_write):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(DOC_INTRO + text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
