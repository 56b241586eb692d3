"""Shared fixtures: where the real Asterisk 22 recordings live; a real redis-server for the session."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from routing.state import MemoryStateStore, StateStore
from routing.state_redis import RedisStateStore
from tests.redis_server import RedisServer, running_redis_server

REPO = Path(__file__).resolve().parents[1]


def captures_path() -> Path:
    """The recordings folder: $GUICHET_CAPTURES, else ../shared/asterisk-captures beside the repo."""
    env = os.environ.get("GUICHET_CAPTURES")
    path = Path(env) if env else REPO.parent / "shared" / "asterisk-captures"
    if not (path / "README.md").is_file():
        raise RuntimeError(
            f"Asterisk recordings not found at {path}; set GUICHET_CAPTURES to the asterisk-captures folder"
        )
    return path


@pytest.fixture(scope="session")
def captures_dir() -> Path:
    return captures_path()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[StateStore, StateStore]]:
    """Two nodes' views of one live state: the same object in memory, two clients of one redis-server
    (each test under its own key prefix)."""
    if request.param == "memory":
        store = MemoryStateStore()
        yield store, store
        await store.close()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"test-{uuid.uuid4().hex}:"
    first = RedisStateStore.from_url(server.url, prefix=prefix)
    second = RedisStateStore.from_url(server.url, prefix=prefix)
    yield first, second
    await first.close()
    await second.close()
