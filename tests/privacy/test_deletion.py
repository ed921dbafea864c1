"""Account deletion (PRIVACY row 9): afterwards no table, file, cache entry or log line holds the
account's email, name or id, and a tombstone without personal data records the deletion."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String, Text, func, or_, select
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from dupify.accounts.models import Account, DeletionTombstone
from dupify.audit.models import AuditEvent
from dupify.cli.main import app as cli
from dupify.db import session_factory, transaction, unit_of_work
from dupify.keys.models import ApiKey
from dupify.privacy import lifecycle
from dupify.schema.tables import Base
from dupify.usage.models import RequestLog
from support.account_data import Person, populate
from support.api import Api
from support.cli import cli_env
from support.kv import redis_contents
from support.samples import photo_jpeg


def _embedded_entries(runtime: Any) -> int:
    return len(runtime.cache) if runtime.cache.backend == "embedded" else 0


def _strings_in_every_table(api: Api) -> list[str]:
    """Every string value of every row of every table."""
    values: list[str] = []
    with api.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text)]
            if not columns:
                continue
            for row in connection.execute(select(*columns)):
                values.extend(value for value in row if isinstance(value, str))
    return values


def _tables_without_a_row_about(api: Api, person: Person) -> list[str]:
    """The tables with a column that can name an account or a key (by name or foreign key) that
    hold no row naming this person's account or keys."""
    ids = [person.id, *person.key_ids]
    missing = []
    with api.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            columns = [
                column
                for column in table.columns
                if column.name.endswith("account_id")
                or column.name == "key_id"
                or any(
                    fk.column.table.name in ("accounts", "api_keys") for fk in column.foreign_keys
                )
            ]
            if not columns:
                continue
            found = connection.execute(
                select(func.count()).select_from(table).where(or_(*(c.in_(ids) for c in columns)))
            ).scalar()
            if not found:
                missing.append(table.name)
    return missing


