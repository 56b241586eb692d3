"""asterisk_conf/ and `guichet asterisk-config`: every file parses as Asterisk reads it, names only what
exists, binds to loopback unless asked, keeps secrets in 0600 files; the dialplan is the simulator's."""

from __future__ import annotations

import io
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import guichet.names
import pbx_sim.dialplan
from guichet.asterisk_conf import (
    AGENTS_CONTEXT,
    COMMITTED_INSTALL_DIR,
    DEFAULT_AGI_URL,
    EXTENSIONS_CONF,
    QUEUES_CONF,
    AsteriskConfigError,
    QueueSettings,
    RenderOptions,
    full_dialplan,
    link_system_data,
    main,
    render_extensions,
    render_extensions_conf,
    render_files,
    render_queues,
    render_queues_conf,
    render_secrets,
)
from guichet.asterisk_conf_files import AMI_READ, AMI_WRITE, MANAGER_SECRET_FILE, PJSIP_AUTH_FILE
from guichet.asterisk_conf_modules import APPLICATION_MODULES, FUNCTION_MODULES
from guichet.config import QueuePolicy, Settings, parse_settings
from guichet.names import (
    APOLOGY_SOUND,
    CALLBACK_OFFER_SOUND,
    GUICHET_IVR_DONE,
    GUICHET_QUEUE,
    GUICHET_TRANSFER,
)
from ivr.menus import QueueNode, load_menus
from ivr.services import GENERAL_QUEUE, SERVICE_QUEUES
from pbx_sim.dialplan import (
    INBOUND_CONTEXT,
    QUEUE_EXIT_CONTEXT,
    Dialplan,
    Step,
    evaluate_gotoif,
    inbound_dialplan,
    substitute,
)
from tests.conftest import REPO

CONF_DIR = REPO / "asterisk_conf"
RUN = (
    f"run `guichet asterisk-config --files-only --install-dir {COMMITTED_INSTALL_DIR}` and commit the result"
)
AMI_SECRET = "ami-Secret-42!"
ALICE_PASSWORD = "alice-Pw-7#x"
BOB_PASSWORD = "bob-Pw-9&y"

# --- a small reader of Asterisk's config syntax (main/config.c) ----------------------------------

_SECTION = re.compile(r"^\[(?P<name>[^\]]+)\](?:\((?P<flags>[^)]*)\))?(?P<rest>.*)$")
_SETTING = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9_.-]*)\s*=>?\s*(?P<value>.*)$")
_DIRECTIVE = re.compile(r'^#(?P<kind>include|tryinclude)\s+"?(?P<path>[^"]+)"?$')
_EXTEN = re.compile(
    r"^exten\s*=>\s*(?P<pattern>[^,]+),(?P<prio>[^,(]+)(?:\((?P<label>[^)]*)\))?,(?P<app>.*)$"
)
_SAME = re.compile(r"^same\s*=>\s*(?P<prio>[^,(]+)(?:\((?P<label>[^)]*)\))?,(?P<app>.*)$")
_APP = re.compile(r"^(?P<app>[A-Za-z][A-Za-z0-9_]*)\((?P<data>.*)\)$")


def strip_comment(line: str) -> str:
    """Asterisk's rule: an unescaped ';' starts a comment."""
    return re.split(r"(?<!\\);", line, maxsplit=1)[0].strip()


@dataclass
class Section:
    name: str
    template: bool = False
    items: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        values = [value for name, value in self.items if name == key]
        return values[-1] if values else None

    def all(self, key: str) -> list[str]:
        return [value for name, value in self.items if name == key]


def parse_conf(
    text: str, where: str, etc: Path | None = None, into: list[Section] | None = None
) -> list[Section]:
    """Sections in order; ``#include``/``#tryinclude`` read from ``etc``; ``[x](+filter)`` appends."""
    sections: list[Section] = [] if into is None else into
    current: Section | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = strip_comment(raw)
        at = f"{where}:{number}: {raw!r}"
        if not line:
            continue
        if line.startswith("#"):
            directive = _DIRECTIVE.match(line)
            assert directive is not None, f"{at}: unknown directive"
            path = etc / directive["path"] if etc is not None else None
            if path is None or not path.is_file():
                assert directive["kind"] == "tryinclude", f"{at}: a missing #include stops the module"
                continue
            parse_conf(path.read_text(encoding="utf-8"), directive["path"], etc, sections)
            continue
        if (header := _SECTION.match(line)) is not None:
            assert not header["rest"], f"{at}: nothing may follow a section name"
            flags = header["flags"] or ""
            if flags.startswith("+"):
                wanted = flags[1:]
                targets = [
                    s
                    for s in sections
                    if s.name == header["name"]
                    and (not wanted or f"{s.get(wanted.split('=')[0])}" == wanted.split("=")[1])
                ]
                assert targets, f"{at}: category addition to a section that does not exist"
                current = targets[0]
            else:
                assert flags in ("", "!"), f"{at}: unexpected section options {flags!r}"
                current = Section(header["name"], template=flags == "!")
                sections.append(current)
            continue
        setting = _SETTING.match(line)
        assert setting is not None, f"{at}: not a key = value line"
        assert current is not None, f"{at}: outside any section"
        current.items.append((setting["key"], setting["value"].strip()))
    return sections


def by_name(sections: list[Section], name: str, kind: str | None = None) -> Section:
    found = [s for s in sections if s.name == name and (kind is None or s.get("type") == kind)]
    assert len(found) == 1, f"[{name}] type={kind}: {len(found)} sections"
    return found[0]


