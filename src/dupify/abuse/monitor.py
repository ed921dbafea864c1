"""Spike flags: keys that keep hitting their rate limit, or whose traffic jumps far above its
recent average, get an `abuse_flags` row for an operator to review (PRIVACY row 8).

The scan reads the request log (every process writes there), so it sees the whole deployment's
traffic; it runs once per window in the server under a job lease, and on demand
(`dupify abuse scan`). A key gets at most one flag of a kind per window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from dupify.abuse.models import AbuseFlag
from dupify.accounts.models import Account
from dupify.config import AbuseSettings
from dupify.db import transaction, utcnow
from dupify.jobs import lease
from dupify.usage.models import RequestLog

log = logging.getLogger("dupify.abuse")

LEASE_NAME = "abuse_scan"
RATE_LIMIT_FLAG = "rate_limit_repeated"
SPIKE_FLAG = "request_spike"


@dataclass(frozen=True)
class KeyWindow:
    key_id: str
    account_id: str
    requests: int
    rate_limited: int
    baseline_per_window: float


def key_windows(session: Session, settings: AbuseSettings, now: datetime) -> list[KeyWindow]:
    """Each key's requests and 429s in the last window, with its average over the windows before."""
    start = now - settings.spike_window
    baseline_start = start - settings.spike_window * settings.spike_baseline_windows
    current = session.execute(
        select(
            RequestLog.key_id,
            Account.id,
            func.count(),
            func.sum(case((RequestLog.error_code == "rate_limited", 1), else_=0)),
        )
        .join(Account, Account.id == RequestLog.account_id)  # accounts that still exist
        .where(RequestLog.created_at >= start, RequestLog.created_at < now)
        .where(RequestLog.key_id.is_not(None))
        .group_by(RequestLog.key_id, Account.id)
    ).all()
    if not current:
        return []
    key_ids = [row[0] for row in current]
    baseline = {
        key_id: int(count)
        for key_id, count in session.execute(
            select(RequestLog.key_id, func.count())
            .where(RequestLog.created_at >= baseline_start, RequestLog.created_at < start)
            .where(RequestLog.key_id.in_(key_ids))
            .group_by(RequestLog.key_id)
        )
    }
    return [
        KeyWindow(
            key_id=str(key_id),
            account_id=str(account_id),
            requests=int(requests),
            rate_limited=int(limited or 0),
            baseline_per_window=baseline.get(key_id, 0) / settings.spike_baseline_windows,
        )
        for key_id, account_id, requests, limited in current
    ]


def _flag_kinds(window: KeyWindow, settings: AbuseSettings) -> list[tuple[str, str]]:
    kinds = []
    if window.rate_limited >= settings.rate_limit_hits_to_flag:
        kinds.append((RATE_LIMIT_FLAG, f"{window.rate_limited} rate-limited requests in a window"))
    spike_floor = settings.spike_factor * window.baseline_per_window
    if window.requests >= settings.spike_min_requests and window.requests > spike_floor:
        kinds.append(
            (
                SPIKE_FLAG,
                f"{window.requests} requests in a window against an average of "
                f"{window.baseline_per_window:.1f}",
            )
        )
    return kinds


def scan_for_abuse(session: Session, settings: AbuseSettings, now: datetime) -> list[AbuseFlag]:
    """Add the flags the last window calls for (none twice per key, kind and window)."""
    since = now - settings.spike_window
    recent = {
        (key_id, kind)
        for key_id, kind in session.execute(
            select(AbuseFlag.key_id, AbuseFlag.kind).where(AbuseFlag.created_at > since)
        )
    }
    flags = []
    for window in key_windows(session, settings, now):
        for kind, detail in _flag_kinds(window, settings):
            if (window.key_id, kind) in recent:
                continue
            flag = AbuseFlag(
                account_id=window.account_id,
                key_id=window.key_id,
                kind=kind,
                detail=detail,
                created_at=now,
            )
            session.add(flag)
            flags.append(flag)
    session.flush()
    return flags


class AbuseMonitor:
    """Runs the scan once per window, in one process of the deployment (a job lease)."""

    def __init__(self, sessions: sessionmaker[Session], settings: AbuseSettings) -> None:
        self.sessions = sessions
        self.settings = settings
        self.holder = lease.holder_name()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def run_once(self, now: datetime) -> int | None:
        """Scan if this process wins the window's lease; the number of new flags, or None."""
        window = self.settings.spike_window
        with transaction(self.sessions) as session:
            if not lease.try_acquire(
                session,
                LEASE_NAME,
                holder=self.holder,
                now=now,
                hold_for=window,
                min_interval=window * 0.9,
            ):
                return None
        with transaction(self.sessions) as session:
            flags = scan_for_abuse(session, self.settings, now)
            lease.finish(session, LEASE_NAME, holder=self.holder, now=now)
        for flag in flags:
            log.warning("abuse flag %s on key %s: %s", flag.kind, flag.key_id, flag.detail)
        return len(flags)

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="dupify-abuse-monitor")

    async def stop(self) -> None:
        # Wait for a scan in progress rather than cancel it: its thread would run on regardless.
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.run_once, utcnow())
            except Exception:
                log.exception("abuse scan failed; trying again next window")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stop.wait(), timeout=self.settings.spike_window.total_seconds()
                )
