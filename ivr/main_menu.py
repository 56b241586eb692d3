"""The built-in one-level voice menu: one key per service, the general queue otherwise.

It is the engine's ``ivr`` route until the menus-as-data of ``dialplans/`` take
over.  The handler is thin: it reads keys, asks the pure :func:`choose` which
queue and urgency they mean, and sets the ``GUICHET_*`` variables that the
dialplan reads.  Whatever happens (no key, wrong keys, an error), the call is
handed back with a queue: the general front office.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from guichet.names import GUICHET_IVR_DONE, GUICHET_PRIO, GUICHET_QUEUE, GUICHET_REASON
from ivr.agi_server import AgiSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    """Where a key sends the caller: a queue, an urgency (QUEUE_PRIO) and a reason code."""

    queue: str
    priority: int
    reason: str


GENERAL: Final = Choice("general", 0, "information-generale")
CHOICES: Final[dict[str, Choice]] = {
    "1": Choice("apa", 5, "apa"),
    "2": Choice("pmi", 5, "pmi"),
    "3": Choice("mdph", 5, "mdph"),
    "4": Choice("transport", 0, "transport-scolaire"),
    "5": Choice("rsa", 0, "rsa"),
    "0": GENERAL,
}
WELCOME_PROMPT: Final = "guichet/bienvenue"
MENU_PROMPT: Final = "guichet/menu-principal"
INVALID_PROMPT: Final = "guichet/choix-invalide"
MENU_TIMEOUT_MS: Final = 5000
MAX_TRIES: Final = 3


def choose(digits: str) -> Choice | None:
    """The service a key means, or None for a key the menu does not offer."""
    return CHOICES.get(digits)


async def main_menu(session: AgiSession) -> None:
    """Route ``ivr``: welcome, up to three tries at the menu, then hand the call back with a queue."""
    choice = GENERAL
    await session.answer()
    pressed = await session.stream_file(WELCOME_PROMPT, "".join(CHOICES))
    for _ in range(MAX_TRIES):
        digits = pressed or (await session.get_data(MENU_PROMPT, MENU_TIMEOUT_MS, 1))[0]
        pressed = None
        found = choose(digits)
        if found is not None:
            choice = found
            break
        if digits:
            await session.stream_file(INVALID_PROMPT)
    logger.info("call %s -> queue %s (priority %d)", session.channel, choice.queue, choice.priority)
    await session.set_variable(GUICHET_QUEUE, choice.queue)
    await session.set_variable(GUICHET_PRIO, str(choice.priority))
    await session.set_variable(GUICHET_REASON, choice.reason)
    await session.set_variable(GUICHET_IVR_DONE, "1")
