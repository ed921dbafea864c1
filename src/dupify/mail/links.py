"""One-time links in mail, never stored readable: the outbox keeps a seed, not the link's token.

A message that carries a one-time link (verification, password reset, email change) is queued
with the link's address ending in `TOKEN_SLOT` and a random seed; the token is an HMAC of the
seed with the server secret, made only in the sender's memory as the message is handed to the
transport (`render`). The table of one-time tokens holds an HMAC of the token in turn. So the
database alone (a dump, a backup, a read-only leak) yields no working link: before sending, a
seed that is useless without the server secret; once the message is sent or has failed for
good, not even that (`dupify.mail.delivery` wipes the seed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

TOKEN_SLOT = "{one-time-token}"  # noqa: S105 - where a token goes, not one


@dataclass(frozen=True)
class SealedLink:
    """A one-time link as the outbox keeps it: `url` with `TOKEN_SLOT` where the token goes,
    and the seed the token is made from."""

    url: str
    seed: str


def new_seed() -> str:
    return secrets.token_urlsafe(32)


def token_from_seed(seed: str, secret: bytes) -> str:
    """The link's token: HMAC-SHA256 of the seed with the server secret, URL-safe."""
    digest = hmac.new(secret, b"mail-link:" + seed.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_hash(raw: str, secret: bytes) -> str:
    """What the table of one-time tokens keeps of a link's token: an HMAC with the secret."""
    return hmac.new(secret, b"one-time:" + raw.encode(), hashlib.sha256).hexdigest()


def render(body: str, seed: str, secret: bytes) -> str:
    """The body as sent: its link with the token in the slot."""
    return body.replace(TOKEN_SLOT, token_from_seed(seed, secret))
