"""A throwaway redis-server for the tests: 127.0.0.1, a free port, a temporary folder, no persistence.

Use :func:`running_redis_server` from a session-scoped fixture. When ``redis-server`` is not installed
the tests FAIL (they are not skipped): install the Debian package ``redis-server``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 10.0
ATTEMPTS = 3  # another program may take the free port between our probe and redis-server's bind


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start(binary: str, folder: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    """A started server and its port, or None when it died (port taken); raises when it hangs."""
    port = _free_port()
    log = folder / f"redis-{port}.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    args += ["--save", "", "--appendonly", "no", "--logfile", str(log)]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _answers_ping(port):
            return process, port
        if process.poll() is not None:
            return None
        time.sleep(0.02)
    _stop(process)
    text = log.read_text(errors="replace") if log.exists() else ""
    raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT_S} s; its log:\n{text}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: the live state store's Redis tests need it "
            "(Debian package 'redis-server': apt-get install redis-server)"
        )
    with tempfile.TemporaryDirectory(prefix="guichet-redis-") as tmp:
        for _ in range(ATTEMPTS):
            started = _start(binary, Path(tmp))
            if started is not None:
                break
        else:
            logs = "\n".join(log.read_text(errors="replace") for log in Path(tmp).glob("*.log"))
            raise RuntimeError(f"redis-server exited at start {ATTEMPTS} times; its logs:\n{logs}")
        process, port = started
        try:
            yield RedisServer("127.0.0.1", port)
        finally:
            _stop(process)
