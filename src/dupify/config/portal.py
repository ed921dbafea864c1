"""Settings for the developer portal: sessions, throttles, Supabase sign-in and outgoing mail."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field, SecretStr


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


class SupabaseSettings(BaseModel):
    """Optional portal sign-in with Supabase Auth (accounts.identity), on with URL and ANON_KEY."""

    url: str | None = Field(None, description="the project's address, e.g. https://abc.supabase.co")
    anon_key: SecretStr | None = Field(None, description="the project's public (anon) API key")
    jwt_secret: SecretStr | None = Field(None, description="legacy HS256 secret; else JWKS")
    audience: str = "authenticated"
    oauth_providers: str = Field("", description="offered via PKCE, comma-separated: github,google")
    timeout_s: float = Field(10.0, gt=0, description="each call to Supabase Auth")
    jwks_cache_s: int = Field(300, gt=0, description="how long fetched signing keys are kept")
    jwks_refresh_cooldown_s: float = Field(30.0, ge=0, description="unknown key id: refetch gap")

    @property
    def providers(self) -> list[str]:
        return [name.strip() for name in self.oauth_providers.split(",") if name.strip()]

    @property
    def enabled(self) -> bool:
        return bool(self.url and self.anon_key)


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
