"""The API-key cache (dupify.keys.cache) and its revocation signal (dupify.keys.signal): a cache
hit makes no keys-and-accounts query (none at all with Redis; without, one primary-key read of
the signal: from an SQLite file by the cache's own connection, else through the engine), and
every change that can refuse a key reaches the next request."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import redis
from sqlalchemy import Engine, event, select

from dupify.abuse.service import set_account_suspended, set_key_suspended
from dupify.accounts.models import Account
from dupify.db import create_db_engine, session_factory, transaction, utcnow
from dupify.keys.cache import KeyCache
from dupify.keys.models import ApiKey, CredentialSignal
from dupify.keys.service import Principal, revoke_key
from dupify.keys.signal import REDIS_NAME, credentials_changed, publish_through
from support.api import Api
from support.settings import TEST_SECRET


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement run through `engine` inside the block (a SQLAlchemy event)."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]).lower())

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def key_lookups(seen: list[str]) -> list[str]:
    """The authentication lookups among them (a key found by its hash)."""
    return [sql for sql in seen if "api_keys.key_hash =" in sql]


async def models(api: Api, key: str) -> int:
    response = await api.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    return response.status_code


async def test_a_cache_hit_does_not_look_the_key_up(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any]
) -> None:
    async with api_factory(**cache_backend) as api:
        key = api.new_key()
        app_engine: Engine = api.app.state.runtime.engine
        cache: KeyCache = api.app.state.key_cache
        local_reads: list[str | None] = []
        read_locally = cache.local_token

        def counted_local_token() -> str | None:
            local_reads.append(read_locally())
            return local_reads[-1]

        cache.local_token = counted_local_token  # type: ignore[method-assign]
        with statements(app_engine) as first:
            assert await models(api, key) == 200
        assert key_lookups(first), "the first request looks the key up"
        local_reads.clear()
        with statements(app_engine) as later:
            for _ in range(3):
                assert await models(api, key) == 200
        assert key_lookups(later) == []
        # (Background jobs, such as the job-lease heartbeat, use the engine too: not counted.)
        signal_reads = [sql for sql in later if "credential_signal" in sql]
        if cache_backend:  # the signal came with the rate limiter's Redis round trip
            assert signal_reads == []
            assert local_reads == []
        elif app_engine.dialect.name == "sqlite":  # read from the file by the cache's own
            assert signal_reads == []  # connection, on the loop: no pool, no thread, no ORM
            assert len(local_reads) == 3 and all(local_reads)
        else:  # one primary-key read of the signal per request
            assert len(signal_reads) == 3
            assert all(sql.startswith("select credential_signal.token") for sql in signal_reads)


async def test_each_change_reaches_the_next_request(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any]
) -> None:
    """Revocation, key and account suspension, reinstatement, plan change: each made in a
    transaction of its own (as another process would), each seen by the very next request."""
    async with api_factory(**cache_backend) as api:
        publish_through(api.engine, api.settings)  # this test's engine, as the CLI's is
        sessions = session_factory(api.engine)
        key = api.new_key()
        with transaction(sessions) as session:
            key_id = session.scalars(select(ApiKey.id)).one()
            account_id = session.scalars(select(Account.id)).one()
        assert await models(api, key) == 200
        assert await models(api, key) == 200  # from the cache now

        with transaction(sessions) as session:
            set_key_suspended(session, key_id, True)
        assert await models(api, key) == 403
        with transaction(sessions) as session:
            set_key_suspended(session, key_id, False)
        assert await models(api, key) == 200
        with transaction(sessions) as session:
            set_account_suspended(session, account_id, True)
        assert await models(api, key) == 403
        with transaction(sessions) as session:
            set_account_suspended(session, account_id, False)
        assert await models(api, key) == 200

        with transaction(sessions) as session:  # what the admin page and the CLI do
            session.get_one(Account, account_id).plan = "pro"
            credentials_changed(session)
        response = await api.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        pro = api.settings.plan("pro").requests_per_minute
        assert response.headers["X-RateLimit-Limit"] == str(pro)

        with transaction(sessions) as session:
            revoke_key(session, key_id)
        assert await models(api, key) == 401


async def test_a_rolled_back_change_signals_nothing(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any]
) -> None:
    if not cache_backend:
        return  # the database row rolls back with the change itself
    async with api_factory(**cache_backend) as api:
        publish_through(api.engine, api.settings)
        name = f"{cache_backend['redis']['key_prefix']}:{REDIS_NAME}"
        client = redis.Redis.from_url(cache_backend["redis_url"])
        try:
            key = api.new_key()
            assert await models(api, key) == 200  # creates the Redis token
            before = client.get(name)
            assert before is not None
            sessions = session_factory(api.engine)
            try:
                with transaction(sessions) as session:
                    revoke_key(session, session.scalars(select(ApiKey.id)).one())
                    raise RuntimeError("abandon")
            except RuntimeError:
                pass
            assert client.get(name) == before
            with transaction(sessions) as session:
                revoke_key(session, session.scalars(select(ApiKey.id)).one())
            assert client.get(name) not in (None, before)
        finally:
            client.close()


def principal(key_id: str, expires_in: timedelta | None = None) -> Principal:
    expires_at = utcnow() + expires_in if expires_in is not None else None
    return Principal(key_id, "acct_x", frozenset({"embeddings"}), "free", expires_at)


def test_the_cache_is_bounded_and_aged(database_url: str) -> None:
    engine = create_db_engine(database_url)
    now = itertools.count()
    try:
        cache = KeyCache(
            session_factory(engine),
            TEST_SECRET.encode(),
            shared=False,
            max_entries=3,
            max_age_s=10,
            clock=lambda: float(next(now)),
        )
        for index in range(5):
            cache.store(f"hash{index}", principal(f"key{index}"), "token")
        assert len(cache) == 3
        assert cache.peek("hash0", utcnow()) is None  # the least recently used went first
        assert cache.peek("hash4", utcnow()) is not None
        for _ in range(12):
            next(now)
        assert cache.peek("hash4", utcnow()) is None  # past the backstop age
        cache.store("expired", principal("key9", timedelta(seconds=-1)), "token")
        assert cache.peek("expired", utcnow()) is None  # past the key's own expiry
    finally:
        engine.dispose()


def test_the_signal_row_changes_with_each_change(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        sessions = session_factory(engine)
        tokens = []
        for _ in range(3):
            with transaction(sessions) as session:
                credentials_changed(session)
            with transaction(sessions) as session:
                tokens.append(session.get_one(CredentialSignal, 1).token)
        assert len(set(tokens)) == 3
    finally:
        engine.dispose()
