"""How a claimed message leaves: by SMTP, to the development log, or not at all (production
without SMTP), and what each try came to (sent, retry, failed, deferred)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from enum import StrEnum
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

from dupify.config import MailSettings, Settings
from dupify.mail.unsubscribe import list_headers

log = logging.getLogger("dupify.mail")
# Links in a message body (one-time links carry no personal data, only a token).
_LINK = re.compile(r"https?://\S+")

ERROR_MAX = 500


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to reach the SMTP server, parsed from DUPIFY_SMTP_URL."""

    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool  # smtps://: TLS from the first byte
    start_tls: bool | None  # True: required; None: when the server offers it

    def __repr__(self) -> str:  # the password never reaches a log line
        return f"SmtpTarget({self.hostname}:{self.port}, tls={self.use_tls or self.start_tls})"


def parse_smtp_url(url: str) -> SmtpTarget:
    """`smtp://[user:pass@]host[:port]` (STARTTLS when offered), `smtp+starttls://` (required),
    `smtps://` (implicit TLS, port 465 by default). User and password are URL-decoded."""
    parts = urlsplit(url)
    schemes = {
        "smtp": (25, False, None),
        "smtp+starttls": (587, False, True),
        "smtps": (465, True, False),
    }
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError("DUPIFY_SMTP_URL must look like smtp://user:pass@host:port or smtps://…")
    default_port, use_tls, start_tls = schemes[parts.scheme]
    return SmtpTarget(
        hostname=parts.hostname,
        port=parts.port or default_port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=use_tls,
        start_tls=start_tls,
    )


@dataclass(frozen=True)
class ClaimedMessage:
    id: str
    kind: str
    to_address: str
    subject: str
    body: str  # as sent: a one-time link's token is in it (`dupify.mail.links.render`)
    attempts: int  # including this one
    link_seed: str | None = None  # as stored (see `OutboxMessage.link_seed`)


class Result(StrEnum):
    sent = "sent"
    retry = "retry"  # a temporary failure: try again after the back-off
    failed = "failed"  # permanent: the server refused it, or no way to send at all
    deferred = "deferred"  # not tried (no time left in the claim): due again, no attempt counted


@dataclass(frozen=True)
class Outcome:
    result: Result
    error: str | None = None


class Transport(Protocol):
    name: str

    async def send(self, messages: Sequence[ClaimedMessage]) -> list[Outcome]: ...


class LogTransport:
    """Development default: the message's links go to the log (a developer opens them there).

    Only the message id, kind, subject and the links are logged: never the recipient or the
    rest of the body (which greets the account holder by name), because log lines cannot be
    taken back when an account is deleted. The message stays in the outbox table, which
    deletion does clear, without its one-time link's token (`dupify.mail.links`).
    """

    name = "log"

    async def send(self, messages: Sequence[ClaimedMessage]) -> list[Outcome]:
        for message in messages:
            links = _LINK.findall(message.body)
            log.info(
                "mail %s (%s) not sent (no DUPIFY_SMTP_URL): %s%s",
                message.id,
                message.kind,
                message.subject,
                "".join(f"\n  {link}" for link in links),
            )
        return [Outcome(Result.sent) for _ in messages]


class NoTransport:
    """Production without SMTP: nothing can be delivered, and links must not go to the logs."""

    name = "none"

    async def send(self, messages: Sequence[ClaimedMessage]) -> list[Outcome]:
        for message in messages:
            log.warning(
                "mail %s (%s) not sent: DUPIFY_SMTP_URL is not set", message.id, message.kind
            )
        error = (
            "not sent: no SMTP server configured (set DUPIFY_SMTP_URL, then dupify outbox retry)"
        )
        return [Outcome(Result.failed, error) for _ in messages]


# While sending, errors that concern the connection, not one message: the rest of the batch is
# retried too. (Any error while connecting, TLS and AUTH included, retries the whole batch.)
_CONNECTION_ERRORS = (
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    OSError,
    TimeoutError,
)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_MAX]


