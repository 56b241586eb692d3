"""The service queues of the single number (``asterisk_conf/queues.conf``), in one place."""

from __future__ import annotations

from typing import Final

GENERAL_QUEUE: Final = "accueil"  # the general front office: where every call lands when in doubt
# APA (elderly allowance), PMI (maternal and child health), MDPH (disability), school transport,
# RSA and social action, general information.
SERVICE_QUEUES: Final = ("apa", "pmi", "mdph", "transport", "rsa", GENERAL_QUEUE)
