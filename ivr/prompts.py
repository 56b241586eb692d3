"""``guichet prompts build``: synthesise every prompt text of every menu, offline, for Asterisk.

Each text becomes ``OUT/guichet/tts-<hash>.wav`` (the name
:func:`ivr.prompt_names.tts_name` gives, which the menu engine plays): French
speech from espeak-ng, converted by sox to Asterisk's ``wav`` format (8 kHz,
16-bit signed PCM, mono).  A file that already exists is up to date, since its
name hashes the text and the voice settings: editing one text rebuilds one
file.  Files are written atomically (a temporary file, then ``os.replace``), so
an interrupted build never leaves a truncated sound.

The text reaches espeak-ng on its standard input, never through a shell nor as
an argument: a text such as ``--help`` or ``$(rm -rf /)`` is only spoken.
Recorded files named in the menus are counted, not made; ``guichet menus check
--sounds DIR`` reports any sound still missing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from guichet.names import APOLOGY_SOUND, CALLBACK_OFFER_SOUND
from ivr.menu_check import DEFAULT_DIR, DEFAULT_QUEUES
from ivr.menus import MenuSet, MenuValidationError, load_menus
from ivr.prompt_names import SOUND_EXTENSION, TTS_DIR, prompt_uses, text_problem, tts_name

logger = logging.getLogger(__name__)

DEFAULT_OUT: Final = Path("sounds")
DEFAULT_JOBS: Final = min(4, os.cpu_count() or 1)
MAX_JOBS: Final = 32
TOOL_TIMEOUT_S: Final = 120  # one espeak-ng or sox run; a 1000-character text takes about a second
MAX_FAILURES_SHOWN: Final = 5
# command -> the Debian package that provides it
TOOLS: Final = {"espeak-ng": "espeak-ng", "sox": "sox"}
# espeak-ng: French voice, 150 words a minute, UTF-8 text read from stdin
ESPEAK_ARGS: Final = ("-v", "fr", "-s", "150", "-b", "1")
# sox output: Asterisk's wav format
SOX_OUTPUT_ARGS: Final = ("-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer")


class PromptBuildError(Exception):
    """The prompts cannot be built: bad texts, a missing tool, or a failed synthesis."""


@dataclass(frozen=True)
class Tools:
    """The absolute paths of the synthesis programs."""

    espeak: str
    sox: str


@dataclass(frozen=True)
class BuildReport:
    """What a build did: sound names built, already up to date, recorded, pruned."""

    built: tuple[str, ...]
    up_to_date: tuple[str, ...]
    recorded: tuple[str, ...]
    missing_recorded: tuple[str, ...]
    pruned: tuple[str, ...]

    def summary(self) -> str:
        parts = [
            f"{len(self.built)} built",
            f"{len(self.up_to_date)} already up to date",
            f"{len(self.recorded)} recorded file(s) referenced",
        ]
        if self.missing_recorded:
            parts.append(f"{len(self.missing_recorded)} recorded file(s) missing")
        if self.pruned:
            parts.append(f"{len(self.pruned)} stale file(s) removed")
        return ", ".join(parts)


def find_tools() -> Tools:
    """espeak-ng and sox from PATH; a missing one raises, naming its Debian package."""
    found = {command: shutil.which(command) for command in TOOLS}
    missing = [command for command, path in found.items() if path is None]
    if missing:
        packages = " ".join(TOOLS[command] for command in missing)
        raise PromptBuildError(
            f"{' and '.join(missing)} not found on PATH: install the Debian package(s) "
            f"{packages} (apt-get install {packages})"
        )
    return Tools(espeak=found["espeak-ng"] or "", sox=found["sox"] or "")


# Sounds with a fixed name that the dialplan plays itself, and what they say.
DIALPLAN_SOUNDS: Final[Mapping[str, str]] = {
    APOLOGY_SOUND: "Veuillez nous excuser, notre service vocal rencontre une difficulté. "
    "Nous vous mettons en relation avec l'accueil.",
    # app_queue's periodic announcement (queues.conf periodic-announce): the exit digit's offer
    CALLBACK_OFFER_SOUND: "Pour être rappelé sans perdre votre place, tapez 1.",
}


@dataclass(frozen=True)
class QueueExitTexts:
    """What the routes after Queue() and on a queued callback's legs say (``ivr/queue_exits.py``)."""

    # overflow route, queue rule "callback": the service queue timed out or has nobody logged in
    overflow_offer: str = (
        "Aucun conseiller n'est disponible pour le moment. Pour être rappelé sans perdre votre place, "
        "tapez 1. Pour patienter à l'accueil, tapez 2."
    )
    number_intro: str = "Nous vous rappellerons au"  # then the number, digit by digit (SAY DIGITS)
    number_choice: str = "Tapez 1 pour confirmer, 2 pour saisir un autre numéro."
    ask_number: str = "Tapez le numéro de téléphone où nous pouvons vous rappeler, puis la touche dièse."
    invalid_number: str = "Ce numéro n'est pas valide."
    kept: str = "Vous gardez votre place ; nous vous rappelons dès qu'un conseiller est libre. Au revoir."
    not_kept: str = "Nous n'avons pas pu enregistrer votre demande de rappel."
    back_in_queue: str = "Vous restez en ligne, un conseiller va vous répondre."
    # the citizen's leg of the callback, before the bridge with the agent
    confirm_call: str = (
        "Bonjour, le Département vous rappelle suite à votre appel. "
        "Tapez 1 pour être mis en relation avec un conseiller."
    )
    # the agent's leg when the citizen was not reached
    not_reached: str = "Le rappel n'a pas abouti : le citoyen n'a pas pu être joint."

    def all(self) -> tuple[str, ...]:
        return tuple(str(value) for value in vars(self).values())


