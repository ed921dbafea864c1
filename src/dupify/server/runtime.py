"""The long-lived parts of one server process, built once at start-up and handed to requests."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dupify.abuse.guard import KeyGuessingGuard
from dupify.config import Settings
from dupify.images.bodies import BodyRoom
from dupify.images.fetch import UrlFetcher
from dupify.inference.backend import InferenceBackend, LocalBackend
from dupify.inference.registry import ModelRegistry
from dupify.inference.remote import RemoteBackend
from dupify.limits.cache import ResultCache
from dupify.limits.metering import Meter
from dupify.limits.ratelimit import Limiter
from dupify.pipeline.pipeline import Pipeline
from dupify.usage.recorder import UsageRecorder


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    secret: bytes
    registry: ModelRegistry  # the models by id and by role (dupify.inference.registry)
    backend: InferenceBackend  # runs them: the pipeline's core stage (dupify.inference.backend)
    pipeline: Pipeline  # every image route's one path: pre, core, post (dupify.pipeline)
    recorder: UsageRecorder
    limiter: Limiter  # rate limits, quotas, throttles (dupify.limits.ratelimit)
    cache: ResultCache  # the 24-hour result cache (dupify.limits.cache)
    meter: Meter  # rate limits and quota reservations per request (dupify.limits.metering)
    key_guard: KeyGuessingGuard  # the API-key guessing throttle (dupify.abuse.guard)
    url_fetcher: UrlFetcher  # images given by URL, behind the SSRF guard (dupify.images.fetch)
    body_room: BodyRoom  # request bodies held at once: the memory bound (dupify.images.bodies)


def build_backend(registry: ModelRegistry, settings: Settings) -> InferenceBackend:
    """The configured core stage: this process's models (`local`), or GPU workers behind a
    RunPod Serverless endpoint or `dupify worker serve` (`runpod`, docs/deployment.md)."""
    if settings.inference.backend == "runpod":
        return RemoteBackend(registry, settings.inference, settings.runpod)
    return LocalBackend(registry, settings.inference)
