"""Sign-in with Supabase Auth, when DUPIFY_SUPABASE__URL and __ANON_KEY are set: email and
password through its token endpoint, its OAuth providers through PKCE; then Dupify's own session.

Only the two essential cookies are used. The PKCE verifier is not stored anywhere: it is an HMAC
of the server secret, this browser's CSRF cookie and a nonce carried in the callback address, so
a code brought back to another browser cannot be exchanged there. A verified identity without a
Dupify account gets a sign-up step (name, the 18+ confirmation) carried by a signed, short-lived
ticket bound the same way.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from functools import partial
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse, Response

from dupify.accounts.identity import (
    IdentityError,
    SupabaseAuth,
    VerifiedIdentity,
    linked_account,
)
from dupify.accounts.service import create_account
from dupify.audit.service import record_event
from dupify.config import SupabaseSettings
from dupify.db import after_commit, utcnow
from dupify.portal.context import PortalRefusal, Visitor, safe_next, visitor
from dupify.portal.routes_auth import AGE_REFUSAL, NAME_MAX
from dupify.portal.throttle import login_allowed, login_succeeded

router = APIRouter(include_in_schema=False)
TICKET_LIFETIME_S = 600
_clients: dict[tuple[object, ...], SupabaseAuth] = {}


def _auth(v: Visitor) -> SupabaseAuth:
    settings: SupabaseSettings = v.runtime.settings.supabase
    if not settings.enabled:
        raise PortalRefusal(404, "Not found", "Supabase sign-in is not set up here.")
    # One client per project and settings: its JWKS cache lives as long as the process.
    key = (
        settings.url,
        settings.audience,
        settings.anon_key.get_secret_value() if settings.anon_key else "",
        settings.jwt_secret.get_secret_value() if settings.jwt_secret else "",
        settings.jwks_cache_s,
        settings.timeout_s,
    )
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = SupabaseAuth(settings)
    return client


def _mac(v: Visitor, purpose: str, *parts: str) -> str:
    message = ":".join((purpose, v.csrf_token, *parts)).encode()
    return (
        base64.urlsafe_b64encode(hmac.new(v.secret, message, hashlib.sha256).digest())
        .rstrip(b"=")
        .decode()
    )


def _login_page(v: Visitor, message: str, *, status: int = 400, next_path: str = "") -> Response:
    return v.render(
        "login.html",
        status=status,
        errors={"sb_email": message},
        values={},
        next_path=safe_next(next_path),
    )


def _finish(v: Visitor, identity: VerifiedIdentity, next_path: str) -> Response:
    """Sign in the linked account, or ask a new person for a name and the 18+ confirmation."""
    account = linked_account(v.db, identity, utcnow())
    if account is None:
        payload = json.dumps(
            {"e": identity.email, "n": identity.name, "x": int(time.time()) + TICKET_LIFETIME_S}
        )
        encoded = base64.urlsafe_b64encode(payload.encode()).decode()
        return v.render(
            "supabase_signup.html",
            errors={},
            ticket=f"{encoded}.{_mac(v, 'supabase-ticket', encoded)}",
            email=identity.email,
            name=identity.name,
            next_path=safe_next(next_path),
        )
    if account.suspended_at is not None:
        record_event(v.db, "login_failed", account_id=account.id, detail="suspended")
        contact = v.runtime.settings.portal.contact_email
        return _login_page(v, f"This account is suspended. Contact {contact} to resolve it.")
    v.sign_in(account)
    record_event(v.db, "login", actor_account_id=account.id, account_id=account.id)
    return v.redirect(safe_next(next_path))


@router.post("/login/supabase")
async def password_sign_in(v: Visitor = Depends(visitor)) -> Response:
    auth = _auth(v)
    email, password = v.field("sb_email").lower(), v.form.get("sb_password", "")
    next_path = v.form.get("next", "")
    if not email or not password:
        return _login_page(v, "Enter the email address and password of your Supabase account.")
    if not await login_allowed(v.runtime, email, v.client_address):
        return _login_page(v, "Too many sign-in attempts. Wait a few minutes.", status=429)

    def run() -> Response:
        try:
            identity = auth.verify(auth.password_grant(email, password))
            return _finish(v, identity, next_path)
        except IdentityError as exc:
            record_event(v.db, "login_failed", detail="supabase")
            return _login_page(v, str(exc), next_path=next_path)

    response = await asyncio.to_thread(run)
    if response.status_code == 303:
        after_commit(v.db, partial(login_succeeded, v.runtime, email, v.client_address))
    return response


def _verifier(v: Visitor, flow: str, next_path: str) -> str:
    return _mac(v, "supabase-pkce", flow, next_path)


@router.get("/login/supabase/authorize")
def authorize(provider: str = "", next: str = "", v: Visitor = Depends(visitor)) -> Response:
    auth = _auth(v)
    if provider not in auth.settings.providers:
        raise PortalRefusal(404, "Not found", "That sign-in provider is not offered here.")
    next_path = safe_next(next)
    flow = secrets.token_urlsafe(16)
    callback = v.link("/login/supabase/callback?" + urlencode({"flow": flow, "next": next_path}))
    target = auth.authorize_url(provider, callback, _verifier(v, flow, next_path))
    return v.apply_cookies(RedirectResponse(target, status_code=303))


@router.get("/login/supabase/callback")
async def callback(
    code: str = "",
    flow: str = "",
    next: str = "",
    error_description: str = "",
    v: Visitor = Depends(visitor),
) -> Response:
    auth = _auth(v)
    if not code or not flow or len(code) > 512 or len(flow) > 64:
        message = error_description[:200] or "The sign-in was cancelled or did not complete."
        return _login_page(v, f"Supabase sign-in did not complete: {message}")
    next_path = safe_next(next)
    verifier = _verifier(v, flow, next_path)

    def run() -> Response:
        try:
            return _finish(v, auth.verify(auth.pkce_exchange(code, verifier)), next_path)
        except IdentityError as exc:
            record_event(v.db, "login_failed", detail="supabase")
            return _login_page(v, str(exc), next_path=next_path)

    return await asyncio.to_thread(run)


def _ticket(v: Visitor, ticket: str) -> dict[str, Any] | None:
    if ticket.count(".") != 1 or len(ticket) > 2000:
        return None
    encoded, mac = ticket.split(".")
    if not hmac.compare_digest(mac, _mac(v, "supabase-ticket", encoded)):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(encoded.encode()))
    except ValueError:
        return None
    if not isinstance(data, dict) or int(data.get("x", 0)) < time.time():
        return None
    return data


@router.post("/login/supabase/complete")
def complete_sign_up(v: Visitor = Depends(visitor)) -> Response:
    """The sign-up step of a verified Supabase identity new to Dupify (18+ kept)."""
    _auth(v)
    data = _ticket(v, v.form.get("ticket", ""))
    if data is None:
        return _login_page(v, "That sign-up step expired. Sign in with Supabase again.")
    name, next_path = v.field("name"), v.form.get("next", "")
    errors: dict[str, str] = {}
    if not name or len(name) > NAME_MAX:
        errors["name"] = f"Enter your name (at most {NAME_MAX} characters)."
    if v.form.get("age_confirmed") != "yes":
        errors["age_confirmed"] = AGE_REFUSAL
    if errors:
        return v.render(
            "supabase_signup.html",
            status=400,
            errors=errors,
            ticket=v.form.get("ticket", ""),
            email=data["e"],
            name=name,
            next_path=safe_next(next_path),
        )
    identity = VerifiedIdentity(subject="", email=str(data["e"]), email_verified=True, name=name)
    account = linked_account(v.db, identity, utcnow())  # made meanwhile, e.g. in another tab
    if account is None:
        account = create_account(v.db, email=str(data["e"]), name=name)
        account.email_verified_at = utcnow()  # Supabase Auth vouched for the address
    v.sign_in(account)
    record_event(v.db, "login", actor_account_id=account.id, account_id=account.id)
    return v.redirect(safe_next(next_path))
