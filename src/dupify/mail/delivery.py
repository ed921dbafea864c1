"""Sending the outbox: claim due rows (safe across processes), send by SMTP or to the log, retry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from enum import StrEnum
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from dupify.accounts.models import Account
from dupify.config import MailSettings, Settings
from dupify.db import transaction, utcnow
from dupify.mail.models import OutboxMessage
from dupify.mail.outbox import add_wake_listener

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


def retry_delay(attempt: int, settings: MailSettings) -> timedelta:
    """Exponential back-off after the `attempt`-th failed try (1-based), capped."""
    seconds = settings.retry_base_s * 2 ** max(0, attempt - 1)
    return timedelta(seconds=min(seconds, settings.retry_max_s))


@dataclass(frozen=True)
class ClaimedMessage:
    id: str
    kind: str
    to_address: str
    subject: str
    body: str
    attempts: int  # including this one


class Result(StrEnum):
    sent = "sent"
    retry = "retry"  # a temporary failure: try again after the back-off
    failed = "failed"  # permanent: the server refused it, or no way to send at all
    deferred = "deferred"  # not tried (no time left in the claim): due again, no attempt counted


@dataclass(frozen=True)
class Outcome:
    result: Result
    error: str | None = None


def claim_due(
    sessions: sessionmaker[Session], settings: MailSettings, now: datetime
) -> list[ClaimedMessage]:
    """Take up to a batch of due pending messages for this sender.

    One UPDATE moves each row's next attempt a lease into the future and counts the attempt; a
    row already moved by another process no longer matches, so no two senders take the same row.
    On PostgreSQL the inner SELECT skips rows another claim has locked instead of waiting; on
    SQLite the UPDATE is the transaction's first statement, so it holds the write lock throughout.

    A message whose claims have used up `max_attempts` without an outcome being recorded (its
    sender died or raised mid-send every time) is marked failed instead of claimed again, so
    such a message is not retried, and perhaps sent, forever.
    """
    pending_due = (OutboxMessage.state == "pending") & (OutboxMessage.next_attempt_at <= now)
    due = pending_due & (OutboxMessage.attempts < settings.max_attempts)
    give_up = (
        update(OutboxMessage)
        .where(pending_due, OutboxMessage.attempts >= settings.max_attempts)
        .values(
            state="failed",
            last_error=f"no outcome recorded after {settings.max_attempts} claimed attempts",
        )
        .execution_options(synchronize_session=False)
    )
    candidates = (
        select(OutboxMessage.id)
        .where(due)
        .order_by(OutboxMessage.next_attempt_at)
        .limit(settings.batch_size)
        .with_for_update(skip_locked=True)
    )
    claim = (
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(candidates.scalar_subquery()), due)
        .values(
            attempts=OutboxMessage.attempts + 1,
            next_attempt_at=now + timedelta(seconds=settings.claim_lease_s),
        )
        .returning(
            OutboxMessage.id,
            OutboxMessage.kind,
            OutboxMessage.to_address,
            OutboxMessage.subject,
            OutboxMessage.body,
            OutboxMessage.attempts,
        )
        .execution_options(synchronize_session=False)
    )
    with transaction(sessions) as session:
        claimed = [ClaimedMessage(*row) for row in session.execute(claim)]
        session.execute(give_up)
        withdrawn = _withdraw_objected_announcements(session, claimed)
    return [message for message in claimed if message.id not in withdrawn]


def _withdraw_objected_announcements(
    session: Session, claimed: Sequence[ClaimedMessage]
) -> set[str]:
    """Delete the claimed announcements whose account objected after they were queued (PRIVACY
    row 7: the objection holds at sending time too, e.g. for a retry hours later)."""
    announcement_ids = [message.id for message in claimed if message.kind == "announcement"]
    if not announcement_ids:
        return set()
    objected = set(
        session.scalars(
            select(OutboxMessage.id)
            .join(Account, Account.id == OutboxMessage.account_id)
            .where(OutboxMessage.id.in_(announcement_ids), Account.pref_announcements.is_(False))
        )
    )
    if objected:
        session.execute(
            delete(OutboxMessage)
            .where(OutboxMessage.id.in_(objected))
            .execution_options(synchronize_session=False)
        )
        log.info("outbox: withdrew %d announcements; their accounts objected", len(objected))
    return objected


def record_outcomes(
    sessions: sessionmaker[Session],
    settings: MailSettings,
    outcomes: Sequence[tuple[ClaimedMessage, Outcome]],
    now: datetime,
) -> None:
    with transaction(sessions) as session:
        for message, outcome in outcomes:
            values: dict[str, object]
            if outcome.result is Result.sent:
                values = {"state": "sent", "sent_at": now, "last_error": None}
            elif outcome.result is Result.deferred:
                values = {"attempts": message.attempts - 1, "next_attempt_at": now}
            elif outcome.result is Result.retry and message.attempts < settings.max_attempts:
                values = {
                    "next_attempt_at": now + retry_delay(message.attempts, settings),
                    "last_error": (outcome.error or "")[:ERROR_MAX],
                }
            else:
                values = {"state": "failed", "last_error": (outcome.error or "")[:ERROR_MAX]}
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message.id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )


def next_due_at(sessions: sessionmaker[Session]) -> datetime | None:
    with sessions() as session:
        return session.scalar(
            select(func.min(OutboxMessage.next_attempt_at)).where(OutboxMessage.state == "pending")
        )


class Transport(Protocol):
    name: str

    async def send(self, messages: Sequence[ClaimedMessage]) -> list[Outcome]: ...


class LogTransport:
    """Development default: the message's links go to the log (a developer opens them there).

    Only the message id, kind, subject and the links are logged: never the recipient or the
    rest of the body (which greets the account holder by name), because log lines cannot be
    taken back when an account is deleted. The full message stays in the outbox table, which
    deletion does clear.
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


