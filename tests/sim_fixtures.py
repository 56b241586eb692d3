"""Helpers shared by the simulated-PBX tests: a scripted FastAGI responder and an AMI reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from guichet.config import Secret, Settings
from guichet.engine import Engine
from ivr.agi_server import RouteTable
from pbx_sim import QueueConfig, SimConfig, SimulatedPbx, inbound_dialplan
from pbx_sim.channels import AmiEvent
from routing.ami import AmiMessage, AmiParser, encode_action


@dataclass
class AgiResponder:
    """A FastAGI server that answers each session with ``commands``, or with what ``script`` gives for
    its environment; it records the raw environment blocks, the parsed ones and every reply."""

    commands: Sequence[str] = ()
    script: Callable[[Mapping[str, str]], Sequence[str]] | None = None
    envs: list[bytes] = field(default_factory=list)
    fields: list[dict[str, str]] = field(default_factory=list)  # each session's agi_* variables
    replies: list[bytes] = field(default_factory=list)
    session_replies: list[list[bytes]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        env = b""
        while not env.endswith(b"\n\n"):
            line = await reader.readline()
            if not line:
                break
            env += line
        self.envs.append(env)
        fields = dict(line.partition(": ")[::2] for line in env.decode().splitlines() if line)
        self.fields.append(fields)
        replies: list[bytes] = []
        self.session_replies.append(replies)
        for command in self.script(fields) if self.script is not None else self.commands:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            replies.append(await read_reply(reader))
            self.replies.append(replies[-1])
        writer.close()

    def args_of(self, route: str) -> list[tuple[str, ...]]:
        """The arguments of each session of ``route`` (agi_network_script), in order."""
        return [
            tuple(env[f"agi_arg_{n}"] for n in range(1, 20) if f"agi_arg_{n}" in env)
            for env in self.fields
            if env.get("agi_network_script") == route
        ]

    def replies_of(self, route: str) -> list[bytes]:
        """Every reply received in the sessions of ``route``, in order."""
        return [
            reply
            for env, replies in zip(self.fields, self.session_replies, strict=True)
            if env.get("agi_network_script") == route
            for reply in replies
        ]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """One reply as raw bytes, with a leading unsolicited HANGUP line and whole 520 blocks."""
    received = b""
    while True:
        line = await reader.readline()
        received += line
        if not line or (line != b"HANGUP\n" and not line.startswith(b"520-")):
            return received
        if line.startswith(b"520-"):
            while not line.startswith(b"520 ") and line:
                line = await reader.readline()
                received += line
            return received


class AmiReader:
    """A tiny AMI client for the tests: sends actions, collects every message received."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = AmiParser()
        self.messages: list[AmiMessage] = []
        self.raw = b""

    @classmethod
    async def connect(
        cls, port: int, user: str = "guichet", secret: str = "secret", events: str = "on"
    ) -> AmiReader:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        await client.action("Login", [("Username", user), ("Secret", secret), ("Events", events)], "login")
        return client

    async def action(self, name: str, headers: Sequence[tuple[str, str]], action_id: str) -> AmiMessage:
        self.writer.write(encode_action(name, headers, action_id))
        await self.writer.drain()
        return await self.wait_for(lambda m: m.kind == "response" and m.action_id == action_id)

    async def wait_for(self, predicate: object, limit_s: float = 10.0) -> AmiMessage:
        async def _wait() -> AmiMessage:
            index = 0
            while True:
                while index < len(self.messages):
                    message = self.messages[index]
                    index += 1
                    if predicate(message):  # type: ignore[operator]
                        return message
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("AMI closed")
                self.raw += data
                self.messages.extend(self.parser.feed(data))

        return await asyncio.wait_for(_wait(), limit_s)

    def events(self, *names: str) -> list[AmiMessage]:
        return [m for m in self.messages if m.kind == "event" and (not names or m.name in names)]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def recorded_events(pbx: SimulatedPbx) -> list[AmiEvent]:
    """Every AMI event ``pbx`` emits from now on, in order (the list fills as they come)."""
    events: list[AmiEvent] = []
    emit = pbx.emit

    def record(event: AmiEvent) -> None:
        events.append(event)
        emit(event)

    pbx.emit = record  # type: ignore[method-assign]
    return events


@asynccontextmanager
async def engine_beside_sim(
    ivr: AgiResponder, queue: str, speed: float, *, settings: Settings | None = None, connect: bool = True
) -> AsyncIterator[tuple[SimulatedPbx, Engine]]:
    """A simulated PBX whose calls run ``ivr`` then wait in ``queue``, and an engine (no AGI routes of
    its own) logged in to its AMI unless ``connect`` is False; everything stopped afterwards."""
    await ivr.start()
    try:
        dialplan = inbound_dialplan(f"agi://127.0.0.1:{ivr.port}", requeue=False)
        config = SimConfig(agi_port=ivr.port, speed=speed, queues=(QueueConfig(queue),), dialplan=dialplan)
        async with SimulatedPbx(config) as pbx:
            engine = Engine(settings or Settings(), Secret("secret"), RouteTable(), clock=pbx.clock.now)
            try:
                if connect:
                    await engine.connect_ami(pbx.ami_port)
                yield pbx, engine
            finally:
                await engine.close()
    finally:
        await ivr.stop()
