"""Security headers on every response that is not a portal page: the API's JSON (its errors and
the last-resort 500 included), the OpenAPI document, and /docs with its assets (pure ASGI, so
bodies stream through untouched). Portal pages get the portal's own (dupify.portal.headers),
which this middleware, wrapped around them, leaves as they are."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dupify.config import PortalSettings

# JSON is never rendered as a page, so it may load nothing and be framed nowhere.
API_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Swagger UI: its script, stylesheet and start-up script are our own files (api.docs), its icons
# data: URIs, and "Try it out" calls this origin.
DOCS_CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
DOCS_PREFIX = "/docs"
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_API_HEADERS = [(b"content-security-policy", API_CONTENT_SECURITY_POLICY.encode()), *_COMMON]
_DOCS_HEADERS = [(b"content-security-policy", DOCS_CONTENT_SECURITY_POLICY.encode()), *_COMMON]


def is_tls(scope: Scope, settings: PortalSettings) -> bool:
    """Served over TLS: directly, or by a proxy whose X-Forwarded-Proto we were told to trust."""
    if scope.get("scheme") == "https":
        return True
    if not settings.trust_forwarded_proto:
        return False
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-proto":
            return bool(value.split(b",")[0].strip().lower() == b"https")
    return False


class ApiSecurityHeadersMiddleware:
    """Adds the API's (or /docs') security headers to every response, each one only where the
    response does not already carry it: a portal page keeps the portal's."""

    def __init__(self, app: ASGIApp, settings: PortalSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        docs = path == DOCS_PREFIX or path.startswith(DOCS_PREFIX + "/")
        extra = list(_DOCS_HEADERS if docs else _API_HEADERS)
        if is_tls(scope, self.settings):
            extra.append(HSTS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in extra if item[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
