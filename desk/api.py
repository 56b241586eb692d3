"""The routing JSON API under ``/api/``: sessions, live snapshot, agent actions, queued callbacks.

Every response is JSON (errors too: ``{"error": <code>, "message": <French text>}``). The live
snapshot is read from the state store, so every engine node serves the same data. Roles: an
``agent`` reads everything and acts on its own agent only; ``supervisor`` and ``admin`` act on
any agent. State-changing requests must be ``application/json`` (a cross-site HTML form cannot
send that, and the session cookie is ``SameSite=Strict``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from desk.auth import LOGIN, MAX_PASSWORD_CHARS, LoginThrottle, SessionSigner, User, UserBook
from routing.agents import (
    AgentActionFailed,
    AgentActions,
    AgentError,
    AsteriskUnavailable,
    InvalidReason,
    NotLoggedIn,
    UnknownAgent,
)
from routing.callbacks import QueuedCallback, QueuedCallbacks
from routing.mirror import COUNTER_NAMES, COUNTERS_KIND
from routing.state import AgentState, CallInProgress, StateStore, WaitingCaller

log = logging.getLogger(__name__)

SESSION_COOKIE: Final = "guichet_session"
JSON_TYPE: Final = "application/json"
MAX_BODY_BYTES: Final = 64 * 1024
AGENT_ACTIONS: Final = ("login", "logout", "pause", "unpause")
# The member interface prefix of agents in the live model (routing.state.AgentState.agent).
_PJSIP: Final = "PJSIP/"


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What the handlers use; one per application (see :func:`desk.app.build_app`)."""

    store: StateStore
    actions: AgentActions
    callbacks: QueuedCallbacks
    users: UserBook
    signer: SessionSigner
    throttle: LoginThrottle
    clock: Callable[[], float]  # epoch seconds
    secure_cookies: bool
    # scrypt costs CPU and 16 MiB a check: at most this many at once (many logins at once wait).
    password_checks: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))


CONTEXT: Final = web.AppKey("guichet_api", ApiContext)


class ApiError(Exception):
    """An error response: HTTP status, machine code, French message for people."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(data, ensure_ascii=False),
        status=status,
        content_type=JSON_TYPE,
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", **(headers or {})},
    )


def _error_body(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


# HTTP errors raised by aiohttp itself (unknown route, wrong method, body too large...).
_HTTP_CODES: Final = {
    404: ("not_found", "Ressource introuvable."),
    405: ("method_not_allowed", "Méthode non autorisée pour cette ressource."),
    413: ("payload_too_large", "Requête trop volumineuse."),
}


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure becomes a JSON error response."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(_error_body(exc.code, exc.message), exc.status, exc.headers)
    except web.HTTPException as exc:
        code, message = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return json_response(_error_body(code, message), exc.status, headers)
    except Exception:
        log.exception("web API: %s %s failed", request.method, request.path)
        return json_response(_error_body("internal", "Erreur interne du serveur."), 500)


@web.middleware
async def json_only_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """POST, PUT, PATCH need ``Content-Type: application/json`` (no cross-site form can send it)."""
    if request.method in ("POST", "PUT", "PATCH") and request.content_type != JSON_TYPE:
        raise ApiError(415, "unsupported_media_type", "Le corps de la requête doit être en application/json.")
    return await handler(request)


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object sent (an empty body is an empty object); 400 otherwise."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)  # UTF-8 (or -16/-32 with a BOM), as RFC 8259 allows
    except ValueError:  # also invalid UTF-8
        raise ApiError(400, "bad_request", "Corps JSON invalide.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "Le corps doit être un objet JSON.")
    return data


def _string(data: Mapping[str, Any], key: str, max_chars: int) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ApiError(400, "bad_request", f"Le champ « {key} » (texte) est obligatoire.")
    if len(value) > max_chars:
        raise ApiError(400, "bad_request", f"Le champ « {key} » dépasse {max_chars} caractères.")
    return value


# --- sessions ----------------------------------------------------------------------------------


def current_user(request: web.Request) -> tuple[User, float]:
    """The signed-in user and their session's expiry; 401 without a valid session."""
    ctx = request.app[CONTEXT]
    token = request.cookies.get(SESSION_COOKIE, "")
    session = ctx.signer.verify(token) if token else None
    user = ctx.users.get(session.login) if session is not None else None
    if session is None or user is None:
        raise ApiError(401, "unauthenticated", "Connexion requise.")
    return user, session.expires_at


