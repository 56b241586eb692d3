"""``guichet asterisk-config``: a complete, self-contained Asterisk 22 configuration for the single number.

Start Asterisk on it with ``asterisk -C <install dir>/asterisk.conf``.  The files (see
asterisk_conf/README.md for every directive and why):

* ``extensions.conf`` -- the very :class:`~pbx_sim.dialplan.Dialplan` data the simulated PBX interprets
  (:func:`pbx_sim.dialplan.inbound_dialplan`), plus the agents' context; each context becomes
  ``[context]``, each extension ``exten => <pattern>,1(label),App(data)`` then ``same => n...`` lines;
* ``queues.conf`` -- one queue per service of :data:`ivr.services.SERVICE_QUEUES`, from the project's
  ``[queues.<name>]`` policies, no static member (agents log in through ``QueueAdd`` from the engine);
* ``asterisk.conf``, ``modules.conf``, ``logger.conf``, ``rtp.conf``, ``http.conf``, ``musiconhold.conf``,
  ``pjsip.conf``, ``manager.conf`` (:mod:`guichet.asterisk_conf_files`, :mod:`guichet.asterisk_conf_modules`);
* ``secrets/manager.conf`` and ``secrets/pjsip.conf`` -- the AMI secret and the agents' SIP passwords,
  written apart with mode 0600 and included by ``#tryinclude``; a secret that is not available is not
  written and the command says so on stderr, everything else is written.

Every value is checked before anything is written: a character that Asterisk's config parser would read
differently (``;`` starts a comment, a newline ends the line, ``]`` ends a section name) or a queue name
app_queue can never create raises :class:`AsteriskConfigError` naming the culprit.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from guichet.asterisk_conf_files import (
    MANAGER_SECRET_FILE,
    MOH_CLASS,
    PJSIP_AUTH_FILE,
    SECRETS_DIR,
    RenderOptions,
    render_asterisk,
    render_http,
    render_logger,
    render_manager,
    render_manager_secret,
    render_musiconhold,
    render_pjsip,
    render_pjsip_auth,
    render_rtp,
)
from guichet.asterisk_conf_modules import render_modules
from guichet.asterisk_conf_syntax import (
    COMMAND,
    AsteriskConfigError,
    check_line,
    check_name,
    check_value,
    header,
)
from guichet.config import ConfigError, QueuePolicy, Settings, load_settings
from guichet.names import CALLBACK_OFFER_SOUND
from ivr import prompts
from ivr.menu_check import DEFAULT_DIR
from ivr.menu_engine import ENGINE_PROMPTS
from ivr.services import GENERAL_QUEUE
from pbx_sim.dialplan import INBOUND_CONTEXT, QUEUE_EXIT_CONTEXT, Dialplan, Step, inbound_dialplan

logger = logging.getLogger(__name__)

DEFAULT_AGI_URL: Final = "agi://127.0.0.1:4573"
DEFAULT_OUT: Final = Path("asterisk_conf")
# The committed asterisk_conf/ is rendered for this install folder (`--files-only --install-dir ...`).
COMMITTED_INSTALL_DIR: Final = "/etc/guichet/asterisk"
DEFAULT_DATA_DIR: Final = Path("/var/lib/asterisk")  # a source-built Asterisk 22's astdatadir
EXTENSIONS_CONF: Final = "extensions.conf"
QUEUES_CONF: Final = "queues.conf"
AGENTS_CONTEXT: Final = "agents"  # the agents' endpoints: they place no call through Guichet
RUNTIME_DIRS: Final = ("var/lib", "var/spool", "var/run", "var/log", "agi-bin", "sounds")

# app_queue reads the [general] section of queues.conf as its global settings, never as a queue
# (apps/app_queue.c, reload_queues): a queue of that name cannot exist.
RESERVED_QUEUE_NAMES: Final = frozenset({"general"})

_PATTERN = re.compile(r"^(_\+?[0-9XZN.!\[\]-]+|[0-9A-Za-z*#+]+)$")  # extension: literal or _pattern
_APP = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_AGI_URL = re.compile(r"^h?agi://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?$")


def _step_line(where: str, first: bool, pattern: str, step: Step) -> str:
    if not _APP.fullmatch(step.app):
        raise AsteriskConfigError(f"{where}: application name {step.app!r} is not a dialplan application")
    check_line(f"{where}: {step.app}()", step.data)
    label = ""
    if step.label:
        check_name(f"{where}: label", step.label)
        label = f"({step.label})"
    action = f"{step.app}({step.data})"
    return f"exten => {pattern},1{label},{action}" if first else f" same => n{label},{action}"


def render_extensions(dialplan: Dialplan, *, agi_url: str = DEFAULT_AGI_URL) -> str:
    """extensions.conf holding exactly the contexts, extensions and steps of ``dialplan``.

    ``agi_url`` only names, in the header, the FastAGI address the dialplan was built with.
    """
    lines = [
        *header(f"dialplan of pbx_sim.dialplan.inbound_dialplan, engine at {agi_url}"),
        "",
        "[general]",
        "static = yes",
        "; `dialplan save` must never overwrite this generated file",
        "writeprotect = yes",
        "autofallthrough = yes",
        "",
        "[globals]",
    ]
    for context, extensions in dialplan.contexts.items():
        check_name("context", context)
        if context in ("general", "globals"):
            raise AsteriskConfigError(f"context name {context!r} is reserved in extensions.conf")
        lines += ["", f"[{context}]"]
        for pattern, steps in extensions.items():
            if not _PATTERN.fullmatch(pattern):
                raise AsteriskConfigError(f"[{context}]: extension pattern {pattern!r} is not valid")
            if not steps:
                raise AsteriskConfigError(f"[{context}] {pattern}: an extension needs at least one step")
            for index, step in enumerate(steps):
                where = f"[{context}] {pattern} priority {index + 1}"
                lines.append(_step_line(where, index == 0, pattern, step))
    return "\n".join(lines) + "\n"


def _common_max_wait(queues: Mapping[str, QueuePolicy]) -> int:
    """The one Queue() timeout of the dialplan; every queue's max_wait_s must agree with it."""
    waits = {policy.max_wait_s for policy in queues.values()}
    if len(waits) != 1:
        detail = ", ".join(f"{name}={policy.max_wait_s}" for name, policy in queues.items())
        raise AsteriskConfigError(
            f"[queues.*] max_wait_s differ ({detail}): the dialplan gives Queue() one timeout for every "
            "queue (${GUICHET_QUEUE}), so they must be equal"
        )
    return waits.pop()


