"""/admin for operators: accounts with usage, plans, suspensions, abuse flags, mail, analytics.

Every action writes an audit row naming the operator (the abuse and announcement services write
their own; plan changes and deletions are recorded here).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dupify.abuse.service import list_flags, resolve_flag, set_account_suspended, set_key_suspended
from dupify.accounts.models import Account
from dupify.accounts.service import AccountError
from dupify.audit.service import list_events, record_event
from dupify.db import utcnow
from dupify.keys.models import ApiKey
from dupify.keys.service import KeyRequestError
from dupify.keys.signal import credentials_changed
from dupify.limits.ratelimit import month_of
from dupify.mail.announcements import announce
from dupify.mail.models import OutboxMessage
from dupify.mail.outbox import OutboxError
from dupify.portal.context import PortalRefusal, Visitor, operator
from dupify.privacy.lifecycle import AccountNotFound, delete_account_in_server
from dupify.usage.analytics import usage_by_day_plan_endpoint
from dupify.usage.models import RequestLog

router = APIRouter(include_in_schema=False)
LIST_LIMIT = 500
OUTBOX_LIMIT = 50
ANALYTICS_DAYS = 7


@dataclass(frozen=True)
class AccountRow:
    account: Account
    requests: int
    images: int
    keys: list[ApiKey]


def _overview(db: Session) -> dict[str, Any]:
    now = utcnow()
    month_start, _ = month_of(now)
    usage = {
        account_id: (int(requests), int(images or 0))
        for account_id, requests, images in db.execute(
            select(RequestLog.account_id, func.count(), func.sum(RequestLog.images))
            .where(RequestLog.created_at >= month_start, RequestLog.account_id.is_not(None))
            .group_by(RequestLog.account_id)
        )
    }
    accounts = list(db.scalars(select(Account).order_by(Account.created_at).limit(LIST_LIMIT)))
    keys: dict[str, list[ApiKey]] = {}
    for key in db.scalars(
        select(ApiKey)
        .where(ApiKey.account_id.in_([a.id for a in accounts]))
        .order_by(ApiKey.created_at)
    ):
        keys.setdefault(key.account_id, []).append(key)
    rows = [
        AccountRow(account, *usage.get(account.id, (0, 0)), keys.get(account.id, []))
        for account in accounts
    ]
    outbox = list(
        db.scalars(
            select(OutboxMessage).order_by(OutboxMessage.created_at.desc()).limit(OUTBOX_LIMIT)
        )
    )
    analytics = usage_by_day_plan_endpoint(
        db, since=now - timedelta(days=ANALYTICS_DAYS), until=now + timedelta(minutes=1)
    )
    return {
        "rows": rows,
        "flags": list_flags(db),
        "outbox": outbox,
        "analytics": analytics,
        "events": list_events(db, limit=30),
        "month_start": month_start.date(),
    }


@router.get("/admin")
async def admin_page(v: Visitor = Depends(operator)) -> Response:
    await v.runtime.recorder.flush()
    overview = await asyncio.to_thread(_overview, v.db)
    return v.render("admin.html", plans=sorted(v.runtime.settings.plans), **overview)


def _actor(v: Visitor) -> str:
    assert v.account is not None
    return v.account.id


@router.post("/admin/accounts/{account_id}/plan")
def change_plan(account_id: str, v: Visitor = Depends(operator)) -> Response:
    plan = v.field("plan")
    if plan not in v.runtime.settings.plans:
        raise PortalRefusal(400, "Unknown plan", "Choose one of this deployment's plans.")
    account = v.db.get(Account, account_id)
    if account is None:
        raise PortalRefusal(404, "No such account", "There is no account with that id.")
    if account.plan != plan:
        record_event(
            v.db,
            "plan_changed",
            actor_account_id=_actor(v),
            account_id=account.id,
            detail=f"{account.plan} -> {plan}",
        )
        account.plan = plan
        credentials_changed(v.db)  # key caches hold the plan: the new limits apply at once
    return v.redirect("/admin", notice="admin_done")


@router.post("/admin/accounts/{account_id}/{action}")
async def account_action(account_id: str, action: str, v: Visitor = Depends(operator)) -> Response:
    if action == "delete":
        if account_id == _actor(v):
            raise PortalRefusal(400, "Not here", "Delete your own account on the account page.")
        try:
            await delete_account_in_server(
                v.runtime, v.db, account_id, initiated_by="operator", operator_id=_actor(v)
            )
        except AccountNotFound as exc:
            raise PortalRefusal(
                404, "No such account", "There is no account with that id."
            ) from exc
        return v.redirect("/admin", notice="admin_done")
    if action not in ("suspend", "unsuspend"):
        raise PortalRefusal(404, "No such action", "That operator action does not exist.")
    if account_id == _actor(v):
        raise PortalRefusal(400, "Not here", "Operators cannot suspend their own account.")

    suspend = action == "suspend"
    try:
        await asyncio.to_thread(
            set_account_suspended, v.db, account_id, suspend, actor_account_id=_actor(v)
        )
    except AccountError as exc:
        raise PortalRefusal(404, "No such account", "There is no account with that id.") from exc
    return v.redirect("/admin", notice="admin_done")


@router.post("/admin/keys/{key_id}/{action}")
def key_action(key_id: str, action: str, v: Visitor = Depends(operator)) -> Response:
    if action not in ("suspend", "unsuspend"):
        raise PortalRefusal(404, "No such action", "That operator action does not exist.")
    try:
        set_key_suspended(v.db, key_id, action == "suspend", actor_account_id=_actor(v))
    except KeyRequestError as exc:
        raise PortalRefusal(404, "No such key", "There is no key with that id.") from exc
    return v.redirect("/admin", notice="admin_done")


@router.post("/admin/flags/{flag_id}/resolve")
def resolve(flag_id: int, v: Visitor = Depends(operator)) -> Response:
    try:
        resolve_flag(v.db, flag_id, actor_account_id=_actor(v))
    except KeyRequestError as exc:
        raise PortalRefusal(404, "No such flag", "There is no abuse flag with that id.") from exc
    return v.redirect("/admin", notice="admin_done")


@router.post("/admin/announce")
def send_announcement(v: Visitor = Depends(operator)) -> Response:
    try:
        announce(
            v.db,
            subject=v.field("subject"),
            body=v.form.get("body", ""),
            actor_account_id=_actor(v),
            link_base=v.link(""),
        )
    except OutboxError as exc:
        raise PortalRefusal(
            400, "The announcement was not sent", str(exc).capitalize() + "."
        ) from exc
    return v.redirect("/admin", notice="admin_done")
