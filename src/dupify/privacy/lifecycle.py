"""Account deletion and export (PRIVACY.md rows 9 and 15): every stored datum, removed or given.

Both are used by the portal and the CLI. Deletion removes every row about the account in the
caller's unit of work, and what lives outside the database (the result cache, the rate-limit
counters); a tombstone without personal data stays. Export gathers the same rows as JSON.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Literal, Protocol, cast

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    CursorResult,
    Engine,
    delete,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Session

from dupify.abuse.models import AbuseFlag
from dupify.accounts.models import Account, DeletionTombstone, OneTimeToken, WebSession
from dupify.audit.models import AuditEvent
from dupify.audit.service import record_event
from dupify.config import Settings
from dupify.db import Base, after_commit, create_db_engine, session_factory, unit_of_work, utcnow
from dupify.keys.models import ApiKey
from dupify.keys.secret import server_secret
from dupify.keys.signal import credentials_changed, publish_through
from dupify.limits.backends import open_backends
from dupify.mail.models import OutboxMessage
from dupify.privacy.models import PolicyAcknowledgement
from dupify.usage.models import RequestLog

log = logging.getLogger("dupify.accounts")

EXPORT_FORMAT = "dupify.account-export"
EXPORT_VERSION = 1

Initiator = Literal["self", "operator"]


class CachedResults(Protocol):
    """The result cache (`limits.cache`): drops the account's entries now, returns how many."""

    async def forget_account(self, account_id: str) -> int: ...


class LimitCounters(Protocol):
    """The limiter (`limits.ratelimit`): drops the account's quota and its keys' rate counters."""

    async def forget_account(self, account_id: str, key_ids: Iterable[str] = ...) -> None: ...


class BufferedUsage(Protocol):
    """The usage recorder (`usage.recorder`): writes its buffered request-log rows now."""

    async def flush(self) -> int: ...


class ServerState(Protocol):
    """What a running server keeps about accounts outside its tables (its runtime)."""

    @property
    def recorder(self) -> BufferedUsage: ...

    @property
    def cache(self) -> CachedResults: ...

    @property
    def limiter(self) -> LimitCounters: ...


class AccountNotFound(LookupError):
    """No account with the given id (it may have been deleted already)."""


@dataclass
class DeletionReport:
    """What a deletion removed: rows per table and result-cache entries (the count is complete
    once the unit of work has committed: entries are forgotten again after the commit)."""

    deleted_at: datetime
    rows_removed: dict[str, int] = field(default_factory=dict)
    cached_results: int = 0


async def delete_account(
    session: Session,
    account_id: str,
    *,
    initiated_by: Initiator,
    operator_id: str | None = None,
    cache: CachedResults | None = None,
    limiter: LimitCounters | None = None,
) -> DeletionReport:
    """Delete the account and everything about it in the caller's unit of work (an async one,
    `dupify.db.unit_of_work`); raises AccountNotFound if there is none.

    The portal passes `initiated_by="self"`; the CLI and /admin pass `"operator"` (with the
    operator's own account id for the audit row, never the deleted account's). `cache` and
    `limiter` are the runtime's: their entries are removed now, not left to expire.

    The cache and limiter are cleared before the rows go, so if Redis is down (`KvUnavailable`)
    nothing is deleted and the caller can retry; and again after the commit, for entries written
    by requests in between (once the rows are gone the keys are refused, so nothing new comes).
    """
    key_ids = await asyncio.to_thread(_key_ids, session, account_id)
    cached = await _forget(account_id, key_ids, cache, limiter)
    rows_removed, key_ids = await asyncio.to_thread(
        _delete_rows, session, account_id, initiated_by, operator_id
    )
    report = DeletionReport(deleted_at=utcnow(), rows_removed=rows_removed, cached_results=cached)
    engine = cast(Engine, session.get_bind())
    after_commit(
        session,
        partial(_after_deletion, report, account_id, key_ids, cache, limiter, engine, initiated_by),
    )
    return report


async def _after_deletion(
    report: DeletionReport,
    account_id: str,
    key_ids: Sequence[str],
    cache: CachedResults | None,
    limiter: LimitCounters | None,
    engine: Engine,
    initiated_by: Initiator,
) -> None:
    try:
        report.cached_results += await _forget(account_id, key_ids, cache, limiter)
    except Exception:
        log.warning(
            "after an account deletion the cache/limiter were unreachable; entries written "
            "during the deletion expire with their TTL and can no longer be read"
        )
    await asyncio.to_thread(_reclaim_deleted_pages, engine)
    # Counts only: the log must not hold the deleted account's id, email or name.
    log.info(
        "account deleted (%s): %d rows, %d cached results",
        initiated_by,
        sum(report.rows_removed.values()),
        report.cached_results,
    )


