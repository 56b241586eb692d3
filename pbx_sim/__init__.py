"""The simulated PBX: Asterisk 22's side of FastAGI and AMI, with app_queue semantics.

It plays the recordings of ``asterisk-captures/`` for the tests, the benchmarks and
``guichet demo``; it never replaces the real Asterisk configuration.
"""

from __future__ import annotations

from pbx_sim.app_queue import MemberConfig, QueueConfig
from pbx_sim.call import CallOutcome
from pbx_sim.clock import SimClock
from pbx_sim.dialplan import Dialplan, Step, inbound_dialplan
from pbx_sim.pbx import CallHandle, SimConfig, SimulatedPbx
from pbx_sim.scenario import Callee, CallerScript, Delay, KeyPress, PoissonCallers, SimAgent

__all__ = [
    "CallHandle",
    "CallOutcome",
    "Callee",
    "CallerScript",
    "Delay",
    "Dialplan",
    "KeyPress",
    "MemberConfig",
    "PoissonCallers",
    "QueueConfig",
    "SimAgent",
    "SimClock",
    "SimConfig",
    "SimulatedPbx",
    "Step",
    "inbound_dialplan",
]
