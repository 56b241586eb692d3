"""The engine's resources in one object: the FastAGI server and the AMI client.

:class:`Engine` owns the server and the client, starts them in order
and always stops them, whatever failed in between.  The AGI routes come from
:func:`ivr.routes.build_routes`.
"""

from __future__ import annotations

import asyncio
import logging

from guichet.config import Secret, Settings
from ivr.agi_server import FastAgiServer, RouteTable
from ivr.routes import IVR_ROUTE, build_routes
from routing.ami_client import AmiClient, EventCallback

logger = logging.getLogger(__name__)


def set_event_loop_policy(settings: Settings) -> None:
    """Use uvloop when configured (the bench table shows why) and installed."""
    if settings.loop != "uvloop":
        return
    try:
        import uvloop  # noqa: PLC0415 - optional at run time
    except ImportError:
        logger.warning("loop = uvloop but uvloop is not installed: using asyncio's default loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


class Engine:
    """FastAGI server + AMI client, started together and always stopped together."""

    def __init__(self, settings: Settings, secret: Secret, routes: RouteTable | None = None) -> None:
        self.settings = settings
        self.agi = FastAgiServer(
            routes or build_routes(),
            host=settings.agi.host,
            port=settings.agi.port,
            env_timeout=settings.agi.env_timeout_s,
            command_timeout=settings.agi.command_timeout_s,
            session_timeout=settings.agi.session_timeout_s,
        )
        self._secret = secret
        self._subscriptions: list[tuple[str, EventCallback]] = []
        self.ami: AmiClient | None = None
        self._ami_port = settings.ami.port

    def subscribe(self, event: str, callback: EventCallback) -> None:
        """Deliver AMI events named ``event`` (or ``*``) to ``callback``, from the first login on."""
        self._subscriptions.append((event, callback))
        if self.ami is not None:
            self.ami.subscribe(event, callback)

    async def start(self) -> None:
        """Listen for FastAGI first (calls must never find it closed), then log in to AMI."""
        await self.start_agi()
        await self.connect_ami(self.settings.ami.port)

    async def start_agi(self) -> None:
        await self.agi.start()

    async def connect_ami(self, port: int) -> None:
        """Log in to the AMI on ``port``; a bad secret raises at once (fail fast)."""
        ami = AmiClient(self.settings.ami.host, port, self.settings.ami.username, self._secret.value)
        for event, callback in self._subscriptions:
            ami.subscribe(event, callback)
        await ami.start()
        self.ami = ami
        self._ami_port = port

    async def close(self) -> None:
        try:
            if self.ami is not None:
                await self.ami.close()
        finally:
            await self.agi.close()

    def addresses(self) -> list[str]:
        lines = [f"FastAGI server: agi://{self.settings.agi.host}:{self.agi.port}/{IVR_ROUTE}"]
        if self.ami is not None:
            ami = self.settings.ami
            lines.append(f"AMI client of: {ami.host}:{self._ami_port} (user {ami.username})")
        return lines
