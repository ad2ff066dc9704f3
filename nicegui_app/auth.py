"""The bearer token: where it comes from, and how requests and page sessions prove it.

Embedded mode: $JOBSYS_API_TOKEN, else a token generated once, printed once by the caller and
never written down: the data dir keeps only its SHA-256 digest (`api_token.sha256`, mode
0600), and requests and logins are checked against that digest in constant time. A 32-byte
random token needs no slow key derivation: nobody can guess a preimage of its hash. A plain
`api_token` file (what earlier versions kept) is hashed into `api_token.sha256` and removed
at the next start, and the same token keeps working. Pages keep only the token's fingerprint
(the same digest) in the user's session storage, so NiceGUI's storage files never hold the
token itself. Nothing here logs or prints the token.
(Supabase mode: nicegui_app.supabase_auth; the same storage key holds a session id.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
import pathlib
import re
import secrets

log = logging.getLogger(__name__)

ENV_API_TOKEN = "JOBSYS_API_TOKEN"
TOKEN_FILE_NAME = "api_token.sha256"  # the token's SHA-256 digest, hex, one line
PLAIN_TOKEN_FILE_NAME = "api_token"  # earlier versions kept the token itself here
SESSION_SECRET_FILE_NAME = "session_secret"  # signs the dashboard's session cookies
TOKEN_BYTES = 32
SESSION_KEY = "auth"  # app.storage.user key: the token fingerprint, or a Supabase-mode session id
ACCOUNT_PREFIX = "account:"  # SESSION_KEY value of a named operator account: this + its token's digest
ACCOUNT_LABEL_KEY = "account_label"  # "name (role)" for the header
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
_DIGEST = re.compile(r"[0-9a-f]{64}")


class TokenFileError(RuntimeError):
    """The token's hash file is not what jobsys writes; the message says what to do."""


def fingerprint(token: str) -> str:
    """The token's SHA-256 digest (hex): what the data dir and page sessions keep."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class ApiToken:
    """What the server knows of the API token: its digest only. `ApiToken.of("")` (Supabase
    mode, where there is no API token) matches nothing."""

    digest: str = dataclasses.field(repr=False)

    @classmethod
    def of(cls, token: str | ApiToken) -> ApiToken:
        """From the token itself ($JOBSYS_API_TOKEN, a test's), or an ApiToken as it is."""
        if isinstance(token, ApiToken):
            return token
        return cls(fingerprint(token) if token else "")

    def matches(self, presented: str | None) -> bool:
        if not presented or not self.digest:
            return False
        return hmac.compare_digest(fingerprint(presented).encode(), self.digest.encode())


def token_matches(presented: str | None, token: str | ApiToken) -> bool:
    return ApiToken.of(token).matches(presented)


def account_digest(stored: object) -> str | None:
    """The token digest of a named operator account's session, or None for any other session."""
    if isinstance(stored, str) and stored.startswith(ACCOUNT_PREFIX):
        return stored.removeprefix(ACCOUNT_PREFIX)
    return None


def session_matches(stored_fingerprint: object, token: str | ApiToken) -> bool:
    expected = ApiToken.of(token).digest
    if not isinstance(stored_fingerprint, str) or not expected:
        return False
    return hmac.compare_digest(stored_fingerprint.encode(), expected.encode())


def load_or_create_token(data_dir: pathlib.Path | str) -> tuple[ApiToken, str | None]:
    """The API token to check requests against, and the token itself when it was generated
    now (the caller prints it once: it is not kept anywhere), else None.

    $JOBSYS_API_TOKEN wins and nothing is written. Otherwise `<data_dir>/api_token.sha256`;
    a plain `api_token` file is hashed into it first and removed (the log says so, without the
    token). Raises TokenFileError for a hash file that does not hold a SHA-256 digest."""
    from_env = os.environ.get(ENV_API_TOKEN, "").strip()
    if from_env:
        return ApiToken.of(from_env), None
    directory = pathlib.Path(data_dir)
    private_dir(directory)
    hashed = directory / TOKEN_FILE_NAME
    _migrate_plain_file(directory / PLAIN_TOKEN_FILE_NAME, hashed)
    try:
        return _read_digest(hashed), None
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(TOKEN_BYTES)
    if _write_private(hashed, fingerprint(token), replace=False):
        return ApiToken(fingerprint(token)), token
    return _read_digest(hashed), None  # another process started at the same moment: its token


def load_or_create_session_secret(data_dir: pathlib.Path | str) -> str:
    """The key that signs the dashboard's session cookies, kept in `<data_dir>/session_secret`
    (mode 0600) so a restart does not log every browser out. Whoever can read it can read the
    database in the same directory, so it opens nothing new."""
    directory = pathlib.Path(data_dir)
    private_dir(directory)
    path = directory / SESSION_SECRET_FILE_NAME
    if not path.exists():
        _write_private(path, secrets.token_hex(32), replace=False)
    os.chmod(path, PRIVATE_FILE_MODE)
    return path.read_text(encoding="utf-8").strip()


def private_dir(path: pathlib.Path) -> None:
    """Create `path` (and missing parents) readable by the owner only. An existing directory
    keeps its mode: it may be one the operator chose, shared with other things."""
    if not path.is_dir():
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(path, PRIVATE_DIR_MODE)


def _migrate_plain_file(plain: pathlib.Path, hashed: pathlib.Path) -> None:
    try:
        stored = plain.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return  # nothing to migrate (or another process just did)
    if stored:
        _write_private(hashed, fingerprint(stored), replace=True)
        log.warning("the API token was kept in plain text in %s; it is now kept as its SHA-256 hash in %s "
                    "and the plain file is removed. The token is unchanged.", plain, hashed)
    plain.unlink(missing_ok=True)  # an empty one is what an interrupted write of an old version left


def _read_digest(path: pathlib.Path) -> ApiToken:
    text = path.read_text(encoding="utf-8").strip()
    if not _DIGEST.fullmatch(text):
        raise TokenFileError(f"{path} does not hold an API token's SHA-256 hash; delete it and start again "
                             "to generate a new token (or set $JOBSYS_API_TOKEN)")
    os.chmod(path, PRIVATE_FILE_MODE)  # tighten a file someone copied in with looser modes
    return ApiToken(text)


def _write_private(path: pathlib.Path, digest: str, *, replace: bool) -> bool:
    """Write `digest` (or another one-line secret) to `path` (mode 0600) all at once: a reader sees the whole file or none.
    replace=False: only if `path` does not exist yet (False when it does, e.g. another process
    starting at the same moment wrote it first)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(digest + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path)  # atomic, and fails if the file exists
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)
