"""The OpenAPI 3.1 document of the routing API (served at ``GET /api/openapi.json``).

A test checks that every route of the application is described here and that nothing else is.
"""

from __future__ import annotations

from typing import Any, Final

from desk.api import AGENT_ACTIONS, SESSION_COOKIE
from routing.mirror import COUNTER_NAMES

OPENAPI_PATH: Final = "/api/openapi.json"

_ERRORS: Final = {
    "400": "Bad input: invalid JSON, a missing field, a refused pause reason.",
    "401": "No valid session (missing, expired or tampered cookie), or wrong credentials.",
    "403": "The role does not allow this (an agent acts on its own agent only).",
    "404": "Unknown agent or route.",
    "409": "The agent is logged in to no queue (pause / unpause).",
    "415": "A POST body must be application/json.",
    "429": "Too many failed logins for this login: retry after Retry-After seconds.",
    "502": "Asterisk refused the action (the message names the action and the queue).",
    "503": "Asterisk did not answer (AMI down or timed out): the action may not have happened.",
    "500": "Unexpected server error (logged; no detail is given).",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(properties: dict[str, Any], required: tuple[str, ...] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
    }


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


_STR: Final = {"type": "string"}
_NUM: Final = {"type": "number"}
_INT: Final = {"type": "integer"}
_EPOCH: Final = {"type": "number", "description": "epoch seconds"}


def _operation(summary: str, ok: dict[str, Any], errors: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    for status in (*errors, "500"):
        responses[status] = _json(_ref("Error"), _ERRORS[status])
    operation: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    return operation


_SCHEMAS: Final[dict[str, Any]] = {
    "Error": _object(
        {
            "error": {**_STR, "description": "machine code, e.g. unauthenticated, asterisk_refused"},
            "message": {**_STR, "description": "French text for people"},
        }
    ),
    "Credentials": _object({"login": _STR, "password": _STR}),
    "Session": _object(
        {
            "login": _STR,
            "role": {"type": "string", "enum": ["agent", "supervisor", "admin"]},
            "agent": {**_nullable("string"), "description": "the agent id of an agent user"},
            "expires_at": _EPOCH,
        }
    ),
    "LoggedOut": _object({"logged_out": {"type": "boolean"}}),
    "WaitingCaller": _object(
        {
            "position": {**_INT, "description": "1 = next served"},
            "uniqueid": _STR,
            "channel": _STR,
            "caller_number": _STR,
            "caller_name": {**_STR, "description": "verbatim (quotes, HTML, newlines kept)"},
            "priority": _INT,
            "priority_reason": {**_STR, "description": "why this priority (aging), in French"},
            "joined_at": _EPOCH,
            "waited_s": _NUM,
            "service": _STR,
            "urgency": _STR,
            "reason": _nullable("string"),
            "citizen_id": _nullable("string"),
            "contact_id": _nullable("string"),
        }
    ),
    "Queue": _object(
        {
            "name": _STR,
            "waiting": {"type": "array", "items": _ref("WaitingCaller"), "description": "serving order"},
            "longest_wait_s": _NUM,
            "counters": {
                **_object({name: _INT for name in COUNTER_NAMES}),
                "description": "calls counted by the live model since the AMI consumer started: each offered "
                "call ends in one outcome at most (overflowed: queue timeout; exited: left with a key; "
                "unresolved: left while AMI was down)",
            },
        }
    ),
    "Agent": _object(
        {
            "id": {**_nullable("string"), "description": "configured agent id (null: not configured)"},
            "interface": _STR,
            "name": _STR,
            "state": {**_STR, "description": "available, ringing, talking, wrapup, paused, unavailable..."},
            "paused_reason": _STR,
            "queues": {"type": "array", "items": _STR},
            "since": _EPOCH,
        }
    ),
    "Call": _object(
        {
            "uniqueid": _STR,
            "queue": _STR,
            "agent": _STR,
            "caller_number": _STR,
            "caller_name": _STR,
            "citizen_id": _nullable("string"),
            "contact_id": _nullable("string"),
            "reason": _nullable("string"),
            "started_at": _EPOCH,
            "duration_s": _NUM,
        }
    ),
    "Live": _object(
        {
            "now": _EPOCH,
            "queues": {"type": "array", "items": _ref("Queue")},
            "agents": {"type": "array", "items": _ref("Agent")},
            "calls": {"type": "array", "items": _ref("Call")},
        }
    ),
    "PauseRequest": _object({"reason": {**_STR, "maxLength": 80, "description": "no control characters"}}),
    "AgentActionResult": _object(
        {
            "agent": _STR,
            "action": {"type": "string", "enum": list(AGENT_ACTIONS)},
            "queues": {"type": "array", "items": _STR, "description": "login / logout: the skill queues"},
            "reason": {**_STR, "description": "pause: the reason as stored"},
        },
        required=("agent", "action"),
    ),
    "Callback": _object(
        {
            "id": _STR,
            "state": {"type": "string", "enum": ["waiting", "dialing", "done", "failed"]},
            "attempts": _INT,
            "outcomes": {"type": "array", "items": _STR},
            "next_attempt_at": _nullable("number"),
            "merged": _INT,
            "agent": {**_nullable("string"), "description": "while dialing: the agent's interface rung"},
            "agent_answered_at": {**_nullable("number"), "description": "while dialing: epoch seconds"},
            "number": _STR,
            "queue": _STR,
            "priority": _INT,
            "joined_at": _EPOCH,
            "caller_name": _STR,
            "citizen_id": _nullable("string"),
            "contact_id": _nullable("string"),
            "reason": _nullable("string"),
        }
    ),
    "Callbacks": _object({"callbacks": {"type": "array", "items": _ref("Callback")}}),
}

_AGENT_ID: Final = {
    "name": "agent_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,39}$"},
}
_JSON_BODY_NOTE: Final = "Content-Type must be application/json (an empty body is allowed)."


def _agent_path(action: str) -> dict[str, Any]:
    body: dict[str, Any] = {"required": False, "description": _JSON_BODY_NOTE}
    errors: tuple[str, ...] = ("401", "403", "404", "415", "502", "503")
    if action == "pause":
        body = {"required": True, "content": {"application/json": {"schema": _ref("PauseRequest")}}}
        errors = ("400", *errors)
    if action in ("pause", "unpause"):
        errors = (*errors, "409")
    summaries = {
        "login": "Log the agent in to every queue of its skills (idempotent; all or nothing).",
        "logout": "Remove the agent from every queue of its skills (idempotent).",
        "pause": "Pause the agent in every queue, with a reason.",
        "unpause": "Unpause the agent in every queue.",
    }
    return {
        "post": _operation(
            summaries[action],
            _json(_ref("AgentActionResult"), "Done."),
            errors,
            parameters=[_AGENT_ID],
            requestBody=body,
        )
    }


def openapi_document() -> dict[str, Any]:
    """The whole document (a new dict each time)."""
    paths: dict[str, Any] = {
        "/api/session": {
            "post": _operation(
                "Log in: sets the HttpOnly, SameSite=Strict session cookie.",
                _json(_ref("Session"), "Logged in."),
                ("400", "401", "415", "429"),
                security=[],
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Credentials")}},
                },
            ),
            "get": _operation("Who am I.", _json(_ref("Session"), "The current session."), ("401",)),
            "delete": _operation(
                "Log out: clears the session cookie.",
                _json(_ref("LoggedOut"), "Logged out."),
                (),
                security=[],
            ),
        },
        "/api/live": {
            "get": _operation(
                "Live snapshot: waiting callers per queue in serving order, agents, calls in progress.",
                _json(_ref("Live"), "The snapshot."),
                ("401",),
            )
        },
        **{f"/api/agents/{{agent_id}}/{action}": _agent_path(action) for action in AGENT_ACTIONS},
        "/api/callbacks": {
            "get": _operation(
                "Queued callbacks: pending ones in serving order, then today's finished ones.",
                _json(_ref("Callbacks"), "The callbacks."),
                ("401",),
            )
        },
        OPENAPI_PATH: {
            "get": _operation("This document.", {"description": "The OpenAPI document."}, (), security=[])
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Guichet routing API",
            "version": "1",
            "description": (
                "Live state, agents' presence and queued callbacks. Every response is JSON. Roles: agent "
                "(reads; acts on its own agent only), supervisor and admin (act on any agent)."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"session": []}],
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE}},
        },
    }
