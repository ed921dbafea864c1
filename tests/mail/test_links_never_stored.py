"""Emailed one-time links are never readable from the database (issue 17): the outbox keeps a
seed instead of the link's token until the message is sent, and nothing once it is sent or has
failed for good; the link the user receives still works. Both databases."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import String, Text, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from dupify.config import MailSettings
from dupify.db import session_factory, utcnow
from dupify.mail.delivery import LINK_GONE, MailSender
from dupify.mail.links import TOKEN_SLOT, token_from_seed
from dupify.mail.models import OutboxMessage
from dupify.mail.transports import ClaimedMessage, Outcome, Result
from dupify.schema.tables import Base
from support.api import Api
from support.portal import LINK, PASSWORD, csrf_of, post_form, relative, sign_up
from support.smtp_sink import SmtpSink
from support.waiting import wait_until

FAST = MailSettings(poll_interval_s=0.05, retry_base_s=0.1, retry_max_s=0.4, timeout_s=5)
EMAIL = "reset-me@example.com"


def strings_in_every_table(api: Api) -> list[str]:
    """Every string value of every column of every row of every table."""
    values: list[str] = []
    with api.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text)]
            if columns:
                for row in connection.execute(select(*columns)):
                    values.extend(value for value in row if isinstance(value, str))
    return values


def database_files_holding(database_url: str, needle: str) -> list[str]:
    """For SQLite: which of the database, -wal and -shm files hold `needle`, as bytes."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database is None:
        return []
    base = Path(url.database)
    paths = [base, *(base.with_name(base.name + suffix) for suffix in ("-wal", "-shm"))]
    return [p.name for p in paths if p.exists() and needle.encode() in p.read_bytes()]


def outbox_rows(api: Api, kind: str) -> list[OutboxMessage]:
    with Session(api.engine) as db:
        return list(db.scalars(select(OutboxMessage).where(OutboxMessage.kind == kind)))


async def test_after_a_reset_mail_is_sent_no_column_of_any_table_holds_its_link(
    api_factory: Callable[..., Any], sink: SmtpSink
) -> None:
    """The outbox kept the sent reset mail's body, link included, for 30 days, while the
    token table held only its HMAC: reading the database was enough to take the account."""
    async with api_factory(smtp_url=sink.url, mail=FAST) as api, api.new_client() as client:
        await sign_up(api, client, EMAIL)
        sent = await post_form(client, "/reset-password", "/reset-password", {"email": EMAIL})
        assert sent.status_code == 303
        await wait_until(
            lambda: any("Reset your" in str(m.message["Subject"]) for m in sink.to(EMAIL)),
            "the reset mail reaches the SMTP server",
        )
        (reset,) = [m for m in sink.to(EMAIL) if "Reset your" in str(m.message["Subject"])]
        (link,) = LINK.findall(reset.body)
        token = link.rsplit("/", 1)[1]
        await wait_until(
            lambda: [m.state for m in outbox_rows(api, "password_reset")] == ["sent"],
            "the reset mail is recorded as sent",
        )
        stored = strings_in_every_table(api)
        assert not [value for value in stored if token in value or link in value]
        assert database_files_holding(api.settings.database_url, token) == []
        (message,) = outbox_rows(api, "password_reset")
        assert message.link_seed == "" and TOKEN_SLOT in message.body  # nothing to rebuild it
        # The link the user received works: a new password, then a sign-in with it.
        form = await client.get(relative(link))
        assert form.status_code == 200
        done = await client.post(
            relative(link), data={"csrf_token": csrf_of(form.text), "password": "x" + PASSWORD}
        )
        assert done.status_code == 303 and "notice=password_reset" in done.headers["location"]
        signed_in = await post_form(
            client, "/login", "/login", {"email": EMAIL, "password": "x" + PASSWORD}
        )
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/dashboard"


class FailingTransport:
    """A server that refuses every message for good (a 5xx)."""

    name = "failing"

    def __init__(self) -> None:
        self.sent: list[ClaimedMessage] = []

    async def send(self, messages: list[ClaimedMessage]) -> list[Outcome]:
        self.sent.extend(messages)
        return [Outcome(Result.failed, "550 no such mailbox") for _ in messages]


async def test_a_queued_link_is_only_a_seed_and_is_wiped_when_its_mail_fails_for_good(
    api: Api,
) -> None:
    """Before sending, the database holds a seed, useless without the server secret; a message
    that fails for good loses it too, and one queued again (`dupify outbox retry`) is not sent
    with a dead link but failed again, saying why."""
    async with api.new_client() as client:
        await sign_up(api, client, EMAIL)
        await post_form(client, "/reset-password", "/reset-password", {"email": EMAIL})
    (queued,) = outbox_rows(api, "password_reset")
    assert queued.state == "pending" and queued.link_seed
    token = token_from_seed(queued.link_seed, api.app.state.runtime.secret)
    assert not [value for value in strings_in_every_table(api) if token in value]
    assert token not in queued.body and TOKEN_SLOT in queued.body

    sessions = session_factory(api.engine)
    transport = FailingTransport()
    sender = MailSender(sessions, api.settings, transport)
    await sender.deliver_all_due()
    handed = [m for m in transport.sent if m.kind == "password_reset"]
    assert len(handed) == 1 and token in handed[0].body  # the token existed in memory only
    (failed,) = outbox_rows(api, "password_reset")
    assert (failed.state, failed.link_seed) == ("failed", "")

    with Session(api.engine) as db, db.begin():  # what `dupify outbox retry` does
        db.execute(
            update(OutboxMessage).values(
                state="pending", attempts=0, next_attempt_at=utcnow(), last_error=None
            )
        )
    transport.sent.clear()
    await sender.deliver_all_due()
    assert transport.sent == []  # the verification mail (failed too) had its seed wiped too
    for kind in ("password_reset", "verification"):
        (again,) = outbox_rows(api, kind)
        assert (again.state, again.last_error) == ("failed", LINK_GONE.error)
