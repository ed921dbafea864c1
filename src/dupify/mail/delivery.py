"""The outbox sender: claim due rows (safe across processes), hand them to the transport, record
each outcome and retry with back-off; `MailSender` runs that loop in the server.

A one-time link's token is put into its message only here, in memory, as the message goes to
the transport, and the seed it is made from is wiped once the message is sent or has failed for
good (`dupify.mail.links`): after that the database holds no way to the link. An announcement
gets its unsubscribe link's seed when it is first claimed (`dupify.mail.unsubscribe`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from dupify.accounts.models import Account
from dupify.config import MailSettings, Settings
from dupify.db import transaction, utcnow
from dupify.keys.secret import server_secret
from dupify.mail import unsubscribe
from dupify.mail.links import TOKEN_SLOT, render
from dupify.mail.models import OutboxMessage
from dupify.mail.outbox import add_wake_listener
from dupify.mail.transports import (
    ERROR_MAX,
    ClaimedMessage,
    NoTransport,
    Outcome,
    Result,
    Transport,
    transport_for,
)

log = logging.getLogger("dupify.mail")
# A message whose one-time link was wiped (`outbox retry` of one that failed for good).
LINK_GONE = Outcome(
    Result.failed, "its one-time link is no longer kept: the account holder asks for a new one"
)
# What a sent or given-up message keeps of its link: '' if it had one (see OutboxMessage).
_WIPED_SEED = case((OutboxMessage.link_seed.is_not(None), ""))


def retry_delay(attempt: int, settings: MailSettings) -> timedelta:
    """Exponential back-off after the `attempt`-th failed try (1-based), capped."""
    seconds = settings.retry_base_s * 2 ** max(0, attempt - 1)
    return timedelta(seconds=min(seconds, settings.retry_max_s))


def claim_due(
    sessions: sessionmaker[Session],
    settings: MailSettings,
    now: datetime,
    secret: bytes | None = None,
) -> list[ClaimedMessage]:
    """Take up to a batch of due pending messages for this sender.

    One UPDATE moves each row's next attempt a lease into the future and counts the attempt; a
    row already moved by another process no longer matches, so no two senders take the same row.
    On PostgreSQL the inner SELECT skips rows another claim has locked instead of waiting; on
    SQLite the UPDATE is the transaction's first statement, so it holds the write lock throughout.
    With the server `secret`, a claimed announcement without its unsubscribe seed gets one.

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
            link_seed=_WIPED_SEED,
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
            OutboxMessage.link_seed,
        )
        .execution_options(synchronize_session=False)
    )
    with transaction(sessions) as session:
        claimed = [ClaimedMessage(*row) for row in session.execute(claim)]
        session.execute(give_up)
        withdrawn = _withdraw_objected_announcements(session, claimed)
        claimed = [message for message in claimed if message.id not in withdrawn]
        if secret is not None:
            claimed = _seed_unsubscribe_links(session, claimed, secret, now)
    return claimed


def _seed_unsubscribe_links(
    session: Session, claimed: list[ClaimedMessage], secret: bytes, now: datetime
) -> list[ClaimedMessage]:
    """Give each claimed announcement whose unsubscribe link has no seed yet its seed and token
    row; a retry later reuses the same seed, so every copy of the message carries one link."""
    ready = []
    for message in claimed:
        if (
            message.kind == "announcement"
            and message.link_seed is None
            and TOKEN_SLOT in message.body
        ):
            account_id = session.scalar(
                select(OutboxMessage.account_id).where(OutboxMessage.id == message.id)
            )
            if account_id is not None:
                seed = unsubscribe.issue(session, account_id, secret=secret, now=now)
                session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == message.id)
                    .values(link_seed=seed)
                    .execution_options(synchronize_session=False)
                )
                message = replace(message, link_seed=seed)
        ready.append(message)
    return ready


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
            if values.get("state") and message.link_seed is not None:
                values["link_seed"] = ""
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message.id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )


def with_links(
    messages: Sequence[ClaimedMessage], secret: bytes, public_url: str | None = None
) -> list[ClaimedMessage]:
    """The sendable messages as sent: each one-time link's token made from its seed, and the
    deployment's address where the queuing code knew none (`unsubscribe.BASE_SLOT`)."""
    sendable = []
    for message in messages:
        if message.link_seed == "":
            continue
        body = message.body
        if message.link_seed:
            body = render(body, message.link_seed, secret)
        if public_url and unsubscribe.BASE_SLOT in body:
            body = body.replace(unsubscribe.BASE_SLOT, public_url.rstrip("/"))
        sendable.append(replace(message, body=body) if body != message.body else message)
    return sendable


def next_due_at(sessions: sessionmaker[Session]) -> datetime | None:
    with sessions() as session:
        return session.scalar(
            select(func.min(OutboxMessage.next_attempt_at)).where(OutboxMessage.state == "pending")
        )


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
        self._secret = server_secret(settings)
        self._public_url = settings.portal.public_url or f"http://{settings.host}:{settings.port}"
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._remove_listener: Callable[[], None] | None = None

    async def deliver_due(self) -> DeliveryReport:
        """Claim one batch of due messages, send them and record what happened."""
        now = utcnow()
        claimed = await asyncio.to_thread(
            claim_due, self.sessions, self.settings, now, self._secret
        )
        if not claimed:
            return DeliveryReport()
        sendable = with_links(claimed, self._secret, self._public_url)
        outcomes = iter(await self.transport.send(sendable) if sendable else [])
        pairs = [
            (message, LINK_GONE if message.link_seed == "" else next(outcomes))
            for message in claimed
        ]
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
