"""The account page: correct name and email, change password, preferences, export, delete."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from dupify.accounts.models import Account
from dupify.accounts.service import AccountError, find_by_email, normalise_email
from dupify.audit.service import record_event
from dupify.db import utcnow
from dupify.portal import mails
from dupify.portal.context import PortalRefusal, Visitor, member
from dupify.portal.passwords import (
    PasswordRuleError,
    check_new_password,
    hash_password,
    verify_password,
)
from dupify.portal.routes_auth import NAME_MAX
from dupify.portal.sessions import end_all_sessions
from dupify.portal.throttle import password_check_allowed, password_check_succeeded
from dupify.portal.tokens import revoke_tokens
from dupify.privacy.lifecycle import AccountNotFound, delete_account_in_server, export_account
from dupify.privacy.policy import acknowledge_policy

router = APIRouter(include_in_schema=False)
NOT_CURRENT_MESSAGE = "That is not your current password."
TOO_MANY_CHECKS_MESSAGE = (
    "Too many password attempts for this account. Wait a few minutes, or sign out and reset "
    "your password."
)


def _page(
    v: Visitor,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    return v.render("account.html", status=status, errors=errors or {}, values=values or {})


def _current(v: Visitor) -> Account:
    """The signed-in account, in the request's unit of work (so changes to it are saved)."""
    assert v.account is not None
    account = v.db.get(Account, v.account.id)
    if account is None:
        raise PortalRefusal(404, "No such account", "This account no longer exists.")
    return account


async def _password_refusal(
    v: Visitor, field: str, values: dict[str, str] | None = None
) -> Response | None:
    """None when the form's `field` holds the account's current password; otherwise the page
    that says why not (429 once this account's checks in the window are used up)."""
    assert v.account is not None
    account_id = v.account.id
    if not await password_check_allowed(v.runtime, account_id, v.client_address):
        return _page(v, status=429, errors={field: TOO_MANY_CHECKS_MESSAGE}, values=values)

    def matches() -> bool:
        return verify_password(_current(v).password_hash, v.form.get(field, ""))

    if not await asyncio.to_thread(matches):
        return _page(v, status=400, errors={field: NOT_CURRENT_MESSAGE}, values=values)
    await password_check_succeeded(v.runtime, account_id)
    return None


@router.get("/account")
def account_page(v: Visitor = Depends(member)) -> Response:
    return _page(v)


@router.post("/account/profile")
def save_profile(v: Visitor = Depends(member)) -> Response:
    name = v.field("name")
    if not name or len(name) > NAME_MAX:
        message = "Enter your name." if not name else f"At most {NAME_MAX} characters."
        return _page(v, status=400, errors={"name": message}, values={"name": name})
    _current(v).name = name
    return v.redirect("/account", notice="profile_saved")


@router.post("/account/email")
async def change_email(v: Visitor = Depends(member)) -> Response:
    """Sends a link to the new address; the account keeps the old one until it is opened."""
    values = {"new_email": v.field("new_email")}
    try:
        new_email = normalise_email(v.field("new_email"))
    except AccountError:
        return _page(
            v, status=400, errors={"new_email": "Enter a valid email address."}, values=values
        )
    refusal = await _password_refusal(v, "email_password", values)
    if refusal is not None:
        return refusal
    if not await asyncio.to_thread(_send_email_change, v, new_email):
        return _page(
            v, status=400, errors={"new_email": "That is already your address."}, values=values
        )
    # The same answer when the address is taken, so the form tells no one who has an account.
    return v.redirect("/account", notice="email_change_sent")


def _send_email_change(v: Visitor, new_email: str) -> bool:
    """Mail a confirmation link to `new_email` unless another account has it; False when it is
    already this account's address."""
    account = _current(v)
    if new_email == account.email:
        return False
    if find_by_email(v.db, new_email) is None:
        link = v.one_time_link(account, "change_email", new_email)
        mails.send_email_change(v.db, account, new_email, link)
    return True


@router.post("/account/password")
async def change_password(v: Visitor = Depends(member)) -> Response:
    refusal = await _password_refusal(v, "current_password")
    if refusal is not None:
        return refusal
    return await asyncio.to_thread(_set_new_password, v)


def _set_new_password(v: Visitor) -> Response:
    new_password = v.form.get("new_password", "")
    account = _current(v)
    try:
        check_new_password(new_password, email=account.email)
    except PasswordRuleError as exc:
        return _page(v, status=400, errors={"new_password": str(exc)})
    account.password_hash = hash_password(new_password)
    end_all_sessions(v.db, account.id)
    # Whoever knew the old password may have started a reset or a move to their address.
    revoke_tokens(v.db, account.id, ("reset_password", "change_email"))
    record_event(v.db, "password_changed", actor_account_id=account.id, account_id=account.id)
    mails.send_password_changed(v.db, account)
    # Every session ended, this one included; the browser that changed it gets a new one.
    v.session_id = None
    v.sign_in(account)
    return v.redirect("/account", notice="password_changed")


@router.post("/account/preferences")
def save_preferences(v: Visitor = Depends(member)) -> Response:
    account = _current(v)
    account.pref_announcements = v.form.get("pref_announcements") == "yes"
    account.pref_usage_analytics = v.form.get("pref_usage_analytics") == "yes"
    return v.redirect("/account", notice="preferences_saved")


@router.post("/account/export")
async def download_export(v: Visitor = Depends(member)) -> Response:
    """Every stored datum about the account, as one JSON file (PRIVACY row 15)."""
    assert v.account is not None
    account_id = v.account.id
    await v.runtime.recorder.flush()

    def export() -> dict[str, Any]:
        record_event(v.db, "export", actor_account_id=account_id, account_id=account_id)
        v.db.flush()
        return export_account(v.db, account_id)

    try:
        data = await asyncio.to_thread(export)
    except AccountNotFound as exc:
        raise PortalRefusal(404, "No such account", "This account no longer exists.") from exc
    body = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    filename = f"dupify-export-{utcnow():%Y%m%d-%H%M%S}.json"
    response = Response(
        body,
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )
    v.apply_cookies(response)
    return response


@router.post("/account/delete")
async def delete_own_account(v: Visitor = Depends(member)) -> Response:
    """Deletes the account, its keys (refused from the next request), sessions, logs and cache."""
    assert v.account is not None
    account_id = v.account.id
    if v.form.get("confirm_delete") != "yes":
        message = "Tick the box to confirm that the deletion is permanent."
        return _page(v, status=400, errors={"confirm_delete": message})
    refusal = await _password_refusal(v, "delete_password")
    if refusal is not None:
        return refusal
    try:
        await delete_account_in_server(v.runtime, v.db, account_id, initiated_by="self")
    except AccountNotFound as exc:
        raise PortalRefusal(404, "No such account", "This account no longer exists.") from exc
    await asyncio.to_thread(v.sign_out)
    return v.redirect("/", notice="account_deleted")


@router.post("/privacy/acknowledge")
def acknowledge(v: Visitor = Depends(member)) -> Response:
    assert v.account is not None
    version = v.runtime.settings.policy_version
    if v.form.get("version") == str(version):
        acknowledge_policy(v.db, v.account.id, version)
        v.policy_banner = None
    return v.redirect("/dashboard", notice="policy_acknowledged")
