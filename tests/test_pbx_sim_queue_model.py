"""app_queue model alone: priority order, Immediate, pause, wrap-up, ringinuse=no, joinempty, counters."""

from __future__ import annotations

import pytest

from pbx_sim.app_queue import DeviceStatus, QueueConfig, QueueError, QueueSystem
from pbx_sim.channels import Channel


def chan(n: int) -> Channel:
    return Channel(
        name=f"PJSIP/citizen-{n:08x}", uniqueid=f"1.{n}", linkedid=f"1.{n}", context="c", exten="1"
    )


def system(**kwargs: object) -> QueueSystem:
    queues = QueueSystem([QueueConfig("q", **kwargs)], now=0.0)  # type: ignore[arg-type]
    return queues


def test_higher_priority_goes_ahead_and_immediate_moves() -> None:
    q = system().queue("q")
    assert q.join(chan(0), 0, 0).original_position == 1
    assert q.join(chan(1), 5, 1).original_position == 1
    assert q.join(chan(2), 10, 2).original_position == 1
    assert [c.priority for c in q.callers] == [10, 5, 0]
    q.change_priority(chan(1).name, 15, immediate=False)
    assert [c.channel.name for c in q.callers] == [chan(2).name, chan(1).name, chan(0).name]
    q.change_priority(chan(0).name, 20, immediate=True)
    assert q.callers[0].channel.name == chan(0).name
    with pytest.raises(QueueError, match="No such caller"):
        q.change_priority("PJSIP/nosuch-00000000", 1, immediate=True)


def test_pause_wrapup_and_ringinuse_block_ringing() -> None:
    queues = system(wrapuptime=10)
    queues.add_member("q", "PJSIP/a", 0.0)
    q = queues.queue("q")
    q.join(chan(0), 0, 0)
    assert q.assignments(0) == []  # device unavailable (not registered)
    queues.set_device_state("PJSIP/a", DeviceStatus.NOT_INUSE)
    assert len(q.assignments(0)) == 1
    queues.set_paused("PJSIP/a", True, "lunch", 0)
    assert q.assignments(0) == []
    queues.set_paused("PJSIP/a", False, "", 0)
    queues.set_device_state("PJSIP/a", DeviceStatus.INUSE)  # on a call elsewhere
    assert q.assignments(0) == []
    queues.set_device_state("PJSIP/a", DeviceStatus.NOT_INUSE)
    q.record_complete(q.members["PJSIP/a"], 30, True, now=100)
    assert q.assignments(105) == []  # wrap-up
    assert len(q.assignments(111)) == 1


def test_joinempty_and_counters() -> None:
    queues = system(joinempty="no")
    with pytest.raises(QueueError, match="JOINEMPTY"):
        queues.queue("q").join(chan(0), 0, 0)
    queues.add_member("q", "PJSIP/a", 0.0, paused=True)
    with pytest.raises(QueueError, match="JOINEMPTY"):
        queues.queue("q").join(chan(0), 0, 0)
    queues.set_paused("PJSIP/a", False, "", 0)
    q = queues.queue("q")
    caller = q.join(chan(0), 0, 0)
    assert q.record_connect(caller, 0) == (0, True)
    q.record_complete(q.members["PJSIP/a"], 6, True, now=6)
    other = q.join(chan(1), 0, 10)
    q.record_abandon(other, 14)
    params = dict(q.params_headers())
    assert (params["TalkTime"], params["Completed"], params["Abandoned"]) == ("6", "1", "1")
    assert (params["ServicelevelPerf"], params["ServicelevelPerf2"]) == ("100.0", "50.0")