async def delete_account_in_server(
    server: ServerState,
    session: Session,
    account_id: str,
    *,
    initiated_by: Initiator,
    operator_id: str | None = None,
) -> DeletionReport:
    """`delete_account` in a request (the portal, /admin): the server's buffered request-log
    rows are written first, so none of the account's rows lands after the deletion, and the
    server's cache and limiter forget the account.

    Call it before the request's own first write: the recorder writes in its own transaction,
    which on SQLite would wait for the request's write lock.
    """
    await server.recorder.flush()
    return await delete_account(
        session,
        account_id,
        initiated_by=initiated_by,
        operator_id=operator_id,
        cache=server.cache,
        limiter=server.limiter,
    )


async def delete_account_outside_server(
    settings: Settings, account_id: str, *, operator_id: str | None = None
) -> DeletionReport:
    """`delete_account` from the CLI, in a unit of work of its own: its own engine, and the
    deployment's Redis (if configured) for the shared cache and counters; an embedded cache lives
    in the servers' memory, where its entries become unreadable with the keys and expire within
    the cache TTL."""
    engine = create_db_engine(settings.database_url)
    publish_through(engine, settings)  # the servers' key caches learn of it through Redis
    try:
        async with AsyncExitStack() as stack:
            cache: CachedResults | None = None
            limiter: LimitCounters | None = None
            if settings.redis_url:
                limiter, cache = await open_backends(settings, server_secret(settings), stack)
            async with unit_of_work(session_factory(engine)) as session:
                report = await delete_account(
                    session,
                    account_id,
                    initiated_by="operator",
                    operator_id=operator_id,
                    cache=cache,
                    limiter=limiter,
                )
            return report
    finally:
        engine.dispose()


async def _forget(
    account_id: str,
    key_ids: Sequence[str],
    cache: CachedResults | None,
    limiter: LimitCounters | None,
) -> int:
    cached = await cache.forget_account(account_id) if cache is not None else 0
    if limiter is not None:
        await limiter.forget_account(account_id, key_ids)
    return cached


def _key_ids(session: Session, account_id: str) -> list[str]:
    if session.get(Account, account_id) is None:
        raise AccountNotFound(account_id)
    return list(session.scalars(select(ApiKey.id).where(ApiKey.account_id == account_id)))


def _delete_rows(
    session: Session, account_id: str, initiated_by: Initiator, operator_id: str | None
) -> tuple[dict[str, int], list[str]]:
    account = session.get(Account, account_id)
    if account is None:
        raise AccountNotFound(account_id)
    email = account.email
    # Read again: a key created while the cache was being cleared goes too.
    key_ids = list(session.scalars(select(ApiKey.id).where(ApiKey.account_id == account_id)))
    removed: dict[str, int] = {}
    for table, condition in _rows_about(account_id, email, key_ids):
        result = cast(CursorResult[Any], session.execute(delete(table).where(condition)))
        removed[table.name] = removed.get(table.name, 0) + result.rowcount
    session.add(DeletionTombstone(initiated_by=initiated_by))
    credentials_changed(session)  # servers' key caches drop the account's keys (keys.signal)
    # The audit trail keeps that a deletion happened, and who did it if it was an operator,
    # but nothing that identifies the deleted account (so no account_id here).
    actor = operator_id if operator_id != account_id else None
    record_event(
        session, "account_deleted", actor_account_id=actor, detail=f"initiated_by={initiated_by}"
    )
    session.flush()
    return removed, key_ids


def _rows_about(
    account_id: str, email: str, key_ids: Sequence[str]
) -> Iterable[tuple[Any, ColumnElement[bool]]]:
    """Every table's rows about the account, children before the account row itself."""
    yield RequestLog.__table__, RequestLog.account_id == account_id
    audit_conditions = [
        AuditEvent.account_id == account_id,
        AuditEvent.actor_account_id == account_id,
    ]
    if key_ids:
        audit_conditions.append(AuditEvent.key_id.in_(key_ids))
        yield RequestLog.__table__, RequestLog.key_id.in_(key_ids)
    yield AuditEvent.__table__, or_(*audit_conditions)
    # Mail addressed to the account, including any queued before the account id was known.
    yield (
        OutboxMessage.__table__,
        or_(OutboxMessage.account_id == account_id, OutboxMessage.to_address == email),
    )
    yield AbuseFlag.__table__, AbuseFlag.account_id == account_id
    yield PolicyAcknowledgement.__table__, PolicyAcknowledgement.account_id == account_id
    yield OneTimeToken.__table__, OneTimeToken.account_id == account_id
    yield WebSession.__table__, WebSession.account_id == account_id
    yield ApiKey.__table__, ApiKey.account_id == account_id
    yield Account.__table__, Account.id == account_id


