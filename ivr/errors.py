"""Errors of the FastAGI layer, one type per failure kind.

* :class:`AgiProtocolError` - the bytes are wrong: malformed line, a limit exceeded, EOF in
  the middle of a frame.  The connection cannot be trusted any more and must be closed.
* :class:`AgiHangup` - the channel is gone: ``511`` on a dead channel, a media command that
  fails after Asterisk's unsolicited ``HANGUP`` line, GET DATA / WAIT FOR DIGIT ``result=-1``,
  Asterisk closing the socket.
* :class:`AgiCommandError` - Asterisk refused the command: ``510`` unknown command, ``520``
  usage (with its text lines), or a result code that the typed helper defines as a failure
  (STREAM FILE ``result=-1 endpos=0`` = missing sound file, EXEC ``result=-2`` = unknown
  application).
* :class:`AgiTimeout` - a reply (or the environment block) did not come in time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ivr.agi import Reply


class AgiError(Exception):
    """Base class of every FastAGI error."""


class AgiProtocolError(AgiError):
    """Malformed bytes, a size limit exceeded, or EOF in the middle of a frame."""


class AgiHangup(AgiError):
    """The channel is gone (dead channel, hangup during a media command, socket closed)."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class AgiCommandError(AgiError):
    """Asterisk rejected the command (510, 520) or the helper's result code means failure."""

    def __init__(self, message: str, reply: Reply) -> None:
        super().__init__(message)
        self.reply = reply

    @property
    def usage(self) -> tuple[str, ...]:
        """The usage text lines of a 520 reply (empty otherwise)."""
        return self.reply.usage


class AgiTimeout(AgiError):
    """A reply or the environment block did not arrive within its time limit."""
