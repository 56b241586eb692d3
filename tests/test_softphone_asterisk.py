"""SIP-level tests against a real Asterisk 22 (issue 5): SIPp citizens and agent softphones, the engine.

Runs where ``ASTERISK_BIN`` names an Asterisk 22 binary (its modules and data are found beside it, or
in ``ASTERISK_MODULES_DIR`` / ``ASTERISK_DATA_DIR``); skipped with the reason everywhere else (no
Asterisk package exists for Debian 12).  Run them with ``ASTERISK_BIN=/opt/asterisk/sbin/asterisk
./run.sh test -k softphone_asterisk``.

One Asterisk per module, booted on the configuration ``guichet asterisk-config`` renders for this run
(loopback ports, prompts built); one ``guichet serve`` per test.  Each test places calls with SIPp
citizens (on the ``trunk`` endpoint, identified by 127.0.0.1), registers an agent softphone with digest
auth, and checks the outcome through the engine's JSON API: the queue and priority the IVR chose, the
agent connected to that caller with the citizen and contact ids the IVR set, pause, abandon, the
engine killed during the voice menu, the queued callback.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ivr.services import SERVICE_QUEUES
from softphone_test import harness, sipp
from softphone_test.harness import AgentAccount, EngineApi, EngineFiles, Harness, Ports

SKIP = harness.skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

AGENT = "agent1"
SINGLE_NUMBER = "3939"
KEY_GAP_MS = 1500  # between two menu keys: the next menu starts meanwhile
MARGIN_MS = 2500  # Answer() waits ~0.5 s for media, then FastAGI connects: keys come after that
CALL_TIMEOUT_S = 240.0
LIVE_TIMEOUT_S = 60.0
AGENT_HOLD_MS = 3000
# (menu keys, queue, QUEUE_PRIO, urgency) of dialplans/guichet.yaml and settings/urgency.yaml
PATHS = [
    ("11", "apa", 20, "urgent"),
    ("12", "apa", 10, "high"),
    ("22", "pmi", 10, "high"),
    ("33", "mdph", 10, "high"),
    ("43", "transport", 0, "normal"),
    ("52", "rsa", 0, "normal"),
    ("0", "accueil", 0, "normal"),
]


@dataclass
class Pbx:
    """The module's Asterisk and what the engine needs to run against it."""

    binary: Path
    conf: Path
    ports: Ports
    files: EngineFiles
    agent: AgentAccount
    before_menu_ms: int


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    assert SKIP is None
    binary = harness.asterisk_binary()
    assert binary is not None
    folder = tmp_path_factory.mktemp("softphone")
    ports = Ports.pick()
    agent = AgentAccount(AGENT, SERVICE_QUEUES, secrets.token_urlsafe(12))
    files = harness.write_engine_files(folder / "engine", ports, [agent])
    install = harness.AsteriskInstall.of(binary)
    conf = harness.render_asterisk_config(
        folder / "asterisk", files.config, ports, environ=files.environ, install=install, sounds=True
    )
    before_menu_ms = harness.before_first_menu_ms(files.menus_dir, conf.parent / "sounds")
    with Harness(folder / "asterisk-run") as run:
        harness.start_asterisk(run, binary, conf)
        yield Pbx(binary, conf, ports, files, agent, before_menu_ms)


