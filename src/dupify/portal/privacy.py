"""The facts /privacy states for this deployment: retention periods, providers, contact, version;
and the policy as plain text, which each version keeps (`dupify.privacy.policy`).

Everything is read from the settings the running server enforces, so the page cannot drift from
what the code does. Provider entries name the kind and host of each service, never credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from dupify.config import Settings


@dataclass(frozen=True)
class Provider:
    role: str
    what: str


@dataclass(frozen=True)
class PolicyFacts:
    version: int
    contact_email: str
    api_log_retention: str
    cache_ttl: str
    audit_retention: str
    mail_retention: str
    abuse_flag_retention: str
    session_lifetime: str
    session_idle: str
    email_link_lifetime: str
    reset_link_lifetime: str
    providers: list[Provider]


def humanise(period: timedelta) -> str:
    """90 days, 24 hours, 15 minutes: the largest whole unit that fits (days from two on)."""
    seconds = int(period.total_seconds())
    for unit, size, at_least in (("day", 86_400, 2), ("hour", 3_600, 1), ("minute", 60, 1)):
        if seconds >= size * at_least and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} seconds"


def _host_of(url: str) -> str:
    host = urlsplit(url).hostname or "an unnamed host"
    return host


def providers_of(settings: Settings) -> list[Provider]:
    database = make_url(settings.database_url)
    if database.get_backend_name() == "sqlite":
        stored = Provider("Database", "a SQLite file on this server (no third party)")
    else:
        stored = Provider("Database", f"PostgreSQL at {database.host or 'a local socket'}")
    if settings.redis_url:
        scheme = "TLS" if settings.redis_url.startswith("rediss://") else "no TLS"
        cache = Provider(
            "Cache and rate limits",
            f"Redis at {_host_of(settings.redis_url)} ({scheme}); cached results only, no images",
        )
    else:
        cache = Provider("Cache and rate limits", "in this server's memory (no third party)")
    if settings.smtp_url:
        mail = Provider("Email", f"SMTP relay at {_host_of(settings.smtp_url)}")
    else:
        mail = Provider("Email", "none: messages are kept in the outbox on this server")
    if settings.inference_url:
        inference = Provider(
            "Image processing", f"inference servers at {_host_of(settings.inference_url)}"
        )
    else:
        inference = Provider(
            "Image processing", f"this server ({settings.inference.device.upper()}), in memory"
        )
    providers = [stored, cache, mail, inference]
    if settings.supabase.enabled and settings.supabase.url:
        providers.append(
            Provider(
                "Sign-in (optional)",
                f"Supabase Auth at {_host_of(settings.supabase.url)}: your email address and an "
                "access token when you choose to sign in with it",
            )
        )
    return providers


def policy_facts(settings: Settings) -> PolicyFacts:
    portal = settings.portal
    return PolicyFacts(
        version=settings.policy_version,
        contact_email=portal.contact_email,
        api_log_retention=humanise(settings.usage_log.retention),
        cache_ttl=humanise(settings.cache.ttl),
        audit_retention=humanise(settings.retention.audit_events),
        mail_retention=humanise(settings.retention.sent_or_failed_mail),
        abuse_flag_retention=humanise(settings.retention.resolved_abuse_flags),
        session_lifetime=humanise(portal.session_lifetime),
        session_idle=humanise(portal.session_idle_timeout),
        email_link_lifetime=humanise(portal.email_link_lifetime),
        reset_link_lifetime=humanise(portal.reset_link_lifetime),
        providers=providers_of(settings),
    )


_BLOCKS = {"h1", "h2", "h3", "p", "li", "tr", "ul", "table", "div", "dd", "dt"}


class _TextOf(HTMLParser):
    """The text of an HTML fragment, one line per block (paragraph, list item, table row)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._line: list[str] = []

    def _end_line(self) -> None:
        text = " ".join("".join(self._line).split())
        if text:
            self.lines.append(text)
        self._line = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self._end_line()
        elif tag == "td":
            self._line.append(" | " if self._line else "")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS:
            self._end_line()

    def handle_data(self, data: str) -> None:
        self._line.append(data)


def policy_text(html: str) -> str:
    """The rendered policy (the `_policy.html` part of /privacy) as plain text."""
    parser = _TextOf()
    parser.feed(html)
    parser.close()
    parser._end_line()
    return "\n".join(parser.lines) + "\n"
