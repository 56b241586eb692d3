"""The engine's configuration: a TOML file over embedded defaults, checked at start-up.

Every mistake (unknown section or key, wrong type, port out of range, a secret
that cannot be read) raises :class:`ConfigError` naming the file and the key, so
that ``guichet serve`` fails at once instead of misbehaving during a call.
Secrets are wrapped in :class:`Secret`, whose ``repr`` never shows the value.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from ivr.services import SERVICE_QUEUES

LoopName = Literal["uvloop", "asyncio"]
# Agent ids become PJSIP endpoint names and queue member interfaces (PJSIP/<id>).
AGENT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class ConfigError(Exception):
    """The configuration is wrong; the message says where and why."""


@dataclass(frozen=True)
class Secret:
    """A secret value that never appears in a repr, a log line or a traceback."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True)
class AgiSettings:
    """Where the FastAGI server listens and how long it lets a call stay in the engine."""

    host: str = "127.0.0.1"
    port: int = 4573
    env_timeout_s: float = 5.0
    command_timeout_s: float = 120.0
    session_timeout_s: float = 600.0


@dataclass(frozen=True)
class AmiSettings:
    """How the engine reaches Asterisk's manager interface."""

    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "guichet"
    # The secret comes from the environment variable named here, or from a file.
    secret_env: str = "GUICHET_AMI_SECRET"
    secret_file: str = ""


@dataclass(frozen=True)
class IvrSettings:
    """Where the voice menus live (with their settings/hours.yaml and settings/urgency.yaml), and speech."""

    menus_dir: str = ""  # empty: the dialplans/ folder shipped with Guichet
    # Asterisk's sound folder for Guichet's prompts (`guichet prompts build --out`); when set, texts
    # known only during a call (when a closed service reopens) are synthesised there on demand.
    sounds_dir: str = ""
    # A Vosk model directory: menus with keywords then also accept spoken answers (empty: keys only).
    speech_model: str = ""
    speech_threshold: float = 0.6  # lowest confidence of a keyword's words to accept it (0-1)
    # Where Asterisk records the spoken answers (RECORD FILE); must be readable by the engine.
    record_dir: str = "/tmp"


@dataclass(frozen=True)
class StateSettings:
    """Where the live state lives: this process's memory, or a Redis shared by several engine processes."""

    backend: str = "memory"  # "memory" or "redis"
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "guichet:"  # every key and channel of this deployment starts with it (one Redis, many)
    node: str = ""  # this process's name in the leader lease; empty: <hostname>:<pid>
    lease_ttl_s: float = 5.0  # a dead leader's lease expires after this; another node takes AMI over


@dataclass(frozen=True)
class HttpSettings:
    """The engine's web server (routing JSON API now, the desk and wallboard later)."""

    host: str = "127.0.0.1"
    port: int = 8080
    # TOML file of web users: [users.<login>] role = "agent" | "supervisor" | "admin",
    # password_hash = "scrypt$..." (`guichet users add`), agent = "<agent id>" for agents.
    users_file: str = ""
    session_ttl_s: float = 36000.0  # a login lasts one working day
    # Key signing the session cookies, shared by every engine node (so any node accepts a login):
    # this file, or the environment variable GUICHET_SESSION_KEY; neither: a random key per process.
    session_key_file: str = ""


@dataclass(frozen=True)
class RoutingSettings:
    """Priority aging and queued callbacks."""

    aging_interval_s: float = 5.0  # how often waiting callers' priorities are recomputed
    # Priority points a caller gains per service-level target waited (urgency levels are 10 apart).
    aging_points: int = 10
    # A caller who has waited this long is offered "press 1 to be called back, you keep your place".
    callback_offer_after_s: float = 90.0
    callback_retry_s: float = 600.0  # delay between two attempts of a queued callback
    callback_attempts: int = 3  # attempts before a queued callback becomes a callback request


@dataclass(frozen=True)
class QueuePolicy:
    """One queue's targets and rules (``[queues.<name>]``; every service queue has one)."""

    service_level_s: float = 30.0  # answered within this is within service level (KPI and aging)
    wrapup_s: int = 15  # seconds after a call before app_queue rings the agent again
    max_wait_s: int = 600  # Queue() timeout; then the overflow rule applies
    # After a timeout, or when no agent of the queue is logged in: "general" (the front office queue)
    # or "callback" (a callback request, the caller keeps their place).
    overflow: str = "general"


@dataclass(frozen=True)
class AgentSettings:
    """One agent (``[agents.<id>]``): a PJSIP endpoint ``<id>``, member of its skills' queues."""

    name: str = ""
    skills: tuple[str, ...] = ()
    # The SIP digest password (only `guichet asterisk-config` reads it): this file, or the environment
    # variable GUICHET_SIP_SECRET_<ID> (upper case, '-' as '_').
    sip_secret_file: str = ""


def _default_queues() -> Mapping[str, QueuePolicy]:
    return MappingProxyType({name: QueuePolicy() for name in SERVICE_QUEUES})


