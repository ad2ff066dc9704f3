"""Evidence files (screenshots) in Supabase Storage, the Supabase-mode counterpart of the
local evidence directory.

The private bucket and its policies come from migration 20261122000700: a worker user
may write only under `<worker id>/` of a worker session it registered; operators read
everything. Keys are unique per run (assignment and attempt), so a retried upload that
finds its object already there has succeeded.
"""

from __future__ import annotations

import mimetypes
import pathlib
import uuid

import httpx
from storage3 import AsyncStorageClient
from storage3._async.file_api import AsyncBucketProxy
from storage3.exceptions import StorageApiError

from jobsys import errors
from jobsys.transport.supabase import SupabaseTransport

EVIDENCE_BUCKET = "jobsys-evidence"
SIGNED_URL_TTL_S = 3600


def evidence_key(worker_id: uuid.UUID | str, assignment_id: int, attempt: int, suffix: str) -> str:
    return f"{worker_id}/{assignment_id}-{attempt}{suffix}"


def storage_uri(key: str) -> str:
    """How a result names a stored object (the embedded mode stores a file path instead)."""
    return f"supabase-storage://{EVIDENCE_BUCKET}/{key}"


def _map_storage_error(exc: StorageApiError, action: str) -> errors.JobsysError:
    status = str(exc.status)
    if status in ("401", "403"):
        return errors.Forbidden(f"{action}: {exc.message}")
    if status == "404":
        return errors.NotFound(f"{action}: {exc.message} (is migration 20261122000700 applied?)")
    if status.startswith("5"):
        return errors.TransportError(f"{action}: Storage unavailable ({exc.message})")
    return errors.JobsysError(f"{action}: {exc.message}", {"status": status, "code": exc.code})


class EvidenceStore:
    def __init__(self, transport: SupabaseTransport) -> None:
        self._transport = transport
        self._http = httpx.AsyncClient(follow_redirects=True)

    async def close(self) -> None:
        await self._http.aclose()

    async def _bucket(self) -> AsyncBucketProxy:
        # A storage client per call, carrying this user's JWT (not the anon key) on a
        # shared connection pool; storage3 fixes headers at construction.
        token = await self._transport.tokens.token()
        client = self._transport.client
        storage = AsyncStorageClient(str(client.storage_url), {
            "apiKey": self._transport.settings.key, "Authorization": f"Bearer {token}"},
            http_client=self._http)
        return storage.from_(EVIDENCE_BUCKET)

    async def upload(self, worker_id: uuid.UUID | str, assignment_id: int, attempt: int,
                     path: pathlib.Path) -> str:
        """Store a run's evidence file; returns its storage URI for the run's result."""
        key = evidence_key(worker_id, assignment_id, attempt, path.suffix)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        try:
            await (await self._bucket()).upload(key, path.read_bytes(),
                                                {"content-type": content_type, "upsert": "false"})
        except StorageApiError as exc:
            if exc.code != "Duplicate":
                raise _map_storage_error(exc, f"upload {key}") from exc
        except httpx.TransportError as exc:
            raise errors.TransportError(f"upload {key}: Storage unreachable ({exc})") from exc
        return storage_uri(key)

    async def signed_url(self, key: str, ttl_s: int = SIGNED_URL_TTL_S) -> str:
        """A time-limited link for the dashboard to show a private object."""
        try:
            response = await (await self._bucket()).create_signed_url(key, ttl_s)
        except StorageApiError as exc:
            raise _map_storage_error(exc, f"sign {key}") from exc
        except httpx.TransportError as exc:
            raise errors.TransportError(f"sign {key}: Storage unreachable ({exc})") from exc
        url = response["signedURL"] or response["signedUrl"]
        if not url:
            raise errors.JobsysError(f"sign {key}: no URL returned")
        return url
