"""Priority aging: a waiting caller's priority rises with its wait, with a score supervisors can read.

The policy (:class:`AgingPolicy`) is pure: a caller's score is its **base** priority (the
``QUEUE_PRIO`` the IVR gave it: 0 normal, 10 high, 20 urgent by default) plus an aging **bonus** of
``floor(points * waited / target)``, where ``target`` is the queue's service-level target
(``[queues.<name>] service_level_s``) and ``points`` is ``[routing] aging_points``.  With the
defaults (10 points, 30 s), a normal caller who has waited twice the target (60 s) reaches the
priority of an urgent caller who just arrived, and goes ahead of it once it has waited longer.
A score never lowers a caller's priority: a caller whose current priority is already higher (a
supervisor raised it, say) keeps it, and the explanation says so.

The ticker (:class:`AgingTicker`) applies the scores to Asterisk: for every waiting caller of the
live model whose score exceeds its current priority it sends ``QueueChangePriorityCaller`` with
``Immediate: yes`` (without it Asterisk stores the priority but leaves the caller where it is, see
the round-2 recording ``ami_events_priority_ordering``), then reports the change to the live model,
since Asterisk emits no event for it.

Why the base is read from ``QUEUE_PRIO`` and not from the caller's current priority:
``QueueChangePriorityCaller`` changes the priority in the queue but not the channel variable, so
the variable still holds the base, while ``QueueStatus`` (what a new leader rebuilds its model
from) gives the aged priority; taking that as the base would count the wait twice.  A caller whose
``QUEUE_PRIO`` the live model has not seen (first seen in a snapshot) gets it read once with
``Getvar`` (empty: never set, Asterisk's default 0).

Only the leader node runs a ticker (it steers Asterisk); :meth:`AgingTicker.scores` gives the
latest score of each waiting caller (by uniqueid) for the engine to publish to supervisors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from guichet.config import QueuePolicy, Settings
from guichet.names import (
    H_CALLER,
    H_CHANNEL,
    H_IMMEDIATE,
    H_PRIORITY,
    H_QUEUE,
    H_VALUE,
    H_VARIABLE,
    QUEUE_PRIO,
)
from ivr.urgency import Urgency
from routing.ami_client import AmiResponse
from routing.errors import AmiActionError, AmiConnectionLost, AmiTimeout
from routing.live import Change, LiveModel, WaitingCaller

__all__ = ["AgingPolicy", "AgingTicker", "AmiActions", "Score"]

log = logging.getLogger(__name__)

QUEUE_CHANGE_PRIORITY_CALLER = "QueueChangePriorityCaller"
GETVAR = "Getvar"
_URGENCY_LABELS = {level.key: level.label_fr for level in Urgency}


class AmiActions(Protocol):
    """What the ticker needs of :class:`routing.ami_client.AmiClient`: actions with replies.

    ``Response: Error`` raises :class:`AmiActionError`, a dropped connection
    :class:`AmiConnectionLost`.
    """

    async def send_action(self, action: str, headers: Sequence[tuple[str, str]] = (), /) -> AmiResponse: ...


@dataclass(frozen=True, slots=True)
class Score:
    """A waiting caller's priority as aging computes it, and why (in French, for supervisors)."""

    priority: int  # max(base + bonus, the caller's current priority)
    base: int  # QUEUE_PRIO given by the IVR (unknown: 0)
    bonus: int  # floor(points * waited_s / target_s)
    waited_s: float
    target_s: float  # the queue's service-level target
    explanation: str


class AgingPolicy:
    """``score = base + floor(points * waited / target)``; ``targets`` are per queue (seconds).

    Queues without a target of their own use ``default_target_s``.  Raises ValueError for points
    below 1 or a target that is not a positive number of seconds.
    """

    def __init__(
        self,
        points: int,
        targets: Mapping[str, float],
        default_target_s: float = QueuePolicy.service_level_s,
    ) -> None:
        if isinstance(points, bool) or not isinstance(points, int) or points < 1:
            raise ValueError(f"aging points must be an integer of at least 1, got {points!r}")
        for name, target in {**targets, "default": default_target_s}.items():
            if not 0 < target < math.inf:
                raise ValueError(f"{name} service-level target must be positive seconds, got {target!r}")
        self.points = points
        self._targets = dict(targets)
        self._default_target_s = default_target_s

    @classmethod
    def from_settings(cls, settings: Settings) -> AgingPolicy:
        """``[routing] aging_points`` and each ``[queues.<name>] service_level_s``."""
        targets = {name: policy.service_level_s for name, policy in settings.queues.items()}
        return cls(settings.routing.aging_points, targets)

    def target_s(self, queue: str) -> float:
        return self._targets.get(queue, self._default_target_s)

    def score(self, caller: WaitingCaller, queue: str, now: float, *, base: int | None = None) -> Score:
        """The score of ``caller`` waiting in ``queue`` at ``now`` (epoch seconds).

        ``base`` is the caller's priority before any aging (its ``QUEUE_PRIO``); None: the caller's
        current priority is its base (it was never aged).  An unknown priority counts as 0.
        """
        current = caller.priority or 0
        known_base = base if base is not None else caller.priority
        start = known_base or 0
        waited = max(0.0, now - caller.join_time)
        target = self.target_s(queue)
        bonus = math.floor(self.points * waited / target)
        aged = start + bonus
        origin = (
            f"priorité d'origine {start}" if known_base is not None else "priorité d'origine inconnue (0)"
        )
        if caller.urgency:
            origin += f" (urgence : {_URGENCY_LABELS.get(caller.urgency, caller.urgency)})"
        sum_text = (
            f"{aged} = {origin} + {bonus} pour {_wait_text(waited)} d'attente "
            f"(+{self.points} par {_seconds(target)} attendues, l'objectif de service de la file)"
        )
        if current > aged:
            explanation = f"{current} : priorité actuelle gardée, plus haute que {sum_text}"
        else:
            explanation = sum_text
        return Score(
            priority=max(current, aged),
            base=start,
            bonus=bonus,
            waited_s=waited,
            target_s=target,
            explanation=explanation,
        )


