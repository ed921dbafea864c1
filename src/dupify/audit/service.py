"""Recording and listing security events (PRIVACY row 13); rows hold ids, never personal data."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dupify.audit.models import AuditEvent

# The event names, one per kind of security event; callers pass one of these.
EVENTS: dict[str, str] = {
    "login": "a portal sign-in succeeded (account_id)",
    "login_failed": "a portal sign-in was refused (account_id when the email is known)",
    "logout": "a portal session was ended by its owner",
    "password_changed": "the password was changed or reset",
    "password_reset_requested": "a password reset link was requested",
    "email_changed": "the account's email was replaced after verification",
    "key_created": "an API key was created (key_id)",
    "key_revoked": "an API key was revoked (key_id)",
    "export": "the account's data export was downloaded",
    "account_deleted": "an account was deleted (no id of it: only the operator, if one acted)",
    "account_suspended": "an operator suspended an account",
    "account_unsuspended": "an operator lifted an account's suspension",
    "key_suspended": "an operator suspended an API key (key_id)",
    "key_unsuspended": "an operator lifted a key's suspension (key_id)",
    "plan_changed": "an operator changed an account's plan (detail: old -> new plan)",
    "role_changed": "an operator changed an account's role (detail: old -> new role)",
    "announcement_sent": "an operator queued an announcement (detail: recipient count)",
    "policy_announced": "a policy version's notice was queued (detail: version)",
    "abuse_flag_resolved": "an operator resolved an abuse flag (detail: flag id)",
}

DETAIL_MAX = 500


class AuditError(ValueError):
    """An audit record that cannot be written (a programming error: unknown event name)."""


def record_event(
    session: Session,
    event: str,
    *,
    actor_account_id: str | None = None,
    account_id: str | None = None,
    key_id: str | None = None,
    detail: str | None = None,
) -> AuditEvent:
    """Add one audit row in the caller's transaction.

    `actor_account_id` is who acted (the operator for admin actions; the account itself for its
    own actions; None for the CLI or the system). `detail` must hold no personal data: no email,
    name, password, key or client address; ids, counts, plan names and versions are fine.
    """
    if event not in EVENTS:
        raise AuditError(f"unknown audit event {event!r}")
    row = AuditEvent(
        event=event,
        actor_account_id=actor_account_id,
        account_id=account_id,
        key_id=key_id,
        detail=detail[:DETAIL_MAX] if detail else None,
    )
    session.add(row)
    return row


def list_events(
    session: Session,
    *,
    account_id: str | None = None,
    events: Sequence[str] | None = None,
    since: datetime | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[AuditEvent]:
    """Newest first, for operators; `account_id` matches the subject or the actor.

    Page with `before_id` = the smallest id of the previous page.
    """
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(max(1, min(limit, 1000)))
    if account_id is not None:
        query = query.where(
            (AuditEvent.account_id == account_id) | (AuditEvent.actor_account_id == account_id)
        )
    if events:
        query = query.where(AuditEvent.event.in_(list(events)))
    if since is not None:
        query = query.where(AuditEvent.created_at >= since)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    return list(session.scalars(query))
