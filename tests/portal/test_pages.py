"""Keys, dashboard, logs, account, privacy and the policy banner, through the pages (both DBs)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dupify.accounts.models import Account, DeletionTombstone, WebSession
from dupify.db import utcnow
from dupify.keys.models import ApiKey
from dupify.usage.models import RequestLog
from support.api import Api
from support.portal import (
    PASSWORD,
    Member,
    create_key_via_form,
    csrf_of,
    mail_links,
    post_form,
    relative,
    signed_in_member,
)
from support.samples import photo_jpeg

KEY = re.compile(r"dpy_[0-9A-Za-z]{38}")


async def create_key_via_page(api: Api, member: Member, name: str = "laptop") -> tuple[str, str]:
    """(secret, key id) of a key made on the keys page."""
    _, response = await create_key_via_form(
        member.client,
        {"name": name, "scope_embeddings": "yes", "scope_usage:read": "yes", "expiry": "30"},
    )
    (secret,) = set(KEY.findall(response.text))
    with Session(api.engine) as db:
        key_id = db.scalars(
            select(ApiKey.id).where(ApiKey.account_id == member.account_id, ApiKey.name == name)
        ).one()
    return secret, key_id


async def embed(api: Api, key: str, body: bytes | None = None) -> int:
    response = await api.client.post(
        "/v1/embeddings",
        content=body if body is not None else photo_jpeg("coffee", size=(64, 64)),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"},
    )
    return response.status_code


async def test_keys_page_creates_a_key_shown_once_lists_and_revokes_it(api: Api) -> None:
    async with await signed_in_member(api) as member:
        client = member.client
        secret, key_id = await create_key_via_page(api, member)
        listing = await client.get("/keys")
        assert secret not in listing.text
        assert f"dpy_{secret[4:12]}" in listing.text and "laptop" in listing.text
        assert await embed(api, secret) == 200
        await api.flush_usage()
        listing = await client.get("/keys")
        row = listing.text.split(">laptop</td>", 1)[1].split("</tr>", 1)[0]
        assert "never" not in row and "active" in row  # last used now shown, expiry set
        with Session(api.engine) as db:
            key = db.get(ApiKey, key_id)
            assert key is not None and key.last_used_at is not None
            assert key.scopes == "embeddings usage:read"
            assert key.expires_at is not None
        no_name = await post_form(client, "/keys", "/keys", {"scope_embeddings": "yes"})
        assert no_name.status_code == 400 and "Give the key a name" in no_name.text
        no_scope = await post_form(client, "/keys", "/keys", {"name": "x", "expiry": "never"})
        assert no_scope.status_code == 400 and "Choose at least one scope" in no_scope.text
        revoked = await post_form(client, "/keys", f"/keys/{key_id}/revoke", {})
        assert revoked.status_code == 303
        assert await embed(api, secret) == 401


async def test_one_account_never_sees_or_touches_anothers_keys_logs_usage_or_export(
    api: Api,
) -> None:
    owner, other = await signed_in_member(api), await signed_in_member(api)
    async with owner, other:
        secret, key_id = await create_key_via_page(api, owner)
        assert await embed(api, secret) == 200
        assert await embed(api, secret, b"not an image") in (415, 422)
        await api.flush_usage()
        with Session(api.engine) as db:
            request_ids = db.scalars(
                select(RequestLog.request_id).where(RequestLog.account_id == owner.account_id)
            ).all()
        assert len(request_ids) == 2
        # Revoking another account's key by its id: not found, and the key keeps working.
        refused = await post_form(other.client, "/keys", f"/keys/{key_id}/revoke", {})
        assert refused.status_code == 404
        assert await embed(api, secret) == 200
        keys_page = await other.client.get("/keys")
        assert secret[4:12] not in keys_page.text and "laptop" not in keys_page.text
        for query in ("", "?status=all", "?status=errors", "?endpoint=POST+/v1/embeddings"):
            logs = await other.client.get("/logs" + query)
            assert logs.status_code == 200
            assert "0 requests" in logs.text
            assert not any(request_id in logs.text for request_id in request_ids)
            assert key_id not in logs.text
        dashboard = await other.client.get("/dashboard")
        assert re.search(r'id="total-requests">0<', dashboard.text)
        export = await post_form(other.client, "/account", "/account/export", {})
        text = export.text
        assert other.account_id in text
        for foreign in (owner.account_id, owner.email, key_id, *request_ids):
            assert foreign not in text
        owner_logs = await owner.client.get("/logs")
        assert all(request_id in owner_logs.text for request_id in request_ids)


async def test_dashboard_figures_and_chart_follow_the_log(api: Api) -> None:
    async with await signed_in_member(api) as member:
        secret, _ = await create_key_via_page(api, member)
        assert await embed(api, secret) == 200
        assert await embed(api, secret, b"\x00" * 10) in (415, 422)
        page = await member.client.get("/dashboard")
        assert page.status_code == 200
        assert re.search(r'id="total-requests">2<', page.text)
        assert re.search(r'id="total-images">1<', page.text)
        assert re.search(r'id="error-rate">50.0 %<', page.text)
        assert re.search(r'id="latency-p50">\d+ ms<', page.text)
        assert re.search(r'id="quota-used"[^>]*>1<', page.text)
        plan = api.settings.plan("free")
        assert re.search(rf'id="quota-left">{plan.images_per_month - 1}<', page.text)
        for chart in ("chart-requests", "chart-errors", "chart-latency"):
            assert f'id="{chart}"' in page.text
        # 30 days, two bars a day (requests, images), each with a value on hover and focus.
        requests_chart = page.text.split('id="chart-requests"', 1)[1].split("</figure>", 1)[0]
        assert requests_chart.count('class="pt" tabindex="0"') == 60
        today = utcnow().date().isoformat()
        assert f"{today}: 2 requests" in page.text and f"{today}: 1 errors" in page.text
        assert "Latest errors" in page.text and "POST /v1/embeddings" in page.text


async def test_logs_filter_by_status_endpoint_and_date_and_page(api: Api) -> None:
    async with await signed_in_member(api) as member:
        now = utcnow()
        with Session(api.engine) as db, db.begin():
            for index in range(60):
                db.add(
                    RequestLog(
                        request_id=f"req_seed{index:04d}",
                        created_at=now - timedelta(days=index % 3, minutes=index),
                        account_id=member.account_id,
                        key_id=None,
                        endpoint="POST /v1/embeddings" if index % 2 else "GET /v1/models",
                        status=200 if index % 4 else 429,
                        error_code=None if index % 4 else "rate_limited",
                        latency_ms=10.0 + index,
                        images=1 if index % 2 else 0,
                    )
                )
        client = member.client
        first = await client.get("/logs")
        assert "60 requests, page 1 of 2" in first.text
        assert first.text.count("req_seed") == 50
        second = await client.get("/logs?page=2")
        assert second.text.count("req_seed") == 10
        errors = await client.get("/logs?status=4xx")
        assert "15 requests" in errors.text and "rate_limited" in errors.text
        models = await client.get("/logs?endpoint=GET+/v1/models")
        assert "30 requests" in models.text and "POST /v1/embeddings</code></td>" not in models.text
        today = now.date().isoformat()
        only_today = await client.get(f"/logs?start={today}&end={today}")
        assert "20 requests" in only_today.text
        bad = await client.get("/logs?start=yesterday")
        assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text
        # Odd but well-formed values are handled, never a 500.
        assert "60 requests, page 1 of 2" in (await client.get("/logs?page=%C2%B2")).text
        assert "60 requests" in (await client.get("/logs?start=0001-01-01&end=9999-12-31")).text


async def test_account_corrections_preferences_and_email_change(api: Api) -> None:
    async with await signed_in_member(api) as member:
        client = member.client
        saved = await post_form(client, "/account", "/account/profile", {"name": "Ada L."})
        assert saved.status_code == 303
        prefs = await post_form(
            client, "/account", "/account/preferences", {"pref_announcements": "yes"}
        )
        assert prefs.status_code == 303
        wrong = await post_form(
            client,
            "/account",
            "/account/email",
            {"new_email": "new@example.com", "email_password": "nope nope nope"},
        )
        assert wrong.status_code == 400 and "not your current password" in wrong.text
        sent = await post_form(
            client,
            "/account",
            "/account/email",
            {"new_email": "New@Example.com", "email_password": PASSWORD},
        )
        assert sent.status_code == 303
        with Session(api.engine) as db:
            account = db.get(Account, member.account_id)
            assert account is not None
            assert (account.name, account.email) == ("Ada L.", member.email)
            assert account.pref_announcements and not account.pref_usage_analytics
        (link,) = mail_links(api, "new@example.com", "email_change")
        assert (await client.get(relative(link))).status_code == 303
        with Session(api.engine) as db:
            account = db.get(Account, member.account_id)
            assert account is not None and account.email == "new@example.com"
        page = await client.get("/account")
        assert "new@example.com" in page.text


async def test_a_new_password_or_address_ends_the_pending_emailed_links(api: Api) -> None:
    """Links started with the old password, or sent to the old address, stop working."""
    async with await signed_in_member(api) as member:
        client = member.client

        async def request_move(to: str, password: str) -> str:
            data = {"new_email": to, "email_password": password}
            assert (await post_form(client, "/account", "/account/email", data)).status_code == 303
            return relative(mail_links(api, to, "email_change")[-1])

        async def request_reset() -> str:
            data = {"email": member.email}
            sent = await post_form(client, "/reset-password", "/reset-password", data)
            assert sent.status_code == 303
            return relative(mail_links(api, member.email, "password_reset")[-1])

        move, reset = await request_move("thief@example.com", PASSWORD), await request_reset()
        second = "another long password"
        data = {"current_password": PASSWORD, "new_password": second}
        assert (await post_form(client, "/account", "/account/password", data)).status_code == 303
        assert (await client.get(move)).status_code == 400
        assert (await client.get(reset)).status_code == 400

        move, reset = await request_move("thief@example.com", second), await request_reset()
        form = await client.get(reset)
        third = "a third long password"
        done = await client.post(reset, data={"csrf_token": csrf_of(form.text), "password": third})
        assert done.status_code == 303
        assert (await client.get(move)).status_code == 400

        data = {"email": member.email, "password": third}
        assert (await post_form(client, "/login", "/login", data)).status_code == 303
        reset, move = await request_reset(), await request_move("new@example.com", third)
        assert (await client.get(move)).status_code == 303
        assert (await client.get(reset)).status_code == 400
    with Session(api.engine) as db:
        account = db.get(Account, member.account_id)
        assert account is not None and account.email == "new@example.com"


async def test_password_change_ends_the_other_sessions(api: Api) -> None:
    first = await signed_in_member(api)
    async with first:
        second_client = api.client
        again = await post_form(
            second_client, "/login", "/login", {"email": first.email, "password": PASSWORD}
        )
        assert again.status_code == 303
        with Session(api.engine) as db:
            count = select(func.count()).select_from(WebSession)
            assert db.scalar(count.where(WebSession.account_id == first.account_id)) == 2
        changed = await post_form(
            first.client,
            "/account",
            "/account/password",
            {"current_password": PASSWORD, "new_password": "another long password"},
        )
        assert changed.status_code == 303
        assert (await first.client.get("/account")).status_code == 200
        assert (await second_client.get("/account")).status_code == 303
        with Session(api.engine) as db:
            assert db.scalar(count.where(WebSession.account_id == first.account_id)) == 1


async def test_account_page_password_checks_are_throttled_per_account(api: Api) -> None:
    """With a stolen session the current password cannot be guessed without limit: the email,
    password and delete forms share one count per account; a right password clears it."""
    attempts = api.settings.portal.login_attempts
    forms = [
        ("/account/email", {"new_email": "moved@example.com"}, "email_password"),
        ("/account/password", {"new_password": "another long password"}, "current_password"),
        ("/account/delete", {"confirm_delete": "yes"}, "delete_password"),
    ]

    async def check(member: Member, form: int, password: str) -> int:
        action, data, field = forms[form % len(forms)]
        response = await post_form(member.client, "/account", action, {**data, field: password})
        if response.status_code == 429:
            assert "Too many password attempts for this account" in response.text
        return response.status_code

    async with await signed_in_member(api) as victim, await signed_in_member(api) as other:
        wrong = [await check(victim, form, f"guess {form}") for form in range(attempts - 1)]
        assert wrong == [400] * (attempts - 1)
        assert await check(victim, 0, PASSWORD) == 303  # a right password clears the count
        wrong = [await check(victim, form, f"guess {form}") for form in range(attempts)]
        assert wrong == [400] * attempts
        assert [await check(victim, form, PASSWORD) for form in range(3)] == [429] * 3
        assert await check(other, 0, PASSWORD) == 303  # another account is not locked out
    with Session(api.engine) as db:
        assert db.get(Account, victim.account_id) is not None


async def test_export_holds_the_account_its_keys_and_requests(api: Api) -> None:
    async with await signed_in_member(api) as member:
        secret, key_id = await create_key_via_page(api, member)
        assert await embed(api, secret) == 200
        response = await post_form(member.client, "/account", "/account/export", {})
        assert response.status_code == 200
        assert response.headers["content-disposition"].startswith("attachment;")
        data = json.loads(response.text)
        assert data["account"]["email"] == member.email
        assert "password_hash" not in json.dumps(data)
        assert key_id in json.dumps(data) and secret not in json.dumps(data)
        assert "POST /v1/embeddings" in json.dumps(data)
        assert any(event["event"] == "export" for event in data["audit_events"])


async def test_deleting_the_account_refuses_its_key_at_once_and_ends_sessions(api: Api) -> None:
    async with await signed_in_member(api) as member:
        secret, _ = await create_key_via_page(api, member)
        assert await embed(api, secret) == 200
        refused = await post_form(
            member.client, "/account", "/account/delete", {"delete_password": PASSWORD}
        )
        assert refused.status_code == 400 and "Tick the box" in refused.text
        deleted = await post_form(
            member.client,
            "/account",
            "/account/delete",
            {"delete_password": PASSWORD, "confirm_delete": "yes"},
        )
        assert deleted.status_code == 303
        assert await embed(api, secret) == 401
        assert "dupify_session" not in member.client.cookies
        assert (await member.client.get("/dashboard")).status_code == 303
        with Session(api.engine) as db:
            assert db.get(Account, member.account_id) is None
            assert db.scalar(select(func.count()).select_from(WebSession)) == 0
            assert db.scalar(select(func.count()).select_from(DeletionTombstone)) == 1


async def test_privacy_page_states_this_deployments_facts(api_factory: Callable[..., Any]) -> None:
    overrides = {
        "usage_log": {"retention": timedelta(days=30)},
        "portal": {"contact_email": "privacy@example.org"},
        "policy_version": 3,
        "smtp_url": "smtp://mailer:s3cret-pass@smtp.example.net:587",
    }
    async with api_factory(**overrides) as running:
        page = await running.client.get("/privacy")
        assert page.status_code == 200
        assert 'id="retention-logs">30 days<' in page.text
        assert 'id="retention-cache">24 hours' in page.text
        assert "privacy@example.org" in page.text and "Version 3." in page.text
        assert "SMTP relay at smtp.example.net" in page.text
        assert "s3cret-pass" not in page.text and "mailer" not in page.text
        assert "SQLite" in page.text or "PostgreSQL at 127.0.0.1" in page.text


async def test_policy_banner_until_acknowledged(api_factory: Callable[..., Any]) -> None:
    async with api_factory(policy_version=2) as running:
        member = await signed_in_member(running)
        async with member:
            # The version-2 notice went out at start-up; this account is made older than it,
            # as an account that signed up under version 1 would be.
            with Session(running.engine) as db, db.begin():
                account = db.get(Account, member.account_id)
                assert account is not None
                account.created_at = utcnow() - timedelta(days=30)
            page = await member.client.get("/dashboard")
            assert "Our privacy policy changed (version 2)" in page.text
            done = await member.client.post(
                "/privacy/acknowledge", data={"csrf_token": csrf_of(page.text), "version": "2"}
            )
            assert done.status_code == 303
            page = await member.client.get("/dashboard")
            assert "Our privacy policy changed" not in page.text
