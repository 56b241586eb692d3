"""SIP-level tests: SIPp scenarios (citizen, agent softphone), their SIPp peers, and the harness."""