def _seconds(value: float) -> str:
    """``30 s``, ``22,5 s``: seconds as a French reader writes them."""
    text = str(int(value)) if value == int(value) else f"{value:g}".replace(".", ",")
    return f"{text} s"


def _wait_text(waited_s: float) -> str:
    """Whole seconds: ``36 s``, ``2 min 5 s``."""
    minutes, seconds = divmod(int(waited_s), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


class AgingTicker:
    """Raises waiting callers' priorities in Asterisk from the policy's scores.

    ``ami`` sends the actions (an :class:`~routing.ami_client.AmiClient`), ``live`` is the engine's
    live model (read, and told of each change made), ``clock`` gives epoch seconds (the clock of
    the live model's join times).
    """

    def __init__(
        self, ami: AmiActions, live: LiveModel, policy: AgingPolicy, clock: Callable[[], float]
    ) -> None:
        self._ami = ami
        self._live = live
        self._policy = policy
        self._clock = clock
        self._scores: dict[str, Score] = {}

    def scores(self) -> Mapping[str, Score]:
        """The latest score of each caller waiting at the last tick, by uniqueid (read-only)."""
        return MappingProxyType(self._scores)

    async def tick(self) -> list[Change]:
        """Score every waiting caller; raise in Asterisk those whose score exceeds their priority.

        A caller gone meanwhile (an error reply) is skipped; AmiConnectionLost and AmiTimeout
        propagate (the changes made before stay made).  Returns the live model's changes.
        """
        now = self._clock()
        scores: dict[str, Score] = {}
        raises: list[tuple[str, WaitingCaller, Score]] = []
        for queue in self._live.queue_names():
            for caller in self._live.callers(queue):
                base = await self._base(caller.channel)
                if base is None:
                    continue
                score = self._policy.score(caller, queue, now, base=base)
                scores[caller.uniqueid] = score
                if score.priority > (caller.priority or 0):
                    raises.append((queue, caller, score))
        self._scores = scores
        changes: list[Change] = []
        for queue, caller, score in raises:
            headers = [
                (H_QUEUE, queue),
                (H_CALLER, caller.channel),
                (H_PRIORITY, str(score.priority)),
                (H_IMMEDIATE, "yes"),
            ]
            try:
                await self._ami.send_action(QUEUE_CHANGE_PRIORITY_CALLER, headers)
            except AmiActionError as exc:
                log.info("aging skipped %s in %s (gone meanwhile?): %s", caller.channel, queue, exc.message)
                del scores[caller.uniqueid]
                continue
            log.debug("aging: %s in %s raised to %s", caller.channel, queue, score.priority)
            changes += self._live.note_priority_change(queue, caller.channel, score.priority, immediate=True)
        return changes

    async def _base(self, channel: str) -> int | None:
        """The caller's QUEUE_PRIO, read once with Getvar when the live model has not seen it;
        None when the channel is gone."""
        base = self._live.queue_prio(channel)
        if base is not None:
            return base
        try:
            reply = await self._ami.send_action(GETVAR, [(H_CHANNEL, channel), (H_VARIABLE, QUEUE_PRIO)])
        except AmiActionError as exc:
            log.info("aging skipped %s: Getvar %s failed: %s", channel, QUEUE_PRIO, exc.message)
            return None
        self._live.note_variables(channel, {QUEUE_PRIO: reply.response.get(H_VALUE) or ""})
        return self._live.queue_prio(channel)

    async def run(
        self,
        interval_s: float,
        stop: asyncio.Event,
        on_changes: Callable[[list[Change]], None] | None = None,
    ) -> None:
        """Tick every ``interval_s`` seconds until ``stop`` is set (checked between ticks).

        ``on_changes`` gets the live model's changes of each tick that made some (to publish them).
        A lost connection or a timeout is logged and the next tick tries again (the AMI client
        reconnects by itself); any other error propagates.
        """
        if not interval_s > 0:
            raise ValueError(f"aging interval must be positive seconds, got {interval_s!r}")
        while not stop.is_set():
            try:
                changes = await self.tick()
                if changes and on_changes is not None:
                    on_changes(changes)
            except (AmiConnectionLost, AmiTimeout) as exc:
                log.warning("aging tick interrupted, retried in %g s: %s", interval_s, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
