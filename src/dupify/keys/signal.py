"""The revocation signal: a token replaced by every change that can refuse a valid key, which
the API servers' key cache (`dupify.keys.cache`) checks before trusting an entry.

Writers: every service that revokes or suspends a key, suspends or reinstates an account,
changes an account's plan or a key's scopes, or deletes an account calls `credentials_changed`
in its unit of work. That replaces the token of the one-row `credential_signal` table in the
same transaction (so the change and the signal commit together or not at all) and, once the
transaction has committed, writes a fresh token to Redis when the deployment has one
(`publish_through`, called where engines are built: the server, the CLI). The Redis write comes
after the commit on purpose: a server that reads the new token and then looks the key up finds
the change; written earlier, it could cache the old row under the new token.

Readers: with Redis, the token is read in the same round trip as the request's
rate-limit count (`dupify.limits.ratelimit.Limiter.hit_reading`), or by one script
(`Limiter.read_token`); a missing
token is created there, random, so a restarted or flushed Redis invalidates every cache. Redis
configured but unreachable: no token, so the caller looks the key up in the database (never a
stale cache). Without Redis: `SELECT token FROM credential_signal WHERE id = 1`, one primary-key
read instead of the keys-and-accounts join and the ORM objects; on an SQLite file that read is
`LocalTokenReader`'s, on the event loop (a few microseconds from the page cache, never waiting),
and on PostgreSQL a round trip from a worker thread.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Callable
from weakref import WeakKeyDictionary

from redis import Redis
from sqlalchemy import Engine, event, insert, make_url, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dupify.config import Settings
from dupify.db import utcnow
from dupify.keys.models import CredentialSignal

log = logging.getLogger("dupify.keys.signal")

ROW_ID = 1
REDIS_NAME = "auth:signal"  # under the Redis key prefix
REDIS_TTL_MS = 86_400_000  # a day; a token that expires is recreated: every cache starts over
_CHANGED = "dupify.credentials_changed"
# Engine -> what to run after a commit that changed credentials (write the Redis token).
_publishers: WeakKeyDictionary[Engine, Callable[[], None]] = WeakKeyDictionary()


def new_token() -> str:
    return secrets.token_hex(16)


def credentials_changed(session: Session) -> None:
    """Record, in the session's transaction, that a key may now be refused where it was not."""
    token = new_token()
    done = session.execute(
        update(CredentialSignal)
        .where(CredentialSignal.id == ROW_ID)
        .values(token=token, changed_at=utcnow())
    )
    if getattr(done, "rowcount", 1) == 0:  # a database made before migration 0005's row
        session.execute(insert(CredentialSignal).values(id=ROW_ID, token=token))
    session.info[_CHANGED] = True


def database_token(session: Session) -> str | None:
    """The token as the database has it now. A missing row (tables emptied by hand) is made
    again, in a transaction of its own; None only if that fails (the caller then caches nothing)."""
    query = select(CredentialSignal.token).where(CredentialSignal.id == ROW_ID)
    token: str | None = session.scalar(query)
    if token is None:
        session.rollback()
        try:
            session.execute(insert(CredentialSignal).values(id=ROW_ID, token=new_token()))
            session.commit()
        except IntegrityError:  # another process made it first
            session.rollback()
        token = session.scalar(query)
    return token


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    # Runs inside `commit()`, in whatever thread committed (a worker thread for requests), so a
    # Redis write here never blocks the event loop; and only once the change is durable.
    if not session.info.pop(_CHANGED, False):
        return
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else getattr(bind, "engine", None)
    publish = _publishers.get(engine) if isinstance(engine, Engine) else None
    if publish is not None:
        publish()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_CHANGED, None)


def publish_through(engine: Engine, settings: Settings) -> None:
    """After each commit through `engine` that changed credentials, write a fresh token to
    the deployment's Redis (nothing to do without Redis: the database row already changed).
    Every place that builds an engine for such changes calls it: the server, the CLI."""
    redis_url = settings.redis_url
    if not redis_url:
        _publishers.pop(engine, None)
        return
    name = f"{settings.redis.key_prefix}:{REDIS_NAME}"
    # Rare and not on a request's path: more patience than a request's Redis calls get.
    timeout_s = max(1.0, settings.redis.timeout_s)

    def publish() -> None:
        for attempt in (1, 2):
            client: Redis = Redis.from_url(
                redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
            try:
                client.set(name, new_token(), px=REDIS_TTL_MS)
                return
            except Exception as exc:  # any failure: retry once, then say so
                if attempt == 2:
                    log.error(
                        "a key revocation, suspension or plan change is saved, but Redis could "
                        "not be told (%s): servers that reach Redis keep cached keys until "
                        "their backstop age (docs/operations.md, 'Key cache')",
                        type(exc).__name__,
                    )
            finally:
                client.close()

    _publishers[engine] = publish


class LocalTokenReader:
    """The token straight from an SQLite database file, cheap enough for the event loop.

    One connection of its own, kept open, reads the one row: in WAL mode (`dupify.db`) a reader
    never waits for a writer, the row comes from the page cache, and a commit by any process is
    seen by the next read, so the promise holds with no thread hop, no pool and no ORM per
    request. The connection never waits either (`busy_timeout` 0): when SQLite cannot answer at
    once (a checkpoint, recovery), or the row is missing, `read` says None and the caller takes
    the ordinary path (`database_token` in a worker thread).
    """

    _QUERY = "SELECT token FROM credential_signal WHERE id = ?"

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._connection.execute("PRAGMA busy_timeout=0")

    @classmethod
    def for_url(cls, database_url: str) -> LocalTokenReader | None:
        """A reader for an SQLite file URL; None for any other database (or an in-memory one,
        which a second connection would not see)."""
        url = make_url(database_url)
        path = url.database
        if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
            return None
        if path.startswith("file:") or url.query.get("mode") == "memory":
            return None
        return cls(path)

    def read(self) -> str | None:
        """The token now, or None when it cannot be read at once (then ask the database)."""
        try:
            row = self._connection.execute(self._QUERY, (ROW_ID,)).fetchone()
        except sqlite3.Error:
            return None
        return str(row[0]) if row is not None else None

    def close(self) -> None:
        self._connection.close()
