"""Every shared fixture, registered by tests/conftest.py: the databases (a temp SQLite file and a
fresh PostgreSQL database per run; each test that asks runs on both), the decoder and models
loaded once per session, an app + client per test, the cache backends, Redis, the SMTP sink and
the command line."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from dupify.app import create_app
from dupify.config import ImageLimits, InferenceSettings, MiB
from dupify.db import create_db_engine, session_factory
from dupify.images.fetch import UrlFetcher
from dupify.images.workers import Decoder
from dupify.inference.backend import LocalBackend
from dupify.inference.registry import ModelRegistry
from dupify.inference.session import SessionPolicy
from dupify.pipeline.pipeline import Pipeline, build_pipeline
from dupify.schema.migrate import upgrade
from dupify.schema.tables import Base
from support.api import Api, ApiContext
from support.cli import Run, cli_env, cli_runner
from support.clip_api import clip_registry, running_backend
from support.image_server import FixedResolver, RecordingNetwork
from support.kv import SHARED_REDIS_URL, RedisServer, delete_prefix
from support.servers import free_port
from support.settings import make_settings
from support.smtp_sink import SmtpSink, running_sink

POSTGRES_ADMIN_URL = os.environ.get(
    "DUPIFY_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# A headless Chromium that talks to nothing but the pages it is sent to.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Limits that admit a 15 MB image in any form of request (base64 in JSON included).
BIG_LIMITS = ImageLimits(max_image_bytes=20 * MiB, max_body_bytes=48 * MiB)


@contextmanager
def migrated_postgres_database(prefix: str) -> Iterator[str]:
    """The URL of a PostgreSQL database made and migrated for the caller, dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        engine = create_db_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database made for this run, migrated once, dropped at the end."""
    with migrated_postgres_database("dupify_test") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium under Playwright, one per test module (never Playwright's own build)."""
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is required (make test installs it)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


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


# The shared in-process models run one batch at a time on both cores: most tests send one
# request after another, which a batch spread over the cores answers soonest. The CPU default
# (one single-threaded batch per core, several at once) is proven equal to this by
# tests/inference/test_fast_path.py, and every `dupify serve` the server tests start runs it.
SHARED_INFERENCE = InferenceSettings(intra_op_threads=2, concurrent_batches=1)


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    return ModelRegistry(SHARED_INFERENCE)


@pytest.fixture(scope="session")
async def backend(registry: ModelRegistry) -> AsyncIterator[LocalBackend]:
    """The registry's models in this process, behind their micro-batchers."""
    running = LocalBackend(registry, SHARED_INFERENCE)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture(scope="session")
def registry_clip(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """Tiny CLIP- and DINO-shaped operator models built for the run (support.onnx_builders)."""
    return clip_registry(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="session")
async def backend_clip(registry_clip: ModelRegistry) -> AsyncIterator[LocalBackend]:
    async for running in running_backend(registry_clip):
        yield running


@pytest.fixture(scope="session")
def pipeline(decoder: Decoder, registry: ModelRegistry, backend: LocalBackend) -> Pipeline:
    """The pipeline every route runs, on the shared decoder, models and backend."""
    return build_pipeline(decoder, registry, backend, SessionPolicy.from_settings(SHARED_INFERENCE))


@pytest.fixture
def api_factory(
    database_url: str, decoder: Decoder, registry: ModelRegistry, backend: LocalBackend
) -> Callable[..., Any]:
    """Build an app over the test database; pass `decoder=` for one with other limits, or
    `registry=` and `backend=` for other models, or a backend that watches the shared ones;
    `url_fetcher=` for image URLs fetched through a test resolver and network."""

    def build(**overrides: Any) -> ApiContext:
        chosen_decoder = overrides.pop("decoder", decoder)
        chosen_registry = overrides.pop("registry", registry)
        chosen_backend = overrides.pop("backend", backend)
        url_fetcher = overrides.pop("url_fetcher", None)
        settings = make_settings(database_url, **overrides)
        if url_fetcher is None:
            # A URL a test sends by accident can still never leave this machine: no system
            # resolver, and a network that dials loopback only.
            url_fetcher = UrlFetcher(
                settings.image_urls,
                settings.limits.max_image_bytes,
                resolver=FixedResolver({}),
                network=RecordingNetwork(),
            )
        app = create_app(
            settings,
            decoder=chosen_decoder,
            registry=chosen_registry,
            backend=chosen_backend,
            url_fetcher=url_fetcher,
        )
        return ApiContext(app, settings)

    return build


@pytest.fixture
async def api(api_factory: Callable[..., ApiContext]) -> AsyncIterator[Api]:
    async with api_factory() as running:
        yield running


# For checks about answers, not limits: a 429 would hide what the request would have got.
UNLIMITED_PLANS = {"free": {"requests_per_minute": 1_000_000, "images_per_month": 1_000_000}}


@pytest.fixture
async def unlimited(api_factory: Callable[..., ApiContext]) -> AsyncIterator[tuple[Api, str]]:
    """A running app with no practical rate limit or quota, and a key on it."""
    async with api_factory(plans=UNLIMITED_PLANS) as running:
        yield running, running.new_key()


@pytest.fixture(scope="module")
def big_decoder() -> Iterator[Decoder]:
    """A one-worker decoder for `BIG_LIMITS` (pass both to `api_factory`)."""
    decoder = Decoder(BIG_LIMITS, workers=1)
    decoder.warm_up()  # worker start-up (a pipe handshake) belongs to boot, not to a request
    yield decoder
    decoder.close()


@pytest.fixture(params=["embedded", "redis"])
def cache_backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Settings overrides for one cache/limiter backend: the same tests run on both. Redis is the
    shared one (127.0.0.1:6379, as on CI) under a key prefix unique to this test, removed after."""
    if request.param == "embedded":
        yield {}
        return
    prefix = f"dupifytest{secrets.token_hex(6)}"
    # A generous timeout: these tests are about shared, exact counting, and the shared Redis and
    # this machine may be busy; a slow answer would (correctly) fall back to per-process limits.
    # The fault tests (tests/limits/test_redis_faults.py) use tight timeouts on their own Redis.
    yield {"redis_url": SHARED_REDIS_URL, "redis": {"key_prefix": prefix, "timeout_s": 2.0}}
    delete_prefix(SHARED_REDIS_URL, prefix)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may stop, restart, freeze and thaw."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """A running SMTP sink on a free port for one test."""
    with running_sink(SmtpSink(free_port())) as running:
        yield running


@pytest.fixture
def run(database_url: str, sink: SmtpSink) -> Run:
    """`run("account", "list")`: the `dupify` command on the test's database, mailing to `sink`."""
    return cli_runner(cli_env(database_url, DUPIFY_SMTP_URL=sink.url))
