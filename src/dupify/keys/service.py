"""Creating, listing, revoking and authenticating API keys (API.md section 7)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from dupify.accounts.models import Account
from dupify.audit.service import record_event
from dupify.db import new_id, utcnow
from dupify.keys.format import display_prefix, generate_key, hash_key, is_well_formed
from dupify.keys.models import ApiKey
from dupify.keys.signal import credentials_changed

SCOPES = ("embeddings", "analyze", "usage:read")


class KeyRequestError(ValueError):
    """A key request that cannot be carried out (message is safe to show)."""


@dataclass(frozen=True)
class CreatedKey:
    record: ApiKey
    secret: str  # shown once, never stored


def parse_scopes(scopes: str | list[str] | None) -> list[str]:
    if scopes is None:
        return list(SCOPES)
    items = scopes.replace(",", " ").split() if isinstance(scopes, str) else list(scopes)
    unknown = sorted(set(items) - set(SCOPES))
    if unknown or not items:
        raise KeyRequestError(f"scopes must be a non-empty subset of {', '.join(SCOPES)}")
    return [scope for scope in SCOPES if scope in items]


def create_key(
    session: Session,
    account: Account,
    *,
    secret: bytes,
    name: str = "default",
    scopes: list[str] | None = None,
    expires_in: timedelta | None = None,
    actor_account_id: str | None = None,
) -> CreatedKey:
    """Create a key and its `key_created` audit row; `actor_account_id` is who asked (the account
    itself in the portal, an operator on /admin, None from the shell)."""
    raw = generate_key()
    record = ApiKey(
        id=new_id("key"),
        account_id=account.id,
        name=name.strip() or "default",
        display_prefix=display_prefix(raw),
        key_hash=hash_key(raw, secret),
        scopes=" ".join(parse_scopes(scopes)),
        expires_at=utcnow() + expires_in if expires_in else None,
    )
    session.add(record)
    session.flush()
    record_event(
        session,
        "key_created",
        actor_account_id=actor_account_id,
        account_id=account.id,
        key_id=record.id,
    )
    return CreatedKey(record=record, secret=raw)


def list_keys(session: Session, account_id: str) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at)
    return list(session.scalars(query))


def revoke_key(
    session: Session,
    key_id: str,
    *,
    account_id: str | None = None,
    actor_account_id: str | None = None,
) -> ApiKey:
    """Revoke a key; with `account_id`, only that account's key (tenants never touch others').
    The first revocation writes a `key_revoked` audit row."""
    query = select(ApiKey).where(ApiKey.id == key_id)
    if account_id is not None:
        query = query.where(ApiKey.account_id == account_id)
    record = session.scalar(query)
    if record is None:
        raise KeyRequestError(f"no key with id {key_id}")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        credentials_changed(session)  # every server's key cache drops it on its next request
        record_event(
            session,
            "key_revoked",
            actor_account_id=actor_account_id,
            account_id=record.account_id,
            key_id=record.id,
        )
    session.flush()
    return record


class Rejection(StrEnum):
    """Why a presented key was refused; the first three map to one public code (no oracle)."""

    malformed = "malformed"
    unknown = "unknown"
    inactive = "inactive"  # revoked or expired
    suspended = "suspended"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the authenticated key and its account, as plain values."""

    key_id: str
    account_id: str
    scopes: frozenset[str]
    plan: str
    expires_at: datetime | None = None  # the key's; a cached principal is refused past it


def authenticate(
    session: Session, raw_key: str, *, secret: bytes, now: datetime
) -> Principal | Rejection:
    if not is_well_formed(raw_key):
        return Rejection.malformed
    row = session.execute(
        select(ApiKey, Account)
        .join(Account, Account.id == ApiKey.account_id)
        .where(ApiKey.key_hash == hash_key(raw_key, secret))
    ).first()
    if row is None:
        return Rejection.unknown
    key, account = row[0], row[1]
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        return Rejection.inactive
    if key.suspended_at is not None or account.suspended_at is not None:
        return Rejection.suspended
    return Principal(
        key_id=key.id,
        account_id=account.id,
        scopes=key.scope_set,
        plan=account.plan,
        expires_at=key.expires_at,
    )
