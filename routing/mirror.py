"""The live model mirrored into the live state store, which every engine node's web server reads.

Only the node that consumes AMI (the leader) owns a :class:`routing.live.LiveModel`; the others serve the
web from the store.  :class:`StoreMirror` keeps the store equal to the model: each :meth:`~StoreMirror.sync`
derives the records the model stands for (waiting callers in serving order, agents, calls in progress),
writes those that differ from what it last wrote, deletes those gone, then publishes one message on
:data:`LIVE_CHANNEL` naming what changed.  Deriving instead of translating each change keeps one code path
for events, rebuilds after a reconnection and time-driven changes (an agent's wrap-up ending), and a new
leader starts from what the store holds (:meth:`~StoreMirror.adopt`), so records left by a dead leader are
corrected or removed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from typing import Final

from routing.live import AgentView, CallView, Change, LiveModel, QueueCounters
from routing.live import WaitingCaller as LiveCaller
from routing.state import AgentState, CallInProgress, Snapshot, StateStore, StoreWriter, WaitingCaller

LIVE_CHANNEL: Final = "live"  # pub/sub channel of the store: one JSON message per sync that changed something
# Store documents, one per queue (JSON of routing.live.QueueCounters): what the model counted so far.
COUNTERS_KIND: Final = "queue-counters"
COUNTER_NAMES: Final = tuple(f.name for f in fields(QueueCounters))

_Record = WaitingCaller | AgentState | CallInProgress
_Key = tuple[str, str]  # ("caller" | "agent" | "call", uniqueid or agent id)


def caller_record(queue: str, caller: LiveCaller, priority_reason: str = "") -> WaitingCaller:
    return WaitingCaller(
        uniqueid=caller.uniqueid,
        channel=caller.channel,
        queue=queue,
        caller_number=caller.caller_num,
        caller_name=caller.caller_name,
        priority=caller.priority or 0,  # unknown: Asterisk's default
        joined_at=caller.join_time,
        service=caller.service or queue,
        urgency=caller.urgency or "",
        citizen_id=caller.citizen_id,
        contact_id=caller.contact_id,
        reason=caller.reason,
        priority_reason=priority_reason,
    )


def call_record(call: CallView) -> CallInProgress:
    return CallInProgress(
        uniqueid=call.caller_uniqueid,
        queue=call.queue,
        agent=call.interface,
        caller_number=call.caller_num,
        started_at=call.since,
        caller_name=call.caller_name,
        citizen_id=call.citizen_id,
        contact_id=call.contact_id,
        reason=call.reason,
    )


def _stored(snapshot: Snapshot) -> dict[_Key, _Record]:
    records: dict[_Key, _Record] = {}
    for callers in snapshot.callers.values():
        records.update((("caller", c.uniqueid), c) for c in callers)
    records.update((("agent", a.agent), a) for a in snapshot.agents.values())
    records.update((("call", c.uniqueid), c) for c in snapshot.calls.values())
    return records


class StoreMirror:
    """Writes the live model's differences into ``store`` (see the module's docstring).

    ``priority_reason(caller)`` gives the explanation of a waiting caller's priority (aging's), if any.
    """

    def __init__(
        self,
        live: LiveModel,
        store: StateStore,
        *,
        priority_reason: Callable[[LiveCaller], str] = lambda caller: "",
    ) -> None:
        self._live = live
        self._store = store
        self._priority_reason = priority_reason
        self._written: dict[_Key, _Record] = {}
        self._counters: dict[str, str] = {}  # queue -> the counters document last written
        self._since: dict[str, tuple[str, float]] = {}  # agent -> (state shown, since when)

    async def adopt(self) -> None:
        """Take what the store holds as written (a new leader's first step, before its first sync)."""
        self._written = _stored(await self._store.snapshot())
        self._counters = await self._store.documents(COUNTERS_KIND)
        self._since = {
            key[1]: (record.state, record.since)
            for key, record in self._written.items()
            if isinstance(record, AgentState)
        }

    def _agent_record(self, agent: AgentView, now: float) -> AgentState:
        state = agent.state.value
        shown = self._since.get(agent.interface)
        since = shown[1] if shown is not None and shown[0] == state else now
        self._since[agent.interface] = (state, since)
        return AgentState(
            agent=agent.interface,
            name=agent.name,
            state=state,
            paused_reason=agent.paused_reason,
            queues=agent.queues,
            since=since,
        )

    def _wanted(self, now: float) -> dict[_Key, _Record]:
        wanted: dict[_Key, _Record] = {}
        for queue in self._live.queue_names():
            for caller in self._live.callers(queue):
                reason = self._priority_reason(caller)
                wanted["caller", caller.uniqueid] = caller_record(queue, caller, reason)
        for agent in self._live.agents(now):
            wanted["agent", agent.interface] = self._agent_record(agent, now)
        for call in self._live.calls():
            wanted["call", call.caller_uniqueid] = call_record(call)
        for gone in set(self._since) - {key for kind, key in wanted if kind == "agent"}:
            del self._since[gone]
        return wanted

    async def sync(self, now: float, changes: Sequence[Change] = ()) -> int:
        """Write what differs from the last sync (records, then each queue's counters) and publish it (with
        ``changes``) if anything did, in one batch of the store: readers see all of it or none.  Returns
        the number of records and documents written or deleted."""
        wanted = self._wanted(now)
        counters = {
            queue: json.dumps(asdict(self._live.counters(queue)), sort_keys=True)
            for queue in self._live.queue_names()
        }
        gone = [key for key in self._written if key not in wanted]
        changed = [record for key, record in wanted.items() if self._written.get(key) != record]
        counted = {queue: text for queue, text in counters.items() if self._counters.get(queue) != text}
        written = len(gone) + len(changed) + len(counted)
        if not written:
            return 0
        async with self._store.batch() as writes:
            for key in gone:
                await _remove(writes, key)
            for record in changed:
                await _put(writes, record)
            for queue, text in counted.items():
                await writes.put_document(COUNTERS_KIND, queue, text)
            message = {"at": now, "records": written, "changes": [[c.kind, c.key, c.queue] for c in changes]}
            await writes.publish(LIVE_CHANNEL, json.dumps(message, ensure_ascii=False))
        self._written = wanted
        self._counters.update(counted)
        return written


async def _put(writes: StoreWriter, record: _Record) -> None:
    if isinstance(record, WaitingCaller):
        await writes.put_caller(record)
    elif isinstance(record, AgentState):
        await writes.put_agent(record)
    else:
        await writes.put_call(record)


async def _remove(writes: StoreWriter, key: _Key) -> None:
    kind, name = key
    if kind == "caller":
        await writes.remove_caller(name)
    elif kind == "agent":
        await writes.remove_agent(name)
    else:
        await writes.remove_call(name)
