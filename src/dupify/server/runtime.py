"""The long-lived parts of one server process, built once at start-up and handed to requests."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dupify.abuse.guard import KeyGuessingGuard
from dupify.config import Settings
from dupify.images.workers import Decoder
from dupify.inference.registry import ModelRegistry
from dupify.limits.cache import ResultCache
from dupify.limits.metering import Meter
from dupify.limits.ratelimit import Limiter
from dupify.pipeline.analyzer import Analyzer
from dupify.usage.recorder import UsageRecorder


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    secret: bytes
    decoder: Decoder
    registry: ModelRegistry
    analyzer: Analyzer  # analyze/compare/duplicates over the decoder and registry
    recorder: UsageRecorder
    limiter: Limiter  # rate limits, quotas, throttles (dupify.limits.ratelimit)
    cache: ResultCache  # the 24-hour result cache (dupify.limits.cache)
    meter: Meter  # rate limits and quota reservations per request (dupify.limits.metering)
    key_guard: KeyGuessingGuard  # the API-key guessing throttle (dupify.abuse.guard)
