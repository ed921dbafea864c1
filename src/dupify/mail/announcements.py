"""Service announcements (PRIVACY row 7): one email per account that has not objected to them,
each with a one-click unsubscribe link (`dupify.mail.unsubscribe`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dupify.accounts.models import Account
from dupify.audit.service import record_event
from dupify.mail.outbox import OutboxError, enqueue
from dupify.mail.unsubscribe import announcement_footer

SUBJECT_MAX = 300


def announcement_recipients(session: Session) -> list[tuple[str, str]]:
    """(account id, email) of the accounts that accept announcements.

    Only announcements look at `pref_announcements`: security and policy notices are queued by
    their own code for every account concerned (the policy allows no objection to those).
    """
    query = (
        select(Account.id, Account.email)
        .where(Account.pref_announcements.is_(True))
        .order_by(Account.created_at)
    )
    return [(account_id, email) for account_id, email in session.execute(query)]


def announce(
    session: Session,
    *,
    subject: str,
    body: str,
    actor_account_id: str | None = None,
    link_base: str | None = None,
) -> int:
    """Queue the announcement in the caller's transaction; returns how many were queued.
    `link_base`: the portal's public address for the unsubscribe link (default: the sender's
    `portal.public_url`, or its own host and port)."""
    subject = subject.strip()
    if not subject or len(subject) > SUBJECT_MAX:
        raise OutboxError(f"an announcement needs a subject of 1 to {SUBJECT_MAX} characters")
    if not body.strip():
        raise OutboxError("an announcement needs a body")
    recipients = announcement_recipients(session)
    footer = announcement_footer(link_base)
    for account_id, email in recipients:
        enqueue(
            session,
            kind="announcement",
            to_address=email,
            subject=subject,
            body=body.rstrip("\n") + footer,
            account_id=account_id,
        )
    record_event(
        session,
        "announcement_sent",
        actor_account_id=actor_account_id,
        detail=f"{len(recipients)} recipients",
    )
    return len(recipients)
