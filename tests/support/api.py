"""Test helper: a running app with its client (`Api`), and the context manager that starts and
stops one (`ApiContext`, what the `api_factory` fixture returns)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import Engine

from dupify.accounts.service import create_account
from dupify.config import Settings
from dupify.db import create_db_engine, session_factory, transaction
from dupify.keys.service import create_key
from support.settings import TEST_SECRET


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

    def new_client(self, **transport: Any) -> httpx.AsyncClient:
        """Another client of the same app with its own cookies (a second browser); `transport`
        goes to httpx.ASGITransport, e.g. `client=("198.51.100.7", 4242)` for its address."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, **transport),
            base_url=str(self.client.base_url),
        )

    async def flush_usage(self) -> None:
        await self.app.state.runtime.recorder.flush()


class ApiContext:
    """`async with` runs the app's lifespan and yields an `Api` with a client and an engine."""

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
