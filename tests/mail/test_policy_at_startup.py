"""A raised policy version is announced when the server starts, and delivered by its own sender."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from dupify.accounts.service import create_account
from dupify.config import MailSettings
from dupify.db import create_db_engine, session_factory, transaction
from dupify.mail.models import OutboxMessage
from support.servers import free_port
from support.smtp_sink import SmtpSink, running_sink
from support.waiting import wait_until


async def test_starting_with_a_raised_version_emails_every_account_once(
    api_factory: Callable[..., Any], database_url: str
) -> None:
    engine = create_db_engine(database_url)
    with transaction(session_factory(engine)) as session:
        for email in ("ada@example.com", "objector@example.com"):
            account = create_account(session, email=email, name="Someone")
            account.pref_announcements = email == "ada@example.com"
    engine.dispose()

    with running_sink(SmtpSink(free_port())) as sink:
        options = {"smtp_url": sink.url, "mail": MailSettings(poll_interval_s=0.05)}
        async with api_factory(policy_version=2, **options):
            await wait_until(lambda: len(sink.received) == 2)
        async with api_factory(policy_version=2, **options) as restarted:
            # The start-up check ran before the app began serving: nothing new was queued.
            with session_factory(restarted.engine)() as session:
                queued = select(func.count()).select_from(OutboxMessage)
                assert session.scalar(queued) == 2
        recipients = sorted(r for item in sink.received for r in item.recipients)
        assert recipients == ["ada@example.com", "objector@example.com"]
        assert all("version 2" in str(item.message["Subject"]) for item in sink.received)
