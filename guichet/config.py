"""The engine's configuration: a TOML file over embedded defaults, checked at start-up.

Every mistake (unknown section or key, wrong type, port out of range, a secret
that cannot be read) raises :class:`ConfigError` naming the file and the key, so
that ``guichet serve`` fails at once instead of misbehaving during a call.
Secrets are wrapped in :class:`Secret`, whose ``repr`` never shows the value.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

LoopName = Literal["uvloop", "asyncio"]


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
class Settings:
    agi: AgiSettings = AgiSettings()
    ami: AmiSettings = AmiSettings()
    ivr: IvrSettings = IvrSettings()
    loop: LoopName = "uvloop"
    source: str = "<defaults>"

    def ami_secret(self, environ: Mapping[str, str] | None = None) -> Secret:
        """Read the AMI secret from its file or environment variable; fail with a clear message."""
        environ = os.environ if environ is None else environ
        if self.ami.secret_file:
            path = Path(self.ami.secret_file)
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{self.source}: [ami] secret_file: cannot read {path}: {exc.strerror}"
                ) from exc
            if not value:
                raise ConfigError(f"{self.source}: [ami] secret_file: {path} is empty")
            return Secret(value)
        value = environ.get(self.ami.secret_env, "")
        if not value:
            raise ConfigError(
                f"{self.source}: no AMI secret: set the environment variable {self.ami.secret_env} "
                "or [ami] secret_file"
            )
        return Secret(value)


_SECTIONS: dict[str, type[AgiSettings] | type[AmiSettings] | type[IvrSettings]] = {
    "agi": AgiSettings,
    "ami": AmiSettings,
    "ivr": IvrSettings,
}


def _check_value(where: str, name: str, expected: type, value: Any) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or isinstance(value, bool):
        raise ConfigError(f"{where} {name}: expected {expected.__name__}, got {value!r}")
    number: Any = value
    if name == "port" and not 0 < number < 65536:
        raise ConfigError(f"{where} {name}: {value} is not a TCP port (1-65535)")
    if name == "speech_threshold" and not 0.0 <= number <= 1.0:
        raise ConfigError(f"{where} {name}: must be between 0 and 1, got {value}")
    if name.endswith("_s") and number <= 0:
        raise ConfigError(f"{where} {name}: must be a positive number of seconds, got {value}")
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


def parse_settings(data: Mapping[str, Any], source: str) -> Settings:
    """Build settings from an already-parsed TOML document."""
    known = {*_SECTIONS, "loop"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    loop = data.get("loop", "uvloop")
    if loop not in ("uvloop", "asyncio"):
        raise ConfigError(f"{source}: loop: expected 'uvloop' or 'asyncio', got {loop!r}")
    sections = {name: _section(source, name, cls, data.get(name, {})) for name, cls in _SECTIONS.items()}
    return Settings(agi=sections["agi"], ami=sections["ami"], ivr=sections["ivr"], loop=loop, source=source)


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
