"""The menu engine end to end: the FastAGI server runs dialplans/guichet.yaml, the simulated PBX calls.

Assertions are on what the simulated PBX observed: the queue the call joined, the QUEUE_PRIO
the dialplan gave Queue(), the number Dial() reached, the GUICHET_* variables on the channel,
the AGI commands (AGIExecStart events), and on the callback requests the engine recorded.
"""

from __future__ import annotations

import re
import socket
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from guichet.config import ConfigError
from guichet.engine import default_menu_engine
from guichet.names import (
    GUICHET_CALLBACK_ID,
    GUICHET_CITIZEN_ID,
    GUICHET_CONTACT_ID,
    GUICHET_IVR_DONE,
    GUICHET_QUEUE,
    GUICHET_REASON,
    GUICHET_TRANSFER,
    GUICHET_URGENCY,
    QUEUE_PRIO,
)
from ivr import menu_engine
from ivr.agi import AgiEnv
from ivr.agi_server import FastAgiServer
from ivr.callers import CitizenRef, ContactRef, InMemoryDirectory, normalise
from ivr.hours import closed_message, is_open
from ivr.menu_engine import (
    REPEAT_CALLER_PROMPT,
    CallbackRequest,
    Go,
    InMemoryCallbackSink,
    MenuEngine,
    Replay,
    after_menu_input,
    callback_number,
)
from ivr.menus import MenuNode, load_menus
from ivr.prompt_names import sound_name, tts_name
from ivr.routes import build_routes
from ivr.services import SERVICE_QUEUES
from ivr.urgency import UrgencyRules
from pbx_sim import CallerScript, CallOutcome, KeyPress, QueueConfig, SimAgent, SimConfig, SimulatedPbx
from pbx_sim.channels import AmiEvent
from tests.conftest import REPO
from tests.sim_fixtures import recorded_events

SPEED = 50.0
PARIS = ZoneInfo("Europe/Paris")
OPEN = datetime(2026, 6, 2, 10, 0, tzinfo=PARIS)  # a Tuesday, 10:00
SATURDAY = datetime(2026, 6, 6, 10, 0, tzinfo=PARIS)
ASCENSION = datetime(2026, 5, 14, 10, 0, tzinfo=PARIS)  # Thursday, public holiday
NUMBER = "0612345678"
E164 = "+33612345678"


@dataclass
class Observed:
    """What the simulated PBX saw of one call."""

    outcome: CallOutcome
    variables: dict[str, str]
    events: list[AmiEvent] = field(default_factory=list)

    @property
    def prio(self) -> str | None:
        return self.variables.get(QUEUE_PRIO)

    def agi_commands(self) -> list[str]:
        return [e.get("Command") or "" for e in self.events if e.name == "AGIExecStart"]

    def played(self, sound: str) -> bool:
        return any(sound in command for command in self.agi_commands())


@dataclass
class Rig:
    engine: MenuEngine
    server: FastAgiServer
    sink: InMemoryCallbackSink
    directory: InMemoryDirectory

    async def call(self, script: CallerScript) -> Observed:
        return await place(self.server.port, script)


async def place(agi_port: int, script: CallerScript) -> Observed:
    """One call answered by an agent of every queue."""
    queues = [QueueConfig(q) for q in SERVICE_QUEUES]
    async with SimulatedPbx(SimConfig(agi_port=agi_port, speed=SPEED, queues=queues)) as pbx:
        pbx.add_agent(SimAgent("PJSIP/agent1", "Agent", queues=SERVICE_QUEUES, answer_delay=1, talk_time=2))
        events = recorded_events(pbx)
        handle = pbx.place_call(script)
        outcome = await handle.finished
    return Observed(outcome, dict(handle.channel.variables), events)


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig() -> AsyncIterator[RigFactory]:
    servers: list[FastAgiServer] = []

    async def make(
        now: datetime = OPEN, directory: InMemoryDirectory | None = None, sounds: Path | None = None
    ) -> Rig:
        sink = InMemoryCallbackSink()
        citizens = directory if directory is not None else InMemoryDirectory()
        engine = default_menu_engine(citizens=citizens, callbacks=sink, now=lambda: now, sounds_dir=sounds)
        server = FastAgiServer(build_routes(engine), port=0)
        await server.start()
        servers.append(server)
        return Rig(engine, server, sink, citizens)

    yield make
    for server in servers:
        await server.close()


