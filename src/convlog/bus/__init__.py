"""Talking to processes over ZeroMQ: the broker (XSUB/XPUB proxy), opt-in CURVE security
for it and its clients (:mod:`.curve`), a publisher client, the endpoint probe, and the
recorder's control channel (protocol and client).

Below both the recorder and the readers, so that either may publish or ask the
recorder something without importing the other.
"""
