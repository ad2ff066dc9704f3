"""Counts the pushes a fan-out really sent, as a worker would receive them (LISTEN), so a
run only counts once every assignment has been announced.

The listening connection is read only after the timer stops: a reader running during a
timed run would take CPU and event-loop turns from the side being measured."""

from __future__ import annotations

import collections
import json
import time
import uuid
from typing import Any, Self

import psycopg
from psycopg import sql


class PushCounter:
    """Listens on worker topics; per job, the number of assignments announced.

    jobsys sends one `assignment` event per worker with a count; the original plan one
    event per assignment. Both are counted in assignments."""

    def __init__(self, url: str, topics: list[str]) -> None:
        self._url = url
        self._topics = topics
        self._announced: collections.Counter[str] = collections.Counter()
        self._messages: collections.Counter[str] = collections.Counter()
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> Self:
        self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        for topic in self._topics:
            await self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(topic)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()

    def _count(self, note: psycopg.Notify) -> None:
        body = json.loads(note.payload)
        if body.get("event") != "assignment":
            return
        payload = body.get("payload") or {}
        job_id = str(payload.get("job_id"))
        self._announced[job_id] += int(payload.get("count", 1))
        self._messages[job_id] += 1

    async def wait_for(self, job_id: uuid.UUID, assignments: int, timeout_s: float = 120.0) -> int:
        """Read pushes until `assignments` are announced for the job; return the messages used."""
        assert self._conn is not None
        key = str(job_id)
        deadline = time.monotonic() + timeout_s
        while self._announced[key] < assignments:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"only {self._announced[key]} of {assignments} assignments announced")
            async for note in self._conn.notifies(timeout=remaining):
                self._count(note)
                if self._announced[key] >= assignments:
                    break
        return self._messages[key]
