"""One-click unsubscribe (RFC 8058) on announcements: the headers and the link reach the mail,
the link records the objection without a session, and it is refused when forged, expired,
already used, or of another purpose; the database never holds it readable. Both databases."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dupify.accounts.models import Account, OneTimeToken
from dupify.accounts.service import create_account
from dupify.config import MailSettings
from dupify.db import session_factory, transaction, utcnow
from dupify.mail.announcements import announce
from dupify.mail.delivery import MailSender
from dupify.mail.models import OutboxMessage
from dupify.mail.unsubscribe import ONE_CLICK, PATH, list_headers
from support.api import Api
from support.portal import mail_links, relative, signed_in_member
from support.smtp_sink import SmtpSink

ONE_CLICK_FORM = {"List-Unsubscribe": "One-Click"}


async def announce_and_deliver(api: Api, sink: SmtpSink, *emails: str) -> dict[str, str]:
    """Accounts for `emails`, one announcement to them delivered to the sink; email -> link."""
    sessions = session_factory(api.engine)
    with transaction(sessions) as session:
        for email in emails:
            create_account(session, email=email, name="Reader")
        assert announce(
            session, subject="Spring news", body="News.\n", link_base="http://testserver"
        ) == len(emails)
    settings = api.settings.model_copy(
        update={"smtp_url": sink.url, "mail": MailSettings(timeout_s=5)}
    )
    report = await MailSender(sessions, settings).deliver_all_due()
    assert report.failed == 0 and report.retrying == 0
    links = {}
    for email in emails:
        [message] = sink.to(email)
        # Unfolded as a mail client reads it (RFC 5322 folds a long header before the URL).
        header = " ".join(str(message.message["List-Unsubscribe"]).split())
        assert str(message.message["List-Unsubscribe-Post"]) == ONE_CLICK
        assert header.startswith("<http://testserver/unsubscribe/") and header.endswith(">")
        link = header[1:-1]
        assert link in message.body  # the same link, for people, in the body
        links[email] = link
    return links


def prefers_announcements(api: Api, email: str) -> bool:
    with Session(api.engine) as db:
        return bool(
            db.scalars(select(Account.pref_announcements).where(Account.email == email)).one()
        )


async def test_the_one_click_link_objects_without_a_session_once(api: Api, sink: SmtpSink) -> None:
    links = await announce_and_deliver(api, sink, "ada@example.com", "grace@example.com")
    path = relative(links["ada@example.com"])
    async with api.new_client() as stranger:  # no cookie at all: the link is the authority
        shown = await stranger.get(path)
        assert shown.status_code == 200 and "ada@example.com" in shown.text
        assert prefers_announcements(
            api, "ada@example.com"
        )  # a GET (a mail scanner) changes nothing
        done = await stranger.post(path, data=ONE_CLICK_FORM)
        assert done.status_code == 200 and "You are unsubscribed" in done.text
        assert set(done.cookies) == set()
    assert not prefers_announcements(api, "ada@example.com")
    assert prefers_announcements(api, "grace@example.com")  # only the link's own account
    # Reused: refused, also after the holder opted in again (an old link cannot object again).
    with Session(api.engine) as db, db.begin():
        db.execute(
            update(Account)
            .where(Account.email == "ada@example.com")
            .values(pref_announcements=True)
        )
    again = await api.client.post(
        path,
        content=ONE_CLICK.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert again.status_code == 400 and "does not work" in again.text
    assert prefers_announcements(api, "ada@example.com")


async def test_forged_expired_and_other_purpose_links_are_refused(api: Api, sink: SmtpSink) -> None:
    links = await announce_and_deliver(api, sink, "ada@example.com")
    path = relative(links["ada@example.com"])
    token = path.removeprefix(PATH)
    for forged in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "x", "a" * 300):
        assert (await api.client.post(PATH + forged, data=ONE_CLICK_FORM)).status_code == 400
        assert (await api.client.get(PATH + forged)).status_code == 400
    # An unsubscribe link is not an email-confirmation link, nor the other way round.
    assert (await api.client.get("/verify-email/" + token)).status_code == 400
    async with await signed_in_member(api, "newcomer@example.com") as member:
        [verify_link] = mail_links(api, member.email, "verification")
        verify_token = verify_link.rsplit("/", 1)[1]
        assert (await api.client.post(PATH + verify_token, data=ONE_CLICK_FORM)).status_code == 400
    # Expired: refused.
    with Session(api.engine) as db, db.begin():
        db.execute(
            update(OneTimeToken)
            .where(OneTimeToken.purpose == "unsubscribe")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert (await api.client.post(path, data=ONE_CLICK_FORM)).status_code == 400
    assert prefers_announcements(api, "ada@example.com")


async def test_the_link_is_never_readable_from_the_database(api: Api, sink: SmtpSink) -> None:
    links = await announce_and_deliver(api, sink, "ada@example.com")
    token = links["ada@example.com"].rsplit("/", 1)[1]
    with Session(api.engine) as db:
        rows = db.scalars(select(OutboxMessage).where(OutboxMessage.kind == "announcement")).all()
        assert [row.link_seed for row in rows] == [""]  # the seed is wiped once sent
        assert token not in rows[0].body
        stored = db.scalars(
            select(OneTimeToken.token_hash).where(OneTimeToken.purpose == "unsubscribe")
        ).all()
        assert len(stored) == 1 and token not in stored[0]


def test_list_headers_only_for_a_body_with_the_link() -> None:
    assert list_headers("no link here") == {}
    body = "Hi\nhttps://dupify.example/unsubscribe/abc_DEF-123\n"
    assert list_headers(body) == {
        "List-Unsubscribe": "<https://dupify.example/unsubscribe/abc_DEF-123>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
