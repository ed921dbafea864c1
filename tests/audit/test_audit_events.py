"""The audit log (PRIVACY row 13): each security event in the code that exists writes one row,
holding ids and no personal data; operators list them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dupify.abuse.service import set_account_suspended, set_key_suspended
from dupify.accounts.service import create_account
from dupify.audit.models import AuditEvent
from dupify.audit.service import EVENTS, AuditError, list_events, record_event
from dupify.db import transaction
from dupify.keys.service import create_key, revoke_key
from dupify.mail.announcements import announce
from dupify.privacy.policy import announce_policy_change

SECRET = b"s" * 32


def events(sessions: sessionmaker[Session]) -> list[tuple[str, str | None, str | None, str | None]]:
    with sessions() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(row.event, row.actor_account_id, row.account_id, row.key_id) for row in rows]


def test_each_security_event_writes_exactly_one_row(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        operator = create_account(session, email="op@example.com", name="Op", role="admin").id
        account = create_account(session, email="ada@example.com", name="Ada Lovelace")
        account_id = account.id
    assert events(sessions) == []

    with transaction(sessions) as session:
        owner = session.get_one(type(account), account_id)
        key_id = create_key(session, owner, secret=SECRET, actor_account_id=account_id).record.id
    assert events(sessions) == [("key_created", account_id, account_id, key_id)]

    with transaction(sessions) as session:
        revoke_key(session, key_id, account_id=account_id, actor_account_id=account_id)
        revoke_key(session, key_id)  # already revoked: no second event
    with transaction(sessions) as session:
        set_key_suspended(session, key_id, True, actor_account_id=operator)
        set_key_suspended(session, key_id, True, actor_account_id=operator)  # no change
        set_key_suspended(session, key_id, False, actor_account_id=operator)
        set_account_suspended(session, account_id, True, actor_account_id=operator)
        set_account_suspended(session, account_id, False, actor_account_id=operator)
    assert events(sessions)[1:] == [
        ("key_revoked", account_id, account_id, key_id),
        ("key_suspended", operator, account_id, key_id),
        ("key_unsuspended", operator, account_id, key_id),
        ("account_suspended", operator, account_id, None),
        ("account_unsuspended", operator, account_id, None),
    ]

    with transaction(sessions) as session:
        announce(session, subject="News", body="Body", actor_account_id=operator)
    announce_policy_change(sessions, 2, actor_account_id=operator)
    assert [event for event, *_ in events(sessions)[-2:]] == [
        "announcement_sent",
        "policy_announced",
    ]

    with sessions() as session:
        stored = session.scalars(select(AuditEvent)).all()
    text = " ".join(f"{row.event} {row.detail or ''}" for row in stored)
    assert "ada@example.com" not in text and "Ada Lovelace" not in text


def test_unknown_event_names_are_refused(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, pytest.raises(AuditError):
        record_event(session, "something_happened")


def test_operators_filter_and_page_the_log(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        for n in range(5):
            record_event(session, "login", account_id="acct_a", detail=f"n={n}")
        record_event(session, "login_failed", account_id="acct_b")
        record_event(session, "account_suspended", actor_account_id="acct_a", account_id="acct_c")
    with sessions() as session:
        newest = list_events(session, limit=3)
        assert [row.event for row in newest] == ["account_suspended", "login_failed", "login"]
        older = list_events(session, limit=10, before_id=newest[-1].id)
        assert [row.detail for row in older] == ["n=3", "n=2", "n=1", "n=0"]
        about_a = list_events(session, account_id="acct_a")
        assert len(about_a) == 6  # five as the subject, one as the actor
        assert [row.account_id for row in list_events(session, events=["login_failed"])] == [
            "acct_b"
        ]


def test_every_event_name_is_documented_for_operators() -> None:
    operations = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    missing = [name for name in EVENTS if f"`{name}`" not in operations]
    assert missing == []
