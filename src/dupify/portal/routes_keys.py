"""The API keys page: create (post/redirect/get; shown once, with quick-start snippets), list
with prefix, created and last used, revoke."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from dupify.db import utcnow
from dupify.keys.models import ApiKey
from dupify.keys.service import (
    SCOPES,
    CreatedKey,
    KeyRequestError,
    create_key,
    list_keys,
    revoke_key,
)
from dupify.portal import reveal
from dupify.portal.context import PortalRefusal, Visitor, member
from dupify.portal.snippets import quick_start

router = APIRouter(include_in_schema=False)
EXPIRY_CHOICES = {"never": None, "30": 30, "90": 90, "365": 365}
NAME_MAX = 100


def key_state(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    if key.suspended_at is not None:
        return "suspended"
    return "active"


def _page(
    v: Visitor,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, object] | None = None,
    created: CreatedKey | None = None,
    spent: bool = False,
) -> Response:
    assert v.account is not None
    keys = list_keys(v.db, v.account.id)
    now = utcnow()
    return v.render(
        "keys.html",
        status=status,
        keys=sorted(keys, key=lambda key: key.created_at, reverse=True),
        states={key.id: key_state(key, now) for key in keys},
        scopes=SCOPES,
        expiry_choices=EXPIRY_CHOICES,
        errors=errors or {},
        values=values or {"scopes": list(SCOPES), "expiry": "never"},
        created=created,
        spent=spent,
        quick_start_sections=quick_start(
            v.link(""), created.secret if created else None, v.runtime.settings.default_model
        )
        if created
        else None,
    )


def _cookie_token(v: Visitor) -> str:
    return v.request.cookies.get(v.cookies.session, "")


@router.get("/keys")
def keys_page(
    reveal_ticket: str = Query("", alias="reveal"), v: Visitor = Depends(member)
) -> Response:
    assert v.account is not None
    if not reveal_ticket:
        return _page(v)
    shown = reveal.open_ticket(
        v.db,
        reveal_ticket,
        account_id=v.account.id,
        server_secret=v.secret,
        cookie_token=_cookie_token(v),
        now=utcnow(),
    )
    record = v.db.get(ApiKey, shown.key_id) if shown is not None else None
    if shown is None or record is None or record.account_id != v.account.id:
        return _page(v, spent=True)
    return _page(v, created=CreatedKey(record=record, secret=shown.secret))


@router.post("/keys")
def create_key_from_form(v: Visitor = Depends(member)) -> Response:
    assert v.account is not None
    name = v.field("name")
    scopes = [scope for scope in SCOPES if v.form.get(f"scope_{scope}") == "yes"]
    expiry = v.form.get("expiry", "never")
    values: dict[str, object] = {"name": name, "scopes": scopes, "expiry": expiry}
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "Give the key a name, e.g. the app or server that will use it."
    elif len(name) > NAME_MAX:
        errors["name"] = f"The name must be at most {NAME_MAX} characters."
    if not scopes:
        errors[f"scope_{SCOPES[0]}"] = "Choose at least one scope."
    if expiry not in EXPIRY_CHOICES:
        errors["expiry"] = "Choose one of the offered expiry periods."
    if v.account.email_verified_at is None:
        errors["name"] = "Confirm your email address before creating keys."
    if errors:
        return _page(v, status=400, errors=errors, values=values)
    days = EXPIRY_CHOICES[expiry]
    created = create_key(
        v.db,
        v.account,
        secret=v.secret,
        name=name,
        scopes=scopes,
        expires_in=timedelta(days=days) if days else None,
        actor_account_id=v.account.id,  # create_key writes the key_created audit row
    )
    # Post/redirect/get: a reload repeats the GET (which shows the key once), never this POST.
    ticket = reveal.seal(
        v.db,
        account_id=v.account.id,
        key_id=created.record.id,
        key_secret=created.secret,
        server_secret=v.secret,
        cookie_token=_cookie_token(v),
        now=utcnow(),
    )
    return v.redirect(f"/keys?{urlencode({'reveal': ticket})}")


@router.post("/keys/{key_id}/revoke")
def revoke_key_from_form(key_id: str, v: Visitor = Depends(member)) -> Response:
    assert v.account is not None
    try:
        # Scoped to the signed-in account: another account's key id is simply not found.
        # revoke_key writes the key_revoked audit row (once, on the first revocation).
        revoke_key(v.db, key_id, account_id=v.account.id, actor_account_id=v.account.id)
    except KeyRequestError as exc:
        raise PortalRefusal(404, "No such key", "You have no API key with that id.") from exc
    return v.redirect("/keys", notice="key_revoked")
