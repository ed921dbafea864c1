"""Sign-up, email confirmation, sign-in, sign-out, reset, sessions and cookies (both databases)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dupify.accounts.models import Account, OneTimeToken, WebSession
from dupify.audit.models import AuditEvent
from dupify.db import utcnow
from dupify.mail.models import OutboxMessage
from dupify.portal.passwords import HASHER
from dupify.portal.sessions import session_id_for
from dupify.portal.throttle import EMAIL_REQUESTS_PER_WINDOW
from support.api import Api
from support.portal import (
    PASSWORD,
    csrf_of,
    mail_links,
    post_form,
    relative,
    sign_up,
    signed_in_member,
)
from support.settings import TEST_SECRET


def _sessions_of(api: Api, account_id: str) -> int:
    with Session(api.engine) as db:
        count = db.scalar(
            select(func.count()).select_from(WebSession).where(WebSession.account_id == account_id)
        )
    return int(count or 0)


async def test_signup_without_age_confirmation_is_refused_with_a_clear_message(api: Api) -> None:
    async with api.new_client() as client:
        response = await post_form(
            client,
            "/signup",
            "/signup",
            {"email": "young@example.com", "name": "Kid", "password": PASSWORD},
        )
    assert response.status_code == 400
    assert "You must confirm that you are 18 or older" in response.text
    assert 'aria-invalid="true"' in response.text
    with Session(api.engine) as db:
        assert db.scalar(select(Account).where(Account.email == "young@example.com")) is None


async def test_signup_verify_login_logout(api: Api) -> None:
    async with api.new_client() as client:
        await sign_up(api, client, "Ada@Example.com")
        with Session(api.engine) as db:
            account = db.scalars(select(Account).where(Account.email == "ada@example.com")).one()
            assert account.email_verified_at is None
            assert account.password_hash is not None
            assert account.password_hash.startswith("$argon2id$v=19$m=19456,t=3,p=1$")
        refused = await post_form(
            client, "/login", "/login", {"email": "ada@example.com", "password": PASSWORD}
        )
        assert refused.status_code == 400 and "Confirm your email address first" in refused.text
        (link,) = mail_links(api, "ada@example.com", "verification")
        verified = await client.get(relative(link))
        assert verified.status_code == 303 and "notice=verified" in verified.headers["location"]
        assert (await client.get(relative(link))).status_code == 400  # a link works once
        wrong = await post_form(
            client, "/login", "/login", {"email": "ada@example.com", "password": "not it at all"}
        )
        assert wrong.status_code == 400
        assert "The email address or the password is not right" in wrong.text
        before = client.cookies.get("dupify_session")
        signed_in = await post_form(
            client, "/login", "/login", {"email": "ada@example.com", "password": PASSWORD}
        )
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/dashboard"
        assert client.cookies.get("dupify_session") not in (None, before)
        assert _sessions_of(api, account.id) == 1
        account_page = await client.get("/account")
        assert account_page.status_code == 200 and "ada@example.com" in account_page.text
        out = await client.post("/logout", data={"csrf_token": csrf_of(account_page.text)})
        assert out.status_code == 303
        assert _sessions_of(api, account.id) == 0
        assert (await client.get("/account")).status_code == 303
    with Session(api.engine) as db:
        events = db.scalars(
            select(AuditEvent.event).where(AuditEvent.account_id == account.id)
        ).all()
    assert {"login", "login_failed", "logout"} <= set(events)


async def test_cookies_are_exactly_session_and_csrf_with_safe_attributes(api: Api) -> None:
    member = await signed_in_member(api)
    client = member.client
    async with member:
        assert sorted(client.cookies.keys()) == ["dupify_csrf", "dupify_session"]
        response = await client.get("/dashboard")
        assert response.status_code == 200
        tls = api.new_client()
        tls.base_url = httpx.URL("https://dupify.test")
        async with tls:
            page = await tls.get("/login")
            set_cookies = page.headers.get_list("set-cookie")
            assert len(set_cookies) == 1
            assert set_cookies[0].startswith("__Host-dupify_csrf=")
            lowered = set_cookies[0].lower()
            assert "secure" in lowered and "httponly" in lowered and "samesite=lax" in lowered
            assert "path=/" in lowered and "domain" not in lowered
            assert "max-age=63072000" in page.headers["strict-transport-security"]


async def test_security_headers_on_every_portal_page(api: Api) -> None:
    async with api.new_client() as client:
        for path in ("/", "/login", "/signup", "/privacy", "/static/portal.css"):
            response = await client.get(path)
            assert response.status_code == 200, path
            csp = response.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "http" not in csp  # no third-party source anywhere
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "same-origin"
            assert "strict-transport-security" not in response.headers  # plain HTTP here
        api_response = await client.get("/healthz")  # not a page: the API's own policy
        assert api_response.headers["content-security-policy"].startswith("default-src 'none'")


async def test_form_without_csrf_token_is_refused(api: Api) -> None:
    async with api.new_client() as client:
        await client.get("/signup")
        data = {"email": "a@example.com", "name": "A", "password": PASSWORD, "age_confirmed": "yes"}
        missing = await client.post("/signup", data=data)
        assert missing.status_code == 403 and "CSRF" in missing.text
        forged = await client.post("/signup", data={**data, "csrf_token": "abc.def"})
        assert forged.status_code == 403
        cross_site = await post_form(client, "/signup", "/signup", data)
        assert cross_site.status_code == 303
    member = await signed_in_member(api)
    client = member.client
    async with member:
        page = await client.get("/keys")
        token = csrf_of(page.text)
        other_site = await client.post(
            "/logout", data={"csrf_token": token}, headers={"Origin": "https://evil.example"}
        )
        assert other_site.status_code == 403
        assert _sessions_of(api, member.account_id) == 1
        # A token from before sign-in is bound to no session: refused after sign-in.
        anonymous = api.new_client()
        async with anonymous:
            stale = csrf_of((await anonymous.get("/login")).text)
        client.cookies.set("dupify_csrf", stale)
        assert (await client.post("/logout", data={"csrf_token": stale})).status_code == 403
    with Session(api.engine) as db:
        assert db.scalar(select(func.count()).select_from(Account)) == 2


async def test_password_reset_ends_every_session(api: Api) -> None:
    member = await signed_in_member(api)
    assert _sessions_of(api, member.account_id) == 1
    async with api.new_client() as stranger:
        sent = await post_form(
            stranger, "/reset-password", "/reset-password", {"email": member.email}
        )
        assert sent.status_code == 303
        unknown = await post_form(
            stranger, "/reset-password", "/reset-password", {"email": "nobody@example.com"}
        )
        assert unknown.headers["location"] == sent.headers["location"]  # no account oracle
        (link,) = mail_links(api, member.email, "password_reset")
        form = await stranger.get(relative(link))
        assert form.status_code == 200
        short = await stranger.post(
            relative(link), data={"csrf_token": csrf_of(form.text), "password": "short"}
        )
        assert short.status_code == 400 and "at least 10 characters" in short.text
        done = await stranger.post(
            relative(link),
            data={"csrf_token": csrf_of(form.text), "password": "a new long password"},
        )
        assert done.status_code == 303
    assert _sessions_of(api, member.account_id) == 0
    client = member.client
    async with member:
        assert (await client.get("/dashboard")).status_code == 303
        again = await post_form(
            client, "/login", "/login", {"email": member.email, "password": "a new long password"}
        )
        assert again.status_code == 303


async def test_brute_force_sign_in_gets_locked_out(api: Api) -> None:
    member = await signed_in_member(api)
    attempts = api.settings.portal.login_attempts
    async with api.new_client() as attacker:
        statuses = []
        for guess in range(attempts + 2):
            response = await post_form(
                attacker, "/login", "/login", {"email": member.email, "password": f"guess-{guess}"}
            )
            statuses.append(response.status_code)
        assert statuses[:attempts] == [400] * attempts
        assert statuses[attempts:] == [429, 429]
        locked = await post_form(
            attacker, "/login", "/login", {"email": member.email, "password": PASSWORD}
        )
        assert locked.status_code == 429 and "Too many sign-in attempts" in locked.text


def _signup_notices(api: Api, email: str) -> int:
    with Session(api.engine) as db:
        count = db.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(
                OutboxMessage.to_address == email,
                OutboxMessage.subject.startswith("Someone tried to sign up"),
            )
        )
    return int(count or 0)


async def _try_signup(client: httpx.AsyncClient, email: str) -> httpx.Response:
    fields = {"email": email, "name": "Mallory", "password": PASSWORD, "age_confirmed": "yes"}
    return await post_form(client, "/signup", "/signup", fields)


async def test_repeated_signups_with_a_taken_address_mail_its_holder_once_then_are_refused(
    api: Api,
) -> None:
    member = await signed_in_member(api)  # its own sign-up counts against the address too
    async with member, api.new_client() as attacker:
        allowed = EMAIL_REQUESTS_PER_WINDOW - 1
        statuses = [(await _try_signup(attacker, member.email)).status_code for _ in range(7)]
        assert statuses == [303] * allowed + [429] * (7 - allowed)
        refused = await _try_signup(attacker, member.email.upper())
        assert refused.status_code == 429 and "Too many sign-up attempts" in refused.text
    assert _signup_notices(api, member.email) == 1


async def test_signups_from_one_client_address_are_throttled(
    api_factory: Callable[..., Any],
) -> None:
    async with api_factory(portal={"login_attempts_per_address": 3}) as running:
        async with running.new_client() as client:
            emails = [f"new-{index}@example.com" for index in range(4)]
            statuses = [(await _try_signup(client, email)).status_code for email in emails]
        assert statuses == [303, 303, 303, 429]
        with Session(running.engine) as db:
            assert db.scalar(select(Account).where(Account.email == emails[3])) is None


def test_password_hash_parameters_meet_owasp() -> None:
    assert HASHER.memory_cost >= 19456 and HASHER.time_cost >= 2 and HASHER.parallelism >= 1
    assert HASHER.type.name == "ID"


async def test_behind_a_trusted_proxy_tls_and_client_addresses_come_from_its_headers(
    api_factory: Callable[..., Any],
) -> None:
    async with api_factory(portal={"trust_forwarded_proto": True, "login_attempts": 2}) as running:
        member = await signed_in_member(running)
        async with member, running.new_client() as client:
            proxied = {"X-Forwarded-Proto": "https"}
            page = await client.get("/login", headers=proxied)
            assert page.headers["set-cookie"].startswith("__Host-dupify_csrf=")
            assert "strict-transport-security" in page.headers
            token = page.headers["set-cookie"].split(";")[0].split("=", 1)[1]
            client.cookies.set("__Host-dupify_csrf", token)

            async def guess(address: str) -> int:
                response = await client.post(
                    "/login",
                    data={"csrf_token": token, "email": member.email, "password": "wrong guess"},
                    headers={**proxied, "X-Forwarded-For": f"203.0.113.9, {address}"},
                )
                return response.status_code

            assert [await guess("198.51.100.1") for _ in range(3)] == [400, 400, 429]
            assert await guess("198.51.100.2") == 400  # another client behind the same proxy


async def test_sessions_are_stored_hashed_and_end_when_idle_or_old(api: Api) -> None:
    member = await signed_in_member(api)
    async with member:
        token = member.client.cookies["dupify_session"]
        with Session(api.engine) as db:
            row = db.scalars(
                select(WebSession).where(WebSession.account_id == member.account_id)
            ).one()
            assert row.id == session_id_for(token, TEST_SECRET.encode()) and token not in row.id
            assert row.expires_at - row.created_at == api.settings.portal.session_lifetime
        assert (await member.client.get("/dashboard")).status_code == 200
        idle = api.settings.portal.session_idle_timeout
        with Session(api.engine) as db, db.begin():
            stored = db.get(WebSession, row.id)
            assert stored is not None
            stored.last_seen_at = utcnow() - idle - timedelta(seconds=1)
        assert (await member.client.get("/dashboard")).status_code == 303
        assert _sessions_of(api, member.account_id) == 0
        again = await post_form(
            member.client, "/login", "/login", {"email": member.email, "password": PASSWORD}
        )
        assert again.status_code == 303
        with Session(api.engine) as db, db.begin():
            fresh = db.scalars(select(WebSession)).one()
            fresh.expires_at = utcnow() - timedelta(seconds=1)
        assert (await member.client.get("/dashboard")).status_code == 303


async def test_emailed_links_work_once_and_expire(api: Api) -> None:
    member = await signed_in_member(api)
    async with member, api.new_client() as stranger:
        await post_form(stranger, "/reset-password", "/reset-password", {"email": member.email})
        (link,) = mail_links(api, member.email, "password_reset")
        with Session(api.engine) as db, db.begin():
            token = db.scalars(
                select(OneTimeToken).where(OneTimeToken.purpose == "reset_password")
            ).one()
            assert token.token_hash not in link  # only the HMAC is stored
            # A reset link lives shorter than the other emailed links.
            lifetime = api.settings.portal.reset_link_lifetime
            assert token.expires_at - token.created_at == lifetime
            token.expires_at = utcnow() - timedelta(seconds=1)
        expired = await stranger.get(relative(link))
        assert expired.status_code == 400 and "invalid, already used or expired" in expired.text


async def test_a_nul_character_anywhere_is_a_clear_400_not_a_500(api: Api) -> None:
    """PostgreSQL refuses NUL in text: these were 500s there (and stored as-is on SQLite)."""
    async with api.new_client() as stranger:
        token = csrf_of((await stranger.get("/signup")).text)
        for action, data in (
            ("/login", {"email": "a\x00@example.com", "password": PASSWORD}),
            ("/reset-password", {"email": "a\x00@example.com"}),
            (
                "/signup",
                {"email": "n@example.com", "name": "A\x00", "password": PASSWORD},
            ),
        ):
            refused = await stranger.post(action, data={"csrf_token": token, **data})
            assert refused.status_code == 400 and "NUL character" in refused.text, action
    async with await signed_in_member(api) as member:
        client = member.client
        token = csrf_of((await client.get("/keys")).text)
        named = await client.post(
            "/keys", data={"csrf_token": token, "name": "a\x00b", "scope_embeddings": "yes"}
        )
        assert named.status_code == 400 and "NUL character" in named.text
        profile = await client.post("/account/profile", data={"csrf_token": token, "name": "\x00"})
        assert profile.status_code == 400
        assert (
            await client.post("/keys/%00/revoke", data={"csrf_token": token})
        ).status_code == 400
        assert (await client.get("/logs?endpoint=%00")).status_code == 400
    with Session(api.engine) as db:
        assert db.scalar(select(func.count()).select_from(Account)) == 1
