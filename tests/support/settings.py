"""Test helper: the server secret every test uses and `Settings` on a test database."""

from __future__ import annotations

from typing import Any

from dupify.config import MailSettings, Settings

TEST_SECRET = "test-secret-" + "x" * 32


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for the test environment on `database_url`, ignoring any .env file.

    The server's mail sender is off unless `mail` is given: a queued message keeps its one-time
    link only as a seed until it is sent (`dupify.mail.links`), which is when
    `support.portal.mail_links` reads it. Tests of delivery give `mail` (and an SMTP sink).
    """
    overrides.setdefault("mail", MailSettings(sender_enabled=False))
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        database_url=database_url,
        secret_key=TEST_SECRET,
        **overrides,
    )
