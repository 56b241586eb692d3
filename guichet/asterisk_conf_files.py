"""The files around the dialplan: asterisk.conf, logger.conf, rtp.conf, http.conf, musiconhold.conf,
pjsip.conf, manager.conf, and the two secret files they include.

Secrets (the AMI secret, the agents' SIP passwords) never enter the main files: pjsip.conf and
manager.conf end with ``#tryinclude secrets/...`` and the secret files are written apart, mode 0600.
``#tryinclude`` (main/config.c) goes on quietly when the file is missing, so a rendering without secrets
still boots, with the AMI user unable to log in (no secret) and agents unable to register (no auth
object: PJSIP refuses them) -- safe, and ``guichet asterisk-config`` says what it could not render.
``secrets/trunk.conf`` is the operator's own file for the trunk's credentials; nothing here writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

from guichet.asterisk_conf_syntax import (
    COMMAND,
    AsteriskConfigError,
    check_name,
    check_secret,
    header,
    host,
    ip_address,
    join,
    permit,
    port,
    section,
)
from guichet.config import AgentSettings

SECRETS_DIR: Final = "secrets"
MANAGER_SECRET_FILE: Final = f"{SECRETS_DIR}/manager.conf"
PJSIP_AUTH_FILE: Final = f"{SECRETS_DIR}/pjsip.conf"
TRUNK_FILE: Final = f"{SECRETS_DIR}/trunk.conf"  # the operator's, never written by the generator

TRANSPORT: Final = "transport-udp"
TRUNK: Final = "trunk"  # the endpoint pbx_sim.dialplan.inbound_dialplan dials through (Dial(PJSIP/n@trunk))
AGENT_CODECS: Final = "ulaw,alaw"
TRUNK_CODECS: Final = "alaw,ulaw"  # French operators speak A-law first
MOH_CLASS: Final = "default"
LANGUAGE: Final = "fr"

# What the engine needs over AMI, and nothing more (manager.conf.sample's classes; the privilege each
# action is registered with in Asterisk 22: QueueStatus, QueueSummary, QueueChangePriorityCaller, Ping
# and Events need none; QueueAdd/QueueRemove/QueuePause/QueuePenalty: agent; Originate: originate;
# Getvar: call or reporting; CoreShowChannels: system or reporting -- one matching class is enough).
AMI_READ: Final = ("call", "agent", "dialplan")  # channels/OriginateResponse, queue events, VarSet
AMI_WRITE: Final = ("agent", "originate", "reporting")


@dataclass(frozen=True)
class RenderOptions:
    """Where Asterisk finds things and what it listens on; every address defaults to loopback."""

    install_dir: (
        str  # absolute: where Asterisk will read these files (asterisk -C <install_dir>/asterisk.conf)
    )
    agi_url: str = "agi://127.0.0.1:4573"
    sip_bind: str = "127.0.0.1"
    sip_port: int = 5060
    ami_bind: str = "127.0.0.1"
    ami_port: int = 5038
    ami_permit: tuple[str, ...] = ("127.0.0.1/32",)
    trunk_host: str = "127.0.0.1"  # the operator's SIP trunk (its calls are identified by this address)
    trunk_port: int = 5060
    modules_dir: str = "/usr/lib/asterisk/modules"  # Asterisk's own modules (astmoddir)
    sbin_dir: str = "/usr/sbin"  # Asterisk's own programs (astsbindir: astcanary)
    rtp_start: int = 10000
    rtp_end: int = 20000

    def check(self) -> None:
        for name in ("install_dir", "modules_dir", "sbin_dir"):
            path = getattr(self, name)
            if not PurePosixPath(path).is_absolute():
                raise AsteriskConfigError(f"{name.replace('_', '-')} {path!r}: must be an absolute path")
        ip_address("sip-bind", self.sip_bind)
        ip_address("ami-bind", self.ami_bind)
        host("trunk-host", self.trunk_host)
        for name in ("sip_port", "ami_port", "trunk_port", "rtp_start", "rtp_end"):
            port(name.replace("_", "-"), getattr(self, name))
        if self.rtp_start >= self.rtp_end:
            raise AsteriskConfigError(f"rtp range {self.rtp_start}-{self.rtp_end} is empty")
        if not self.ami_permit:
            raise AsteriskConfigError("ami-permit: at least one address must be allowed")
        for item in self.ami_permit:
            permit("ami-permit", item)

    def path(self, *parts: str) -> str:
        return str(PurePosixPath(self.install_dir, *parts))


def render_asterisk(options: RenderOptions) -> str:
    """asterisk.conf: every folder Asterisk writes is under the install folder (relocatable)."""
    var = options.path("var")
    directories = [
        ("astetcdir", options.install_dir),
        ("astmoddir", options.modules_dir),
        ("astvarlibdir", f"{var}/lib"),
        ("astdbdir", f"{var}/lib"),
        ("astkeydir", f"{var}/lib"),
        ("astdatadir", options.install_dir),  # sounds/, moh/ and documentation/ (see README)
        ("astagidir", options.path("agi-bin")),
        ("astspooldir", f"{var}/spool"),
        ("astrundir", f"{var}/run"),
        ("astlogdir", f"{var}/log"),
        ("astsbindir", options.sbin_dir),
    ]
    # a plain [directories]: "(!)" would make it a template that Asterisk ignores (README of the captures)
    lines = ["[directories]", *(f"{key} => {value}" for key, value in directories)]
    return join(
        [
            header("folders and options"),
            lines,
            section(
                "options",
                [
                    ("verbose", 3),
                    ("debug", 0),
                    ("timestamp", "yes"),
                    ("defaultlanguage", LANGUAGE),
                    ("documentation_language", "en_US"),
                    ("hideconnect", "no"),
                ],
            ),
        ]
    )


def render_logger() -> str:
    """logger.conf: the console and messages.log (in astlogdir), as in the recorded configuration."""
    return join(
        [
            header("logs under var/log"),
            section("general", [("dateformat", "%F %T.%3q")]),
            [
                "[logfiles]",
                "console => notice,warning,error,verbose",
                "messages.log => notice,warning,error,verbose",
            ],
        ]
    )


def render_rtp(options: RenderOptions) -> str:
    """rtp.conf: a fixed port range (for the firewall), no STUN/ICE: nothing is sent to a third party."""
    return join(
        [
            header("RTP ports"),
            section(
                "general",
                [("rtpstart", options.rtp_start), ("rtpend", options.rtp_end), ("icesupport", "no")],
            ),
        ]
    )


def render_http() -> str:
    """http.conf: Asterisk's own web server stays off (the engine serves the web)."""
    return join([header("no HTTP server"), section("general", [("enabled", "no")])])


