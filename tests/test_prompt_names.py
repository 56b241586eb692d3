from __future__ import annotations

import re

from ivr.menus import Prompt
from ivr.prompt_names import sound_name, tts_name


def test_recorded_file_wins_over_the_text() -> None:
    assert sound_name(Prompt("Bonjour", file="custom/accueil")) == "custom/accueil"


def test_tts_name_depends_on_the_text_only_and_is_stable() -> None:
    name = tts_name("Bonjour et bienvenue")
    assert re.fullmatch(r"guichet/tts-[0-9a-f]{16}", name)
    assert tts_name("Bonjour et bienvenue") == name
    assert tts_name("Bonjour et bienvenue.") != name
    assert sound_name(Prompt("Bonjour et bienvenue")) == name
