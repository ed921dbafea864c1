"""Retention rules (PRIVACY rows 4, 9, 10): what is deleted when, run by `dupify purge` and by
the scheduler inside the server, once per deployment (a `job_leases` row).

Each rule is one DELETE in its own transaction, so one slow table does not hold the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import ColumnElement, CursorResult, Table, delete, select
from sqlalchemy.orm import Session, sessionmaker

from dupify.abuse.models import AbuseFlag
from dupify.accounts.models import Account, OneTimeToken, WebSession
from dupify.aio import cancel_and_wait
from dupify.audit.models import AuditEvent
from dupify.config import Settings
from dupify.db import transaction, utcnow
from dupify.jobs import lease
from dupify.mail.models import OutboxMessage
from dupify.usage.models import RequestLog

log = logging.getLogger("dupify.retention")

LEASE_NAME = "retention"
# How long a run may take before another process may assume it died and take over.
RUN_LEASE = timedelta(minutes=30)


@dataclass(frozen=True)
class RetentionRule:
    """One kind of data and when it goes: `condition(now, settings)` selects the rows to delete."""

    name: str
    removes: str
    table: Table
    condition: Callable[[datetime, Settings], ColumnElement[bool]]


def _table(model: Any) -> Table:
    return cast(Table, model.__table__)


RULES: tuple[RetentionRule, ...] = (
    RetentionRule(
        "request_logs",
        "older than usage_log.retention",
        _table(RequestLog),
        lambda now, s: RequestLog.created_at < now - s.usage_log.retention,
    ),
    # A server process may flush a buffered row after its account was deleted; this catches it.
    RetentionRule(
        "request_logs_of_deleted_accounts",
        "rows flushed after their account was deleted",
        _table(RequestLog),
        lambda now, s: (
            RequestLog.account_id.is_not(None) & RequestLog.account_id.not_in(select(Account.id))
        ),
    ),
    RetentionRule(
        "audit_events",
        "older than retention.audit_events",
        _table(AuditEvent),
        lambda now, s: AuditEvent.created_at < now - s.retention.audit_events,
    ),
    RetentionRule(
        "outbox_sent_or_failed",
        "sent or failed, older than retention.sent_or_failed_mail",
        _table(OutboxMessage),
        lambda now, s: (
            OutboxMessage.state.in_(("sent", "failed"))
            & (OutboxMessage.created_at < now - s.retention.sent_or_failed_mail)
        ),
    ),
    RetentionRule(
        "web_sessions_expired",
        "past expires_at",
        _table(WebSession),
        lambda now, s: WebSession.expires_at < now,
    ),
    RetentionRule(
        "one_time_tokens_expired",
        "past expires_at",
        _table(OneTimeToken),
        lambda now, s: OneTimeToken.expires_at < now,
    ),
    RetentionRule(
        "abuse_flags_resolved",
        "resolved longer ago than retention.resolved_abuse_flags",
        _table(AbuseFlag),
        lambda now, s: AbuseFlag.resolved_at < now - s.retention.resolved_abuse_flags,
    ),
)

CACHE_RULE = "result_cache_expired"


class PurgeableCache(Protocol):
    """The result cache's side of retention: drop entries past their TTL, return how many."""

    def purge_expired(self) -> int: ...


def run_database_rules(
    sessions: sessionmaker[Session], settings: Settings, now: datetime | None = None
) -> list[tuple[str, int]]:
    """Run every database rule now; returns (rule name, rows removed) in rule order."""
    moment = now or utcnow()
    removed = []
    for rule in RULES:
        with transaction(sessions) as session:
            result = session.execute(delete(rule.table).where(rule.condition(moment, settings)))
            removed.append((rule.name, cast(CursorResult[Any], result).rowcount))
    return removed


async def run_all(
    sessions: sessionmaker[Session], settings: Settings, cache: PurgeableCache | None = None
) -> list[tuple[str, int]]:
    """Every rule, the database ones off the event loop, then the cache's if there is one."""
    removed = await asyncio.to_thread(run_database_rules, sessions, settings)
    if cache is not None:
        # In memory and quick (the embedded cache); Redis expires its own keys (PX).
        removed.append((CACHE_RULE, cache.purge_expired()))
    return removed


class RetentionScheduler:
    """Runs `run_all` every `retention.interval` in whichever server process takes the lease.

    Every process wakes up; the lease (`jobs/lease.py`) lets one of them run and makes the others
    skip until the interval has passed again, however many processes or hosts there are.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        cache: PurgeableCache | None = None,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._cache = cache
        self.holder = lease.holder_name()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention-scheduler")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def run_if_due(self) -> list[tuple[str, int]] | None:
        """Run every rule if this process wins the lease and the interval has passed; None if
        another process holds it or ran recently.

        An embedded cache lives in this process's memory, so every process purges its own at
        every check, lease or not: the lease winner's purge cannot reach the others' entries.
        """
        if not await asyncio.to_thread(self._take_lease):
            if self._cache is not None:
                self._cache.purge_expired()
            return None
        try:
            removed = await run_all(self._sessions, self._settings, self._cache)
        except BaseException:
            # Not counted as a run: the next check (of any process) tries again.
            await asyncio.to_thread(self._release_lease, False)
            raise
        await asyncio.to_thread(self._release_lease, True)
        log.info(
            "retention run: %s",
            ", ".join(f"{name}: {count}" for name, count in removed if count) or "nothing due",
        )
        return removed

    def _take_lease(self) -> bool:
        with transaction(self._sessions) as session:
            return lease.try_acquire(
                session,
                LEASE_NAME,
                holder=self.holder,
                now=utcnow(),
                hold_for=RUN_LEASE,
                min_interval=self._settings.retention.interval,
            )

    def _release_lease(self, ran: bool) -> None:
        with transaction(self._sessions) as session:
            lease.finish(session, LEASE_NAME, holder=self.holder, now=utcnow(), ran=ran)

    async def _loop(self) -> None:
        # Check more often than the interval, so a process that dies mid-interval is replaced
        # promptly by another; the lease keeps the runs themselves once per interval. The first
        # check waits too: start-up (and every test's app) does no purge work.
        pause = min(self._settings.retention.interval.total_seconds(), 300.0)
        while True:
            await asyncio.sleep(pause)
            try:
                await self.run_if_due()
            except Exception:
                log.exception("retention run failed; retrying at the next check")
