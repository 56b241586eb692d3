"""Agents' presence: log in to / out of the queues of their skills, pause and unpause, over AMI.

What Asterisk does with each action (round-2 recording ``ami_events_member_lifecycle``):

* ``QueueAdd`` (Queue, Interface, MemberName, StateInterface, Paused) makes the agent a dynamic
  member; the StateInterface lets app_queue follow the softphone's device state, so that
  ``ringinuse=no`` skips an agent already on a call and wrap-up (``wrapuptime`` in queues.conf,
  rendered from ``[queues.<name>] wrapup_s``) applies after each call. Adding a member that is
  already there answers ``Response: Error`` / ``Unable to add interface: Already there``.
* ``QueueRemove`` (Queue, Interface); a member that is not there answers
  ``Unable to remove interface: Not there``.
* ``QueuePause`` (Interface, Paused, Reason) without a Queue header pauses the member in every
  queue at once; an interface that is in no queue answers ``Interface not found``.

Login and logout are idempotent. A login that fails in one queue removes the agent again from the
queues this login added it to, so an agent is never left logged in to half of its skills.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from guichet.config import AgentSettings, Settings
from guichet.names import H_INTERFACE, H_MEMBER_NAME, H_PAUSED, H_QUEUE, H_REASON, H_STATE_INTERFACE
from routing.errors import AmiActionError, AmiConnectionLost, AmiError

__all__ = [
    "MAX_REASON_LENGTH",
    "AgentActionFailed",
    "AgentActions",
    "AgentError",
    "AmiSender",
    "AsteriskUnavailable",
    "CurrentAmi",
    "InvalidReason",
    "NotLoggedIn",
    "UnknownAgent",
    "agent_interface",
    "check_reason",
]

log = logging.getLogger(__name__)

MAX_REASON_LENGTH = 80  # characters of a pause reason (shown on the wallboard; Asterisk keeps 80)

# Asterisk's replies (Message header) that mean "nothing to do" (recorded, see the module docstring).
_ALREADY_THERE = "Already there"
_NOT_THERE = "Not there"
_INTERFACE_NOT_FOUND = "Interface not found"


class AgentError(Exception):
    """Base class of the agent actions' errors; the message says which agent and why."""


class UnknownAgent(AgentError):
    """No ``[agents.<id>]`` in the configuration."""


class InvalidReason(AgentError, ValueError):
    """A pause reason that is empty, too long or holds control characters."""


class NotLoggedIn(AgentError):
    """Pause / unpause of an agent that is a member of no queue."""


class AgentActionFailed(AgentError):
    """Asterisk refused an action (``Response: Error``): names the action, agent and queue."""

    def __init__(self, action: str, agent_id: str, queue: str | None, message: str) -> None:
        self.action = action
        self.agent_id = agent_id
        self.queue = queue
        self.message = message
        where = f" in queue {queue}" if queue else ""
        super().__init__(f"{action} of agent {agent_id}{where} refused by Asterisk: {message}")


class AsteriskUnavailable(AgentError):
    """The AMI connection is down or did not answer in time (the action may not have happened)."""


class AmiSender(Protocol):
    """What the agent actions need of :class:`routing.ami_client.AmiClient`."""

    async def send_action(self, action: str, headers: Any = ...) -> Any: ...


class CurrentAmi:
    """An :class:`AmiSender` that uses the AMI client ``current()`` returns now (e.g. ``lambda:
    engine.ami``): None, as on an engine node standing by for the AMI lease, fails the action with
    AmiConnectionLost (so AsteriskUnavailable)."""

    def __init__(self, current: Callable[[], AmiSender | None]) -> None:
        self._current = current

    async def send_action(self, action: str, headers: Any = ()) -> Any:
        ami = self._current()
        if ami is None:
            raise AmiConnectionLost(f"AMI {action}: this engine node holds no AMI connection (standby)")
        return await ami.send_action(action, headers)


def agent_interface(agent_id: str) -> str:
    """The agent's queue member interface (its PJSIP endpoint)."""
    return f"PJSIP/{agent_id}"


