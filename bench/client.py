"""The load client: plays Asterisk's side of the IVR flow against a server, many sessions at a time.

Over FastAGI it connects to 127.0.0.1, sends the recorded environment block, checks every command
line against ``bench.flow.STEPS``, answers it at once with the recorded reply and waits for the
server to close.  For process-per-call AGI it starts ``bench/pyst2_flow.py`` for each call, as
Asterisk does for a local AGI script, and talks over the child's stdin/stdout.

The round trip of a command is the time from the client's previous write (the environment block
or the previous reply) to the arrival of the command line.
"""

from __future__ import annotations

import asyncio
import os
import resource
import select
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from bench.flow import STEPS, normalize

HOST = "127.0.0.1"
PYST2_SCRIPT = Path(__file__).with_name("pyst2_flow.py")
_STEP_TOKENS = tuple(step.tokens for step in STEPS)
_STEP_REPLIES = tuple(step.reply for step in STEPS)


def split_cpus() -> tuple[set[int], set[int]]:
    """CPUs for the load client and for the servers: kept apart when there are 2 or more, so that a
    server never shares its core with the client (the figures vary much less)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    return {cpus[0]}, set(cpus[1:])


CLIENT_CPUS, SERVER_CPUS = split_cpus()


def pin_client() -> None:
    """Keep this process (the load client) on its own CPU; servers and per-call processes get the others."""
    os.sched_setaffinity(0, CLIENT_CPUS)


class FlowError(Exception):
    """A server did not follow the flow (wrong command, too many or too few, early close)."""


class _Session:
    """Asterisk's side of one call: check each command, answer it, record its round trip."""

    __slots__ = ("_buf", "_done", "_latencies", "_send", "_sent_at", "_step")

    def __init__(
        self, latencies: list[int], done: asyncio.Future[None], send: Callable[[bytes], None]
    ) -> None:
        self._latencies = latencies
        self._done = done
        self._send = send
        self._buf = b""
        self._step = 0
        self._sent_at = 0

    def start(self, env: bytes) -> None:
        self._sent_at = time.perf_counter_ns()
        self._send(env)

    def feed(self, data: bytes) -> None:
        buf = self._buf + data
        while (nl := buf.find(b"\n")) >= 0:
            arrived = time.perf_counter_ns()
            line, buf = buf[:nl], buf[nl + 1 :]
            step = self._step
            if step >= len(STEPS):
                self.fail(f"command {line!r} after the last step of the flow")
                return
            expected = _STEP_TOKENS[step]
            if tuple(normalize(line)[: len(expected)]) != expected:
                self.fail(f"step {step + 1}: expected {STEPS[step].command!r}, got {line!r}")
                return
            self._latencies.append(arrived - self._sent_at)
            self._step = step + 1
            self._sent_at = time.perf_counter_ns()
            self._send(_STEP_REPLIES[step])
        self._buf = buf

    def finish(self) -> None:
        """The server ended the call: it must have sent the whole flow, and nothing more."""
        if self._done.done():
            return
        if self._step != len(STEPS) or self._buf:
            self.fail(f"server closed after {self._step} of {len(STEPS)} commands (left over: {self._buf!r})")
        else:
            self._done.set_result(None)

    def fail(self, message: str) -> None:
        if not self._done.done():
            self._done.set_exception(FlowError(message))


class _AgiProtocol(asyncio.Protocol):
    def __init__(self, env: bytes, latencies: list[int], done: asyncio.Future[None]) -> None:
        self._env = env
        self._latencies = latencies
        self._done = done
        self._session: _Session | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._session = _Session(self._latencies, self._done, cast(asyncio.Transport, transport).write)
        self._session.start(self._env)

    def data_received(self, data: bytes) -> None:
        assert self._session is not None
        self._session.feed(data)

    def eof_received(self) -> bool:
        assert self._session is not None
        self._session.finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_exception(FlowError(f"connection lost in the middle of the flow: {exc}"))