QUEUE_EXIT_TEXTS: Final = QueueExitTexts()


def tts_texts(menus: MenuSet, extra_texts: Iterable[str] = ()) -> dict[str, str]:
    """Sound name -> text of every prompt to synthesise (the dialplan's, menus, then ``extra_texts``).

    Raises :class:`PromptBuildError` listing every text that cannot be synthesised.
    """
    texts: dict[str, str] = dict(DIALPLAN_SOUNDS)
    texts.update((tts_name(text), text) for text in QUEUE_EXIT_TEXTS.all())
    problems: list[str] = []
    for use in prompt_uses(menus):
        problem = text_problem(use.text)
        if problem is not None:
            problems.append(f"{use.file}:{use.line}: {use.key}: {problem}")
        elif not use.recorded:
            texts[use.sound] = use.text
    for number, text in enumerate(extra_texts, 1):
        problem = text_problem(text)
        if problem is not None:
            problems.append(f"extra text {number} ({text[:40]!r}): {problem}")
        else:
            texts[tts_name(text)] = text
    if problems:
        raise PromptBuildError("\n".join(problems))
    return texts


def _run(tool: str, command: Sequence[str], text: str | None, what: str) -> None:
    """Run one synthesis program (``tool`` names it in errors), ``text`` on its stdin."""
    try:
        result = subprocess.run(
            command,
            input=text.encode() if text is not None else None,
            stdin=None if text is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PromptBuildError(f"{what}: {tool} failed: {exc}") from exc
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()[-500:]
        raise PromptBuildError(f"{what}: {tool} exited with status {result.returncode}: {detail}")


def synthesise(text: str, destination: Path, tools: Tools) -> None:
    """Speak ``text`` in French into ``destination`` (8 kHz 16-bit mono wav), atomically."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    what = f"{destination.name} ({text[:40]!r})"
    raw = converted = None
    try:
        fd, raw_name = tempfile.mkstemp(suffix=".wav", prefix=".espeak-", dir=destination.parent)
        os.close(fd)
        raw = Path(raw_name)
        fd, converted_name = tempfile.mkstemp(suffix=".wav", prefix=".sox-", dir=destination.parent)
        os.close(fd)
        converted = Path(converted_name)
        _run("espeak-ng", [tools.espeak, *ESPEAK_ARGS, "-w", str(raw), "--stdin"], text, what)
        if raw.stat().st_size <= 44:  # a bare RIFF header: no audio at all
            raise PromptBuildError(f"{what}: espeak-ng produced no audio")
        _run("sox", [tools.sox, str(raw), *SOX_OUTPUT_ARGS, str(converted)], None, what)
        converted.chmod(0o644)  # mkstemp makes it private; Asterisk runs as another user
        os.replace(converted, destination)
        converted = None
    finally:
        for leftover in (raw, converted):
            if leftover is not None:
                leftover.unlink(missing_ok=True)


def _stale(out_dir: Path, wanted: Iterable[str]) -> list[Path]:
    """The ``tts-*.wav`` files of ``out_dir/guichet`` that no prompt uses."""
    keep = {out_dir / f"{name}{SOUND_EXTENSION}" for name in wanted}
    return sorted(path for path in (out_dir / TTS_DIR).glob(f"tts-*{SOUND_EXTENSION}") if path not in keep)


def build_prompts(
    menus: MenuSet,
    out_dir: Path,
    *,
    extra_texts: Iterable[str] = (),
    jobs: int = 1,
    prune: bool = False,
    progress: TextIO | None = None,
    tools: Tools | None = None,
) -> BuildReport:
    """Synthesise every prompt text of ``menus`` (and ``extra_texts``) missing from ``out_dir``.

    ``jobs`` synthesis runs at most go on at once; each file built is reported on
    ``progress`` as it completes.  With ``prune``, ``tts-*.wav`` files no prompt
    uses are removed.  Raises :class:`PromptBuildError` (bad text, missing tool,
    failed synthesis: the files built before the failure are kept).
    """
    if not 1 <= jobs <= MAX_JOBS:
        raise PromptBuildError(f"jobs: from 1 to {MAX_JOBS}, not {jobs}")
    texts = tts_texts(menus, extra_texts)
    recorded = sorted({use.sound for use in prompt_uses(menus) if use.recorded})
    missing_recorded = [name for name in recorded if not (out_dir / f"{name}{SOUND_EXTENSION}").is_file()]
    todo = {
        name: text for name, text in texts.items() if not (out_dir / f"{name}{SOUND_EXTENSION}").is_file()
    }
    up_to_date = sorted(set(texts) - set(todo))
    built = _synthesise_all(todo, out_dir, tools or find_tools(), jobs, progress) if todo else []
    pruned: list[str] = []
    if prune:
        for path in _stale(out_dir, texts):
            path.unlink(missing_ok=True)
            pruned.append(f"{TTS_DIR}/{path.stem}")
    report = BuildReport(
        tuple(built), tuple(up_to_date), tuple(recorded), tuple(missing_recorded), tuple(pruned)
    )
    logger.info("prompts in %s: %s", out_dir, report.summary())
    return report


def _synthesise_all(
    todo: Mapping[str, str], out_dir: Path, tools: Tools, jobs: int, progress: TextIO | None
) -> list[str]:
    """Build ``todo`` (name -> text) with at most ``jobs`` runs at once; the names built, sorted."""
    built: list[str] = []
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=min(jobs, len(todo)), thread_name_prefix="prompts") as pool:
        futures = {
            pool.submit(synthesise, text, out_dir / f"{name}{SOUND_EXTENSION}", tools): name
            for name, text in todo.items()
        }
        for future in as_completed(futures):
            name = futures[future]
            try:
                future.result()
            except PromptBuildError as exc:
                failures.append(str(exc))
                continue
            built.append(name)
            if progress is not None:
                print(
                    f"[{len(built)}/{len(todo)}] {name}{SOUND_EXTENSION}: {todo[name][:60]!r}", file=progress
                )
    if failures:
        raise PromptBuildError(
            f"{len(failures)} prompt(s) failed ({len(built)} built):\n"
            + "\n".join(failures[:MAX_FAILURES_SHOWN])
            + (
                f"\n... and {len(failures) - MAX_FAILURES_SHOWN} more"
                if len(failures) > MAX_FAILURES_SHOWN
                else ""
            )
        )
    return sorted(built)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guichet prompts build", description=__doc__.splitlines()[0])
    parser.add_argument(
        "directory", nargs="?", type=Path, default=DEFAULT_DIR, help=f"menu folder (default: {DEFAULT_DIR})"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"sounds folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        help=f"synthesis runs at once, 1 to {MAX_JOBS} (default: {DEFAULT_JOBS})",
    )
    parser.add_argument("--prune", action="store_true", help="remove tts-*.wav files no prompt uses")
    return parser


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, extra_texts: Iterable[str] = ()
) -> int:
    """Build the prompts of a menu folder; print progress and a summary; 0 on success, 1 otherwise."""
    out = sys.stdout if out is None else out
    args = build_parser().parse_args(argv)
    try:
        menus = load_menus(args.directory, DEFAULT_QUEUES)
        report = build_prompts(
            menus, args.out, extra_texts=extra_texts, jobs=args.jobs, prune=args.prune, progress=out
        )
    except MenuValidationError as exc:
        for issue in exc.errors:
            print(issue, file=out)
        print(f"{len(exc.errors)} error(s) in the menus: see guichet menus check {args.directory}", file=out)
        return 1
    except PromptBuildError as exc:
        print(f"guichet prompts build: {exc}", file=out)
        return 1
    for name in report.missing_recorded:
        print(f"warning: recorded file missing: {args.out / name}{SOUND_EXTENSION}", file=out)
    print(f"{args.out}: {report.summary()}", file=out)
    return 0


class OnDemandPrompts:
    """Synthesise, at call time, a text no build could know in advance (when a service reopens).

    The file goes into the folder Asterisk plays from (the engine runs beside Asterisk, or
    shares that folder); a text already synthesised is never synthesised again.
    """

    def __init__(self, sounds_dir: Path, tools: Tools) -> None:
        self.sounds_dir = sounds_dir
        self.tools = tools

    async def speak(self, text: str) -> str:
        """The sound name of ``text``, synthesised first (in a thread) when its file is missing."""
        problem = text_problem(text)
        if problem is not None:
            raise PromptBuildError(f"cannot synthesise {text[:40]!r}: {problem}")
        name = tts_name(text)
        path = self.sounds_dir / f"{name}{SOUND_EXTENSION}"
        if not path.exists():
            await asyncio.get_running_loop().run_in_executor(None, synthesise, text, path, self.tools)
        return name