@dataclass
class Run:
    """One test: its harness, the engine and its API."""

    pbx: Pbx
    harness: Harness
    api: EngineApi

    def live(self) -> dict[str, Any]:
        return self.api.live()

    def wait(self, what: str, condition: Any, timeout_s: float = LIVE_TIMEOUT_S) -> Any:
        last: dict[str, Any] = {}

        def probe() -> Any:
            last.clear()
            last.update(self.live())
            return condition(last)

        watch = [p for p in self.harness.processes if p.name.startswith("guichet-serve") and p.alive]
        return harness.wait_until(probe, what=what, timeout_s=timeout_s, watch=watch, describe=lambda: last)

    def start_agent(self, *, paused: bool) -> None:
        """The agent's softphone registers and answers (hangs up after AGENT_HOLD_MS); the agent logs in."""
        softphone = sipp.agent_softphone(
            "agent", local_port=harness.free_udp_ports(1), media_port=harness.free_udp_ports(),
            remote=f"127.0.0.1:{self.pbx.ports.sip}", agent=AGENT, password=self.pbx.agent.sip_password,
            registered_ms=100_000, end="bye", hold_ms=AGENT_HOLD_MS, timeout_s=CALL_TIMEOUT_S * 4,
        )  # fmt: skip
        self.harness.start_sipp(softphone, self.harness.sipp_folder("agent"))

        def registered() -> bool:
            _, output = harness.asterisk_cli(self.pbx.binary, self.pbx.conf, f"pjsip show aor {AGENT}")
            return f"127.0.0.1:{softphone.local_port}" in output

        harness.wait_until(registered, what=f"{AGENT} registered", timeout_s=LIVE_TIMEOUT_S)
        self.api.agent_action(AGENT, "login")
        if paused:
            self.api.agent_action(AGENT, "pause", "formation")
        self.wait(f"{AGENT} logged in", lambda live: _agent_is(live, paused=paused))

    def call(
        self, name: str, caller: str, keys: sipp.CitizenKeys, end: str, *, stay_ms: int = 0,
        menu_delay_ms: int | None = None,
    ) -> CitizenCall:  # fmt: skip
        """A citizen calls; the first key comes once the prompts before the menu are said."""
        delay_ms = self.pbx.before_menu_ms + MARGIN_MS if menu_delay_ms is None else menu_delay_ms
        spec = sipp.citizen(
            name, local_port=harness.free_udp_ports(1), media_port=harness.free_udp_ports(),
            remote=f"127.0.0.1:{self.pbx.ports.sip}", number=SINGLE_NUMBER, caller=caller, end=end,
            menu_delay_ms=delay_ms, stay_ms=stay_ms, timeout_s=CALL_TIMEOUT_S,
        )  # fmt: skip
        folder = self.harness.sipp_folder(name, keys)
        return CitizenCall(spec, self.harness.start_sipp(spec, folder), caller[-8:])

    def finish(self, call: CitizenCall) -> sipp.SippResult:
        result = self.harness.finish_sipp(call.spec, call.process)
        assert result.ok, result.report()
        return result


@dataclass
class CitizenCall:
    spec: sipp.SippSpec
    process: harness.ManagedProcess
    suffix: str  # the caller's number as the engine shows it ends with this


def _agent_is(live: dict[str, Any], *, paused: bool) -> bool:
    agent = harness.find_agent(live, AGENT)
    return agent is not None and (agent.get("state") == "paused") == paused


def _menu_keys(keys: str) -> sipp.CitizenKeys:
    return sipp.CitizenKeys(menu=keys, gap_ms=KEY_GAP_MS)


@pytest.fixture
def run(pbx: Pbx, tmp_path: Path) -> Iterator[Run]:
    with Harness(tmp_path) as test_run:
        try:
            _, api = harness.start_engine(test_run, pbx.files)
            yield Run(pbx, test_run, api)
        finally:  # calls left by a failed test must not reach the next one's agent
            harness.asterisk_cli(pbx.binary, pbx.conf, "channel request hangup all")


@pytest.mark.parametrize(
    ("keys", "queue", "priority", "urgency"), PATHS, ids=[p[1] + "-" + p[0] for p in PATHS]
)
def test_each_service_path_reaches_its_queue_then_the_agent(
    run: Run, keys: str, queue: str, priority: int, urgency: str
) -> None:
    run.start_agent(paused=True)
    caller = f"06123401{PATHS.index((keys, queue, priority, urgency)):02d}"
    call = run.call("citizen", caller, _menu_keys(keys), end="wait")
    where, waiting = run.wait(f"{caller} queued", lambda live: harness.find_caller(live, call.suffix))
    assert (where, waiting["priority"], waiting["urgency"]) == (queue, priority, urgency)
    assert waiting["reason"]
    run.api.agent_action(AGENT, "unpause")
    connected = run.wait(f"{caller} connected", lambda live: harness.find_call(live, call.suffix))
    assert connected["queue"] == queue
    assert connected["agent"] in (AGENT, f"PJSIP/{AGENT}")
    assert connected["reason"] == waiting["reason"]
    assert (connected["citizen_id"], connected["contact_id"]) == (
        waiting["citizen_id"],
        waiting["contact_id"],
    )
    run.finish(call)  # the agent hangs up after AGENT_HOLD_MS: the citizen gets the BYE


def test_an_urgent_caller_is_served_before_a_normal_one(run: Run) -> None:
    run.start_agent(paused=True)
    normal = run.call("citizen-high", "0612340201", _menu_keys("12"), end="wait")
    run.wait("the first caller queued", lambda live: harness.find_caller(live, normal.suffix))
    urgent = run.call("citizen-urgent", "0612340202", _menu_keys("11"), end="wait")
    run.wait("the urgent caller queued", lambda live: harness.find_caller(live, urgent.suffix))
    order = [c["caller_number"][-8:] for c in harness.waiting_callers(run.live(), "apa")]
    assert order == [urgent.suffix, normal.suffix]
    run.api.agent_action(AGENT, "unpause")
    run.wait("the urgent caller connected", lambda live: harness.find_call(live, urgent.suffix))
    assert harness.find_caller(run.live(), normal.suffix) is not None  # still waiting
    run.finish(urgent)
    run.wait("the other caller connected", lambda live: harness.find_call(live, normal.suffix))
    run.finish(normal)


