"""The hub's wire protocol, shared by the hub (server) and HubTransport (client).

    POST {server}/hub/v1/rpc/{function}   body: the named arguments as a JSON object
        200 {"rows": [...]}   else the API's error shape {"error": {"code", "message", "details"}}
    GET  {server}/hub/v1/events            WebSocket; the client sends {"subscribe": [topics]},
        the hub answers {"type": "subscribed", "topics": [...]} (or closes with a reason), then
        sends {"type": "event", "topic", "event", "payload"} for each event.

Every request carries `Authorization: Bearer <worker token>`. The hub closes a socket with
CLOSE_REVOKED when the account is revoked and CLOSE_PUSH_RESTART when its own database
listener was lost (events may have been missed: reconnect and resync).
"""

from __future__ import annotations

MOUNT = "/hub"  # where `jobsys up` mounts the hub beside the dashboard
PREFIX = MOUNT + "/v1"
RPC_PATH = PREFIX + "/rpc/{function}"
EVENTS_PATH = PREFIX + "/events"
EVIDENCE_PATH = PREFIX + "/evidence/{assignment_id}/{attempt}"

MAX_CALL_BYTES = 4 * 1024 * 1024  # a finish_assignments of 1,000 reports is well under this
MAX_TOPICS = 16

CLOSE_UNAUTHORIZED = 4401  # unknown or revoked token: do not reconnect
CLOSE_REVOKED = 4403  # revoked while connected: do not reconnect
CLOSE_FORBIDDEN_TOPIC = 4003  # a topic this account may not receive
CLOSE_BAD_REQUEST = 4000
CLOSE_PUSH_RESTART = 1012  # "service restart": reconnect, then resync
FINAL_CLOSE_CODES = frozenset({CLOSE_UNAUTHORIZED, CLOSE_REVOKED, CLOSE_FORBIDDEN_TOPIC, CLOSE_BAD_REQUEST})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
