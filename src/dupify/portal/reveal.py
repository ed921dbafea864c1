"""A new API key shown once after a redirect (post/redirect/get), never stored readable.

Creating a key answers 303 to `/keys?reveal=<ticket>`, so a reload repeats the GET, never the POST
(no second key). The ticket carries the key sealed with AES-GCM under a key derived from the
server secret and this browser's session cookie token (which the server keeps only as a hash):
the URL alone, a database dump, or the server secret without the cookie open nothing. What makes
it once: a one-time token row (purpose `key_reveal`, only its HMAC stored) that the first GET
uses up, so a reload, the back button or a copied URL finds the ticket spent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.orm import Session

from dupify.accounts.models import OneTimeToken
from dupify.portal.tokens import token_hash

PURPOSE = "key_reveal"
# Long enough to survive a slow page load, short enough that a forgotten tab holds nothing.
LIFETIME = timedelta(minutes=10)
TICKET_MAX = 600


@dataclass(frozen=True)
class Revealed:
    key_id: str
    secret: str


def _aead(server_secret: bytes, cookie_token: str) -> AESGCM:
    key = hmac.new(server_secret, b"key-reveal:" + cookie_token.encode(), hashlib.sha256).digest()
    return AESGCM(key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(
    db: Session,
    *,
    account_id: str,
    key_id: str,
    key_secret: str,
    server_secret: bytes,
    cookie_token: str,
    now: datetime,
) -> str:
    """The ticket for `/keys?reveal=`; its one-time row is added to the caller's transaction."""
    nonce_token = secrets.token_urlsafe(18)
    db.add(
        OneTimeToken(
            token_hash=token_hash(nonce_token, server_secret),
            account_id=account_id,
            purpose=PURPOSE,
            created_at=now,
            expires_at=now + LIFETIME,
        )
    )
    db.flush()
    iv = secrets.token_bytes(12)
    payload = json.dumps({"k": key_id, "s": key_secret}).encode()
    sealed = _aead(server_secret, cookie_token).encrypt(iv, payload, nonce_token.encode())
    return f"{nonce_token}.{_b64(iv + sealed)}"


def open_ticket(
    db: Session,
    ticket: str,
    *,
    account_id: str,
    server_secret: bytes,
    cookie_token: str,
    now: datetime,
) -> Revealed | None:
    """The key the ticket carries, once; None when spent, expired, forged or someone else's."""
    if not ticket or len(ticket) > TICKET_MAX or ticket.count(".") != 1:
        return None
    nonce_token, blob = ticket.split(".")
    row = db.get(OneTimeToken, token_hash(nonce_token, server_secret))
    if (
        row is None
        or row.purpose != PURPOSE
        or row.account_id != account_id
        or row.used_at is not None
        or row.expires_at <= now
    ):
        return None
    try:
        raw = _unb64(blob)
        plain = _aead(server_secret, cookie_token).decrypt(raw[:12], raw[12:], nonce_token.encode())
        data = json.loads(plain)
    except (InvalidTag, ValueError, binascii.Error):
        return None
    row.used_at = now
    return Revealed(key_id=str(data["k"]), secret=str(data["s"]))
