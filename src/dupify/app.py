"""create_app(settings): a lifespan that builds the database, the image pipeline (decoder,
models, inference backend) and the usage log."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from dupify import __version__
from dupify.abuse.guard import KeyGuessingGuard
from dupify.api.analyze import router as analysis_router
from dupify.api.docs import install_docs
from dupify.api.embeddings import router as api_router
from dupify.api.rank import router as rank_router
from dupify.api.usage import router as usage_router
from dupify.config import Settings
from dupify.db import create_db_engine, session_factory
from dupify.images.bodies import BodyRoom
from dupify.images.fetch import UrlFetcher
from dupify.images.workers import Decoder
from dupify.inference.backend import InferenceBackend
from dupify.inference.registry import ModelRegistry, roles_for
from dupify.inference.session import SessionPolicy
from dupify.keys.cache import KeyCache
from dupify.keys.secret import server_secret
from dupify.keys.signal import LocalTokenReader, publish_through
from dupify.limits.backends import open_backends
from dupify.limits.metering import Meter
from dupify.pipeline.pipeline import build_pipeline
from dupify.portal.mount import install_portal
from dupify.privacy.retention import RetentionScheduler
from dupify.server.error_handlers import install_error_handlers
from dupify.server.headers import ApiSecurityHeadersMiddleware
from dupify.server.json import VectorJSONResponse
from dupify.server.metrics import Metrics, MetricsMiddleware
from dupify.server.metrics import router as metrics_router
from dupify.server.middleware import RequestContextMiddleware
from dupify.server.runtime import Runtime, build_backend
from dupify.server.services import start_mail_and_abuse_services
from dupify.usage.recorder import UsageRecorder

log = logging.getLogger("dupify")


def create_app(
    settings: Settings | None = None,
    *,
    decoder: Decoder | None = None,
    registry: ModelRegistry | None = None,
    backend: InferenceBackend | None = None,
    url_fetcher: UrlFetcher | None = None,
) -> FastAPI:
    """The application. A `decoder`, `registry` or `backend` passed in is shared and left
    running on exit (tests build them once per session, or wrap the backend to watch it);
    otherwise the app owns and closes its own. A registry passed in brings its own roles (the
    default model among them); without a `backend`, the configured one runs them
    (`build_backend`: in this process, or on remote workers). A `url_fetcher` replaces the
    one built from the settings (tests give one with their own resolver and a network that
    records every dial)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            engine = create_db_engine(settings.database_url)
            stack.callback(engine.dispose)
            sessions = session_factory(engine)
            own_decoder = decoder
            if own_decoder is None:
                workers = settings.inference.decode_workers
                own_decoder = await asyncio.to_thread(Decoder, settings.limits, workers)
                stack.callback(own_decoder.close)
                await asyncio.to_thread(own_decoder.warm_up)
            own_registry = registry
            if own_registry is None:
                own_registry = await asyncio.to_thread(
                    ModelRegistry,
                    settings.inference,
                    roles=roles_for(settings),
                    models_file=settings.models_file,
                )
            own_backend = backend
            if own_backend is None:
                own_backend = build_backend(own_registry, settings)
                await own_backend.start()
                stack.push_async_callback(own_backend.stop)
            recorder = UsageRecorder(sessions, settings.usage_log)
            await recorder.start()
            stack.push_async_callback(recorder.stop)
            secret = server_secret(settings)
            limiter, cache = await open_backends(settings, secret, stack)
            # API-key authentication without a database join per request (dupify.keys.cache).
            publish_through(engine, settings)
            kv = limiter.kv
            app.state.key_cache = key_cache = KeyCache(
                sessions,
                secret,
                shared=kv is not None,
                local=None if kv is not None else LocalTokenReader.for_url(settings.database_url),
            )
            stack.callback(key_cache.close)
            if kv is not None:  # changes made while Redis was down could not signal
                kv.on_recovery(lambda: asyncio.to_thread(key_cache.clear))
            app.state.runtime = Runtime(
                settings=settings,
                engine=engine,
                sessions=sessions,
                secret=secret,
                registry=own_registry,
                backend=own_backend,
                pipeline=build_pipeline(
                    own_decoder,
                    own_registry,
                    own_backend,
                    SessionPolicy.from_settings(settings.inference),
                ),
                recorder=recorder,
                limiter=limiter,
                cache=cache,
                meter=Meter(settings, limiter, recorder, sessions),
                key_guard=KeyGuessingGuard(settings.abuse),
                url_fetcher=url_fetcher
                or UrlFetcher(settings.image_urls, settings.limits.max_image_bytes),
                body_room=BodyRoom(
                    settings.server.body_room_bytes, settings.server.body_room_wait_s
                ),
            )
            if settings.retention.scheduler_enabled:
                scheduler = RetentionScheduler(sessions, settings, cache=cache)
                await scheduler.start()
                stack.push_async_callback(scheduler.stop)
            await start_mail_and_abuse_services(settings, sessions, stack)
            log.info("dupify %s ready (%s)", __version__, settings.env.value)
            # Everything made so far (models, modules, settings) lives as long as the process:
            # moved out of the collector's sight, a full collection no longer walks it, which
            # took a cache hit's p99 from about 80 ms to 13 ms (docs/performance.md, "Levers").
            # (No collection first: it would cost every app start, the tests' many included,
            # for the little start-up garbage it would free.)
            gc.freeze()
            yield
            gc.unfreeze()

    app = FastAPI(
        title="Dupify",
        version=__version__,
        summary="Image embeddings and analysis, with a privacy policy kept by code.",
        lifespan=lifespan,
        docs_url=None,  # install_docs serves /docs without a CDN
        redoc_url=None,
        default_response_class=VectorJSONResponse,  # orjson; NumPy vectors as is (server/json.py)
    )
    install_error_handlers(app)
    install_docs(app)
    app.include_router(api_router)
    app.include_router(analysis_router)
    app.include_router(rank_router)
    app.include_router(usage_router)
    app.include_router(metrics_router)
    install_portal(app, settings)

    def current_recorder() -> UsageRecorder | None:
        runtime: Runtime | None = getattr(app.state, "runtime", None)
        return runtime.recorder if runtime else None

    app.add_middleware(
        RequestContextMiddleware, recorder=current_recorder, header=settings.request_id_header
    )
    # Around the context middleware, so its last-resort 500 carries them too.
    app.add_middleware(ApiSecurityHeadersMiddleware, settings=settings.portal)

    def current_backend() -> InferenceBackend | None:
        runtime: Runtime | None = getattr(app.state, "runtime", None)
        return runtime.backend if runtime else None

    def current_fetcher() -> UrlFetcher | None:
        runtime: Runtime | None = getattr(app.state, "runtime", None)
        return runtime.url_fetcher if runtime else None

    app.state.metrics = Metrics(current_backend, current_fetcher)
    # Outermost, so even the last-resort 500 is counted.
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def app_from_environment() -> FastAPI:
    """The factory `dupify serve` gives uvicorn: settings from DUPIFY_* and `.env`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return create_app(Settings())