def check_reason(reason: str) -> str:
    """The pause reason, stripped; InvalidReason when empty, too long or with control characters."""
    text = reason.strip()
    if not text:
        raise InvalidReason("a pause needs a reason")
    if len(text) > MAX_REASON_LENGTH:
        raise InvalidReason(f"a pause reason is at most {MAX_REASON_LENGTH} characters, not {len(text)}")
    # Cc: C0/C1 controls (CR/LF would break the AMI frame); Zl/Zp: line and paragraph separators.
    bad = sorted({f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")})
    if bad:
        raise InvalidReason(f"a pause reason must not hold control characters ({', '.join(bad)})")
    return text


class AgentActions:
    """Login, logout, pause and unpause of configured agents through ``ami.send_action``.

    Only ``settings.agents`` is read (id -> name, skills).
    """

    def __init__(self, ami: AmiSender, settings: Settings) -> None:
        self._ami = ami
        self._agents: Mapping[str, AgentSettings] = settings.agents

    @property
    def agents(self) -> Mapping[str, AgentSettings]:
        return self._agents

    def agent(self, agent_id: str) -> AgentSettings:
        """The agent's settings; UnknownAgent when not configured."""
        settings = self._agents.get(agent_id)
        if settings is None:
            raise UnknownAgent(f"no agent {agent_id!r} in the configuration")
        return settings

    async def login(self, agent_id: str) -> tuple[str, ...]:
        """Add the agent, unpaused, to every queue of its skills; returns those queues.

        Already a member somewhere: fine (left as it is). A refusal undoes this login's additions,
        then raises AgentActionFailed naming the queue.
        """
        agent = self.agent(agent_id)
        interface = agent_interface(agent_id)
        added: list[str] = []
        for queue in agent.skills:
            headers = [
                (H_QUEUE, queue),
                (H_INTERFACE, interface),
                (H_MEMBER_NAME, agent.name or agent_id),
                (H_STATE_INTERFACE, interface),
                (H_PAUSED, "false"),
            ]
            try:
                if await self._send("QueueAdd", agent_id, queue, headers, ok_when=_ALREADY_THERE):
                    added.append(queue)
            except AgentError:
                await self._undo_login(agent_id, interface, added)
                raise
        log.info("agent %s logged in to %s", agent_id, ", ".join(agent.skills))
        return agent.skills

    async def _undo_login(self, agent_id: str, interface: str, added: Iterable[str]) -> None:
        for queue in added:
            try:
                await self._remove(agent_id, interface, queue)
            except AgentError as exc:
                log.error("agent %s: could not undo the failed login in queue %s: %s", agent_id, queue, exc)

    async def logout(self, agent_id: str) -> tuple[str, ...]:
        """Remove the agent from every queue of its skills (not a member: fine); returns those queues."""
        agent = self.agent(agent_id)
        interface = agent_interface(agent_id)
        for queue in agent.skills:
            await self._remove(agent_id, interface, queue)
        log.info("agent %s logged out of %s", agent_id, ", ".join(agent.skills))
        return agent.skills

    async def pause(self, agent_id: str, reason: str) -> str:
        """Pause the agent in every queue it is a member of; returns the reason as stored."""
        self.agent(agent_id)
        text = check_reason(reason)
        await self._pause(agent_id, [(H_PAUSED, "true"), (H_REASON, text)])
        log.info("agent %s paused", agent_id)  # the reason is free text: not logged
        return text

    async def unpause(self, agent_id: str) -> None:
        """Unpause the agent in every queue it is a member of."""
        self.agent(agent_id)
        await self._pause(agent_id, [(H_PAUSED, "false")])
        log.info("agent %s unpaused", agent_id)

    async def _remove(self, agent_id: str, interface: str, queue: str) -> None:
        headers = [(H_QUEUE, queue), (H_INTERFACE, interface)]
        await self._send("QueueRemove", agent_id, queue, headers, ok_when=_NOT_THERE)

    async def _pause(self, agent_id: str, headers: list[tuple[str, str]]) -> None:
        try:
            await self._send(
                "QueuePause", agent_id, None, [(H_INTERFACE, agent_interface(agent_id)), *headers]
            )
        except AgentActionFailed as exc:
            if exc.message.endswith(_INTERFACE_NOT_FOUND):
                raise NotLoggedIn(f"agent {agent_id} is logged in to no queue") from exc
            raise

    async def _send(
        self,
        action: str,
        agent_id: str,
        queue: str | None,
        headers: list[tuple[str, str]],
        *,
        ok_when: str | None = None,
    ) -> bool:
        """Send one action; True when it changed something, False when Asterisk said ``ok_when``."""
        try:
            await self._ami.send_action(action, headers)
        except AmiActionError as exc:
            if ok_when is not None and exc.message.endswith(ok_when):
                return False
            raise AgentActionFailed(action, agent_id, queue, exc.message or "error") from exc
        except ValueError as exc:  # a header with CR/LF (nothing was sent)
            raise AgentError(f"{action} of agent {agent_id}: {exc}") from exc
        except AmiError as exc:
            raise AsteriskUnavailable(f"{action} of agent {agent_id}: {exc}") from exc
        return True
