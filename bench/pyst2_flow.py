"""The IVR flow as a classic process-per-call AGI script with pyst2 (how Asterisk runs ``AGI(script)``).

Asterisk starts one process per call, writes the agi_ environment block on its stdin, reads commands
on its stdout and answers each one on its stdin.  Run as ``python bench/pyst2_flow.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make ``bench`` importable

from asterisk.agi import AGI

from bench.flow import (
    CALLER_NUM_VAR,
    DIGIT_TIMEOUT_MS,
    IVR_DONE,
    LANGUAGE,
    MAX_DIGITS,
    PRIO,
    PROMPT_MENU,
    PROMPT_SERVICE,
    PROMPT_URGENCY,
    PROMPT_WELCOME,
    QUEUE,
)
from guichet.names import CHANNEL_LANGUAGE, GUICHET_IVR_DONE, GUICHET_PRIO, GUICHET_QUEUE


def main() -> None:
    agi = AGI()  # reads the environment block from stdin
    agi.answer()
    agi.set_variable(CHANNEL_LANGUAGE, LANGUAGE)
    agi.get_variable(CALLER_NUM_VAR)
    agi.stream_file(PROMPT_WELCOME)
    agi.get_data(PROMPT_MENU, DIGIT_TIMEOUT_MS, MAX_DIGITS)
    agi.stream_file(PROMPT_SERVICE)
    agi.get_data(PROMPT_URGENCY, DIGIT_TIMEOUT_MS, MAX_DIGITS)
    agi.set_variable(GUICHET_QUEUE, QUEUE)
    agi.set_variable(GUICHET_PRIO, PRIO)
    agi.set_variable(GUICHET_IVR_DONE, IVR_DONE)


if __name__ == "__main__":
    main()