def _reclaim_deleted_pages(engine: Engine) -> None:
    """Make deleted rows unreadable on disk, not merely invisible.

    SQLite runs with `secure_delete=ON` (db.py), so freed pages are zeroed; but in WAL mode the
    old page images stay in the -wal file until a checkpoint copies the pages back and truncates
    it. On PostgreSQL deleted tuples stay in the table files until VACUUM (autovacuum) reclaims
    them; see docs/operations.md.
    """
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            _checkpoint_sqlite(connection)


def _checkpoint_sqlite(connection: Connection, attempts: int = 20) -> None:
    for _ in range(attempts):
        busy = connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)")).scalar()
        if not busy:
            return
        # Another connection is mid-read; its snapshot ends soon.
        time.sleep(0.05)
    log.warning("WAL checkpoint after an account deletion stayed busy; the next one completes it")


# -- export ---------------------------------------------------------------------------------

# Columns an export leaves out, and why (docs/api.md, "Account export"): each is derived from a
# secret (a key, a cookie token, an emailed link, a password) and would help an attacker who
# obtained the export file, while telling the account holder nothing.
SECRET_COLUMNS: dict[str, frozenset[str]] = {
    "accounts": frozenset({"password_hash"}),
    "api_keys": frozenset({"key_hash"}),
    "web_sessions": frozenset({"id"}),
    "one_time_tokens": frozenset({"token_hash"}),
    "outbox": frozenset({"link_seed"}),
}

# Mail whose body carries a one-time link: the stored body holds only a placeholder for the token
# (mail/links.py), but it is still withheld from the export, so a change to how links are stored
# can never put a live link into a file the account holder may leave lying around.
LINK_MAIL_KINDS = frozenset({"verification", "password_reset", "email_change"})
WITHHELD_BODY = "(withheld: this message holds a one-time link)"

# Export section name -> (model, the column that names the account).
EXPORT_SECTIONS: dict[str, tuple[type[Base], str]] = {
    "api_keys": (ApiKey, "account_id"),
    "web_sessions": (WebSession, "account_id"),
    "one_time_tokens": (OneTimeToken, "account_id"),
    "policy_acknowledgements": (PolicyAcknowledgement, "account_id"),
    "outbox_messages": (OutboxMessage, "account_id"),
    "abuse_flags": (AbuseFlag, "account_id"),
    "request_logs": (RequestLog, "account_id"),
}


def export_account(session: Session, account_id: str) -> dict[str, Any]:
    """Every stored datum about the account as JSON-ready data; raises AccountNotFound."""
    account = session.get(Account, account_id)
    if account is None:
        raise AccountNotFound(account_id)
    account_data = _row_data(account.__table__, account)
    account_data["password_set"] = account.password_hash is not None
    export: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": _json_value(utcnow()),
        "account": account_data,
    }
    for section, (model, owner_column) in EXPORT_SECTIONS.items():
        table = model.__table__
        query = select(model).where(table.c[owner_column] == account_id)
        order = _order_columns(table)
        export[section] = [_row_data(table, row) for row in session.scalars(query.order_by(*order))]
    for message in export["outbox_messages"]:
        if message["kind"] in LINK_MAIL_KINDS:
            message["body"] = WITHHELD_BODY
    export["audit_events"] = _audit_events(session, account_id)
    return export


def _audit_events(session: Session, account_id: str) -> list[dict[str, Any]]:
    """Events about the account or done by it; another account's id (an operator) is masked."""
    query = (
        select(AuditEvent)
        .where(or_(AuditEvent.account_id == account_id, AuditEvent.actor_account_id == account_id))
        .order_by(AuditEvent.created_at, AuditEvent.id)
    )
    events = []
    for event in session.scalars(query):
        data = _row_data(AuditEvent.__table__, event)
        for column in ("account_id", "actor_account_id"):
            if data[column] not in (None, account_id):
                data[column] = "another account"
        events.append(data)
    return events


def _row_data(table: Any, row: Any) -> dict[str, Any]:
    hidden = SECRET_COLUMNS.get(table.name, frozenset())
    return {
        column.key: _json_value(getattr(row, column.key))
        for column in table.columns
        if column.key not in hidden
    }


def _order_columns(table: Any) -> list[Column[Any]]:
    columns = [table.c[name] for name in ("created_at", "acknowledged_at") if name in table.c]
    return columns + list(table.primary_key.columns)


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return value
