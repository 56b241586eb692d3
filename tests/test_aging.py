"""Priority aging: the score and its French explanation, and the ticker steering the simulated PBX over
real AMI (priorities and aging change who is served first)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import pytest

from guichet.config import RoutingSettings, Secret, Settings, parse_settings
from guichet.engine import Engine
from guichet.names import GUICHET_IVR_DONE, GUICHET_PRIO, GUICHET_QUEUE, GUICHET_URGENCY
from ivr.agi_server import RouteTable
from pbx_sim import CallerScript, CallHandle, SimAgent, SimulatedPbx
from routing.aging import AgingPolicy, AgingTicker, Score
from routing.ami_client import AmiClient, AmiResponse
from routing.errors import AmiConnectionLost
from routing.live import Change, WaitingCaller
from tests.sim_fixtures import AgiResponder, engine_beside_sim

# --- the policy --------------------------------------------------------------------------------------

T0 = 1_800_000_000.0


def waiting(priority: int | None, urgency: str | None = None) -> WaitingCaller:
    return WaitingCaller(
        channel="PJSIP/citizen-00000001",
        uniqueid="1800000000.1",
        caller_num="0611223344",
        caller_name="Jeanne",
        join_time=T0,
        priority=priority,
        urgency=urgency,
    )


POLICY = AgingPolicy(10, {"apa": 30.0, "pmi": 60.0})


def score_after(
    waited_s: float,
    priority: int | None = 0,
    queue: str = "apa",
    urgency: str | None = None,
    base: int | None = None,
) -> Score:
    return POLICY.score(waiting(priority, urgency), queue, T0 + waited_s, base=base)


def test_the_score_is_the_base_plus_points_per_target_waited_with_a_french_explanation() -> None:
    score = score_after(36, priority=20, urgency="urgent")
    assert (score.priority, score.base, score.bonus, score.waited_s, score.target_s) == (32, 20, 12, 36, 30)
    assert score.explanation == (
        "32 = priorité d'origine 20 (urgence : urgente) + 12 pour 36 s d'attente "
        "(+10 par 30 s attendues, l'objectif de service de la file)"
    )
    long_wait = score_after(125.7, priority=10, urgency="high")
    assert long_wait.priority == 10 + 41
    assert "+ 41 pour 2 min 5 s d'attente" in long_wait.explanation
    assert "(urgence : élevée)" in long_wait.explanation


@pytest.mark.parametrize(
    ("waited_s", "bonus"),
    [(0, 0), (2.999, 0), (3, 1), (29.999, 9), (30, 10), (59.9, 19), (60, 20), (300, 100)],
)
def test_the_bonus_grows_by_whole_points_at_exact_boundaries(waited_s: float, bonus: int) -> None:
    score = score_after(waited_s)
    assert (score.bonus, score.priority) == (bonus, bonus)


def test_each_queue_has_its_own_target_and_unknown_queues_the_default() -> None:
    assert score_after(60, queue="apa").bonus == 20
    assert score_after(60, queue="pmi").bonus == 10
    assert "(+10 par 60 s attendues, " in score_after(60, queue="pmi").explanation
    other = score_after(60, queue="prio")  # a queue of no [queues.<name>]: the default 30 s
    assert (other.target_s, other.bonus) == (30.0, 20)
    odd = AgingPolicy(4, {}, default_target_s=22.5).score(waiting(0), "x", T0 + 45)
    assert odd.bonus == 8
    assert "(+4 par 22,5 s attendues, " in odd.explanation


def test_aging_never_lowers_a_priority() -> None:
    # already raised above what aging gives (by a supervisor, or an earlier tick): kept
    kept = score_after(36, priority=50, base=20)
    assert (kept.priority, kept.base, kept.bonus) == (50, 20, 12)
    assert kept.explanation.startswith(
        "50 : priorité actuelle gardée, plus haute que 32 = priorité d'origine 20"
    )
    # the aged priority of an earlier tick is not a base: the wait counts once, from QUEUE_PRIO
    again = score_after(36, priority=32, base=20)
    assert again.priority == 32
    assert not again.explanation.startswith("32 :")
    # a clock behind the join time is no wait, not a negative bonus
    early = POLICY.score(waiting(10), "apa", T0 - 5)
    assert (early.priority, early.bonus, early.waited_s) == (10, 0, 0.0)
    for waited_s in (0, 1, 7.5, 31, 600):
        assert score_after(waited_s, priority=15).priority >= 15


def test_an_unknown_priority_counts_as_zero() -> None:
    score = score_after(36, priority=None)
    assert (score.priority, score.base, score.bonus) == (12, 0, 12)
    assert score.explanation.startswith("12 = priorité d'origine inconnue (0) + 12 pour 36 s")
    assert score_after(36, priority=None, base=0).explanation.startswith("12 = priorité d'origine 0 +")


def test_the_policy_comes_from_the_settings_and_refuses_nonsense() -> None:
    settings = parse_settings(
        {"routing": {"aging_points": 6}, "queues": {"pmi": {"service_level_s": 20}}}, "guichet.toml"
    )
    policy = AgingPolicy.from_settings(settings)
    assert (policy.points, policy.target_s("pmi"), policy.target_s("apa")) == (6, 20.0, 30.0)
    assert policy.score(waiting(0), "pmi", T0 + 40).bonus == 12
    for points in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="aging points"):
            AgingPolicy(points, {})  # type: ignore[arg-type]
    for target in (0.0, -30.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="apa service-level target"):
            AgingPolicy(10, {"apa": target})
    with pytest.raises(ValueError, match="default service-level target"):
        AgingPolicy(10, {}, default_target_s=0)


# --- the ticker against the simulated PBX --------------------------------------------------------------

SPEED = 60.0  # simulated seconds per real second
QUEUE = "apa"
LONG_WAIT_S = 120.0  # a normal caller who waited this long (4 targets: +40) beats a new urgent one (20)
LEVELS = {"normal": 0, "high": 10, "urgent": 20}  # QUEUE_PRIO per urgency (dialplans/settings/urgency.yaml)


def urgency_ivr(urgency: Mapping[str, str]) -> AgiResponder:
    """A FastAGI server playing the IVR: each caller's urgency comes from its number (``urgency``)."""

    def commands(env: Mapping[str, str]) -> list[str]:
        level = urgency[env["agi_callerid"]]
        return [
            "ANSWER",
            f"SET VARIABLE {GUICHET_QUEUE} {QUEUE}",
            f"SET VARIABLE {GUICHET_PRIO} {LEVELS[level]}",
            f"SET VARIABLE {GUICHET_URGENCY} {level}",
            f"SET VARIABLE {GUICHET_IVR_DONE} 1",
        ]

    return AgiResponder(script=commands)