def parse_extensions(text: str) -> tuple[Dialplan, dict[str, dict[str, str]]]:
    """The contexts as a Dialplan, and the settings sections ([general], [globals]) as dicts."""
    contexts: dict[str, dict[str, tuple[Step, ...]]] = {}
    settings: dict[str, dict[str, str]] = {}
    section = ""
    pattern = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = strip_comment(raw)
        if not line:
            continue
        where = f"extensions.conf:{number}: {raw!r}"
        if (header := _SECTION.match(line)) is not None:
            assert not header["flags"] and not header["rest"], f"{where}: a template marker?"
            section, pattern = header["name"], ""
            if section in ("general", "globals"):
                settings[section] = {}
            else:
                assert section not in contexts, f"{where}: context defined twice"
                contexts[section] = {}
            continue
        if section in settings:
            setting = _SETTING.match(line)
            assert setting is not None, f"{where}: not a key = value line"
            settings[section][setting["key"]] = setting["value"]
            continue
        assert section, f"{where}: outside any section"
        if (exten := _EXTEN.match(line)) is not None:
            pattern = exten["pattern"].strip()
            assert exten["prio"] == "1", f"{where}: an extension must start at priority 1"
            assert pattern not in contexts[section], f"{where}: extension defined twice"
            contexts[section][pattern] = ()
            match = exten
        else:
            same = _SAME.match(line)
            assert same is not None, f"{where}: neither exten => nor same =>"
            assert pattern, f"{where}: same => before any exten =>"
            assert same["prio"] == "n", f"{where}: same => must use priority n"
            match = same
        app = _APP.match(match["app"])
        assert app is not None, f"{where}: expected App(data)"
        step = Step(app["app"], app["data"], match["label"] or "")
        contexts[section][pattern] = (*contexts[section][pattern], step)
    return Dialplan(contexts), settings


def as_dict(dialplan: Dialplan) -> dict[str, dict[str, tuple[Step, ...]]]:
    return {context: dict(extens) for context, extens in dialplan.contexts.items()}


def committed(name: str) -> str:
    return (CONF_DIR / name).read_text(encoding="utf-8")


# --- every directive is one Asterisk 22 knows (its docs and the recorded configs) -----------------

KNOWN_KEYS: dict[str, set[str]] = {
    "asterisk.conf:directories": {
        "astetcdir", "astmoddir", "astvarlibdir", "astdbdir", "astkeydir", "astdatadir", "astagidir",
        "astspooldir", "astrundir", "astlogdir", "astsbindir", "astcachedir",
    },
    "asterisk.conf:options": {
        "verbose", "debug", "timestamp", "defaultlanguage", "documentation_language", "hideconnect",
        "languageprefix", "maxfiles", "runuser", "rungroup", "transmit_silence",
    },
    "modules.conf:modules": {"autoload", "load", "noload", "preload", "require", "preload-require"},
    "logger.conf:general": {"dateformat", "queue_log", "queue_log_name", "rotatestrategy"},
    "rtp.conf:general": {"rtpstart", "rtpend", "icesupport", "stunaddr", "strictrtp", "rtpchecksums"},
    "http.conf:general": {"enabled", "bindaddr", "bindport"},
    "musiconhold.conf:general": {"cachertclasses", "preferchannelclass"},
    "musiconhold.conf:class": {"mode", "directory", "sort", "random", "application", "format", "digit"},
    "manager.conf:general": {
        "enabled", "webenabled", "port", "bindaddr", "displayconnects", "timestampevents",
        "allowmultiplelogin", "authtimeout", "authlimit", "httptimeout", "channelvars", "debug",
    },
    "manager.conf:user": {
        "secret", "deny", "permit", "acl", "read", "write", "writetimeout", "eventfilter",
        "displayconnects", "setvar",
    },
    "queues.conf:general": {
        "persistentmembers", "autofill", "shared_lastcall", "log_membername_as_agent", "monitor-type",
        "updatecdr", "keepstats",
    },
    "queues.conf:queue": {
        "strategy", "timeout", "retry", "wrapuptime", "ringinuse", "joinempty", "leavewhenempty",
        "musicclass", "announce-position", "announce-holdtime", "announce-frequency", "periodic-announce",
        "periodic-announce-frequency", "servicelevel", "setinterfacevar", "setqueuevar", "maxlen",
        "reportholdtime", "context", "member", "weight", "timeoutrestart", "announce",
    },
    "extensions.conf:general": {"static", "writeprotect", "autofallthrough", "clearglobalvars"},
    "pjsip.conf:global": {"type", "user_agent", "endpoint_identifier_order", "max_forwards", "debug"},
    "pjsip.conf:transport": {
        "type", "protocol", "bind", "external_media_address", "external_signaling_address", "local_net",
    },
    "pjsip.conf:endpoint": {
        "type", "transport", "context", "disallow", "allow", "dtmf_mode", "direct_media", "rtp_symmetric",
        "force_rport", "rewrite_contact", "language", "auth", "aors", "callerid", "trust_id_inbound",
        "send_pai", "outbound_auth", "from_user", "from_domain", "media_address", "bind_rtp_to_media_address",
    },
    "pjsip.conf:aor": {
        "type", "contact", "max_contacts", "remove_existing", "qualify_frequency", "default_expiration",
        "minimum_expiration", "maximum_expiration", "remove_unavailable",
    },
    "pjsip.conf:auth": {"type", "auth_type", "username", "password", "realm"},
    "pjsip.conf:identify": {"type", "endpoint", "match"},
    "pjsip.conf:registration": {
        "type", "transport", "outbound_auth", "server_uri", "client_uri", "contact_user", "retry_interval",
    },
}  # fmt: skip


