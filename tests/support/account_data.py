"""Test helper: an account with a row in every table that can hold data about it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session

from dupify.abuse.models import AbuseFlag
from dupify.accounts.models import OneTimeToken, WebSession
from dupify.accounts.service import create_account
from dupify.audit.models import AuditEvent
from dupify.db import new_id, utcnow
from dupify.keys.service import create_key, revoke_key
from dupify.mail.models import OutboxMessage
from dupify.privacy.models import PolicyAcknowledgement
from dupify.usage.models import RequestLog
from support.settings import TEST_SECRET


@dataclass
class Person:
    """What identifies an account, and the secrets that must never leave the database."""

    id: str
    email: str
    name: str
    key: str  # a live API key, for traffic
    key_ids: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    @property
    def identifiers(self) -> list[str]:
        return [self.id, self.email, self.name]


def populate(session: Session, label: str) -> Person:
    """An account named after `label` with keys, a session, a token, mail, flags, audit and log
    rows; a distinctive email and name so a byte search cannot match by accident."""
    tag = secrets.token_hex(4)
    account = create_account(
        session, email=f"{label}-{tag}@example.com", name=f"{label.title()} Quixote {tag}"
    )
    account.password_hash = "$argon2id$v=19$m=65536,t=3,p=4$" + secrets.token_hex(16)
    live = create_key(session, account, secret=TEST_SECRET.encode(), name=f"{label} live")
    old = create_key(session, account, secret=TEST_SECRET.encode(), name=f"{label} old")
    revoke_key(session, old.record.id)
    now = utcnow()
    session_id = secrets.token_hex(32)
    token_hash = secrets.token_hex(32)
    link = secrets.token_urlsafe(32)
    session.add_all(
        [
            WebSession(id=session_id, account_id=account.id, expires_at=now + timedelta(days=1)),
            OneTimeToken(
                token_hash=token_hash,
                account_id=account.id,
                purpose="change_email",
                new_email=f"{label}-new-{tag}@example.com",
                expires_at=now + timedelta(hours=1),
            ),
            PolicyAcknowledgement(account_id=account.id, version=1),
            OutboxMessage(
                id=new_id("msg"),
                account_id=account.id,
                kind="verification",
                to_address=account.email,
                subject="Verify your email",
                body=f"Hello {account.name}, verify: https://dupify.test/verify-email/{link}",
            ),
            OutboxMessage(
                id=new_id("msg"),
                account_id=account.id,
                kind="security",
                to_address=account.email,
                subject="A new API key",
                body=f"Hello {account.name}, a key named {label} live was created.",
            ),
            AbuseFlag(account_id=account.id, key_id=live.record.id, kind="request_spike"),
            AuditEvent(event="login", actor_account_id=account.id, account_id=account.id),
            AuditEvent(event="key_created", account_id=account.id, key_id=live.record.id),
            RequestLog(
                request_id=new_id("req"),
                created_at=now - timedelta(days=3),
                account_id=account.id,
                key_id=live.record.id,
                endpoint="POST /v1/embeddings",
                status=200,
                latency_ms=12.5,
                images=1,
                bytes_in=1234,
            ),
        ]
    )
    session.flush()
    return Person(
        id=account.id,
        email=account.email,
        name=account.name,
        key=live.secret,
        key_ids=[live.record.id, old.record.id],
        secrets=[
            account.password_hash,
            live.record.key_hash,
            old.record.key_hash,
            live.secret,
            session_id,
            token_hash,
            link,
        ],
    )
