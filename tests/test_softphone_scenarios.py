"""The SIPp scenarios of softphone_test/ run to completion against SIPp peers on loopback (no Asterisk).

Each test starts the peer (playing Asterisk's part) and the scenario under test as real SIPp
processes, then checks both exit codes and statistics.  The citizen's DTMF goes to a UDP socket of
the test (the peer's SDP points there), which decodes the RFC 2833 events as Asterisk tells keys
apart.  A wrong digest password must be refused by the verifying registrar.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from softphone_test import dtmf, sipp
from softphone_test import harness as harness_module
from softphone_test.harness import Harness, ManagedProcess, free_udp_ports

PASSWORD = "bon-mot-de-passe"
MENU_DELAY_MS = 300
# Room for the pcap player thread of a loaded machine before a BYE ends the call (not a timing check).
MARGIN_MS = 3000


@pytest.fixture(autouse=True)
def _sipp_installed() -> None:
    if shutil.which(sipp.SIPP) is None:
        pytest.fail("sipp is not installed: install Debian's sip-tester (./run.sh test does)")


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    sipp.prepare_run_dir(tmp_path)
    return Harness(tmp_path)


def _run_pair(
    harness: Harness, peer: sipp.SippSpec, under_test: sipp.SippSpec
) -> tuple[sipp.SippResult, ...]:
    with harness:
        peer_process = harness.start_sipp(peer)
        process = harness.start_sipp(under_test)
        result = harness.finish_sipp(under_test, process)
        peer_result = harness.finish_sipp(peer, peer_process)
    return result, peer_result


def _answering_peer(end: str, rtp_port: int, hold_ms: int = 0) -> sipp.SippSpec:
    return sipp.agent_answer(
        "pbx", local_port=free_udp_ports(1), media_port=free_udp_ports(), end=end, hold_ms=hold_ms,
        rtp_port=rtp_port, timeout_s=30,
    )  # fmt: skip


def _citizen(peer: sipp.SippSpec, end: str, stay_ms: int = 0) -> sipp.SippSpec:
    return sipp.citizen(
        "citizen",
        local_port=free_udp_ports(1),
        media_port=free_udp_ports(),
        remote=f"127.0.0.1:{peer.local_port}",
        number="3939",
        caller="0612345678",
        end=end,
        menu_delay_ms=MENU_DELAY_MS,
        stay_ms=stay_ms,
        timeout_s=30,
    )


def test_citizen_presses_menu_keys_and_hangs_up(harness: Harness) -> None:
    keys = sipp.CitizenKeys(menu="12")
    keys.write(harness.run_dir)
    with dtmf.RtpSink() as sink:
        peer = _answering_peer("wait", sink.port)
        citizen, pbx = _run_pair(harness, peer, _citizen(peer, "bye", stay_ms=keys.menu_ms + MARGIN_MS))
    assert citizen.ok, citizen.report()
    assert pbx.ok, pbx.report()
    assert sink.keys() == "12"


def test_citizen_waits_for_the_far_end_to_hang_up(harness: Harness) -> None:
    keys = sipp.CitizenKeys(menu="0")
    keys.write(harness.run_dir)
    with dtmf.RtpSink() as sink:
        peer = _answering_peer("bye", sink.port, hold_ms=MENU_DELAY_MS + keys.menu_ms + MARGIN_MS)
        citizen, pbx = _run_pair(harness, peer, _citizen(peer, "wait"))
    assert citizen.ok, citizen.report()
    assert pbx.ok, pbx.report()
    assert sink.keys() == "0"


def test_queued_callback_keys_continue_the_stream_so_repeated_keys_count(harness: Harness) -> None:
    # "11" in the menu (APA, urgent) then 1 and 1 while queued: four presses of the same key, each a
    # distinct RFC 2833 event only because the pcaps are renumbered as one stream.
    keys = sipp.CitizenKeys(menu="11", queued="11")
    keys.write(harness.run_dir)
    with dtmf.RtpSink() as sink:
        stay_ms = keys.menu_ms + 500  # the queued keys after the menu keys
        hold_ms = MENU_DELAY_MS + stay_ms + dtmf.duration_ms(keys.queued, keys.gap_ms) + MARGIN_MS
        peer = _answering_peer("bye", sink.port, hold_ms=hold_ms)
        citizen, pbx = _run_pair(harness, peer, _citizen(peer, "callback", stay_ms=stay_ms))
    assert citizen.ok, citizen.report()
    assert pbx.ok, pbx.report()
    assert sink.keys() == "1111"


def _registrar(password: str) -> sipp.SippSpec:
    return sipp.SippSpec(
        "registrar", "registrar.xml", free_udp_ports(1), free_udp_ports(),
        injection=("SEQUENTIAL", f"agent1;{password}"), timeout_s=30,
    )  # fmt: skip


def _softphone(registrar: sipp.SippSpec, password: str, end: str = "wait") -> sipp.SippSpec:
    return sipp.agent_softphone(
        "agent", local_port=free_udp_ports(1), media_port=free_udp_ports(),
        remote=f"127.0.0.1:{registrar.local_port}", agent="agent1", password=password,
        registered_ms=300, end=end, hold_ms=300, timeout_s=30,
    )  # fmt: skip


def test_agent_registers_with_digest_refreshes_and_unregisters(harness: Harness) -> None:
    registrar = _registrar(PASSWORD)
    softphone = _softphone(registrar, PASSWORD)
    agent, peer = _run_pair(harness, registrar, softphone)
    assert agent.ok, agent.report()
    assert peer.ok, peer.report()
    accepted = [line for line in peer.logs.splitlines() if line.startswith("ACCEPTED")]
    contact = f"<sip:agent1@127.0.0.1:{softphone.local_port}>"
    assert accepted == [
        f"ACCEPTED agent1 Contact {contact} Expires 120",
        f"ACCEPTED agent1 Contact {contact} Expires 120",
        f"ACCEPTED agent1 Contact {contact} Expires 0",
    ]


def test_a_wrong_password_is_refused(harness: Harness) -> None:
    registrar = _registrar(PASSWORD)
    agent, peer = _run_pair(harness, registrar, _softphone(registrar, "pas-le-bon"))
    assert not agent.ok
    assert agent.returncode == 1
    assert agent.stats is not None
    assert (agent.stats.successful, agent.stats.failed, agent.stats.unexpected_messages) == (0, 1, 1)
    assert "403 Forbidden" in agent.errors
    assert not peer.ok
    assert "REFUSED agent1" in peer.logs
    assert "ACCEPTED" not in peer.logs


@pytest.mark.parametrize(("agent_end", "pbx_end"), [("wait", "bye"), ("bye", "wait")])
def test_the_registered_softphone_answers_qualify_and_a_call_on_its_contact(
    harness: Harness, agent_end: str, pbx_end: str
) -> None:
    registrar = sipp.SippSpec(
        "registrar", "registrar.xml", free_udp_ports(1), free_udp_ports(),
        injection=("SEQUENTIAL", f"agent1;{PASSWORD}"), timeout_s=30,
    )  # fmt: skip
    softphone = sipp.agent_softphone(
        "agent", local_port=free_udp_ports(1), media_port=free_udp_ports(),
        remote=f"127.0.0.1:{registrar.local_port}", agent="agent1", password=PASSWORD,
        registered_ms=5000, end=agent_end, hold_ms=300, timeout_s=30,
    )  # fmt: skip
    pbx = sipp.SippSpec(
        "pbx", "pbx_calls_agent.xml", free_udp_ports(1), free_udp_ports(),
        remote=f"127.0.0.1:{softphone.local_port}", service="agent1",
        variables={"end": pbx_end, "hold_ms": "300"}, timeout_s=30,
    )  # fmt: skip
    with harness:
        peer = harness.start_sipp(registrar)
        agent = harness.start_sipp(softphone)
        harness_module.wait_until(
            lambda: "ACCEPTED" in _text(harness.run_dir / "registrar_logs.log"),
            what="registered",
            timeout_s=30,
        )
        reply = _options(softphone.local_port, agent)
        pbx_result = harness.finish_sipp(pbx, harness.start_sipp(pbx))
        agent_result = harness.finish_sipp(softphone, agent)
        registrar_result = harness.finish_sipp(registrar, peer)
    assert reply.startswith(b"SIP/2.0 200"), reply
    assert pbx_result.ok, pbx_result.report()
    assert agent_result.ok, agent_result.report()
    assert registrar_result.ok, registrar_result.report()
    messages = _text(harness.run_dir / "agent_messages.log")
    assert "INVITE sip:agent1@" in messages
    assert "SIP/2.0 200 OK" in messages


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


@pytest.mark.parametrize(("agent_end", "pbx_end"), [("wait", "bye"), ("bye", "wait")])
def test_agent_answers_two_calls(harness: Harness, agent_end: str, pbx_end: str) -> None:
    agent = sipp.agent_answer(
        "agent", local_port=free_udp_ports(1), media_port=free_udp_ports(), end=agent_end, hold_ms=300,
        calls=2, timeout_s=30,
    )  # fmt: skip
    pbx = sipp.SippSpec(
        "pbx",
        "pbx_calls_agent.xml",
        free_udp_ports(1),
        free_udp_ports(),
        remote=f"127.0.0.1:{agent.local_port}",
        service="agent1",
        calls=2,
        variables={"end": pbx_end, "hold_ms": "300"},
        timeout_s=30,
    )
    pbx_result, agent_result = _run_pair(harness, agent, pbx)
    assert agent_result.ok, agent_result.report()
    assert pbx_result.ok, pbx_result.report()
    assert agent_result.stats is not None
    assert agent_result.stats.successful == 2


def _options(port: int, process: ManagedProcess) -> bytes:
    """Send a qualify OPTIONS to ``port`` (again until SIPp listens); the reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(1.0)
        message = (
            f"OPTIONS sip:agent1@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{sock.getsockname()[1]};branch=z9hG4bK-qualify-1\r\n"
            "From: <sip:asterisk@127.0.0.1>;tag=qualify\r\nTo: <sip:agent1@127.0.0.1>\r\n"
            "Call-ID: qualify-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        for _ in range(30):
            sock.sendto(message, ("127.0.0.1", port))
            try:
                return sock.recv(4096)
            except TimeoutError:
                process.check_alive()
    return b""


def test_a_lone_answering_agent_answers_qualify_options(harness: Harness) -> None:
    agent = sipp.agent_answer(
        "agent", local_port=free_udp_ports(1), media_port=free_udp_ports(), end="wait", timeout_s=30
    )
    with harness:
        reply = _options(agent.local_port, harness.start_sipp(agent))
    assert reply.startswith(b"SIP/2.0 200"), reply
    assert b"CSeq: 1 OPTIONS" in reply