def full_dialplan(settings: Settings, agi_url: str = DEFAULT_AGI_URL) -> Dialplan:
    """The simulator's flows with the configured queue timeout, plus the agents' context."""
    flows = inbound_dialplan(agi_url, max_wait_s=_common_max_wait(settings.queues))
    # cause 21 (call rejected): an agent's softphone reaches no outside line through Guichet
    agents = {AGENTS_CONTEXT: {"_X.": (Step("Hangup", "21"),)}}
    return Dialplan({**flows.contexts, **agents})


@dataclass(frozen=True)
class QueueSettings:
    """The settings every queue shares; see asterisk_conf/README.md for the reasons behind each."""

    strategy: str = "leastrecent"  # ring the agent idle the longest (fair load with shared_lastcall)
    ring_timeout_s: int = 15  # ring one agent this long before trying the next
    retry_s: int = 2  # pause between two ringing rounds
    musicclass: str = MOH_CLASS
    # A digit pressed while waiting leaves the queue for this context (the queued callback offer).
    exit_context: str = QUEUE_EXIT_CONTEXT
    periodic_announce: str = CALLBACK_OFFER_SOUND  # "press 1 to be called back, you keep your place"
    periodic_announce_s: int = 90  # first after this wait, then every as long
    general_queue: str = GENERAL_QUEUE  # the last resort: it never refuses a caller
    # A service queue with no agent logged in, or only unreachable ones, refuses the caller at once
    # (QUEUESTATUS=JOINEMPTY): the overflow route sends them on (app_queue's joinempty conditions).
    service_joinempty: str = "unavailable,invalid"

    def check(self) -> None:
        if self.strategy not in _STRATEGIES:
            raise AsteriskConfigError(
                f"strategy {self.strategy!r}: expected one of {', '.join(sorted(_STRATEGIES))}"
            )
        for name in ("ring_timeout_s", "retry_s", "periodic_announce_s"):
            if getattr(self, name) < 0:
                raise AsteriskConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_name("musicclass", self.musicclass)
        check_name("exit context", self.exit_context)
        check_value("periodic-announce", self.periodic_announce)


