"""The demo's console view: what the engine sees over AMI, as lines a person can follow.

:class:`ConsoleBoard` is fed AMI events (the same ones the engine receives from
Asterisk or the simulated PBX) and returns one printable line per notable event,
plus a per-queue summary on demand.  Caller names arrive C-escaped in AMI and
are chosen by the caller: they are unescaped, then every control character is
replaced so that a hostile name can never break the terminal output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guichet.names import (
    EV_AGENT_COMPLETE,
    EV_AGENT_CONNECT,
    EV_QUEUE_CALLER_ABANDON,
    EV_QUEUE_CALLER_JOIN,
    EV_QUEUE_CALLER_LEAVE,
    H_CALLER_ID_NAME,
    H_CALLER_ID_NUM,
    H_CHANNEL,
    H_QUEUE,
)
from routing.ami import AmiMessage, unescape_c


def printable(text: str, limit: int = 40) -> str:
    """``text`` with control characters replaced by ``?`` and cut to ``limit`` characters."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


@dataclass
class QueueFigures:
    """Raw counts seen since the demo started (not the KPI dictionary's figures)."""

    joined: int = 0
    answered: int = 0
    unanswered: int = 0  # QueueCallerAbandon: hung up while queued, or queue timeout
    waiting: set[str] = field(default_factory=set)


@dataclass
class ConsoleBoard:
    queues: dict[str, QueueFigures] = field(default_factory=dict)
    talking: dict[str, str] = field(default_factory=dict)  # agent -> caller channel

    def _queue(self, name: str) -> QueueFigures:
        return self.queues.setdefault(name, QueueFigures())

    def feed(self, event: AmiMessage) -> str | None:
        """Update the counts from one event; the line to print, or None for a quiet event."""
        queue_name = event.get(H_QUEUE, "") or ""
        channel = event.get(H_CHANNEL, "") or ""
        who = self._caller(event)
        if event.name == EV_QUEUE_CALLER_JOIN:
            queue = self._queue(queue_name)
            queue.joined += 1
            queue.waiting.add(channel)
            return f"{who} waits in queue {queue_name} (position {event.get('Position')})"
        if event.name == EV_QUEUE_CALLER_LEAVE:
            self._queue(queue_name).waiting.discard(channel)
            return None
        if event.name == EV_QUEUE_CALLER_ABANDON:
            self._queue(queue_name).unanswered += 1
            return f"{who} left queue {queue_name} unanswered after {event.get('HoldTime')} s"
        agent = printable(event.get("MemberName", "") or event.get("Interface", "") or "?")
        if event.name == EV_AGENT_CONNECT:
            self._queue(queue_name).answered += 1
            self.talking[agent] = channel
            return f"{agent} answers {who} in {queue_name} after {event.get('HoldTime')} s"
        if event.name == EV_AGENT_COMPLETE:
            self.talking.pop(agent, None)
            talk, by = event.get("TalkTime"), event.get("Reason")
            return f"{agent} ends the call with {who} ({talk} s, hung up by {by})"
        return None

    @staticmethod
    def _caller(event: AmiMessage) -> str:
        number = printable(event.get(H_CALLER_ID_NUM, "") or "?", 20)
        name = printable(unescape_c(event.get(H_CALLER_ID_NAME, "") or ""))
        return f"{name} <{number}>" if name and name != "<unknown>" else f"<{number}>"

    def summary(self) -> list[str]:
        """One line per queue (joined, waiting, answered, unanswered) and the agents on a call."""
        lines = [
            f"  {name:<10} joined {q.joined:>3}  waiting {len(q.waiting):>2}  "
            f"answered {q.answered:>3}  unanswered {q.unanswered:>3}"
            for name, q in sorted(self.queues.items())
        ]
        lines.append(f"  agents on a call: {', '.join(sorted(self.talking)) or 'none'}")
        return lines
