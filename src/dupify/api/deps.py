"""Request dependencies: the runtime, and API-key authentication checked before any body is read."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import Depends, Request

from dupify.db import utcnow
from dupify.errors import ApiError
from dupify.keys.service import Principal, Rejection, authenticate
from dupify.limits.metering import enforce_rate_limit, release_unbilled_images
from dupify.server.client_address import client_address
from dupify.server.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


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


async def authenticate_request(request: Request) -> Principal:
    """The caller's key, checked offline (format, checksum) and then against the database.

    Malformed, unknown, revoked and expired keys all get one code, so the answer is no oracle.
    The lookup runs on every request: a revoked or suspended key is refused on the next request
    everywhere. A client address that presented too many invalid keys gets 429 for a while.
    """
    token = _bearer_token(request)
    runtime = get_runtime(request)
    # The client address only names a throttle counter (in memory, hashed in Redis): never stored.
    address = client_address(request, runtime.settings.portal.trust_forwarded_proto)
    await runtime.key_guard.refuse_if_guessing(runtime.limiter, address)

    def lookup() -> Principal | Rejection:
        with runtime.sessions() as session:
            return authenticate(session, token, secret=runtime.secret, now=utcnow())

    result = await asyncio.to_thread(lookup)
    if isinstance(result, Principal):
        request.state.account_id = result.account_id
        request.state.key_id = result.key_id
        request.state.plan = result.plan
        await enforce_rate_limit(request, runtime, result)
        return result
    if result is Rejection.suspended:
        raise ApiError("account_suspended", "This API key or its account is suspended.")
    await runtime.key_guard.count_invalid_key(runtime.limiter, address)
    raise ApiError("invalid_api_key", "The API key is not valid (check it, or create a new one).")


def require_scope(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(
        request: Request, _quota: None = Depends(release_unbilled_images)
    ) -> Principal:
        principal = await authenticate_request(request)
        if scope not in principal.scopes:
            raise ApiError("insufficient_scope", f"This API key lacks the {scope!r} scope.")
        return principal

    return dependency
