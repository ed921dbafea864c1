"""Sign-up, email confirmation, sign-in, sign-out and password reset."""

from __future__ import annotations

import asyncio
from functools import partial

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from dupify.accounts.models import Account
from dupify.accounts.service import AccountError, create_account, find_by_email, normalise_email
from dupify.audit.service import record_event
from dupify.db import after_commit, utcnow
from dupify.portal import mails
from dupify.portal.context import Visitor, member, safe_next, visitor
from dupify.portal.passwords import (
    PasswordRuleError,
    check_new_password,
    hash_password,
    needs_rehash,
    verify_password,
)
from dupify.portal.sessions import end_all_sessions
from dupify.portal.throttle import (
    login_allowed,
    login_succeeded,
    reset_allowed,
    signup_allowed,
    signup_notice_due,
)
from dupify.portal.tokens import find_token, revoke_tokens, use_token

router = APIRouter(include_in_schema=False)
NAME_MAX = 200
AGE_REFUSAL = (
    "You must confirm that you are 18 or older: Dupify is not for people under 18 "
    "(see section 8 of the privacy policy)."
)


@router.get("/")
def home(v: Visitor = Depends(visitor)) -> Response:
    return v.render("index.html", base_url=v.link("").rstrip("/"))


@router.get("/signup")
def signup_form(v: Visitor = Depends(visitor)) -> Response:
    if v.account is not None:
        return v.redirect("/dashboard")
    return v.render("signup.html", errors={}, values={})


def _signup_errors(v: Visitor) -> tuple[dict[str, str], str]:
    errors: dict[str, str] = {}
    email = ""
    try:
        email = normalise_email(v.field("email"))
    except AccountError:
        errors["email"] = "Enter a valid email address, like name@example.com."
    name = v.field("name")
    if not name:
        errors["name"] = "Enter your name."
    elif len(name) > NAME_MAX:
        errors["name"] = f"The name must be at most {NAME_MAX} characters."
    try:
        check_new_password(v.form.get("password", ""), email=email)
    except PasswordRuleError as exc:
        errors["password"] = str(exc)
    if v.form.get("age_confirmed") != "yes":
        errors["age_confirmed"] = AGE_REFUSAL
    return errors, email


@router.post("/signup")
async def signup(v: Visitor = Depends(visitor)) -> Response:
    errors, email = _signup_errors(v)
    values = {"email": v.field("email"), "name": v.field("name")}
    values["age_confirmed"] = v.form.get("age_confirmed", "")
    if errors:
        return v.render("signup.html", status=400, errors=errors, values=values)
    if not await signup_allowed(v.runtime, email, v.client_address):
        message = "Too many sign-up attempts. Wait a few minutes and try again."
        return v.render("signup.html", status=429, errors={"email": message}, values=values)
    existing_id = await asyncio.to_thread(_register, v, email)
    # Once per address per window, so repeated sign-ups cannot flood the holder's inbox.
    if existing_id is not None and await signup_notice_due(v.runtime, email):
        await asyncio.to_thread(_send_signup_attempt_notice, v, existing_id)
    # The same answer whether or not the address was taken, so the form reveals no one's address.
    return v.redirect("/login", notice="signed_up")


def _register(v: Visitor, email: str) -> str | None:
    """Create the account and mail its confirmation link; if the address is taken, create
    nothing and return that account's id."""
    password_hash = hash_password(v.form["password"])
    existing = find_by_email(v.db, email)
    if existing is not None:
        return existing.id
    account = create_account(v.db, email=email, name=v.field("name"))
    account.password_hash = password_hash
    _send_verification(v, account)
    return None


def _send_signup_attempt_notice(v: Visitor, account_id: str) -> None:
    account = v.db.get(Account, account_id)
    if account is not None:
        mails.send_signup_attempt_notice(v.db, account, v.link("/login"))


def _send_verification(v: Visitor, account: Account) -> None:
    mails.send_verification(v.db, account, v.one_time_link(account, "verify_email"))


@router.get("/verify-email/{token}")
def verify_email(token: str, v: Visitor = Depends(visitor)) -> Response:
    """Confirms a sign-up address, or a new address that then replaces the old one."""
    db = v.db
    row = find_token(
        db, token, purposes=("verify_email", "change_email"), secret=v.secret, now=utcnow()
    )
    account = db.get(Account, row.account_id) if row is not None else None
    if row is None or account is None:
        return v.render(
            "message.html",
            status=400,
            title="This link does not work",
            message="The link is invalid, already used or expired. Ask for a new one.",
            link="/login",
            link_text="Sign in",
        )
    use_token(row, utcnow())
    if row.purpose == "change_email":
        assert row.new_email is not None
        if find_by_email(db, row.new_email) is not None:
            return v.render(
                "message.html",
                status=409,
                title="That address is taken",
                message="Another account uses that email address now; nothing was changed.",
                link="/account",
                link_text="Back to your account",
            )
        account.email = row.new_email
        # Reset links went to the old address: its holder no longer speaks for the account.
        revoke_tokens(db, account.id, ("reset_password",))
        record_event(db, "email_changed", actor_account_id=account.id, account_id=account.id)
    account.email_verified_at = utcnow()
    changed = row.purpose == "change_email"
    if v.account is not None and v.account.id == account.id:
        if changed:
            return v.redirect("/account", notice="email_changed")
        return v.redirect("/dashboard")
    return v.redirect("/login", notice="email_changed" if changed else "verified")


