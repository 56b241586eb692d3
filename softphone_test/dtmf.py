"""RFC 2833 / 4733 DTMF as pcap files that SIPp's ``play_pcap_audio`` sends, built from Debian's pcaps.

Debian's ``sip-tester`` ships one pcap per key (``/usr/share/sip-tester/dtmf_2833_<key>.pcap``), each
one telephone-event of 140 ms.  Played one after the other they fail on a real Asterisk 22 (see the
recordings' README): every file carries fixed RTP sequence numbers and timestamps, so Asterisk drops a
repeated key ("1" then "1": same timestamp, the same event) and a key whose file is "older" than the
previous one ("2" then "1").  :func:`write_digits` therefore writes a whole key sequence into ONE pcap,
taking each key's packets (framing, event code, durations, end-of-event retransmissions) from Debian's
file but renumbering the RTP: sequence numbers keep increasing, each key gets its own timestamp, and the
packets' capture times put ``gap_ms`` between the starts of two keys (SIPp replays a pcap at the pace of
its capture times).  An :class:`RtpCursor` carries the numbering from one file to the next, so that a
later file of the same call (the keys pressed while queued) continues the stream.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEBIAN_PCAPS: Final = Path("/usr/share/sip-tester")
KEY_FILES: Final[Mapping[str, str]] = {
    **{digit: f"dtmf_2833_{digit}.pcap" for digit in "0123456789"},
    "*": "dtmf_2833_star.pcap",
    "#": "dtmf_2833_pound.pcap",
}
EVENT_KEYS: Final = "0123456789*#"  # RFC 4733 event codes 0-11
SAMPLES_PER_MS: Final = 8  # telephone-event/8000
MIN_GAP_MS: Final = 200  # each key lasts 140 ms; Asterisk needs them apart
TELEPHONE_EVENT_PT: Final = 101  # the payload type the scenarios offer (a=rtpmap:101 telephone-event/8000)

_PCAP_HEADER: Final = struct.Struct("<IHHiIII")
_RECORD_HEADER: Final = struct.Struct("<IIII")
_PCAP_MAGIC: Final = 0xA1B2C3D4  # microsecond timestamps, little-endian (as Debian's files)
_LINKTYPE_ETHERNET: Final = 1
_ETHERNET_HEADER: Final = 14
_RTP_HEADER: Final = struct.Struct("!BBHII")


class DtmfPcapError(ValueError):
    """A key sequence cannot be written (unknown key, gap too short, unreadable source pcap)."""


@dataclass(frozen=True)
class RtpCursor:
    """The next RTP sequence number and timestamp of a caller's DTMF stream."""

    seq: int = 1000
    timestamp: int = 8000


@dataclass(frozen=True)
class _Packet:
    offset_us: int  # capture time relative to the key's first packet
    frame: bytes  # Ethernet + IPv4 + UDP + RTP, as captured
    rtp_at: int  # offset of the RTP header in ``frame``