def keys(*presses: str) -> list[KeyPress]:
    return [KeyPress(0.5, digits) for digits in presses]


# --- Every path of the default menu -------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    queue: str
    prio: int
    urgency: str
    reason: str


@dataclass(frozen=True)
class Transferred:
    number: str


@dataclass(frozen=True)
class CalledBack:
    service: str
    reason: str


@dataclass(frozen=True)
class HungUpAfterInfo:
    """An informational answer, no key for an agent: goodbye and hang-up."""


Expected = Queued | Transferred | CalledBack | HungUpAfterInfo

PATHS: list[tuple[str, Expected]] = [
    ("0", Queued("accueil", 0, "normal", "information-generale")),
    ("11", Queued("apa", 20, "urgent", "apa-situation-urgente")),
    ("12", Queued("apa", 10, "high", "apa")),
    ("13", HungUpAfterInfo()),
    ("131", Queued("apa", 10, "high", "apa")),
    ("21", HungUpAfterInfo()),
    ("211", Queued("pmi", 10, "high", "pmi")),
    ("22", Queued("pmi", 10, "high", "pmi")),
    ("29", Transferred("119")),
    ("31", HungUpAfterInfo()),
    ("311", Queued("mdph", 10, "high", "mdph")),
    ("32", CalledBack("mdph", "mdph-suivi-dossier")),
    ("33", Queued("mdph", 10, "high", "mdph")),
    ("41", Queued("transport", 20, "urgent", "transport-scolaire-incident")),
    ("42", HungUpAfterInfo()),
    ("421", Queued("transport", 0, "normal", "transport-scolaire")),
    ("43", Queued("transport", 0, "normal", "transport-scolaire")),
    ("51", HungUpAfterInfo()),
    ("511", Queued("rsa", 0, "normal", "rsa")),
    ("52", Queued("rsa", 0, "normal", "rsa")),
    ("8", CalledBack("accueil", "demande-de-rappel")),
    ("9", Transferred("119")),
]


def assert_queued(seen: Observed, expected: Queued) -> None:
    assert seen.outcome.queue == seen.variables[GUICHET_QUEUE] == expected.queue
    assert seen.outcome.answered_by == "PJSIP/agent1"
    assert seen.prio == str(expected.prio)
    assert seen.variables[GUICHET_URGENCY] == expected.urgency
    assert seen.variables[GUICHET_REASON] == expected.reason
    assert seen.variables[GUICHET_IVR_DONE] == "1"
    assert not any(step.endswith(":Playback") for step in seen.outcome.path)  # not the fail-safe


@pytest.mark.parametrize(("digits", "expected"), PATHS, ids=[digits for digits, _ in PATHS])
async def test_every_path_of_the_default_menu(make_rig: RigFactory, digits: str, expected: Expected) -> None:
    rig = await make_rig()
    seen = await rig.call(CallerScript(NUMBER, "Citoyen", keys=keys(digits)))
    match expected:
        case Queued():
            assert_queued(seen, expected)
        case Transferred():
            assert seen.outcome.transferred_to == expected.number
            assert seen.variables[GUICHET_TRANSFER] == expected.number
            assert seen.outcome.queue is None
            dials = [e for e in seen.events if e.name in ("DialBegin", "DialEnd")]
            assert [(e.name, e.get("DialString") or e.get("DialStatus")) for e in dials] == [
                ("DialBegin", f"{expected.number}@trunk"),
                ("DialEnd", "ANSWER"),
            ]
            assert all((e.get("DestChannel") or "").startswith("PJSIP/trunk-") for e in dials)
        case CalledBack():
            assert [(r.number, r.service, r.reason) for r in rig.sink.requests] == [
                (E164, expected.service, expected.reason)
            ]
            assert rig.sink.requests[0].requested_at == OPEN
            assert seen.variables[GUICHET_CALLBACK_ID] == "cb-1"
            assert seen.outcome.queue is None and seen.outcome.transferred_to is None
        case HungUpAfterInfo():
            assert seen.outcome.queue is None and seen.outcome.transferred_to is None
            assert GUICHET_IVR_DONE not in seen.variables
    if not isinstance(expected, CalledBack):
        assert rig.sink.requests == []
    assert rig.server.stats.failed == {}
    assert rig.server.stats.completed == 1