class RecordingAmi:
    """The engine's AmiClient, recording each action sent; ``before`` runs before one is sent."""

    def __init__(self, ami: AmiClient) -> None:
        self.ami = ami
        self.sent: list[tuple[str, dict[str, str]]] = []
        self.before: Callable[[str, dict[str, str]], Awaitable[None]] | None = None

    async def send_action(self, action: str, headers: Sequence[tuple[str, str]] = (), /) -> AmiResponse:
        fields = dict(headers)
        self.sent.append((action, fields))
        if self.before is not None:
            await self.before(action, fields)
        return await self.ami.send_action(action, headers)

    def priority_changes(self) -> list[dict[str, str]]:
        return [fields for action, fields in self.sent if action == "QueueChangePriorityCaller"]


@dataclass
class Rig:
    pbx: SimulatedPbx
    urgency: dict[str, str]  # caller number -> the urgency the IVR gives
    engine: Engine
    ami: RecordingAmi
    ticker: AgingTicker

    def call(self, number: str, urgency: str) -> CallHandle:
        self.urgency[number] = urgency
        return self.pbx.place_call(CallerScript(number, f"Caller {number}"))

    def queued_in_sim(self) -> list[str]:
        return [caller.channel.name for caller in self.pbx.queues.queues[QUEUE].callers]

    def sim_priority(self, handle: CallHandle) -> int:
        return self.pbx.queues.queues[QUEUE].caller(handle.channel.name).priority

    def waiting(self) -> list[str]:
        return [caller.channel for caller in self.engine.live.callers(QUEUE)]

    def talking(self) -> list[str]:
        return [call.caller_channel for call in self.engine.live.calls()]

    def waited_s(self, handle: CallHandle) -> float:
        return self.pbx.clock.now() - self.pbx.queues.queues[QUEUE].caller(handle.channel.name).join_time


