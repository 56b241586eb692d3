"""The live model mirrored into the state store: what the web of every node reads."""

from __future__ import annotations

import json

from routing.ami import AmiMessage
from routing.live import LiveModel
from routing.mirror import COUNTERS_KIND, LIVE_CHANNEL, StoreMirror
from routing.state import AgentState, CallInProgress, MemoryStateStore, WaitingCaller

T0 = 1_764_345_600.0
NAME = 'Zoé "<b>la fée</b>"\nO\'Brien'


def event(name: str, *headers: tuple[str, str]) -> AmiMessage:
    return AmiMessage((("Event", name), *headers))


def join(model: LiveModel, channel: str, uniqueid: str, position: int, now: float, *, prio: str = "") -> None:
    if prio:
        model.apply(event("VarSet", ("Channel", channel), ("Variable", "QUEUE_PRIO"), ("Value", prio)), now)
    model.apply(
        event(
            "QueueCallerJoin",
            ("Channel", channel),
            ("Uniqueid", uniqueid),
            ("Queue", "apa"),
            ("Position", str(position)),
            ("CallerIDNum", "0611223344"),
            ("CallerIDName", NAME.replace("\n", "\\n").replace('"', '\\"')),
        ),
        now,
    )


def member(status: str = "1", paused: str = "0", reason: str = "") -> AmiMessage:
    return event(
        "QueueMemberStatus",
        ("Queue", "apa"),
        ("Interface", "PJSIP/a101"),
        ("MemberName", "Marie Durand"),
        ("Status", status),
        ("Paused", paused),
        ("PausedReason", reason),
        ("Wrapuptime", "10"),
    )


async def test_the_store_follows_the_model_and_each_sync_is_published() -> None:
    model, store = LiveModel(), MemoryStateStore()
    mirror = StoreMirror(model, store, priority_reason=lambda caller: f"raison de {caller.channel}")
    updates = await store.subscribe(LIVE_CHANNEL)
    join(model, "PJSIP/c-1", "1.1", 1, T0, prio="10")
    model.apply(
        event("VarSet", ("Channel", "PJSIP/c-1"), ("Variable", "GUICHET_CITIZEN_ID"), ("Value", "cit-7")), T0
    )
    join(model, "PJSIP/c-2", "1.2", 1, T0 + 1, prio="20")  # urgent: ahead
    model.apply(member(), T0 + 1)
    assert await mirror.sync(T0 + 1) == 4  # 2 callers, 1 agent, the queue's counters
    (callers,) = (await store.snapshot()).callers.values()
    assert [c.uniqueid for c in callers] == ["1.2", "1.1"]
    second = callers[1]
    assert (second.caller_name, second.priority, second.citizen_id) == (NAME, 10, "cit-7")
    assert second.priority_reason == "raison de PJSIP/c-1"
    assert (await store.get_agent("PJSIP/a101")) == AgentState(
        "PJSIP/a101", "Marie Durand", "available", "", ("apa",), T0 + 1
    )
    message = json.loads(await updates.get() or "")
    assert message["records"] == 4
    assert json.loads((await store.documents(COUNTERS_KIND))["apa"])["offered"] == 2
    # nothing changed: nothing written, nothing published
    assert await mirror.sync(T0 + 2) == 0
    # the urgent caller is answered; the agent's state changes, its "since" with it
    model.apply(event("QueueCallerLeave", ("Channel", "PJSIP/c-2"), ("Queue", "apa")), T0 + 3)
    model.apply(
        event(
            "AgentConnect",
            ("Channel", "PJSIP/c-2"),
            ("Uniqueid", "1.2"),
            ("Queue", "apa"),
            ("Interface", "PJSIP/a101"),
            ("DestChannel", "PJSIP/a101-0001"),
            ("CallerIDNum", "0611223344"),
        ),
        T0 + 3,
    )
    assert await mirror.sync(T0 + 3) == 4  # caller removed, call added, agent updated, answered + 1
    snapshot = await store.snapshot()
    assert [c.uniqueid for c in snapshot.callers["apa"]] == ["1.1"]
    assert snapshot.calls["1.2"] == CallInProgress("1.2", "apa", "PJSIP/a101", "0611223344", T0 + 3)
    assert (snapshot.agents["PJSIP/a101"].state, snapshot.agents["PJSIP/a101"].since) == ("talking", T0 + 3)
    message = json.loads(await updates.get() or "")
    assert message["records"] == 4
    counters = json.loads((await store.documents(COUNTERS_KIND))["apa"])
    assert (counters["offered"], counters["answered"]) == (2, 1)


async def test_a_new_leader_corrects_what_a_dead_one_left_in_the_store() -> None:
    store = MemoryStateStore()
    stale = WaitingCaller("9.9", "PJSIP/old-1", "apa", "0600000000", "", 0, T0, "apa", "")
    await store.put_caller(stale)
    await store.put_agent(AgentState("PJSIP/a101", "Marie Durand", "paused", "pause", ("apa",), T0))
    await store.put_call(CallInProgress("8.8", "apa", "PJSIP/a102", "0600000001", T0))
    model = LiveModel()
    model.apply(member(paused="1", reason="pause"), T0 + 50)
    mirror = StoreMirror(model, store)
    await mirror.adopt()
    # the stale caller and call removed, the counters written; the agent unchanged
    assert await mirror.sync(T0 + 60) == 3
    snapshot = await store.snapshot()
    assert snapshot.callers == {} and snapshot.calls == {}
    # unchanged state: its "since" is the one the dead leader wrote
    assert snapshot.agents["PJSIP/a101"].since == T0


async def test_a_wrapup_ending_without_an_event_reaches_the_store_on_the_next_sync() -> None:
    model, store = LiveModel(), MemoryStateStore()
    mirror = StoreMirror(model, store)
    model.apply(member(), T0)
    model.apply(
        event(
            "AgentComplete",
            ("Channel", "PJSIP/c-1"),
            ("Queue", "apa"),
            ("Interface", "PJSIP/a101"),
        ),
        T0 + 100,
    )
    await mirror.sync(T0 + 101)
    assert (await store.get_agent("PJSIP/a101") or AgentState("", "", "", "", (), 0)).state == "wrapup"
    await mirror.sync(T0 + 111)  # Wrapuptime 10 s has passed
    agent = await store.get_agent("PJSIP/a101")
    assert agent is not None and (agent.state, agent.since) == ("available", T0 + 111)
