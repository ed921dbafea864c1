"""Writes request-log rows and key `last_used_at` in batches, off the request path, losing none.

Requests append to an in-memory buffer (no I/O on the hot path); a background task flushes it
every `flush_interval_s` or as soon as `flush_batch` rows wait, and `stop()` flushes what is left
on graceful shutdown. A failed flush keeps its rows for the next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import insert, update
from sqlalchemy.orm import Session, sessionmaker

from dupify.aio import cancel_and_wait
from dupify.config import UsageLogSettings
from dupify.db import transaction
from dupify.keys.models import ApiKey
from dupify.usage.models import RequestLog

log = logging.getLogger("dupify.usage")


@dataclass(frozen=True)
class RequestRecord:
    """One API request as PRIVACY.md row 2 allows it to be kept: no body, no IP, no image."""

    request_id: str
    created_at: datetime
    account_id: str | None
    key_id: str | None
    endpoint: str
    status: int
    error_code: str | None
    latency_ms: float
    images: int
    cached_images: int
    bytes_in: int


class UsageRecorder:
    def __init__(self, sessions: sessionmaker[Session], settings: UsageLogSettings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._rows: list[RequestRecord] = []
        self._last_used: dict[str, datetime] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    def record(self, row: RequestRecord) -> None:
        self._rows.append(row)
        if row.key_id is not None and row.status < 500:
            previous = self._last_used.get(row.key_id)
            if previous is None or row.created_at > previous:
                self._last_used[row.key_id] = row.created_at
        if len(self._rows) >= self._settings.flush_batch:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._rows)

    async def count_with_pending(
        self, count_flushed: Callable[[], int], account_id: str, since: datetime
    ) -> int:
        """`count_flushed()` (run in a thread: images in the table) plus this process's buffered
        images for the account since `since`, with no flush in between (none counted twice)."""
        async with self._flush_lock:
            flushed = await asyncio.to_thread(count_flushed)
            pending = sum(
                row.images
                for row in self._rows
                if row.account_id == account_id and row.created_at >= since
            )
            return flushed + pending

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.flush()

    async def flush(self) -> int:
        """Write everything buffered now; returns the number of request rows written."""
        async with self._flush_lock:
            rows, self._rows = self._rows, []
            last_used, self._last_used = self._last_used, {}
            if not rows and not last_used:
                return 0
            try:
                await asyncio.to_thread(self._write, rows, last_used)
            except Exception:
                log.exception(
                    "usage log flush failed; %d rows kept for the next attempt", len(rows)
                )
                self._rows[:0] = rows
                for key_id, when in last_used.items():
                    self._last_used[key_id] = max(when, self._last_used.get(key_id, when))
                raise
            return len(rows)

    def _write(self, rows: list[RequestRecord], last_used: dict[str, datetime]) -> None:
        with transaction(self._sessions) as session:
            if rows:
                session.execute(insert(RequestLog), [asdict(row) for row in rows])
            for key_id, when in last_used.items():
                session.execute(
                    update(ApiKey)
                    .where(ApiKey.id == key_id)
                    .where((ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < when))
                    .values(last_used_at=when)
                )

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.flush_interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # noqa: S112 - logged in flush; the loop must outlive a bad flush
                continue
