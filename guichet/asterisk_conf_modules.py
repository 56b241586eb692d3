"""modules.conf: ``autoload = no`` and exactly the modules the single number needs.

The list is the fixed base (SIP, RTP, the dialplan, the queue, AGI, music on hold, sound formats and
codecs, bridging) plus the module of every application and function the rendered dialplan uses, looked
up in :data:`APPLICATION_MODULES` / :data:`FUNCTION_MODULES` (taken from Asterisk 22's module
documentation: which module registers which application or function).  A dialplan that uses an
application or function missing from the tables is refused: add it there, with its module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from guichet.asterisk_conf_syntax import AsteriskConfigError, header, join
from pbx_sim.dialplan import Dialplan

# Application -> the module that provides it; None: Asterisk's core (main/pbx_builtins.c: Answer, Busy,
# Congestion, Goto, GotoIf, Hangup, NoOp, Progress, Ringing, Wait...; main/pbx_variables.c: Set, MSet).
APPLICATION_MODULES: Final[Mapping[str, str | None]] = {
    "Answer": None,
    "Background": None,
    "Busy": None,
    "Congestion": None,
    "Goto": None,
    "GotoIf": None,
    "Hangup": None,
    "MSet": None,
    "NoOp": None,
    "Progress": None,
    "Ringing": None,
    "Set": None,
    "Wait": None,
    "WaitExten": None,
    "AGI": "res_agi.so",
    "EAGI": "res_agi.so",
    "Dial": "app_dial.so",
    "Gosub": "app_stack.so",
    "GosubIf": "app_stack.so",
    "Return": "app_stack.so",
    "Playback": "app_playback.so",
    "Queue": "app_queue.so",
    "Verbose": "app_verbose.so",
    "Log": "app_verbose.so",
}

# Dialplan function -> its module (a variable such as ${EPOCH} or ${EXTEN} is no function).
FUNCTION_MODULES: Final[Mapping[str, str]] = {
    "CHANNEL": "func_channel.so",
    "MASTER_CHANNEL": "func_channel.so",
    "CALLERID": "func_callerid.so",
    "CONNECTEDLINE": "func_callerid.so",
    "CUT": "func_cut.so",
    "IF": "func_logic.so",
    "ISNULL": "func_logic.so",
    "EXISTS": "func_logic.so",
    "LEN": "func_strings.so",
    "STRFTIME": "func_strings.so",
    "FILTER": "func_strings.so",
    "QUEUE_MEMBER": "app_queue.so",
    "QUEUE_VARIABLES": "app_queue.so",
    "PJSIP_HEADER": "res_pjsip_header_funcs.so",
}

# Module -> why it is loaded, in load order (modules.conf keeps this order).
BASE_MODULES: Final[Mapping[str, str]] = {
    "res_sorcery_config.so": "PJSIP objects from pjsip.conf",
    "res_sorcery_memory.so": "PJSIP objects kept in memory",
    "res_sorcery_astdb.so": "PJSIP contacts (registrations) kept in the astdb",
    "res_pjproject.so": "the pjproject stack under res_pjsip",
    "res_pjsip.so": "SIP",
    "res_pjsip_session.so": "SIP calls",
    "res_pjsip_pubsub.so": "required by chan_pjsip",
    "chan_pjsip.so": "PJSIP channels (trunk and agents)",
    "res_pjsip_sdp_rtp.so": "audio in SDP",
    "res_pjsip_authenticator_digest.so": "agents authenticate with digest",
    "res_pjsip_outbound_authenticator_digest.so": "Guichet authenticates to the operator's trunk",
    "res_pjsip_outbound_registration.so": "registration to the operator's trunk (when it needs one)",
    "res_pjsip_endpoint_identifier_user.so": "an agent's REGISTER/INVITE is identified by user name",
    "res_pjsip_endpoint_identifier_ip.so": "the trunk's calls are identified by address",
    "res_pjsip_registrar.so": "agents' softphones register",
    "res_pjsip_caller_id.so": "the caller's number from the trunk (P-Asserted-Identity)",
    "res_pjsip_nat.so": "softphones behind NAT",
    "res_pjsip_dlg_options.so": "OPTIONS inside a call (some trunks send them)",
    "res_pjsip_logger.so": "`pjsip set logger on` when checking the trunk",
    "res_rtp_asterisk.so": "RTP audio",
    "res_timing_timerfd.so": "timing for music on hold and playback",
    "bridge_simple.so": "two-party bridges (caller and agent)",
    "bridge_native_rtp.so": "native RTP bridging between PJSIP channels",
    "codec_ulaw.so": "G.711 mu-law",
    "codec_alaw.so": "G.711 A-law (French operators)",
    "codec_a_mu.so": "A-law <-> mu-law directly",
    "codec_gsm.so": "GSM sound files",
    "format_wav.so": "Guichet's prompts (8 kHz WAV)",
    "format_pcm.so": ".ulaw/.alaw sound files",
    "format_gsm.so": ".gsm sound files (Asterisk's core sounds)",
    "format_sln.so": ".sln sound files",
    "res_musiconhold.so": "music while queued",
    "pbx_config.so": "extensions.conf",
    "app_queue.so": "the queues (queues.conf)",
    "res_agi.so": "FastAGI to the engine",
}

_FUNCTION_IN_VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]+)\(")
_FUNCTION_ASSIGNED = re.compile(r"^([A-Z][A-Z0-9_]+)\(")  # Set(CHANNEL(language)=fr)


def used_applications(dialplan: Dialplan) -> set[str]:
    return {step.app for extens in dialplan.contexts.values() for steps in extens.values() for step in steps}


def used_functions(dialplan: Dialplan) -> set[str]:
    found: set[str] = set()
    for extens in dialplan.contexts.values():
        for steps in extens.values():
            for step in steps:
                found.update(_FUNCTION_IN_VARIABLE.findall(step.data))
                if step.app in ("Set", "MSet"):
                    found.update(_FUNCTION_ASSIGNED.findall(step.data))
    return found


def dialplan_modules(dialplan: Dialplan) -> list[str]:
    """The modules the applications and functions of ``dialplan`` need, sorted; refuses unknown ones."""
    unknown_apps = sorted(used_applications(dialplan) - set(APPLICATION_MODULES))
    unknown_funcs = sorted(used_functions(dialplan) - set(FUNCTION_MODULES))
    if unknown_apps or unknown_funcs:
        raise AsteriskConfigError(
            "the dialplan uses "
            + "; ".join(
                part
                for part in (
                    f"application(s) {', '.join(unknown_apps)}" if unknown_apps else "",
                    f"function(s) {', '.join(unknown_funcs)}" if unknown_funcs else "",
                )
                if part
            )
            + " that guichet/asterisk_conf_modules.py does not know: add each with its module"
        )
    needed = {APPLICATION_MODULES[app] for app in used_applications(dialplan)}
    needed |= {FUNCTION_MODULES[name] for name in used_functions(dialplan)}
    return sorted(module for module in needed if module is not None)


def modules(dialplan: Dialplan) -> list[str]:
    """Every module modules.conf loads: the base, then what the dialplan adds."""
    extra = [module for module in dialplan_modules(dialplan) if module not in BASE_MODULES]
    return [*BASE_MODULES, *extra]


def render_modules(dialplan: Dialplan) -> str:
    """modules.conf for ``dialplan``."""
    base = [
        *header("modules needed by the single number"),
        "[modules]",
        "; only what is listed below: nothing else may open a socket or read a config by surprise",
        "autoload = no",
    ]
    loads = [
        f"load => {module}  ; {BASE_MODULES.get(module, 'used by the dialplan')}"
        for module in modules(dialplan)
    ]
    return join([base, loads])
