"""The web side: the routing JSON API (sessions, live snapshot, agent actions, callbacks), with auth."""
