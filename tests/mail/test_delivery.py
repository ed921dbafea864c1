"""Outbox delivery against a real SMTP server: sent, retried with back-off, failed, claimed once."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dupify.config import Environment, MailSettings
from dupify.db import create_db_engine, session_factory, transaction
from dupify.mail.delivery import MailSender, claim_due, record_outcomes, retry_delay
from dupify.mail.models import OutboxMessage
from dupify.mail.outbox import OutboxError, enqueue
from dupify.mail.transports import Outcome, Result, parse_smtp_url
from support.servers import free_port
from support.settings import make_settings
from support.smtp_sink import SmtpSink, running_sink
from support.waiting import wait_until

FAST = {"poll_interval_s": 0.05, "retry_base_s": 0.1, "retry_max_s": 0.4, "timeout_s": 5}


def queue(sessions: sessionmaker[Session], to: str = "dev@example.com", **extra: str) -> str:
    with transaction(sessions) as session:
        message = enqueue(
            session,
            kind=extra.get("kind", "verification"),
            to_address=to,
            subject=extra.get("subject", "Confirm your email"),
            body=extra.get("body", "Open https://dupify.test/verify?t=abc to confirm.\n"),
        )
        return message.id


def row(sessions: sessionmaker[Session], message_id: str) -> OutboxMessage:
    with sessions() as session:
        found = session.get(OutboxMessage, message_id)
        assert found is not None
        return found


async def test_a_queued_message_is_delivered_by_smtp(
    database_url: str, sessions: sessionmaker[Session], sink: SmtpSink
) -> None:
    settings = make_settings(database_url, smtp_url=sink.url, mail=MailSettings(**FAST))
    sender = MailSender(sessions, settings)
    await sender.start()
    try:
        message_id = queue(sessions, to="ada@example.com")
        await wait_until(lambda: row(sessions, message_id).state == "sent", "the message is sent")
    finally:
        await sender.stop()
    [received] = sink.to("ada@example.com")
    assert received.message["Subject"] == "Confirm your email"
    assert received.message["From"] == settings.mail.from_address
    assert received.sender == "no-reply@dupify.localhost"
    assert "https://dupify.test/verify?t=abc" in received.body
    stored = row(sessions, message_id)
    assert stored.attempts == 1 and stored.sent_at is not None and stored.last_error is None


async def test_the_sender_is_woken_by_a_commit_not_the_poll(
    database_url: str, sessions: sessionmaker[Session], sink: SmtpSink
) -> None:
    # A poll interval far longer than the test's patience: only the wake-up can deliver.
    mail = MailSettings(**{**FAST, "poll_interval_s": 3600})
    sender = MailSender(sessions, make_settings(database_url, smtp_url=sink.url, mail=mail))
    await sender.start()
    try:
        await asyncio.sleep(0.1)  # the sender has found nothing and gone to sleep
        message_id = queue(sessions)
        await wait_until(lambda: row(sessions, message_id).state == "sent", "woken delivery")
    finally:
        await sender.stop()


async def test_smtp_credentials_from_the_url_are_used(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    with running_sink(SmtpSink(free_port(), login=("mailer", "p@ss:word"))) as sink:
        settings = make_settings(database_url, smtp_url=sink.url, mail=MailSettings(**FAST))
        message_id = queue(sessions)
        report = await MailSender(sessions, settings).deliver_all_due()
        assert report.sent == 1 and row(sessions, message_id).state == "sent"
        assert sink.logins == ["mailer"] and len(sink.received) == 1


async def test_a_down_server_means_retries_with_back_off_then_delivery(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    port = free_port()  # nothing listens here yet
    settings = make_settings(
        database_url, smtp_url=f"smtp://127.0.0.1:{port}", mail=MailSettings(**FAST)
    )
    sender = MailSender(sessions, settings)
    message_id = queue(sessions, to="grace@example.com")
    await sender.start()
    try:
        # The third claim comes only after the second failure was recorded.
        await wait_until(lambda: row(sessions, message_id).attempts >= 3, "two failed attempts")
        failing = row(sessions, message_id)
        assert failing.state == "pending" and failing.last_error is not None
        with running_sink(SmtpSink(port)) as sink:
            await wait_until(lambda: row(sessions, message_id).state == "sent", "delivery")
            assert len(sink.to("grace@example.com")) == 1
    finally:
        await sender.stop()
    delivered = row(sessions, message_id)
    assert delivered.attempts >= 3 and delivered.last_error is None


async def test_a_refused_recipient_fails_alone_and_the_batch_goes_on(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    with running_sink(SmtpSink(free_port(), refuse=frozenset({"gone@example.com"}))) as sink:
        settings = make_settings(database_url, smtp_url=sink.url, mail=MailSettings(**FAST))
        refused = queue(sessions, to="gone@example.com")
        fine = queue(sessions, to="here@example.com")
        report = await MailSender(sessions, settings).deliver_all_due()
    assert (report.sent, report.failed) == (1, 1)
    assert row(sessions, fine).state == "sent" and len(sink.to("here@example.com")) == 1
    failed = row(sessions, refused)
    assert failed.state == "failed" and "550" in (failed.last_error or "")


async def test_after_the_last_attempt_a_message_is_failed(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    mail = MailSettings(**{**FAST, "max_attempts": 2, "retry_base_s": 0.01})
    settings = make_settings(database_url, smtp_url=f"smtp://127.0.0.1:{free_port()}", mail=mail)
    sender = MailSender(sessions, settings)
    message_id = queue(sessions)
    first = await sender.deliver_all_due()
    assert (first.retrying, row(sessions, message_id).state) == (1, "pending")
    await asyncio.sleep(0.05)  # past the 0.01 s back-off
    second = await sender.deliver_all_due()
    assert second.failed == 1
    failed = row(sessions, message_id)
    assert (failed.state, failed.attempts) == ("failed", 2)
    assert failed.last_error


async def test_a_message_is_claimed_by_one_sender_only(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    ids = {queue(sessions, to=f"user{n}@example.com") for n in range(30)}
    mail = MailSettings(batch_size=7)
    now = (row(sessions, next(iter(ids))).created_at) + timedelta(seconds=1)
    claims = await asyncio.gather(
        *(asyncio.to_thread(claim_due, sessions, mail, now) for _ in range(6))
    )
    claimed = [message.id for batch in claims for message in batch]
    assert len(claimed) == len(set(claimed))  # nobody got a message twice
    assert set(claimed) <= ids
    # A second round later takes the rest; what was claimed is not due again within the lease.
    rest = claim_due(sessions, MailSettings(batch_size=100), now)
    assert {message.id for message in rest} == ids - set(claimed)


async def test_without_smtp_development_mail_goes_to_the_log(
    database_url: str, sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(database_url, mail=MailSettings(**FAST))
    message_id = queue(sessions, to="dev@example.com")
    with caplog.at_level(logging.INFO, logger="dupify.mail"):
        report = await MailSender(sessions, settings).deliver_all_due()
    assert report.sent == 1 and row(sessions, message_id).state == "sent"
    assert "https://dupify.test/verify?t=abc" in caplog.text
    # Only the links: never the recipient (log lines outlive an account's deletion).
    assert "dev@example.com" not in caplog.text


async def test_without_smtp_production_mail_is_failed_and_kept_out_of_the_log(
    database_url: str, sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(database_url, mail=MailSettings(**FAST)).model_copy(
        update={"env": Environment.production}
    )
    message_id = queue(sessions, to="prod@example.com")
    with caplog.at_level(logging.INFO, logger="dupify.mail"):
        report = await MailSender(sessions, settings).deliver_all_due()
    assert report.failed == 1
    stored = row(sessions, message_id)
    assert stored.state == "failed" and "DUPIFY_SMTP_URL" in (stored.last_error or "")
    assert "prod@example.com" not in caplog.text and "verify?t=abc" not in caplog.text


def test_the_smtp_url_forms() -> None:
    plain = parse_smtp_url("smtp://mail.example.com")
    assert (plain.port, plain.use_tls, plain.start_tls, plain.username) == (25, False, None, None)
    implicit = parse_smtp_url("smtps://u%40x:p%3Aw@mail.example.com")
    assert (implicit.port, implicit.use_tls, implicit.username, implicit.password) == (
        465,
        True,
        "u@x",
        "p:w",
    )
    assert "p:w" not in repr(implicit)
    required = parse_smtp_url("smtp+starttls://mail.example.com:2525")
    assert (required.port, required.start_tls) == (2525, True)
    with pytest.raises(ValueError, match="DUPIFY_SMTP_URL"):
        parse_smtp_url("http://mail.example.com")


def test_a_failed_attempt_is_due_again_after_its_back_off(
    sessions: sessionmaker[Session],
) -> None:
    mail = MailSettings(retry_base_s=30, retry_max_s=3600)
    message_id = queue(sessions)
    now = row(sessions, message_id).created_at + timedelta(seconds=1)
    for attempt in (1, 2, 3):
        [claimed] = claim_due(sessions, mail, now)
        assert claimed.attempts == attempt
        record_outcomes(sessions, mail, [(claimed, Outcome(Result.retry, "421 try later"))], now)
        due = row(sessions, message_id).next_attempt_at
        assert due == now + retry_delay(attempt, mail)  # 30 s, then 60 s, then 120 s
        assert claim_due(sessions, mail, due - timedelta(seconds=1)) == []  # not before
        now = due


def test_back_off_doubles_up_to_its_cap() -> None:
    mail = MailSettings(retry_base_s=30, retry_max_s=300)
    delays = [retry_delay(attempt, mail).total_seconds() for attempt in range(1, 7)]
    assert delays == [30, 60, 120, 240, 300, 300]


def test_enqueue_refuses_unknown_kinds_and_header_injection(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        with pytest.raises(OutboxError):
            enqueue(session, kind="spam", to_address="a@example.com", subject="s", body="b")
        with pytest.raises(OutboxError):
            enqueue(
                session, kind="security", to_address="a@example.com\nBcc: x", subject="s", body="b"
            )
        with pytest.raises(OutboxError):
            enqueue(
                session, kind="security", to_address="a@example.com", subject="s\nBcc: x", body="b"
            )
        assert session.scalars(select(OutboxMessage)).all() == []


def test_a_message_never_given_an_outcome_is_failed_after_max_attempts(
    sessions: sessionmaker[Session],
) -> None:
    """A sender that dies (or raises) mid-send records nothing; the claim lease brings the
    message back, but only `max_attempts` times: then it is failed, not retried forever."""
    mail = MailSettings(max_attempts=2, claim_lease_s=60)
    message_id = queue(sessions)
    now = row(sessions, message_id).created_at + timedelta(seconds=1)
    for attempt in (1, 2):
        [claimed] = claim_due(sessions, mail, now)
        assert claimed.attempts == attempt
        now += timedelta(seconds=61)  # the lease ran out with no outcome recorded
    assert claim_due(sessions, mail, now) == []
    given_up = row(sessions, message_id)
    assert (given_up.state, given_up.attempts) == ("failed", 2)
    assert "no outcome recorded" in (given_up.last_error or "")


async def test_a_slow_server_does_not_make_two_senders_send_a_message_twice(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    """A batch outlasting its claim lease would be claimed again by another sender while the
    first is still sending it; a sender starts no message after half the lease instead."""
    mail = MailSettings(**{**FAST, "claim_lease_s": 1.0, "batch_size": 10, "retry_base_s": 0.05})
    addresses = [f"slow{n}@example.com" for n in range(8)]
    with running_sink(SmtpSink(free_port(), data_delay_s=0.2)) as sink:
        settings = make_settings(database_url, smtp_url=sink.url, mail=mail)
        ids = [queue(sessions, to=address) for address in addresses]
        engines = [create_db_engine(database_url) for _ in range(2)]
        senders = [MailSender(session_factory(engine), settings) for engine in engines]
        try:
            for sender in senders:
                await sender.start()
            await wait_until(
                lambda: all(row(sessions, message_id).state == "sent" for message_id in ids),
                "every message is sent",
            )
        finally:
            for sender in senders:
                await sender.stop()
            for engine in engines:
                engine.dispose()
        assert sorted(r for item in sink.received for r in item.recipients) == addresses


def test_a_deferred_message_is_due_at_once_and_its_attempt_not_counted(
    sessions: sessionmaker[Session],
) -> None:
    mail = MailSettings(max_attempts=1)
    message_id = queue(sessions)
    now = row(sessions, message_id).created_at + timedelta(seconds=1)
    [claimed] = claim_due(sessions, mail, now)
    record_outcomes(sessions, mail, [(claimed, Outcome(Result.deferred))], now)
    deferred = row(sessions, message_id)
    assert (deferred.state, deferred.attempts, deferred.next_attempt_at) == ("pending", 0, now)
    [again] = claim_due(sessions, mail, now)  # its one attempt is still to come
    assert again.attempts == 1