def _read_key(path: Path) -> tuple[bytes, list[_Packet]]:
    """The pcap global header and the packets of one of Debian's key files."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DtmfPcapError(f"cannot read {path}: {exc.strerror} (install Debian's sip-tester)") from exc
    if len(data) < _PCAP_HEADER.size:
        raise DtmfPcapError(f"{path}: not a pcap file")
    magic, _, _, _, _, _, link = _PCAP_HEADER.unpack_from(data)
    if magic != _PCAP_MAGIC or link != _LINKTYPE_ETHERNET:
        raise DtmfPcapError(
            f"{path}: expected a little-endian Ethernet pcap, got magic {magic:#x} link {link}"
        )
    packets: list[_Packet] = []
    offset = _PCAP_HEADER.size
    first_us: int | None = None
    while offset + _RECORD_HEADER.size <= len(data):
        seconds, micros, length, _ = _RECORD_HEADER.unpack_from(data, offset)
        offset += _RECORD_HEADER.size
        frame = data[offset : offset + length]
        offset += length
        ip_header = (frame[_ETHERNET_HEADER] & 0x0F) * 4
        rtp_at = _ETHERNET_HEADER + ip_header + 8
        if len(frame) < rtp_at + _RTP_HEADER.size + 4 or frame[rtp_at + 1] & 0x7F != TELEPHONE_EVENT_PT:
            raise DtmfPcapError(f"{path}: packet {len(packets) + 1} is not an RTP telephone-event")
        at_us = seconds * 1_000_000 + micros
        first_us = at_us if first_us is None else first_us
        packets.append(_Packet(at_us - first_us, frame, rtp_at))
    if not packets:
        raise DtmfPcapError(f"{path}: no packet")
    return data[: _PCAP_HEADER.size], packets


def write_digits(
    path: Path,
    keys: str,
    *,
    gap_ms: int = 400,
    cursor: RtpCursor | None = None,
    source_dir: Path = DEBIAN_PCAPS,
) -> RtpCursor:
    """Write ``keys`` (0-9, * and #) into the pcap ``path``; return the cursor for the call's next file.

    The first key starts at the file's first packet; key ``i`` starts ``i * gap_ms`` later.  No key
    gives a pcap with no packet (SIPp loads every pcap of a scenario, played or not).
    """
    unknown = sorted(set(keys) - KEY_FILES.keys())
    if unknown:
        raise DtmfPcapError(f"unknown DTMF key(s) {' '.join(unknown)}: use 0-9, * and #")
    if gap_ms < MIN_GAP_MS:
        raise DtmfPcapError(f"gap_ms={gap_ms}: keys must start at least {MIN_GAP_MS} ms apart")
    cursor = cursor or RtpCursor()
    header, _ = _read_key(source_dir / KEY_FILES["0"])
    records: list[bytes] = []
    seq, timestamp = cursor.seq, cursor.timestamp
    for index, key in enumerate(keys):
        header, packets = _read_key(source_dir / KEY_FILES[key])
        first_seq = _RTP_HEADER.unpack_from(packets[0].frame, packets[0].rtp_at)[2]
        last_relative = 0
        for packet in packets:
            flags, marker_pt, old_seq, _, ssrc = _RTP_HEADER.unpack_from(packet.frame, packet.rtp_at)
            relative = (old_seq - first_seq) & 0xFFFF
            last_relative = max(last_relative, relative)
            rtp = _RTP_HEADER.pack(flags, marker_pt, (seq + relative) & 0xFFFF, timestamp, ssrc)
            frame = packet.frame[: packet.rtp_at] + rtp + packet.frame[packet.rtp_at + _RTP_HEADER.size :]
            at_us = index * gap_ms * 1000 + packet.offset_us
            records.append(_RECORD_HEADER.pack(at_us // 1_000_000, at_us % 1_000_000, len(frame), len(frame)))
            records.append(frame)
        seq = (seq + last_relative + 1) & 0xFFFF
        timestamp = (timestamp + gap_ms * SAMPLES_PER_MS) & 0xFFFFFFFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b"".join(records))
    return RtpCursor(seq, timestamp)


def duration_ms(keys: str, gap_ms: int = 400) -> int:
    """How long SIPp takes to play :func:`write_digits`'s file for ``keys`` (first to last packet)."""
    return (len(keys) - 1) * gap_ms + 140


def decode_events(packets: list[bytes]) -> str:
    """The keys a receiver sees in RTP packets: one key per new (SSRC, timestamp) telephone-event.

    This is how Asterisk tells two presses apart, so a stream whose keys share a timestamp decodes to
    fewer keys (Debian's files played as they are).
    """
    keys: list[str] = []
    seen: set[tuple[int, int]] = set()
    for packet in packets:
        if len(packet) < _RTP_HEADER.size + 4:
            continue
        _, marker_pt, _, timestamp, ssrc = _RTP_HEADER.unpack_from(packet)
        event = packet[_RTP_HEADER.size]
        if marker_pt & 0x7F != TELEPHONE_EVENT_PT or event >= len(EVENT_KEYS):
            continue
        if (ssrc, timestamp) not in seen:
            seen.add((ssrc, timestamp))
            keys.append(EVENT_KEYS[event])
    return "".join(keys)


class RtpSink:
    """A UDP socket on loopback that keeps every packet it receives (a thread reads it).

    CI uses it as the far end's media port, to see which keys a citizen scenario really sent.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((host, 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self.packets: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"rtp-sink-{self.port}", daemon=True)

    def __enter__(self) -> RtpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.packets.append(self._socket.recv(2048))
            except TimeoutError:
                continue

    def keys(self) -> str:
        return decode_events(list(self.packets))
