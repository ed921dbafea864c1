"""Per-request metering: the per-key rate limit, the monthly image quota and their headers.

The API's dependencies and image routes call a process's `Meter` with the request's context:

- `enforce_rate_limit` runs right after authentication on every `/v1` route; the decision's
  headers go on the response whatever its status (the request middleware adds
  `ctx.response_headers`), and a refusal is 429 `rate_limited` with `Retry-After`.
- `charge(ctx, n)` reserves n images of the month before any decoding; a refusal is 429
  `quota_exceeded`. It sets `ctx.images = n` (what the log row records). If the request then
  fails, `release(ctx)` (run by every scoped route's dependency) gives the reservation back and
  the row records 0 images, so the counter and the log keep agreeing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dupify.config import Settings
from dupify.context import RequestContext, Reservation
from dupify.db import utcnow
from dupify.errors import ApiError
from dupify.limits.ratelimit import API_KEY_BUCKET, Limiter, month_of
from dupify.usage.models import RequestLog
from dupify.usage.recorder import UsageRecorder


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

    async def enforce_rate_limit(self, ctx: RequestContext) -> None:
        """Count this request against its key's per-minute limit, or refuse it with 429."""
        if ctx.key_id is None:
            return  # portal requests are limited by the portal's own throttles
        plan = self._settings.plan(ctx.plan)
        decision = await self._limiter.hit(API_KEY_BUCKET, ctx.key_id, plan.requests_per_minute, 60)
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
                total = session.scalar(
                    select(func.coalesce(func.sum(RequestLog.images), 0))
                    .where(RequestLog.account_id == account_id)
                    .where(RequestLog.created_at >= start)
                )
                return int(total or 0)

        return await self._recorder.count_with_pending(count_flushed, account_id, start)

    async def charge(self, ctx: RequestContext, images: int) -> None:
        """Reserve `images` of the caller's monthly quota, or refuse with 429 `quota_exceeded`."""
        account_id = ctx.caller
        limit = self._settings.plan(ctx.plan).images_per_month
        now = utcnow()

        async def seed() -> int:
            return await self.images_used_this_month(account_id, now)

        decision = await self._limiter.reserve_images(account_id, images, limit, seed, now)
        if not decision.allowed:
            raise ApiError(
                "quota_exceeded",
                f"This request has {images} image(s) and the plan's monthly quota of {limit} "
                f"images has {decision.left} left; it renews at the start of the next month (UTC).",
            )
        ctx.images = images
        ctx.reservation = Reservation(images, now)

    async def settle(self, ctx: RequestContext, billed: int) -> None:
        """Bill fewer images than were charged (e.g. a batch whose bad images are not counted)."""
        reserved = ctx.reservation
        if reserved is None or billed >= reserved.images:
            return
        await self._limiter.release_images(ctx.caller, reserved.images - billed, reserved.at)
        ctx.images = billed
        ctx.reservation = Reservation(billed, reserved.at)

    async def release(self, ctx: RequestContext) -> None:
        """The request failed after `charge`: give the whole reservation back."""
        reserved = ctx.reservation
        if reserved is None:
            return
        ctx.reservation = None
        ctx.images = 0
        await self._limiter.release_images(ctx.caller, reserved.images, reserved.at)