def render_musiconhold(options: RenderOptions) -> str:
    """musiconhold.conf: the class queues.conf names, playing the files of <install>/moh."""
    return join(
        [
            header("music while queued"),
            ["[general]"],
            section(MOH_CLASS, [("mode", "files"), ("directory", options.path("moh")), ("sort", "alpha")]),
        ]
    )


def _host_port(address: str, number: int) -> str:
    """``host:port``, an IPv6 address in brackets (PJSIP's bind and SIP URIs)."""
    return f"[{address}]:{number}" if ":" in address else f"{address}:{number}"


def _agent_endpoint(agent_id: str, agent: AgentSettings, context: str) -> list[str]:
    settings: list[tuple[str, str | int]] = [
        ("type", "endpoint"),
        ("transport", TRANSPORT),
        ("context", context),
        ("disallow", "all"),
        ("allow", AGENT_CODECS),
        ("dtmf_mode", "rfc4733"),
        ("direct_media", "no"),
        ("rtp_symmetric", "yes"),
        ("force_rport", "yes"),
        ("rewrite_contact", "yes"),
        ("language", LANGUAGE),
        ("auth", agent_id),
        ("aors", agent_id),
    ]
    if agent.name:
        if any(char in agent.name for char in '"<>'):
            raise AsteriskConfigError(
                f"[agents.{agent_id}] name {agent.name!r}: no '\"', '<' or '>' in a caller id"
            )
        settings.append(("callerid", f'"{agent.name}" <{agent_id}>'))
    return section(
        agent_id, settings, comment=f"agent {agent_id}: endpoint; auth {agent_id} in {PJSIP_AUTH_FILE}"
    )