def _is_permanent(exc: BaseException) -> bool:
    """A 5xx reply about this message (refused recipient or content) will not change on retry,
    nor will a server's lack of what the message needs (SMTPUTF8 for a non-ASCII address)."""
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return True
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(500 <= refused.code < 600 for refused in exc.recipients)
    return isinstance(exc, aiosmtplib.SMTPResponseException) and 500 <= exc.code < 600


class SmtpTransport:
    """One connection per batch (an announcement is many messages); aiosmtplib speaks SMTP."""

    name = "smtp"

    def __init__(self, target: SmtpTarget, settings: MailSettings) -> None:
        self.target = target
        self.settings = settings
        self.sender_address = parseaddr(settings.from_address)[1]
        self.message_domain = self.sender_address.rpartition("@")[2] or "dupify.localhost"

    def build(self, message: ClaimedMessage) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.settings.from_address
        email["To"] = message.to_address
        email["Subject"] = message.subject
        email["Date"] = formatdate(usegmt=True)
        email["Message-ID"] = make_msgid(domain=self.message_domain)
        email["Auto-Submitted"] = "auto-generated"
        if message.kind == "announcement":
            # RFC 8058 one-click unsubscribe (announcements only: the policy allows no
            # objection to security or policy notices).
            for name, value in list_headers(message.body).items():
                email[name] = value
        email.set_content(message.body)
        return email

    async def send(self, messages: Sequence[ClaimedMessage]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        # The batch was claimed for `claim_lease_s`; after that another sender may claim what is
        # left and send it too. So no message is started after half the lease: one message
        # (a few commands of at most `timeout_s` each) fits in the other half.
        loop = asyncio.get_running_loop()
        stop_starting_at = loop.time() + self.settings.claim_lease_s / 2
        client = aiosmtplib.SMTP(
            hostname=self.target.hostname,
            port=self.target.port,
            username=self.target.username,
            password=self.target.password,
            use_tls=self.target.use_tls,
            start_tls=self.target.start_tls,
            timeout=self.settings.timeout_s,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return [Outcome(Result.retry, _describe(exc)) for _ in messages]
        try:
            for index, message in enumerate(messages):
                if loop.time() >= stop_starting_at:
                    outcomes.extend(Outcome(Result.deferred) for _ in messages[index:])
                    break
                try:
                    email = self.build(message)
                except (ValueError, TypeError) as exc:  # an address the email package rejects
                    outcomes.append(Outcome(Result.failed, _describe(exc)))
                    continue
                try:
                    await client.send_message(email, sender=self.sender_address)
                except _CONNECTION_ERRORS as exc:
                    error = _describe(exc)
                    outcomes.extend(Outcome(Result.retry, error) for _ in messages[index:])
                    break
                except aiosmtplib.SMTPException as exc:
                    result = Result.failed if _is_permanent(exc) else Result.retry
                    outcomes.append(Outcome(result, _describe(exc)))
                except Exception as exc:
                    # Unforeseen, and the connection's state is unknown: retry the rest (bounded
                    # by max_attempts) rather than raise, which would lose the outcomes of the
                    # messages already sent in this batch and send them again after the lease.
                    # The type only: the error's text may name the recipient, and a log line
                    # cannot be taken back when the account is deleted (last_error can).
                    log.error("outbox: unexpected %s sending %s", type(exc).__name__, message.id)
                    error = _describe(exc)
                    outcomes.extend(Outcome(Result.retry, error) for _ in messages[index:])
                    break
                else:
                    outcomes.append(Outcome(Result.sent))
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await client.quit()
        return outcomes


def transport_for(settings: Settings) -> Transport:
    if settings.smtp_url:
        return SmtpTransport(parse_smtp_url(settings.smtp_url), settings.mail)
    if settings.is_production:
        return NoTransport()
    return LogTransport()
