"""The hub's wire protocol, shared by the hub (server) and HubTransport (client).

    POST {server}/hub/v1/rpc/{function}   body: the named arguments as a JSON object
        200 {"rows": [...]}   else the API's error shape {"error": {"code", "message", "details"}}
    GET  {server}/hub/v1/events            WebSocket; the client sends {"subscribe": [topics]},
        the hub answers {"type": "subscribed", "topics": [...]} (or closes with a reason), then
        sends {"type": "event", "topic", "event", "payload"} for each event.

    PUT  {server}/hub/v1/evidence/{assignment_id}/{attempt}   body: a run's screenshot
        (Content-Type image/png, image/jpeg or image/webp, matching the bytes' magic number;
        at most EVIDENCE_MAX_BYTES) -> 200 {"uri": "hub:evidence/<assignment_id>-<attempt>.<ext>"};
        401 unknown or revoked token, 403 not a run of this PC's, 409 the run has moved on to
        another attempt, 413 too large, 415 not such an image. Sending it again overwrites.

Every request carries `Authorization: Bearer <worker token>`. The hub closes a socket with
CLOSE_REVOKED when the account is revoked and CLOSE_PUSH_RESTART when its own database
listener was lost (events may have been missed: reconnect and resync).
"""

from __future__ import annotations

import re

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


# Screenshots (jobsys_hub.evidence, jobsys.transport.hub_evidence). A run's result names its
# stored screenshot with a URI made from the run alone, so a worker can report the run
# before the upload lands (it retries from its queue): hub:evidence/<assignment>-<attempt>.<ext>.
# Operators fetch it from the dashboard's API at SCREENSHOT_URL, never from the hub.
EVIDENCE_MAX_BYTES = 10 * 1024 * 1024
EVIDENCE_URI_PREFIX = "hub:evidence/"
SCREENSHOT_URL = "/api/runs/{assignment_id}/{attempt}/screenshot"
# Content type -> file suffix and the magic number its bytes start with (WebP: RIFF....WEBP).
EVIDENCE_TYPES: dict[str, str] = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
_SUFFIX_TYPES = {suffix: content_type for content_type, suffix in EVIDENCE_TYPES.items()}
_EVIDENCE_NAME = re.compile(r"^([1-9][0-9]{0,18})-([1-9][0-9]{0,9})(\.png|\.jpg|\.webp)$")
BIGINT_MAX = 2**63 - 1
INT_MAX = 2**31 - 1


def sniff_image(head: bytes) -> str | None:
    """The content type the bytes' magic number says (one of EVIDENCE_TYPES), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def valid_run(assignment_id: int, attempt: int) -> bool:
    """Within the columns' ranges (bigint id, integer attempt, both from 1)."""
    return 1 <= assignment_id <= BIGINT_MAX and 1 <= attempt <= INT_MAX


def evidence_file_name(assignment_id: int, attempt: int, content_type: str) -> str:
    """The stored file's name, made from validated integers only: `<assignment>-<attempt>.<ext>`."""
    if not valid_run(assignment_id, attempt):
        raise ValueError("assignment id or attempt out of range")
    return f"{int(assignment_id)}-{int(attempt)}{EVIDENCE_TYPES[content_type]}"


def evidence_run(file_name: str) -> int | None:
    """The run (assignment id) a stored screenshot's file name belongs to, or None."""
    match = _EVIDENCE_NAME.match(file_name)
    return int(match.group(1)) if match else None


def evidence_uri(assignment_id: int, attempt: int, content_type: str) -> str:
    return EVIDENCE_URI_PREFIX + evidence_file_name(assignment_id, attempt, content_type)


def parse_evidence_uri(uri: object) -> tuple[int, int, str] | None:
    """(assignment id, attempt, content type) of a hub evidence URI; None for anything else
    (a local path, a Supabase Storage URI)."""
    if not isinstance(uri, str) or not uri.startswith(EVIDENCE_URI_PREFIX):
        return None
    match = _EVIDENCE_NAME.match(uri.removeprefix(EVIDENCE_URI_PREFIX))
    if match is None:
        return None
    assignment_id, attempt = int(match.group(1)), int(match.group(2))
    if not valid_run(assignment_id, attempt):
        return None
    return assignment_id, attempt, _SUFFIX_TYPES[match.group(3)]


def screenshot_url(evidence_path: object) -> str | None:
    """Where an operator fetches the screenshot a run's result names, relative to the
    dashboard's address; None unless it is a hub evidence URI (Supabase mode keeps its
    Storage URI, the embedded worker its local path)."""
    parsed = parse_evidence_uri(evidence_path)
    if parsed is None:
        return None
    return SCREENSHOT_URL.format(assignment_id=parsed[0], attempt=parsed[1])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
