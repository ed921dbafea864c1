"""Spike flags from the request log: repeated 429s and sudden jumps are flagged once per window."""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dupify.abuse.monitor import (
    RATE_LIMIT_FLAG,
    SPIKE_FLAG,
    AbuseMonitor,
    scan_for_abuse,
)
from dupify.abuse.service import list_flags, resolve_flag
from dupify.accounts.service import create_account
from dupify.config import AbuseSettings
from dupify.db import create_db_engine, new_id, session_factory, transaction, utcnow
from dupify.jobs.lease import HOLDER_MAX
from dupify.keys.service import create_key
from dupify.privacy.retention import RetentionScheduler
from dupify.usage.models import RequestLog
from support.settings import make_settings

SETTINGS = AbuseSettings(
    rate_limit_hits_to_flag=5,
    spike_factor=4,
    spike_min_requests=20,
    spike_window=timedelta(minutes=5),
    spike_baseline_windows=4,
)
SECRET = b"s" * 32


def new_key(sessions: sessionmaker[Session], email: str) -> tuple[str, str]:
    with transaction(sessions) as session:
        account = create_account(session, email=email, name="Someone")
        return account.id, create_key(session, account, secret=SECRET).record.id


def log_requests(
    sessions: sessionmaker[Session],
    account_id: str,
    key_id: str,
    at: datetime,
    count: int,
    error_code: str | None = None,
) -> None:
    """Rows as the usage recorder writes them, `count` of them spread over a minute after `at`."""
    with transaction(sessions) as session:
        session.add_all(
            RequestLog(
                request_id=new_id("req"),
                created_at=at + timedelta(seconds=60 * n / count),
                account_id=account_id,
                key_id=key_id,
                endpoint="GET /v1/models",
                status=429 if error_code == "rate_limited" else 200,
                error_code=error_code,
                latency_ms=1.0,
            )
            for n in range(count)
        )


def test_a_key_that_keeps_hitting_its_rate_limit_is_flagged_once_per_window(
    sessions: sessionmaker[Session],
) -> None:
    now = utcnow()
    account_id, key_id = new_key(sessions, "busy@example.com")
    log_requests(sessions, account_id, key_id, now - timedelta(minutes=3), 6, "rate_limited")
    with transaction(sessions) as session:
        [flag] = scan_for_abuse(session, SETTINGS, now)
        assert (flag.kind, flag.key_id, flag.account_id) == (RATE_LIMIT_FLAG, key_id, account_id)
    with transaction(sessions) as session:
        assert scan_for_abuse(session, SETTINGS, now + timedelta(minutes=1)) == []
        assert len(list_flags(session)) == 1


def test_a_jump_far_above_the_recent_average_is_flagged_and_steady_traffic_is_not(
    sessions: sessionmaker[Session],
) -> None:
    now = utcnow()
    spiky_account, spiky_key = new_key(sessions, "spiky@example.com")
    steady_account, steady_key = new_key(sessions, "steady@example.com")
    for window in range(1, 5):  # the baseline: 10 requests per window for both keys
        start = now - timedelta(minutes=5 * window + 4)
        log_requests(sessions, spiky_account, spiky_key, start, 10)
        log_requests(sessions, steady_account, steady_key, start, 30)
    log_requests(sessions, spiky_account, spiky_key, now - timedelta(minutes=2), 60)
    log_requests(sessions, steady_account, steady_key, now - timedelta(minutes=2), 35)
    with transaction(sessions) as session:
        flags = scan_for_abuse(session, SETTINGS, now)
        assert [(flag.kind, flag.key_id) for flag in flags] == [(SPIKE_FLAG, spiky_key)]
        assert "60 requests" in (flags[0].detail or "")


def test_quiet_new_keys_are_not_flagged(sessions: sessionmaker[Session]) -> None:
    now = utcnow()
    account_id, key_id = new_key(sessions, "new@example.com")
    log_requests(sessions, account_id, key_id, now - timedelta(minutes=1), 19)
    with transaction(sessions) as session:
        assert scan_for_abuse(session, SETTINGS, now) == []


def test_the_monitor_scans_once_per_window_across_processes(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    now = utcnow()
    account_id, key_id = new_key(sessions, "busy@example.com")
    log_requests(sessions, account_id, key_id, now - timedelta(minutes=1), 6, "rate_limited")
    engines = [create_db_engine(database_url) for _ in range(2)]
    try:
        first, second = (AbuseMonitor(session_factory(e), SETTINGS) for e in engines)
        assert first.run_once(now) == 1
        assert second.run_once(now + timedelta(seconds=30)) is None  # the window's scan is done
    finally:
        for engine in engines:
            engine.dispose()


def test_an_operator_resolves_a_flag_and_it_leaves_the_open_list(
    sessions: sessionmaker[Session],
) -> None:
    now = utcnow()
    account_id, key_id = new_key(sessions, "busy@example.com")
    log_requests(sessions, account_id, key_id, now - timedelta(minutes=1), 6, "rate_limited")
    with transaction(sessions) as session:
        [flag] = scan_for_abuse(session, SETTINGS, now)
        flag_id = flag.id
    with transaction(sessions) as session:
        resolve_flag(session, flag_id)
    with sessions() as session:
        assert list_flags(session) == []
        assert [flag.id for flag in list_flags(session, include_resolved=True)] == [flag_id]


def test_the_monitor_and_the_scheduler_take_their_lease_on_a_host_with_a_long_name(
    database_url: str, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Container and pod host names run to 63 characters; the lease holder must still fit its
    column (PostgreSQL refuses a longer value, and the job would never run)."""
    monkeypatch.setattr(socket, "gethostname", lambda: "dupify-api-" + "x" * 52)
    monitor = AbuseMonitor(sessions, SETTINGS)
    scheduler = RetentionScheduler(sessions, make_settings(database_url))
    for holder in (monitor.holder, scheduler.holder):
        assert len(holder) <= HOLDER_MAX and holder.startswith("dupify-api-x")
    assert monitor.holder != scheduler.holder
    assert monitor.run_once(utcnow()) == 0
    assert asyncio.run(scheduler.run_if_due()) is not None
