"""The explicit registry of the engine's AGI routes (no import side effects)."""

from __future__ import annotations

from typing import Final

from ivr.agi_server import RouteTable
from ivr.menu_engine import MenuEngine

IVR_ROUTE: Final = "ivr"


def build_routes(menus: MenuEngine) -> RouteTable:
    """Every AGI route the dialplan calls, by name: ``ivr`` runs the voice menus of ``menus``."""
    routes = RouteTable()
    routes.add(IVR_ROUTE, menus.handle)
    return routes
