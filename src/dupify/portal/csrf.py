"""CSRF protection: a double-submit token whose cookie is bound to the session by an HMAC.

The cookie holds `nonce.mac`, mac = HMAC(server secret, binding + nonce), where the binding is the
session id (or "anonymous" before sign-in). Every state-changing form carries the same value in a
hidden field, put there by the server, so the cookie itself can be HttpOnly. A forged form fails
twice: another site cannot read the cookie to copy it, and a cookie planted from elsewhere carries
a mac for no session of the victim's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ANONYMOUS = "anonymous"
FIELD = "csrf_token"


def _mac(secret: bytes, binding: str, nonce: str) -> str:
    message = f"csrf:{binding}:{nonce}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def new_token(secret: bytes, binding: str) -> str:
    nonce = secrets.token_urlsafe(24)
    return f"{nonce}.{_mac(secret, binding, nonce)}"


def is_bound(secret: bytes, binding: str, token: str | None) -> bool:
    """Whether a cookie value was issued by this server for this binding."""
    if not token or token.count(".") != 1:
        return False
    nonce, mac = token.split(".")
    return hmac.compare_digest(mac, _mac(secret, binding, nonce))


def is_valid(secret: bytes, binding: str, cookie: str | None, submitted: str | None) -> bool:
    """A state-changing request passes when the submitted token equals a bound cookie."""
    if not cookie or not submitted:
        return False
    return hmac.compare_digest(cookie.encode(), submitted.encode()) and is_bound(
        secret, binding, cookie
    )
