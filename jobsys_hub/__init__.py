"""The hub: PCs join one `jobsys up` over its HTTP port with per-PC worker tokens.

The hub runs each call as the worker account behind the token (claims and the
authenticated role in the call's transaction, as PostgREST does), fans database events out
to the workers' WebSockets, and keeps their screenshots. No database credential leaves it.
Protocol: jobsys/hub_protocol.py; client: jobsys/transport/hub.py.
"""
