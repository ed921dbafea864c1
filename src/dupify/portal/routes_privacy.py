"""/privacy (the policy this deployment enforces), /privacy/changes (what changed between the
versions, each kept with its text), and the one-click unsubscribe links of announcements."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from dupify.accounts.models import Account
from dupify.api.deps import get_runtime
from dupify.db import unit_of_work, utcnow
from dupify.images.inputs import read_capped_body
from dupify.mail import unsubscribe
from dupify.portal.context import TEMPLATES, Visitor, visitor
from dupify.portal.privacy import PolicyFacts, policy_facts, policy_text
from dupify.privacy.policy import policy_changes, record_policy_text

router = APIRouter(include_in_schema=False)


def _keep_this_version(v: Visitor, facts: PolicyFacts) -> None:
    """The policy's text as this version shows it is kept the first time it is shown."""
    html = TEMPLATES.get_template("_policy.html").render(facts=facts)
    record_policy_text(v.db, facts.version, policy_text(html))


@router.get("/privacy")
def privacy(v: Visitor = Depends(visitor)) -> Response:
    facts = policy_facts(v.runtime.settings)
    _keep_this_version(v, facts)
    return v.render("privacy.html", facts=facts)


@router.get("/privacy/changes")
def privacy_changes(v: Visitor = Depends(visitor)) -> Response:
    facts = policy_facts(v.runtime.settings)
    _keep_this_version(v, facts)
    return v.render("privacy_changes.html", facts=facts, changes=policy_changes(v.db))


def _page(title: str, message: str, *, status: int, token: str = "", email: str = "") -> Response:
    page = TEMPLATES.get_template("unsubscribe.html").render(
        account=None, csrf_token="", notice=None, path="/unsubscribe", policy_banner=None,
        title=title, message=message, token=token, email=email,
    )  # fmt: skip
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})


REFUSED = (
    "This unsubscribe link does not work",
    "The link is not one we sent, has expired, or was already used. You can still object to "
    "announcements on your account page, under “Preferences and objections”.",
)


@router.get("/unsubscribe/{token}")
async def unsubscribe_form(token: str, request: Request) -> Response:
    """The link opened in a browser: a button, so a mail scanner's GET changes nothing."""
    runtime = get_runtime(request)

    def look() -> str | None:
        with runtime.sessions() as db:
            row = unsubscribe.find(db, token, secret=runtime.secret, now=utcnow())
            account = db.get(Account, row.account_id) if row is not None else None
            return account.email if account is not None else None

    email = await asyncio.to_thread(look)
    if email is None:
        return _page(*REFUSED, status=400)
    return _page(
        "Stop announcements?",
        "Announcements are emails about new models and service news.",
        status=200,
        token=token,
        email=email,
    )


@router.post("/unsubscribe/{token}")
async def unsubscribe_now(token: str, request: Request) -> Response:
    """The objection, recorded without signing in: the link's token is the authority (no CSRF
    cookie: a mail client's RFC 8058 one-click POST carries none), and it works once."""
    runtime = get_runtime(request)
    await read_capped_body(request, 4096)  # "List-Unsubscribe=One-Click", or the page's button

    def record(db: Session) -> bool:
        now = utcnow()
        row = unsubscribe.find(db, token, secret=runtime.secret, now=now)
        account = db.get(Account, row.account_id) if row is not None else None
        if row is None or account is None:
            return False
        row.used_at = now  # once: a replayed link cannot object again after a re-subscription
        account.pref_announcements = False
        return True

    # Committed before the answer, so the page's "unsubscribed" is already true.
    async with unit_of_work(runtime.sessions) as db:
        done = await asyncio.to_thread(record, db)
    if not done:
        return _page(*REFUSED, status=400)
    return _page(
        "You are unsubscribed",
        "You will get no more announcements. Security and privacy-policy notices are still "
        "sent. You can change this on your account page.",
        status=200,
    )
