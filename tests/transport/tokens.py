"""Test identities and their JWTs, shaped like Supabase Auth's.

The tokens are signed HS256 with a test secret (a legacy-JWT-secret project), and our
PostgREST and Realtime doubles check that signature as Supabase's services do, so a token
with altered claims is refused; Supabase's own checks (JWKS, asymmetric keys) are exercised
only by the live tests.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

TOKEN_TTL_S = 3600
JWT_SECRET = b"jobsys-test-doubles-jwt-secret-not-a-real-one"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(data: dict[str, Any]) -> str:
    return _b64(json.dumps(data, separators=(",", ":")).encode())


def _signature(signing_input: str) -> str:
    return _b64(hmac.new(JWT_SECRET, signing_input.encode(), hashlib.sha256).digest())


def make_token(claims: dict[str, Any]) -> str:
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(claims)}"
    return f"{signing_input}.{_signature(signing_input)}"


def signature_valid(token: str) -> bool:
    """Whether the project's (test) secret signed this JWT: what PostgREST and Realtime check."""
    head, dot, signature = token.rpartition(".")
    return bool(dot) and head.count(".") == 1 and hmac.compare_digest(signature, _signature(head))


def forged(token: str, **claims: Any) -> str:
    """The token with claims changed and its old signature kept, as a tamperer would."""
    header, body, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return f"{header}.{_segment({**decoded, **claims})}.{signature}"


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
