"""Asterisk's side of FastAGI for one AGI() step of a simulated call.

Connects to the engine, writes the ``agi_*`` environment exactly as Asterisk 22 does
(every key in the recorded order), then answers each command like the recordings,
emitting AGIExecStart / AGIExecEnd (and VarSet, DTMF, MusicOnHold) events.  Facts kept
from the recordings: refused connection -> AGISTATUS=FAILURE; EOF before any command ->
SUCCESS; after a hangup an unsolicited ``HANGUP`` line, then 511 for media commands; a
server that never answers holds the call (no read timeout) unless AGIEXITONHANGUP=yes
(then ``HANGUP`` twice and the PBX closes the socket).  ``endpos`` values come from the
sound durations and the caller's script, not from measured time, so they are exact at any
clock speed.  tests/test_pbx_sim_agi.py replays every recorded transcript against this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ivr.agi import AgiClientConnection, Command, ConnectionClosed, NeedData
from ivr.errors import AgiProtocolError
from pbx_sim.channels import ChannelState

if TYPE_CHECKING:
    from pbx_sim.call import Call

logger = logging.getLogger(__name__)

ASTERISK_VERSION = "GIT-22-22.0.0-pre1-541-g69535d4837"
SAMPLE_RATE = 8000
# RECORD FILE with a 4000 ms timeout answered endpos=31920: the last 10 ms frame is not written.
RECORD_SHORT_SAMPLES = 80
DEAD_MESSAGE = "Command Not Permitted on a dead channel or intercept routine"
# Commands Asterisk refuses once the channel is dead (res_agi.c: dead=0).
MEDIA_COMMANDS = frozenset(
    {
        "ANSWER",
        "STREAM FILE",
        "CONTROL STREAM FILE",
        "GET DATA",
        "GET OPTION",
        "WAIT FOR DIGIT",
        "SAY DIGITS",
        "SAY NUMBER",
        "SAY ALPHA",
        "RECORD FILE",
        "SET MUSIC",
        "RECEIVE CHAR",
        "SEND TEXT",
    }
)
USAGE = {
    "GET DATA": (
        "Stream the given <replaceable>file</replaceable>, and receive DTMF data.",
        "Returns the digits received from the channel at the other end.",
    ),
    "SET VARIABLE": ("Sets a variable to the current channel.",),
    "STREAM FILE": ("Send the given file, allowing playback to be interrupted by the given digits, if any.",),
    "GET VARIABLE": ("Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set.",),
    "RECORD FILE": ("Record to a file until a given dtmf digit in the sequence is received.",),
    "WAIT FOR DIGIT": (
        "Waits up to <replaceable>timeout</replaceable> milliseconds for channel to receive a DTMF digit.",
    ),
}


class ChannelHungUp(Exception):
    """The caller hung up while the command was using the channel."""


@dataclass(frozen=True)
class CommandResult:
    """What one command writes back and how AGIExecEnd reports it."""

    reply: bytes
    code: int = 200
    text: str = "Success"

    @property
    def failed(self) -> bool:
        return self.code == -1


def samples(seconds: float) -> int:
    """Audio samples at 8 kHz (the ``endpos`` unit)."""
    return round(seconds * SAMPLE_RATE)


def write_recording(path: str, audio: bytes, frames: int) -> None:
    """``frames`` samples of ``audio`` (8 kHz 16-bit mono PCM) as a WAV file, padded with silence."""
    pcm = audio[: 2 * frames].ljust(2 * frames, b"\x00")
    # Open the file first: wave.open(path) failing leaves a half-built Wave_write whose __del__ raises.
    with open(path, "wb") as raw, wave.open(raw, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm)


def _ok(result: int | str, data: str | None = None, endpos: int | None = None) -> CommandResult:
    return CommandResult(AgiClientConnection.format_reply(200, result, data, endpos))


def _usage(name: str) -> CommandResult:
    return CommandResult(AgiClientConnection.usage_reply(USAGE.get(name, ())), 520, "Usage")


class AgiSession:
    """One FastAGI connection of a call; :meth:`run` returns AGISTATUS."""

    def __init__(self, call: Call, url: str, args: list[str]) -> None:
        self.call = call
        self.url = url
        self.args = args
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 4573
        self.script = parts.path.lstrip("/")
        self._codec = AgiClientConnection()
        self._failed = False
        self._notice_sent = False
        self._utterances = iter(call.script.utterances)
        self._handlers: dict[str, Callable[[Command], Awaitable[CommandResult]]] = {
            "ANSWER": self._answer,
            "HANGUP": self._hangup,
            "STREAM FILE": self._stream_file,
            "GET DATA": self._get_data,
            "WAIT FOR DIGIT": self._wait_for_digit,
            "SAY DIGITS": self._say_digits,
            "SET VARIABLE": self._set_variable,
            "GET VARIABLE": self._get_variable,
            "GET FULL VARIABLE": self._get_full_variable,
            "EXEC": self._exec,
            "VERBOSE": self._verbose,
            "NOOP": self._verbose,
            "CHANNEL STATUS": self._channel_status,
            "SET MUSIC": self._set_music,
            "DATABASE PUT": self._database_put,
            "DATABASE GET": self._database_get,
            "DATABASE DEL": self._database_del,
            "SET CALLERID": self._set_callerid,
            "RECORD FILE": self._record_file,
        }

    def environment(self) -> list[tuple[str, str]]:
        chan = self.call.channel
        env = [
            ("network", "yes"),
            ("network_script", self.script),
            ("request", self.url),
            ("channel", chan.name),
            ("language", chan.language),
            ("type", chan.tech),
            ("uniqueid", chan.uniqueid),
            ("version", ASTERISK_VERSION),
            ("callerid", chan.caller_num or "unknown"),
            ("calleridname", chan.caller_name or "unknown"),
            ("callingpres", "0"),
            ("callingani2", "0"),
            ("callington", "0"),
            ("callingtns", "0"),
            ("dnid", self.call.script.dnid or "unknown"),
            ("rdnis", "unknown"),
            ("context", chan.context),
            ("extension", chan.exten),
            ("priority", str(chan.priority)),
            ("enhanced", "0.0"),
            ("accountcode", chan.accountcode),
            ("threadid", str(self.call.thread_id)),
        ]
        env += [(f"arg_{i}", arg) for i, arg in enumerate(self.args, start=1)]
        return env

    async def run(self) -> str:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            logger.warning(
                "Connecting to '%s:%s' failed for url '%s': %s", self.host, self.port, self.url, exc
            )
            return "FAILURE"
        try:
            writer.write(self._codec.environment_block(self.environment()))
            await writer.drain()
            await self._loop(reader, writer)
        except (ConnectionError, AgiProtocolError) as exc:
            logger.info("FastAGI %s ended: %s", self.url, exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        if self.call.hung_up:
            return "HANGUP"
        return "FAILURE" if self._failed else "SUCCESS"

    async def _read_command(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Command | None:
        """Next command; None at EOF (or at the hangup when AGIEXITONHANGUP=yes).

        The unsolicited ``HANGUP`` line is written as soon as the hangup is seen while no command
        runs (so it comes before the reply to the next command, as recorded).
        """
        while True:
            if self.call.hung_up and not self._notice_sent:
                self._notice_sent = True
                writer.write(self._codec.hangup_notice())
                if self._exit_on_hangup():
                    writer.write(self._codec.hangup_notice())
                    return None
            event = self._codec.next_command()
            if isinstance(event, Command):
                return event
            if isinstance(event, ConnectionClosed):
                return None
            assert isinstance(event, NeedData)
            read: asyncio.Task[bytes] = asyncio.ensure_future(reader.read(4096))
            if not self._notice_sent:
                hangup = asyncio.ensure_future(self.call.hangup_event.wait())
                await asyncio.wait((read, hangup), return_when=asyncio.FIRST_COMPLETED)
                hangup.cancel()
                if not read.done():
                    read.cancel()
                    continue
            self._codec.receive_data(await read)

    def _exit_on_hangup(self) -> bool:
        return self.call.channel.variables.get("AGIEXITONHANGUP", "").lower() in ("yes", "1", "true")

    async def _loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            command = await self._read_command(reader, writer)
            if command is None:
                return
            result = await self._execute(command)
            writer.write(result.reply)
            await writer.drain()

    async def _execute(self, command: Command) -> CommandResult:
        call = self.call
        command_id = str(call.pbx.rng.randint(1, 2**31 - 1))
        text = command.raw
        call.emit("AGIExecStart", "agi,all", ("CommandId", command_id), ("Command", text))
        name, handler = self._lookup(command.words)
        if handler is None:
            result = CommandResult(AgiClientConnection.format_reply(510), 510, "Invalid or unknown command")
        elif call.hung_up and name in MEDIA_COMMANDS:
            result = CommandResult(AgiClientConnection.format_reply(511), 511, DEAD_MESSAGE)
        else:
            result = await handler(command)
        if result.failed:
            self._failed = True
        call.emit(
            "AGIExecEnd",
            "agi,all",
            ("CommandId", command_id),
            ("Command", text),
            ("ResultCode", str(result.code)),
            ("Result", result.text),
        )
        return result

    def _lookup(
        self, words: tuple[str, ...]
    ) -> tuple[str, Callable[[Command], Awaitable[CommandResult]] | None]:
        upper = [w.upper() for w in words]
        for size in (3, 2, 1):
            name = " ".join(upper[:size])
            if len(upper) >= size and name in self._handlers:
                return name, self._handlers[name]
        return " ".join(upper[:2]), None

    # --- media ---------------------------------------------------------------------
    async def _answer(self, command: Command) -> CommandResult:
        self.call.answer()
        return _ok(0)

    async def _hangup(self, command: Command) -> CommandResult:
        self.call.request_hangup(cause="32", soft=True)
        return _ok(1)

    async def _play(self, sound: str, escape: str) -> tuple[int, str | None] | None:
        """Play ``sound``: (samples played, digit pressed or None); None when the file is missing."""
        duration = self.call.pbx.sound_duration(sound)
        if duration is None:
            return None
        if not escape:
            if not await self.call.sleep(duration):
                raise ChannelHungUp
            return samples(duration), None
        digit = await self.call.read_digit(duration, accept=escape)
        return samples(min(duration, self.call.last_read_s)), digit

    async def _stream_file(self, command: Command) -> CommandResult:
        words = command.words
        if len(words) < 4:
            return _usage("STREAM FILE")
        try:
            played = await self._play(words[2], words[3])
        except ChannelHungUp:
            return CommandResult(AgiClientConnection.format_reply(200, -1, endpos=0), -1, "Failure")
        if played is None:
            return CommandResult(AgiClientConnection.format_reply(200, -1, endpos=0), -1, "Failure")
        endpos, digit = played
        self.call.set_var("PLAYBACKSTATUS", "FAILED" if digit else "SUCCESS")
        return _ok(ord(digit) if digit else 0, endpos=endpos)

    async def _record_file(self, command: Command) -> CommandResult:
        """RECORD FILE file format escape timeout [offset] [BEEP] [s=silence].

        The caller's next utterance (silence when none is left) is written to ``file.format``
        as a WAV, cut to the recorded length or padded with silence.  Silence detection is not
        simulated: the recording ends on an escape digit, the timeout (``-1``: none) or the hangup.
        """
        words = command.words
        if len(words) < 6:
            return _usage("RECORD FILE")
        try:
            timeout_ms = int(words[5])
        except ValueError:
            return _usage("RECORD FILE")
        audio = next(self._utterances, b"")
        try:
            digit = await self.call.read_digit(None if timeout_ms < 0 else timeout_ms / 1000, accept=words[4])
        except ChannelHungUp:
            reply = AgiClientConnection.format_reply(200, -1, "hangup", samples(self.call.last_read_s))
            return CommandResult(reply, -1, "Failure")
        if digit is None:
            endpos = max(0, samples(self.call.last_read_s) - RECORD_SHORT_SAMPLES)
        else:
            endpos = samples(self.call.last_read_s)
        path = f"{words[2]}.{words[3]}"
        try:
            write_recording(path, audio, endpos)
        except OSError as exc:  # res_agi: the file cannot be opened for writing
            logger.warning("RECORD FILE: cannot write %s: %s", path, exc)
            return CommandResult(AgiClientConnection.format_reply(200, -1, "writefile"), -1, "Failure")
        if digit is None:
            return _ok(0, "timeout", endpos)
        return _ok(ord(digit), "dtmf", endpos)

    async def _say_digits(self, command: Command) -> CommandResult:
        words = command.words
        if len(words) < 4:
            return _usage("SAY DIGITS")
        try:
            digit = await self.call.read_digit(0.75 * len(words[2]), accept=words[3])
        except ChannelHungUp:
            return CommandResult(AgiClientConnection.format_reply(200, -1), -1, "Failure")
        return _ok(ord(digit) if digit else 0)

    async def _get_data(self, command: Command) -> CommandResult:
        words = command.words
        if len(words) < 3:
            return _usage("GET DATA")
        try:
            timeout_s = int(words[3]) / 1000 if len(words) > 3 and int(words[3]) > 0 else 6.0
            max_digits = int(words[4]) if len(words) > 4 else 1024
        except ValueError:
            return _usage("GET DATA")
        digits = ""
        try:
            played = await self._play(words[2], "0123456789*#")
            if played is not None and played[1] is not None:
                digits = played[1]
            while len(digits) < max_digits:
                if digits.endswith("#"):
                    digits = digits[:-1]
                    break
                digit = await self.call.read_digit(timeout_s, accept="0123456789*#")
                if digit is None:
                    return _ok(digits, data="timeout")
                digits += digit
        except ChannelHungUp:
            return _ok(-1)
        return _ok(digits)

    async def _wait_for_digit(self, command: Command) -> CommandResult:
        words = command.words
        if len(words) != 4:
            return _usage("WAIT FOR DIGIT")
        try:
            timeout_ms = int(words[3])
        except ValueError:
            return _usage("WAIT FOR DIGIT")
        try:
            digit = await self.call.read_digit(None if timeout_ms < 0 else timeout_ms / 1000, accept=None)
        except ChannelHungUp:
            return CommandResult(AgiClientConnection.format_reply(200, -1), -1, "Failure")
        return _ok(ord(digit) if digit else 0)

    async def _set_music(self, command: Command) -> CommandResult:
        words = command.words
        if len(words) < 3:
            return _usage("SET MUSIC")
        if words[2].lower() == "on":
            self.call.emit(
                "MusicOnHoldStart", "call,all", ("Class", words[3] if len(words) > 3 else "default")
            )
        else:
            self.call.emit("MusicOnHoldStop", "call,all")
        return _ok(0)

    # --- variables and misc ------------------------------------------------------
    async def _set_variable(self, command: Command) -> CommandResult:
        if len(command.words) != 4:
            return _usage("SET VARIABLE")
        self.call.set_var(command.words[2], command.words[3])
        return _ok(1)

    async def _get_variable(self, command: Command) -> CommandResult:
        if len(command.words) != 3:
            return _usage("GET VARIABLE")
        value = self.call.lookup(command.words[2])
        return _ok(0) if value is None else _ok(1, data=value)

    async def _get_full_variable(self, command: Command) -> CommandResult:
        if len(command.words) < 4:
            return _usage("GET FULL VARIABLE")
        return _ok(1, data=self.call.expand(command.words[3]))

    async def _exec(self, command: Command) -> CommandResult:
        words = command.words
        if len(words) < 2:
            return _usage("EXEC")
        status = await self.call.exec_app(words[1], words[2] if len(words) > 2 else "")
        if status == -2:
            return CommandResult(AgiClientConnection.format_reply(200, -2), 200, "Unknown Result")
        return _ok(status)

    async def _verbose(self, command: Command) -> CommandResult:
        return _ok(1)

    async def _channel_status(self, command: Command) -> CommandResult:
        state = self.call.channel.state
        return _ok(6 if state == ChannelState.UP else 4 if state == ChannelState.RING else 0)

    async def _database_put(self, command: Command) -> CommandResult:
        words = command.words
        if len(words) != 5:
            return _usage("DATABASE PUT")
        self.call.pbx.astdb[(words[2], words[3])] = words[4]
        return _ok(1)

    async def _database_get(self, command: Command) -> CommandResult:
        words = command.words
        if len(words) != 4:
            return _usage("DATABASE GET")
        value = self.call.pbx.astdb.get((words[2], words[3]))
        return _ok(0) if value is None else _ok(1, data=value)

    async def _database_del(self, command: Command) -> CommandResult:
        words = command.words
        if len(words) != 4:
            return _usage("DATABASE DEL")
        return _ok(1 if self.call.pbx.astdb.pop((words[2], words[3]), None) is not None else 0)

    async def _set_callerid(self, command: Command) -> CommandResult:
        if len(command.words) < 3:
            return _usage("SET CALLERID")
        self.call.set_callerid(command.words[2])
        return _ok(1)
