"""``guichet menus check [DIR]``: report every error of the menu files, one line each.

Each line reads ``file:line: key: message``; a summary follows.  Prompt texts
must be synthesisable (not empty, not too long); with ``--sounds DIR``, every
prompt's sound must exist as ``DIR/<name>.wav`` (``guichet prompts build``
makes the synthesised ones), so that no call ever meets a missing file.  The exit status
is 0 when the menus are valid, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from ivr.menus import MenuIssue, MenuValidationError, load_menus
from ivr.prompt_names import prompt_issues
from ivr.services import SERVICE_QUEUES

DEFAULT_DIR: Final = Path("dialplans")
# The service queues the dialplan knows (asterisk_conf/queues.conf).
DEFAULT_QUEUES: Final = frozenset(SERVICE_QUEUES)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guichet menus check", description=__doc__.splitlines()[0])
    parser.add_argument(
        "directory", nargs="?", type=Path, default=DEFAULT_DIR, help=f"menu folder (default: {DEFAULT_DIR})"
    )
    parser.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="NAME",
        help=f"a known queue (repeatable; default: {', '.join(sorted(DEFAULT_QUEUES))})",
    )
    parser.add_argument(
        "--schedule",
        action="append",
        dest="schedules",
        metavar="NAME",
        help="a known opening-hours schedule (repeatable; default: schedule names are not checked)",
    )
    parser.add_argument(
        "--sounds",
        type=Path,
        metavar="DIR",
        help="sounds folder: every prompt must exist there as <name>.wav (default: not checked)",
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Check the menus of a folder; print one line per error and a summary; 1 if any error, else 0."""
    out = sys.stdout if out is None else out
    args = build_parser().parse_args(argv)
    queues = frozenset(args.queues) if args.queues else DEFAULT_QUEUES
    issues: list[MenuIssue] | tuple[MenuIssue, ...]
    try:
        menus = load_menus(args.directory, queues, known_schedules=args.schedules)
    except MenuValidationError as exc:
        issues = exc.errors
    else:
        issues = prompt_issues(menus, args.sounds)
    for issue in issues:
        print(issue, file=out)
    if issues:
        files = len({issue.file for issue in issues})
        print(f"{len(issues)} error(s) in {files} file(s) under {args.directory}", file=out)
        return 1
    count = len(list(args.directory.glob("*.yaml")))
    print(f"{args.directory}: {count} menu file(s), no error", file=out)
    return 0