LOG_LEVELS = {"debug", "notice", "warning", "error", "verbose", "dtmf", "fax", "security", "trace"}


def section_kind(file: str, section: Section) -> str:
    if file == "pjsip.conf":
        return f"pjsip.conf:{section.get('type')}"
    if section.name in ("general", "directories", "options", "modules", "logfiles"):
        return f"{file}:{section.name}"
    return {"musiconhold.conf": "musiconhold.conf:class", "manager.conf": "manager.conf:user"}.get(
        file, f"{file}:queue"
    )


def unknown_keys(file: str, sections: list[Section]) -> list[str]:
    unknown = []
    for s in sections:
        kind = section_kind(file, s)
        for key, value in s.items:
            if kind == "logger.conf:logfiles":  # file name => levels
                if not set(value.split(",")) <= LOG_LEVELS:
                    unknown.append(f"{file} [{s.name}] {key} => {value}")
            elif key not in KNOWN_KEYS[kind]:
                unknown.append(f"{file} [{s.name}] {key}")
    return unknown


# --- rendering helpers ----------------------------------------------------------------------------

TOML = """
[ami]
username = "guichet"

[queues.apa]
wrapup_s = 40
service_level_s = 20

[routing]
callback_offer_after_s = 120

[agents.alice]
name = "Alice Martin"
skills = ["apa", "accueil"]

[agents.bob]
skills = ["pmi"]
sip_secret_file = "{bob_file}"
"""


def project_settings(tmp_path: Path) -> Settings:
    bob_file = tmp_path / "bob.secret"
    bob_file.write_text(BOB_PASSWORD + "\n", encoding="utf-8")
    (tmp_path / "guichet.toml").write_text(TOML.format(bob_file=bob_file), encoding="utf-8")
    import tomllib

    return parse_settings(tomllib.loads(TOML.format(bob_file=bob_file)), "guichet.toml")


ENV = {"GUICHET_AMI_SECRET": AMI_SECRET, "GUICHET_SIP_SECRET_ALICE": ALICE_PASSWORD}


def write_rendering(out: Path, settings: Settings, options: RenderOptions, environ: dict[str, str]) -> None:
    for name, text in render_files(settings, options).items():
        (out / name).write_text(text, encoding="utf-8")
    (out / "secrets").mkdir()
    for name, text in render_secrets(settings, environ)[0].items():
        (out / name).write_text(text, encoding="utf-8")


def conf(out: Path, name: str) -> list[Section]:
    return parse_conf((out / name).read_text(encoding="utf-8"), name, etc=out)


# --- (1) the committed asterisk_conf/ is a fresh rendering ---------------------------------------


def committed_rendering() -> dict[str, str]:
    return render_files(Settings(), RenderOptions(install_dir=COMMITTED_INSTALL_DIR))


def test_committed_files_are_a_fresh_default_rendering() -> None:
    files = committed_rendering()
    on_disk = {path.name for path in CONF_DIR.glob("*.conf")}
    assert on_disk == set(files), f"asterisk_conf/ holds other files than the generator writes: {RUN}"
    for name, text in files.items():
        assert committed(name) == text, f"asterisk_conf/{name} differs from the generator: {RUN}"
    assert not (CONF_DIR / "secrets").exists(), "secrets are never committed"


def test_every_file_starts_with_the_do_not_edit_comment() -> None:
    for name, text in committed_rendering().items():
        first = text.splitlines()[0]
        assert first.startswith("; generated by guichet asterisk-config") and "do not edit" in first, name


def test_every_committed_file_parses_with_known_directives_only() -> None:
    for name in committed_rendering():
        if name == EXTENSIONS_CONF:
            _, general = parse_extensions(committed(name))
            assert set(general["general"]) <= KNOWN_KEYS["extensions.conf:general"]
            continue
        sections = parse_conf(committed(name), name)
        assert sections, name
        assert not [s.name for s in sections if s.template], f"{name}: a (!) template is ignored by Asterisk"
        assert unknown_keys(name, sections) == [], "a directive Asterisk 22 does not know"


def test_a_misspelt_directive_is_caught() -> None:
    text = committed("pjsip.conf").replace("qualify_frequency", "qualify_frequncy", 1)
    assert unknown_keys("pjsip.conf", parse_conf(text, "pjsip.conf")) == [
        "pjsip.conf [trunk] qualify_frequncy"
    ]


def test_the_reader_reads_the_recorded_configs(captures_dir: Path) -> None:
    """The same reader on the files that booted a real Asterisk 22 (the (!) of asterisk.conf included)."""
    for folder in ("conf", "round2/conf"):
        for path in sorted((captures_dir / folder).glob("*.conf")):
            if path.name == EXTENSIONS_CONF:
                continue
            sections = parse_conf(path.read_text(encoding="utf-8"), path.name)
            assert sections, path
    recorded = parse_conf((captures_dir / "round2/conf/pjsip.conf").read_text(encoding="utf-8"), "pjsip.conf")
    assert unknown_keys("pjsip.conf", recorded) == []
    assert by_name(parse_conf((captures_dir / "conf/asterisk.conf").read_text(), "a"), "directories").template


