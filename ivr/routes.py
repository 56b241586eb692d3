"""The explicit registry of the engine's AGI routes (no import side effects)."""

from __future__ import annotations

from typing import Final

from ivr.agi_server import RouteTable
from ivr.menu_engine import MenuEngine
from ivr.queue_exits import QueueExits

IVR_ROUTE: Final = "ivr"


def build_routes(menus: MenuEngine, exits: QueueExits | None = None) -> RouteTable:
    """Every AGI route the dialplan calls, by name: ``ivr`` runs the voice menus of ``menus``; with
    ``exits`` (built on the real callback keeper), ``overflow``, ``callback-offer``, ``callback-confirm``
    and ``callback-result``.  Without it those routes are absent: the dialplan's fail-safe steps run
    (the general queue after a service queue, the caller back in the queue after an exit key, an
    unconfirmed callback left bridged)."""
    routes = RouteTable()
    routes.add(IVR_ROUTE, menus.handle)
    if exits is not None:
        exits.register(routes)
    return routes
