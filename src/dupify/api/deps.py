"""Request dependencies: the runtime, the request's typed context, its unit of work, and API-key
authentication checked before any body is read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from dupify.context import RequestContext
from dupify.db import unit_of_work, utcnow
from dupify.errors import ApiError
from dupify.keys.cache import KeyCache
from dupify.keys.service import Principal, Rejection, authenticate
from dupify.keys.signal import REDIS_NAME, REDIS_TTL_MS
from dupify.limits.metering import Counted
from dupify.server.client_address import client_address
from dupify.server.middleware import context_of
from dupify.server.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_context(request: Request) -> RequestContext:
    """The request's typed context (request id, caller, usage), made by the request middleware."""
    return context_of(request.state)


async def _unit_of_work(request: Request) -> AsyncIterator[Session]:
    async with unit_of_work(get_runtime(request).sessions) as session:
        yield session


# The request's unit of work (`dupify.db.unit_of_work`). Scope "function": it commits when the
# route returns, before the response is sent, so a client that sees the answer can rely on it.
RequestSession = Annotated[Session, Depends(_unit_of_work, scope="function")]


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if header is None:
        raise ApiError(
            "missing_api_key",
            "No API key: send it as 'Authorization: Bearer dpy_…' (create one with "
            "'dupify key create' or in the portal).",
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError("invalid_api_key", "The Authorization header must be 'Bearer <api key>'.")
    return token.strip()


async def authenticate_request(request: Request) -> RequestContext:
    """The caller's key, checked offline (format, checksum), then against the key cache or the
    database.

    Malformed, unknown, revoked and expired keys all get one code, so the answer is no oracle.
    A revoked or suspended key is refused on the next request everywhere: the cache
    (`dupify.keys.cache`) trusts an entry only while the revocation signal is unchanged, read
    per request in the rate limiter's Redis round trip (or, without Redis, one primary-key read).
    A client address that presented too many invalid keys gets 429 for a while.
    Returns the request's context with the caller filled in, after the per-key rate limit.
    """
    token = _bearer_token(request)
    runtime = get_runtime(request)
    ctx = get_context(request)
    # The client address only names a throttle counter (in memory, hashed in Redis): never stored.
    ctx.client_address = client_address(request, runtime.settings.portal.trust_forwarded_proto)
    async with runtime.key_guard.evaluating(runtime.limiter, ctx.client_address, token) as key:
        result, counted = await _resolve(runtime, request.app.state.key_cache, token)
        key.genuine = isinstance(result, Principal) or result is Rejection.suspended
    if isinstance(result, Principal):
        ctx.identify(
            account_id=result.account_id,
            key_id=result.key_id,
            plan=result.plan,
            scopes=frozenset(result.scopes),
        )
        if counted is not None:
            await runtime.meter.enforce_counted(ctx, counted)
        else:
            await runtime.meter.enforce_rate_limit(ctx)
        return ctx
    if result is Rejection.suspended:
        raise ApiError("account_suspended", "This API key or its account is suspended.")
    raise ApiError("invalid_api_key", "The API key is not valid (check it, or create a new one).")


async def _resolve(
    runtime: Runtime, cache: KeyCache, token: str
) -> tuple[Principal | Rejection, Counted | None]:
    """The key's verdict, and the rate-limit count already made for it (None: not yet)."""
    digest = cache.digest(token)
    if digest is None:
        return Rejection.malformed, None
    now = utcnow()
    entry = cache.peek(digest, now)
    counted: Counted | None = None
    signal: str | None = None
    if entry is not None:
        if cache.shared:  # the count and the signal in one Redis round trip
            counted = await runtime.meter.count_reading(
                entry.principal.key_id, REDIS_NAME, REDIS_TTL_MS
            )
            signal = counted.token
        else:
            signal = cache.local_token() or await asyncio.to_thread(cache.database_token)
        if signal is not None and signal == entry.token:
            return entry.principal, counted
    if cache.shared and signal is None:
        # Read before the lookup: a change committed after it replaces the token again.
        signal = await runtime.limiter.read_token(REDIS_NAME, REDIS_TTL_MS)
    result = await asyncio.to_thread(cache.look_up, token, digest, now, signal, authenticate)
    return result, counted


async def release_unbilled_images(request: Request) -> AsyncIterator[None]:
    """Dependency: if the route fails after charging images, give the reservation back."""
    try:
        yield
    except BaseException:
        await get_runtime(request).meter.release(get_context(request))
        raise


def require_scope(scope: str) -> Callable[[Request], Awaitable[RequestContext]]:
    async def dependency(
        request: Request, _quota: None = Depends(release_unbilled_images)
    ) -> RequestContext:
        ctx = await authenticate_request(request)
        if scope not in ctx.scopes:
            raise ApiError("insufficient_scope", f"This API key lacks the {scope!r} scope.")
        return ctx

    return dependency
