"""The live state store on Redis, for several engine processes (see :mod:`routing.state`).

Keys, all under ``prefix`` (so that two deployments can share one Redis):

* ``caller:<uniqueid>``: hash, one JSON value per field of :class:`~routing.state.WaitingCaller`, plus
  ``_queue``, ``_seq`` (arrival number) and ``_member`` (its entry in the queue's sorted set);
* ``queue:<queue>``: sorted set, every score 0, members ``<serving rank><seq:020d>:<uniqueid>`` so that
  Redis's lexical order of equal scores is the exact serving order; ``queues``: set of non-empty queues;
  ``arrivals``: the arrival counter;
* ``agent:<id>`` / ``agents`` and ``call:<uniqueid>`` / ``calls``: a hash per record and an index set;
* ``doc:<kind>``: hash of documents (id -> text);
* ``lease:<name>``: the holder of a leader lease (SET NX PX; renew and release are compare-and-set scripts);
* pub/sub channels are named ``<prefix><channel>``.

Multi-key changes and reads run as Lua scripts or MULTI/EXEC transactions, hence atomic: two processes on
one Redis see one consistent model. The client must decode responses (``decode_responses=True``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import AsyncIterator
from typing import TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline, PubSub
from redis.exceptions import RedisError

from routing.state import (
    SERVING_RANK_LENGTH,
    AgentState,
    CallInProgress,
    QueueSubscription,
    Snapshot,
    StateStore,
    StateStoreClosed,
    StoreWriter,
    Subscription,
    WaitingCaller,
    check_caller,
    check_name,
    check_ttl,
    decode_record,
    encode_record,
    serving_rank,
)

log = logging.getLogger(__name__)

_R = TypeVar("_R", WaitingCaller, AgentState, CallInProgress)

# Length of "<serving rank><seq:020d>:" before the uniqueid in a queue's sorted-set member.
_MEMBER_HEAD = SERVING_RANK_LENGTH + 21

_PUT_CALLER = """
local seq = redis.call('HGET', KEYS[1], '_seq')
if seq then
  local old_queue = redis.call('HGET', KEYS[1], '_queue')
  local old_key = ARGV[1] .. old_queue
  redis.call('ZREM', old_key, redis.call('HGET', KEYS[1], '_member'))
  if redis.call('EXISTS', old_key) == 0 then redis.call('SREM', KEYS[4], old_queue) end
else
  seq = redis.call('INCR', KEYS[2])
end
local member = ARGV[2] .. string.format('%020d', tonumber(seq)) .. ':' .. ARGV[3]
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_seq', seq, '_queue', ARGV[4], '_member', member, unpack(ARGV, 5))
redis.call('ZADD', KEYS[3], 0, member)
redis.call('SADD', KEYS[4], ARGV[4])
return 1
"""

_REMOVE_CALLER = """
local q = redis.call('HGET', KEYS[1], '_queue')
if not q then return 0 end
local zkey = ARGV[1] .. q
redis.call('ZREM', zkey, redis.call('HGET', KEYS[1], '_member'))
if redis.call('EXISTS', zkey) == 0 then redis.call('SREM', KEYS[2], q) end
redis.call('DEL', KEYS[1])
return 1
"""

# ARGV[1]: prefix, ARGV[2]: member head length, ARGV[3] (optional): only this queue, no agents nor calls.
_READ = """
local p = ARGV[1]
local head = tonumber(ARGV[2])
local function callers(q)
  local out = {}
  for i, m in ipairs(redis.call('ZRANGE', p .. 'queue:' .. q, 0, -1)) do
    out[i] = redis.call('HGETALL', p .. 'caller:' .. string.sub(m, head + 1))
  end
  return out
end
local function records(kind, index)
  local out = {}
  for i, id in ipairs(redis.call('SMEMBERS', p .. index)) do
    out[i] = redis.call('HGETALL', p .. kind .. id)
  end
  return out
