"""The bearer token of a hub request, as the digest the database looks accounts up by."""

from __future__ import annotations

import re
from typing import Mapping

from jobsys import errors
from jobsys.worker_accounts import token_digest

_BEARER = re.compile(r"^Bearer ([\x21-\x7e]{1,200})$")


def presented_digest(headers: Mapping[str, str]) -> str:
    """The SHA-256 digest of the request's bearer token; Unauthorized without a well-formed one."""
    match = _BEARER.match(headers.get("authorization", "").strip())
    if match is None:
        raise errors.Unauthorized("send this PC's worker token as 'Authorization: Bearer <token>' "
                                  "(jobsys workers add NAME makes one)")
    return token_digest(match.group(1))
