"""The request owns the database work: a page's writes are committed before its response starts,
and a page that fails saves nothing and sends no mail."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import Message, Receive, Scope, Send

from dupify.accounts.models import Account, WebSession
from dupify.mail.models import OutboxMessage
from dupify.mail.outbox import add_wake_listener, enqueue
from dupify.portal import mails
from support.api import Api
from support.portal import PASSWORD, post_form, signed_in_member


def _name_of(api: Api, account_id: str) -> str | None:
    with Session(api.engine) as db:
        return db.scalar(select(Account.name).where(Account.id == account_id))


async def test_a_page_write_is_saved_before_the_response_starts(api: Api) -> None:
    member = await signed_in_member(api)
    seen_at_response: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start" and scope["path"] == "/account/profile":
                # Another connection: it sees only what is committed.
                seen_at_response.append(_name_of(api, member.account_id))
            await send(message)

        await api.app(scope, receive, watched)

    async with (
        member,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=str(api.client.base_url),
            cookies=member.client.cookies,
        ) as browser,
    ):
        response = await post_form(browser, "/account", "/account/profile", {"name": "Grace"})
    assert response.status_code == 303
    assert seen_at_response == ["Grace"]


async def test_a_page_that_fails_saves_nothing_and_sends_no_mail(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = await signed_in_member(api)
    wakes: list[None] = []
    remove = add_wake_listener(lambda: wakes.append(None))

    def queue_then_fail(db: Session, account: Account) -> None:
        enqueue(db, kind="security", to_address=account.email, subject="Changed", body="It was.\n")
        db.flush()
        raise RuntimeError("the page fails after its writes")

    monkeypatch.setattr(mails, "send_password_changed", queue_then_fail)
    with Session(api.engine) as db:
        before = db.scalar(select(Account.password_hash).where(Account.id == member.account_id))
        mail_before = db.scalar(select(func.count()).select_from(OutboxMessage))
    failing = api.new_client(raise_app_exceptions=False)
    failing.cookies = member.client.cookies
    try:
        async with member, failing:
            response = await post_form(
                failing,
                "/account",
                "/account/password",
                {"current_password": PASSWORD, "new_password": "another horse battery"},
            )
    finally:
        remove()
    assert response.status_code == 500
    with Session(api.engine) as db:
        after: dict[str, Any] = {
            "password_hash": db.scalar(
                select(Account.password_hash).where(Account.id == member.account_id)
            ),
            "sessions": db.scalar(
                select(func.count())
                .select_from(WebSession)
                .where(WebSession.account_id == member.account_id)
            ),
            "mail": db.scalar(select(func.count()).select_from(OutboxMessage)),
        }
    # The password, the sessions the change would have ended, and the queued mail: all as before.
    assert after == {"password_hash": before, "sessions": 1, "mail": mail_before}
    assert wakes == []
