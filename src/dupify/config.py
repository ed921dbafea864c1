"""All configuration, read once from DUPIFY_* environment variables and `.env`; no side effects."""

from __future__ import annotations

import os
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


def available_cores() -> int:
    """CPU cores this process may run on: what a setting of 0 ("one per core") resolves to."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class Environment(StrEnum):
    development = "development"
    production = "production"
    test = "test"


# Images per request of /v1/analyze and /v1/duplicates: fixed by the API contract (API.md
# sections 4 and 5), not settings. /v1/embeddings' is `ImageLimits.max_images_embeddings`.
MAX_ANALYZE_IMAGES = 16
MAX_DUPLICATES_IMAGES = 64


class ImageLimits(BaseModel):
    """Caps applied to every uploaded image, all checked before pixels are decoded."""

    max_body_bytes: int = Field(20 * MiB, gt=0)
    max_image_bytes: int = Field(10 * MiB, gt=0)
    max_pixels: int = Field(40_000_000, gt=0)
    max_side: int = Field(12_000, gt=0)
    max_frames: int = Field(100, gt=0)
    decode_timeout_s: float = Field(2.0, gt=0)
    allowed_formats: frozenset[str] = frozenset({"jpeg", "png", "webp", "gif", "bmp"})
    max_images_embeddings: int = Field(32, gt=0)
    # Decode budgets, in the decode cost that dupify.images.cost reads from each header
    # (docs/operations.md, "Decode budgets and the fair queue").
    max_request_decode_bytes: int = Field(
        2048 * MiB, gt=0, description="one request's images together; over it, 422"
    )
    max_decoding_bytes: int = Field(
        768 * MiB, gt=0, description="decodes running at once in one process: the memory bound"
    )
    account_decode_cpu_s_per_minute: float = Field(
        60.0, gt=0, description="decoder CPU seconds per account per process; past it, 429"
    )


class InferenceSettings(BaseModel):
    """How models run: device, threads and micro-batching."""

    device: Literal["cpu", "cuda", "auto"] = "cpu"
    intra_op_threads: int = Field(0, ge=0, description="0 = one per available core")
    decode_workers: int = Field(0, ge=0, description="decoder processes; 0 = one per core")
    max_batch: int = Field(16, gt=0)
    max_wait_ms: float = Field(5.0, ge=0)
    queue_size: int = Field(256, gt=0)
    overload_retry_after_s: int = Field(1, gt=0)
    model_cache_dir: Path | None = Field(
        None,
        description="where built models are cached (dupify-semantic-1's ONNX graph); "
        "None = $XDG_CACHE_HOME/dupify or ~/.cache/dupify",
    )


class UsageLogSettings(BaseModel):
    """The request log buffer: rows are written in batches, off the request path."""

    flush_interval_s: float = Field(1.0, gt=0)
    flush_batch: int = Field(500, gt=0)
    retention: timedelta = timedelta(days=90)


class PortalSettings(BaseModel):
    """The developer portal: sign-in sessions, emailed links, throttling and who to contact."""

    # Base of the links in emails (e.g. https://dupify.example.com); default: the request's own.
    public_url: str | None = None
    # Behind a TLS-terminating proxy: believe its X-Forwarded-Proto (cookies get __Host-/Secure)
    # and the X-Forwarded-For entry it appended (the sign-in throttle's client address).
    trust_forwarded_proto: bool = False
    session_lifetime: timedelta = timedelta(days=14)
    session_idle_timeout: timedelta = timedelta(days=2)
    email_link_lifetime: timedelta = timedelta(hours=24)
    reset_link_lifetime: timedelta = timedelta(hours=1)
    login_attempts: int = Field(
        5,
        gt=0,
        description="per window: sign-in tries per email and client address, and the account "
        "page's password checks per account",
    )
    login_attempts_per_address: int = Field(50, gt=0, description="per client address per window")
    login_window: timedelta = timedelta(minutes=15)
    contact_email: str = "support@dupifyapp.com"


class MailSettings(BaseModel):
    """The outbox sender: who mail is from, how often it looks, and how it retries."""

    from_address: str = "Dupify <no-reply@dupify.localhost>"
    # Off: this process only queues; another process (or `dupify outbox send`) delivers.
    sender_enabled: bool = True
    poll_interval_s: float = Field(5.0, gt=0, description="a wake-up also comes on each enqueue")
    batch_size: int = Field(50, gt=0)
    max_attempts: int = Field(8, gt=0, description="then the message is marked failed")
    retry_base_s: float = Field(30.0, gt=0, description="back-off: base * 2**(attempt-1)")
    retry_max_s: float = Field(3600.0, gt=0)
    # A claimed message is due again after this if its sender died mid-send (at-least-once).
    claim_lease_s: float = Field(300.0, gt=0)
    timeout_s: float = Field(30.0, gt=0, description="SMTP connect and command timeout")


class AbuseSettings(BaseModel):
    """Key-guessing throttle and per-key spike flags (PRIVACY row 8)."""

    monitor_enabled: bool = Field(True, description="scan for spikes inside the server")
    bad_key_attempts: int = Field(
        20, gt=0, description="invalid keys per client address per window"
    )
    bad_key_window: timedelta = timedelta(minutes=10)
    # A key is flagged when it hits its rate limit this many times within the spike window ...
    rate_limit_hits_to_flag: int = Field(20, gt=0)
    # ... or when its requests in one window exceed this multiple of its recent average.
    spike_factor: float = Field(10.0, gt=1)
    spike_min_requests: int = Field(300, gt=0, description="below this a window is never a spike")
    spike_window: timedelta = timedelta(minutes=5)
    spike_baseline_windows: int = Field(12, gt=0, description="windows averaged for the baseline")


class RetentionSettings(BaseModel):
    """How long data is kept (PRIVACY rows 4, 10); request logs: `usage_log.retention`."""

    audit_events: timedelta = timedelta(days=90)
    sent_or_failed_mail: timedelta = timedelta(days=30)
    resolved_abuse_flags: timedelta = timedelta(days=90)
    # The in-server scheduler runs every rule this often, once per deployment (a lease row).
    interval: timedelta = timedelta(hours=1)
    scheduler_enabled: bool = True


class Plan(BaseModel):
    """What a plan allows: requests per minute per API key, images per calendar month (UTC)."""

    requests_per_minute: int = Field(60, gt=0)
    images_per_month: int = Field(1_000, ge=0)


DEFAULT_PLANS: dict[str, Plan] = {
    "free": Plan(requests_per_minute=60, images_per_month=1_000),
    "pro": Plan(requests_per_minute=600, images_per_month=100_000),
}


class CacheSettings(BaseModel):
    """The result cache (PRIVACY.md row 4): results only, never images, for at most `ttl`."""

    ttl: timedelta = Field(timedelta(hours=24), gt=timedelta(0))
    embedded_max_bytes: int = Field(256 * MiB, gt=0, description="embedded backend's memory cap")

    @field_validator("ttl", mode="before")
    @classmethod
    def _seconds_from_the_environment(cls, value: object) -> object:
        # DUPIFY_CACHE__TTL=3600 arrives as the string "3600": read it as seconds, like a number.
        if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
            return float(value)
        return value


class RedisSettings(BaseModel):
    """How Redis (DUPIFY_REDIS_URL) is used: tight timeouts, so a sick Redis stalls no request."""

    timeout_s: float = Field(0.25, gt=0, description="connect and per-call socket timeout")
    key_prefix: str = Field("dupify", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    max_connections: int = Field(16, gt=0, description="per process; more operations queue briefly")
    probe_interval_s: float = Field(0.5, gt=0, description="first re-probe delay after a failure")
    probe_max_interval_s: float = Field(5.0, gt=0, description="back-off ceiling for re-probes")


class ServerSettings(BaseModel):
    """What `dupify serve` takes from a client before the app sees a request (server.http)."""

    max_header_bytes: int = Field(32 * 1024, gt=0, description="request line and header fields")
    max_headers: int = Field(100, gt=0)
    header_timeout_s: float = Field(
        20.0, gt=0, description="from the connection (or a request's first byte) to its blank line"
    )
    # A body must progress by body_min_rate bytes per second (at least one byte) in every window
    # of body_timeout_s; the time the app leaves it unread does not count against the client.
    body_timeout_s: float = Field(20.0, gt=0)
    body_min_rate: int = Field(500, ge=0, description="bytes per second; 0 = any progress")


class Settings(BaseSettings):
    """The whole configuration of one Dupify deployment."""

    model_config = SettingsConfigDict(
        env_prefix="DUPIFY_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    env: Environment = Environment.development
    database_url: str = "sqlite:///./dupify.db"
    redis_url: str | None = None
    secret_key: SecretStr | None = None
    secret_key_file: str = ".dupify-secret"  # noqa: S105 - a path, not a secret
    smtp_url: str | None = None
    inference_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    request_id_header: str = "X-Request-Id"
    default_model: str = "dupify-visual-1"
    metrics_token: SecretStr | None = None

    limits: ImageLimits = ImageLimits()
    inference: InferenceSettings = InferenceSettings()
    usage_log: UsageLogSettings = UsageLogSettings()
    plans: dict[str, Plan] = Field(default_factory=lambda: dict(DEFAULT_PLANS))
    cache: CacheSettings = CacheSettings()
    redis: RedisSettings = RedisSettings()
    server: ServerSettings = ServerSettings()

    @field_validator("plans", mode="before")
    @classmethod
    def _plans_over_defaults(cls, value: object) -> object:
        # DUPIFY_PLANS__FREE__REQUESTS_PER_MINUTE=5 arrives as {"free": {"requests_per_minute": 5}}:
        # merge it over the defaults so one variable does not erase the other fields and plans.
        if not isinstance(value, dict):
            return value
        merged: dict[str, object] = {
            name: plan.model_dump() for name, plan in DEFAULT_PLANS.items()
        }
        for name, plan in value.items():
            key = str(name).lower()
            if isinstance(plan, Plan):
                plan = plan.model_dump()
            base = merged.get(key)
            merged[key] = (
                {**base, **plan} if isinstance(base, dict) and isinstance(plan, dict) else plan
            )
        return merged

    portal: PortalSettings = PortalSettings()
    mail: MailSettings = MailSettings()
    abuse: AbuseSettings = AbuseSettings()
    retention: RetentionSettings = RetentionSettings()
    # The privacy policy version in force; raising it emails every account once (PRIVACY row 18).
    policy_version: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _production_needs_a_secret(self) -> Settings:
        if self.env is Environment.production and not self.secret_key:
            raise ValueError(
                "DUPIFY_SECRET_KEY is required when DUPIFY_ENV=production "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return self

    @model_validator(mode="after")
    def _a_request_fits_the_inference_queue(self) -> Settings:
        # A request's images enter a model's queue together; more than the queue holds could
        # never be admitted, so the setting is refused here rather than each such request failing.
        largest = max(self.limits.max_images_embeddings, MAX_ANALYZE_IMAGES, MAX_DUPLICATES_IMAGES)
        if self.inference.queue_size < largest:
            raise ValueError(
                f"DUPIFY_INFERENCE__QUEUE_SIZE (inference.queue_size) is "
                f"{self.inference.queue_size}: it must be at least {largest}, the most images one "
                f"request can carry (/v1/duplicates takes {MAX_DUPLICATES_IMAGES}, /v1/analyze "
                f"{MAX_ANALYZE_IMAGES}, /v1/embeddings DUPIFY_LIMITS__MAX_IMAGES_EMBEDDINGS = "
                f"{self.limits.max_images_embeddings})"
            )
        return self

    @property
    def is_production(self) -> bool:
        return self.env is Environment.production

    def plan(self, name: str) -> Plan:
        """The named plan's limits; an account on a plan this deployment lacks gets `free`'s."""
        return self.plans.get(name) or self.plans.get("free") or DEFAULT_PLANS["free"]
