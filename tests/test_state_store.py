"""Contract tests of the live state store, the same code on both implementations.

``memory``: MemoryStateStore. ``redis``: RedisStateStore on a real redis-server started for the session
(tests/redis_server.py), each test under its own key prefix. ``pair`` gives two views of one live state:
the same object in memory, two store objects (two "processes") on one Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from routing.state import (
    AgentState,
    CallInProgress,
    MemoryStateStore,
    StateStore,
    StateStoreClosed,
    Subscription,
    WaitingCaller,
)
from routing.state_redis import RedisStateStore
from tests.redis_server import RedisServer

T0 = 1_764_345_600.0  # an epoch second (2025-11-28)
ODD_TEXT = 'Zoé "la fée" O\'Brien\nligne 2\t; DROP -- 🙂 \\ ü'
LEASE = "ami-consumer"


@pytest.fixture
def store(pair: tuple[StateStore, StateStore]) -> StateStore:
    return pair[0]


def caller(
    uid: str, *, queue: str = "apa", priority: int = 0, joined: float = T0, **kw: str
) -> WaitingCaller:
    fields = {"service": "apa", "urgency": "normal", "caller_number": "0612345678", "caller_name": "X"}
    fields.update(kw)
    return WaitingCaller(
        uniqueid=uid,
        channel=f"PJSIP/trunk-{uid}",
        queue=queue,
        priority=priority,
        joined_at=joined,
        citizen_id=None,
        contact_id=None,
        **fields,
    )


def agent(aid: str, state: str = "available", *queues: str) -> AgentState:
    return AgentState(aid, f"Agent {aid}", state, "", queues or ("apa",), T0)


async def uids(store: StateStore, queue: str) -> list[str]:
    return [c.uniqueid for c in await store.waiting(queue)]


# --- waiting callers


async def test_caller_round_trip_keeps_every_field_and_odd_text(store: StateStore) -> None:
    original = replace(
        caller("1764345600.1", caller_name=ODD_TEXT, urgency="urgent"),
        citizen_id="cit-42",
        contact_id=ODD_TEXT,
        joined_at=T0 + 0.123456,
    )
    await store.put_caller(original)
    assert await store.get_caller("1764345600.1") == original
    assert await store.get_caller("nobody") is None
    assert await store.waiting("apa") == [original]


async def test_update_and_remove_caller(store: StateStore) -> None:
    await store.put_caller(caller("a"))
    await store.put_caller(caller("b"))
    updated = caller("a", priority=5, urgency="urgent")
    await store.put_caller(updated)
    assert await store.get_caller("a") == updated
    assert await uids(store, "apa") == ["a", "b"]
    assert await store.remove_caller("a") is True
    assert await store.remove_caller("a") is False
    assert await store.get_caller("a") is None
    assert await uids(store, "apa") == ["b"]


async def test_serving_order_priority_desc_then_join_time_then_arrival(store: StateStore) -> None:
    await store.put_caller(caller("late-low", priority=1, joined=T0 + 30))
    await store.put_caller(caller("early-low", priority=1, joined=T0))
    await store.put_caller(caller("late-high", priority=7, joined=T0 + 60))
    await store.put_caller(caller("tie-first", priority=3, joined=T0 + 10))
    await store.put_caller(caller("tie-second", priority=3, joined=T0 + 10))
    await store.put_caller(caller("negative", priority=-2, joined=T0 - 100))
    await store.put_caller(caller("microsecond-earlier", priority=1, joined=T0 + 29.999999))
    expected = [
        "late-high",
        "tie-first",
        "tie-second",
        "early-low",
        "microsecond-earlier",
        "late-low",
        "negative",
    ]
    assert await uids(store, "apa") == expected


async def test_update_keeps_arrival_order_and_moves_on_priority_change(store: StateStore) -> None:
    for uid in ("a", "b", "c"):
        await store.put_caller(caller(uid, priority=2))
    await store.put_caller(caller("c", priority=9))  # aging raised c
    assert await uids(store, "apa") == ["c", "a", "b"]
    await store.put_caller(caller("a", priority=2, urgency="urgent"))  # same rank: a keeps its place
    await store.put_caller(caller("c", priority=2))  # back down: c is behind the earlier arrivals again
    assert await uids(store, "apa") == ["a", "b", "c"]


async def test_caller_changing_queue(store: StateStore) -> None:
    await store.put_caller(caller("a", queue="apa"))
    await store.put_caller(caller("b", queue="apa"))
    await store.put_caller(caller("a", queue="accueil"))  # overflow
    assert await uids(store, "apa") == ["b"]
    assert await uids(store, "accueil") == ["a"]
    await store.remove_caller("b")
    snapshot = await store.snapshot()
    assert list(snapshot.callers) == ["accueil"]  # an emptied queue is not listed


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (caller("", priority=1), "uniqueid"),
        (caller("a", queue=""), "queue"),
        (caller("a", priority=10**10), "priority"),
        (replace(caller("a"), priority=1.5), "priority"),
        (caller("a", joined=math.nan), "join time"),
        (caller("a", joined=-1.0), "join time"),
    ],
)
async def test_bad_caller_is_rejected(store: StateStore, bad: WaitingCaller, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await store.put_caller(bad)
    assert (await store.snapshot()).callers == {}


# --- agents and calls


async def test_agents_add_update_remove(store: StateStore) -> None:
    alice = AgentState("PJSIP/agent-101", ODD_TEXT, "available", "", ("apa", "accueil"), T0)
    await store.put_agent(alice)
    await store.put_agent(agent("PJSIP/agent-102"))
    assert await store.get_agent("PJSIP/agent-101") == alice
    paused = replace(alice, state="paused", paused_reason='réunion "équipe"\n', since=T0 + 5.5)
    await store.put_agent(paused)
    assert await store.get_agent("PJSIP/agent-101") == paused
    assert await store.remove_agent("PJSIP/agent-102") is True
    assert await store.remove_agent("PJSIP/agent-102") is False
    assert (await store.snapshot()).agents == {"PJSIP/agent-101": paused}


async def test_calls_add_update_remove(store: StateStore) -> None:
    call = CallInProgress("1764345600.7", "apa", "PJSIP/agent-101", "0612345678", T0 + 12.25)
    await store.put_call(call)
    assert await store.get_call("1764345600.7") == call
    moved = replace(call, agent="PJSIP/agent-102")
    await store.put_call(moved)
    assert (await store.snapshot()).calls == {"1764345600.7": moved}
    assert await store.remove_call("1764345600.7") is True
    assert await store.remove_call("1764345600.7") is False
    assert await store.get_call("1764345600.7") is None


async def test_documents_by_kind_shared_between_nodes(pair: tuple[StateStore, StateStore]) -> None:
    one, other = pair
    await one.put_document("callbacks", "cb-1", ODD_TEXT)
    await one.put_document("callbacks", "cb-2", "{}")
    await one.put_document("inbox", "cb-1", "autre")
    await one.put_document("callbacks", "cb-2", '{"v": 2}')  # replaced
    assert await other.documents("callbacks") == {"cb-1": ODD_TEXT, "cb-2": '{"v": 2}'}
    assert await other.remove_document("inbox", "cb-1")
    assert not await one.remove_document("inbox", "cb-1")  # the other node took it first
    assert await one.documents("inbox") == {}
    assert await one.documents("never-written") == {}
    with pytest.raises(ValueError, match="document id must not be empty"):
        await one.put_document("callbacks", "", "x")


async def test_snapshot_holds_everything(store: StateStore) -> None:
    await store.put_caller(caller("x", queue="pmi", priority=1))
    await store.put_caller(caller("y", queue="apa", priority=4))
    await store.put_caller(caller("z", queue="pmi", priority=6))
    await store.put_agent(agent("PJSIP/agent-101", "talking", "pmi"))
    await store.put_call(CallInProgress("w", "pmi", "PJSIP/agent-101", "0600000000", T0))
    snapshot = await store.snapshot()
    assert {q: [c.uniqueid for c in cs] for q, cs in snapshot.callers.items()} == {
        "apa": ["y"],
        "pmi": ["z", "x"],
    }
    assert list(snapshot.agents) == ["PJSIP/agent-101"]
    assert list(snapshot.calls) == ["w"]


async def test_snapshot_never_sees_a_half_done_change(pair: tuple[StateStore, StateStore]) -> None:
    """A writer keeps moving callers between queues; every snapshot shows each caller exactly once."""
    writer, reader = pair
    movers = [f"m{i}" for i in range(5)]
    for uid in movers:
        await writer.put_caller(caller(uid, queue="apa"))
    stop = asyncio.Event()

    async def keep_moving() -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            queue = ("apa", "accueil", "pmi")[n % 3]
            await writer.put_caller(caller(movers[n % len(movers)], queue=queue, priority=n % 7))
            await asyncio.sleep(0)

    task = asyncio.create_task(keep_moving())
    try:
        for _ in range(60):
            snapshot = await reader.snapshot()
            seen = sorted(c.uniqueid for cs in snapshot.callers.values() for c in cs)
            assert seen == movers
            for queue, callers in snapshot.callers.items():
                assert all(c.queue == queue for c in callers)
            await asyncio.sleep(0)
    finally:
        stop.set()
        await task


async def test_a_batch_is_seen_whole_and_its_message_comes_after_it(
    pair: tuple[StateStore, StateStore],
) -> None:
    """A call answered: the caller leaves the queue, the call and the agent's state change, one message.
    The other node never sees half of it, and whoever gets the message reads all of it."""
    writer, reader = pair
    await writer.put_caller(caller("c1", queue="apa"))
    updates = await reader.subscribe("live")
    stop = asyncio.Event()
    seen: list[tuple[bool, bool]] = []

    async def watch() -> None:
        while not stop.is_set():
            snapshot = await reader.snapshot()
            seen.append(
                ("c1" in {c.uniqueid for cs in snapshot.callers.values() for c in cs}, "c1" in snapshot.calls)
            )
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.01)
    async with writer.batch() as writes:
        await writes.remove_caller("c1")
        await writes.put_call(CallInProgress("c1", "apa", "PJSIP/a1", "0611", T0))
        await writes.put_agent(agent("PJSIP/a1", "talking", "apa"))
        await writes.put_document("queue-counters", "apa", '{"answered": 1}')
        await writes.publish("live", "answered c1")
    assert await next_messages(updates, 1) == ["answered c1"]
    snapshot = await reader.snapshot()
    assert (snapshot.callers, set(snapshot.calls), snapshot.agents["PJSIP/a1"].state) == (
        {},
        {"c1"},
        "talking",
    )
    assert await reader.documents("queue-counters") == {"apa": '{"answered": 1}'}
    await asyncio.sleep(0.01)
    stop.set()
    await watcher
    await updates.close()
    assert (True, True) not in seen and (False, False) not in seen  # never both, never neither


async def test_a_failed_batch_writes_nothing_on_redis(redis_server: RedisServer) -> None:
    """On Redis the batch is sent when its block ends: an error in the block leaves the store as it was."""
    store = RedisStateStore.from_url(redis_server.url, prefix=f"test-{uuid.uuid4().hex}:")
    try:
        with pytest.raises(RuntimeError, match="mirror failed"):
            async with store.batch() as writes:
                await writes.put_caller(caller("c9", queue="apa"))
                raise RuntimeError("mirror failed")
        assert await store.get_caller("c9") is None
    finally:
        await store.close()


# --- pub/sub


async def next_messages(subscription: Subscription, count: int) -> list[str]:
    async with asyncio.timeout(5):
        return [await anext_message(subscription) for _ in range(count)]


async def anext_message(subscription: Subscription) -> str:
    message = await subscription.get()
    assert message is not None, "the subscription ended"
    return message


async def test_pubsub_delivers_in_order_to_two_subscribers(pair: tuple[StateStore, StateStore]) -> None:
    publisher, other = pair
    first = await publisher.subscribe("live")
    second = await other.subscribe("live")
    elsewhere = await other.subscribe("another")
    messages = [f'{{"seq": {i}, "name": "{ODD_TEXT!r}"}}' for i in range(50)] + [ODD_TEXT, ""]
    for message in messages:
        await publisher.publish("live", message)
    await publisher.publish("another", "marker")
    assert await next_messages(first, len(messages)) == messages
    assert await next_messages(second, len(messages)) == messages
    assert await next_messages(elsewhere, 1) == ["marker"]  # nothing of "live" came before it
    for subscription in (first, second, elsewhere):
        await subscription.close()


async def test_closed_subscription_ends_and_gets_nothing_more(store: StateStore) -> None:
    kept = await store.subscribe("live")
    dropped = await store.subscribe("live")
    await store.publish("live", "one")
    await dropped.close()
    await store.publish("live", "two")
    assert await next_messages(kept, 2) == ["one", "two"]
    async with asyncio.timeout(5):
        received = [message async for message in dropped]
    assert received in (["one"], [])  # what arrived before close() may be read; nothing after
    await kept.close()


# --- leader lease


async def test_only_one_contender_wins(pair: tuple[StateStore, StateStore]) -> None:
    first, second = pair
    results = await asyncio.gather(
        first.try_acquire_leader(LEASE, "node-a", 30), second.try_acquire_leader(LEASE, "node-b", 30)
    )
    assert sorted(results) == [False, True]
    winner = "node-a" if results[0] else "node-b"
    loser = "node-b" if results[0] else "node-a"
    assert await first.leader(LEASE) == winner
    assert await second.leader(LEASE) == winner
    assert await second.renew_leader(LEASE, winner, 30) is True
    assert await first.renew_leader(LEASE, loser, 30) is False
    assert await first.release_leader(LEASE, loser) is False
    assert await second.leader(LEASE) == winner
    assert await first.try_acquire_leader(LEASE, winner, 30) is True  # the holder may ask again
    assert await second.release_leader(LEASE, winner) is True
    assert await first.leader(LEASE) is None
    assert await first.try_acquire_leader(LEASE, loser, 30) is True


async def acquire_when_free(store: StateStore, owner: str, ttl_s: float) -> None:
    async with asyncio.timeout(5):
        while True:
            if await store.try_acquire_leader(LEASE, owner, ttl_s):
                return
            await asyncio.sleep(0.05)


async def test_expired_lease_goes_to_the_other(pair: tuple[StateStore, StateStore]) -> None:
    first, second = pair
    assert await first.try_acquire_leader(LEASE, "node-a", 0.3) is True
    assert await second.try_acquire_leader(LEASE, "node-b", 0.3) is False
    await acquire_when_free(second, "node-b", 30)  # node-a stopped renewing
    assert await first.leader(LEASE) == "node-b"
    assert await first.renew_leader(LEASE, "node-a", 0.3) is False  # node-a learns it lost the lease


async def test_leadership_hands_over_on_exit(pair: tuple[StateStore, StateStore]) -> None:
    first, second = pair
    order: list[str] = []
    async with first.leadership(LEASE, "node-a", 0.3) as lead_a:
        waiting_b = asyncio.create_task(second.leadership(LEASE, "node-b", 0.3).__aenter__())
        await asyncio.sleep(0.5)  # longer than the TTL: node-a's renewals keep the lease
        assert not waiting_b.done()
        assert await second.leader(LEASE) == "node-a"
        assert not lead_a.lost.is_set()
        order.append("a done")
    async with asyncio.timeout(5):
        lead_b = await waiting_b
    order.append("b leads")
    assert await first.leader(LEASE) == "node-b"
    await lead_b.__aexit__(None, None, None)
    assert await first.leader(LEASE) is None
    assert order == ["a done", "b leads"]


async def test_leadership_notices_a_lost_lease(pair: tuple[StateStore, StateStore]) -> None:
    first, second = pair
    async with first.leadership(LEASE, "node-a", 0.3) as lead:
        # Someone wrongly takes the lease over (as after a long freeze of node-a past its TTL).
        assert await second.release_leader(LEASE, "node-a") is True
        assert await second.try_acquire_leader(LEASE, "node-b", 30) is True
        async with asyncio.timeout(5):
            await lead.lost.wait()
    assert await second.leader(LEASE) == "node-b"  # leaving did not release someone else's lease


class UnreachableStore(MemoryStateStore):
    """A store whose backend stops answering renewals (as Redis going down)."""

    async def renew_leader(self, name: str, owner: str, ttl_s: float) -> bool:
        raise OSError("connection refused")


async def test_leadership_is_lost_when_renewals_keep_failing() -> None:
    store = UnreachableStore()
    async with store.leadership(LEASE, "node-a", 0.3) as lead:
        async with asyncio.timeout(5):
            await lead.lost.wait()
    await store.close()


# --- close


async def test_close_ends_subscriptions_and_refuses_work(store: StateStore) -> None:
    subscription = await store.subscribe("live")
    await store.put_caller(caller("a"))
    await store.close()
    async with asyncio.timeout(5):
        assert [message async for message in subscription] == []
    with pytest.raises(StateStoreClosed):
        await store.put_caller(caller("b"))
    with pytest.raises(StateStoreClosed):
        await store.snapshot()
    with pytest.raises(StateStoreClosed):
        await store.subscribe("live")
    await store.close()  # idempotent


# --- Redis only


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def client_count(admin: aioredis.Redis) -> int:
    return len(await admin.client_list())


async def test_redis_close_releases_connections(redis_server: RedisServer, admin: aioredis.Redis) -> None:
    before = await client_count(admin)
    store = RedisStateStore.from_url(redis_server.url, prefix=f"test-{uuid.uuid4().hex}:")
    subscriptions = [await store.subscribe(f"chan-{i}") for i in range(3)]
    await store.put_caller(caller("a"))
    assert await client_count(admin) > before
    await subscriptions[0].close()
    await store.close()
    async with asyncio.timeout(5):  # the server notices closed connections asynchronously
        while True:
            if await client_count(admin) == before:
                return
            await asyncio.sleep(0.02)


async def test_redis_two_processes_share_one_model(redis_server: RedisServer) -> None:
    prefix = f"test-{uuid.uuid4().hex}:"
    node_a = RedisStateStore.from_url(redis_server.url, prefix=prefix)
    node_b = RedisStateStore.from_url(redis_server.url, prefix=prefix)
    stranger = RedisStateStore.from_url(redis_server.url, prefix=f"other-{uuid.uuid4().hex}:")
    try:
        await node_a.put_caller(caller("1", priority=2))
        await node_b.put_caller(caller("2", priority=2))  # same rank: arrival order spans processes
        await node_a.put_caller(caller("3", priority=2))
        await node_b.put_caller(caller("1", priority=2, caller_name=ODD_TEXT))  # b updates a's caller
        await node_b.put_agent(agent("PJSIP/agent-101", "paused"))
        await node_a.remove_caller("3")
        snapshot_a, snapshot_b = await node_a.snapshot(), await node_b.snapshot()
        assert snapshot_a == snapshot_b
        assert [c.uniqueid for c in snapshot_a.callers["apa"]] == ["1", "2"]
        assert snapshot_a.callers["apa"][0].caller_name == ODD_TEXT
        assert list(snapshot_a.agents) == ["PJSIP/agent-101"]
        empty = await stranger.snapshot()  # another deployment's prefix sees none of it
        assert (empty.callers, empty.agents, empty.calls) == ({}, {}, {})
    finally:
        for node in (node_a, node_b, stranger):
            await node.close()


async def test_redis_store_needs_decoded_responses(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisStateStore(client)
    finally:
        await client.aclose()