@dataclass(frozen=True)
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0

    @property
    def claimed(self) -> int:
        return self.sent + self.retrying + self.failed

    def __add__(self, other: DeliveryReport) -> DeliveryReport:
        return DeliveryReport(
            self.sent + other.sent, self.retrying + other.retrying, self.failed + other.failed
        )


class MailSender:
    """The background sender: delivers what is due, then sleeps until woken or the next poll.

    Any number of processes may run one; `claim_due` keeps them from sending a message twice.
    Delivery is at-least-once: a sender killed after the SMTP server accepted a message but before
    recording it sends it again after the claim lease.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        transport: Transport | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings.mail
        self.transport = transport or transport_for(settings)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._remove_listener: Callable[[], None] | None = None

    async def deliver_due(self) -> DeliveryReport:
        """Claim one batch of due messages, send them and record what happened."""
        now = utcnow()
        claimed = await asyncio.to_thread(claim_due, self.sessions, self.settings, now)
        if not claimed:
            return DeliveryReport()
        outcomes = await self.transport.send(claimed)
        pairs = list(zip(claimed, outcomes, strict=True))
        await asyncio.to_thread(record_outcomes, self.sessions, self.settings, pairs, utcnow())
        retrying = sum(
            1
            for message, outcome in pairs
            if outcome.result is Result.deferred
            or (outcome.result is Result.retry and message.attempts < self.settings.max_attempts)
        )
        sent = sum(1 for _, outcome in pairs if outcome.result is Result.sent)
        report = DeliveryReport(sent=sent, retrying=retrying, failed=len(pairs) - sent - retrying)
        if report.retrying or report.failed:
            log.warning(
                "outbox: %d sent, %d to retry, %d failed via %s",
                report.sent,
                report.retrying,
                report.failed,
                self.transport.name,
            )
        return report

    async def deliver_all_due(self) -> DeliveryReport:
        """Batches until nothing is due now (the CLI's `dupify outbox send`)."""
        total = DeliveryReport()
        while True:
            report = await self.deliver_due()
            total = total + report
            if report.claimed < self.settings.batch_size:
                return total

    def wake(self) -> None:
        """Deliver now rather than at the next poll (called from any thread after a commit)."""
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: the sender is gone anyway
            self._loop.call_soon_threadsafe(self._wake.set)

    async def start(self) -> None:
        if isinstance(self.transport, NoTransport):
            log.warning("DUPIFY_SMTP_URL is not set: email cannot be delivered in production")
        self._loop = asyncio.get_running_loop()
        self._remove_listener = add_wake_listener(self.wake)
        self._task = asyncio.create_task(self._run(), name="dupify-mail-sender")

    async def stop(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                report = await self.deliver_due()
            except Exception:
                # A database hiccup must not end the sender; the next round tries again.
                log.exception("outbox delivery round failed")
                report = DeliveryReport()
            if self._stopping or report.claimed >= self.settings.batch_size:
                continue
            await self._sleep_until_due()

    async def _sleep_until_due(self) -> None:
        delay = self.settings.poll_interval_s
        # A retry due sooner than the next poll shortens the sleep; if the look-up fails, the
        # next round (which logs its own errors) comes after the poll interval anyway.
        with contextlib.suppress(Exception):
            due = await asyncio.to_thread(next_due_at, self.sessions)
            if due is not None:
                delay = min(delay, max(0.0, (due - utcnow()).total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
