"""Shared fixtures: real databases (a temp SQLite file and a fresh PostgreSQL database per run),
the decoder and models loaded once per session, and an app + client per test."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from dupify.accounts.service import create_account
from dupify.config import ImageLimits, InferenceSettings, Settings
from dupify.db import create_db_engine, session_factory, transaction
from dupify.images.workers import Decoder
from dupify.inference.registry import ModelRegistry
from dupify.keys.service import create_key
from dupify.schema.migrate import upgrade
from dupify.schema.tables import Base
from dupify.app import create_app
from support.kv import cache_backend, redis_server  # noqa: F401 - fixtures, shared by every test
from support.smtp_sink import sink  # noqa: F401 - a fixture, shared by every test

POSTGRES_ADMIN_URL = os.environ.get(
    "DUPIFY_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TEST_SECRET = "test-secret-" + "x" * 32


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database made for this run, migrated once, dropped at the end."""
    name = f"dupify_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = create_db_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _empty_tables(engine: Engine) -> None:
    with engine.begin() as connection:
        names = ", ".join(table.name for table in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str
) -> Iterator[str]:
    """Each test that uses the database runs on both backends, starting empty."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dupify.db'}"
        engine = create_db_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    engine = create_db_engine(postgres_url)
    _empty_tables(engine)
    engine.dispose()
    yield postgres_url


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on the test's database, for tests that work below the API."""
    engine = create_db_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def decoder() -> Iterator[Decoder]:
    shared = Decoder(ImageLimits(), workers=2)
    shared.warm_up()
    yield shared
    shared.close()


@pytest.fixture(scope="session")
async def registry() -> AsyncIterator[ModelRegistry]:
    models = ModelRegistry(InferenceSettings(intra_op_threads=2))
    await models.start()
    yield models
    await models.stop()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        database_url=database_url,
        secret_key=TEST_SECRET,
        **overrides,
    )


@dataclass
class Api:
    """A running app with its client, and helpers to make accounts and keys in its database."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    engine: Engine

    def new_key(self, email: str | None = None, **key_options: Any) -> str:
        with transaction(session_factory(self.engine)) as session:
            account = create_account(
                session, email=email or f"user-{secrets.token_hex(4)}@example.com", name="Test"
            )
            return create_key(session, account, secret=TEST_SECRET.encode(), **key_options).secret

    async def flush_usage(self) -> None:
        await self.app.state.runtime.recorder.flush()


@pytest.fixture
def api_factory(database_url: str, decoder: Decoder, registry: ModelRegistry) -> Callable[..., Any]:
    """Build an app over the test database; pass `decoder=` for one with other limits."""

    def build(**overrides: Any) -> _ApiContext:
        chosen_decoder = overrides.pop("decoder", decoder)
        settings = make_settings(database_url, **overrides)
        app = create_app(settings, decoder=chosen_decoder, registry=registry)
        return _ApiContext(app, settings)

    return build


class _ApiContext:
    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._lifespan: Any = None
        self._client: httpx.AsyncClient | None = None
        self._engine: Engine | None = None

    async def __aenter__(self) -> Api:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        transport = httpx.ASGITransport(app=self.app)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://dupify.test")
        self._engine = create_db_engine(self.settings.database_url)
        return Api(self.app, self._client, self.settings, self._engine)

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._client is not None and self._engine is not None
        await self._client.aclose()
        await self._lifespan.__aexit__(None, None, None)
        self._engine.dispose()


@pytest.fixture
async def api(api_factory: Callable[..., _ApiContext]) -> AsyncIterator[Api]:
    async with api_factory() as running:
        yield running
