"""Writes request-log rows and key `last_used_at` in batches, off the request path, losing none.

Requests append to an in-memory buffer (no I/O on the hot path); a background task flushes it
every `flush_interval_s` or as soon as `flush_batch` rows wait, and `stop()` flushes what is left
on graceful shutdown. A failed flush keeps its rows for the next attempt.

The recorder also knows the images this process has not logged yet: the buffered rows, and the
images held (reserved of the monthly quota) by requests whose row is not recorded yet. A quota
seed counts them, so an account's count never loses a request that was under way when its
counter had to be created anew; `watch_flush` lets the quota learn which rows each flush
commits (see `dupify.limits.metering`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from typing import cast

from sqlalchemy import Table, insert, update
from sqlalchemy.orm import Session, sessionmaker

from dupify.aio import cancel_and_wait
from dupify.config import UsageLogSettings
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
    model: str | None = None


_COLUMNS = tuple(f.name for f in fields(RequestRecord))

# Runs around each flush's commit, after its rows are inserted (see `UsageRecorder.flush`).
FlushWatch = Callable[[list[RequestRecord]], AbstractAsyncContextManager[None]]


class UsageRecorder:
    def __init__(self, sessions: sessionmaker[Session], settings: UsageLogSettings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._rows: list[RequestRecord] = []
        self._last_used: dict[str, datetime] = {}
        self._held: dict[str, int] = {}  # account id -> images held by unrecorded requests
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self.watch_flush: FlushWatch | None = None

    def hold(self, account_id: str, images: int) -> None:
        """Images reserved for a request of the account whose row is not recorded yet."""
        self._held[account_id] = self._held.get(account_id, 0) + images

    def unhold(self, account_id: str, images: int) -> None:
        """Images no longer held: given back, or recorded (`record` calls this itself)."""
        left = self._held.get(account_id, 0) - images
        if left > 0:
            self._held[account_id] = left
        else:
            self._held.pop(account_id, None)

    def record(self, row: RequestRecord) -> None:
        """Buffer one request's row; the images it records are no longer only held."""
        if row.account_id is not None and row.images:
            self.unhold(row.account_id, row.images)
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

    def _buffered(self, account_id: str, since: datetime) -> int:
        return sum(
            row.images
            for row in self._rows
            if row.account_id == account_id and row.created_at >= since
        )

    def unlogged(self, account_id: str, since: datetime) -> int:
        """The account's images this process has not written to the log: held and buffered."""
        return self._held.get(account_id, 0) + self._buffered(account_id, since)

    async def count_with_pending(
        self, count_flushed: Callable[[], int], account_id: str, since: datetime
    ) -> int:
        """`count_flushed()` (run in a thread: images in the table) plus this process's buffered
        images for the account since `since`, with no flush in between (none counted twice)."""
        async with self._flush_lock:
            flushed = await asyncio.to_thread(count_flushed)
            return flushed + self._buffered(account_id, since)

    @asynccontextmanager
    async def flushes_held(self) -> AsyncIterator[None]:
        """No flush of this process runs inside the block (one under way ends first)."""
        async with self._flush_lock:
            yield

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.flush()

    async def flush(self) -> int:
        """Write everything buffered now; returns the number of request rows written.

        Shielded: a flush whose caller is cancelled (the background task, at shutdown) still
        ends, so its rows are neither lost nor written twice.
        """
        return await asyncio.shield(self._flush())

    async def _flush(self) -> int:
        async with self._flush_lock:
            rows, self._rows = self._rows, []
            last_used, self._last_used = self._last_used, {}
            if not rows and not last_used:
                return 0
            session = self._sessions()
            committed = False
            try:
                await asyncio.to_thread(self._write, session, rows, last_used)
                # The rows are inserted, not committed: a quota seed that began before holds
                # the insert back until it is done, and one that comes later waits for the
                # commit, so the watch learns here which of them counted these rows.
                async with self._watch(rows):
                    await asyncio.to_thread(session.commit)
                    committed = True
            except Exception:
                if committed:  # the rows are written: keeping them would write them twice
                    log.exception("usage log written, but what watches its flushes failed")
                    raise
                log.exception(
                    "usage log flush failed; %d rows kept for the next attempt", len(rows)
                )
                self._rows[:0] = rows
                for key_id, when in last_used.items():
                    self._last_used[key_id] = max(when, self._last_used.get(key_id, when))
                raise
            finally:
                await asyncio.to_thread(session.close)
            return len(rows)

    def _watch(self, rows: list[RequestRecord]) -> AbstractAsyncContextManager[None]:
        if self.watch_flush is None or not rows:
            return contextlib.nullcontext()
        return self.watch_flush(rows)

    @staticmethod
    def _write(session: Session, rows: list[RequestRecord], last_used: dict[str, datetime]) -> None:
        if rows:
            # The table's own insert with plain dicts: `asdict` deep-copies every value and the
            # ORM's bulk path sorts each row into mapper commands, neither of which these
            # write-only rows need (measured in docs/performance.md, "Levers").
            table = cast(Table, RequestLog.__table__)
            session.execute(insert(table), [{n: getattr(row, n) for n in _COLUMNS} for row in rows])
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