@dataclass(frozen=True)
class Settings:
    agi: AgiSettings = AgiSettings()
    ami: AmiSettings = AmiSettings()
    ivr: IvrSettings = IvrSettings()
    state: StateSettings = StateSettings()
    http: HttpSettings = HttpSettings()
    routing: RoutingSettings = RoutingSettings()
    queues: Mapping[str, QueuePolicy] = field(default_factory=_default_queues)
    agents: Mapping[str, AgentSettings] = field(default_factory=lambda: MappingProxyType({}))
    loop: LoopName = "uvloop"
    source: str = "<defaults>"

    def sip_secret(self, agent: str, environ: Mapping[str, str] | None = None) -> Secret:
        """Agent ``agent``'s SIP password, from its file or GUICHET_SIP_SECRET_<ID>; ConfigError if none."""
        environ = os.environ if environ is None else environ
        where = f"{self.source}: [agents.{agent}]"
        settings = self.agents.get(agent)
        if settings is None:
            raise ConfigError(f"{self.source}: no agent {agent!r}")
        if settings.sip_secret_file:
            return _read_secret_file(where, "sip_secret_file", Path(settings.sip_secret_file))
        variable = sip_secret_variable(agent)
        value = environ.get(variable, "")
        if not value:
            raise ConfigError(f"{where}: no SIP password: set {variable} or sip_secret_file")
        return Secret(value)

    def ami_secret(self, environ: Mapping[str, str] | None = None) -> Secret:
        """Read the AMI secret from its file or environment variable; fail with a clear message."""
        environ = os.environ if environ is None else environ
        if self.ami.secret_file:
            return _read_secret_file(f"{self.source}: [ami]", "secret_file", Path(self.ami.secret_file))
        value = environ.get(self.ami.secret_env, "")
        if not value:
            raise ConfigError(
                f"{self.source}: no AMI secret: set the environment variable {self.ami.secret_env} "
                "or [ami] secret_file"
            )
        return Secret(value)


def sip_secret_variable(agent: str) -> str:
    return "GUICHET_SIP_SECRET_" + agent.upper().replace("-", "_")


def _read_secret_file(where: str, key: str, path: Path) -> Secret:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{where} {key}: cannot read {path}: {exc.strerror}") from exc
    if not value:
        raise ConfigError(f"{where} {key}: {path} is empty")
    return Secret(value)


_SECTIONS: dict[str, type[Any]] = {
    "agi": AgiSettings,
    "ami": AmiSettings,
    "ivr": IvrSettings,
    "state": StateSettings,
    "http": HttpSettings,
    "routing": RoutingSettings,
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "backend": ("memory", "redis"),
    "overflow": ("general", "callback"),
}


def _check_value(where: str, name: str, expected: type, value: Any) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is tuple:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where} {name}: expected a list of strings, got {value!r}")
        return tuple(value)
    if not isinstance(value, expected) or isinstance(value, bool):
        raise ConfigError(f"{where} {name}: expected {expected.__name__}, got {value!r}")
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ConfigError(f"{where} {name}: expected one of {', '.join(_CHOICES[name])}, got {value!r}")
    number: Any = value
    if name == "port" and not 0 < number < 65536:
        raise ConfigError(f"{where} {name}: {value} is not a TCP port (1-65535)")
    if name == "speech_threshold" and not 0.0 <= number <= 1.0:
        raise ConfigError(f"{where} {name}: must be between 0 and 1, got {value}")
    if name.endswith("_s") and number <= 0:
        raise ConfigError(f"{where} {name}: must be a positive number of seconds, got {value}")
    if name in ("aging_points", "callback_attempts") and number < 1:
        raise ConfigError(f"{where} {name}: must be at least 1, got {value}")
    return value


def _section(source: str, name: str, cls: type[Any], raw: Any) -> Any:
    where = f"{source}: [{name}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    types = {f.name: type(f.default) for f in fields(cls)}
    unknown = sorted(set(raw) - set(types))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(types))}")
    return cls(**{key: _check_value(where, key, types[key], value) for key, value in raw.items()})


def _queues(source: str, raw: Any) -> Mapping[str, QueuePolicy]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [queues]: expected a table of [queues.<name>] tables")
    unknown = sorted(set(raw) - set(SERVICE_QUEUES))
    if unknown:
        raise ConfigError(
            f"{source}: [queues]: unknown queue(s) {', '.join(unknown)}; known: {', '.join(SERVICE_QUEUES)}"
        )
    policies = {
        name: _section(source, f"queues.{name}", QueuePolicy, raw.get(name, {})) for name in SERVICE_QUEUES
    }
    return MappingProxyType(policies)


def _agents(source: str, raw: Any) -> Mapping[str, AgentSettings]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [agents]: expected a table of [agents.<id>] tables")
    agents: dict[str, AgentSettings] = {}
    for agent_id, table in raw.items():
        where = f"{source}: [agents.{agent_id}]"
        if not AGENT_ID.fullmatch(agent_id):
            raise ConfigError(f"{where}: an agent id is 1-40 lower-case letters, digits, '-' or '_'")
        agent = _section(source, f"agents.{agent_id}", AgentSettings, table)
        if not agent.skills:
            raise ConfigError(f"{where} skills: list at least one queue ({', '.join(SERVICE_QUEUES)})")
        unknown = sorted(set(agent.skills) - set(SERVICE_QUEUES))
        if unknown:
            raise ConfigError(
                f"{where} skills: unknown queue(s) {', '.join(unknown)}; known: {', '.join(SERVICE_QUEUES)}"
            )
        agents[agent_id] = agent
    return MappingProxyType(agents)


def parse_settings(data: Mapping[str, Any], source: str) -> Settings:
    """Build settings from an already-parsed TOML document."""
    known = {*_SECTIONS, "queues", "agents", "loop"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    loop = data.get("loop", "uvloop")
    if loop not in ("uvloop", "asyncio"):
        raise ConfigError(f"{source}: loop: expected 'uvloop' or 'asyncio', got {loop!r}")
    sections = {name: _section(source, name, cls, data.get(name, {})) for name, cls in _SECTIONS.items()}
    return Settings(
        **sections,
        queues=_queues(source, data.get("queues", {})),
        agents=_agents(source, data.get("agents", {})),
        loop=loop,
        source=source,
    )


def load_settings(path: Path | None) -> Settings:
    """Settings from ``path`` (TOML), or the embedded defaults when ``path`` is None."""
    if path is None:
        return Settings()
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return parse_settings(data, str(path))
