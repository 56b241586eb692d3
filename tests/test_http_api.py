"""The routing JSON API (desk/) on a real aiohttp server bound to 127.0.0.1:0.

Live data comes from a MemoryStateStore filled with records; agent actions go through a real
AgentActions over AMI to the simulated PBX (tests/test_agents.py's rig); the clock is a settable
one, so session expiry and the login lock are tested without waiting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from io import StringIO
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from desk.api import CONTEXT, ROUTES, SESSION_COOKIE
from desk.app import bound_port, build_app, build_app_from_settings, start_http
from desk.auth import (
    SESSION_KEY_ENV,
    SessionSigner,
    User,
    UserBook,
    add_user,
    hash_password,
    load_users,
    session_key,
    verify_password,
)
from desk.openapi import OPENAPI_PATH
from guichet import cli
from guichet.config import ConfigError, HttpSettings, Settings
from routing.agents import CurrentAmi
from routing.callbacks import CallbackOutcome, QueuedCallback, QueuedCallbackRequest
from routing.mirror import COUNTERS_KIND
from routing.state import AgentState, CallInProgress, MemoryStateStore, StateStore, WaitingCaller
from routing.state_redis import RedisStateStore
from tests.redis_server import RedisServer
from tests.test_agents import AGENTS, Rig, open_rig, settings_with

NOW = 1_800_000_000.0
TTL = 3600.0
KEY = b"k" * 32
TRICKY_NAME = 'Zoé "la <b>Reine</b>" \n\t& Cie \\ </script>'
PASSWORDS = {"marie": "mot de passe de Marie", "chef": "chef-secret", "root": "admin-secret"}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Keeper:
    """A queued-callback keeper holding a fixed list (the API only reads pending())."""

    callbacks: list[QueuedCallback] = field(default_factory=list)
    broken: bool = False

    async def keep(self, request: QueuedCallbackRequest) -> str:
        raise NotImplementedError

    async def record_outcome(self, callback_id: str, outcome: CallbackOutcome, detail: str = "") -> None:
        raise NotImplementedError

    async def pending(self) -> Sequence[QueuedCallback]:
        if self.broken:
            raise RuntimeError("database password=hunter2 unreachable")
        return list(self.callbacks)


def users() -> UserBook:
    return UserBook(
        {
            "marie": User("marie", "agent", "agent-101", hash_password(PASSWORDS["marie"])),
            "chef": User("chef", "supervisor", None, hash_password(PASSWORDS["chef"])),
            "root": User("root", "admin", None, hash_password(PASSWORDS["root"])),
        }
    )


async def filled_store(store: StateStore | None = None) -> StateStore:
    store = store if store is not None else MemoryStateStore()
    for uniqueid, priority, joined, name in (
        ("1.1", 0, NOW - 300, "Ancien"),
        ("1.2", 20, NOW - 60, TRICKY_NAME),
        ("1.3", 20, NOW - 120, "Urgent plus ancien"),
    ):
        await store.put_caller(
            WaitingCaller(
                uniqueid=uniqueid,
                channel=f"PJSIP/citizen-{uniqueid}",
                queue="apa",
                caller_number="0612345678",
                caller_name=name,
                priority=priority,
                joined_at=joined,
                service="apa",
                urgency="urgent" if priority else "normal",
                citizen_id="c-42" if priority else None,
                contact_id="k-7",
                reason="apa-dossier",
                priority_reason="attente longue : +10" if priority else "",
            )
        )
    await store.put_agent(
        AgentState("PJSIP/agent-101", "Marie", "paused", "Réunion « équipe »", ("apa",), NOW - 30)
    )
    await store.put_call(
        CallInProgress("2.1", "pmi", "PJSIP/agent-102", "0102030405", NOW - 45, caller_name=TRICKY_NAME)
    )
    await store.put_document(COUNTERS_KIND, "apa", json.dumps({"offered": 9, "answered": 5, "abandoned": 1}))
    return store


CALLBACK = QueuedCallback(
    id="cb-1",
    request=QueuedCallbackRequest(
        number="+33612345678", queue="mdph", priority=10, joined_at=NOW - 900, caller_name=TRICKY_NAME
    ),
    state="waiting",
    attempts=1,
    outcomes=(CallbackOutcome.NO_ANSWER,),
    next_attempt_at=NOW + 600,
)


@dataclass
class Api:
    rig: Rig
    clock: Clock
    base: str
    http: aiohttp.ClientSession
    app: Any

    async def call(
        self, method: str, path: str, *, token: str | None = None, body: Any = None, **kwargs: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Cookie"] = f"{SESSION_COOKIE}={token}"
        if body is not None:
            kwargs["data"] = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        async with self.http.request(method, self.base + path, headers=headers, **kwargs) as response:
            assert response.content_type == "application/json", (method, path, response.status)
            return response.status, await response.json(), response

    async def login(self, login: str) -> str:
        status, _, response = await self.call(
            "POST", "/api/session", body={"login": login, "password": PASSWORDS[login]}
        )
        assert status == 200
        return response.cookies[SESSION_COOKIE].value


@contextlib.asynccontextmanager
async def open_api() -> AsyncIterator[Api]:
    clock = Clock()
    async with open_rig() as rig:
        app = build_app(
            store=await filled_store(),
            actions=rig.actions,
            callbacks=Keeper([CALLBACK]),
            users=users(),
            signer=SessionSigner(KEY, TTL, clock),
            clock=clock,
        )
        runner = await start_http(app, "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
                yield Api(rig, clock, f"http://127.0.0.1:{bound_port(runner)}", http, app)
        finally:
            await runner.cleanup()


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with open_api() as opened:
        yield opened


def set_cookie(response: aiohttp.ClientResponse) -> Any:
    [header] = response.headers.getall("Set-Cookie")
    cookie = SimpleCookie()
    cookie.load(header)
    return cookie[SESSION_COOKIE]


async def test_login_sets_a_strict_httponly_cookie_and_the_session_says_who(api: Api) -> None:
    status, body, response = await api.call(
        "POST", "/api/session", body={"login": "marie", "password": PASSWORDS["marie"]}
    )
    assert status == 200
    assert body == {"login": "marie", "role": "agent", "agent": "agent-101", "expires_at": NOW + TTL}
    cookie = set_cookie(response)
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert cookie["max-age"] == str(int(TTL))
    assert response.headers["Cache-Control"] == "no-store"
    status, body, _ = await api.call("GET", "/api/session", token=cookie.value)
    assert (status, body["login"], body["role"]) == (200, "marie", "agent")
    status, body, response = await api.call("DELETE", "/api/session", token=cookie.value)
    assert (status, body) == (200, {"logged_out": True})
    cleared = set_cookie(response)
    assert cleared.value == "" and cleared["max-age"] == "0"


async def test_wrong_passwords_are_refused_then_the_login_is_locked_for_a_while(api: Api) -> None:
    for login in ("marie", "personne"):
        status, body, _ = await api.call("POST", "/api/session", body={"login": login, "password": "faux"})
        assert (status, body["error"]) == (401, "bad_credentials")
    for _ in range(4):  # five consecutive failures for marie in all
        await api.call("POST", "/api/session", body={"login": "marie", "password": "faux"})
    right = {"login": "marie", "password": PASSWORDS["marie"]}
    status, body, response = await api.call("POST", "/api/session", body=right)
    assert (status, body["error"]) == (429, "too_many_attempts")
    assert int(response.headers["Retry-After"]) >= 1
    assert "Set-Cookie" not in response.headers
    assert (await api.call("POST", "/api/session", body={"login": "chef", "password": PASSWORDS["chef"]}))[
        0
    ] == 200
    api.clock.now += 3600
    status, _, _ = await api.call("POST", "/api/session", body=right)
    assert status == 200


async def test_every_route_needs_a_session_except_login_logout_and_the_document(api: Api) -> None:
    public = {("POST", "/api/session"), ("DELETE", "/api/session")}
    for method, path, _ in ROUTES:
        if (method, path) in public:
            continue
        concrete = path.replace("{agent_id}", "agent-101")
        body = {"reason": "x"} if method == "POST" else None
        status, answer, _ = await api.call(method, concrete, body=body)
        assert (status, answer["error"]) == (401, "unauthenticated"), (method, path)
    assert api.rig.members("apa") == {}  # no login happened
    assert (await api.call("GET", OPENAPI_PATH))[0] == 200


async def test_expired_tampered_and_foreign_tokens_are_refused(api: Api) -> None:
    token = await api.login("marie")
    payload, signature = token.split(".")
    forged_payload = SessionSigner(b"x" * 32, TTL, api.clock).issue("chef")[0].split(".")[0]
    foreign = SessionSigner(b"x" * 32, TTL, api.clock).issue("chef")[0]
    for bad in (
        f"{forged_payload}.{signature}",
        foreign,
        f"{payload}.",
        payload,
        "n'importe quoi",
        f"{payload}.{signature}x",
    ):
        status, body, _ = await api.call("GET", "/api/session", token=bad)
        assert (status, body["error"]) == (401, "unauthenticated"), bad
    assert (await api.call("GET", "/api/session", token=token))[0] == 200
    api.clock.now += TTL + 1
    status, body, _ = await api.call("GET", "/api/live", token=token)
    assert (status, body["error"]) == (401, "unauthenticated")


async def test_a_token_of_a_user_no_longer_in_the_users_file_is_refused() -> None:
    async with open_api() as api:
        token = await api.login("chef")
    clock = Clock()
    async with open_rig() as rig:
        app = build_app(
            store=MemoryStateStore(),
            actions=rig.actions,
            callbacks=Keeper(),
            users=UserBook({}),
            signer=SessionSigner(KEY, TTL, clock),  # same key: another node, the user removed
            clock=clock,
        )
        runner = await start_http(app, "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{bound_port(runner)}/api/session"
                async with http.get(url, headers={"Cookie": f"{SESSION_COOKIE}={token}"}) as response:
                    assert response.status == 401
        finally:
            await runner.cleanup()


async def test_live_snapshot_in_serving_order_with_names_intact(api: Api) -> None:
    token = await api.login("marie")
    status, live, _ = await api.call("GET", "/api/live", token=token)
    assert status == 200
    assert live["now"] == NOW
    queues = {q["name"]: q for q in live["queues"]}
    assert set(queues) == {"apa", "pmi", "accueil", "transport"}  # waiting callers + agents' skills
    apa = queues["apa"]
    assert [c["uniqueid"] for c in apa["waiting"]] == ["1.3", "1.2", "1.1"]
    assert [c["position"] for c in apa["waiting"]] == [1, 2, 3]
    assert apa["longest_wait_s"] == 300.0
    assert apa["counters"] == {
        "offered": 9, "answered": 5, "abandoned": 1, "overflowed": 0, "exited": 0, "unresolved": 0
    }  # fmt: skip
    assert queues["pmi"]["counters"]["offered"] == 0  # nothing counted yet
    tricky = apa["waiting"][1]
    assert tricky["caller_name"] == TRICKY_NAME
    assert tricky["waited_s"] == 60.0
    assert (tricky["priority"], tricky["priority_reason"], tricky["urgency"]) == (
        20,
        "attente longue : +10",
        "urgent",
    )
    assert (tricky["citizen_id"], tricky["contact_id"], tricky["service"]) == ("c-42", "k-7", "apa")
    assert apa["waiting"][2]["citizen_id"] is None
    assert queues["pmi"]["waiting"] == []
    [agent] = live["agents"]
    assert agent == {
        "id": "agent-101",
        "interface": "PJSIP/agent-101",
        "name": "Marie",
        "state": "paused",
        "paused_reason": "Réunion « équipe »",
        "queues": ["apa"],
        "since": NOW - 30,
    }
    [call] = live["calls"]
    assert (call["uniqueid"], call["agent"], call["duration_s"], call["caller_name"]) == (
        "2.1",
        "PJSIP/agent-102",
        45.0,
        TRICKY_NAME,
    )


async def test_callbacks_list(api: Api) -> None:
    status, body, _ = await api.call("GET", "/api/callbacks", token=await api.login("marie"))
    assert status == 200
    [callback] = body["callbacks"]
    assert callback["id"] == "cb-1"
    assert callback["caller_name"] == TRICKY_NAME
    assert (callback["number"], callback["queue"], callback["state"]) == ("+33612345678", "mdph", "waiting")
    assert (callback["outcomes"], callback["next_attempt_at"]) == (["no_answer"], NOW + 600)
    assert (callback["agent"], callback["agent_answered_at"]) == (None, None)


async def test_an_agent_acts_on_its_own_agent_only(api: Api) -> None:
    marie = await api.login("marie")
    status, body, _ = await api.call("POST", "/api/agents/agent-102/login", token=marie, body={})
    assert (status, body["error"]) == (403, "forbidden")
    status, body, _ = await api.call("POST", "/api/agents/agent-999/login", token=marie, body={})
    assert status == 403
    assert api.rig.members("pmi") == {}
    status, body, _ = await api.call("POST", "/api/agents/agent-101/login", token=marie, body={})
    assert (status, body) == (200, {"agent": "agent-101", "action": "login", "queues": ["apa", "accueil"]})
    assert api.rig.members("apa") == api.rig.members("accueil") == {"PJSIP/agent-101": False}
    status, body, _ = await api.call(
        "POST", "/api/agents/agent-101/pause", token=marie, body={"reason": "Pause café"}
    )
    assert (status, body["reason"]) == (200, "Pause café")
    assert api.rig.members("apa") == {"PJSIP/agent-101": True}
    assert (await api.call("POST", "/api/agents/agent-101/unpause", token=marie, body={}))[0] == 200
    assert api.rig.members("apa") == {"PJSIP/agent-101": False}
    assert (await api.call("POST", "/api/agents/agent-101/logout", token=marie))[0] == 415  # no JSON type
    assert api.rig.members("apa") == {"PJSIP/agent-101": False}
    assert (await api.call("POST", "/api/agents/agent-101/logout", token=marie, body={}))[0] == 200
    assert api.rig.members("apa") == {}


async def test_supervisors_and_admins_act_on_any_agent(api: Api) -> None:
    for login, agent in (("chef", "agent-102"), ("root", "agent-101")):
        token = await api.login(login)
        status, _, _ = await api.call("POST", f"/api/agents/{agent}/login", token=token, body={})
        assert status == 200
        assert f"PJSIP/{agent}" in api.rig.members("accueil")
        status, body, _ = await api.call("POST", "/api/agents/agent-999/login", token=token, body={})
        assert (status, body["error"]) == (404, "unknown_agent")


async def test_errors_bad_input_not_logged_in_and_asterisk_refusals(api: Api) -> None:
    chef = await api.login("chef")
    pause = "/api/agents/agent-102/pause"
    status, body, _ = await api.call("POST", pause, token=chef, body={"reason": "réunion"})
    assert (status, body["error"]) == (409, "not_logged_in")
    await api.call("POST", "/api/agents/agent-102/login", token=chef, body={})
    for bad in ({}, {"reason": 3}, {"reason": "ligne\nAction: Logoff"}, {"reason": "x" * 81}):
        status, body, _ = await api.call("POST", pause, token=chef, body=bad)
        assert status == 400 and body["error"] in ("bad_request", "bad_reason"), bad
        assert body["message"]
    for raw in ("{pas du json", "[1, 2]", '"texte"', b'{"reason": "\xff\xfe"}'):
        status, body, _ = await api.call(
            "POST", pause, token=chef, data=raw, headers={"Content-Type": "application/json"}
        )
        assert (status, body["error"]) == (400, "bad_request"), raw
    assert api.rig.members("pmi") == {"PJSIP/agent-102": False}  # never paused
    # agent-103's skills include "transport", which the simulated PBX has no queue for.
    status, body, _ = await api.call("POST", "/api/agents/agent-103/login", token=chef, body={})
    assert (status, body["error"]) == (502, "asterisk_refused")
    assert "transport" in body["message"]
    assert api.rig.members("apa") == {}  # undone
    for missing in ({}, {"login": "chef"}, {"password": "x"}, {"login": "", "password": "x"}):
        status, body, _ = await api.call("POST", "/api/session", body=missing)
        assert (status, body["error"]) == (400, "bad_request"), missing
    await api.rig.ami.close()
    status, body, _ = await api.call("POST", "/api/agents/agent-102/unpause", token=chef, body={})
    assert (status, body["error"]) == (503, "asterisk_unavailable")


async def test_state_changes_need_a_json_content_type(api: Api) -> None:
    chef = await api.login("chef")
    status, body, _ = await api.call(
        "POST",
        "/api/agents/agent-102/login",
        token=chef,
        data="a=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (status, body["error"]) == (415, "unsupported_media_type")
    status, _, _ = await api.call(
        "POST", "/api/session", data="login=chef&password=chef-secret", headers={"Content-Type": "text/plain"}
    )
    assert status == 415
    assert api.rig.members("pmi") == {}


async def test_unknown_routes_and_methods_answer_json(api: Api) -> None:
    status, body, _ = await api.call("GET", "/api/nothing")
    assert (status, body["error"]) == (404, "not_found")
    status, body, response = await api.call("PUT", "/api/live", body={})
    assert (status, body["error"]) == (405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]
    status, body, _ = await api.call(
        "POST", "/api/session", data="x" * 70_000, headers={"Content-Type": "application/json"}
    )
    assert status == 413


async def test_openapi_describes_every_route_and_nothing_else(api: Api) -> None:
    status, document, _ = await api.call("GET", OPENAPI_PATH)
    assert status == 200
    assert document["openapi"].startswith("3.1")
    described = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    served = {
        (route.method, route.resource.canonical)
        for route in api.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert described == served
    schemas = document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status_code, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                ref = schema.get("$ref", "")
                assert not ref or ref.rsplit("/", 1)[1] in schemas, (method, path, status_code)
                if status_code != "200":
                    assert ref.endswith("/Error"), (method, path, status_code)


# --- users file, passwords, session key, CLI -------------------------------------------------------


def test_passwords_are_salted_scrypt_hashes() -> None:
    first, second = hash_password("même mot"), hash_password("même mot")
    assert first.startswith("scrypt$") and first != second
    assert verify_password("même mot", first) and verify_password("même mot", second)
    assert not verify_password("même mot ", first)
    assert not verify_password("x", "scrypt$garbage")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_users_file_loads_and_every_mistake_names_the_file_and_the_key(tmp_path: Path) -> None:
    good = hash_password("pw")
    path = write(
        tmp_path / "users.toml",
        f'[users.marie]\nrole = "agent"\nagent = "agent-101"\npassword_hash = "{good}"\n'
        f'[users.chef]\nrole = "supervisor"\npassword_hash = "{good}"\n',
    )
    book = load_users(path, AGENTS)
    assert len(book) == 2
    assert book.authenticate("marie", "pw") == book.get("marie")
    assert book.authenticate("marie", "nope") is None
    assert book.authenticate("nobody", "pw") is None
    assert "pw" not in repr(book.get("marie")) and good not in repr(book.get("marie"))
    cases = {
        f'[users.a]\nrole = "boss"\npassword_hash = "{good}"\n': "[users.a] role",
        f'[users.a]\nrole = "agent"\npassword_hash = "{good}"\n': "[users.a] agent",
        f'[users.a]\nrole = "agent"\nagent = "agent-999"\npassword_hash = "{good}"\n': "[users.a] agent",
        '[users.a]\nrole = "admin"\npassword_hash = "md5$abc"\n': "[users.a] password_hash",
        '[users.a]\nrole = "admin"\n': "[users.a] password_hash",
        f'[users.a]\nrole = "admin"\npassword_hash = "{good}"\npassword = "x"\n': (
            "[users.a]: unknown key(s) password"
        ),
        f'[users."A B"]\nrole = "admin"\npassword_hash = "{good}"\n': "[users.A B]",
        '[people.a]\nrole = "admin"\n': "unknown section(s) people",
        "[users.a\n": "invalid TOML",
    }
    for text, where in cases.items():
        with pytest.raises(ConfigError) as failure:
            load_users(write(tmp_path / "bad.toml", text), AGENTS)
        assert str(failure.value).startswith(str(tmp_path / "bad.toml")), text
        assert where in str(failure.value), (text, str(failure.value))
    with pytest.raises(ConfigError, match="cannot read"):
        load_users(tmp_path / "missing.toml", AGENTS)


def test_session_key_from_file_env_or_random(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key_file = write(tmp_path / "key", "z" * 40 + "\n")
    assert session_key(HttpSettings(session_key_file=str(key_file)), "g.toml", {}) == b"z" * 40
    with pytest.raises(ConfigError, match=r"g.toml: \[http\] session_key_file.*at least 32"):
        session_key(HttpSettings(session_key_file=str(write(tmp_path / "short", "abc"))), "g.toml", {})
    with pytest.raises(ConfigError, match="session_key_file"):
        session_key(HttpSettings(session_key_file=str(tmp_path / "none")), "g.toml", {})
    assert session_key(HttpSettings(), "g.toml", {SESSION_KEY_ENV: "e" * 32}) == b"e" * 32
    with caplog.at_level(logging.WARNING, logger="desk.auth"):
        one, two = session_key(HttpSettings(), "g.toml", {}), session_key(HttpSettings(), "g.toml", {})
    assert one != two and len(one) >= 32
    assert "random key" in caplog.text


async def test_app_from_settings_fails_at_start_up_on_a_wrong_users_file(tmp_path: Path) -> None:
    settings = settings_with(AGENTS)
    bad = write(tmp_path / "users.toml", '[users.a]\nrole = "chef"\n')
    settings = type(settings)(http=HttpSettings(users_file=str(bad)), agents=settings.agents)
    with pytest.raises(ConfigError, match=r"users.toml: \[users.a\] role"):
        build_app_from_settings(
            settings,
            store=MemoryStateStore(),
            ami=_NoAmi(),
            callbacks=Keeper(),
            environ={SESSION_KEY_ENV: "e" * 32},
        )


class _NoAmi:
    async def send_action(self, action: str, headers: Any = ()) -> Any:
        raise AssertionError("no AMI action expected")


def test_cli_users_add_reads_the_password_from_stdin_and_writes_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path / "guichet.toml",
        f'[http]\nusers_file = "{tmp_path / "users.toml"}"\n'
        '[agents.agent-101]\nname = "Marie"\nskills = ["apa"]\n',
    )
    monkeypatch.setattr("sys.stdin", StringIO("le mot de passe\n"))
    assert (
        cli.main(
            ["users", "add", "marie", "--role", "agent", "--agent", "agent-101", "--config", str(config)]
        )
        == 0
    )
    monkeypatch.setattr("sys.stdin", StringIO("autre\n"))
    assert cli.main(["users", "add", "chef", "--role", "supervisor", "--config", str(config)]) == 0
    path = tmp_path / "users.toml"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "le mot de passe" not in path.read_text() and "le mot de passe" not in capsys.readouterr().out
    book = load_users(path, {"agent-101"})
    marie = book.authenticate("marie", "le mot de passe")
    assert marie is not None and (marie.role, marie.agent) == ("agent", "agent-101")
    assert book.authenticate("chef", "autre") is not None
    monkeypatch.setattr("sys.stdin", StringIO("x\n"))
    assert (
        cli.main(["users", "add", "zoe", "--role", "agent", "--agent", "agent-9", "--config", str(config)])
        == 2
    )
    assert "agent-9" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", StringIO("\n"))
    assert cli.main(["users", "add", "zoe", "--role", "admin", "--file", str(path)]) == 2
    assert load_users(path, {"agent-101"}).get("zoe") is None


def test_add_user_refuses_bad_logins_and_roles(tmp_path: Path) -> None:
    for login, role, agent in (("Bad Login", "admin", None), ("ok", "root", None), ("ok", "agent", None)):
        with pytest.raises(ValueError):
            add_user(tmp_path / "u.toml", login, role, agent, "pw")
    assert not (tmp_path / "u.toml").exists()


async def test_an_unexpected_failure_is_a_json_500_without_details(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    keeper = api.app[CONTEXT].callbacks
    keeper.broken = True
    status, body, _ = await api.call("GET", "/api/callbacks", token=await api.login("chef"))
    assert (status, body["error"]) == (500, "internal")
    assert "hunter2" not in json.dumps(body)
    assert "GET /api/callbacks failed" in caplog.text


async def test_two_engine_nodes_on_one_redis_serve_the_same_data_and_accept_the_same_sessions(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    users_file = tmp_path / "users.toml"
    add_user(users_file, "chef", "supervisor", None, PASSWORDS["chef"])
    settings = Settings(http=HttpSettings(users_file=str(users_file)), agents=settings_with(AGENTS).agents)
    environ = {SESSION_KEY_ENV: "une clé partagée par tous les nœuds !"}
    prefix = f"test-{os.urandom(6).hex()}:"
    stores = [RedisStateStore.from_url(redis_server.url, prefix=prefix) for _ in range(2)]
    runners = []
    clock = Clock()
    try:
        await filled_store(stores[0])
        async with open_rig() as rig:
            # Node 0 holds the AMI lease; node 1 stands by (no AMI client).
            for store, ami in zip(stores, (rig.ami, None), strict=True):
                app = build_app_from_settings(
                    settings,
                    store=store,
                    ami=CurrentAmi(lambda ami=ami: ami),
                    callbacks=Keeper(),
                    clock=clock,
                    environ=environ,
                )
                runners.append(await start_http(app, "127.0.0.1", 0))
            bases = [f"http://127.0.0.1:{bound_port(r)}" for r in runners]
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
                login = {"login": "chef", "password": PASSWORDS["chef"]}
                async with http.post(bases[0] + "/api/session", json=login) as response:
                    assert response.status == 200
                    cookie = {"Cookie": f"{SESSION_COOKIE}={response.cookies[SESSION_COOKIE].value}"}
                lives = []
                for base in bases:
                    async with http.get(base + "/api/live", headers=cookie) as response:
                        assert response.status == 200
                        lives.append(await response.json())
                assert lives[0] == lives[1]
                [apa] = [q for q in lives[1]["queues"] if q["name"] == "apa"]
                assert [c["caller_name"] for c in apa["waiting"]][1] == TRICKY_NAME
                statuses = []
                for base in bases:
                    async with http.post(
                        base + "/api/agents/agent-101/login", json={}, headers=cookie
                    ) as response:
                        statuses.append(response.status)
                assert statuses == [200, 503]
                assert rig.members("apa") == {"PJSIP/agent-101": False}
    finally:
        for runner in runners:
            await runner.cleanup()
        for store in stores:
            await store.close()
