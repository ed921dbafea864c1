"""Start-up work for mail and abuse: the policy notice, the outbox sender, the spike monitor."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from sqlalchemy.orm import Session, sessionmaker

from dupify.abuse.monitor import AbuseMonitor
from dupify.config import Settings
from dupify.mail.delivery import MailSender
from dupify.privacy.policy import announce_if_raised


async def start_mail_and_abuse_services(
    settings: Settings, sessions: sessionmaker[Session], stack: AsyncExitStack
) -> None:
    """Queue the notice of a raised policy version (once per deployment, however many processes
    start), then start the sender and the monitor; `stack` stops them on shutdown."""
    public_url = settings.portal.public_url
    privacy_url = f"{public_url.rstrip('/')}/privacy" if public_url else None
    await asyncio.to_thread(
        announce_if_raised, sessions, settings.policy_version, privacy_url=privacy_url
    )
    if settings.mail.sender_enabled:
        sender = MailSender(sessions, settings)
        await sender.start()
        stack.push_async_callback(sender.stop)
    if settings.abuse.monitor_enabled:
        monitor = AbuseMonitor(sessions, settings.abuse)
        await monitor.start()
        stack.push_async_callback(monitor.stop)
