"""One-time emailed links (verify email, reset password, confirm a new email), stored hashed.

A link's token is made from a seed (`dupify.mail.links`): the outbox keeps the seed until the
message is sent, this table an HMAC of the token; neither gives a working link without the
server secret.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dupify.accounts.models import OneTimeToken
from dupify.mail.links import new_seed, token_from_seed
from dupify.mail.links import token_hash as token_hash  # the one HMAC of every link's token

PURPOSES = ("verify_email", "reset_password", "change_email")


def issue_token(
    db: Session,
    *,
    account_id: str,
    purpose: str,
    lifetime: timedelta,
    secret: bytes,
    now: datetime,
    new_email: str | None = None,
) -> str:
    """The seed of a fresh link token (`dupify.mail.links.token_from_seed` makes the token);
    earlier unused tokens of the same purpose stop working."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    revoke_tokens(db, account_id, (purpose,))
    seed = new_seed()
    db.add(
        OneTimeToken(
            token_hash=token_hash(token_from_seed(seed, secret), secret),
            account_id=account_id,
            purpose=purpose,
            new_email=new_email,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    db.flush()
    return seed


def revoke_tokens(db: Session, account_id: str, purposes: tuple[str, ...]) -> None:
    """The account's unused links of these purposes stop working."""
    db.execute(
        delete(OneTimeToken).where(
            OneTimeToken.account_id == account_id, OneTimeToken.purpose.in_(purposes)
        )
    )


def find_token(
    db: Session, raw: str, *, purposes: tuple[str, ...], secret: bytes, now: datetime
) -> OneTimeToken | None:
    """The live token for a link, or None (unknown, used, expired or another purpose)."""
    if not raw or len(raw) > 200:
        return None
    row = db.scalar(select(OneTimeToken).where(OneTimeToken.token_hash == token_hash(raw, secret)))
    if row is None or row.purpose not in purposes or row.used_at is not None:
        return None
    if row.expires_at <= now:
        return None
    return row


def use_token(row: OneTimeToken, now: datetime) -> None:
    row.used_at = now
