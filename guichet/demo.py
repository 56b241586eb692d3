"""``guichet demo``: the engine against the simulated PBX, with simulated callers and agents.

The engine runs exactly as with a real Asterisk: its FastAGI server takes the
calls the simulated PBX sends through the inbound dialplan, and its AMI client
logs in to the simulated PBX's AMI server and watches the queue events.  The
console shows, live, what the engine sees over AMI.  The voice menus are those of
``dialplans/``, with every schedule open (the demo runs at any hour); each
simulated caller presses a main-menu key and a sub-menu key that end in a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import TextIO

from guichet.config import AgiSettings, Secret, Settings
from guichet.console import ConsoleBoard
from guichet.engine import Engine, default_menu_engine
from ivr.services import GENERAL_QUEUE, SERVICE_QUEUES
from pbx_sim import (
    CallerScript,
    CallHandle,
    CallOutcome,
    Delay,
    PoissonCallers,
    QueueConfig,
    SimAgent,
    SimConfig,
    SimulatedPbx,
)
from routing.ami import AmiMessage

DEMO_USER = "guichet"
QUEUES = tuple(sorted(SERVICE_QUEUES))
# Keys of the default menu (dialplans/guichet.yaml) that end in a queue: a service, then a sub-menu key.
MENU_KEYS = ("11", "12", "22", "33", "41", "43", "52", "0")
# Each agent's skills: the general front office plus the services they know.
AGENT_SKILLS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Agent Alice", (GENERAL_QUEUE, "apa", "mdph")),
    ("Agent Bruno", (GENERAL_QUEUE, "pmi", "rsa")),
    ("Agent Chloé", (GENERAL_QUEUE, "transport", "apa")),
    ("Agent David", (GENERAL_QUEUE, "rsa", "pmi", "mdph")),
)


@dataclass(frozen=True)
class DemoOptions:
    speed: float = 5.0  # simulated seconds per real second
    calls: int | None = None  # None: until Ctrl-C or ``duration_s``
    duration_s: float | None = None  # real seconds
    rate_per_min: float = 6.0  # simulated arrivals per simulated minute
    agents: int = 3
    seed: int = 1
    summary_every_s: float = 10.0  # real seconds between two summaries
    agi_port: int = 0  # 0: a free port


@dataclass
class DemoResult:
    placed: int = 0
    outcomes: list[CallOutcome] = field(default_factory=list)
    board: ConsoleBoard = field(default_factory=ConsoleBoard)


def demo_agents(count: int) -> list[SimAgent]:
    if not 1 <= count <= len(AGENT_SKILLS):
        raise ValueError(f"the demo has 1 to {len(AGENT_SKILLS)} agents, not {count}")
    return [
        SimAgent(
            interface=f"PJSIP/agent{index + 1}",
            name=name,
            queues=skills,
            answer_delay=Delay(1.0, 4.0),
            talk_time=Delay(20.0, mean=90.0),
            wrapup=10,
        )
        for index, (name, skills) in enumerate(AGENT_SKILLS[:count])
    ]


class Demo:
    def __init__(self, options: DemoOptions, out: TextIO) -> None:
        self.options = options
        self.out = out
        self.result = DemoResult()
        self.secret = Secret(secrets.token_urlsafe(18))
        self.settings = replace(Settings(), agi=replace(AgiSettings(), port=options.agi_port))
        self.engine = Engine(self.settings, self.secret, menus=default_menu_engine(open_all_day=True))
        self.engine.subscribe("*", self._on_event)
        self.pbx: SimulatedPbx | None = None
        self._started = time.monotonic()

    def say(self, line: str) -> None:
        elapsed = time.monotonic() - self._started
        print(f"[{elapsed:7.1f}s] {line}", file=self.out, flush=True)

    def _on_event(self, event: AmiMessage) -> None:
        line = self.result.board.feed(event)
        if line is not None:
            self.say(line)

    async def run(self) -> DemoResult:
        options = self.options
        try:
            await self.engine.start_agi()
            self.pbx = SimulatedPbx(
                SimConfig(
                    agi_port=self.engine.agi.port,
                    ami_users={DEMO_USER: self.secret.value},
                    speed=options.speed,
                    seed=options.seed,
                    queues=[QueueConfig(name, timeout=15, wrapuptime=10) for name in QUEUES],
                )
            )
            await self.pbx.start()
            await self.engine.connect_ami(self.pbx.ami_port)
            for agent in demo_agents(options.agents):
                self.pbx.add_agent(agent)
            self.say("Guichet demo: the engine against the simulated PBX")
            for line in self.engine.addresses():
                self.say(f"  {line}")
            self.say(f"  simulated AMI server: 127.0.0.1:{self.pbx.ami_port}")
            self.say(f"  simulated time runs {options.speed:g}x real time; Ctrl-C stops")
            summary = asyncio.create_task(self._summaries())
            try:
                await self._place_calls(self.pbx)
            finally:
                summary.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await summary
                self._print_summary()  # also on Ctrl-C
            return self.result
        finally:
            await self.engine.close()
            if self.pbx is not None:
                await self.pbx.stop()

    async def _place_calls(self, pbx: SimulatedPbx) -> None:
        options = self.options
        callers = PoissonCallers(options.rate_per_min, menu_choices=MENU_KEYS)
        deadline = None if options.duration_s is None else time.monotonic() + options.duration_s
        handles: list[CallHandle] = []
        for gap, script in callers.generate(random.Random(options.seed), options.calls):
            wait = gap / options.speed
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(wait)
            if deadline is not None and time.monotonic() >= deadline:
                break
            handles.append(self._place(pbx, script))
        for handle in handles:
            self.result.outcomes.append(await handle.finished)

    def _place(self, pbx: SimulatedPbx, script: CallerScript) -> CallHandle:
        self.result.placed += 1
        self.say(f"call {self.result.placed}: {script.name} <{script.number}> dials {script.dnid}")
        return pbx.place_call(script)

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.options.summary_every_s)
            self._print_summary()

    def _print_summary(self) -> None:
        finished = self.result.outcomes
        fallback = sum(1 for o in finished if any(step.endswith(":Playback") for step in o.path))
        self.say(
            f"--- {self.result.placed} calls placed, {len(finished)} finished, "
            f"{fallback} sent to the general queue by the fail-safe dialplan"
        )
        for line in self.result.board.summary():
            self.say(line)


async def run_demo(options: DemoOptions, out: TextIO) -> DemoResult:
    return await Demo(options, out).run()
