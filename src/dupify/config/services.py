"""Settings for the shared state around requests: plans and quotas, the result cache, Redis, the
request log, abuse detection and retention."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field, field_validator

from dupify.config.common import MiB


class UsageLogSettings(BaseModel):
    """The request log buffer: rows are written in batches, off the request path."""

    flush_interval_s: float = Field(1.0, gt=0)
    flush_batch: int = Field(500, gt=0)
    retention: timedelta = timedelta(days=90)


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