def _who(user: User, expires_at: float) -> dict[str, Any]:
    return {"login": user.login, "role": user.role, "agent": user.agent, "expires_at": expires_at}


async def create_session(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    data = await _body(request)
    login = _string(data, "login", 64)
    password = _string(data, "password", MAX_PASSWORD_CHARS)
    if not LOGIN.fullmatch(login):
        raise ApiError(401, "bad_credentials", "Identifiant ou mot de passe incorrect.")
    wait = ctx.throttle.begin(login)
    if wait:
        raise ApiError(
            429,
            "too_many_attempts",
            "Trop de tentatives : réessayez plus tard.",
            {"Retry-After": str(max(1, round(wait)))},
        )
    user = None
    try:
        async with ctx.password_checks:
            user = await asyncio.to_thread(ctx.users.authenticate, login, password)
    finally:
        ctx.throttle.end(login, user is not None)
    if user is None:
        log.info("web login refused for %r", login)
        raise ApiError(401, "bad_credentials", "Identifiant ou mot de passe incorrect.")
    token, session = ctx.signer.issue(user.login)
    log.info("web login: %s (%s)", user.login, user.role)
    response = json_response(_who(user, session.expires_at))
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(ctx.signer.ttl_s),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=ctx.secure_cookies,
    )
    return response


async def get_session(request: web.Request) -> web.Response:
    return json_response(_who(*current_user(request)))


async def delete_session(request: web.Request) -> web.Response:
    """Log out: the cookie is cleared (works without a valid session too)."""
    response = json_response({"logged_out": True})
    response.del_cookie(
        SESSION_COOKIE, path="/", samesite="Strict", secure=request.app[CONTEXT].secure_cookies
    )
    return response


# --- live snapshot -----------------------------------------------------------------------------


def _caller(caller: WaitingCaller, position: int, now: float) -> dict[str, Any]:
    return {
        "position": position,
        "uniqueid": caller.uniqueid,
        "channel": caller.channel,
        "caller_number": caller.caller_number,
        "caller_name": caller.caller_name,
        "priority": caller.priority,
        "priority_reason": caller.priority_reason,
        "joined_at": caller.joined_at,
        "waited_s": max(0.0, round(now - caller.joined_at, 1)),
        "service": caller.service,
        "urgency": caller.urgency,
        "reason": caller.reason,
        "citizen_id": caller.citizen_id,
        "contact_id": caller.contact_id,
    }


def _agent(agent: AgentState, known: Mapping[str, Any]) -> dict[str, Any]:
    agent_id = agent.agent.removeprefix(_PJSIP)
    return {
        "id": agent_id if agent_id in known else None,
        "interface": agent.agent,
        "name": agent.name,
        "state": agent.state,
        "paused_reason": agent.paused_reason,
        "queues": list(agent.queues),
        "since": agent.since,
    }


def _call(call: CallInProgress, now: float) -> dict[str, Any]:
    return {
        "uniqueid": call.uniqueid,
        "queue": call.queue,
        "agent": call.agent,
        "caller_number": call.caller_number,
        "caller_name": call.caller_name,
        "citizen_id": call.citizen_id,
        "contact_id": call.contact_id,
        "reason": call.reason,
        "started_at": call.started_at,
        "duration_s": max(0.0, round(now - call.started_at, 1)),
    }


def _counters(document: str | None) -> dict[str, int]:
    """A queue's counters as the AMI consumer last wrote them (all 0 before it counted anything)."""
    counted = json.loads(document) if document is not None else {}
    return {name: int(counted.get(name, 0)) for name in COUNTER_NAMES}