def render_pjsip(
    options: RenderOptions, agents: Mapping[str, AgentSettings], inbound_context: str, agents_context: str
) -> str:
    """pjsip.conf: one UDP transport, the ``trunk`` endpoint, one endpoint + aor per agent."""
    trunk_contact = f"sip:{_host_port(options.trunk_host, options.trunk_port)}"
    blocks = [
        header("SIP: transport, trunk, agents"),
        section(
            "global",
            [
                ("type", "global"),
                ("user_agent", "Guichet"),
                # an agent's REGISTER is known by its user name before its address: with "ip" first, an
                # agent on the trunk's address could never register (recordings, round 2)
                ("endpoint_identifier_order", "username,ip"),
            ],
        ),
        section(
            TRANSPORT,
            [
                ("type", "transport"),
                ("protocol", "udp"),
                ("bind", _host_port(options.sip_bind, options.sip_port)),
            ],
        ),
        section(
            TRUNK,
            [
                ("type", "endpoint"),
                ("transport", TRANSPORT),
                ("context", inbound_context),
                ("disallow", "all"),
                ("allow", TRUNK_CODECS),
                ("dtmf_mode", "rfc4733"),
                ("direct_media", "no"),
                ("rtp_symmetric", "yes"),
                ("language", LANGUAGE),
                ("trust_id_inbound", "yes"),
                ("send_pai", "no"),
                ("aors", TRUNK),
            ],
            comment="the operator's trunk carrying the single number: its calls enter the voice menu",
        ),
        section(TRUNK, [("type", "aor"), ("contact", trunk_contact), ("qualify_frequency", 60)]),
        section(TRUNK, [("type", "identify"), ("endpoint", TRUNK), ("match", options.trunk_host)]),
        [
            f"; A trunk that wants registration or authentication: write {TRUNK_FILE} (mode 0600, never",
            f"; touched by {COMMAND}), for instance:",
            ";   [trunk-auth]",
            ";   type = auth",
            ";   auth_type = userpass",
            ";   username = <account>",
            ";   password = <password>",
            ";   [trunk](+type=endpoint)",
            ";   outbound_auth = trunk-auth",
            ";   [trunk-registration]",
            ";   type = registration",
            f";   transport = {TRANSPORT}",
            ";   outbound_auth = trunk-auth",
            f";   server_uri = {trunk_contact}",
            f";   client_uri = sip:<account>@{options.trunk_host}",
            ";   contact_user = <the single number>",
        ],
    ]
    for agent_id, agent in agents.items():
        check_agent_id(agent_id)
        blocks.append(_agent_endpoint(agent_id, agent, agents_context))
        blocks.append(
            section(
                agent_id,
                [("type", "aor"), ("max_contacts", 1), ("remove_existing", "yes"), ("qualify_frequency", 30)],
            )
        )
    blocks.append([f"#tryinclude {PJSIP_AUTH_FILE}", f"#tryinclude {TRUNK_FILE}"])
    return join(blocks)


def check_agent_id(agent_id: str) -> str:
    check_name("agent", agent_id)
    if agent_id.isdigit():
        raise AsteriskConfigError(
            f"agent id {agent_id!r} is all digits: a citizen calling from the number {agent_id} would be "
            "taken for this agent (PJSIP identifies by user name first); use letters"
        )
    if agent_id == TRUNK:
        raise AsteriskConfigError(f"agent id {agent_id!r} is the trunk's endpoint name")
    return agent_id


def render_manager(options: RenderOptions, username: str) -> str:
    """manager.conf: AMI on ``ami_bind`` only, one user with the least rights the engine needs."""
    check_name("AMI user", username)
    permits = [("permit", permit("ami-permit", item)) for item in options.ami_permit]
    return join(
        [
            header("AMI for the engine"),
            section(
                "general",
                [
                    ("enabled", "yes"),
                    ("webenabled", "no"),
                    ("bindaddr", str(ip_address("ami-bind", options.ami_bind))),
                    ("port", options.ami_port),
                    ("displayconnects", "yes"),
                    ("timestampevents", "no"),
                ],
            ),
            section(
                username,
                [
                    ("deny", "0.0.0.0/0.0.0.0"),
                    *permits,
                    ("read", ",".join(AMI_READ)),
                    ("write", ",".join(AMI_WRITE)),
                    ("writetimeout", 5000),
                    # the dialplan's Newexten flood (one per priority) is read by nobody
                    ("eventfilter", "!Event: Newexten"),
                ],
                comment=f"the engine's user; its secret is in {MANAGER_SECRET_FILE}",
            ),
            [f"#tryinclude {MANAGER_SECRET_FILE}"],
        ]
    )


def render_manager_secret(username: str, secret: str) -> str:
    """secrets/manager.conf: appends the secret to the user's section of manager.conf."""
    return join(
        [header("AMI secret, mode 0600"), [f"[{username}](+)", f"secret = {check_secret('AMI', secret)}"]]
    )


def render_pjsip_auth(secrets: Mapping[str, str]) -> str:
    """secrets/pjsip.conf: one digest auth object per agent (agent id -> password)."""
    blocks = [header("agents' SIP passwords, mode 0600")]
    for agent_id, password in secrets.items():
        blocks.append(
            [
                f"[{check_agent_id(agent_id)}]",
                "type = auth",
                "auth_type = userpass",
                f"username = {agent_id}",
                f"password = {check_secret(f'agent {agent_id}', password)}",
            ]
        )
    return join(blocks)