# --- No input, invalid keys, retries ---------------------------------------------------------------


async def test_no_input_replays_with_the_no_input_prompt_then_general_queue(make_rig: RigFactory) -> None:
    rig = await make_rig()
    seen = await rig.call(CallerScript(NUMBER))
    assert_queued(seen, Queued("accueil", 0, "normal", "information-generale"))
    menu = rig.engine.menus.tree("guichet").node("menu-principal")
    assert isinstance(menu, MenuNode) and menu.no_input is not None
    assert seen.played(tts_name(menu.no_input))
    assert sum(sound_name(menu.prompt) in c for c in seen.agi_commands()) == 1 + menu.retries


async def test_invalid_key_then_a_valid_path(make_rig: RigFactory) -> None:
    rig = await make_rig()
    seen = await rig.call(CallerScript(NUMBER, keys=keys("7", "52")))
    assert_queued(seen, Queued("rsa", 0, "normal", "rsa"))
    menu = rig.engine.menus.tree("guichet").node("menu-principal")
    assert isinstance(menu, MenuNode) and menu.invalid is not None
    assert seen.played(tts_name(menu.invalid))


async def test_max_retries_of_invalid_keys_goes_to_the_fallback(make_rig: RigFactory) -> None:
    rig = await make_rig()
    seen = await rig.call(CallerScript(NUMBER, keys=keys("7", "6")))
    assert_queued(seen, Queued("accueil", 0, "normal", "information-generale"))


async def test_sub_menu_without_a_key_falls_back_to_its_service(make_rig: RigFactory) -> None:
    rig = await make_rig()
    seen = await rig.call(CallerScript(NUMBER, keys=keys("1")))
    assert_queued(seen, Queued("apa", 10, "high", "apa"))


def test_after_menu_input_is_pure() -> None:
    menus = load_menus(REPO / "dialplans", SERVICE_QUEUES)
    menu = menus.tree("guichet").node("menu-principal")
    assert isinstance(menu, MenuNode) and menu.retries == 1
    assert after_menu_input(menu, "1", 0) == Go("apa", chosen=True)
    assert after_menu_input(menu, "7", 0) == Replay(menu.invalid)
    assert after_menu_input(menu, "", 0) == Replay(menu.no_input)
    assert after_menu_input(menu, "7", 1) == Go(menu.fallback, chosen=False)
    assert after_menu_input(menu, "*", 1) == Go(menu.fallback, chosen=False)


# --- Hang-ups ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after_s", "presses"),
    [
        (0.5, ()),  # during the welcome
        (3.5, ()),  # during the main menu
        (6.0, ("1",)),  # in the APA sub-menu
        (5.0, ("13",)),  # during the informational answer
        (3.0, ("11",)),  # during the queue node's prompt (welcome 1.5 s, keys at 2.0 and 2.3 s)
    ],
    ids=["welcome", "main-menu", "sub-menu", "info", "queue-prompt"],
)
async def test_hang_up_at_any_step_ends_cleanly(
    make_rig: RigFactory, after_s: float, presses: tuple[str, ...]
) -> None:
    rig = await make_rig()
    seen = await rig.call(CallerScript(NUMBER, keys=keys(*presses), hangup_after_s=after_s))
    assert seen.outcome.queue is None
    assert seen.outcome.answered_by is None
    assert rig.server.stats.failed == {}
    assert rig.server.stats.completed == 1