end
if ARGV[3] then return {{{ARGV[3], callers(ARGV[3])}}, {}, {}} end
local queues = {}
for i, q in ipairs(redis.call('SMEMBERS', p .. 'queues')) do queues[i] = {q, callers(q)} end
return {queues, records('agent:', 'agents'), records('call:', 'calls')}
"""

# KEYS[1]: the record's hash, KEYS[2]: the index set; ARGV[1]: the record's id, ARGV[2..]: field, value...
_PUT_RECORD = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

_REMOVE_RECORD = """
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _flat(record: WaitingCaller | AgentState | CallInProgress) -> list[str]:
    return [item for pair in encode_record(record).items() for item in pair]


def _pairs(flat: list[str]) -> dict[str, str]:
    """A HGETALL reply as a dict (scripts return it flat: field, value, field, value...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


async def _close_pubsub(pubsub: PubSub) -> None:
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated


def _ms(ttl_s: float) -> int:
    check_ttl(ttl_s)
    return max(1, round(ttl_s * 1000))


class RedisStateStore(StateStore):
    """The live state in Redis; with ``owns_client``, :meth:`close` also closes ``client``."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str = "guichet:", owns_client: bool = False
    ) -> None:
        check_name("key prefix", prefix)
        if not client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisStateStore needs a client made with decode_responses=True")
        self._redis = client
        self._writer: aioredis.Redis | Pipeline = client  # where writes go: the client, or a batch's pipeline
        self._prefix = prefix
        self._owns_client = owns_client
        self._subscriptions: set[QueueSubscription] = set()
        self._closed = False
        self._put_caller = client.register_script(_PUT_CALLER)
        self._remove_caller = client.register_script(_REMOVE_CALLER)
        self._read = client.register_script(_READ)
        self._put_record = client.register_script(_PUT_RECORD)
        self._remove_record = client.register_script(_REMOVE_RECORD)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "guichet:") -> RedisStateStore:
        """A store with its own client (closed by :meth:`close`), e.g. ``redis://127.0.0.1:6379/0``."""
        return cls(aioredis.Redis.from_url(url, decode_responses=True), prefix=prefix, owns_client=True)

    def _key(self, *parts: str) -> str:
        return self._prefix + "".join(parts)

    def _check_open(self) -> None:
        if self._closed:
            raise StateStoreClosed("the live state store is closed")

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[StoreWriter]:
        """The writes of the block go into one MULTI/EXEC transaction, sent when the block ends."""
        self._check_open()
        async with self._redis.pipeline(transaction=True) as pipeline:
            writer = copy.copy(self)
            writer._writer = pipeline
            yield writer
            await pipeline.execute()

    # --- waiting callers
    async def put_caller(self, caller: WaitingCaller) -> None:
        self._check_open()
        check_caller(caller)
        await self._put_caller(
            keys=[
                self._key("caller:", caller.uniqueid),
                self._key("arrivals"),
                self._key("queue:", caller.queue),
                self._key("queues"),
            ],
            args=[self._key("queue:"), serving_rank(caller), caller.uniqueid, caller.queue, *_flat(caller)],
            client=self._writer,
        )

    async def remove_caller(self, uniqueid: str) -> bool:
        self._check_open()
        removed = await self._remove_caller(
            keys=[self._key("caller:", uniqueid), self._key("queues")],
            args=[self._key("queue:")],
            client=self._writer,
        )
        return bool(removed)

    async def get_caller(self, uniqueid: str) -> WaitingCaller | None:
        return await self._get(WaitingCaller, self._key("caller:", uniqueid))

    async def waiting(self, queue: str) -> list[WaitingCaller]:
        self._check_open()
        queues, _, _ = await self._read(args=[self._prefix, _MEMBER_HEAD, queue])
        return [decode_record(WaitingCaller, _pairs(flat)) for flat in queues[0][1]]

    # --- agents and calls: a hash per record plus an index set
    async def _get(self, kind: type[_R], key: str) -> _R | None:
        self._check_open()
        raw = cast("dict[str, str]", await self._redis.hgetall(key))
        return decode_record(kind, raw) if raw else None

    async def _put(self, key: str, index: str, ident: str, record: AgentState | CallInProgress) -> None:
        self._check_open()
        await self._put_record(
            keys=[key, self._key(index)], args=[ident, *_flat(record)], client=self._writer
        )

    async def _remove(self, key: str, index: str, ident: str) -> bool:
        self._check_open()
        return bool(
            await self._remove_record(keys=[key, self._key(index)], args=[ident], client=self._writer)
        )

    async def put_agent(self, agent: AgentState) -> None:
        check_name("agent id", agent.agent)
        await self._put(self._key("agent:", agent.agent), "agents", agent.agent, agent)

    async def remove_agent(self, agent: str) -> bool:
        return await self._remove(self._key("agent:", agent), "agents", agent)

    async def get_agent(self, agent: str) -> AgentState | None:
        return await self._get(AgentState, self._key("agent:", agent))

    async def put_call(self, call: CallInProgress) -> None:
        check_name("call uniqueid", call.uniqueid)
        await self._put(self._key("call:", call.uniqueid), "calls", call.uniqueid, call)

    async def remove_call(self, uniqueid: str) -> bool:
        return await self._remove(self._key("call:", uniqueid), "calls", uniqueid)

    async def get_call(self, uniqueid: str) -> CallInProgress | None:
        return await self._get(CallInProgress, self._key("call:", uniqueid))

    # --- documents: one hash per kind
    async def put_document(self, kind: str, ident: str, text: str) -> None:
        self._check_open()
        check_name("document kind", kind)
        check_name("document id", ident)
        await self._writer.hset(self._key("doc:", kind), ident, text)

    async def remove_document(self, kind: str, ident: str) -> bool:
        self._check_open()
        return bool(await self._redis.hdel(self._key("doc:", kind), ident))

    async def documents(self, kind: str) -> dict[str, str]:
        self._check_open()
        return cast("dict[str, str]", await self._redis.hgetall(self._key("doc:", kind)))

    async def snapshot(self) -> Snapshot:
        self._check_open()
        queues, agents, calls = await self._read(args=[self._prefix, _MEMBER_HEAD])
        callers = {
            queue: tuple(decode_record(WaitingCaller, _pairs(flat)) for flat in members)
            for queue, members in sorted(queues)
            if members
        }
        agent_records = (decode_record(AgentState, _pairs(flat)) for flat in agents if flat)
        call_records = (decode_record(CallInProgress, _pairs(flat)) for flat in calls if flat)
        return Snapshot(
            callers=callers,
            agents={a.agent: a for a in agent_records},
            calls={c.uniqueid: c for c in call_records},
        )

    # --- live updates
    async def publish(self, channel: str, message: str) -> None:
        self._check_open()
        await self._writer.publish(self._key(channel), message)

    async def subscribe(self, channel: str) -> Subscription:
        self._check_open()
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._key(channel))
            # Wait for Redis's confirmation: from then on every published message reaches us.
            while True:
                confirmation = await pubsub.get_message(timeout=None)
                if confirmation is not None and confirmation["type"] == "subscribe":
                    break
        except BaseException:
            await _close_pubsub(pubsub)
            raise

        async def pump(subscription: QueueSubscription) -> None:
            try:
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        subscription.deliver(message["data"])
            except RedisError as exc:
                log.warning("subscription to %s ended: %s", channel, exc)
            subscription.end()

        async def detach(subscription: QueueSubscription) -> None:
            self._subscriptions.discard(subscription)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await _close_pubsub(pubsub)

        subscription = QueueSubscription(detach)
        task = asyncio.create_task(pump(subscription), name=f"redis-subscription-{channel}")
        self._subscriptions.add(subscription)
        return subscription

    # --- leader lease
    async def try_acquire_leader(self, name: str, owner: str, ttl_s: float) -> bool:
        self._check_open()
        if await self._redis.set(self._key("lease:", name), owner, nx=True, px=_ms(ttl_s)):
            return True
        return await self.renew_leader(name, owner, ttl_s)

    async def renew_leader(self, name: str, owner: str, ttl_s: float) -> bool:
        self._check_open()
        return bool(await self._renew(keys=[self._key("lease:", name)], args=[owner, _ms(ttl_s)]))

    async def release_leader(self, name: str, owner: str) -> bool:
        self._check_open()
        return bool(await self._release(keys=[self._key("lease:", name)], args=[owner]))

    async def leader(self, name: str) -> str | None:
        self._check_open()
        return cast("str | None", await self._redis.get(self._key("lease:", name)))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.close()
        if self._owns_client:
            await self._redis.aclose()