def test_the_reader_refuses_what_asterisk_would_misread() -> None:
    with pytest.raises(AssertionError, match="missing #include"):
        parse_conf("[a]\n#include nope.conf\n", "x", etc=Path("/nonexistent"))
    with pytest.raises(AssertionError, match="does not exist"):
        parse_conf("[a](+)\nk = v\n", "x")
    with pytest.raises(AssertionError, match="outside any section"):
        parse_conf("k = v\n", "x")
    with pytest.raises(AssertionError, match="template"):
        parse_extensions("[from-citizens](!)\nexten => _X.,1,Answer()\n")
    with pytest.raises(AssertionError, match="same => before"):
        parse_extensions("[c]\n same => n,Answer()\n")
    with pytest.raises(AssertionError, match="priority 1"):
        parse_extensions("[c]\nexten => 1,2,Answer()\n")


# --- (2) extensions.conf is the simulator's dialplan, step by step -------------------------------


def test_committed_extensions_conf_is_the_simulated_pbx_flow_step_by_step() -> None:
    parsed, _ = parse_extensions(committed(EXTENSIONS_CONF))
    expected = as_dict(full_dialplan(Settings(), DEFAULT_AGI_URL))
    got = as_dict(parsed)
    assert list(got) == list(expected), f"contexts differ: {RUN}"
    simulated = inbound_dialplan(DEFAULT_AGI_URL)
    assert set(got) == set(simulated.contexts) | {AGENTS_CONTEXT}
    for context, extens in simulated.contexts.items():
        assert got[context] == dict(extens), f"[{context}] differs from pbx_sim.dialplan: {RUN}"


@pytest.mark.parametrize(
    "dialplan",
    [
        inbound_dialplan(DEFAULT_AGI_URL),
        inbound_dialplan("agi://10.0.0.7:4600", overflow=False, max_wait_s=90, fallback_queue="accueil"),
        inbound_dialplan("hagi://agi.example.org", trunk="ovh"),
    ],
    ids=["default", "no-overflow", "hagi"],
)
def test_render_then_parse_gives_the_same_dialplan(dialplan: Dialplan) -> None:
    parsed, settings = parse_extensions(render_extensions(dialplan))
    assert as_dict(parsed) == as_dict(dialplan)
    assert set(settings) == {"general", "globals"}


def test_a_changed_step_is_seen_by_the_step_by_step_check() -> None:
    dialplan = inbound_dialplan(DEFAULT_AGI_URL)
    steps = list(dialplan.contexts[INBOUND_CONTEXT]["_X."])
    steps[1] = Step("Set", "CHANNEL(language)=en")
    changed = Dialplan({**dialplan.contexts, INBOUND_CONTEXT: {"_X.": tuple(steps)}})
    parsed, _ = parse_extensions(render_extensions(changed))
    assert as_dict(parsed) != as_dict(dialplan)


def test_every_guichet_variable_in_the_dialplan_is_defined_in_names() -> None:
    text = committed(EXTENSIONS_CONF)
    used = set(re.findall(r"\bGUICHET_[A-Za-z0-9_]*", text))
    defined = {value for name, value in vars(guichet.names).items() if name.startswith("GUICHET_")}
    assert {GUICHET_IVR_DONE, GUICHET_QUEUE, GUICHET_TRANSFER} <= used
    assert used <= defined, f"not in guichet/names.py: {sorted(used - defined)}"


def test_queue_timeouts_in_the_dialplan_are_the_queues_max_wait(tmp_path: Path) -> None:
    settings = project_settings(tmp_path)
    parsed, _ = parse_extensions(render_extensions_conf(DEFAULT_AGI_URL, settings))
    timeouts = {
        step.data.split(",")[4]
        for extens in parsed.contexts.values()
        for steps in extens.values()
        for step in steps
        if step.app == "Queue"
    }
    assert timeouts == {str(policy.max_wait_s) for policy in settings.queues.values()}
    different = Settings(queues={**settings.queues, "apa": QueuePolicy(max_wait_s=300)})
    with pytest.raises(AsteriskConfigError, match=r"max_wait_s differ \(apa=300, pmi=600"):
        render_extensions_conf(DEFAULT_AGI_URL, different)


# --- (3) every context and queue the engine names exists -----------------------------------------


def engine_contexts() -> set[str]:
    """Every *_CONTEXT constant of pbx_sim.dialplan (the engine's Originate and routes use them)."""
    return {value for name, value in vars(pbx_sim.dialplan).items() if name.endswith("_CONTEXT")}


def test_every_context_named_anywhere_exists(tmp_path: Path) -> None:
    write_rendering(tmp_path, project_settings(tmp_path), RenderOptions(install_dir=str(tmp_path)), ENV)
    contexts = set(parse_extensions((tmp_path / EXTENSIONS_CONF).read_text())[0].contexts)
    named = engine_contexts() | {AGENTS_CONTEXT}
    named |= {s.get("context") or "" for s in conf(tmp_path, "pjsip.conf") if s.get("type") == "endpoint"}
    named |= {s.get("context") or "" for s in conf(tmp_path, QUEUES_CONF) if s.name != "general"}
    assert {INBOUND_CONTEXT, QUEUE_EXIT_CONTEXT, "callback-dial", "callback-confirm"} <= named
    assert named <= contexts, f"named but missing from extensions.conf: {sorted(named - contexts)}"


def menu_queues() -> set[str]:
    menus = load_menus(REPO / "dialplans", SERVICE_QUEUES)
    return {
        node.queue
        for tree in menus.trees.values()
        for node in tree.nodes.values()
        if isinstance(node, QueueNode)
    }


