"""AmiClient against a loopback fake AMI server that replays Asterisk 22's recorded reply bytes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from routing.ami import AmiMessage, AmiParser, encode_message
from routing.ami_client import AmiClient
from routing.errors import AmiActionError, AmiAuthError, AmiConnectionLost, AmiTimeout
from tests.ami_streams import load_stream, replies_by_action
from tests.conftest import captures_path

CAPTURES = captures_path()
REPLIES = replies_by_action(CAPTURES / "ami_actions_replies.txt.raw")
SECRET = "ivr-secret"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
WAIT = 5.0  # upper bound for conditions that normally hold within milliseconds


def recorded_reply(action: str, action_id: str) -> bytes:
    """The exact bytes Asterisk answered to ``action``, with the recorded ActionID swapped for ours."""
    exchange = REPLIES[action]
    [sent] = AmiParser(expect_banner=False).feed(exchange.sent)
    old = f"ActionID: {sent.action_id}\r\n".encode()
    assert old in exchange.received
    return exchange.received.replace(old, f"ActionID: {action_id}\r\n".encode())


def recorded_event(name: str) -> bytes:
    """The bytes of the first recorded event called ``name`` (from the IVR call capture)."""
    data = load_stream(CAPTURES, "ami_events_agi_call_100.raw").data
    start = data.index(f"\r\n\r\nEvent: {name}\r\n".encode()) + 4
    return data[start : data.index(b"\r\n\r\n", start) + 4]


def split_messages(data: bytes) -> list[bytes]:
    return [block + b"\r\n\r\n" for block in data.split(b"\r\n\r\n")[:-1]]


# A custom handler returns True when it dealt with the action itself.
Handler = Callable[[AmiMessage, asyncio.StreamWriter], Awaitable[bool]]


class FakeAmi:
    """Plays Asterisk's side: banner, recorded replies, 'Authentication failed' for a bad secret."""

    def __init__(self) -> None:
        self.actions: list[AmiMessage] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.handler: Handler | None = None
        self.after_login = b""  # pushed right after a successful login (Asterisk sends FullyBooted)
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FakeAmi:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    def client(self, secret: str = SECRET) -> AmiClient:
        return AmiClient(
            "127.0.0.1",
            self.port,
            "ivr",
            secret,
            reconnect_backoff=(0.01, 0.05),
            action_timeout=WAIT,
        )

    def names(self) -> list[str]:
        return [a.name for a in self.actions]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        writer.write(BANNER)
        parser = AmiParser(expect_banner=False)
        try:
            while data := await reader.read(4096):
                for action in parser.feed(data):
                    self.actions.append(action)
                    await self._respond(action, writer)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _respond(self, action: AmiMessage, writer: asyncio.StreamWriter) -> None:
        action_id = action.action_id or ""
        if self.handler is not None and await self.handler(action, writer):
            return
        if action.name == "Login":
            if action.get("Secret") != SECRET:
                writer.write(
                    encode_message(
                        [("Response", "Error"), ("ActionID", action_id), ("Message", "Authentication failed")]
                    )
                )
                return
            writer.write(recorded_reply("Login", action_id) + self.after_login)
        elif action.name == "Logoff":
            writer.write(recorded_reply("Logoff", action_id))
            await writer.drain()
            writer.close()
        elif action.name in REPLIES:
            writer.write(recorded_reply(action.name, action_id))
        else:
            writer.write(
                recorded_reply("NoSuchAction", action_id).replace(b"NoSuchAction", action.name.encode())
            )


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll a condition fed by several sources (server, hooks, subscribers), bounded by WAIT."""
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - no single Event to wait on
            await asyncio.sleep(0.001)


async def test_login_ping_and_close_with_logoff() -> None:
    async with FakeAmi() as server:
        client = server.client()
        await client.start()
        assert client.connected
        login = server.actions[0]
        assert (login.name, login["Username"], login["Secret"], login["Events"]) == (
            "Login",
            "ivr",
            SECRET,
            "on",
        )
        reply = await client.send_action("Ping")
        assert reply.ok and reply.response["Ping"] == "Pong" and reply.events == ()
        assert reply.response.action_id == server.actions[1].action_id
        await client.close()
        assert server.names() == ["Login", "Ping", "Logoff"]
        assert not client.connected
        with pytest.raises(AmiConnectionLost):
            await client.send_action("Ping")


async def test_bad_secret_fails_fast_without_showing_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeAmi() as server:
        client = server.client(secret="wrong-s3cret")
        with pytest.raises(AmiAuthError, match=r"'ivr'.*Authentication failed") as excinfo:
            await client.start()
        assert "wrong-s3cret" not in str(excinfo.value)
        assert "wrong-s3cret" not in caplog.text
        assert not client.connected
        assert server.connections == 1


async def test_concurrent_actions_answered_in_reverse_order() -> None:
    held: list[AmiMessage] = []

    async def reverse(action: AmiMessage, writer: asyncio.StreamWriter) -> bool:
        if action.name == "Ping":
            held.append(action)  # answered after the next action
            return True
        if action.name == "QueueSummary" and held:
            writer.write(recorded_reply("QueueSummary", action.action_id or ""))
            writer.write(recorded_reply("Ping", held[0].action_id or ""))
            return True
        return False

    async with FakeAmi() as server:
        server.handler = reverse
        client = server.client()
        await client.start()
        ping_task = asyncio.create_task(client.send_action("Ping"))
        await wait_for(lambda: bool(held))
        summary = await client.send_action("QueueSummary", {"Queue": "apa"})
        ping = await ping_task
        assert ping.response["Ping"] == "Pong"
        assert summary.response["Message"] == "Queue summary will follow"
        assert [e.name for e in summary.events] == ["QueueSummary"]
        assert summary.events[0]["Queue"] == "apa" and summary.events[0]["LoggedIn"] == "1"
        assert summary.complete is not None and summary.complete["ListItems"] == "1"
        assert len({ping.response.action_id, summary.response.action_id}) == 2
        await client.close()


async def test_events_inside_an_event_list_reach_subscribers() -> None:
    newchannel = recorded_event("Newchannel")

    async def interleave(action: AmiMessage, writer: asyncio.StreamWriter) -> bool:
        if action.name != "QueueStatus":
            return False
        parts = split_messages(recorded_reply("QueueStatus", action.action_id or ""))
        writer.write(b"".join(parts[:2]) + newchannel + b"".join(parts[2:]))
        return True

    async with FakeAmi() as server:
        server.handler = interleave
        client = server.client()
        seen: list[str] = []
        client.subscribe("*", lambda event: seen.append(event.name))
        await client.start()
        status = await client.send_action("QueueStatus")
        assert [e.name for e in status.events] == ["QueueParams", "QueueMember", "QueueParams", "QueueMember"]
        assert status.events[1]["PausedReason"] == ""
        assert status.complete is not None and status.complete.name == "QueueStatusComplete"
        assert seen == ["Newchannel"]
        await client.close()


async def test_event_with_actionid_of_a_finished_action_is_delivered() -> None:
    async def originate(action: AmiMessage, writer: asyncio.StreamWriter) -> bool:
        if action.name != "Originate":
            return False
        aid = action.action_id or ""
        writer.write(
            encode_message(
                [("Response", "Success"), ("ActionID", aid), ("Message", "Originate successfully queued")]
            )
            + encode_message([("Event", "OriginateResponse"), ("ActionID", aid), ("Response", "Success")])
        )
        return True

    async with FakeAmi() as server:
        server.handler = originate
        client = server.client()
        results: list[AmiMessage] = []
        client.subscribe("OriginateResponse", results.append)
        await client.start()
        reply = await client.send_action("Originate", [("Channel", "Local/a@b"), ("Async", "true")])
        await wait_for(lambda: bool(results))
        assert results[0].action_id == reply.response.action_id
        await client.close()


async def test_error_reply_raises_unless_unchecked() -> None:
    async with FakeAmi() as server:
        client = server.client()
        await client.start()
        with pytest.raises(AmiActionError, match="Invalid/unknown command: NoSuchAction") as excinfo:
            await client.send_action("NoSuchAction")
        assert excinfo.value.message.startswith("Invalid/unknown command")
        reply = await client.send_action("NoSuchAction", check=False)
        assert not reply.ok and reply.message is not None
        await client.close()


async def test_timeout_leaves_the_connection_usable() -> None:
    silent = True

    async def mute(action: AmiMessage, writer: asyncio.StreamWriter) -> bool:
        return action.name == "Ping" and silent

    async with FakeAmi() as server:
        server.handler = mute
        client = server.client()
        await client.start()
        with pytest.raises(AmiTimeout):
            await client.send_action("Ping", timeout=0.05)
        silent = False
        assert (await client.send_action("Ping")).ok
        await client.close()


async def test_injection_is_refused_before_sending() -> None:
    async with FakeAmi() as server:
        client = server.client()
        await client.start()
        with pytest.raises(ValueError, match="CallerID"):
            await client.send_action("Originate", [("CallerID", '"x"\r\nAction: Hangup\r\nChannel: all <1>')])
        with pytest.raises(ValueError, match="close"):
            await client.send_action("Logoff")
        assert (await client.send_action("Ping")).ok
        assert server.names() == ["Login", "Ping"]
        await client.close()


async def test_drop_fails_pending_then_reconnects_resyncs_and_events_flow() -> None:
    order: list[str] = []
    hooks_done = 0

    async def resync(client: AmiClient) -> None:
        nonlocal hooks_done
        status = await client.send_action("QueueStatus")
        assert len(status.events) == 4
        hooks_done += 1
        order.append(f"hook{hooks_done}")

    async def drop_on_queue_summary(action: AmiMessage, writer: asyncio.StreamWriter) -> bool:
        if action.name == "QueueSummary":
            writer.transport.abort()
            return True
        return False

    async with FakeAmi() as server:
        server.handler = drop_on_queue_summary
        server.after_login = recorded_event("Newchannel")
        client = server.client()
        client.on_connect(resync)
        client.subscribe("Newchannel", lambda event: order.append("event"))
        await client.start()
        await wait_for(lambda: order == ["hook1", "event"])
        with pytest.raises(AmiConnectionLost):
            await client.send_action("QueueSummary")
        await wait_for(lambda: order == ["hook1", "event", "hook2", "event"])
        assert server.connections == 2 and client.connected
        assert (await client.send_action("Ping")).ok
        await client.close()


async def test_garbage_from_server_drops_and_reconnects() -> None:
    garbage_sent = False

    async def garbage(action: AmiMessage, writer: asyncio.StreamWriter) -> bool:
        nonlocal garbage_sent
        if action.name == "Ping" and not garbage_sent:
            garbage_sent = True
            writer.write(b"\x00\x01\xfe\xff binary garbage\r\n\r\n")
            return True
        return False

    async with FakeAmi() as server:
        server.handler = garbage
        client = server.client()
        connects: list[int] = []

        async def count(_: AmiClient) -> None:
            connects.append(server.connections)

        client.on_connect(count)
        await client.start()
        with pytest.raises(AmiConnectionLost, match="protocol error"):
            await client.send_action("Ping")
        await wait_for(lambda: client.connected and len(connects) == 2)
        assert (await client.send_action("Ping")).ok
        await client.close()


async def test_hook_failure_at_start_propagates_and_closes() -> None:
    async def broken(_: AmiClient) -> None:
        raise RuntimeError("resync failed")

    async with FakeAmi() as server:
        client = server.client()
        client.on_connect(broken)
        with pytest.raises(RuntimeError, match="resync failed"):
            await client.start()
        assert not client.connected


async def test_subscribers_isolated_ordered_and_unsubscribable(caplog: pytest.LogCaptureFixture) -> None:
    async def push_two(action: AmiMessage, writer: asyncio.StreamWriter) -> bool:
        if action.name != "Ping":
            return False
        writer.write(
            recorded_event("Newchannel")
            + recorded_event("VarSet")
            + recorded_reply("Ping", action.action_id or "")
        )
        return True

    async with FakeAmi() as server:
        server.handler = push_two
        client = server.client()
        got: list[str] = []

        def boom(event: AmiMessage) -> None:
            raise RuntimeError("subscriber bug")

        client.subscribe("Newchannel", boom)
        client.subscribe("Newchannel", lambda e: got.append("specific:" + e.name))
        unsubscribe = client.subscribe("*", lambda e: got.append("any:" + e.name))
        with pytest.raises(ValueError, match="already subscribed"):
            client.subscribe("Newchannel", boom)

        async def coroutine_callback(event: AmiMessage) -> None:
            return None

        with pytest.raises(TypeError):
            client.subscribe("*", coroutine_callback)  # type: ignore[arg-type]
        await client.start()
        await client.send_action("Ping")
        assert got == ["specific:Newchannel", "any:Newchannel", "any:VarSet"]
        assert "subscriber bug" in caplog.text
        unsubscribe()
        await client.send_action("Ping")
        assert got[3:] == ["specific:Newchannel"]
        await client.close()
