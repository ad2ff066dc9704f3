"""Test identities and their JWTs, shaped like Supabase Auth's.

The tokens are not signed: our PostgREST and Realtime doubles read the claims without
verifying them (signature checks are Supabase's job, exercised only by the live tests).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from typing import Any

TOKEN_TTL_S = 3600


def _segment(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()


def make_token(claims: dict[str, Any]) -> str:
    return f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(claims)}.dW5zaWduZWQ"


@dataclasses.dataclass(frozen=True)
class Identity:
    name: str
    claims: dict[str, Any]

    @property
    def token(self) -> str:
        return make_token(self.claims)

    @property
    def db_role(self) -> str:
        return str(self.claims.get("role", "anon"))


def _claims(role: str, **extra: Any) -> dict[str, Any]:
    return {"iss": "supabase", "role": role, "exp": int(time.time()) + TOKEN_TTL_S, **extra}


def user(name: str, jobsys_role: str | None) -> Identity:
    app_metadata = {"provider": "email"} | ({"jobsys_role": jobsys_role} if jobsys_role else {})
    return Identity(name, _claims("authenticated", sub=str(uuid.uuid4()), email=f"{name}@example.test",
                                  aud="authenticated", app_metadata=app_metadata))


ANON = Identity("anon", _claims("anon"))  # the anon key is itself a JWT with role anon
SERVICE = Identity("service", _claims("service_role"))
