"""All configuration, read once from DUPIFY_* environment variables and `.env`; no side effects.

`Settings` is the whole of it; each section's model lives in the module named for what it
configures (requests, inference, services, portal) and is importable from here too.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dupify.config.common import MiB, available_cores
from dupify.config.inference import InferenceSettings, RunpodSettings, WorkerSettings
from dupify.config.portal import MailSettings, PortalSettings, SupabaseSettings
from dupify.config.requests import (
    MAX_ANALYZE_IMAGES,
    MAX_DUPLICATES_IMAGES,
    ImageLimits,
    ImageUrlSettings,
    ServerSettings,
)
from dupify.config.services import (
    DEFAULT_PLANS,
    AbuseSettings,
    CacheSettings,
    Plan,
    RedisSettings,
    RetentionSettings,
    UsageLogSettings,
)

__all__ = [
    "DEFAULT_PLANS",
    "MAX_ANALYZE_IMAGES",
    "MAX_DUPLICATES_IMAGES",
    "AbuseSettings",
    "CacheSettings",
    "Environment",
    "ImageLimits",
    "ImageUrlSettings",
    "InferenceSettings",
    "MailSettings",
    "MiB",
    "Plan",
    "PortalSettings",
    "RedisSettings",
    "RetentionSettings",
    "RunpodSettings",
    "ServerSettings",
    "Settings",
    "SupabaseSettings",
    "UsageLogSettings",
    "WorkerSettings",
    "available_cores",
]


class Environment(StrEnum):
    development = "development"
    production = "production"
    test = "test"


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
    models_file: Path | None = None  # the operator's models, TOML (docs/models.md)
    metrics_token: SecretStr | None = None

    limits: ImageLimits = ImageLimits()
    inference: InferenceSettings = InferenceSettings()
    usage_log: UsageLogSettings = UsageLogSettings()
    plans: dict[str, Plan] = Field(default_factory=lambda: dict(DEFAULT_PLANS))
    cache: CacheSettings = CacheSettings()
    redis: RedisSettings = RedisSettings()
    server: ServerSettings = ServerSettings()
    runpod: RunpodSettings = RunpodSettings()
    worker: WorkerSettings = WorkerSettings()
    image_urls: ImageUrlSettings = ImageUrlSettings()

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
    supabase: SupabaseSettings = SupabaseSettings()
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