def test_every_queue_of_the_services_menus_and_dialplan_is_in_queues_conf() -> None:
    queues = {s.name for s in parse_conf(committed(QUEUES_CONF), QUEUES_CONF)} - {"general"}
    literal = {
        step.data.split(",")[0]
        for extens in full_dialplan(Settings()).contexts.values()
        for steps in extens.values()
        for step in steps
        if step.app == "Queue" and not step.data.startswith("${")
    }
    assert literal == {GENERAL_QUEUE}
    needed = set(SERVICE_QUEUES) | menu_queues() | literal
    assert needed <= queues, f"missing from queues.conf: {sorted(needed - queues)}"


def test_queues_follow_their_policies_and_the_callback_offer(tmp_path: Path) -> None:
    queues = parse_conf(render_queues_conf(project_settings(tmp_path)), QUEUES_CONF)
    assert [s.name for s in queues] == ["general", *SERVICE_QUEUES]
    apa, pmi, general = by_name(queues, "apa"), by_name(queues, "pmi"), by_name(queues, GENERAL_QUEUE)
    assert (apa.get("wrapuptime"), apa.get("servicelevel")) == ("40", "20")
    assert (pmi.get("wrapuptime"), pmi.get("servicelevel")) == ("15", "30")
    for queue in queues[1:]:
        assert queue.get("context") == QUEUE_EXIT_CONTEXT
        assert queue.get("periodic-announce") == CALLBACK_OFFER_SOUND
        assert queue.get("periodic-announce-frequency") == "120"
        assert queue.get("member") is None, "agents log in with QueueAdd: no static member"
        assert queue.get("ringinuse") == "no" and queue.get("leavewhenempty") == "no"
    # a service queue with nobody to answer refuses at once (JOINEMPTY: the overflow route sends the
    # caller on); the general queue, the last resort, never refuses
    assert apa.get("joinempty") == pmi.get("joinempty") == "unavailable,invalid"
    assert general.get("joinempty") == "yes"


def test_a_queue_named_general_is_refused_with_the_reason() -> None:
    with pytest.raises(AsteriskConfigError, match=r"'General' is reserved.*global settings"):
        render_queues({"apa": QueuePolicy(), "General": QueuePolicy(), GENERAL_QUEUE: QueuePolicy()})


@pytest.mark.parametrize(
    ("queues", "settings", "message"),
    [
        ((), None, "no queue"),
        (("apa", "APA", GENERAL_QUEUE), None, "twice"),
        (("a;b",), None, "queue name"),
        (("apa",), None, "general queue 'accueil' is missing"),
        ((GENERAL_QUEUE,), QueueSettings(strategy="fastest"), "strategy 'fastest'"),
        ((GENERAL_QUEUE,), QueueSettings(periodic_announce="a;b"), "comment"),
    ],
)
def test_bad_queue_input_is_refused(
    queues: tuple[str, ...], settings: QueueSettings | None, message: str
) -> None:
    with pytest.raises(AsteriskConfigError, match=message):
        render_queues({name: QueuePolicy() for name in queues}, settings)


def test_a_fractional_service_level_is_refused() -> None:
    with pytest.raises(AsteriskConfigError, match=r"service_level_s: 12.5 is not a whole number"):
        render_queues({GENERAL_QUEUE: QueuePolicy(service_level_s=12.5)})


# --- (4) SIP: the trunk and one endpoint + auth + aor per agent ----------------------------------


def test_every_agent_has_endpoint_auth_and_aor(tmp_path: Path) -> None:
    settings = project_settings(tmp_path)
    write_rendering(tmp_path, settings, RenderOptions(install_dir=str(tmp_path)), ENV)
    sip = conf(tmp_path, "pjsip.conf")
    assert unknown_keys("pjsip.conf", sip) == []
    for agent_id in settings.agents:
        endpoint = by_name(sip, agent_id, "endpoint")
        assert (endpoint.get("context"), endpoint.get("dtmf_mode"), endpoint.get("direct_media")) == (
            AGENTS_CONTEXT,
            "rfc4733",
            "no",
        )
        assert (endpoint.get("disallow"), endpoint.get("allow")) == ("all", "ulaw,alaw")
        assert endpoint.get("auth") == endpoint.get("aors") == agent_id
        auth = by_name(sip, agent_id, "auth")
        assert (auth.get("auth_type"), auth.get("username")) == ("userpass", agent_id)
        aor = by_name(sip, agent_id, "aor")
        assert (aor.get("max_contacts"), aor.get("remove_existing")) == ("1", "yes")
        assert int(aor.get("qualify_frequency") or 0) > 0
    assert by_name(sip, "alice", "auth").get("password") == ALICE_PASSWORD
    assert by_name(sip, "bob", "auth").get("password") == BOB_PASSWORD
    assert by_name(sip, "alice", "endpoint").get("callerid") == '"Alice Martin" <alice>'


def test_the_trunk_enters_the_inbound_context_and_is_what_the_dialplan_dials() -> None:
    sip = parse_conf(
        render_files(Settings(), RenderOptions(install_dir="/srv/a", trunk_host="sip.operateur.fr"))[
            "pjsip.conf"
        ],
        "pjsip.conf",
    )
    trunk = by_name(sip, "trunk", "endpoint")
    assert (trunk.get("context"), trunk.get("dtmf_mode"), trunk.get("auth")) == (
        INBOUND_CONTEXT,
        "rfc4733",
        None,
    )
    assert by_name(sip, "trunk", "identify").get("match") == "sip.operateur.fr"
    assert by_name(sip, "trunk", "aor").get("contact") == "sip:sip.operateur.fr:5060"
    dials = {
        step.data.split("@")[1].split(",")[0]
        for extens in inbound_dialplan(DEFAULT_AGI_URL).contexts.values()
        for steps in extens.values()
        for step in steps
        if step.app == "Dial"
    }
    assert dials == {"trunk"}