def test_a_paused_agent_is_not_rung(run: Run) -> None:
    run.start_agent(paused=True)
    call = run.call("citizen", "0612340301", _menu_keys("0"), end="wait")
    # Longer than one ring round (queues.conf timeout 15 s + retry 2 s), as the engine counts it.
    run.wait(
        "caller waiting 25 s",
        lambda live: (found := harness.find_caller(live, call.suffix)) and found[1]["waited_s"] >= 25,
    )
    agent = harness.find_agent(run.live(), AGENT)
    assert agent is not None
    assert (agent["state"], agent["paused_reason"]) == ("paused", "formation")
    messages = run.harness.run_dir / "agent" / "agent_messages.log"
    assert "INVITE sip:" not in (messages.read_text(errors="replace") if messages.exists() else "")
    run.api.agent_action(AGENT, "unpause")
    run.wait("caller connected", lambda live: harness.find_call(live, call.suffix))
    run.finish(call)


def test_an_abandon_is_counted(run: Run) -> None:
    run.start_agent(paused=True)
    before = harness.queue_counters(run.live(), "accueil").get("abandoned", 0)
    keys = _menu_keys("0")
    call = run.call("citizen", "0612340401", keys, end="bye", stay_ms=keys.menu_ms + 20_000)
    run.wait("caller queued", lambda live: harness.find_caller(live, call.suffix))
    run.finish(call)  # the citizen hangs up while queued
    run.wait(
        "abandon counted",
        lambda live: (
            harness.queue_counters(live, "accueil").get("abandoned", 0) == before + 1
            and harness.find_caller(live, call.suffix) is None
        ),
    )


def test_the_engine_killed_during_the_voice_menu_still_queues_the_call(run: Run, pbx: Pbx) -> None:
    run.start_agent(paused=True)
    engine = next(p for p in run.harness.processes if p.name == "guichet-serve")
    # The caller presses no key during the test (the first one would come after 10 minutes).
    call = run.call("citizen", "0612340501", _menu_keys("4"), end="wait", menu_delay_ms=600_000)

    def in_application(name: str) -> bool:
        _, channels = harness.asterisk_cli(pbx.binary, pbx.conf, "core show channels concise")
        return any(f"!{name}!" in line and "trunk" in line for line in channels.splitlines())

    harness.wait_until(
        lambda: in_application("AGI"), what="the call in the voice menu", timeout_s=LIVE_TIMEOUT_S
    )
    engine.kill()
    harness.wait_until(lambda: in_application("Queue"), what="the call queued by the dialplan", timeout_s=60)
    _, api = harness.start_engine(run.harness, pbx.files, name="guichet-serve-restarted")
    run.api = api
    where, _ = run.wait(
        "the caller in the general queue", lambda live: harness.find_caller(live, call.suffix)
    )
    assert where == "accueil"
    call.process.stop()


def test_a_queued_caller_asks_for_a_callback(run: Run) -> None:
    run.start_agent(paused=True)
    keys = sipp.CitizenKeys(menu="12", queued="11", gap_ms=KEY_GAP_MS)
    stay_ms = keys.menu_ms + 15_000  # the service's prompt, then a few seconds in the queue
    call = run.call("citizen", "0612340601", keys, end="callback", stay_ms=stay_ms)
    where, _ = run.wait("caller queued", lambda live: harness.find_caller(live, call.suffix))
    assert where == "apa"
    run.finish(call)  # 1 (callback), 1 (confirm the number), then the engine says goodbye and hangs up

    def kept() -> dict[str, Any] | None:
        listed = run.api.request("GET", "/api/callbacks")["callbacks"]
        return next((c for c in listed if str(c["number"]).endswith(call.suffix)), None)

    callback = harness.wait_until(kept, what="the queued callback kept", timeout_s=LIVE_TIMEOUT_S)
    assert (callback["number"], callback["queue"]) == ("+33612340601", "apa")
    assert callback["priority"] >= 10  # the caller's QUEUE_PRIO (apa, high), aged if they waited long
    assert harness.find_caller(run.live(), call.suffix) is None
