"""The web application factory and how the engine starts it.

``build_app`` takes everything it serves (the live state store, the agent actions, the queued
callbacks, the users, the session signer, a clock) and owns none of them: the engine opens and
closes the store and the AMI connection. ``build_app_from_settings`` reads the users file and the
session key (a mistake fails at start-up with the file and the key); ``start_http`` binds it
(127.0.0.1 by default, from ``[http]``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from aiohttp import web

from desk.api import (
    CONTEXT,
    MAX_BODY_BYTES,
    ROUTES,
    ApiContext,
    error_middleware,
    json_only_middleware,
    json_response,
)
from desk.auth import LoginThrottle, SessionSigner, UserBook, load_users, session_key
from desk.openapi import OPENAPI_PATH, openapi_document
from guichet.config import Settings
from routing.agents import AgentActions, AmiSender
from routing.callbacks import QueuedCallbacks
from routing.state import StateStore

__all__ = ["bound_port", "build_app", "build_app_from_settings", "start_http"]

log = logging.getLogger(__name__)


async def _openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


def build_app(
    *,
    store: StateStore,
    actions: AgentActions,
    callbacks: QueuedCallbacks,
    users: UserBook,
    signer: SessionSigner,
    clock: Callable[[], float] = time.time,
    throttle: LoginThrottle | None = None,
    secure_cookies: bool = False,
) -> web.Application:
    """The JSON API under ``/api/``. ``clock``: epoch seconds (waits, and the login throttle).

    ``secure_cookies``: mark the session cookie Secure (set it when served over HTTPS).
    """
    app = web.Application(
        middlewares=[error_middleware, json_only_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[CONTEXT] = ApiContext(
        store=store,
        actions=actions,
        callbacks=callbacks,
        users=users,
        signer=signer,
        throttle=throttle or LoginThrottle(clock),
        clock=clock,
        secure_cookies=secure_cookies,
    )
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_get(OPENAPI_PATH, _openapi)
    return app


def build_app_from_settings(
    settings: Settings,
    *,
    store: StateStore,
    ami: AmiSender,
    callbacks: QueuedCallbacks,
    clock: Callable[[], float] = time.time,
    environ: Mapping[str, str] | None = None,
) -> web.Application:
    """The app as ``guichet serve`` runs it; ConfigError for a wrong users file or session key."""
    http = settings.http
    if http.users_file:
        users = load_users(Path(http.users_file), settings.agents)
    else:
        log.warning("[http] users_file is not set: the web API refuses every login")
        users = UserBook()
    signer = SessionSigner(session_key(http, settings.source, environ), http.session_ttl_s, clock)
    return build_app(
        store=store,
        actions=AgentActions(ami, settings),
        callbacks=callbacks,
        users=users,
        signer=signer,
        clock=clock,
    )


async def start_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on ``host:port`` (0: a free port); ``await runner.cleanup()`` stops it."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("web API listening on %s", ", ".join(f"{a[0]}:{a[1]}" for a in runner.addresses))
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port ``runner`` listens on (useful after asking for port 0)."""
    return int(runner.addresses[0][1])
