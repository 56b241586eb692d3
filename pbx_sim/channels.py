"""Channels of the simulated PBX and the AMI events that carry their snapshot.

Names, uniqueids and snapshot fields follow the recordings of Asterisk 22:
``PJSIP/<endpoint>-%08x`` with one counter shared by every PJSIP endpoint,
``Local/<exten>@<context>-%08x;1`` / ``;2`` with their own counter, uniqueids
``<epoch seconds>.<n>`` with a global counter, and every channel event carries
Channel, ChannelState, ChannelStateDesc, CallerIDNum, CallerIDName,
ConnectedLineNum, ConnectedLineName, Language, AccountCode, Context, Exten,
Priority, Uniqueid, Linkedid in that order (caller and connected names
C-escaped as ``ast_escape_c`` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from pbx_sim.clock import SimClock

UNKNOWN = "<unknown>"

_C_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "?": "\\?",
}


def escape_c(value: str) -> str:
    """C-escape ``value`` like Asterisk's ``ast_escape_c`` (AMI CallerIDName, VarSet Value)."""
    return "".join(_C_ESCAPES.get(char, char) for char in value)


class ChannelState(IntEnum):
    """Asterisk's ``ast_channel_state`` values that the simulator uses."""

    DOWN = 0
    RING = 4
    RINGING = 5
    UP = 6

    @property
    def desc(self) -> str:
        return {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}[self.value]


Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class AmiEvent:
    """One AMI event: its name, its Privilege header and the other headers in order."""

    name: str
    privilege: str
    headers: tuple[tuple[str, str], ...]

    def to_headers(self) -> Headers:
        return [("Event", self.name), ("Privilege", self.privilege), *self.headers]

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass
class Channel:
    """A live channel: identity, state, caller id, dialplan position and variables."""

    name: str
    uniqueid: str
    linkedid: str
    context: str
    exten: str
    priority: int = 1
    state: ChannelState = ChannelState.DOWN
    caller_num: str = ""
    caller_name: str = ""
    connected_num: str = ""
    connected_name: str = ""
    language: str = "en"
    accountcode: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    hung_up: bool = False

    @property
    def tech(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def device(self) -> str:
        """The device name (``PJSIP/agent1`` for ``PJSIP/agent1-00000005``)."""
        return self.name.rsplit("-", 1)[0] if self.tech == "PJSIP" else self.name.split(";", 1)[0]

    def snapshot(self, prefix: str = "") -> Headers:
        """The channel snapshot headers, optionally prefixed (``Dest`` for DestChannel...)."""
        return [
            (f"{prefix}Channel", self.name),
            (f"{prefix}ChannelState", str(int(self.state))),
            (f"{prefix}ChannelStateDesc", self.state.desc),
            (f"{prefix}CallerIDNum", self.caller_num or UNKNOWN),
            (f"{prefix}CallerIDName", escape_c(self.caller_name) if self.caller_name else UNKNOWN),
            (f"{prefix}ConnectedLineNum", self.connected_num or UNKNOWN),
            (f"{prefix}ConnectedLineName", escape_c(self.connected_name) if self.connected_name else UNKNOWN),
            (f"{prefix}Language", self.language),
            (f"{prefix}AccountCode", self.accountcode),
            (f"{prefix}Context", self.context),
            (f"{prefix}Exten", self.exten),
            (f"{prefix}Priority", str(self.priority)),
            (f"{prefix}Uniqueid", self.uniqueid),
            (f"{prefix}Linkedid", self.linkedid),
        ]

    def event(
        self, name: str, privilege: str, *extra: tuple[str, str], dest: Channel | None = None
    ) -> AmiEvent:
        """An event about this channel (and ``dest`` as Dest* fields), then ``extra`` headers."""
        headers = self.snapshot()
        if dest is not None:
            headers += dest.snapshot("Dest")
        return AmiEvent(name, privilege, (*headers, *extra))


class ChannelFactory:
    """Allocates channel names and uniqueids with Asterisk's counters."""

    def __init__(self, clock: SimClock) -> None:
        self._clock = clock
        self._uniqueid_counter = 0
        self._pjsip_counter = 0
        self._local_counter = 0

    def _uniqueid(self) -> str:
        uniqueid = f"{int(self._clock.now())}.{self._uniqueid_counter}"
        self._uniqueid_counter += 1
        return uniqueid

    def pjsip(self, endpoint: str, context: str, exten: str, linkedid: str | None = None) -> Channel:
        """A new ``PJSIP/<endpoint>-%08x`` channel."""
        name = f"PJSIP/{endpoint}-{self._pjsip_counter:08x}"
        self._pjsip_counter += 1
        uniqueid = self._uniqueid()
        return Channel(
            name=name, uniqueid=uniqueid, linkedid=linkedid or uniqueid, context=context, exten=exten
        )

    def local_pair(self, exten: str, context: str, linkedid: str | None = None) -> tuple[Channel, Channel]:
        """A new ``Local/<exten>@<context>-%08x;1`` / ``;2`` pair (;1 is the originating side)."""
        base = f"Local/{exten}@{context}-{self._local_counter:08x}"
        self._local_counter += 1
        one_id = self._uniqueid()
        two_id = self._uniqueid()
        linked = linkedid or one_id
        one = Channel(name=f"{base};1", uniqueid=one_id, linkedid=linked, context=context, exten=exten)
        two = Channel(name=f"{base};2", uniqueid=two_id, linkedid=linked, context=context, exten=exten)
        return one, two