def test_an_agent_without_password_is_left_out_and_said(tmp_path: Path) -> None:
    settings = project_settings(tmp_path)
    files, missing = render_secrets(settings, {"GUICHET_AMI_SECRET": AMI_SECRET})
    auths = {s.name for s in parse_conf(files[PJSIP_AUTH_FILE], PJSIP_AUTH_FILE)}
    assert auths == {"bob"}
    assert len(missing) == 1 and "agent alice left out" in missing[0]
    assert "GUICHET_SIP_SECRET_ALICE" in missing[0]
    files, missing = render_secrets(settings, {})
    assert MANAGER_SECRET_FILE not in files and any("GUICHET_AMI_SECRET" in m for m in missing)


@pytest.mark.parametrize("agent_id", ["1001", "trunk"])
def test_an_agent_id_that_would_be_mistaken_is_refused(agent_id: str) -> None:
    from guichet.config import AgentSettings

    settings = Settings(agents={agent_id: AgentSettings(skills=("apa",))})
    with pytest.raises(AsteriskConfigError, match=f"agent id '{agent_id}'"):
        render_files(settings, RenderOptions(install_dir="/srv/a"))


# --- (5) loopback unless asked; AMI with the least rights ----------------------------------------


def rendered_values(files: dict[str, str]) -> list[tuple[str, str, str]]:
    return [
        (name, key, value)
        for name, text in files.items()
        if name != EXTENSIONS_CONF
        for s in parse_conf(text, name)
        for key, value in s.items
    ]


def test_nothing_binds_to_all_addresses_unless_asked() -> None:
    files = render_files(Settings(), RenderOptions(install_dir="/srv/a"))
    wildcard = [(n, k, v) for n, k, v in rendered_values(files) if "0.0.0.0" in v or v.startswith("::")]
    assert wildcard == [("manager.conf", "deny", "0.0.0.0/0.0.0.0")]
    binds = {(n, k): v for n, k, v in rendered_values(files) if k in ("bind", "bindaddr")}
    assert binds == {("pjsip.conf", "bind"): "127.0.0.1:5060", ("manager.conf", "bindaddr"): "127.0.0.1"}
    asked = render_files(Settings(), RenderOptions(install_dir="/srv/a", sip_bind="0.0.0.0", sip_port=5070))
    assert ("pjsip.conf", "bind", "0.0.0.0:5070") in rendered_values(asked)
    ipv6 = render_files(
        Settings(), RenderOptions(install_dir="/srv/a", sip_bind="::1", trunk_host="2001:db8::5")
    )
    assert ("pjsip.conf", "bind", "[::1]:5060") in rendered_values(ipv6)
    assert ("pjsip.conf", "contact", "sip:[2001:db8::5]:5060") in rendered_values(ipv6)


def test_manager_permits_loopback_only_and_the_least_rights() -> None:
    manager = parse_conf(committed("manager.conf"), "manager.conf")
    assert by_name(manager, "general").get("bindaddr") == "127.0.0.1"
    user = by_name(manager, "guichet")
    assert user.items[0] == ("deny", "0.0.0.0/0.0.0.0"), "deny everything first, then permit"
    assert user.all("permit") == ["127.0.0.1/255.255.255.255"]
    assert set((user.get("read") or "").split(",")) == {"call", "agent", "dialplan"} == set(AMI_READ)
    assert set((user.get("write") or "").split(",")) == {"agent", "originate", "reporting"} == set(AMI_WRITE)
    assert user.get("secret") is None, "the secret lives in secrets/manager.conf only"
    wider = render_files(Settings(), RenderOptions(install_dir="/srv/a", ami_permit=("10.1.0.0/16", "::1")))
    assert by_name(parse_conf(wider["manager.conf"], "m"), "guichet").all("permit") == [
        "10.1.0.0/255.255.0.0",
        "::1/128",
    ]


# --- (6) modules: exactly what the dialplan and the rest need -------------------------------------


def test_every_application_and_function_of_extensions_conf_has_its_module_loaded() -> None:
    modules = parse_conf(committed("modules.conf"), "modules.conf")[0]
    assert modules.get("autoload") == "no"
    loaded = set(modules.all("load"))
    text = committed(EXTENSIONS_CONF)
    apps = set(re.findall(r"^(?:exten => [^,]+,1|\s*same => n)(?:\([^)]*\))?,([A-Za-z]+)\(", text, re.M))
    functions = set(re.findall(r"\$\{([A-Z][A-Z_]+)\(", text)) | set(
        re.findall(r",Set\(([A-Z][A-Z_]+)\(", text)
    )
    assert {"Queue", "AGI", "Dial", "Return"} <= apps and {"CHANNEL", "MASTER_CHANNEL"} <= functions
    for app in apps:
        assert app in APPLICATION_MODULES, f"{app}: which module provides it?"
        assert APPLICATION_MODULES[app] in loaded | {None}, f"{app}: {APPLICATION_MODULES[app]} not loaded"
    for function in functions:
        assert FUNCTION_MODULES[function] in loaded, f"{function}: {FUNCTION_MODULES[function]} not loaded"
    for needed in ("chan_pjsip.so", "res_pjsip.so", "app_queue.so", "res_agi.so", "pbx_config.so",
                   "res_musiconhold.so", "format_wav.so", "codec_alaw.so", "app_stack.so"):  # fmt: skip
        assert needed in loaded