_STRATEGIES: Final = frozenset(
    {"ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "rrordered", "linear", "wrandom"}
)


def _whole_seconds(where: str, value: float) -> int:
    if value != int(value) or value < 0:
        raise AsteriskConfigError(f"{where}: {value} is not a whole number of seconds")
    return int(value)


def _check_queue_names(names: Sequence[str], general_queue: str) -> None:
    if not names:
        raise AsteriskConfigError("no queue to write")
    seen: set[str] = set()
    for name in names:
        check_name("queue", name)
        if name.lower() in RESERVED_QUEUE_NAMES:
            raise AsteriskConfigError(
                f"queue name {name!r} is reserved: app_queue reads [{name}] in queues.conf as its global "
                "settings, so Queue() could never join it; rename it (ivr/services.py GENERAL_QUEUE and "
                "the fallback_queue of pbx_sim.dialplan.inbound_dialplan)"
            )
        if name.lower() in seen:
            raise AsteriskConfigError(f"queue {name!r} is listed twice (queue names ignore case)")
        seen.add(name.lower())
    if general_queue not in names:
        raise AsteriskConfigError(
            f"the general queue {general_queue!r} is missing: every caller falls back to it"
        )


def render_queues(queues: Mapping[str, QueuePolicy], settings: QueueSettings | None = None) -> str:
    """queues.conf: the [general] settings, then one queue per policy of ``queues``, no static member."""
    settings = settings or QueueSettings()
    settings.check()
    _check_queue_names(list(queues), settings.general_queue)
    blocks = [
        [
            *header("queues of ivr.services.SERVICE_QUEUES and [queues.<name>]"),
            "",
            "[general]",
            "; agents stay logged in across an Asterisk restart, engine up or down",
            "persistentmembers = yes",
            "; several free agents serve several waiting callers at once",
            "autofill = yes",
            "; wrap-up and leastrecent count an agent's calls from every queue",
            "shared_lastcall = yes",
            "log_membername_as_agent = yes",
        ]
    ]
    for name, policy in queues.items():
        joinempty = "yes" if name == settings.general_queue else settings.service_joinempty
        wrapup = _whole_seconds(f"[queues.{name}] wrapup_s", policy.wrapup_s)
        servicelevel = _whole_seconds(f"[queues.{name}] service_level_s", policy.service_level_s)
        blocks.append(
            [
                f"[{name}]",
                f"strategy = {settings.strategy}",
                f"timeout = {settings.ring_timeout_s}",
                f"retry = {settings.retry_s}",
                f"wrapuptime = {wrapup}",
                "ringinuse = no",
                f"joinempty = {joinempty}",
                "leavewhenempty = no",
                f"musicclass = {settings.musicclass}",
                "announce-position = no",
                "announce-holdtime = no",
                "announce-frequency = 0",
                f"periodic-announce = {settings.periodic_announce}",
                f"periodic-announce-frequency = {settings.periodic_announce_s}",
                f"servicelevel = {servicelevel}",
                "setinterfacevar = yes",
                "setqueuevar = yes",
                "maxlen = 0",
                "reportholdtime = no",
                f"context = {settings.exit_context}",
            ]
        )
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


def queue_settings(settings: Settings) -> QueueSettings:
    return QueueSettings(
        periodic_announce_s=_whole_seconds(
            "[routing] callback_offer_after_s", settings.routing.callback_offer_after_s
        )
    )


def render_extensions_conf(agi_url: str = DEFAULT_AGI_URL, settings: Settings | None = None) -> str:
    """extensions.conf as ``guichet asterisk-config`` writes it."""
    return render_extensions(full_dialplan(settings or Settings(), agi_url), agi_url=agi_url)


def render_queues_conf(settings: Settings | None = None) -> str:
    """queues.conf as ``guichet asterisk-config`` writes it."""
    settings = settings or Settings()
    return render_queues(settings.queues, queue_settings(settings))


def render_files(settings: Settings, options: RenderOptions) -> dict[str, str]:
    """File name -> text of every file without a secret (what asterisk_conf/ holds)."""
    options.check()
    dialplan = full_dialplan(settings, options.agi_url)
    return {
        "asterisk.conf": render_asterisk(options),
        "modules.conf": render_modules(dialplan),
        "logger.conf": render_logger(),
        "rtp.conf": render_rtp(options),
        "http.conf": render_http(),
        "musiconhold.conf": render_musiconhold(options),
        "pjsip.conf": render_pjsip(options, settings.agents, INBOUND_CONTEXT, AGENTS_CONTEXT),
        "manager.conf": render_manager(options, settings.ami.username),
        EXTENSIONS_CONF: render_extensions(dialplan, agi_url=options.agi_url),
        QUEUES_CONF: render_queues_conf(settings),
    }


def render_secrets(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """The secret files that can be rendered, and one message per secret that cannot (never the value).

    secrets/pjsip.conf is always rendered, with the agents whose password is available (an agent left
    out cannot register); secrets/manager.conf only when the AMI secret is available.
    """
    files: dict[str, str] = {}
    missing: list[str] = []
    try:
        files[MANAGER_SECRET_FILE] = render_manager_secret(
            settings.ami.username, settings.ami_secret(environ).value
        )
    except ConfigError as exc:
        missing.append(f"{MANAGER_SECRET_FILE} not written: {exc}")
    passwords: dict[str, str] = {}
    for agent_id in settings.agents:
        try:
            passwords[agent_id] = settings.sip_secret(agent_id, environ).value
        except ConfigError as exc:
            missing.append(f"agent {agent_id} left out of {PJSIP_AUTH_FILE} (cannot register): {exc}")
    files[PJSIP_AUTH_FILE] = render_pjsip_auth(passwords)
    return files, missing


def _write_atomically(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` through a temporary file created 0600, then ``mode``, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def link_system_data(out: Path, data_dir: Path) -> list[str]:
    """Make ``out`` Asterisk's data folder: links to the installed Asterisk's documentation, sounds
    and music; returns a warning per thing not found (nothing is ever overwritten)."""
    warnings: list[str] = []
    links = {out / "documentation": data_dir / "documentation", out / "moh": data_dir / "moh"}
    sounds = data_dir / "sounds"
    if sounds.is_dir():
        links.update(
            {
                out / "sounds" / entry.name: entry
                for entry in sorted(sounds.iterdir())
                if entry.name != "guichet"
            }
        )
    else:
        warnings.append(f"{sounds}: no Asterisk sounds (core sounds such as 'beep' will be missing)")
    for link, target in links.items():
        if link.exists() or link.is_symlink():
            continue
        if not target.exists():
            warnings.append(
                f"{target} not found: "
                + (
                    "modules such as res_pjsip refuse to load without Asterisk's XML documentation; "
                    "pass --data-dir (Asterisk's astdatadir)"
                    if link.name == "documentation"
                    else f"put files in {link} yourself"
                )
            )
            if link.name == "moh":
                link.mkdir()
            continue
        link.symlink_to(target)
    return warnings


def _agi_url(text: str) -> str:
    url = text.rstrip("/")
    if not _AGI_URL.fullmatch(url):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected agi://HOST[:PORT] or hagi://DOMAIN (no path: the routes are added)"
        )
    return url


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Write a complete Asterisk 22 configuration for the single number "
        "(start it with: asterisk -C <install dir>/asterisk.conf).",
    )
    add = parser.add_argument
    add("--config", type=Path, help="the project's TOML configuration (default: embedded defaults)")
    add("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    add("--install-dir", help="where Asterisk will read the files (default: the absolute --out)")
    add("--agi-url", type=_agi_url, help="the engine's FastAGI address (default: from [agi] host and port)")
    add("--sip-bind", default="127.0.0.1", help="SIP (UDP) address (default: 127.0.0.1)")
    add("--sip-port", type=int, default=5060, help="SIP port (default: 5060)")
    add("--ami-bind", default="127.0.0.1", help="AMI address (default: 127.0.0.1)")
    add("--ami-port", type=int, help="AMI port (default: [ami] port)")
    add(
        "--ami-permit",
        action="append",
        help="address or network allowed to log in to the AMI, repeatable (default: 127.0.0.1)",
    )
    add("--trunk-host", default="127.0.0.1", help="the operator's SIP trunk, address or name")
    add("--trunk-port", type=int, default=5060, help="the trunk's SIP port (default: 5060)")
    add("--modules-dir", default=RenderOptions.modules_dir, help="Asterisk's modules (astmoddir)")
    add("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the installed Asterisk's astdatadir")
    add("--sounds", action="store_true", help="also build Guichet's prompts into OUT/sounds (espeak-ng, sox)")
    add(
        "--files-only",
        action="store_true",
        help="write the .conf files only: no secret, no folder, no link (what asterisk_conf/ holds)",
    )
    return parser


def _options(args: argparse.Namespace, settings: Settings) -> RenderOptions:
    return RenderOptions(
        install_dir=args.install_dir or str(args.out.resolve()),
        agi_url=args.agi_url or f"agi://{settings.agi.host}:{settings.agi.port}",
        sip_bind=args.sip_bind,
        sip_port=args.sip_port,
        ami_bind=args.ami_bind,
        ami_port=args.ami_port or settings.ami.port,
        ami_permit=tuple(args.ami_permit or RenderOptions.ami_permit),
        trunk_host=args.trunk_host,
        trunk_port=args.trunk_port,
        modules_dir=args.modules_dir,
    )


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """Render every file (nothing is written if one fails), then write them.

    1 (nothing written) for a bad value or configuration, with the reason on stderr.  A secret that is
    not available is left out, said on stderr ("not rendered: ..."), and the rest written: 0.
    """
    out = sys.stdout if out is None else out
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        files = render_files(settings, _options(args, settings))
        secrets, missing = ({}, []) if args.files_only else render_secrets(settings, environ)
    except (AsteriskConfigError, ConfigError) as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return 1
    if not args.out.is_dir():
        print(f"{COMMAND}: --out {args.out}: no such folder", file=sys.stderr)
        return 1
    for name, text in files.items():
        _write_atomically(args.out / name, text, 0o644)
        print(f"wrote {args.out / name}", file=out)
    if args.files_only:
        return 0
    (args.out / SECRETS_DIR).mkdir(mode=0o700, exist_ok=True)
    _write_atomically(args.out / SECRETS_DIR / ".gitignore", "*\n", 0o600)
    for name, text in secrets.items():
        _write_atomically(args.out / name, text, 0o600)
        print(f"wrote {args.out / name} (mode 0600)", file=out)
    for folder in RUNTIME_DIRS:
        (args.out / folder).mkdir(parents=True, exist_ok=True)
    for warning in link_system_data(args.out, args.data_dir):
        print(f"warning: {warning}", file=out)
    if args.sounds:
        menus = settings.ivr.menus_dir or str(DEFAULT_DIR)
        extra = [prompt.text for prompt in ENGINE_PROMPTS.values()]
        if prompts.main([menus, "--out", str(args.out / "sounds")], out=out, extra_texts=extra) != 0:
            return 1
    for message in missing:
        print(f"{COMMAND}: not rendered: {message}", file=sys.stderr)
    return 0
