"""Simulated time: every delay of the simulated PBX goes through a :class:`SimClock`.

The clock runs ``speed`` times faster than the event loop's clock, so a 30 s queue
wait takes 1 s of real time at ``speed=30``.  ``now()`` is in simulated epoch
seconds (used for uniqueids, LoginTime, LastCall, Wait, HoldTime and TalkTime),
and every coroutine of the simulator sleeps through :meth:`SimClock.sleep`.
Because asyncio fires timers in deadline order, scaling every delay by the same
factor keeps the order of events whatever the speed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class SimClock:
    """Simulated epoch time, ``speed`` times faster than the running event loop."""

    def __init__(self, speed: float = 1.0, epoch: float | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        self.speed = speed
        self._epoch = time.time() if epoch is None else epoch
        self._loop_start: float | None = None

    def _loop_time(self) -> float:
        loop_time = asyncio.get_running_loop().time()
        if self._loop_start is None:
            self._loop_start = loop_time
        return loop_time

    def now(self) -> float:
        """Simulated epoch seconds."""
        loop_time = self._loop_time()
        assert self._loop_start is not None
        return self._epoch + (loop_time - self._loop_start) * self.speed

    def start(self) -> None:
        """Pin the simulated epoch to the current loop time (called by the PBX at start)."""
        self._loop_start = asyncio.get_running_loop().time()

    def real_delay(self, sim_seconds: float) -> float:
        """Real seconds that ``sim_seconds`` of simulated time last."""
        return max(0.0, sim_seconds) / self.speed

    async def sleep(self, sim_seconds: float) -> None:
        """Sleep ``sim_seconds`` of simulated time."""
        await asyncio.sleep(self.real_delay(sim_seconds))

    def call_later(self, sim_seconds: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        """Run ``callback()`` after ``sim_seconds`` of simulated time."""
        return asyncio.get_running_loop().call_later(self.real_delay(sim_seconds), callback)
