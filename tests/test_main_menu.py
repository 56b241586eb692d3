"""The built-in menu route, end to end: the real FastAGI server, calls placed by the simulated PBX."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from ivr.agi_server import FastAgiServer
from ivr.main_menu import CHOICES, GENERAL, choose
from ivr.routes import build_routes
from pbx_sim import CallerScript, KeyPress, QueueConfig, SimAgent, SimConfig, SimulatedPbx

SPEED = 50.0
QUEUES = sorted({choice.queue for choice in CHOICES.values()})


def test_choose_maps_keys_and_refuses_the_rest() -> None:
    assert choose("1") == CHOICES["1"]
    assert choose("0") == GENERAL
    assert choose("9") is None
    assert choose("") is None
    assert choose("12") is None


@pytest.fixture
async def server() -> AsyncIterator[FastAgiServer]:
    async with FastAgiServer(build_routes(), port=0) as srv:
        yield srv


async def run_call(agi_port: int, script: CallerScript) -> tuple[str | None, str | None, list[str]]:
    """Place one call answered by an agent of every queue; (queue, agent, dialplan path)."""
    config = SimConfig(agi_port=agi_port, speed=SPEED, queues=[QueueConfig(q) for q in QUEUES])
    async with SimulatedPbx(config) as pbx:
        pbx.add_agent(SimAgent("PJSIP/agent1", "Agent", queues=QUEUES, answer_delay=1, talk_time=3))
        outcome = await pbx.place_call(script).finished
    return outcome.queue, outcome.answered_by, outcome.path


@pytest.mark.parametrize(("digit", "queue"), [(d, c.queue) for d, c in CHOICES.items()])
async def test_each_key_reaches_its_queue(server: FastAgiServer, digit: str, queue: str) -> None:
    got, agent, _ = await run_call(server.port, CallerScript("0612345678", keys=[KeyPress(0.5, digit)]))
    assert (got, agent) == (queue, "PJSIP/agent1")


async def test_no_key_ends_in_the_general_queue_after_three_tries(server: FastAgiServer) -> None:
    got, _, _ = await run_call(server.port, CallerScript("0612345678"))
    assert got == GENERAL.queue
    assert server.stats.completed == 1


async def test_invalid_key_then_valid_key(server: FastAgiServer) -> None:
    keys = [KeyPress(0.5, "9"), KeyPress(0.5, "2")]
    got, _, _ = await run_call(server.port, CallerScript("0612345678", keys=keys))
    assert got == CHOICES["2"].queue


async def test_hostile_caller_name_breaks_nothing(server: FastAgiServer) -> None:
    name = 'Zoé \\"VIP\\" <b>Dupré</b> & \'; DROP'
    got, agent, _ = await run_call(server.port, CallerScript("0612345678", name, keys=[KeyPress(0.5, "3")]))
    assert (got, agent) == (CHOICES["3"].queue, "PJSIP/agent1")
    assert server.stats.failed == {}


async def test_engine_down_the_call_still_reaches_the_general_queue() -> None:
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    got, agent, path = await run_call(port, CallerScript("0612345678", keys=[KeyPress(0.5, "1")]))
    assert (got, agent) == ("general", "PJSIP/agent1")
    assert any("Playback" in step for step in path)
