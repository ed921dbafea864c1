"""Portal test helpers: signed-in httpx clients, a page's CSRF token, links from the outbox."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from dupify.accounts.models import Account
from dupify.mail.links import render
from dupify.mail.models import OutboxMessage
from support.api import Api

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
LINK = re.compile(r"https?://\S+")
PASSWORD = "correct horse battery"


def csrf_of(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def mail_links(api: Api, to_address: str, kind: str) -> list[str]:
    """The links in the queued messages of `kind` to `to_address`, as the sender will send them
    (the outbox keeps a one-time link's token only as a seed; the test app sends no mail)."""
    secret = api.app.state.runtime.secret
    with Session(api.engine) as db:
        messages = db.execute(
            select(OutboxMessage.body, OutboxMessage.link_seed)
            .where(OutboxMessage.to_address == to_address, OutboxMessage.kind == kind)
            .order_by(OutboxMessage.created_at)
        ).all()
    bodies = [render(body, seed, secret) if seed else body for body, seed in messages]
    return [link for body in bodies for link in LINK.findall(body)]


def relative(link: str) -> str:
    return "/" + link.split("/", 3)[3]


async def post_form(
    client: httpx.AsyncClient, page: str, action: str, data: dict[str, str]
) -> httpx.Response:
    """Load `page`, take its CSRF token and post `data` to `action`, as a browser would."""
    form_page = await client.get(page)
    assert form_page.status_code == 200, form_page.text
    return await client.post(action, data={"csrf_token": csrf_of(form_page.text), **data})


async def create_key_via_form(
    client: httpx.AsyncClient, form: dict[str, str]
) -> tuple[httpx.Response, httpx.Response]:
    """Post the keys form (post/redirect/get): the 303 and the page it leads to, which shows the
    new key once."""
    created = await post_form(client, "/keys", "/keys", form)
    assert created.status_code == 303, created.text
    assert created.headers["location"].startswith("/keys?reveal=")
    shown = await client.get(created.headers["location"])
    assert shown.status_code == 200, shown.text
    return created, shown


@dataclass
class Member:
    client: httpx.AsyncClient
    email: str
    account_id: str

    async def __aenter__(self) -> Member:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.client.aclose()


async def sign_up(api: Api, client: httpx.AsyncClient, email: str, name: str = "Ada") -> None:
    response = await post_form(
        client,
        "/signup",
        "/signup",
        {"email": email, "name": name, "password": PASSWORD, "age_confirmed": "yes"},
    )
    assert response.status_code == 303, response.text


async def signed_in_member(api: Api, email: str | None = None) -> Member:
    """A new account made through the pages: sign up, open the emailed link, sign in."""
    address = email or f"dev-{secrets.token_hex(4)}@example.com"
    client = api.new_client()
    await sign_up(api, client, address)
    (link,) = mail_links(api, address, "verification")
    assert (await client.get(relative(link))).status_code == 303
    response = await post_form(client, "/login", "/login", {"email": address, "password": PASSWORD})
    assert response.status_code == 303, response.text
    with Session(api.engine) as db:
        account_id = db.scalars(select(Account.id).where(Account.email == address)).one()
    return Member(client, address, account_id)
