"""Screenshots from a worker PC to the hub, through a bounded queue on disk while the hub is away.

`upload` is called inline, before the run is reported, so it never holds a report up for
long: it tries once with a short deadline (INLINE_TIMEOUT_S; not at all while the hub is
known to be away) and, when the hub cannot be reached, copies the file into the queue
directory and returns the run's URI anyway. The URI is made from the run alone
(hub_protocol.evidence_uri), so the report can name the screenshot before it lands.

A background task sends what the queue holds, oldest first, with backoff and jitter while
the hub is away, until it is empty; it starts with the store, so it also delivers what an
earlier process left. The queue is bounded by files and bytes: adding to a full queue drops
its oldest entries, each with a warning. A refusal that will not change (403 not this PC's
run, 409 the run has moved on, 413, 415) drops the entry with a warning; an unknown or
revoked token (401) stops the task and leaves the files for a later process.

Queue entries are `<enqueued ns>-<assignment>-<attempt>.<ext>`: everything a retry needs is
in the name, and names sort oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pathlib
import random
import re
import ssl
import tempfile
import time
import uuid

import httpx

from jobsys import aio, errors, hub_protocol

log = logging.getLogger(__name__)

QUEUE_DIR_NAME = ".upload-queue"  # inside the worker's evidence directory
INLINE_TIMEOUT_S = 5.0  # the whole inline attempt, connect to answer
CONNECT_TIMEOUT_S = 3.0
RETRY_TIMEOUT_S = 60.0  # per request from the queue: a 10 MB file over a slow link
RETRY_MIN_S = 1.0
RETRY_MAX_S = 60.0
QUEUE_MAX_FILES = 1000
QUEUE_MAX_BYTES = 500 * 1024 * 1024

_ENTRY = re.compile(r"^([0-9]{20})-(.+)$")


@dataclasses.dataclass(frozen=True)
class QueuedUpload:
    path: pathlib.Path
    assignment_id: int
    attempt: int
    content_type: str
    size: int


def _checked_type(body: bytes) -> str:
    """The image type by magic number; InvalidInput for what the hub would refuse anyway."""
    if len(body) > hub_protocol.EVIDENCE_MAX_BYTES:
        raise errors.InvalidInput(f"screenshot larger than the hub takes ({hub_protocol.EVIDENCE_MAX_BYTES} bytes)")
    content_type = hub_protocol.sniff_image(body[:16])
    if content_type is None:
        raise errors.InvalidInput("the evidence file is not a PNG, JPEG or WebP image")
    return content_type


class HubEvidenceStore:
    """The hub's EvidenceUploader (jobsys.transport.base), as the worker token's account."""

    def __init__(self, server: str, token: str, queue_dir: pathlib.Path, *,
                 max_files: int = QUEUE_MAX_FILES, max_bytes: int = QUEUE_MAX_BYTES,
                 inline_timeout_s: float = INLINE_TIMEOUT_S,
                 retry_min_s: float = RETRY_MIN_S, retry_max_s: float = RETRY_MAX_S,
                 tls: ssl.SSLContext | None = None) -> None:
        self.queue_dir = queue_dir
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.inline_timeout_s = inline_timeout_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self._http = httpx.AsyncClient(base_url=server, headers=hub_protocol.bearer(token), verify=tls or True,
                                       timeout=httpx.Timeout(RETRY_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        self._queue_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_enqueued_ns = 0
        self.hub_away = False  # the last attempt could not reach the hub: upload() queues at once
        self.refused: errors.Unauthorized | None = None  # the token was refused: nothing more is sent
        self.delivered = 0  # from the queue
        self._start()

    # EvidenceUploader ----------------------------------------------------------------------
    async def upload(self, worker_id: uuid.UUID | str, assignment_id: int, attempt: int,
                     path: pathlib.Path) -> str:
        """Send the file, or queue it when the hub cannot be reached; the run's URI either way
        (`worker_id` is not needed: the hub knows the PC by its token).
        InvalidInput (not an image, too large), Unauthorized, Forbidden or StaleRun when the
        hub refused it: then nothing is queued."""
        if self.refused is not None:
            raise self.refused
        body = await asyncio.to_thread(path.read_bytes)
        content_type = _checked_type(body)
        uri = hub_protocol.evidence_uri(assignment_id, attempt, content_type)
        self._start()
        if not self.hub_away:
            try:
                async with asyncio.timeout(self.inline_timeout_s):
                    await self._send(assignment_id, attempt, content_type, body)
                return uri
            except errors.Unauthorized as exc:
                self.refused = exc
                raise
            except (errors.TransportError, TimeoutError) as exc:
                reason = exc.message if isinstance(exc, errors.JobsysError) else "timed out"
                log.warning("evidence_queued run=%s attempt=%s reason=%r", assignment_id, attempt, reason)
                self.hub_away = True
        async with self._queue_lock:
            await asyncio.to_thread(self._enqueue, assignment_id, attempt, content_type, body)
        self._wake.set()
        return uri

    async def close(self) -> None:
        """Stop sending; what is still queued stays on disk for the next process."""
        self._closed = True
        if self._task is not None:
            await aio.cancel_and_wait([self._task])
            self._task = None
        await self._http.aclose()

    # Queue ---------------------------------------------------------------------------------
    def queued(self) -> list[QueuedUpload]:
        """The queue's entries, oldest first (files being written are not entries yet)."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for path in self.queue_dir.iterdir():
                match = _ENTRY.match(path.name)
                parsed = hub_protocol.parse_evidence_uri(hub_protocol.EVIDENCE_URI_PREFIX + match.group(2)) \
                    if match else None
                if parsed is None:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    found.append(QueuedUpload(path, parsed[0], parsed[1], parsed[2], path.stat().st_size))
        return sorted(found, key=lambda entry: entry.path.name)

    def _enqueue(self, assignment_id: int, attempt: int, content_type: str, body: bytes) -> None:
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        entries = []
        for entry in self.queued():
            if (entry.assignment_id, entry.attempt) == (assignment_id, attempt):
                _unlink(entry.path)  # the same run again: the newer file replaces it
            else:
                entries.append(entry)
        total = sum(entry.size for entry in entries)
        while entries and (len(entries) + 1 > self.max_files or total + len(body) > self.max_bytes):
            oldest = entries.pop(0)
            total -= oldest.size
            _unlink(oldest.path)
            log.warning("evidence_queue_full dropped run=%s attempt=%s (the queue keeps %d files, %d bytes)",
                        oldest.assignment_id, oldest.attempt, self.max_files, self.max_bytes)
        now_ns = max(time.time_ns(), self._last_enqueued_ns + 1)
        self._last_enqueued_ns = now_ns
        name = f"{now_ns:020d}-{hub_protocol.evidence_file_name(assignment_id, attempt, content_type)}"
        fd, temporary = tempfile.mkstemp(dir=self.queue_dir, prefix=".queue-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(body)
            os.replace(temporary, self.queue_dir / name)
        except BaseException:
            _unlink(pathlib.Path(temporary))
            raise

    # Sending -------------------------------------------------------------------------------
    async def _send(self, assignment_id: int, attempt: int, content_type: str, body: bytes) -> None:
        from jobsys.transport.hub import error_from_response  # it imports this module

        path = hub_protocol.EVIDENCE_PATH.format(assignment_id=assignment_id, attempt=attempt)
        try:
            response = await self._http.put(path, content=body, headers={"content-type": content_type})
        except httpx.HTTPError as exc:
            raise errors.TransportError(f"hub unavailable: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 200:
            return
        if response.status_code in (413, 415):
            raise errors.InvalidInput(f"the hub refused the screenshot (HTTP {response.status_code})")
        raise error_from_response(response)

    def _start(self) -> None:
        if self._task is not None or self._closed or self.refused is not None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the first upload starts it
        self._task = asyncio.create_task(self._deliver(), name="evidence-queue")

    async def _deliver(self) -> None:
        """Send the queue's entries until it is empty, then wait for more; back off while
        the hub is away."""
        failures = 0
        async with self._queue_lock:  # copies an earlier process left half written
            with contextlib.suppress(OSError):
                for leftover in self.queue_dir.glob(".queue-*.tmp"):
                    _unlink(leftover)
        while True:
            self._wake.clear()  # before looking: an entry queued after the look sets it again
            try:
                async with self._queue_lock:
                    entries = await asyncio.to_thread(self.queued)
                if not entries:
                    await self._wake.wait()
                    continue
                for entry in entries:
                    if not await self._deliver_one(entry):
                        break
                else:
                    failures = 0
                    continue
            except asyncio.CancelledError:
                raise
            except errors.Unauthorized as exc:
                self.refused = exc
                log.error("evidence_queue_stopped reason=%r: the hub refused this PC's token; %d file(s) stay "
                          "in %s", exc.message, len(self.queued()), self.queue_dir)
                return
            except Exception:  # a full disk, a file that vanished: keep the task alive and try again
                log.exception("evidence queue: delivery failed")
            failures += 1
            await asyncio.sleep(random.uniform(self.retry_min_s,
                                               min(self.retry_max_s, self.retry_min_s * 2 ** min(failures, 16))))

    async def _deliver_one(self, entry: QueuedUpload) -> bool:
        """True when the entry is gone (delivered, or refused for good); False to back off."""
        try:
            body = await asyncio.to_thread(entry.path.read_bytes)
        except FileNotFoundError:
            return True  # replaced or dropped meanwhile
        try:
            await self._send(entry.assignment_id, entry.attempt, entry.content_type, body)
        except errors.TransportError as exc:
            self.hub_away = True
            log.info("evidence_queue waiting for the hub (%s)", exc.message)
            return False
        except errors.Unauthorized:
            raise
        except errors.JobsysError as exc:  # the hub answered, and will answer the same again
            self.hub_away = False
            log.warning("evidence_dropped run=%s attempt=%s reason=%r", entry.assignment_id, entry.attempt,
                        exc.message)
        else:
            self.delivered += 1
            self.hub_away = False
            log.info("evidence_delivered run=%s attempt=%s from the queue", entry.assignment_id, entry.attempt)
        async with self._queue_lock:
            _unlink(entry.path)
        return True


def _unlink(path: pathlib.Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