def test_an_application_no_table_knows_is_refused() -> None:
    flows = full_dialplan(Settings())
    odd = Dialplan(
        {**flows.contexts, "x": {"s": (Step("Festival", "bonjour"), Step("Set", "X=${SHELL(id)}"))}}
    )
    from guichet.asterisk_conf_modules import render_modules

    with pytest.raises(AsteriskConfigError, match=r"application\(s\) Festival; function\(s\) SHELL"):
        render_modules(odd)


# --- (7) asterisk.conf: relocatable -----------------------------------------------------------------


def test_every_folder_asterisk_writes_is_under_the_install_dir() -> None:
    files = render_files(
        Settings(), RenderOptions(install_dir="/opt/g", modules_dir="/usr/lib64/asterisk/modules")
    )
    directories = by_name(parse_conf(files["asterisk.conf"], "asterisk.conf"), "directories")
    assert not directories.template
    paths = dict(directories.items)
    assert paths.pop("astmoddir") == "/usr/lib64/asterisk/modules"
    assert paths.pop("astsbindir") == "/usr/sbin"
    assert paths["astetcdir"] == paths["astdatadir"] == "/opt/g"
    assert all(value == "/opt/g" or value.startswith("/opt/g/") for value in paths.values()), paths
    moh = by_name(parse_conf(files["musiconhold.conf"], "m"), "default")
    assert (moh.get("mode"), moh.get("directory")) == ("files", "/opt/g/moh")


# --- (8) hostile values are refused; secrets stay in 0600 files ------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"trunk_host": "evil;x"}, "trunk-host"),
        ({"sip_bind": "127.0.0.1\nbind=0.0.0.0"}, "sip-bind"),
        ({"ami_permit": ("0.0.0.0/0]",)}, "ami-permit"),
        ({"install_dir": "relative/dir"}, "absolute"),
        ({"sip_port": 70000}, "sip-port"),
    ],
)
def test_hostile_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(AsteriskConfigError, match=message):
        render_files(Settings(), RenderOptions(**{"install_dir": "/srv/a", **options}))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GUICHET_AMI_SECRET": "abc;def"}, "AMI: the secret contains ';'"),
        ({"GUICHET_AMI_SECRET": "abc\ndef"}, "AMI: the secret contains a control character"),
        ({"GUICHET_AMI_SECRET": "ok", "GUICHET_SIP_SECRET_ALICE": "pw]\n[x"}, "agent alice: the secret"),
    ],
)
def test_hostile_secrets_are_refused_without_showing_them(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(AsteriskConfigError, match=re.escape(message)) as error:
        render_secrets(project_settings(tmp_path), environ)
    assert not any(value in str(error.value) for value in environ.values() if value != "ok")


@pytest.mark.parametrize(("name", "message"), [("Alice\n[evil]", "newline"), ('Al" <1001>', "caller id")])
def test_a_hostile_agent_name_is_refused(name: str, message: str) -> None:
    from guichet.config import AgentSettings

    settings = Settings(agents={"alice": AgentSettings(name=name, skills=("apa",))})
    with pytest.raises(AsteriskConfigError, match=message):
        render_files(settings, RenderOptions(install_dir="/srv/a"))


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (Step("Playback", "a;b"), "comment"),
        (Step("Playback", "a\nb"), "newline"),
        (Step("Play back", "a"), "application name"),
        (Step("Answer", label="bad label"), "label"),
    ],
)
def test_a_step_asterisk_would_misread_is_refused(step: Step, message: str) -> None:
    with pytest.raises(AsteriskConfigError, match=message):
        render_extensions(Dialplan({"c": {"_X.": (step,)}}))


def test_main_writes_everything_and_secrets_only_in_0600_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project_settings(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    stdout = io.StringIO()
    argv = [
        "--config",
        str(tmp_path / "guichet.toml"),
        "--out",
        str(out),
        "--data-dir",
        str(tmp_path / "none"),
    ]
    assert main(argv, out=stdout, environ=ENV) == 0
    printed = stdout.getvalue() + "".join(capsys.readouterr())
    for name in committed_rendering():
        assert f"wrote {out / name}\n" in printed
    assert stat.S_IMODE((out / "secrets").stat().st_mode) == 0o700
    holders = []
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            if any(secret in text for secret in (AMI_SECRET, ALICE_PASSWORD, BOB_PASSWORD)):
                holders.append(path.relative_to(out).as_posix())
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            elif path.suffix == ".conf":
                assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert sorted(holders) == [MANAGER_SECRET_FILE, PJSIP_AUTH_FILE]
    assert not any(secret in printed for secret in (AMI_SECRET, ALICE_PASSWORD, BOB_PASSWORD))
    manager = conf(out, "manager.conf")  # the secret file appends to the user's section
    assert by_name(manager, "guichet").get("secret") == AMI_SECRET
    for folder in ("var/lib", "var/spool", "var/run", "var/log", "agi-bin", "sounds", "moh"):
        assert (out / folder).is_dir(), folder
    assert "documentation not found" in printed


def test_main_without_secrets_writes_the_rest_and_says_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project_settings(tmp_path)
    argv = ["--config", str(tmp_path / "guichet.toml"), "--out", str(tmp_path), "--data-dir", str(tmp_path)]
    assert main(argv, out=io.StringIO(), environ={}) == 0
    err = capsys.readouterr().err
    assert f"not rendered: {MANAGER_SECRET_FILE} not written" in err and "GUICHET_AMI_SECRET" in err
    assert "agent alice left out" in err and "agent bob" not in err
    assert (tmp_path / "pjsip.conf").is_file() and not (tmp_path / MANAGER_SECRET_FILE).exists()


def test_main_writes_nothing_when_a_value_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path), "--trunk-host", "a;b"], out=io.StringIO(), environ=ENV) == 1
    assert list(tmp_path.iterdir()) == []
    assert "trunk-host" in capsys.readouterr().err


