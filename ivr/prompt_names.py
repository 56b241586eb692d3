"""The sound name Asterisk plays for a menu prompt, shared by the prompt builder and the menu engine.

A recorded file named in the menu wins.  Otherwise the text is synthesised once
into ``guichet/tts-<hash>``: the hash covers the text and the voice settings, so
editing one text rebuilds exactly one file and an unchanged text is never
synthesised again.

:func:`prompt_uses` lists every prompt of a menu set with the file, line and key
where it is written; :func:`prompt_issues` checks the texts (not empty, at most
:data:`MAX_TEXT_CHARS` characters) and, given the sounds folder, that every
sound exists: ``guichet menus check --sounds`` reports them before any call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from ivr.menus import (
    CallbackNode,
    HangupNode,
    InfoNode,
    MenuIssue,
    MenuNode,
    MenuSet,
    Node,
    Prompt,
    PromptNode,
    QueueNode,
    TransferNode,
)

# Bump when the synthesis settings change (voice, rate, sample rate): every file is rebuilt.
VOICE: Final = "espeak-ng:fr:s150:8000Hz:mono:v1"
TTS_DIR: Final = "guichet"


def tts_name(text: str) -> str:
    """``guichet/tts-<16 hex digits>`` for a French text (no extension, as Asterisk wants it)."""
    digest = hashlib.sha256(f"{VOICE}\n{text}".encode()).hexdigest()[:16]
    return f"{TTS_DIR}/tts-{digest}"


def sound_name(prompt: Prompt) -> str:
    """What STREAM FILE / GET DATA must play for ``prompt``."""
    return prompt.file if prompt.file else tts_name(prompt.text)


# --- Every prompt of a menu set, where it is written, and its checks -----------------

MAX_TEXT_CHARS: Final = 1000
SOUND_EXTENSION: Final = ".wav"  # the prompt builder's format; recorded files are looked up with it too


@dataclass(frozen=True)
class PromptUse:
    """One prompt of a menu file: where it is written (file, line, dotted key), its text and sound name."""

    file: Path
    line: int
    key: str
    text: str
    sound: str
    recorded: bool  # a file named in the menu, not synthesised


_PROMPTED: Final = (PromptNode, MenuNode, InfoNode, CallbackNode, QueueNode, TransferNode, HangupNode)


def _node_prompts(node: Node) -> Iterator[tuple[str, Prompt]]:
    """The (field, prompt) pairs of a node: its main prompt, a menu's no-input and invalid texts."""
    prompt = node.prompt if isinstance(node, _PROMPTED) else None
    if prompt is not None:
        yield ("file" if prompt.file else "text"), prompt
    if isinstance(node, MenuNode):
        if node.no_input is not None:
            yield "no_input", Prompt(node.no_input)
        if node.invalid is not None:
            yield "invalid", Prompt(node.invalid)


def _field_lines(path: Path) -> dict[str, int]:
    """``nodes.<name>.<field>`` -> 1-based line of the field's value (empty when unreadable)."""
    try:
        document = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    lines: dict[str, int] = {}
    if not isinstance(document, yaml.MappingNode):
        return lines
    for top_key, nodes in document.value:
        if top_key.value != "nodes" or not isinstance(nodes, yaml.MappingNode):
            continue
        for name, fields in nodes.value:
            if isinstance(fields, yaml.MappingNode):
                for field_key, value in fields.value:
                    lines[f"nodes.{name.value}.{field_key.value}"] = int(value.start_mark.line) + 1
    return lines


def prompt_uses(menus: MenuSet) -> list[PromptUse]:
    """Every prompt of every tree (one entry per place it is written), sorted by file and line."""
    uses: list[PromptUse] = []
    for tree in menus.trees.values():
        lines = _field_lines(tree.file)
        for node in tree.nodes.values():
            for field_name, prompt in _node_prompts(node):
                key = f"nodes.{node.name}.{field_name}"
                line = lines.get(key, node.line)
                uses.append(
                    PromptUse(tree.file, line, key, prompt.text, sound_name(prompt), bool(prompt.file))
                )
    return sorted(uses, key=lambda use: (str(use.file), use.line, use.key))


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be synthesised (None: it can)."""
    if not text.strip():
        return "empty prompt text"
    if len(text) > MAX_TEXT_CHARS:
        return (
            f"prompt text too long: {len(text)} characters (at most {MAX_TEXT_CHARS}); "
            "split it over several nodes"
        )
    control = next((c for c in text if ord(c) < 32 and c not in "\t\n\r"), None)
    if control is not None:
        return f"control character U+{ord(control):04X} in the prompt text"
    return None


def prompt_issues(menus: MenuSet, sounds: Path | None = None) -> list[MenuIssue]:
    """Text limits of every prompt; with ``sounds``, every sound missing as ``sounds/<name>.wav``."""
    issues: list[MenuIssue] = []
    for use in prompt_uses(menus):
        problem = text_problem(use.text)
        if problem is not None:
            issues.append(MenuIssue(str(use.file), use.line, use.key, problem))
        if sounds is not None and not (sounds / f"{use.sound}{SOUND_EXTENSION}").is_file():
            hint = "a recorded file: copy it there" if use.recorded else "run guichet prompts build"
            issues.append(
                MenuIssue(str(use.file), use.line, use.key, f"prompt sound missing: {use.sound} ({hint})")
            )
    return sorted(issues)
