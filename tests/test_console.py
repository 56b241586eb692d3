"""The demo's console view, fed the recorded AMI streams of real Asterisk 22 queue calls."""

from __future__ import annotations

from pathlib import Path

from guichet.console import ConsoleBoard, printable
from routing.ami import AmiMessage, AmiParser
from tests.ami_streams import load_stream


def events(captures_dir: Path, name: str) -> list[AmiMessage]:
    parser = AmiParser()
    return [m for m in parser.feed(load_stream(captures_dir, name).data) if m.kind == "event"]


def test_answered_call_is_counted_and_told(captures_dir: Path) -> None:
    board = ConsoleBoard()
    lines = [
        line
        for e in events(captures_dir, "ami_events_queue_call_201_pjsip_agent.raw")
        if (line := board.feed(e))
    ]
    figures = board.queues["apb"]
    assert (figures.joined, figures.answered, figures.unanswered, len(figures.waiting)) == (1, 1, 0, 0)
    assert lines[0] == "sipp <sipp> waits in queue apb (position 1)"
    assert lines[1].startswith("Agent PJSIP answers sipp <sipp> in apb after ")
    assert lines[2].startswith("Agent PJSIP ends the call with sipp <sipp>")
    assert board.talking == {}


def test_queue_timeout_counts_as_unanswered(captures_dir: Path) -> None:
    board = ConsoleBoard()
    for event in events(captures_dir, "ami_events_queue_timeout_overflow.raw"):
        board.feed(event)
    figures = board.queues["ovf"]
    assert (figures.joined, figures.answered, figures.unanswered, len(figures.waiting)) == (1, 0, 1, 0)


def test_hostile_name_cannot_break_the_terminal() -> None:
    event = AmiMessage(
        [
            ("Event", "QueueCallerJoin"),
            ("Channel", "PJSIP/citizen-00000001"),
            ("CallerIDNum", "0612345678"),
            ("CallerIDName", 'Zo\\303\\251 \\"VIP\\"\\n\\x1b[2J<b>'),
            ("Queue", "apa"),
            ("Position", "1"),
        ]
    )
    line = ConsoleBoard().feed(event)
    assert line is not None
    assert "\n" not in line and "\x1b" not in line
    assert '"VIP"' in line
    assert printable("a\tb\x00c") == "a?b?c"
    assert printable("x" * 50, 10) == "x" * 9 + "…"
