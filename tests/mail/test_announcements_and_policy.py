"""Announcements honour objections; policy notices reach every account once (PRIVACY rows 7, 18)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dupify.accounts.models import Account
from dupify.accounts.service import create_account
from dupify.config import MailSettings
from dupify.db import create_db_engine, session_factory, transaction
from dupify.mail.announcements import announce
from dupify.mail.delivery import MailSender
from dupify.mail.models import OutboxMessage
from dupify.mail.outbox import OutboxError, enqueue
from dupify.privacy.models import PolicyNotice
from dupify.privacy.policy import (
    acknowledge_policy,
    announce_if_raised,
    announce_policy_change,
    needs_policy_acknowledgement,
)
from support.settings import make_settings
from support.smtp_sink import SmtpSink


def make_accounts(sessions: sessionmaker[Session]) -> dict[str, str]:
    """Three accounts: two accept announcements, one objected. Email -> account id."""
    made = {}
    with transaction(sessions) as session:
        for email, accepts in [
            ("ada@example.com", True),
            ("grace@example.com", True),
            ("objector@example.com", False),
        ]:
            account = create_account(session, email=email, name="Someone")
            account.pref_announcements = accepts
            made[email] = account.id
    return made


async def deliver(database_url: str, sessions: sessionmaker[Session], sink: SmtpSink) -> None:
    settings = make_settings(database_url, smtp_url=sink.url, mail=MailSettings(timeout_s=5))
    report = await MailSender(sessions, settings).deliver_all_due()
    assert report.retrying == 0 and report.failed == 0


def recipients(sink: SmtpSink, subject_part: str) -> list[str]:
    return sorted(
        address
        for item in sink.received
        if subject_part in str(item.message["Subject"])
        for address in item.recipients
    )


async def test_an_announcement_reaches_exactly_the_accounts_that_did_not_object(
    database_url: str, sessions: sessionmaker[Session], sink: SmtpSink
) -> None:
    make_accounts(sessions)
    with transaction(sessions) as session:
        queued = announce(session, subject="New model available", body="dupify-visual-2 is out.\n")
    assert queued == 2
    await deliver(database_url, sessions, sink)
    assert recipients(sink, "New model") == ["ada@example.com", "grace@example.com"]
    [one] = sink.to("ada@example.com")
    assert "dupify-visual-2 is out." in one.body


async def test_an_objection_made_after_queueing_stops_the_pending_announcement(
    database_url: str, sessions: sessionmaker[Session], sink: SmtpSink
) -> None:
    """Mail waits in the outbox (the next poll, a retry hours later): the objection is honoured
    when the message is sent, not only when it was queued; other mail to the account still goes."""
    accounts = make_accounts(sessions)
    with transaction(sessions) as session:
        assert announce(session, subject="Spring news", body="Some news.\n") == 2
        enqueue(
            session,
            kind="security",
            to_address="ada@example.com",
            subject="A new API key",
            body="A key was created.\n",
            account_id=accounts["ada@example.com"],
        )
        session.get_one(Account, accounts["ada@example.com"]).pref_announcements = False
    await deliver(database_url, sessions, sink)
    assert recipients(sink, "Spring news") == ["grace@example.com"]
    assert recipients(sink, "A new API key") == ["ada@example.com"]
    with sessions() as session:
        kinds = session.scalars(
            select(OutboxMessage.kind).where(
                OutboxMessage.account_id == accounts["ada@example.com"]
            )
        ).all()
    assert kinds == ["security"]  # the withdrawn announcement is not kept either


async def test_a_policy_notice_reaches_every_account_once_however_often_it_runs(
    database_url: str, sessions: sessionmaker[Session], sink: SmtpSink
) -> None:
    accounts = make_accounts(sessions)
    assert announce_policy_change(sessions, 2, privacy_url="https://dupify.test/privacy") == 3
    assert announce_policy_change(sessions, 2) is None  # a second run queues nothing
    assert announce_if_raised(sessions, 2) is None  # nor does a restart
    await deliver(database_url, sessions, sink)
    assert recipients(sink, "version 2") == sorted(accounts)  # the objector too
    [notice] = sink.to("objector@example.com")
    assert "https://dupify.test/privacy" in notice.body
    # A third run after delivery still sends nothing more.
    assert announce_policy_change(sessions, 2) is None
    await deliver(database_url, sessions, sink)
    assert len(recipients(sink, "version 2")) == 3


async def test_racing_processes_announce_a_version_once(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    make_accounts(sessions)
    engines = [create_db_engine(database_url) for _ in range(4)]  # one pool per "process"
    try:
        results = await asyncio.gather(
            *(
                asyncio.to_thread(announce_policy_change, session_factory(engine), 3)
                for engine in engines
            )
        )
    finally:
        for engine in engines:
            engine.dispose()
    assert sorted(results, key=lambda r: r or 0) == [None, None, None, 3]
    with sessions() as session:
        policy_mail = select(func.count()).where(OutboxMessage.kind == "policy")
        assert session.scalar(select(func.count()).select_from(PolicyNotice)) == 1
        assert session.scalar(policy_mail.select_from(OutboxMessage)) == 3


def test_the_first_policy_version_needs_no_notice(sessions: sessionmaker[Session]) -> None:
    make_accounts(sessions)
    assert announce_if_raised(sessions, 1) is None
    assert announce_policy_change(sessions, 1) is None
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_the_banner_shows_until_acknowledged_and_not_to_accounts_made_after_the_notice(
    sessions: sessionmaker[Session],
) -> None:
    accounts = make_accounts(sessions)
    ada = accounts["ada@example.com"]
    with sessions() as session:
        assert not needs_policy_acknowledgement(session, ada, 1)
        assert needs_policy_acknowledgement(session, ada, 2)  # raised, not yet announced
    assert announce_if_raised(sessions, 2) == 3
    with transaction(sessions) as session:
        assert needs_policy_acknowledgement(session, ada, 2)
        acknowledge_policy(session, ada, 2)
        acknowledge_policy(session, ada, 2)  # twice is fine
    with transaction(sessions) as session:
        assert not needs_policy_acknowledgement(session, ada, 2)
        assert needs_policy_acknowledgement(session, accounts["grace@example.com"], 2)
        newcomer = create_account(session, email="new@example.com", name="New").id
    with sessions() as session:
        assert not needs_policy_acknowledgement(session, newcomer, 2)  # signed up under v2


def test_an_announcement_needs_a_subject_and_body(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        with pytest.raises(OutboxError):
            announce(session, subject=" ", body="text")
        with pytest.raises(OutboxError):
            announce(session, subject="Subject", body="\n")


def test_policy_and_security_mail_ignore_the_objection(sessions: sessionmaker[Session]) -> None:
    accounts = make_accounts(sessions)
    announce_policy_change(sessions, 2)
    with sessions() as session:
        objector = session.get(Account, accounts["objector@example.com"])
        assert objector is not None and not objector.pref_announcements
        kinds = session.scalars(
            select(OutboxMessage.kind).where(OutboxMessage.account_id == objector.id)
        ).all()
    assert kinds == ["policy"]
