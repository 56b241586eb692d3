"""The explicit registry of the engine's AGI routes (no import side effects)."""

from __future__ import annotations

from typing import Final

from ivr.agi_server import RouteTable
from ivr.main_menu import main_menu

IVR_ROUTE: Final = "ivr"


def build_routes() -> RouteTable:
    """Every AGI route the dialplan calls, by name."""
    routes = RouteTable()
    routes.add(IVR_ROUTE, main_menu)
    return routes
