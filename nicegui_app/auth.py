"""The bearer token: where it comes from, and how requests and page sessions prove it.

Embedded mode: $JOBSYS_API_TOKEN, else a token generated once and kept (mode 0600) in
the data dir. Pages keep only a fingerprint of the token in the user's session storage,
so NiceGUI's storage files never hold the token itself. Nothing here logs the token.
(Supabase mode: nicegui_app.supabase_auth; the same storage key holds a session id.)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pathlib
import secrets

ENV_API_TOKEN = "JOBSYS_API_TOKEN"
TOKEN_FILE_NAME = "api_token"
TOKEN_BYTES = 32
SESSION_KEY = "auth"  # app.storage.user key: the token fingerprint, or a Supabase-mode session id


def load_or_create_token(data_dir: pathlib.Path | str) -> tuple[str, bool]:
    """The API token and whether it was generated now (the caller prints a new one once)."""
    from_env = os.environ.get(ENV_API_TOKEN, "").strip()
    if from_env:
        return from_env, False
    path = pathlib.Path(data_dir) / TOKEN_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        # O_EXCL: two processes starting at once agree on the first token written.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)  # tighten a file someone copied in with looser modes
        stored = path.read_text(encoding="utf-8").strip()
        if stored:
            return stored, False
        path.unlink()  # an empty file (crash mid-write): start over
        return load_or_create_token(data_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token, True


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(presented: str | None, token: str) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(presented.encode(), token.encode())


def session_matches(stored_fingerprint: object, token: str) -> bool:
    if not isinstance(stored_fingerprint, str):
        return False
    return hmac.compare_digest(stored_fingerprint.encode(), fingerprint(token).encode())
