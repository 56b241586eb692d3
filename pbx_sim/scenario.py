"""Scripted callers and agents, and a Poisson generator of callers for load and demos.

A caller presses keys only while the channel listens for digits (an AGI STREAM FILE
with escape digits, GET DATA, WAIT FOR DIGIT, or a queue wait whose queue has an exit
context): each :class:`KeyPress` happens ``delay_s`` after the channel starts
listening (the rest of a delay carries over to the next listening command), so a
script stays valid whatever the engine's own timing.  A caller also "says" audio: one
of its ``utterances`` per AGI RECORD FILE, in order.  Delays of agents are drawn
from :class:`Delay` distributions with the PBX's seeded ``random.Random``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from pbx_sim.dialplan import INBOUND_CONTEXT


@dataclass(frozen=True)
class Delay:
    """A delay in seconds: fixed (``Delay(3)``), uniform (``Delay(2, 6)``) or exponential (``mean``)."""

    low: float
    high: float | None = None
    mean: float | None = None

    def __post_init__(self) -> None:
        if self.low < 0 or (self.high is not None and self.high < self.low):
            raise ValueError(f"invalid delay {self}: need 0 <= low <= high")
        if self.mean is not None and self.mean <= 0:
            raise ValueError(f"invalid delay {self}: mean must be positive")

    def sample(self, rng: random.Random) -> float:
        if self.mean is not None:
            value = self.low + rng.expovariate(1.0 / self.mean)
            return value if self.high is None else min(value, self.high)
        if self.high is None:
            return self.low
        return rng.uniform(self.low, self.high)


def as_delay(value: float | Delay) -> Delay:
    return value if isinstance(value, Delay) else Delay(float(value))


@dataclass(frozen=True)
class KeyPress:
    """Digits pressed ``delay_s`` after the channel starts listening (one digit every ``gap_s``)."""

    delay_s: float
    digits: str
    gap_s: float = 0.3

    def __post_init__(self) -> None:
        if not self.digits or any(d not in "0123456789*#ABCD" for d in self.digits):
            raise ValueError(f"invalid DTMF digits {self.digits!r}")
        if self.delay_s < 0 or self.gap_s < 0:
            raise ValueError("key press delays must be >= 0")


@dataclass(frozen=True)
class CallerScript:
    """One citizen's call: who calls, which number, what they press, when they give up."""

    number: str
    name: str = ""
    dnid: str = "3900"
    keys: Sequence[KeyPress | tuple[float, str]] = ()
    hangup_after_s: float | None = None  # from the start of the call; None = waits as long as needed
    endpoint: str = "citizen"
    context: str = INBOUND_CONTEXT  # where the call enters the dialplan (extension = dnid)
    # What the caller says, one per RECORD FILE in order: 8 kHz 16-bit mono PCM (silence when none left).
    utterances: Sequence[bytes] = ()

    def __post_init__(self) -> None:
        if any(len(audio) % 2 for audio in self.utterances):
            raise ValueError("utterances must be 16-bit PCM: an even number of bytes")

    def key_presses(self) -> list[KeyPress]:
        return [k if isinstance(k, KeyPress) else KeyPress(float(k[0]), k[1]) for k in self.keys]


DIAL_RESULTS = ("answer", "noanswer", "busy", "congestion", "chanunavail")


@dataclass(frozen=True)
class Callee:
    """Who is at the other end when the dialplan Dial()s a number (a citizen called back, 119...).

    ``result``: ``answer`` (after ``answer_after_s``; a ring time shorter than that is NOANSWER),
    ``noanswer`` (rings until Dial's timeout), ``busy``, ``congestion`` or ``chanunavail``.  Once
    answered, the callee presses ``keys`` while the channel listens (e.g. in Dial's U() subroutine:
    no key is voicemail or nobody) and hangs up after ``talk_s`` in the bridge.
    """

    result: str = "answer"
    answer_after_s: float = 3.0
    talk_s: float = 20.0
    keys: Sequence[KeyPress | tuple[float, str]] = ()

    def __post_init__(self) -> None:
        if self.result not in DIAL_RESULTS:
            raise ValueError(f"callee result {self.result!r} not in {', '.join(DIAL_RESULTS)}")
        if self.answer_after_s < 0 or self.talk_s < 0:
            raise ValueError("callee delays must be >= 0")


@dataclass(frozen=True)
class SimAgent:
    """A softphone agent: registered device, optional static queues, answer and talk behaviour.

    ``answer_delay=None`` means the phone rings but is never picked up (unreachable contact).
    ``queues`` makes the agent a static member of those queues; otherwise the engine adds it
    with QueueAdd.  ``wrapup`` (s) overrides the queue's wrapuptime for this member.
    """

    interface: str = "PJSIP/agent1"
    name: str = ""
    queues: Sequence[str] = ()
    answer_delay: float | Delay | None = 2.0
    talk_time: float | Delay = 60.0
    wrapup: int | None = None
    penalty: int = 0
    paused: bool = False

    def __post_init__(self) -> None:
        if "/" not in self.interface:
            raise ValueError(f"agent interface must look like Tech/resource, got {self.interface!r}")

    @property
    def endpoint(self) -> str:
        return self.interface.split("/", 1)[1].split("@", 1)[0]


@dataclass(frozen=True)
class PoissonCallers:
    """Callers arriving as a Poisson process (``rate_per_min``), with random menu choices."""

    rate_per_min: float
    menu_choices: Sequence[str] = ("1", "2", "3")
    patience: Delay | None = field(default_factory=lambda: Delay(30.0, mean=90.0))
    first_number: int = 612000000

    def __post_init__(self) -> None:
        if self.rate_per_min <= 0:
            raise ValueError("rate_per_min must be positive")

    def generate(self, rng: random.Random, count: int | None = None) -> Iterator[tuple[float, CallerScript]]:
        """Yield (gap before this call in s, script) forever, or ``count`` times."""
        index = 0
        while count is None or index < count:
            gap = rng.expovariate(self.rate_per_min / 60.0)
            choice = rng.choice(list(self.menu_choices))
            patience = self.patience.sample(rng) if self.patience is not None else math.inf
            yield (
                gap,
                CallerScript(
                    number=f"0{self.first_number + index}",
                    name=f"Caller {index + 1}",
                    keys=(KeyPress(rng.uniform(0.5, 3.0), choice),),
                    hangup_after_s=None if math.isinf(patience) else patience,
                ),
            )
            index += 1
