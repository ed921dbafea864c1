"""Privacy policy versions (PRIVACY row 18): a raised version emails every account exactly once,
and the portal shows a banner until the account acknowledges it.

Each version keeps the text it was first shown with (`record_policy_text`), so `/privacy/changes`
can show what changed from one version to the next (`policy_changes`).

Version 1 is the policy every account accepted when it signed up, so it needs no notice. An
account created after a version's notice went out signed up under that version: it is treated as
having acknowledged it (nothing is written at sign-up, so account creation stays one concern).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from dupify.accounts.models import Account
from dupify.audit.service import record_event
from dupify.db import transaction, utcnow
from dupify.mail.outbox import enqueue
from dupify.privacy.models import PolicyAcknowledgement, PolicyNotice, PolicyVersion

log = logging.getLogger("dupify.privacy.policy")

BASELINE_VERSION = 1


def policy_notice_text(version: int, privacy_url: str | None) -> tuple[str, str]:
    """The subject and body of the change notice (no account data in it)."""
    where = privacy_url or "the privacy page of this Dupify service (/privacy)"
    changes = (
        privacy_url.removesuffix("/privacy") + "/privacy/changes"
        if privacy_url
        else "/privacy/changes"
    )
    subject = f"Dupify privacy policy update (version {version})"
    body = (
        f"Hello,\n\n"
        f"We have updated the privacy policy of Dupify to version {version}.\n"
        f"Please read it at {where}.\n"
        f"What changed since the previous version: {changes}\n\n"
        "This notice goes to every account, whatever its email preferences, because the policy\n"
        "governs how your data is handled. You will also see a notice the next time you sign in\n"
        "until you acknowledge the new version.\n"
    )
    return subject, body


def last_announced_version(session: Session) -> int:
    latest = session.scalar(select(func.max(PolicyNotice.version)))
    return max(BASELINE_VERSION, latest or BASELINE_VERSION)


def announce_policy_change(
    sessions: sessionmaker[Session],
    version: int,
    *,
    privacy_url: str | None = None,
    actor_account_id: str | None = None,
) -> int | None:
    """Queue the change notice for `version` to every account; None if it already went out.

    The `policy_notices` row (version as primary key) is inserted first, in the same transaction
    as the emails, with ON CONFLICT DO NOTHING: of several processes racing, one inserts and
    queues, the others find the row taken (PostgreSQL makes them wait for the winner's commit;
    on SQLite the insert is the transaction's first write, holding the lock) and queue nothing.
    """
    if version <= BASELINE_VERSION:
        return None
    subject, body = policy_notice_text(version, privacy_url)
    with transaction(sessions) as session:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        claim = (
            insert(PolicyNotice)
            .values(version=version, announced_at=utcnow())
            .on_conflict_do_nothing(index_elements=["version"])
            # RETURNING, not rowcount: psycopg reports -1 for this statement through SQLAlchemy.
            .returning(PolicyNotice.version)
        )
        if session.execute(claim).first() is None:
            return None
        recipients = session.execute(select(Account.id, Account.email).order_by(Account.created_at))
        queued = 0
        for account_id, email in recipients:
            enqueue(
                session,
                kind="policy",
                to_address=email,
                subject=subject,
                body=body,
                account_id=account_id,
            )
            queued += 1
        record_event(
            session,
            "policy_announced",
            actor_account_id=actor_account_id,
            detail=f"version {version}; {queued} notices",
        )
    log.info("policy version %d announced to %d accounts", version, queued)
    return queued


def announce_if_raised(
    sessions: sessionmaker[Session], version: int, *, privacy_url: str | None = None
) -> int | None:
    """At start-up: announce the configured version if it is newer than the last one announced."""
    with sessions() as session:
        if version <= last_announced_version(session):
            return None
    return announce_policy_change(sessions, version, privacy_url=privacy_url)


def needs_policy_acknowledgement(session: Session, account_id: str, version: int) -> bool:
    """Whether the portal should show the policy banner to this account."""
    if version <= BASELINE_VERSION:
        return False
    acknowledged = session.scalar(
        select(func.max(PolicyAcknowledgement.version)).where(
            PolicyAcknowledgement.account_id == account_id
        )
    )
    if acknowledged is not None and acknowledged >= version:
        return False
    created_at = session.scalar(select(Account.created_at).where(Account.id == account_id))
    if created_at is None:
        return False
    notice = session.get(PolicyNotice, version)
    # Signed up after the notice went out: the sign-up accepted this version.
    return notice is None or created_at < notice.announced_at


def acknowledge_policy(session: Session, account_id: str, version: int) -> None:
    """Record that the account has seen `version` (idempotent; the caller commits)."""
    if session.get(PolicyAcknowledgement, (account_id, version)) is None:
        session.add(PolicyAcknowledgement(account_id=account_id, version=version))
        session.flush()


def record_policy_text(session: Session, version: int, text: str) -> bool:
    """Keep `text` as the version's text unless one is kept already (the first one shown stays:
    that is what accounts were told); True if it was recorded now. The caller commits."""
    if session.get(PolicyVersion, version) is not None:
        return False
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # Two processes may record the same version at once: the first row wins, quietly.
    claim = (
        insert(PolicyVersion)
        .values(version=version, text=text, recorded_at=utcnow())
        .on_conflict_do_nothing(index_elements=["version"])
        .returning(PolicyVersion.version)
    )
    return session.execute(claim).first() is not None


@dataclass(frozen=True)
class PolicyChange:
    version: int
    recorded_at: datetime
    previous: int | None  # the version compared against; None for the first one kept
    added: list[str]
    removed: list[str]
    diff: list[tuple[str, str]]  # (" " | "+" | "-", line), changed paragraphs with context


def _paragraphs(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def policy_changes(session: Session) -> list[PolicyChange]:
    """Each kept version, newest first, with what differs from the version kept before it."""
    versions = list(session.scalars(select(PolicyVersion).order_by(PolicyVersion.version)))
    changes = []
    for index, current in enumerate(versions):
        before = versions[index - 1] if index else None
        if before is None:
            changes.append(PolicyChange(current.version, current.recorded_at, None, [], [], []))
            continue
        old, new = _paragraphs(before.text), _paragraphs(current.text)
        diff: list[tuple[str, str]] = []
        for group in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_grouped_opcodes(1):
            for tag, i1, i2, j1, j2 in group:
                if tag == "equal":
                    diff += [(" ", line) for line in old[i1:i2]]
                    continue
                diff += [("-", line) for line in old[i1:i2]]
                diff += [("+", line) for line in new[j1:j2]]
        changes.append(
            PolicyChange(
                current.version,
                current.recorded_at,
                before.version,
                added=[line for mark, line in diff if mark == "+"],
                removed=[line for mark, line in diff if mark == "-"],
                diff=diff,
            )
        )
    return list(reversed(changes))