async def agi_session(port: int, env: bytes, latencies: list[int]) -> None:
    """One FastAGI call against 127.0.0.1:port; raises FlowError if the server strays from the flow."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _AgiProtocol(env, latencies, done), HOST, port)
    try:
        await done
    finally:
        transport.close()


class _PipeProtocol(asyncio.Protocol):
    def __init__(self, session: _Session) -> None:
        self._session = session

    def data_received(self, data: bytes) -> None:
        self._session.feed(data)

    def eof_received(self) -> bool:
        self._session.finish()
        return False


@dataclass
class ProcessCost:
    """CPU spent in the parent to fork/exec the per-call processes (the children's CPU is in rusage)."""

    spawn_ns: int = 0


def _spawn_pyst2(cost: ProcessCost) -> subprocess.Popen[bytes]:
    """fork/exec the script synchronously, as Asterisk does, counting this thread's CPU for it."""
    before = time.thread_time_ns()
    proc = subprocess.Popen(
        [sys.executable, str(PYST2_SCRIPT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    cost.spawn_ns += time.thread_time_ns() - before
    os.sched_setaffinity(proc.pid, SERVER_CPUS)
    return proc


async def pyst2_session(env: bytes, latencies: list[int], cost: ProcessCost) -> None:
    """One process-per-call AGI call: a new ``python bench/pyst2_flow.py`` talking on stdin/stdout."""
    loop = asyncio.get_running_loop()
    proc = _spawn_pyst2(cost)
    assert proc.stdin is not None and proc.stdout is not None
    pidfd = os.pidfd_open(proc.pid)  # readable once the child exits
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        writer, _ = await loop.connect_write_pipe(asyncio.Protocol, proc.stdin)
        done: asyncio.Future[None] = loop.create_future()
        session = _Session(latencies, done, writer.write)
        reader, _ = await loop.connect_read_pipe(lambda: _PipeProtocol(session), proc.stdout)
        try:
            session.start(env)
            await done
            await exited
        finally:
            writer.close()
            reader.close()
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if proc.poll() is None:
            proc.kill()
        proc.wait()  # the child is reaped here, so its CPU shows in RUSAGE_CHILDREN
    if proc.returncode != 0:
        raise FlowError(f"{PYST2_SCRIPT.name} exited with status {proc.returncode}")


@dataclass
class Batch:
    """What the client saw of one run of sessions."""

    sessions: int
    concurrency: int
    wall_ns: int
    latencies: list[int] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.sessions * 1e9 / self.wall_ns


async def run_batch(
    session: Callable[[list[int]], Awaitable[None]], sessions: int, concurrency: int, timeout_s: float
) -> Batch:
    """Run ``sessions`` calls, ``concurrency`` at a time (a new one starts as soon as one ends)."""
    if sessions < 1 or concurrency < 1:
        raise ValueError(f"sessions and concurrency must be >= 1, got {sessions} and {concurrency}")
    latencies: list[int] = []
    left = sessions

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await session(latencies)

    started = time.perf_counter_ns()
    try:
        async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, sessions)):
                group.create_task(worker())
    except ExceptionGroup as failed:  # the first failure cancels the other sessions
        raise failed.exceptions[0] from None
    except TimeoutError:
        raise FlowError(f"{sessions} sessions did not end within {timeout_s} s") from None
    batch = Batch(sessions, concurrency, time.perf_counter_ns() - started, latencies)
    if len(latencies) != sessions * len(STEPS):
        raise FlowError(f"{len(latencies)} round trips for {sessions} sessions of {len(STEPS)} commands")
    return batch


def children_cpu_ns() -> int:
    """User + system CPU of every reaped child of this process so far, in nanoseconds."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((usage.ru_utime + usage.ru_stime) * 1e9)


class ServerProcess:
    """A server of ``bench.servers`` in its own process, with its CPU time readable on demand."""

    def __init__(
        self, kind: str, loop: str, repo: Path, start_timeout_s: float = 30.0, profile_to: Path | None = None
    ) -> None:
        """``profile_to``: run the server under cProfile and write its stats there when it stops."""
        self.kind = kind
        self.loop = loop
        profiler = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
        self._proc = subprocess.Popen(
            [sys.executable, *profiler, "-m", "bench.servers", kind, loop],
            cwd=repo,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.pid = self._proc.pid
        try:
            os.sched_setaffinity(self.pid, SERVER_CPUS)
            self.port = int(self._read_reply(b"READY", start_timeout_s))
        except BaseException:
            self._proc.kill()
            self._proc.wait()
            raise

    def _read_reply(self, tag: bytes, timeout_s: float) -> bytes:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        line = b""
        while not line.endswith(b"\n"):
            readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                raise TimeoutError(
                    f"bench server {self.kind}/{self.loop}: no {tag.decode()} in {timeout_s} s"
                )
            chunk = os.read(fd, 1)
            if not chunk:
                raise FlowError(f"bench server {self.kind}/{self.loop} exited (status {self._proc.wait()})")
            line += chunk
        word, _, value = line.strip().partition(b" ")
        if word != tag:
            raise FlowError(f"bench server {self.kind}/{self.loop}: expected {tag!r}, got {line!r}")
        return value

    def cpu_ns(self) -> int:
        """The server's own user + system CPU time so far (it reads its rusage when asked)."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(b"cpu\n")
        self._proc.stdin.flush()
        return int(self._read_reply(b"CPU", 10.0))

    def stop(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
