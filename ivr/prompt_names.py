"""The sound name Asterisk plays for a menu prompt, shared by the prompt builder and the menu engine.

A recorded file named in the menu wins.  Otherwise the text is synthesised once
into ``guichet/tts-<hash>``: the hash covers the text and the voice settings, so
editing one text rebuilds exactly one file and an unchanged text is never
synthesised again.
"""

from __future__ import annotations

import hashlib
from typing import Final

from ivr.menus import Prompt

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
