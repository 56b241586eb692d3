"""Errors of the routing layer, one type per failure kind.

The AMI ones share the base :class:`AmiError` so that a caller can catch
everything AMI-related at once, or a precise kind when it cares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routing.ami import AmiMessage


class AmiError(Exception):
    """Base class of every AMI error."""


class AmiProtocolError(AmiError):
    """The AMI byte stream broke the protocol: garbage, a limit exceeded, EOF mid-message."""


class AmiConnectionLost(AmiError):
    """The AMI connection is down (or dropped while an action was waiting for its reply)."""


class AmiAuthError(AmiError):
    """Asterisk refused the AMI login (the message names the user, never the secret)."""


class AmiTimeout(AmiError, TimeoutError):
    """An AMI action got no complete reply in time."""


class AmiActionError(AmiError):
    """Asterisk answered an action with ``Response: Error``; ``message`` is its ``Message`` header."""

    def __init__(self, action: str, response: AmiMessage) -> None:
        self.action = action
        self.response = response
        self.message = response.get("Message", "") or ""
        super().__init__(f"AMI action {action} failed: {self.message or response.name}")