# --- Opening hours --------------------------------------------------------------------------------


@pytest.mark.parametrize("now", [SATURDAY, ASCENSION], ids=["saturday", "ascension"])
async def test_closed_platform_says_when_it_reopens_and_offers_a_callback(
    make_rig: RigFactory, now: datetime
) -> None:
    rig = await make_rig(now=now)
    seen = await rig.call(CallerScript(NUMBER, keys=keys("1")))
    message = closed_message(rig.engine.schedules["plateforme"], now)
    assert "rouvrira" in message
    assert seen.played(tts_name(message))
    main_menu = rig.engine.menus.tree("guichet").node("menu-principal")
    assert isinstance(main_menu, MenuNode)
    assert not seen.played(sound_name(main_menu.prompt))
    assert [(r.service, r.reason, r.requested_at) for r in rig.sink.requests] == [
        ("accueil", "demande-de-rappel", now)
    ]
    assert seen.outcome.queue is None


async def test_closed_message_is_synthesised_on_demand_into_the_sounds_folder(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    rig = await make_rig(now=SATURDAY, sounds=tmp_path)
    seen = await rig.call(CallerScript(NUMBER, keys=keys("1")))
    name = tts_name(closed_message(rig.engine.schedules["plateforme"], SATURDAY))
    assert seen.played(name)
    with wave.open(str(tmp_path / f"{name}.wav"), "rb") as sound:
        assert (sound.getframerate(), sound.getnchannels(), sound.getsampwidth()) == (8000, 1, 2)
        assert sound.getnframes() > 8000  # more than a second of speech


async def test_closed_platform_still_transfers_a_child_in_danger(make_rig: RigFactory) -> None:
    rig = await make_rig(now=SATURDAY)
    seen = await rig.call(CallerScript(NUMBER, keys=keys("9")))
    assert seen.outcome.transferred_to == "119"


async def test_closed_platform_without_a_key_says_goodbye(make_rig: RigFactory) -> None:
    rig = await make_rig(now=SATURDAY)
    seen = await rig.call(CallerScript(NUMBER))
    assert seen.outcome.queue is None and seen.outcome.transferred_to is None
    assert rig.sink.requests == []
    assert rig.server.stats.failed == {}


# --- Repeat callers -----------------------------------------------------------------------------


async def test_repeat_caller_is_greeted_raised_and_carries_the_open_contact(make_rig: RigFactory) -> None:
    directory = InMemoryDirectory()
    directory.add_citizen(E164, CitizenRef("cit-42", "Zoé Dupré"))
    directory.add_contact(E164, ContactRef("ct-7", "rsa", OPEN - timedelta(days=2), closed=False))
    rig = await make_rig(directory=directory)
    seen = await rig.call(CallerScript(NUMBER, keys=keys("52")))
    assert_queued(seen, Queued("rsa", 10, "high", "rsa"))  # normal + one step
    assert seen.variables[GUICHET_CONTACT_ID] == "ct-7"
    assert seen.variables[GUICHET_CITIZEN_ID] == "cit-42"
    assert seen.played(sound_name(REPEAT_CALLER_PROMPT))


async def test_contact_about_another_service_greets_but_does_not_raise(make_rig: RigFactory) -> None:
    directory = InMemoryDirectory()
    directory.add_contact(E164, ContactRef("ct-8", "apa", OPEN - timedelta(days=1), closed=False))
    rig = await make_rig(directory=directory)
    seen = await rig.call(CallerScript(NUMBER, keys=keys("52")))
    assert_queued(seen, Queued("rsa", 0, "normal", "rsa"))
    assert GUICHET_CONTACT_ID not in seen.variables
    assert GUICHET_CITIZEN_ID not in seen.variables
    assert seen.played(sound_name(REPEAT_CALLER_PROMPT))


async def test_old_contact_is_not_a_repeat_call(make_rig: RigFactory) -> None:
    directory = InMemoryDirectory()
    directory.add_contact(E164, ContactRef("ct-9", "rsa", OPEN - timedelta(days=30), closed=False))
    rig = await make_rig(directory=directory)
    seen = await rig.call(CallerScript(NUMBER, keys=keys("52")))
    assert_queued(seen, Queued("rsa", 0, "normal", "rsa"))
    assert not seen.played(sound_name(REPEAT_CALLER_PROMPT))


# --- Failures: engine down, engine error, menu loop -----------------------------------------------


async def test_engine_down_the_call_still_reaches_the_general_queue() -> None:
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    seen = await place(port, CallerScript(NUMBER, keys=keys("11")))
    assert (seen.outcome.queue, seen.outcome.answered_by) == ("accueil", "PJSIP/agent1")
    assert seen.outcome.agistatus == "FAILURE"
    assert any(step.endswith(":Playback") for step in seen.outcome.path)


class FailingSink:
    async def record(self, request: CallbackRequest) -> str:
        raise RuntimeError("callback store unavailable")


async def test_an_error_in_the_engine_sends_the_call_to_the_general_queue() -> None:
    engine = default_menu_engine(callbacks=FailingSink(), now=lambda: OPEN)
    async with FastAgiServer(build_routes(engine), port=0) as server:
        seen = await place(server.port, CallerScript(NUMBER, keys=keys("8")))
    assert_queued(seen, Queued("accueil", 0, "normal", menu_engine.FALLBACK_REASON))


async def test_a_menu_that_never_ends_is_cut_after_max_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "boucle.yaml").write_text(
        "start: menu\nnodes:\n"
        "  menu:\n    type: menu\n    text: Tapez 1.\n    timeout: 1\n    retries: 0\n"
        '    choices:\n      "1": fin\n    fallback: encore\n'
        "  encore:\n    type: prompt\n    text: Encore une fois.\n    next: menu\n"
        "  fin:\n    type: queue\n    queue: rsa\n    urgency: normal\n    reason: fin\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(menu_engine, "MAX_STEPS", 7)
    engine = MenuEngine(
        load_menus(tmp_path, SERVICE_QUEUES),
        schedules={},
        rules=UrgencyRules(),
        directory=InMemoryDirectory(),
        callbacks=InMemoryCallbackSink(),
        now=lambda: OPEN,
        start_tree="boucle",
    )
    async with FastAgiServer(build_routes(engine), port=0) as server:
        seen = await place(server.port, CallerScript(NUMBER))
    assert_queued(seen, Queued("accueil", 0, "normal", menu_engine.FALLBACK_REASON))
    assert (
        sum("Tapez" in c or tts_name("Tapez 1.") in c for c in seen.agi_commands()) == 4
    )  # steps 1, 3, 5, 7


# --- Hostile caller IDs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "recorded"),
    [
        ('Zoé \\"VIP\\" Dupré', 'Zoé "VIP" Dupré'),
        ("<b>Zoé</b> & <script>alert(1)</script> '; DROP", "<b>Zoé</b> & <script>alert(1)</script> '; DROP"),
        ("Zoé\\\\Dupré", "Zoé\\Dupré"),
    ],
    ids=["quotes", "html", "backslash"],
)
async def test_hostile_caller_name_reaches_the_records_intact(
    make_rig: RigFactory, name: str, recorded: str
) -> None:
    rig = await make_rig()
    seen = await rig.call(CallerScript(NUMBER, name, keys=keys("8")))
    assert [r.caller_name for r in rig.sink.requests] == [recorded]
    assert rig.server.stats.failed == {}
    assert seen.outcome.agistatus == "HANGUP"  # the callback node hangs up on purpose
    assert not any(step.endswith(":Playback") for step in seen.outcome.path)


