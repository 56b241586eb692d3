"""Who may use the web API: the users file, password hashes, signed session tokens, login throttling.

* Users file (TOML, ``[http] users_file``)::

      [users.marie]
      role = "agent"              # agent | supervisor | admin
      agent = "agent-101"         # agents only: the [agents.<id>] they are
      password_hash = "scrypt$16384$8$1$<salt>$<hash>"   # `guichet users add`

  A wrong file raises :class:`guichet.config.ConfigError` naming the file and the key.
* Passwords: ``hashlib.scrypt`` with a random 16-byte salt, compared in constant time; an unknown
  login costs the same scrypt as a known one.
* Sessions: ``<payload>.<HMAC-SHA256>`` tokens (base64url) carrying the login and the expiry, so
  that every engine node holding the same key accepts them. The role is read from the users file at
  each request: a user removed or demoted loses their rights at once. Logging out clears the
  cookie; a copied token stays valid until it expires (no server-side revocation list).
* Brute force: after a few consecutive failures a login is locked for a delay that doubles at each
  further failure; one password check per login at a time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

from guichet.config import AGENT_ID, ConfigError, HttpSettings

log = logging.getLogger(__name__)

Role = Literal["agent", "supervisor", "admin"]
ROLES: Final[tuple[Role, ...]] = ("agent", "supervisor", "admin")
# Logins: quoted TOML keys, cookie payloads and log lines; kept simple on purpose.
LOGIN = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
SESSION_KEY_ENV: Final = "GUICHET_SESSION_KEY"
MIN_KEY_BYTES: Final = 32
MAX_PASSWORD_CHARS: Final = 1024

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_LEN = 2**14, 8, 1, 32
_MAX_SCRYPT_N = 2**20
_USER_KEYS = frozenset({"role", "agent", "password_hash"})
_TOKEN_CONTEXT = b"guichet-session-v1."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- passwords ---------------------------------------------------------------------------------


def hash_password(password: str, *, n: int = _SCRYPT_N, salt: bytes | None = None) -> str:
    """``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (base64url) of ``password`` with a random salt."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = _scrypt(password, salt, n, r=_SCRYPT_R, p=_SCRYPT_P, length=_SCRYPT_LEN)
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _scrypt(password: str, salt: bytes, n: int, *, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=256 * n * r * p + 2**20
    )


@dataclass(frozen=True, slots=True)
class _Hash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _parse_hash(text: str) -> _Hash:
    """ValueError with the reason when ``text`` is not a hash made by :func:`hash_password`."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected scrypt$<n>$<r>$<p>$<salt>$<hash> (see `guichet users add`)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"malformed scrypt hash: {exc}") from None
    if n < 2 or n & (n - 1) or n > _MAX_SCRYPT_N or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError(f"scrypt parameters out of range: n={n} r={r} p={p}")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("scrypt salt or hash too short")
    return _Hash(n, r, p, salt, digest)


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (a hash from :func:`hash_password`); constant time."""
    try:
        parsed = _parse_hash(stored)
    except ValueError:
        return False
    digest = _scrypt(password, parsed.salt, parsed.n, r=parsed.r, p=parsed.p, length=len(parsed.digest))
    return hmac.compare_digest(digest, parsed.digest)


# --- users -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    login: str
    role: Role
    agent: str | None  # the agent id an "agent" user acts as
    password_hash: str = field(repr=False)


class UserBook:
    """The web users, read once at start-up."""

    def __init__(self, users: Mapping[str, User] | None = None, *, source: str = "<none>") -> None:
        self._users = dict(users or {})
        self.source = source
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))

    def __len__(self) -> int:
        return len(self._users)

    def get(self, login: str) -> User | None:
        return self._users.get(login)

    def authenticate(self, login: str, password: str) -> User | None:
        """The user when ``password`` is theirs; an unknown login costs the same scrypt (blocking: run
        it in a thread)."""
        user = self._users.get(login)
        matches = verify_password(password, user.password_hash if user else self._dummy_hash)
        return user if user is not None and matches else None


def load_users(path: Path, agents: Collection[str]) -> UserBook:
    """The users file at ``path``; ConfigError naming the file and the key for any mistake.

    ``agents``: the configured agent ids (an "agent" user must name one of them).
    """
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the users file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"users"})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}; expected [users.<login>]")
    tables = data.get("users", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [users]: expected [users.<login>] tables")
    users = {login: _user(path, login, table, agents) for login, table in tables.items()}
    return UserBook(users, source=str(path))


def _user(path: Path, login: str, table: Any, agents: Collection[str]) -> User:
    where = f"{path}: [users.{login}]"
    if not LOGIN.fullmatch(login):
        raise ConfigError(f"{where}: a login is 1-64 lower-case letters, digits, '.', '_', '@' or '-'")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(table) - _USER_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_USER_KEYS))}"
        )
    role = table.get("role")
    if role not in ROLES:
        raise ConfigError(f"{where} role: expected one of {', '.join(ROLES)}, got {role!r}")
    agent = table.get("agent")
    if role == "agent" and agent is None:
        raise ConfigError(f"{where} agent: an agent user names its agent id ([agents.<id>])")
    if agent is not None and (not isinstance(agent, str) or agent not in agents):
        raise ConfigError(f"{where} agent: {agent!r} is not a configured agent ([agents.<id>])")
    stored = table.get("password_hash")
    if not isinstance(stored, str):
        raise ConfigError(f"{where} password_hash: missing (set it with `guichet users add`)")
    try:
        _parse_hash(stored)
    except ValueError as exc:
        raise ConfigError(f"{where} password_hash: {exc}") from None
    return User(login, cast(Role, role), agent, stored)


