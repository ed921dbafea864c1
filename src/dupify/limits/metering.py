"""Per-request metering: the per-key rate limit, the monthly image quota and their headers.

Called from the API's dependencies and image routes:

- `enforce_rate_limit` runs right after authentication on every `/v1` route; the decision's
  headers go on the response whatever its status (RequestContextMiddleware adds
  `request.state.response_headers`), and a refusal is 429 `rate_limited` with `Retry-After`.
- `charge_images(request, n)` reserves n images of the month before any decoding; a refusal is
  429 `quota_exceeded`. It sets `request.state.images = n` (what the log row records). If the
  request then fails, `release_unbilled_images` (a dependency of every scoped route) gives the
  reservation back and the row records 0 images, so the counter and the log keep agreeing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from fastapi import Request
from sqlalchemy import func, select

from dupify.db import utcnow
from dupify.errors import ApiError
from dupify.keys.service import Principal
from dupify.limits.ratelimit import API_KEY_BUCKET, month_of
from dupify.server.runtime import Runtime
from dupify.usage.models import RequestLog


async def enforce_rate_limit(request: Request, runtime: Runtime, principal: Principal) -> None:
    plan = runtime.settings.plan(principal.plan)
    decision = await runtime.limiter.hit(
        API_KEY_BUCKET, principal.key_id, plan.requests_per_minute, 60
    )
    headers = decision.headers()
    retry_after = headers.pop("Retry-After", None)
    request.state.response_headers = {
        **getattr(request.state, "response_headers", {}),
        **headers,
    }
    if retry_after is not None:
        raise ApiError(
            "rate_limited",
            f"Rate limit of {decision.limit} requests per minute for this API key reached; "
            f"retry after {retry_after} s.",
            headers={"Retry-After": retry_after},
        )


async def images_used_this_month(runtime: Runtime, account_id: str, now: datetime) -> int:
    """Images recorded for the account this UTC month: the log table plus unflushed rows."""
    start, _ = month_of(now)

    def count_flushed() -> int:
        with runtime.sessions() as session:
            total = session.scalar(
                select(func.coalesce(func.sum(RequestLog.images), 0))
                .where(RequestLog.account_id == account_id)
                .where(RequestLog.created_at >= start)
            )
            return int(total or 0)

    return await runtime.recorder.count_with_pending(count_flushed, account_id, start)


async def charge_images(request: Request, images: int) -> None:
    """Reserve `images` of the caller's monthly quota, or refuse with 429 `quota_exceeded`."""
    runtime: Runtime = request.app.state.runtime
    account_id: str = request.state.account_id
    plan_name: str = getattr(request.state, "plan", "free")
    limit = runtime.settings.plan(plan_name).images_per_month
    now = utcnow()

    async def seed() -> int:
        return await images_used_this_month(runtime, account_id, now)

    decision = await runtime.limiter.reserve_images(account_id, images, limit, seed, now)
    if not decision.allowed:
        raise ApiError(
            "quota_exceeded",
            f"This request has {images} image(s) and the plan's monthly quota of {limit} images "
            f"has {decision.left} left; it renews at the start of the next month (UTC).",
        )
    request.state.images = images
    request.state.reserved_images = (images, now)


async def settle_images(request: Request, billed: int) -> None:
    """Bill fewer images than were charged (e.g. a batch whose bad images are not counted)."""
    reserved = getattr(request.state, "reserved_images", None)
    if reserved is None or billed >= reserved[0]:
        return
    runtime: Runtime = request.app.state.runtime
    images, when = reserved
    await runtime.limiter.release_images(request.state.account_id, images - billed, when)
    request.state.images = billed
    request.state.reserved_images = (billed, when)


async def release_unbilled_images(request: Request) -> AsyncIterator[None]:
    """Dependency: if the route fails after `charge_images`, give the reservation back."""
    try:
        yield
    except BaseException:
        reserved = getattr(request.state, "reserved_images", None)
        if reserved is not None:
            runtime: Runtime = request.app.state.runtime
            images, when = reserved
            request.state.reserved_images = None
            request.state.images = 0
            await runtime.limiter.release_images(request.state.account_id, images, when)
        raise
