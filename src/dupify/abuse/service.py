"""Operator actions against abuse: suspend and unsuspend accounts and keys, review abuse flags.

Every API request looks its key and account up afresh (keys.service.authenticate), so a
suspension is refused from the very next request, in every process. Services flush; callers commit.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dupify.abuse.models import AbuseFlag
from dupify.accounts.models import Account, WebSession
from dupify.accounts.service import AccountError
from dupify.audit.service import record_event
from dupify.db import utcnow
from dupify.keys.models import ApiKey
from dupify.keys.service import KeyRequestError


def set_account_suspended(
    session: Session, account_id: str, suspended: bool, *, actor_account_id: str | None = None
) -> Account:
    """Suspend (its keys get 403 `account_suspended`, its portal sessions end) or reinstate."""
    account = session.get(Account, account_id)
    if account is None:
        raise AccountError(f"no account with id {account_id}")
    if suspended == (account.suspended_at is not None):
        return account  # already so: no action, no audit row
    if suspended:
        account.suspended_at = utcnow()
        session.execute(delete(WebSession).where(WebSession.account_id == account.id))
    else:
        account.suspended_at = None
    record_event(
        session,
        "account_suspended" if suspended else "account_unsuspended",
        actor_account_id=actor_account_id,
        account_id=account.id,
    )
    session.flush()
    return account


def set_key_suspended(
    session: Session, key_id: str, suspended: bool, *, actor_account_id: str | None = None
) -> ApiKey:
    """Suspend one key (403 `account_suspended` from the next request) or reinstate it."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise KeyRequestError(f"no key with id {key_id}")
    if suspended == (key.suspended_at is not None):
        return key
    key.suspended_at = utcnow() if suspended else None
    record_event(
        session,
        "key_suspended" if suspended else "key_unsuspended",
        actor_account_id=actor_account_id,
        account_id=key.account_id,
        key_id=key.id,
    )
    session.flush()
    return key


def list_flags(
    session: Session, *, include_resolved: bool = False, limit: int = 200
) -> list[AbuseFlag]:
    """Newest first; open flags only unless `include_resolved`."""
    query = select(AbuseFlag).order_by(AbuseFlag.id.desc()).limit(max(1, min(limit, 1000)))
    if not include_resolved:
        query = query.where(AbuseFlag.resolved_at.is_(None))
    return list(session.scalars(query))


def resolve_flag(
    session: Session, flag_id: int, *, actor_account_id: str | None = None
) -> AbuseFlag:
    flag = session.get(AbuseFlag, flag_id)
    if flag is None:
        raise KeyRequestError(f"no abuse flag with id {flag_id}")
    flag.resolved_at = flag.resolved_at or utcnow()
    record_event(
        session,
        "abuse_flag_resolved",
        actor_account_id=actor_account_id,
        account_id=flag.account_id,
        key_id=flag.key_id,
        detail=f"flag {flag.id} ({flag.kind})",
    )
    session.flush()
    return flag
