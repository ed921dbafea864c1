"""Per-request metering: the per-key rate limit, the monthly image quota and their headers.

The API's dependencies and image routes call a process's `Meter` with the request's context:

- `enforce_rate_limit` runs right after authentication on every `/v1` route; the decision's
  headers go on the response whatever its status (the request middleware adds
  `ctx.response_headers`), and a refusal is 429 `rate_limited` with `Retry-After`.
- `charge(ctx, n)` reserves n images of the month before any decoding; a refusal is 429
  `quota_exceeded`. It sets `ctx.images = n` (what the log row records). If the request then
  fails, `release(ctx)` (run by every scoped route's dependency) gives the reservation back and
  the row records 0 images, so the counter and the log keep agreeing.

**A counter created anew** (first use in a month, or after Redis lost or dropped its counters)
starts from a seed (`_seed`): the request log's images this month plus this process's unlogged
images (buffered rows, and images held by requests under way), read while no process can write
the log. Other processes' unlogged images are not in it: each process learns of the new counter
from its generation, on its next reservation for the account (`_observe`) or when a flush
inserts rows for it (`_watch_flush`), and carries its own unlogged images into it, once. A
flushed row is in the seed if its insert came before the seed held the log; otherwise the flush
sees the new generation before its commit and carries the row. So however often Redis restarts
under load, the counter comes back to the log's images this month plus the reservations under
way, on one process or many.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, false, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from dupify.config import Settings
from dupify.context import RequestContext, Reservation
from dupify.db import utcnow
from dupify.errors import ApiError
from dupify.limits.ratelimit import (
    API_KEY_BUCKET,
    Decision,
    Limiter,
    Seed,
    decision_of,
    month_of,
)
from dupify.usage.models import RequestLog
from dupify.usage.recorder import RequestRecord, UsageRecorder

LOCK_STRIPES = 64


@dataclass(frozen=True)
class Counted:
    """A request counted against a key's per-minute window, and the token read with it (None:
    counted in this process)."""

    key_id: str
    count: int
    ttl_s: float
    token: str | None


class Meter:
    """Rate limits and quota reservations for one server process, over its limiter."""

    def __init__(
        self,
        settings: Settings,
        limiter: Limiter,
        recorder: UsageRecorder,
        sessions: sessionmaker[Session],
    ) -> None:
        self._settings = settings
        self._limiter = limiter
        self._recorder = recorder
        self._sessions = sessions
        # Account -> (month start, generation of the Redis counter its unlogged images are in).
        self._counted_in: dict[str, tuple[datetime, str]] = {}
        # Seeding, carrying and giving back for one account take turns (striped: bounded).
        self._locks = tuple(asyncio.Lock() for _ in range(LOCK_STRIPES))
        recorder.watch_flush = self._watch_flush

    async def enforce_rate_limit(self, ctx: RequestContext) -> None:
        """Count this request against its key's per-minute limit, or refuse it with 429."""
        if ctx.key_id is None:
            return  # portal requests are limited by the portal's own throttles
        plan = self._settings.plan(ctx.plan)
        decision = await self._limiter.hit(API_KEY_BUCKET, ctx.key_id, plan.requests_per_minute, 60)
        self._apply(ctx, decision)

    async def count_reading(self, key_id: str, token: str, token_ttl_ms: int) -> Counted:
        """Count a request of `key_id` now, before its key is known valid, and read `token` in
        the same Redis round trip (the key cache's signal, dupify.keys.signal); the count is
        judged by `enforce_counted` once the caller's plan is known."""
        count, ttl_s, value = await self._limiter.hit_reading(
            API_KEY_BUCKET, key_id, 60, token, token_ttl_ms
        )
        return Counted(key_id, count, ttl_s, value)

    async def enforce_counted(self, ctx: RequestContext, counted: Counted) -> None:
        """`enforce_rate_limit` for a request already counted by `count_reading` (same key)."""
        if ctx.key_id != counted.key_id:
            await self.enforce_rate_limit(ctx)
            return
        limit = self._settings.plan(ctx.plan).requests_per_minute
        allowed = counted.count <= limit
        self._apply(ctx, decision_of(allowed, counted.count, counted.ttl_s, limit, 60))

    def _apply(self, ctx: RequestContext, decision: Decision) -> None:
        headers = decision.headers()
        retry_after = headers.pop("Retry-After", None)
        ctx.response_headers.update(headers)
        if retry_after is not None:
            raise ApiError(
                "rate_limited",
                f"Rate limit of {decision.limit} requests per minute for this API key reached; "
                f"retry after {retry_after} s.",
                headers={"Retry-After": retry_after},
            )

    async def images_used_this_month(self, account_id: str, now: datetime) -> int:
        """Images recorded for the account this UTC month: the log table plus unflushed rows."""
        start, _ = month_of(now)

        def count_flushed() -> int:
            with self._sessions() as session:
                return _logged_images(session, account_id, start)

        return await self._recorder.count_with_pending(count_flushed, account_id, start)

    async def charge(self, ctx: RequestContext, images: int) -> None:
        """Reserve `images` of the caller's monthly quota, or refuse with 429 `quota_exceeded`."""
        account_id = ctx.caller
        limit = self._settings.plan(ctx.plan).images_per_month
        now = utcnow()
        decision = await self._limiter.reserve_images(
            account_id, images, limit, lambda: self._seed(account_id, now), now
        )
        await self._observe(account_id, now, decision.generation)
        if not decision.allowed:
            raise ApiError(
                "quota_exceeded",
                f"This request has {images} image(s) and the plan's monthly quota of {limit} "
                f"images has {decision.left} left; it renews at the start of the next month (UTC).",
            )
        self._recorder.hold(account_id, images)
        ctx.images = images
        ctx.reservation = Reservation(images, now)

    async def settle(self, ctx: RequestContext, billed: int) -> None:
        """Bill fewer images than were charged (e.g. a batch whose bad images are not counted)."""
        reserved = ctx.reservation
        if reserved is None or billed >= reserved.images:
            return
        ctx.images = billed
        ctx.reservation = Reservation(billed, reserved.at)
        await self._give_back(ctx.caller, reserved.images - billed, reserved.at)

    async def release(self, ctx: RequestContext) -> None:
        """The request failed after `charge`: give the whole reservation back."""
        reserved = ctx.reservation
        if reserved is None:
            return
        ctx.reservation = None
        ctx.images = 0
        await self._give_back(ctx.caller, reserved.images, reserved.at)

    # A counter created anew (see the module docstring) --------------------------------------

    def _lock(self, account_id: str) -> asyncio.Lock:
        return self._locks[hash(account_id) % LOCK_STRIPES]

    def _counted(self, account_id: str, now: datetime) -> str | None:
        month_start, generation = self._counted_in.get(account_id, (None, None))
        return generation if month_start == month_of(now)[0] else None

    async def _give_back(self, account_id: str, images: int, at: datetime) -> None:
        async with self._lock(account_id):  # not while a seed that counted them is being made
            generation = self._counted(account_id, at)
            self._recorder.unhold(account_id, images)
        await self._limiter.release_images(account_id, images, at, generation)

    @asynccontextmanager
    async def _seed(self, account_id: str, now: datetime) -> AsyncIterator[Seed]:
        """The seed of the account's missing counter, held while the limiter creates it."""
        start = month_of(now)[0]
        async with self._lock(account_id), self._recorder.flushes_held():
            session = self._sessions()
            counting = asyncio.ensure_future(
                asyncio.to_thread(_hold_log_and_count, session, account_id, start)
            )
            try:
                logged = await asyncio.shield(counting)
                seed = Seed(logged + self._recorder.unlogged(account_id, start))
                yield seed
                if seed.generation is not None:
                    self._counted_in[account_id] = (start, seed.generation)
            finally:
                # Even if this task is cancelled, the session is closed (rolled back: the hold
                # on the log goes with it) only once its thread is done with it.
                await asyncio.wait([counting])
                await asyncio.to_thread(session.close)

    async def _observe(self, account_id: str, now: datetime, generation: str | None) -> None:
        """A reservation met this Redis counter: if this process's unlogged images are not in
        it yet, carry them in (once)."""
        if generation is None or self._counted(account_id, now) == generation:
            return
        # No flush under way either: the rows one has taken out of the buffer are carried (or
        # not) by its own watch, which must see whether they were counted here first.
        async with self._lock(account_id), self._recorder.flushes_held():
            if self._counted(account_id, now) == generation:
                return  # seeded or carried meanwhile
            start = month_of(now)[0]
            self._counted_in[account_id] = (start, generation)
            unlogged = self._recorder.unlogged(account_id, start)
        await self._limiter.carry_images(account_id, unlogged, now, generation)

    @asynccontextmanager
    async def _watch_flush(self, rows: list[RequestRecord]) -> AsyncIterator[None]:
        """Around a flush's commit, its rows inserted: an account whose counter has a generation
        this process has not counted in had it created after the insert, from a seed without
        these rows; once they are committed, they and the process's other unlogged images for
        the account are carried into it."""
        now = utcnow()
        start = month_of(now)[0]
        flushed: dict[str, int] = {}
        for row in rows:
            if row.account_id is not None and row.images and row.created_at >= start:
                flushed[row.account_id] = flushed.get(row.account_id, 0) + row.images
        generations = await self._limiter.quota_generations(flushed, now) if flushed else {}
        stale = {
            account_id: generation
            for account_id, generation in generations.items()
            if generation is not None and self._counted(account_id, now) != generation
        }
        yield
        # Still under the flush lock, which seeding and `_observe` take too: what this process
        # counted where has not changed since the check.
        carries = []
        for account_id, generation in stale.items():
            self._counted_in[account_id] = (start, generation)
            unlogged = self._recorder.unlogged(account_id, start)
            carries.append((account_id, flushed[account_id] + unlogged, generation))
        for account_id, images, generation in carries:
            await self._limiter.carry_images(account_id, images, now, generation)


def _logged_images(session: Session, account_id: str, since: datetime) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(RequestLog.images), 0))
        .where(RequestLog.account_id == account_id)
        .where(RequestLog.created_at >= since)
    )
    return int(total or 0)


def _hold_log_and_count(session: Session, account_id: str, since: datetime) -> int:
    """`_logged_images` in a transaction that first waits for the request-log writes under way
    and then holds back every process's until it ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE request_logs IN SHARE MODE"))
    else:
        # SQLite has one write lock per database: any write statement takes it for the
        # transaction, even one that changes nothing.
        session.execute(delete(RequestLog).where(false()))
    return _logged_images(session, account_id, since)
