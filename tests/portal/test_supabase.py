"""Sign-in with Supabase Auth against a stand-in that speaks its protocol on 127.0.0.1: tokens
good, expired, for another audience or issuer, signed with an unknown key or none at all, or for
an unconfirmed address, each accepted or refused; key rotation; the password and PKCE flows
through the pages, with the 18+ step, only the two cookies, and nothing at all without settings."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from dupify.accounts.identity import IdentityError, SupabaseAuth, linked_account
from dupify.accounts.models import Account
from dupify.accounts.service import create_account
from dupify.config import SupabaseSettings
from dupify.db import utcnow
from support.api import Api, ApiContext
from support.portal import PASSWORD, csrf_of, post_form, relative, signed_in_member
from support.supabase_auth import ANON_KEY, JWT_SECRET, FakeSupabase, new_key, running_fake_supabase

PERSON = "supa@example.com"
COOKIES = {"dupify_session", "dupify_csrf"}


@pytest.fixture
def fake() -> Iterator[FakeSupabase]:
    with running_fake_supabase() as running:
        running.users[PERSON] = "supabase password"
        yield running


def settings_for(fake: FakeSupabase, **changes: Any) -> SupabaseSettings:
    return SupabaseSettings(
        url=fake.base_url, anon_key=ANON_KEY, oauth_providers="github", **changes
    )


def test_tokens_are_accepted_or_refused_as_they_should_be(fake: FakeSupabase) -> None:
    auth = SupabaseAuth(settings_for(fake))
    good = auth.verify(fake.mint(PERSON))
    assert (good.email, good.email_verified, good.name) == (PERSON, True, "Supa Person")
    now = int(time.time())
    refused = {
        "expired": fake.mint(PERSON, exp=now - 60, iat=now - 3660),
        "wrong audience": fake.mint(PERSON, aud="anon"),
        "wrong issuer": fake.mint(PERSON, iss="https://evil.example/auth/v1"),
        "wrong key, known kid": jwt.encode(
            fake.claims(PERSON), new_key("key-1").private, "RS256", headers={"kid": "key-1"}
        ),
        "unknown key": fake.mint(PERSON, key=new_key("key-x")),
        "none algorithm": jwt.encode(fake.claims(PERSON), None, "none"),  # type: ignore[arg-type]
        "HS256 without a configured secret": jwt.encode(fake.claims(PERSON), JWT_SECRET, "HS256"),
        "no subject": fake.mint(PERSON, sub=None),
        "garbage": "not.a.token",
    }
    for what, token in refused.items():
        with pytest.raises(IdentityError):
            auth.verify(token)
            pytest.fail(f"accepted a token with {what}")
    unverified = auth.verify(fake.mint(PERSON, user_metadata={"email_verified": False}))
    assert unverified.email_verified is False


def test_the_project_jwt_secret_verifies_hs256_tokens(fake: FakeSupabase) -> None:
    auth = SupabaseAuth(settings_for(fake, jwt_secret=JWT_SECRET))
    assert auth.verify(jwt.encode(fake.claims(PERSON), JWT_SECRET, "HS256")).email == PERSON
    with pytest.raises(IdentityError):
        auth.verify(jwt.encode(fake.claims(PERSON), "another secret " * 3, "HS256"))
    assert auth.verify(fake.mint(PERSON)).email == PERSON  # asymmetric keys still work


def test_a_rotated_key_is_fetched_without_a_restart(fake: FakeSupabase) -> None:
    auth = SupabaseAuth(settings_for(fake, jwks_refresh_cooldown_s=0))
    assert auth.verify(fake.mint(PERSON)).email == PERSON
    fetches = fake.jwks_fetches
    fake.signer = new_key("key-2")
    fake.published = [fake.signer]
    assert auth.verify(fake.mint(PERSON)).email == PERSON
    assert fake.jwks_fetches == fetches + 1


async def test_without_the_settings_nothing_changes(api: Api) -> None:
    page = await api.client.get("/login")
    assert "Supabase" not in page.text
    refused = await post_form(api.client, "/login", "/login/supabase", {"sb_email": PERSON})
    assert refused.status_code == 404
    assert (await api.client.get("/login/supabase/authorize?provider=github")).status_code == 404


async def sign_in(client: httpx.AsyncClient, password: str = "supabase password") -> httpx.Response:
    return await post_form(
        client, "/login", "/login/supabase", {"sb_email": PERSON, "sb_password": password}
    )


async def test_password_sign_in_signs_up_with_the_age_check_then_links(
    api_factory: Callable[..., ApiContext], fake: FakeSupabase
) -> None:
    async with api_factory(supabase=settings_for(fake)) as api, api.new_client() as client:
        assert "Sign in with Supabase" in (await api.client.get("/login")).text
        wrong = await sign_in(client, "wrong")
        assert wrong.status_code == 400 and "not right" in wrong.text
        step = await sign_in(client)
        assert step.status_code == 200 and "Finish signing up" in step.text
        ticket = {"ticket": step.text.split('name="ticket" value="', 1)[1].split('"', 1)[0]}
        token = csrf_of(step.text)
        no_age = await client.post(
            "/login/supabase/complete", data={"csrf_token": token, "name": "Supa", **ticket}
        )
        assert no_age.status_code == 400 and "18 or older" in no_age.text
        forged = await client.post(
            "/login/supabase/complete",
            data={"csrf_token": token, "name": "X", "age_confirmed": "yes", "ticket": "e30.AAAA"},
        )
        assert "expired" in forged.text
        done = await client.post(
            "/login/supabase/complete",
            data={"csrf_token": token, "name": "Supa", "age_confirmed": "yes", **ticket},
        )
        assert done.status_code == 303 and done.headers["location"] == "/dashboard"
        assert set(client.cookies.keys()) == COOKIES
        with Session(api.engine) as db:
            account = db.scalars(select(Account).where(Account.email == PERSON)).one()
            assert account.email_verified_at is not None and account.password_hash is None
        async with api.new_client() as again:  # the second time: linked, straight in
            linked = await sign_in(again)
            assert linked.status_code == 303 and set(again.cookies.keys()) == COOKIES


async def test_an_unconfirmed_supabase_address_links_to_nothing(
    api_factory: Callable[..., ApiContext], fake: FakeSupabase
) -> None:
    fake.tokens[PERSON] = lambda email: fake.mint(email, user_metadata={"email_verified": False})
    async with api_factory(supabase=settings_for(fake)) as api:
        async with await signed_in_member(api, PERSON):
            pass
        async with api.new_client() as client:
            refused = await sign_in(client)
            assert refused.status_code == 400 and "not confirmed" in refused.text
            assert "dupify_session" not in client.cookies


def test_an_account_never_confirmed_in_dupify_loses_its_unproven_password(
    sessions: Any, fake: FakeSupabase
) -> None:
    auth = SupabaseAuth(settings_for(fake))
    with sessions() as db, db.begin():
        squatter = create_account(db, email=PERSON, name="Someone else")
        squatter.password_hash = "set by whoever typed the address"
        linked = linked_account(db, auth.verify(fake.mint(PERSON)), utcnow())
        assert linked is squatter and linked.password_hash is None
        assert linked.email_verified_at is not None
        unverified = auth.verify(fake.mint(PERSON, user_metadata={}))
        with pytest.raises(IdentityError):
            linked_account(db, unverified, utcnow())


async def test_oauth_with_pkce_signs_in_and_a_code_from_another_browser_is_refused(
    api_factory: Callable[..., ApiContext], fake: FakeSupabase
) -> None:
    fake.oauth_email = PERSON
    async with api_factory(supabase=settings_for(fake)) as api:
        async with await signed_in_member(api, PERSON):  # an existing, confirmed account
            pass
        async with api.new_client() as browser, httpx.AsyncClient() as outside:
            await browser.get("/login")
            start = await browser.get("/login/supabase/authorize?provider=github&next=/keys")
            assert start.status_code == 303
            target = start.headers["location"]
            assert target.startswith(fake.issuer + "/authorize?") and "code_challenge=" in target
            back = await outside.get(target)  # the provider signs in and sends the browser back
            assert back.status_code == 302
            callback = relative(back.headers["location"])
            async with api.new_client() as other:  # another browser: its cookie makes no match
                await other.get("/login")
                stolen = await other.get(callback)
                assert stolen.status_code == 400 and "dupify_session" not in other.cookies
            again = await outside.get(target)
            signed_in = await browser.get(relative(again.headers["location"]))
            assert signed_in.status_code == 303 and signed_in.headers["location"] == "/keys"
            assert set(browser.cookies.keys()) == COOKIES
            assert PASSWORD  # the account's own password sign-in is untouched
        unknown = await api.client.get("/login/supabase/authorize?provider=myspace")
        assert unknown.status_code == 404
