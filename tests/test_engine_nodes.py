"""Two `guichet serve` processes on one Redis: one consumes AMI, both serve FastAGI, one live model;
killing the one that holds the AMI lease hands AMI over to the other within a few seconds."""

from __future__ import annotations

import asyncio
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import yaml

from desk.auth import add_user
from guichet.engine import AMI_LEASE
from pbx_sim import CallerScript, KeyPress, QueueConfig, SimAgent, SimConfig, SimulatedPbx
from routing.state_redis import RedisStateStore
from tests.conftest import REPO
from tests.redis_server import RedisServer
from tests.test_serve import SECRET, free_port, read_until, start_serve

LEASE_TTL_S = 1.5
HANDOVER_DEADLINE_S = 15.0  # the lease expires after 1.5 s; generous for a loaded CI machine
QUEUES = ("apa", "pmi", "mdph", "transport", "rsa", "accueil")


def open_day_and_night(tmp_path: Path) -> Path:
    """The shipped menus with every schedule open at all hours (the test may run on a Sunday night)."""
    menus = tmp_path / "menus"
    shutil.copytree(REPO / "dialplans", menus)
    hours_file = menus / "settings" / "hours.yaml"
    hours = yaml.safe_load(hours_file.read_text(encoding="utf-8"))
    for schedule in hours.values():
        for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"):
            schedule[day] = ["00:00-24:00"]
        schedule.pop("closures", None)
        schedule["public_holidays"] = "open"
    hours_file.write_text(yaml.safe_dump(hours, allow_unicode=True), encoding="utf-8")
    return menus


SUPERVISOR, PASSWORD = "chef", "mot de passe du chef"


CLOCK_FIELDS = frozenset({"now", "longest_wait_s", "waited_s", "duration_s"})  # each node's own clock


def timeless(view: object) -> object:
    """An API answer without the figures computed from the answering node's clock."""
    if isinstance(view, dict):
        return {key: timeless(value) for key, value in view.items() if key not in CLOCK_FIELDS}
    if isinstance(view, list):
        return [timeless(item) for item in view]
    return view


@dataclass
class Node:
    name: str
    agi_port: int
    http_port: int
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"


@dataclass
class Cluster:
    sim: SimulatedPbx
    store: RedisStateStore
    start: Callable[[str], Awaitable[Node]]

    def ami_clients(self, *, events: bool = True) -> int:
        """Logged-in AMI clients receiving events (with ``events=False``: all of them)."""
        sessions = self.sim._server.sessions
        return sum(1 for s in sessions if s.authenticated and (s.events or not events))


@pytest.fixture
async def cluster(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Cluster]:
    menus = open_day_and_night(tmp_path)
    prefix = f"nodes-{uuid.uuid4().hex}:"
    agi_ports = {"node-a": free_port(), "node-b": free_port()}
    sim = SimulatedPbx(
        SimConfig(
            agi_port=agi_ports["node-b"],  # Asterisk sends its calls to the node that does NOT consume AMI
            ami_users={"guichet": SECRET},
            speed=5.0,
            queues=tuple(QueueConfig(name) for name in QUEUES),
        )
    )
    await sim.start()
    store = RedisStateStore.from_url(redis_server.url, prefix=prefix)
    nodes: list[Node] = []
    users, key = tmp_path / "users.toml", tmp_path / "session.key"
    add_user(users, SUPERVISOR, "supervisor", None, PASSWORD)
    key.write_text(uuid.uuid4().hex * 2, encoding="utf-8")  # one key: a session is valid on every node

    async def start(name: str) -> Node:
        config = tmp_path / f"{name}.toml"
        http_port = free_port()
        config.write_text(
            f'loop = "asyncio"\n[agi]\nport = {agi_ports[name]}\n[ami]\nport = {sim.ami_port}\n'
            f'[ivr]\nmenus_dir = "{menus}"\n'
            f'[http]\nport = {http_port}\nusers_file = "{users}"\nsession_key_file = "{key}"\n'
            '[agents.a103]\nname = "Agent Web"\nskills = ["pmi"]\n'
            f'[state]\nbackend = "redis"\nredis_url = "{redis_server.url}"\nprefix = "{prefix}"\n'
            f'node = "{name}"\nlease_ttl_s = {LEASE_TTL_S}\n[routing]\naging_interval_s = 0.2\n',
            encoding="utf-8",
        )
        node = Node(name, agi_ports[name], http_port, await start_serve(config, SECRET))
        nodes.append(node)
        return node

    try:
        yield Cluster(sim, store, start)
    finally:
        for node in nodes:
            if node.process.returncode is None:
                node.process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(node.process.wait(), timeout=30)
        await store.close()
        await sim.stop()


