"""A job lease in the database: one process of the whole deployment runs a scheduled job.

Taking the lease is a single conditional UPDATE (or an INSERT that does nothing on conflict when
the row does not exist yet), so two processes that race see exactly one winner on SQLite and
PostgreSQL alike, without advisory locks or a second service.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, String, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dupify.jobs.models import JobLease

# The holder column's length: a longer name fails the lease on PostgreSQL (value too long).
HOLDER_MAX: int = cast(String, JobLease.__table__.c.holder.type).length or 80


def holder_name() -> str:
    """A name for this process's job runner, unique and within the holder column: the host name
    (cut to fit: container hosts can be 63 characters), the process id and a random tag."""
    suffix = f":{os.getpid()}:{secrets.token_hex(4)}"
    return socket.gethostname()[: HOLDER_MAX - len(suffix)] + suffix


def try_acquire(
    session: Session,
    name: str,
    *,
    holder: str,
    now: datetime,
    hold_for: timedelta,
    min_interval: timedelta = timedelta(0),
) -> bool:
    """Take the lease `name` until `now + hold_for` if it is free (expired, or ours) and the job
    last ran at least `min_interval` ago. The caller commits; True means this process runs."""
    claim = (
        update(JobLease)
        .where(JobLease.name == name)
        .where(or_(JobLease.expires_at <= now, JobLease.holder == holder))
        .where(or_(JobLease.last_run_at.is_(None), JobLease.last_run_at <= now - min_interval))
        .values(holder=holder, expires_at=now + hold_for)
    )
    if cast(CursorResult[Any], session.execute(claim)).rowcount == 1:
        return True
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    first = (
        insert(JobLease)
        .values(name=name, holder=holder, expires_at=now + hold_for, last_run_at=None)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(JobLease.name)
    )
    # RETURNING says whether the row went in on both backends; psycopg's rowcount did not here.
    return session.execute(first).scalar() is not None


def finish(session: Session, name: str, *, holder: str, now: datetime, ran: bool = True) -> None:
    """Free the lease at once. With `ran`, record the run (the next waits for `min_interval`);
    without (the run failed), the next check of any process may try again."""
    values: dict[str, datetime] = {"expires_at": now}
    if ran:
        values["last_run_at"] = now
    session.execute(
        update(JobLease).where(JobLease.name == name, JobLease.holder == holder).values(**values)
    )