# The engine's own aging duty never ticks again after the start: the tests tick themselves.
QUIET = Settings(routing=RoutingSettings(aging_interval_s=3600.0))


def ticking(engine: Engine, pbx: SimulatedPbx) -> tuple[RecordingAmi, AgingTicker]:
    assert engine.ami is not None
    ami = RecordingAmi(engine.ami)
    return ami, AgingTicker(ami, engine.live, AgingPolicy.from_settings(Settings()), pbx.clock.now)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    urgency: dict[str, str] = {}
    async with engine_beside_sim(urgency_ivr(urgency), QUEUE, SPEED, settings=QUIET) as (pbx, engine):
        yield Rig(pbx, urgency, engine, *ticking(engine, pbx))


async def until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.005)


async def long_waiter_then_urgent(rig: Rig) -> tuple[CallHandle, CallHandle]:
    """A normal caller waits LONG_WAIT_S, then an urgent caller arrives and goes ahead of it."""
    normal = rig.call("0611111111", "normal")
    await until(lambda: rig.waiting() == [normal.channel.name], "the normal caller waits")
    await until(lambda: rig.waited_s(normal) >= LONG_WAIT_S, "the normal caller has waited long")
    urgent = rig.call("0622222222", "urgent")
    ahead = [urgent.channel.name, normal.channel.name]
    await until(lambda: rig.waiting() == ahead, "the urgent caller waits ahead of the normal one")
    assert rig.queued_in_sim() == ahead
    return normal, urgent


@pytest.mark.parametrize("aging", [True, False], ids=["with-aging", "without-aging"])
async def test_aging_serves_a_long_waiting_normal_caller_before_a_new_urgent_one(
    rig: Rig, aging: bool
) -> None:
    normal, urgent = await long_waiter_then_urgent(rig)
    if aging:
        changes = await rig.ticker.tick()
        assert changes
        scores = rig.ticker.scores()
        raised = scores[normal.channel.uniqueid]
        assert raised.base == 0
        assert raised.bonus > 20  # about 40 (4 targets waited), less the event's delivery delay
        assert raised.priority > scores[urgent.channel.uniqueid].priority >= 20
        assert raised.explanation.startswith(
            f"{raised.priority} = priorité d'origine 0 (urgence : normale) + "
        )
        # Asterisk stores the new priority AND moves the caller: the action carried Immediate: yes
        sent = rig.ami.priority_changes()
        expected = {"Queue": QUEUE, "Caller": normal.channel.name, "Priority": str(raised.priority)}
        assert {**expected, "Immediate": "yes"} in sent
        assert all(fields["Immediate"] == "yes" for fields in sent)
        assert rig.sim_priority(normal) == raised.priority
        assert rig.queued_in_sim() == [normal.channel.name, urgent.channel.name]
        assert rig.waiting() == rig.queued_in_sim()  # the live model moved it too (no AMI event says so)
    first = normal if aging else urgent
    rig.pbx.add_agent(SimAgent("PJSIP/agent1", "Agent One", queues=[QUEUE], answer_delay=1, talk_time=900))
    await until(lambda: bool(rig.talking()), "the agent answers a caller")
    assert rig.talking() == [first.channel.name]