async def get_live(request: web.Request) -> web.Response:
    current_user(request)
    ctx = request.app[CONTEXT]
    snapshot = await ctx.store.snapshot()
    counters = await ctx.store.documents(COUNTERS_KIND)
    now = ctx.clock()
    skills = {q for a in ctx.actions.agents.values() for q in a.skills}
    names = sorted(set(snapshot.callers) | skills | set(counters))
    queues = []
    for name in names:
        callers = snapshot.callers.get(name, ())
        queues.append(
            {
                "name": name,
                "waiting": [_caller(c, i, now) for i, c in enumerate(callers, 1)],
                "longest_wait_s": max((round(now - c.joined_at, 1) for c in callers), default=0.0),
                "counters": _counters(counters.get(name)),
            }
        )
    agents = [_agent(a, ctx.actions.agents) for _, a in sorted(snapshot.agents.items())]
    calls = [_call(c, now) for c in sorted(snapshot.calls.values(), key=lambda c: c.started_at)]
    return json_response({"now": now, "queues": queues, "agents": agents, "calls": calls})


# --- agent actions -----------------------------------------------------------------------------


def _agent_error(exc: AgentError) -> ApiError:
    if isinstance(exc, UnknownAgent):
        return ApiError(404, "unknown_agent", "Agent inconnu.")
    if isinstance(exc, InvalidReason):
        return ApiError(400, "bad_reason", f"Motif de pause invalide : {exc}")
    if isinstance(exc, NotLoggedIn):
        return ApiError(409, "not_logged_in", "L'agent n'est connecté à aucune file.")
    if isinstance(exc, AgentActionFailed):
        where = f" (file {exc.queue})" if exc.queue else ""
        return ApiError(502, "asterisk_refused", f"Asterisk a refusé {exc.action}{where} : {exc.message}")
    if isinstance(exc, AsteriskUnavailable):
        return ApiError(503, "asterisk_unavailable", "Asterisk ne répond pas ; réessayez.")
    return ApiError(400, "bad_request", str(exc))


async def agent_action(request: web.Request) -> web.Response:
    user, _ = current_user(request)
    ctx = request.app[CONTEXT]
    agent_id = request.match_info["agent_id"]
    action = request.path.rsplit("/", 1)[-1]  # one route per action (see ROUTES)
    if user.role == "agent" and agent_id != user.agent:
        raise ApiError(403, "forbidden", "Un agent n'agit que sur son propre poste.")
    data = await _body(request)
    result: dict[str, Any] = {"agent": agent_id, "action": action}
    try:
        if action == "login":
            result["queues"] = list(await ctx.actions.login(agent_id))
        elif action == "logout":
            result["queues"] = list(await ctx.actions.logout(agent_id))
        elif action == "pause":
            result["reason"] = await ctx.actions.pause(agent_id, _string(data, "reason", 1000))
        else:
            await ctx.actions.unpause(agent_id)
    except AgentError as exc:
        raise _agent_error(exc) from exc
    log.info("web: %s made agent %s %s", user.login, agent_id, action)
    return json_response(result)


# --- queued callbacks ----------------------------------------------------------------------------


def _callback(callback: QueuedCallback) -> dict[str, Any]:
    request = callback.request
    return {
        "id": callback.id,
        "state": callback.state,
        "attempts": callback.attempts,
        "outcomes": [o.value for o in callback.outcomes],
        "next_attempt_at": callback.next_attempt_at,
        "merged": callback.merged,
        "agent": callback.agent,
        "agent_answered_at": callback.agent_answered_at,
        "number": request.number,
        "queue": request.queue,
        "priority": request.priority,
        "joined_at": request.joined_at,
        "caller_name": request.caller_name,
        "citizen_id": request.citizen_id,
        "contact_id": request.contact_id,
        "reason": request.reason,
    }


async def get_callbacks(request: web.Request) -> web.Response:
    current_user(request)
    pending = await request.app[CONTEXT].callbacks.pending()
    return json_response({"callbacks": [_callback(c) for c in pending]})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# (method, path, handler): the application's routes; desk/openapi.py describes each of them.
ROUTES: Final[tuple[tuple[str, str, Handler], ...]] = (
    ("POST", "/api/session", create_session),
    ("GET", "/api/session", get_session),
    ("DELETE", "/api/session", delete_session),
    ("GET", "/api/live", get_live),
    *(("POST", f"/api/agents/{{agent_id}}/{action}", agent_action) for action in AGENT_ACTIONS),
    ("GET", "/api/callbacks", get_callbacks),
)
