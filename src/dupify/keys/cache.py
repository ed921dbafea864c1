"""The API servers' in-process key cache: the keyed hash of a presented key -> who it is, trusted
only while the revocation signal (`dupify.keys.signal`) still has the token read before the key
was looked up.

An entry is stored only for a genuine key (never for an unknown, revoked or suspended one: those
go to the database each time, behind the guessing throttle) and is used while:
- the signal's token is the one read *before* the lookup that made the entry; every change that
  can refuse a valid key replaces the token (in its transaction, then in Redis after the commit),
  so the first request after a revocation reads a new token and looks the key up again;
- the key's own expiry has not passed;
- it is younger than the backstop age (`MAX_AGE_S`): a bound for the one case the signal cannot
  cover, a change committed while its writer could not reach Redis (logged as an error there).
With Redis configured but down there is no token, so no entry is used or stored: every request
is looked up in the database until Redis answers, and the cache is emptied then (a change made
during the outage could not replace the Redis token).

The cache holds at most `MAX_ENTRIES` keys (least recently used first out); it holds key hashes
and ids, never a key. One per server process, on `app.state.key_cache`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from dupify.keys.format import hash_key, is_well_formed
from dupify.keys.service import Principal, Rejection, authenticate
from dupify.keys.signal import LocalTokenReader, database_token

MAX_ENTRIES = 10_000
MAX_AGE_S = 60.0


@dataclass(frozen=True)
class Entry:
    principal: Principal
    token: str  # the signal's token read before the lookup that found the principal
    stored_at: float  # monotonic seconds


class KeyCache:
    """Key hash -> principal, bounded and aged; `shared` when the signal is read from Redis."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        secret: bytes,
        *,
        shared: bool,
        max_entries: int = MAX_ENTRIES,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
        local: LocalTokenReader | None = None,
    ) -> None:
        self.sessions = sessions
        self.shared = shared  # Redis carries the token; else the database row does
        # Without Redis, on an SQLite file: the token read on the event loop (`local_token`).
        self._local = None if shared else local
        self._secret = secret
        self._max_entries = max_entries
        self._max_age_s = max_age_s
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()  # lookups store from worker threads

    def __len__(self) -> int:
        return len(self._entries)

    def digest(self, raw_key: str) -> str | None:
        """The key's keyed hash (what the database stores), None for a malformed key."""
        return hash_key(raw_key, self._secret) if is_well_formed(raw_key) else None

    def peek(self, digest: str, now: datetime) -> Entry | None:
        """The entry for a key hash if it may still be used (token not yet checked)."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            expires_at = entry.principal.expires_at
            if self._clock() - entry.stored_at > self._max_age_s or (
                expires_at is not None and expires_at <= now
            ):
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry

    def store(self, digest: str, principal: Principal, token: str) -> None:
        with self._lock:
            self._entries[digest] = Entry(principal, token, self._clock())
            self._entries.move_to_end(digest)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def local_token(self) -> str | None:
        """The database's token if it can be read at once from a local SQLite file, without
        a thread (None: call `database_token` in a worker thread)."""
        return self._local.read() if self._local is not None else None

    def close(self) -> None:
        if self._local is not None:
            self._local.close()

    def database_token(self) -> str | None:
        """The signal's token from the database (one primary-key read): the per-request check
        of a deployment without Redis. Blocking: call it in a worker thread."""
        with self.sessions() as session:
            return database_token(session)

    def look_up(
        self,
        raw_key: str,
        digest: str,
        now: datetime,
        token: str | None,
        check: Callable[..., Principal | Rejection] = authenticate,
    ) -> Principal | Rejection:
        """The database's verdict on a key, cached under `token` when genuine. Blocking.

        `token` was read before this call (from Redis); None means none could be read, and
        then nothing is stored. Without Redis the token is read here, first, from the database.
        `check` is `keys.service.authenticate` (the caller's, so tests can count lookups).
        """
        with self.sessions() as session:
            if not self.shared:
                token = database_token(session)
            result = check(session, raw_key, secret=self._secret, now=now)
        if isinstance(result, Principal) and token is not None:
            self.store(digest, result, token)
        return result