async def test_a_caller_hanging_up_between_score_and_action_does_not_stop_the_ticker(rig: Rig) -> None:
    quitter = rig.call("0633333333", "normal")
    stayer = rig.call("0644444444", "high")
    await until(lambda: len(rig.waiting()) == 2, "both callers wait")
    await until(lambda: rig.waited_s(stayer) >= 10, "both callers have waited a little")

    async def hang_up_the_quitter(action: str, fields: dict[str, str]) -> None:
        if action == "QueueChangePriorityCaller" and fields["Caller"] == quitter.channel.name:
            await rig.ami.ami.send_action("Hangup", [("Channel", quitter.channel.name)])
            await until(lambda: quitter.channel.name not in rig.queued_in_sim(), "the quitter left")

    rig.ami.before = hang_up_the_quitter
    await rig.ticker.tick()
    assert {fields["Caller"] for fields in rig.ami.priority_changes()} == {
        quitter.channel.name,
        stayer.channel.name,
    }
    scores = rig.ticker.scores()
    assert quitter.channel.uniqueid not in scores
    assert rig.sim_priority(stayer) == scores[stayer.channel.uniqueid].priority > 10
    assert (await quitter.finished).answered_by is None


async def test_a_lost_connection_propagates_from_tick_and_run_goes_on(rig: Rig) -> None:
    caller = rig.call("0655555555", "normal")
    await until(lambda: rig.waiting() == [caller.channel.name], "the caller waits")
    await until(lambda: rig.waited_s(caller) >= 10, "the caller has waited a little")
    await rig.ami.ami.close()
    with pytest.raises(AmiConnectionLost):
        await rig.ticker.tick()
    stop = asyncio.Event()
    runner = asyncio.create_task(rig.ticker.run(0.01, stop))
    tried = len(rig.ami.sent)
    await until(lambda: len(rig.ami.sent) >= tried + 3, "run() keeps ticking without a connection")
    assert not runner.done()
    stop.set()
    await asyncio.wait_for(runner, 30)
    assert rig.sim_priority(caller) == 0  # nothing reached Asterisk


async def test_run_raises_priorities_until_stopped(rig: Rig) -> None:
    normal, urgent = await long_waiter_then_urgent(rig)
    stop = asyncio.Event()
    published: list[Change] = []
    runner = asyncio.create_task(rig.ticker.run(0.05, stop, published.extend))
    try:
        await until(lambda: rig.queued_in_sim()[0] == normal.channel.name, "aging moved the normal caller")
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
    assert rig.sim_priority(normal) > rig.sim_priority(urgent)
    assert Change("caller_updated", normal.channel.name, QUEUE) in published
    assert Change("queue_reordered", "", QUEUE) in published
    with pytest.raises(ValueError, match="interval"):
        await rig.ticker.run(0, stop)


async def test_a_new_leader_ages_from_queue_prio_not_from_the_aged_priority(rig: Rig) -> None:
    urgent = rig.call("0666666666", "urgent")
    await until(lambda: rig.waiting() == [urgent.channel.name], "the urgent caller waits")
    await until(lambda: rig.waited_s(urgent) >= 60, "the urgent caller has waited two targets")
    await rig.ticker.tick()
    aged = rig.ticker.scores()[urgent.channel.uniqueid]
    assert (aged.base, rig.sim_priority(urgent)) == (20, aged.priority)
    assert aged.priority > 30
    # another node takes over: its live model comes from QueueStatus (the aged priority) and Getvar
    leader = Engine(QUIET, Secret("secret"), RouteTable(), clock=rig.pbx.clock.now)
    try:
        await leader.connect_ami(rig.pbx.ami_port)
        _, ticker = ticking(leader, rig.pbx)
        (seen,) = leader.live.callers(QUEUE)
        assert seen.priority == aged.priority
        # the engine's resync read QUEUE_PRIO with Getvar: QueueChangePriorityCaller left it as is
        assert leader.live.queue_prio(urgent.channel.name) == 20
        await ticker.tick()
        again = ticker.scores()[urgent.channel.uniqueid]
        assert again.base == 20
        assert again.priority == max(aged.priority, 20 + again.bonus)
        assert rig.sim_priority(urgent) == again.priority
    finally:
        await leader.close()
