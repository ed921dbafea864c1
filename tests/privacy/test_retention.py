"""Retention (PRIVACY rows 4, 10): `dupify purge` deletes what is past its period and keeps the
rest; the in-server scheduler runs once per deployment however many processes race for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from dupify.abuse.models import AbuseFlag
from dupify.accounts.models import OneTimeToken, WebSession
from dupify.accounts.service import create_account
from dupify.audit.models import AuditEvent
from dupify.cli.main import app as cli
from dupify.db import create_db_engine, new_id, session_factory, transaction, utcnow
from dupify.jobs.models import JobLease
from dupify.limits.cache import EmbeddedCache
from dupify.mail.models import OutboxMessage
from dupify.privacy.retention import RetentionScheduler
from dupify.usage.models import RequestLog
from support.cli import cli_env
from support.settings import make_settings


def purge(database_url: str) -> str:
    result = CliRunner().invoke(cli, ["purge"], env=cli_env(database_url))
    assert result.exit_code == 0, result.output
    return result.output


def _log(days_ago: float, request_id: str, account_id: str | None = None) -> RequestLog:
    return RequestLog(
        request_id=request_id,
        created_at=utcnow() - timedelta(days=days_ago),
        account_id=account_id,
        key_id=None,
        endpoint="POST /v1/embeddings",
        status=200,
        latency_ms=1.0,
    )


def _token(token_hash: str, account_id: str, expires_at: datetime) -> OneTimeToken:
    return OneTimeToken(
        token_hash=token_hash, account_id=account_id, purpose="verify_email", expires_at=expires_at
    )


def _mail(message_id: str, state: str, created_at: datetime) -> OutboxMessage:
    return OutboxMessage(
        id=message_id,
        kind="security",
        to_address="someone@example.com",
        subject="Security notice",
        body="A body.",
        state=state,
        created_at=created_at,
    )


def _flag(account_id: str, kind: str, resolved_at: datetime | None) -> AbuseFlag:
    created = utcnow() - timedelta(days=200)
    return AbuseFlag(account_id=account_id, kind=kind, created_at=created, resolved_at=resolved_at)


def removed_by_rule(output: str) -> dict[str, int]:
    counts = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) == 3 and cells[2].isdigit():
            counts[cells[0]] = int(cells[2])
    return counts


def test_purge_keeps_a_log_row_of_89_days_and_removes_one_of_91(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        session.add_all([_log(89, "req_day89"), _log(91, "req_day91")])
    output = purge(database_url)
    assert removed_by_rule(output)["request_logs"] == 1
    with sessions() as session:
        assert session.scalars(select(RequestLog.request_id)).all() == ["req_day89"]


def test_purge_removes_expired_sessions_tokens_and_old_audit_mail_and_flags(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    now = utcnow()
    with transaction(sessions) as session:
        account = create_account(session, email="keeper@example.com", name="Keeper")
        account_id = account.id
        day = timedelta(days=1)
        session.add_all(
            [
                WebSession(id="s-expired", account_id=account_id, expires_at=now - day),
                WebSession(id="s-live", account_id=account_id, expires_at=now + day),
                _token("t-expired", account_id, expires_at=now - day),
                _token("t-live", account_id, expires_at=now + day),
                AuditEvent(event="login", account_id=account_id, created_at=now - 91 * day),
                AuditEvent(event="login", account_id=account_id, created_at=now - 89 * day),
                _mail("msg-old-sent", "sent", created_at=now - 31 * day),
                _mail("msg-old-failed", "failed", created_at=now - 31 * day),
                _mail("msg-old-pending", "pending", created_at=now - 31 * day),
                _mail("msg-new-sent", "sent", created_at=now - 29 * day),
                _flag(account_id, "old-resolved", resolved_at=now - 91 * day),
                _flag(account_id, "recent-resolved", resolved_at=now - day),
                _flag(account_id, "old-open", resolved_at=None),
                # Flushed by a server after its account was deleted: an orphan.
                _log(0, "req-orphan", account_id="acct_gone"),
                _log(0, "req-kept", account_id=account_id),
            ]
        )
    counts = removed_by_rule(purge(database_url))
    assert counts == {
        "request_logs": 0,
        "request_logs_of_deleted_accounts": 1,
        "audit_events": 1,
        "outbox_sent_or_failed": 2,
        "web_sessions_expired": 1,
        "one_time_tokens_expired": 1,
        "abuse_flags_resolved": 1,
    }
    with sessions() as session:
        assert session.scalars(select(WebSession.id)).all() == ["s-live"]
        assert session.scalars(select(OneTimeToken.token_hash)).all() == ["t-live"]
        assert len(session.scalars(select(AuditEvent)).all()) == 1
        assert sorted(session.scalars(select(OutboxMessage.id))) == [
            "msg-new-sent",
            "msg-old-pending",
        ]
        assert sorted(session.scalars(select(AbuseFlag.kind))) == ["old-open", "recent-resolved"]
        assert session.scalars(select(RequestLog.request_id)).all() == ["req-kept"]
    # Nothing left to do: a second run removes nothing.
    assert set(removed_by_rule(purge(database_url)).values()) == {0}


def test_periods_are_configurable(database_url: str, sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        session.add_all([_log(5, "req_day5"), _log(3, "req_day3")])
    result = CliRunner().invoke(
        cli, ["purge"], env=cli_env(database_url, DUPIFY_USAGE_LOG__RETENTION="P4D")
    )
    assert result.exit_code == 0, result.output
    with sessions() as session:
        assert session.scalars(select(RequestLog.request_id)).all() == ["req_day3"]


async def test_racing_schedulers_run_once_per_interval(database_url: str) -> None:
    settings = make_settings(database_url)
    engines = [create_db_engine(database_url) for _ in range(4)]
    try:
        schedulers = [RetentionScheduler(session_factory(e), settings) for e in engines]
        sessions = session_factory(engines[0])
        for _round in range(3):
            with transaction(sessions) as session:
                session.execute(delete(JobLease))
                session.add(_log(91, new_id("req")))
            outcomes = await asyncio.gather(*(s.run_if_due() for s in schedulers))
            ran = [outcome for outcome in outcomes if outcome is not None]
            assert len(ran) == 1, outcomes
            assert dict(ran[0])["request_logs"] == 1
            # Within the interval nobody runs again, the winner included.
            assert [await s.run_if_due() for s in schedulers] == [None] * len(schedulers)
        with sessions() as session:
            lease = session.scalars(select(JobLease)).one()
            assert lease.last_run_at is not None and lease.expires_at <= utcnow()
    finally:
        for engine in engines:
            engine.dispose()


async def test_a_lease_held_by_a_dead_process_is_taken_over_after_it_expires(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = make_settings(database_url)
    with transaction(sessions) as session:
        session.add(
            JobLease(name="retention", holder="dead:1", expires_at=utcnow() + timedelta(minutes=5))
        )
    scheduler = RetentionScheduler(sessions, settings)
    assert await scheduler.run_if_due() is None
    with transaction(sessions) as session:
        session.get_one(JobLease, "retention").expires_at = utcnow() - timedelta(seconds=1)
    assert await scheduler.run_if_due() is not None


async def test_the_server_runs_the_scheduler(api_factory: Callable[..., Any]) -> None:
    async with api_factory(retention={"interval": timedelta(milliseconds=200)}) as api:
        sessions = session_factory(api.engine)
        with transaction(sessions) as session:
            session.add(_log(91, "req_old"))
        for _ in range(100):
            await asyncio.sleep(0.1)
            with sessions() as session:
                if not session.scalars(select(RequestLog.request_id)).all():
                    break
        with sessions() as session:
            assert session.scalars(select(RequestLog.request_id)).all() == []


async def test_the_scheduler_purges_expired_embedded_cache_entries(database_url: str) -> None:
    now = [1000.0]
    cache = EmbeddedCache(b"k" * 32, max_bytes=1 << 20, ttl_s=60, clock=lambda: now[0])
    await cache.set_many({"old": b"result"})
    now[0] += 30
    await cache.set_many({"young": b"result"})
    now[0] += 31
    engine = create_db_engine(database_url)
    try:
        scheduler = RetentionScheduler(session_factory(engine), make_settings(database_url), cache)
        removed = await scheduler.run_if_due()
    finally:
        engine.dispose()
    assert removed is not None and dict(removed)["result_cache_expired"] == 1
    assert len(cache) == 1


async def test_every_process_purges_its_own_embedded_cache_whoever_wins_the_lease(
    database_url: str,
) -> None:
    """Each server process has its own embedded cache: the lease decides who runs the database
    rules, not whose expired results are dropped."""
    now = [1000.0]
    caches = [
        EmbeddedCache(b"k" * 32, max_bytes=1 << 20, ttl_s=60, clock=lambda: now[0])
        for _ in range(3)
    ]
    for cache in caches:
        await cache.set_many({"old": b"result"})
    now[0] += 61
    settings = make_settings(database_url)
    engines = [create_db_engine(database_url) for _ in caches]
    try:
        schedulers = [
            RetentionScheduler(session_factory(engine), settings, cache)
            for engine, cache in zip(engines, caches, strict=True)
        ]
        outcomes = await asyncio.gather(*(s.run_if_due() for s in schedulers))
    finally:
        for engine in engines:
            engine.dispose()
    assert len([outcome for outcome in outcomes if outcome is not None]) == 1
    assert [len(cache) for cache in caches] == [0, 0, 0]


async def test_a_failed_run_is_retried_at_the_next_check_not_after_the_interval(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    settings = make_settings(database_url)  # the interval: an hour
    scheduler = RetentionScheduler(sessions, settings)
    with transaction(sessions) as session:
        session.add(_log(91, "req_old"))
        # A real failure: the table the first rule deletes from is briefly not there.
        session.execute(text("ALTER TABLE request_logs RENAME TO request_logs_away"))
    try:
        with pytest.raises(DBAPIError):
            await scheduler.run_if_due()
    finally:
        with transaction(sessions) as session:
            session.execute(text("ALTER TABLE request_logs_away RENAME TO request_logs"))
    removed = await scheduler.run_if_due()
    assert removed is not None and dict(removed)["request_logs"] == 1