def test_main_refuses_a_bad_agi_url_or_a_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), "--agi-url", "http://x/ivr"])
    assert exit_info.value.code == 2
    assert "agi://HOST[:PORT]" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "nope"), "--files-only"], out=io.StringIO()) == 1
    assert "no such folder" in capsys.readouterr().err


def test_files_only_writes_the_committed_set_for_another_install_dir(tmp_path: Path) -> None:
    argv = ["--out", str(tmp_path), "--files-only", "--install-dir", COMMITTED_INSTALL_DIR]
    assert main(argv, out=io.StringIO(), environ=ENV) == 0
    assert {p.name for p in tmp_path.iterdir()} == set(committed_rendering())
    for name in committed_rendering():
        assert (tmp_path / name).read_text(encoding="utf-8") == committed(name)
    argv = ["--out", str(tmp_path), "--files-only", "--agi-url", "agi://10.1.2.3:4600/"]
    assert main(argv, out=io.StringIO()) == 0
    assert "AGI(agi://10.1.2.3:4600/ivr)" in (tmp_path / EXTENSIONS_CONF).read_text(encoding="utf-8")
    directories = by_name(conf(tmp_path, "asterisk.conf"), "directories")
    assert directories.get("astetcdir") == str(tmp_path.resolve())


def test_the_installed_asterisk_data_is_linked_never_overwritten(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for folder in ("documentation", "sounds/fr", "sounds/en", "sounds/guichet", "moh"):
        (data / folder).mkdir(parents=True)
    out = tmp_path / "out"
    (out / "sounds" / "en").mkdir(parents=True)  # already there: kept
    assert link_system_data(out, data) == []
    assert (out / "documentation").resolve() == data / "documentation"
    assert (out / "sounds" / "fr").resolve() == data / "sounds" / "fr"
    assert (out / "moh").resolve() == data / "moh"
    assert not (out / "sounds" / "en").is_symlink()
    assert not (out / "sounds" / "guichet").exists(), "Guichet's own prompts are built, not linked"


def test_sounds_builds_every_sound_the_configuration_plays(tmp_path: Path) -> None:
    stdout = io.StringIO()
    assert (
        main(["--out", str(tmp_path), "--sounds", "--data-dir", str(tmp_path)], out=stdout, environ=ENV) == 0
    )
    dialplan, _ = parse_extensions((tmp_path / EXTENSIONS_CONF).read_text(encoding="utf-8"))
    played = {
        step.data
        for extens in dialplan.contexts.values()
        for steps in extens.values()
        for step in steps
        if step.app == "Playback"
    }
    played |= {s.get("periodic-announce") or "" for s in conf(tmp_path, QUEUES_CONF) if s.name != "general"}
    assert played == {APOLOGY_SOUND, CALLBACK_OFFER_SOUND}
    directories = by_name(conf(tmp_path, "asterisk.conf"), "directories")
    sounds = Path(directories.get("astdatadir") or "") / "sounds"  # where Asterisk looks for them
    for name in played:
        assert (sounds / f"{name}.wav").is_file(), f"{name}: not built\n{stdout.getvalue()}"


# --- (9) the fail-safe right after the AGI -------------------------------------------------------


def failsafe_target(variables: dict[str, str]) -> str | None:
    """Where the GotoIf right after the IVR's AGI jumps, given the variables the engine left."""
    parsed, _ = parse_extensions(committed(EXTENSIONS_CONF))
    steps = parsed.contexts[INBOUND_CONTEXT]["_X."]
    agi = next(i for i, step in enumerate(steps) if step.app == "AGI" and step.data.endswith("/ivr"))
    gotoif = steps[agi + 1]
    assert gotoif.app == "GotoIf" and f"${{{GUICHET_IVR_DONE}}}" in gotoif.data
    return evaluate_gotoif(substitute(gotoif.data, lambda name: variables.get(name, "")))


@pytest.mark.parametrize(
    "variables",
    [
        {"AGISTATUS": "FAILURE"},  # engine down: refused in ~1 ms
        {"AGISTATUS": "SUCCESS"},  # accepted then closed at once: SUCCESS, nothing set
        {"AGISTATUS": "SUCCESS", GUICHET_QUEUE: "apa"},  # died before GUICHET_IVR_DONE
        {"AGISTATUS": "SUCCESS", GUICHET_IVR_DONE: "1"},  # done, but neither queue nor number
    ],
    ids=["refused", "accept-close", "no-ivr-done", "no-destination"],
)
def test_failsafe_falls_through_to_the_apology_and_the_general_queue(variables: dict[str, str]) -> None:
    assert failsafe_target(variables) is None
    parsed, _ = parse_extensions(committed(EXTENSIONS_CONF))
    steps = parsed.contexts[INBOUND_CONTEXT]["_X."]
    assert [step.app for step in steps[4:7]] == ["Playback", "Queue", "Hangup"]
    assert steps[5].data.split(",")[0] == GENERAL_QUEUE


@pytest.mark.parametrize(
    "variables",
    [{GUICHET_IVR_DONE: "1", GUICHET_QUEUE: "apa"}, {GUICHET_IVR_DONE: "1", GUICHET_TRANSFER: "119"}],
)
def test_a_call_handed_back_on_purpose_goes_to_the_handoff(variables: dict[str, str]) -> None:
    assert failsafe_target(variables) == "handoff"
