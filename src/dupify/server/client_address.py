"""Who is asking: the peer address, or behind a trusted proxy the address that proxy appended."""

from __future__ import annotations

from starlette.requests import Request


def client_address(request: Request, trust_forwarded: bool) -> str:
    """The address that names a throttle counter (never stored: PRIVACY.md row 2).

    Behind a proxy we were told to trust (`DUPIFY_PORTAL__TRUST_FORWARDED_PROTO`), the last
    X-Forwarded-For entry, the one that proxy appended: earlier entries are the client's own
    claims. Otherwise every client would share the proxy's address, and one client guessing
    keys or passwords would lock everyone out.
    """
    if trust_forwarded:
        last = request.headers.get("x-forwarded-for", "").split(",")[-1].strip()
        if last:
            return last
    return request.client.host if request.client else "unknown"
