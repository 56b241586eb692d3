"""Queued callbacks: a caller who chose to be called back keeps their place in the queue.

The contract between the AGI routes (``ivr/queue_exits.py``: the caller presses 1 while queued, the
callback leg confirms a human answered, the dialplan reports DIALSTATUS) and the engine's callback
keeper, which holds each request as a virtual caller with its original join time and priority, and
dials it agent-first when it reaches the head of its queue and an agent is free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class CallbackOutcome(Enum):
    """How one attempt of a queued callback ended."""

    ANSWERED = "answered"  # the citizen answered and confirmed (pressed a key): served
    UNCONFIRMED = "unconfirmed"  # the line answered but nobody confirmed (voicemail...): not answered
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"  # congestion, unreachable number, trunk down
    AGENT_NO_ANSWER = "agent_no_answer"  # the agent's phone did not answer: the citizen was not dialled


@dataclass(frozen=True)
class QueuedCallbackRequest:
    """What the callback-offer route hands to the keeper once the caller confirmed their number."""

    number: str  # E.164, confirmed by the caller
    queue: str
    priority: int  # QUEUE_PRIO when the caller left the queue
    joined_at: float  # epoch seconds when the caller joined the queue: the place they keep
    caller_name: str = ""
    citizen_id: str | None = None
    contact_id: str | None = None
    reason: str | None = None
    origin_uniqueid: str = ""  # the call that asked (for the records)


@dataclass(frozen=True)
class QueuedCallback:
    """A request as the keeper holds it (read by the routing API's callback list)."""

    id: str
    request: QueuedCallbackRequest
    state: str  # "waiting", "dialing", "done" (answered), "failed" (attempts exhausted)
    attempts: int
    outcomes: tuple[CallbackOutcome, ...]  # every attempt's outcome, in order
    next_attempt_at: float | None  # epoch seconds; None while dialing or when finished
    merged: int = 0  # duplicate requests for the same number merged into this one


class QueuedCallbacks(Protocol):
    """The keeper as the AGI routes and the routing API see it."""

    async def keep(self, request: QueuedCallbackRequest) -> str:
        """Hold ``request`` (merged into a pending one for the same number); return the callback's id."""
        ...

    async def record_outcome(self, callback_id: str, outcome: CallbackOutcome, detail: str = "") -> None:
        """What the callback leg's routes saw; unknown ids are logged and ignored."""
        ...

    async def pending(self) -> Sequence[QueuedCallback]:
        """Every callback not finished, in serving order, then the finished ones of today."""
        ...
