"""Operator actions against abuse: suspend and unsuspend accounts and keys, review abuse flags.

Every suspension and reinstatement replaces the key cache's revocation signal in the same
transaction (keys.signal.credentials_changed), so a suspension is refused from the very next
request, in every process (docs/architecture.md, "API-key authentication"). Services flush;
callers commit.
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
from dupify.keys.signal import credentials_changed


def _set_suspended(
    session: Session, target: Account | ApiKey, suspended: bool, actor_account_id: str | None
) -> bool:
    """Suspend or reinstate an account or a key, audited as `account_suspended`,
    `key_unsuspended` and so on; False, with no action and no audit row, when it already is so."""
    if suspended == (target.suspended_at is not None):
        return False
    target.suspended_at = utcnow() if suspended else None
    credentials_changed(session)
    if isinstance(target, Account):
        kind, account_id, key_id = "account", target.id, None
    else:
        kind, account_id, key_id = "key", target.account_id, target.id
    record_event(
        session,
        f"{kind}_suspended" if suspended else f"{kind}_unsuspended",
        actor_account_id=actor_account_id,
        account_id=account_id,
        key_id=key_id,
    )
    session.flush()
    return True


def set_account_suspended(
    session: Session, account_id: str, suspended: bool, *, actor_account_id: str | None = None
) -> Account:
    """Suspend (its keys get 403 `account_suspended`, its portal sessions end) or reinstate."""
    account = session.get(Account, account_id)
    if account is None:
        raise AccountError(f"no account with id {account_id}")
    if _set_suspended(session, account, suspended, actor_account_id) and suspended:
        session.execute(delete(WebSession).where(WebSession.account_id == account.id))
    return account


def set_key_suspended(
    session: Session, key_id: str, suspended: bool, *, actor_account_id: str | None = None
) -> ApiKey:
    """Suspend one key (403 `account_suspended` from the next request) or reinstate it."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise KeyRequestError(f"no key with id {key_id}")
    _set_suspended(session, key, suspended, actor_account_id)
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