def _files_holding(database_url: str, needles: list[str]) -> dict[str, list[str]]:
    """For SQLite: which of the database, -wal and -shm files contain which needle, as bytes."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return {}
    assert url.database is not None
    base = Path(url.database)
    found: dict[str, list[str]] = {}
    for path in (base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")):
        if not path.exists():
            continue
        data = path.read_bytes()
        hits = [needle for needle in needles if needle.encode() in data]
        if hits:
            found[path.name] = hits
    return found


async def _traffic(api: Api, person: Person) -> None:
    response = await api.client.post(
        "/v1/embeddings",
        content=photo_jpeg("coffee"),
        headers={"Authorization": f"Bearer {person.key}", "Content-Type": "image/jpeg"},
    )
    assert response.status_code == 200, response.text


async def test_deleting_an_account_leaves_nothing_about_it(
    api_factory: Callable[..., Any],
    cache_backend: dict[str, Any],
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with api_factory(**cache_backend) as api:
        await _delete_and_search(api, cache_backend, database_url, caplog)


async def _delete_and_search(
    api: Api, cache_backend: dict[str, Any], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = api.app.state.runtime
    sessions = session_factory(api.engine)
    with transaction(sessions) as session:
        doomed = populate(session, "zelda")
        kept = populate(session, "yorick")
    # The kept account first: keys both touch (per client address, e.g. the key-guessing
    # throttle) are then counted as the kept account's, and the doomed account's are its own.
    redis_before = set(redis_contents(cache_backend))
    await _traffic(api, kept)
    kept_keys = set(redis_contents(cache_backend)) - redis_before
    kept_entries = _embedded_entries(runtime)
    await _traffic(api, doomed)
    doomed_keys = set(redis_contents(cache_backend)) - redis_before - kept_keys
    cached_before = _embedded_entries(runtime)
    doomed_entries = cached_before - kept_entries
    assert (kept_entries >= 1 and doomed_entries >= 1) or "redis_url" in cache_backend
    assert (doomed_keys and kept_keys) or "redis_url" not in cache_backend
    await api.flush_usage()
    # A request still buffered by the usage recorder at deletion time must not land afterwards.
    await _traffic(api, doomed)
    with sessions() as session:
        before = {
            person.id: session.scalar(
                select(func.count()).where(RequestLog.account_id == person.id)
            )
            for person in (doomed, kept)
        }
    assert (before[doomed.id] or 0) >= 2 and (before[kept.id] or 0) >= 2
    assert doomed.email in _strings_in_every_table(api)
    # The search below proves a table clean only if the test data put a row about the account
    # in it: so every table that can name an account or a key must hold one now.
    assert _tables_without_a_row_about(api, doomed) == []

    async with unit_of_work(runtime.sessions) as session:
        report = await lifecycle.delete_account_in_server(
            runtime, session, doomed.id, initiated_by="self"
        )
    assert report.rows_removed["accounts"] == 1 and report.rows_removed["api_keys"] == 2
    assert report.cached_results >= 1
    await api.flush_usage()

    # The cache and the limiter: the account's entries are gone now, not left to expire.
    remaining = redis_contents(cache_backend)
    assert not doomed_keys & set(remaining)
    assert kept_keys <= set(remaining)
    for needle in [*doomed.identifiers, *doomed.key_ids]:
        assert not any(needle.encode() in key + value for key, value in remaining.items())
    if "redis_url" not in cache_backend:
        assert _embedded_entries(runtime) == cached_before - doomed_entries

    stored = "\n".join(_strings_in_every_table(api))
    for needle in [*doomed.identifiers, *doomed.key_ids]:
        assert needle not in stored, needle
    assert _files_holding(database_url, doomed.identifiers) == {}
    # No log line holds them, the development mail log (links only) included.
    for record in caplog.records:
        line = record.getMessage() + (record.exc_text or "")
        for needle in doomed.identifiers:
            assert needle not in line, (record.name, line)

    with sessions() as session:
        tombstones = session.scalars(select(DeletionTombstone)).all()
        assert [t.initiated_by for t in tombstones] == ["self"]
        audit = session.scalars(select(AuditEvent).where(AuditEvent.event == "account_deleted"))
        assert [(e.account_id, e.actor_account_id) for e in audit] == [(None, None)]
        # The other account is untouched.
        assert session.get(Account, kept.id) is not None
        assert len(session.scalars(select(ApiKey).where(ApiKey.account_id == kept.id)).all()) == 2
        assert (
            session.scalar(select(func.count()).where(RequestLog.account_id == kept.id))
            == before[kept.id]
        )
    if make_url(database_url).get_backend_name() == "sqlite":
        # The control: the same search does find the account that was kept.
        assert _files_holding(database_url, kept.identifiers) != {}

    refused = await api.client.post(
        "/v1/embeddings",
        content=photo_jpeg("coffee"),
        headers={"Authorization": f"Bearer {doomed.key}", "Content-Type": "image/jpeg"},
    )
    assert refused.status_code == 401
    with pytest.raises(lifecycle.AccountNotFound):
        async with unit_of_work(sessions) as session:
            await lifecycle.delete_account(session, doomed.id, initiated_by="self")


async def test_cli_delete_needs_confirmation_then_deletes_everywhere(
    api_factory: Callable[..., Any], cache_backend: dict[str, Any], database_url: str
) -> None:
    """`dupify account delete` from a shell, while a server runs: with Redis, the account's
    shared cache entries and counters go too."""
    async with api_factory(**cache_backend) as api:
        sessions = session_factory(api.engine)
        with transaction(sessions) as session:
            person = populate(session, "xavier")
            bystander = populate(session, "walter")
        # Keys any client touches (per address) are written by the bystander first.
        await _traffic(api, bystander)
        before = set(redis_contents(cache_backend))
        await _traffic(api, person)
        written = set(redis_contents(cache_backend)) - before
        assert written or "redis_url" not in cache_backend
        await api.flush_usage()

        env = cli_env(database_url)
        if "redis_url" in cache_backend:
            env["DUPIFY_REDIS_URL"] = cache_backend["redis_url"]
            env["DUPIFY_REDIS__KEY_PREFIX"] = cache_backend["redis"]["key_prefix"]

        def run(*args: str, answer: str | None = None) -> Result:
            # In a thread: the command runs its own event loop.
            return CliRunner().invoke(cli, ["account", "delete", *args], env=env, input=answer)

        declined = await asyncio.to_thread(run, person.email, answer="n\n")
        assert declined.exit_code != 0
        with sessions() as session:
            assert session.get(Account, person.id) is not None
        done = await asyncio.to_thread(run, person.email, "--yes")
        assert done.exit_code == 0, done.output
        assert "deleted the account" in done.output and person.email not in done.output
        with sessions() as session:
            assert session.get(Account, person.id) is None
            assert session.scalars(select(DeletionTombstone.initiated_by)).all() == ["operator"]
        assert not written & set(redis_contents(cache_backend))
        assert _files_holding(database_url, person.identifiers) == {}
        missing = await asyncio.to_thread(run, person.email, "--yes")
        assert missing.exit_code == 1 and "no account" in missing.output