def check_login(login: str) -> None:
    if not LOGIN.fullmatch(login):
        raise ValueError(f"invalid login {login!r}: 1-64 lower-case letters, digits, '.', '_', '@' or '-'")


def add_user(path: Path, login: str, role: str, agent: str | None, password: str) -> None:
    """Add or replace ``login`` in the users file (created if missing, kept private: mode 0600).

    ValueError for a bad login, role or empty password; ConfigError when the file is unreadable.
    """
    check_login(login)
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if role == "agent" and not agent:
        raise ValueError("an agent user needs --agent <agent id>")
    if agent is not None and not AGENT_ID.fullmatch(agent):
        raise ValueError(f"invalid agent id {agent!r}")
    if not password or len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"the password must be 1-{MAX_PASSWORD_CHARS} characters")
    users: dict[str, Any] = {}
    if path.exists():
        try:
            users = dict(tomllib.loads(path.read_text(encoding="utf-8")).get("users", {}))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the users file: {exc}") from exc
    users[login] = {"role": role, "password_hash": hash_password(password)}
    if agent is not None:
        users[login]["agent"] = agent
    lines = []
    for name in sorted(users):
        lines.append(f'[users."{name}"]')
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in sorted(users[name].items()))
        lines.append("")
    _write_private(path, "\n".join(lines))


def _write_private(path: Path, text: str) -> None:
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# --- sessions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    login: str
    expires_at: float  # epoch seconds


class SessionSigner:
    """Signs and checks session tokens with ``key``; ``clock`` gives epoch seconds."""

    def __init__(self, key: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the session key must have at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self.ttl_s = ttl_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"SessionSigner(ttl_s={self.ttl_s})"

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, _TOKEN_CONTEXT + payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, login: str) -> tuple[str, Session]:
        session = Session(login, self._clock() + self.ttl_s)
        body = {"login": login, "exp": session.expires_at, "nonce": secrets.token_urlsafe(8)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._sign(payload)}", session

    def verify(self, token: str) -> Session | None:
        """The session a token carries; None when forged, tampered with, malformed or expired."""
        payload, dot, signature = token.partition(".")
        if not dot or not payload.isascii() or not signature.isascii():
            return None
        if not hmac.compare_digest(signature.encode("ascii"), self._sign(payload).encode("ascii")):
            return None
        try:
            body = json.loads(_unb64(payload))
            session = Session(str(body["login"]), float(body["exp"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        return session if session.expires_at > self._clock() else None


def session_key(http: HttpSettings, source: str, environ: Mapping[str, str] | None = None) -> bytes:
    """The signing key: ``[http] session_key_file``, else $GUICHET_SESSION_KEY, else a random one.

    A random key is per process: sessions then survive neither a restart nor a move to another node
    (logged as a warning). ConfigError for an unreadable or short key.
    """
    environ = os.environ if environ is None else environ
    if http.session_key_file:
        where = f"{source}: [http] session_key_file"
        try:
            key = Path(http.session_key_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {http.session_key_file}: {exc.strerror}") from exc
        origin = where
    else:
        key = environ.get(SESSION_KEY_ENV, "").encode("utf-8")
        origin = f"the environment variable {SESSION_KEY_ENV}"
        if not key:
            log.warning(
                "no session key configured ([http] session_key_file or %s): using a random key for this "
                "process only; web sessions end with it and other engine nodes will refuse them",
                SESSION_KEY_ENV,
            )
            return secrets.token_bytes(MIN_KEY_BYTES)
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{origin}: the session key must have at least {MIN_KEY_BYTES} bytes")
    return key


# --- brute force -------------------------------------------------------------------------------


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0
    checking: bool = False


class LoginThrottle:
    """Per-login failure counter: after ``free_failures`` consecutive failures, each further one
    locks the login for ``base_delay_s`` doubling up to ``max_delay_s``. Remembers at most
    ``max_entries`` logins (the oldest are forgotten)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        free_failures: int = 5,
        base_delay_s: float = 2.0,
        max_delay_s: float = 300.0,
        max_entries: int = 10_000,
    ) -> None:
        self._clock = clock
        self._free = free_failures
        self._base = base_delay_s
        self._max = max_delay_s
        self._max_entries = max_entries
        self._logins: OrderedDict[str, _Failures] = OrderedDict()

    def begin(self, login: str) -> float:
        """0 when a password check may start now (then call :meth:`end`), else seconds to wait."""
        entry = self._logins.get(login)
        if entry is None:
            entry = self._logins[login] = _Failures()
            while len(self._logins) > self._max_entries:
                self._logins.popitem(last=False)
        wait = max(entry.locked_until - self._clock(), 0.0)
        if entry.checking:
            return max(wait, 1.0)
        if wait:
            return wait
        entry.checking = True
        return 0.0

    def end(self, login: str, success: bool) -> None:
        entry = self._logins.get(login)
        if entry is None:
            return
        entry.checking = False
        if success:
            del self._logins[login]
            return
        entry.count += 1
        if entry.count >= self._free:
            delay = min(self._base * 2.0 ** (entry.count - self._free), self._max)
            entry.locked_until = self._clock() + delay