async def test_caller_name_with_a_newline_is_kept_and_never_sent_back(make_rig: RigFactory) -> None:
    # An AGI environment line cannot carry a newline (the simulated PBX refuses to write one, the
    # server's parser rejects it: the dialplan's fail-safe then queues the call).  A name that
    # arrives with one, e.g. decoded from a directory, is kept as is: the engine never puts the
    # caller's name in an AGI command.
    rig = await make_rig()
    env = AgiEnv.of({"callerid": NUMBER, "calleridname": "Zoé\nDupré <b>", "callingpres": "0"})
    caller = await rig.engine.recognise(env)
    assert caller.name == "Zoé\nDupré <b>"
    assert caller.number == normalise(NUMBER)
    seen = await rig.call(CallerScript(NUMBER, "Zoé Dupré", keys=keys("52")))
    assert not any("Zoé" in command for command in seen.agi_commands())


async def test_a_withheld_number_asking_for_a_callback_reaches_the_service_instead(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig()
    seen = await rig.call(CallerScript("anonymous", keys=keys("32")))
    assert rig.sink.requests == []
    assert_queued(seen, Queued("mdph", 0, "normal", "mdph-suivi-dossier"))


def test_callback_number_needs_a_number_to_call() -> None:
    assert callback_number(normalise(NUMBER)) == E164
    assert callback_number(normalise("115")) == "115"
    assert callback_number(normalise("anonymous")) is None
    assert callback_number(normalise(NUMBER, "32")) is None  # presentation restricted


# --- Wiring: invalid configuration refuses to start ------------------------------------------------


def settings_dir(tmp_path: Path) -> Path:
    """A copy of the default menus and settings, to break one file at a time."""
    (tmp_path / "settings").mkdir()
    for name in ("guichet.yaml", "settings/hours.yaml", "settings/urgency.yaml"):
        (tmp_path / name).write_text(
            (REPO / "dialplans" / name).read_text(encoding="utf-8"), encoding="utf-8"
        )
    return tmp_path


def test_an_invalid_menu_refuses_to_start_with_file_line_and_key(tmp_path: Path) -> None:
    folder = settings_dir(tmp_path)
    (folder / "broken.yaml").write_text("start: a\nnodes:\n  a:\n    type: qeue\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{folder / 'broken.yaml'}:4: nodes.a.type: unknown")):
        default_menu_engine(folder)


