"""Per-request context: request id, processing time, the usage-log row, and the last-resort 500.

Pure ASGI (not BaseHTTPMiddleware) so request bodies stream through untouched.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dupify.context import RequestContext
from dupify.db import new_id, utcnow
from dupify.errors import ApiError
from dupify.usage.recorder import RequestRecord, UsageRecorder

log = logging.getLogger("dupify.request")
# A client-chosen id is echoed only when it cannot smuggle anything into logs or headers.
_WELL_FORMED_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{7,127}$")
_LOGGED_PREFIX = "/v1/"
# Where the typed RequestContext travels in the ASGI scope's state (read by `context_of`).
CONTEXT_KEY = "dupify_context"


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, recorder: Callable[[], UsageRecorder | None], header: str
    ) -> None:
        self.app = app
        self.recorder = recorder
        self.header = header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self._request_id(scope)
        ctx = RequestContext(request_id=request_id)
        # The one thing this layer keeps on the framework's request: the typed context.
        scope.setdefault("state", {})[CONTEXT_KEY] = ctx
        status = 500
        response_started = False

        async def send_with_context(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                elapsed_ms = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers", []))
                headers.extend(_extra_headers(ctx, headers))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                headers.append((b"x-processing-ms", f"{elapsed_ms:.1f}".encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        except Exception:
            log.exception("internal error request_id=%s", request_id)
            ctx.error_code = "internal_error"
            status = 500
            if not response_started:
                await self._send_internal_error(send_with_context, request_id)
        finally:
            for finish in ctx.finishers:
                finish()
            self._record(scope, ctx, status, started)

    def _request_id(self, scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == self.header:
                candidate: str = value.decode("latin-1")
                if _WELL_FORMED_ID.match(candidate):
                    return candidate
                break
        return new_id("req")

    async def _send_internal_error(self, send: Send, request_id: str) -> None:
        error = ApiError("internal_error", "Internal error; the request id has been logged.")
        body = json.dumps(error.body(request_id)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _record(self, scope: Scope, ctx: RequestContext, status: int, started: float) -> None:
        if not scope.get("path", "").startswith(_LOGGED_PREFIX):
            return
        recorder = self.recorder()
        if recorder is None:
            return
        route = scope.get("route")
        template = getattr(route, "path", None) or "(no route)"
        recorder.record(
            RequestRecord(
                request_id=ctx.request_id,
                created_at=utcnow(),
                account_id=ctx.account_id,
                key_id=ctx.key_id,
                endpoint=f"{scope.get('method', '?')} {template}",
                status=status,
                error_code=ctx.error_code,
                latency_ms=round((time.perf_counter() - started) * 1000, 2),
                images=ctx.images,
                cached_images=ctx.cached_images,
                bytes_in=ctx.bytes_in,
                model=ctx.model,
            )
        )


def _extra_headers(
    ctx: RequestContext, present: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """Headers a dependency set for whatever response follows (e.g. the rate-limit headers,
    which belong on errors too); a header the response already has is kept as it is."""
    names = {name.lower() for name, _ in present}
    extra = [
        (name.lower().encode("latin-1"), str(value).encode("latin-1"))
        for name, value in ctx.response_headers.items()
    ]
    return [(name, value) for name, value in extra if name not in names]


def context_of(state: object) -> RequestContext:
    """The request's typed context, from a request's `state` (set up by the middleware).

    A request that did not pass through the middleware (none in this app) gets a fresh one.
    """
    ctx = getattr(state, CONTEXT_KEY, None)
    return ctx if isinstance(ctx, RequestContext) else RequestContext(request_id=new_id("req"))
