"""Every name shared between Asterisk and the engine, in one place.

Channel variables (``GUICHET_*`` and the Asterisk ones we read or set), AMI
event names and AMI header names.  The dialplan generator, the AGI handlers,
the AMI client and the simulated PBX all import them from here, so a rename
is a one-line change that cannot leave two sides out of step.
"""

from __future__ import annotations

from typing import Final

# --- Channel variables set by the engine (read by the dialplan) -------------
GUICHET_QUEUE: Final = "GUICHET_QUEUE"  # queue the caller must join
GUICHET_PRIO: Final = "GUICHET_PRIO"  # urgency chosen by the IVR (copied to QUEUE_PRIO)
GUICHET_IVR_DONE: Final = "GUICHET_IVR_DONE"  # "1" once the IVR handed the call back on purpose
GUICHET_CITIZEN_ID: Final = "GUICHET_CITIZEN_ID"
GUICHET_CONTACT_ID: Final = "GUICHET_CONTACT_ID"
GUICHET_REASON: Final = "GUICHET_REASON"  # menu choice that routed the call (top reasons KPI)
GUICHET_CALLBACK_ID: Final = "GUICHET_CALLBACK_ID"
GUICHET_TRANSFER: Final = "GUICHET_TRANSFER"  # external number the dialplan must Dial (emergencies: 119)
GUICHET_URGENCY: Final = "GUICHET_URGENCY"  # urgency level name chosen by the IVR (normal/high/urgent)
GUICHET_QUEUED_AT: Final = "GUICHET_QUEUED_AT"  # ${EPOCH} set by the dialplan just before Queue()
GUICHET_CALLBACK_NUMBER: Final = "GUICHET_CALLBACK_NUMBER"  # number a queued callback dials (Originate)
GUICHET_CALLBACK_CONFIRMED: Final = "GUICHET_CALLBACK_CONFIRMED"  # "1" once the called citizen confirmed
# set by agi_scripts/speech_capture.py (EAGI): the key recognised ("" if none), what was heard,
# the confidence (0.00-1.00) and the reason (ivr.speech.Reason: "recognised", "no speech"...)
GUICHET_SPEECH_CHOICE: Final = "GUICHET_SPEECH_CHOICE"
GUICHET_SPEECH_TEXT: Final = "GUICHET_SPEECH_TEXT"
GUICHET_SPEECH_CONFIDENCE: Final = "GUICHET_SPEECH_CONFIDENCE"
GUICHET_SPEECH_REASON: Final = "GUICHET_SPEECH_REASON"

# --- Sounds the dialplan plays itself (built by `guichet prompts build`) -------
APOLOGY_SOUND: Final = "guichet/service-indisponible"  # fail-safe path: the engine did not route the call
# app_queue's periodic announcement: "press 1 to be called back, you keep your place"
CALLBACK_OFFER_SOUND: Final = "guichet/offre-rappel"

# --- Asterisk channel variables ---------------------------------------------
QUEUE_PRIO: Final = "QUEUE_PRIO"
QUEUESTATUS: Final = "QUEUESTATUS"
QUEUEPOSITION: Final = "QUEUEPOSITION"
QUEUEWAIT: Final = "QUEUEWAIT"
DIALSTATUS: Final = "DIALSTATUS"
GOSUB_RESULT: Final = "GOSUB_RESULT"
AGISTATUS: Final = "AGISTATUS"
CHANNEL_LANGUAGE: Final = "CHANNEL(language)"

# --- AMI header names ---------------------------------------------------------
H_ACTION: Final = "Action"
H_ACTION_ID: Final = "ActionID"
H_RESPONSE: Final = "Response"
H_EVENT: Final = "Event"
H_MESSAGE: Final = "Message"
H_EVENT_LIST: Final = "EventList"
H_LIST_ITEMS: Final = "ListItems"
H_PRIVILEGE: Final = "Privilege"
H_USERNAME: Final = "Username"
H_SECRET: Final = "Secret"
H_EVENTS: Final = "Events"
H_CHANNEL: Final = "Channel"
H_UNIQUEID: Final = "Uniqueid"
H_LINKEDID: Final = "Linkedid"
H_QUEUE: Final = "Queue"
H_POSITION: Final = "Position"
H_COUNT: Final = "Count"
H_PRIORITY: Final = "Priority"
H_INTERFACE: Final = "Interface"
H_MEMBER_NAME: Final = "MemberName"
H_STATE_INTERFACE: Final = "StateInterface"
H_PAUSED: Final = "Paused"
H_REASON: Final = "Reason"
H_IMMEDIATE: Final = "Immediate"
H_CALLER: Final = "Caller"
H_VARIABLE: Final = "Variable"
H_VALUE: Final = "Value"
H_CALLER_ID_NUM: Final = "CallerIDNum"
H_CALLER_ID_NAME: Final = "CallerIDName"
H_DEST_CHANNEL: Final = "DestChannel"
H_BRIDGE_ID: Final = "BridgeId"
H_DURATION: Final = "Duration"

# --- AMI event names the engine subscribes to ---------------------------------
EV_FULLY_BOOTED: Final = "FullyBooted"
EV_NEWCHANNEL: Final = "Newchannel"
EV_HANGUP: Final = "Hangup"
EV_VARSET: Final = "VarSet"
EV_QUEUE_CALLER_JOIN: Final = "QueueCallerJoin"
EV_QUEUE_CALLER_LEAVE: Final = "QueueCallerLeave"
EV_QUEUE_CALLER_ABANDON: Final = "QueueCallerAbandon"
EV_AGENT_CALLED: Final = "AgentCalled"
EV_AGENT_CONNECT: Final = "AgentConnect"
EV_AGENT_COMPLETE: Final = "AgentComplete"
EV_AGENT_RING_NO_ANSWER: Final = "AgentRingNoAnswer"
EV_QUEUE_MEMBER_ADDED: Final = "QueueMemberAdded"
EV_QUEUE_MEMBER_REMOVED: Final = "QueueMemberRemoved"
EV_QUEUE_MEMBER_PAUSE: Final = "QueueMemberPause"
EV_QUEUE_MEMBER_STATUS: Final = "QueueMemberStatus"
EV_ORIGINATE_RESPONSE: Final = "OriginateResponse"
EV_QUEUE_MEMBER_PENALTY: Final = "QueueMemberPenalty"

# --- AMI Originate (queued callbacks: routing/callbacks.py) -------------------------------
ORIGINATE: Final = "Originate"  # the action
H_CONTEXT: Final = "Context"
H_EXTEN: Final = "Exten"
H_TIMEOUT: Final = "Timeout"  # Originate: ms the originated channel may ring
H_CALLERID: Final = "CallerID"  # Originate: '"Name" <number>'
H_ASYNC: Final = "Async"

# --- AGI routes the dialplan calls after Queue() and on a queued callback's legs (ivr/queue_exits.py) ---
ROUTE_OVERFLOW: Final = "overflow"  # after the service Queue(): timeout, joinempty... -> general or callback
ROUTE_CALLBACK_OFFER: Final = "callback-offer"  # a key pressed while queued (the queue's exit context)
ROUTE_CALLBACK_CONFIRM: Final = "callback-confirm"  # the called citizen's leg, in Dial's U() subroutine
ROUTE_CALLBACK_RESULT: Final = "callback-result"  # the agent's leg once Dial() returned (DIALSTATUS)
