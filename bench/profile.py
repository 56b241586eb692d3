"""``python -m bench.profile [KIND] [LOOP]``: where a FastAGI server spends its CPU on the bench flow.

Runs the server of ``bench.servers`` under cProfile in its own process, drives it with the load
client (same flow, 50 at a time), then prints the functions with the most own time.
"""

from __future__ import annotations

import argparse
import pstats
import sys
import tempfile
from pathlib import Path

import uvloop

from bench.client import ServerProcess, agi_session, pin_client, run_batch
from bench.flow import load_env_block
from bench.servers import KINDS, LOOPS
from tests.conftest import captures_path

REPO = Path(__file__).resolve().parents[1]


async def drive(server: ServerProcess, env: bytes, sessions: int) -> None:
    await run_batch(lambda lat: agi_session(server.port, env, lat), sessions, 50, 300)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("kind", nargs="?", default="ours", choices=KINDS)
    parser.add_argument("loop", nargs="?", default="asyncio", choices=LOOPS)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30, help="how many functions to print")
    args = parser.parse_args(argv)
    env = load_env_block(captures_path())
    pin_client()
    with tempfile.TemporaryDirectory() as tmp:
        stats_path = Path(tmp) / "server.prof"
        server = ServerProcess(args.kind, args.loop, REPO, profile_to=stats_path)
        try:
            uvloop.run(drive(server, env, args.sessions))
        finally:
            server.stop()
        stats = pstats.Stats(str(stats_path))
        print(f"{args.kind} on {args.loop}, {args.sessions} sessions of the bench flow, under cProfile:")
        stats.strip_dirs().sort_stats(pstats.SortKey.TIME).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
