"""The benchmark's load client and servers run a handful of sessions correctly (flow only, never speed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench import ami, routing
from bench.client import (
    FlowError,
    ProcessCost,
    ServerProcess,
    agi_session,
    children_cpu_ns,
    pyst2_session,
    run_batch,
)
from bench.flow import STEPS, load_env_block
from bench.servers import KINDS, LOOPS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(captures_dir: Path) -> bytes:
    return load_env_block(captures_dir)


def test_env_block_is_the_recorded_one(env: bytes) -> None:
    lines = env.split(b"\n")
    assert env.endswith(b"\n\n")
    assert len(lines) == 24 + 2  # 24 agi_ lines, the blank line, and what follows the last "\n"
    assert b"agi_network_script: test" in lines
    assert b"agi_accountcode: " in lines  # the empty value keeps its space, as recorded


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("kind", KINDS)
async def test_server_runs_the_flow(kind: str, loop: str, env: bytes) -> None:
    server = ServerProcess(kind, loop, REPO)
    try:
        before = server.cpu_ns()
        concurrent = await run_batch(lambda lat: agi_session(server.port, env, lat), 6, 3, 30)
        sequential = await run_batch(lambda lat: agi_session(server.port, env, lat), 2, 1, 30)
        after = server.cpu_ns()
    finally:
        server.stop()
    assert len(concurrent.latencies) == 6 * len(STEPS)
    assert len(sequential.latencies) == 2 * len(STEPS)
    assert all(t > 0 for t in concurrent.latencies + sequential.latencies)
    assert after > before  # the server's own CPU counter moved while it served


async def _serve_once(lines: list[bytes]) -> asyncio.Server:
    """A wrong server: reads the env block, then writes ``lines`` one per reply and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\n\n")
        for line in lines:
            writer.write(line)
            await reader.readline()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([b"ANSWER\n", b"HANGUP\n"], "step 2"),  # a command out of the flow
        ([step.line for step in STEPS[:4]], "closed after 4 of 10"),  # too short
        ([step.line for step in STEPS] + [b"ANSWER\n"], "after the last step"),  # too long
    ],
)
async def test_client_rejects_a_server_that_strays(env: bytes, lines: list[bytes], message: str) -> None:
    server = await _serve_once(lines)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(FlowError, match=message):
            await agi_session(port, env, [])
    finally:
        server.close()
        await server.wait_closed()


async def test_process_per_call_runs_the_flow(env: bytes) -> None:
    cost = ProcessCost()
    before = children_cpu_ns()
    batch = await run_batch(lambda lat: pyst2_session(env, lat, cost), 2, 2, 60)
    assert len(batch.latencies) == 2 * len(STEPS)
    assert children_cpu_ns() > before  # the per-call processes were reaped and counted
    assert cost.spawn_ns > 0


def test_ami_parsers_see_the_same_messages(captures_dir: Path) -> None:
    corpus = ami.load_corpus(captures_dir)
    assert b"#####" not in corpus  # recorder markers removed
    assert b"Asterisk Call Manager/" not in corpus  # banners removed
    results = {r.parser: r for r in ami.measure(corpus, replays=1, repetitions=1)}
    bare = results[ami.BARE]
    assert bare.messages == corpus.count(b"\r\n\r\n")
    assert {r.messages for r in results.values()} == {bare.messages}
    assert results[ami.OURS_FULL].headers == bare.headers


def test_whole_bench_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main.main(["--quick", "--sessions", "3", "--pyst2-sessions", "1", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out
    assert out.count("| ours (ivr.agi_server) |") == 4  # 2 loops x 2 modes
    assert out.count("| process-per-call pyst2 0.5.1 |") == 2
    assert "| ours (routing.ami.AmiParser), every header |" in out
    assert "| ours: LiveModel.apply per event |" in out
    assert "| Redis store: ours (another client subscribed) | 100 |" in out


async def test_agent_connect_delays_go_through_the_whole_path() -> None:
    """Each sample waited for the engine's message about that very call (a store that never publishes
    would hang the bench rather than give figures)."""
    (ours, limit, redis_ours, redis_limit) = await routing.measure_delays(5)
    assert [len(r.samples) for r in (ours, limit, redis_ours, redis_limit)] == [5, 5, 5, 5]
    assert all(sample > 0 for sample in ours.samples + redis_ours.samples)


def test_live_model_replay_counts_the_recorded_events(captures_dir: Path) -> None:
    ours, polling, limit = routing.measure_updates(captures_dir, replays=2, repetitions=1)
    events = routing.recorded_events(captures_dir)
    assert ours.events == polling.events == limit.events == 2 * len(events)
    assert 0 < ours.followed < ours.events