@router.post("/verify-email/resend")
def resend_verification(v: Visitor = Depends(member)) -> Response:
    assert v.account is not None
    if v.account.email_verified_at is None:
        _send_verification(v, v.account)
    return v.redirect("/dashboard", notice="verification_sent")


@router.get("/login")
def login_form(next: str | None = None, v: Visitor = Depends(visitor)) -> Response:
    if v.account is not None:
        return v.redirect(safe_next(next))
    return v.render("login.html", errors={}, values={}, next_path=safe_next(next))


@router.post("/login")
async def login(v: Visitor = Depends(visitor)) -> Response:
    email = v.field("email").lower()
    next_path = safe_next(v.form.get("next"))
    values = {"email": v.field("email")}
    if not await login_allowed(v.runtime, email, v.client_address):
        message = (
            "Too many sign-in attempts for this address. Wait a few minutes, or reset your "
            "password."
        )
        return v.render(
            "login.html", status=429, errors={"email": message}, values=values, next_path=next_path
        )
    signed_in = await asyncio.to_thread(_check_credentials, v, email, v.form.get("password", ""))
    if isinstance(signed_in, str):
        return v.render(
            "login.html",
            status=400,
            errors={"password": signed_in},
            values=values,
            next_path=next_path,
        )
    # Only a sign-in that was saved clears the failure count.
    after_commit(v.db, partial(login_succeeded, v.runtime, email, v.client_address))
    return v.redirect(next_path)


def _check_credentials(v: Visitor, email: str, password: str) -> Account | str:
    """Signs in and returns the account, or returns the message to show."""
    wrong = "The email address or the password is not right."
    db = v.db
    account = find_by_email(db, email) if email else None
    matches = verify_password(account.password_hash if account else None, password)
    if account is None or not matches:
        record_event(db, "login_failed", account_id=account.id if account else None)
        return wrong
    if account.suspended_at is not None:
        record_event(db, "login_failed", account_id=account.id, detail="suspended")
        contact = v.runtime.settings.portal.contact_email
        return f"This account is suspended. Contact {contact} to resolve it."
    if account.email_verified_at is None:
        return (
            "Confirm your email address first: open the link we emailed you, or reset "
            "your password to get a new link."
        )
    if account.password_hash and needs_rehash(account.password_hash):
        account.password_hash = hash_password(password)
    v.sign_in(account)
    record_event(db, "login", actor_account_id=account.id, account_id=account.id)
    return account


@router.post("/logout")
def logout(v: Visitor = Depends(visitor)) -> Response:
    if v.account is not None:
        record_event(v.db, "logout", actor_account_id=v.account.id, account_id=v.account.id)
    v.sign_out()
    return v.redirect("/login", notice="signed_out")


@router.get("/reset-password")
def reset_request_form(v: Visitor = Depends(visitor)) -> Response:
    return v.render("reset_request.html", errors={}, values={})


@router.post("/reset-password")
async def reset_request(v: Visitor = Depends(visitor)) -> Response:
    email = v.field("email").lower()
    if not email or "@" not in email:
        return v.render(
            "reset_request.html",
            status=400,
            errors={"email": "Enter the email address of your account."},
            values={"email": email},
        )
    if not await reset_allowed(v.runtime, email, v.client_address):
        return v.render(
            "reset_request.html",
            status=429,
            errors={"email": "Too many reset requests. Wait a few minutes and try again."},
            values={"email": email},
        )
    await asyncio.to_thread(_send_reset, v, email)
    return v.redirect("/login", notice="reset_sent")


def _send_reset(v: Visitor, email: str) -> None:
    account = find_by_email(v.db, email)
    if account is None or account.suspended_at is not None:
        return
    mails.send_password_reset(v.db, account, v.one_time_link(account, "reset_password"))
    record_event(v.db, "password_reset_requested", account_id=account.id)


def _invalid_link(v: Visitor) -> Response:
    return v.render(
        "message.html",
        status=400,
        title="This link does not work",
        message="The reset link is invalid, already used or expired. Ask for a new one.",
        link="/reset-password",
        link_text="Ask for a new link",
    )


@router.get("/reset-password/{token}")
def reset_form(token: str, v: Visitor = Depends(visitor)) -> Response:
    row = find_token(v.db, token, purposes=("reset_password",), secret=v.secret, now=utcnow())
    if row is None:
        return _invalid_link(v)
    return v.render("reset_form.html", errors={}, token=token)


@router.post("/reset-password/{token}")
def reset_password(token: str, v: Visitor = Depends(visitor)) -> Response:
    password = v.form.get("password", "")
    db = v.db
    row = find_token(db, token, purposes=("reset_password",), secret=v.secret, now=utcnow())
    account = db.get(Account, row.account_id) if row is not None else None
    if row is None or account is None:
        return _invalid_link(v)
    try:
        check_new_password(password, email=account.email)
    except PasswordRuleError as exc:
        return v.render("reset_form.html", status=400, errors={"password": str(exc)}, token=token)
    use_token(row, utcnow())
    # Whoever knew the old password may have started moving the account to their address.
    revoke_tokens(db, account.id, ("change_email",))
    account.password_hash = hash_password(password)
    # The link proved control of the mailbox, which is what confirming the address means.
    account.email_verified_at = account.email_verified_at or utcnow()
    end_all_sessions(db, account.id)
    record_event(db, "password_changed", actor_account_id=account.id, account_id=account.id)
    mails.send_password_changed(db, account)
    v.sign_out()
    return v.redirect("/login", notice="password_reset")
