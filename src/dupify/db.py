"""Database engine, sessions, units of work and the declarative Base shared by every domain.

A unit of work is one session and one transaction: `unit_of_work` for a request (the HTTP layer
opens it around the handler) and for other async callers, `transaction` for background jobs and
CLI commands. Services work inside the caller's unit of work: they flush, never commit. What must
happen only once the work is saved (waking the mail sender, forgetting cached results) is queued
with `after_commit` and run by the unit of work after its commit; a rollback drops it.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # Deleted rows are overwritten, not left readable in free pages (privacy: deletion is real).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_db_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 5}, pool_pre_ping=True
        )
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


AfterCommit = Callable[[], Awaitable[None] | None]
_AFTER_COMMIT = "dupify.after_commit"


def after_commit(session: Session, action: AfterCommit) -> None:
    """Run `action` once `session`'s unit of work has committed; never if it rolls back.

    An async action is awaited, so it needs an async unit of work (`unit_of_work`); keep a plain
    one quick, since there it runs on the event loop. The same action queued twice runs once
    (every queued email wakes the sender, but one wake-up will do).
    """
    pending: list[AfterCommit] = session.info.setdefault(_AFTER_COMMIT, [])
    if action not in pending:
        pending.append(action)


def _committed_actions(session: Session) -> list[AfterCommit]:
    actions: list[AfterCommit] = session.info.pop(_AFTER_COMMIT, [])
    return actions


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A background job's or a CLI command's unit of work: commit on success, roll back on any
    error, then run the `after_commit` actions (synchronous ones only: nothing awaits here)."""
    with sessions() as session:
        with session.begin():
            yield session
        for action in _committed_actions(session):
            if inspect.iscoroutinefunction(action):
                raise TypeError(f"{action!r} is async: queue it under unit_of_work")
            action()


def _end(session: Session, *, commit: bool) -> None:
    """Commit (or not) and close in one call, so one worker thread finishes the session even if
    the awaiting task is cancelled meanwhile. Closing rolls back whatever was not committed."""
    try:
        if commit:
            session.commit()
    finally:
        session.close()


@asynccontextmanager
async def unit_of_work(sessions: sessionmaker[Session]) -> AsyncIterator[Session]:
    """A request's unit of work: one session for the whole request, committed once when the
    block ends and rolled back on any error; then the `after_commit` actions run, in order.

    The session is synchronous: the caller runs its database calls in a worker thread
    (`asyncio.to_thread`, or a plain `def` route), and so do the commit and the close here, so
    the event loop never waits on the database.
    """
    session = sessions()
    try:
        yield session
    except BaseException:
        await asyncio.to_thread(_end, session, commit=False)
        raise
    await asyncio.to_thread(_end, session, commit=True)
    for action in _committed_actions(session):
        outcome = action()
        if outcome is not None:
            await outcome


def new_id(prefix: str) -> str:
    """A public, prefixed, unguessable identifier (`acct_…`, `key_…`, `req_…`)."""
    return f"{prefix}_{secrets.token_hex(12)}"