async def until(condition: Callable[[], Awaitable[bool]], what: str, deadline_s: float = 30.0) -> float:
    """Wait for ``condition``; return how long it took (seconds)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await condition():
        if loop.time() - start > deadline_s:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)
    return loop.time() - start


async def test_two_nodes_one_ami_consumer_one_model_and_a_handover(cluster: Cluster) -> None:
    sim, store = cluster.sim, cluster.store
    node_a = await cluster.start("node-a")
    await read_until(node_a.process, "node node-a consumes AMI", node_a.lines)
    node_b = await cluster.start("node-b")
    await read_until(node_b.process, "standby: node node-a consumes AMI", node_b.lines)
    await read_until(node_b.process, "FastAGI server", node_b.lines)
    assert await store.leader(AMI_LEASE) == "node-a"
    assert cluster.ami_clients() == 1  # node A consumes events
    assert cluster.ami_clients(events=False) == 3  # and each node has its client for agents' actions

    # A call served by node B's FastAGI (key 0: the general front office) is seen by node A over AMI and
    # written to the shared store: one model for both.
    sim.add_agent(SimAgent("PJSIP/a101", "Marie Durand", queues=["apa"], answer_delay=1, talk_time=60))
    caller = sim.place_call(CallerScript("0611223344", "Zoé", keys=[KeyPress(1.0, "0")]))

    async def waiting_in_accueil() -> bool:
        return [c.caller_number for c in await store.waiting("accueil")] == ["0611223344"]

    await until(waiting_in_accueil, "the caller routed by node B waits in accueil in the store")
    (waiting,) = await store.waiting("accueil")
    assert (waiting.channel, waiting.service) == (caller.channel.name, "accueil")
    assert waiting.urgency == "normal"  # set by node B's IVR, read by node A from AMI
    agent = await store.get_agent("PJSIP/a101")
    assert agent is not None and agent.state == "available"

    async def explained() -> bool:  # aging runs on node A and its explanation reaches every node
        (record,) = await store.waiting("accueil")
        return "pour" in record.priority_reason and "attente" in record.priority_reason

    await until(explained, "the waiting caller's priority is explained to supervisors")

    # Both nodes' web APIs: one login valid on both, the same live view; an agent logged in through
    # node B (its own AMI client for actions) is seen by node A over AMI and shown by both.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        login = {"login": SUPERVISOR, "password": PASSWORD}
        async with http.post(node_b.url("/api/session"), json=login) as response:
            assert response.status == 200
        async with http.post(node_b.url("/api/agents/a103/login"), json={}) as response:
            assert response.status == 200, await response.text()

        async def agent_shown() -> bool:
            return await store.get_agent("PJSIP/a103") is not None

        await until(agent_shown, "the agent logged in through node B is in the store")
        views = []
        for node in (node_a, node_b):
            async with http.get(node.url("/api/live")) as response:
                assert response.status == 200
                views.append(timeless(await response.json()))
        assert views[0] == views[1]
        assert "PJSIP/a103" in str(views[0]) and "0611223344" in str(views[0])

    # Kill -9 the AMI consumer: node B takes the lease over, logs in and resyncs the same model.
    node_a.process.kill()
    await node_a.process.wait()

    async def b_leads() -> bool:
        return await store.leader(AMI_LEASE) == "node-b" and cluster.ami_clients() == 1

    handover_s = await until(b_leads, "node B holds the AMI lease and is logged in", HANDOVER_DEADLINE_S)
    print(f"AMI handover after kill -9: {handover_s:.2f} s (lease ttl {LEASE_TTL_S} s)")
    await read_until(node_b.process, "node node-b consumes AMI", node_b.lines)
    # the model node B rebuilt equals what node A had written, and it goes on following events
    await until(waiting_in_accueil, "the caller still waits after the handover")
    sim.add_agent(SimAgent("PJSIP/a102", "Jean Martin", queues=["accueil"], answer_delay=1, talk_time=60))

    async def answered_by_a102() -> bool:
        calls = (await store.snapshot()).calls
        return [(c.agent, c.caller_number) for c in calls.values()] == [("PJSIP/a102", "0611223344")]

    await until(answered_by_a102, "node B mirrors the call answered after the handover")
    assert await store.waiting("accueil") == []