def test_a_menu_naming_an_unknown_schedule_refuses_to_start(tmp_path: Path) -> None:
    folder = settings_dir(tmp_path)
    menu = folder / "guichet.yaml"
    menu.write_text(menu.read_text(encoding="utf-8").replace("schedule: plateforme", "schedule: platforme"))
    with pytest.raises(ConfigError, match=r"guichet\.yaml:\d+: nodes\.ouverture\.schedule: unknown schedule"):
        default_menu_engine(folder)


@pytest.mark.parametrize(
    ("name", "old", "new", "message"),
    [
        ("settings/hours.yaml", '"08:30-17:30"', '"17:30-08:30"', r"hours\.yaml\.plateforme\.monday\[0\]"),
        ("settings/urgency.yaml", "raise: 1", "raise: -1", r"urgency\.yaml\.repeat_caller\.raise"),
    ],
    ids=["hours", "urgency"],
)
def test_invalid_settings_refuse_to_start_naming_the_key(
    tmp_path: Path, name: str, old: str, new: str, message: str
) -> None:
    folder = settings_dir(tmp_path)
    path = folder / name
    path.write_text(path.read_text(encoding="utf-8").replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        default_menu_engine(folder)


def test_the_demo_schedules_are_open_day_and_night() -> None:
    engine = default_menu_engine(open_all_day=True)
    assert engine.schedules.keys() == default_menu_engine().schedules.keys()
    for moment in (SATURDAY, ASCENSION, datetime(2026, 5, 15, 3, 0, tzinfo=PARIS)):
        assert all(is_open(schedule, moment) for schedule in engine.schedules.values())
    assert not is_open(default_menu_engine().schedules["plateforme"], SATURDAY)
