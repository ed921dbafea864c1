"""The visitor of a portal page: session, CSRF, the submitted form, and how pages answer.

Every portal route depends on `visitor` (anyone), `member` (signed in) or `operator` (role admin).
The dependency opens the request's unit of work (`Visitor.db`, committed after the route and
before the response), loads the server-side session, makes sure the browser holds a CSRF cookie
bound to it, and for every POST reads the form (capped, in memory) and refuses it unless the CSRF
token matches: no route can forget the check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session

from dupify.accounts.models import Account
from dupify.api.deps import get_runtime
from dupify.db import unit_of_work, utcnow
from dupify.errors import ApiError
from dupify.images.inputs import read_capped_body, read_request_body
from dupify.mail.links import TOKEN_SLOT, SealedLink
from dupify.portal import csrf
from dupify.portal.headers import is_tls
from dupify.portal.notices import NOTICES
from dupify.portal.sessions import (
    CookieNames,
    cookie_names,
    end_session,
    load_session,
    start_session,
    touch_session,
)
from dupify.portal.tokens import issue_token
from dupify.privacy.policy import needs_policy_acknowledgement
from dupify.server.client_address import client_address
from dupify.server.runtime import Runtime

MAX_FORM_BYTES = 256 * 1024
TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


class PortalRedirect(Exception):
    """Leave the page for another (e.g. to sign in first)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class PortalRefusal(Exception):
    """A request the portal answers with an error page (message is safe to show)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


@dataclass
class _Cookie:
    name: str
    value: str | None  # None deletes the cookie
    max_age: int | None = None


@dataclass
class Visitor:
    """One request to the portal, with what the page needs to answer it."""

    request: Request
    runtime: Runtime
    # The request's unit of work: use it in a worker thread (a `def` route, `asyncio.to_thread`).
    db: Session
    secure: bool
    cookies: CookieNames
    account: Account | None = None
    session_id: str | None = None
    csrf_token: str = ""
    # The policy version to show a banner for, until the account acknowledges it (PRIVACY row 18).
    policy_banner: int | None = None
    form: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, bytes]] = field(default_factory=list)
    _pending: list[_Cookie] = field(default_factory=list)

    @property
    def secret(self) -> bytes:
        return self.runtime.secret

    @property
    def client_address(self) -> str:
        """Who is asking, for the sign-in throttles (see `dupify.server.client_address`)."""
        return client_address(self.request, self.runtime.settings.portal.trust_forwarded_proto)

    def field(self, name: str, default: str = "") -> str:
        return self.form.get(name, default).strip()

    def link(self, path: str) -> str:
        """An absolute link for an email: the configured public URL, else this request's base."""
        base = self.runtime.settings.portal.public_url or str(self.request.base_url)
        return base.rstrip("/") + path

    def one_time_link(
        self, account: Account, purpose: str, new_email: str | None = None
    ) -> SealedLink:
        """A fresh emailed link of `purpose` (see `dupify.portal.tokens`) for the account, or for
        moving it to `new_email`; the account's earlier links of that purpose stop working.
        Sealed: its token exists only once the sender renders the message (dupify.mail.links)."""
        portal = self.runtime.settings.portal
        reset = purpose == "reset_password"
        seed = issue_token(
            self.db,
            account_id=account.id,
            purpose=purpose,
            lifetime=portal.reset_link_lifetime if reset else portal.email_link_lifetime,
            secret=self.secret,
            now=utcnow(),
            new_email=new_email,
        )
        path = ("/reset-password/" if reset else "/verify-email/") + TOKEN_SLOT
        return SealedLink(self.link(path), seed)

    def sign_in(self, account: Account) -> None:
        """Start a new session (rotated: any session this browser had ends) with a fresh CSRF."""
        if self.session_id is not None:
            end_session(self.db, self.session_id)
        portal = self.runtime.settings.portal
        token, row = start_session(
            self.db, account.id, secret=self.secret, settings=portal, now=utcnow()
        )
        self.account, self.session_id = account, row.id
        lifetime = int(portal.session_lifetime.total_seconds())
        self._pending.append(_Cookie(self.cookies.session, token, lifetime))
        self.issue_csrf()

    def sign_out(self) -> None:
        """End this browser's session, if it has one, and clear the cookie."""
        if self.session_id is not None:
            end_session(self.db, self.session_id)
        self.account, self.session_id = None, None
        self._pending.append(_Cookie(self.cookies.session, None))
        self.issue_csrf()

    def issue_csrf(self) -> None:
        """A new CSRF cookie and form token, bound to the current session (or to none)."""
        self.csrf_token = csrf.new_token(self.secret, self.session_id or csrf.ANONYMOUS)
        self._pending.append(_Cookie(self.cookies.csrf, self.csrf_token))

    def apply_cookies(self, response: Response) -> Response:
        for cookie in self._pending:
            if cookie.value is None:
                response.delete_cookie(
                    cookie.name, path="/", secure=self.secure, httponly=True, samesite="lax"
                )
            else:
                response.set_cookie(
                    cookie.name,
                    cookie.value,
                    max_age=cookie.max_age,
                    path="/",
                    secure=self.secure,
                    httponly=True,
                    samesite="lax",
                )
        return response

    def render(self, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
        notice = NOTICES.get(self.request.query_params.get("notice", ""))
        page = TEMPLATES.get_template(template).render(
            account=self.account,
            csrf_token=self.csrf_token,
            notice=values.pop("notice", notice),
            path=self.request.url.path,
            policy_banner=self.policy_banner,
            supabase=self.runtime.settings.supabase,
            **values,
        )
        response = HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})
        self.apply_cookies(response)
        return response

    def redirect(self, path: str, *, notice: str | None = None) -> Response:
        target = path if notice is None else f"{path}?{urlencode({'notice': notice})}"
        return self.apply_cookies(RedirectResponse(target, status_code=303))


def safe_next(target: str | None) -> str:
    """Only a path on this site: an open redirect would turn the login page into a phishing aid."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/dashboard"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/dashboard"
    return target


def _load_account(
    db: Session, runtime: Runtime, token: str
) -> tuple[str, Account, int | None] | None:
    now = utcnow()
    found = load_session(
        db, token, secret=runtime.secret, settings=runtime.settings.portal, now=now
    )
    if found is None:
        return None
    web_session, account = found
    if account.suspended_at is not None:
        return None
    version = runtime.settings.policy_version
    banner = version if needs_policy_acknowledgement(db, account.id, version) else None
    # Last: a query after it would flush the write now, not with the page's (`load_session`).
    touch_session(web_session, now)
    return web_session.id, account, banner


async def _read_form(request: Request, visitor: Visitor) -> None:
    """The POSTed form, urlencoded or multipart, refused (400) unless all its text is storable."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "multipart/form-data":
            body = await read_request_body(request, visitor.runtime.settings.limits)
            visitor.form, visitor.files = body.fields, body.files
        else:
            raw = await read_capped_body(request, MAX_FORM_BYTES)
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
            visitor.form = dict(pairs)
    except ApiError as exc:
        raise PortalRefusal(400, "The form could not be read", exc.message) from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise PortalRefusal(400, "The form could not be read", "Malformed form data.") from exc
    problem = _unstorable(text for pair in visitor.form.items() for text in pair)
    if problem is not None:
        raise PortalRefusal(400, "The form could not be read", f"The form holds {problem}.")


def _unstorable(texts: Iterable[str]) -> str | None:
    """What in `texts` a database cannot store, if anything: PostgreSQL text holds no NUL, and
    nothing that is not UTF-8 (a lone surrogate). Refused once here, for every way a form or an
    address is sent, not a database error (500) in whichever route stores or looks it up first."""
    for text in texts:
        if "\x00" in text:
            return "a NUL character"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "a character that is not valid Unicode"
    return None


def _same_origin(request: Request) -> bool:
    """A browser says where a POST came from; one from another site is refused outright."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def _unit_of_work(request: Request) -> AsyncIterator[Session]:
    """The page's unit of work (`dupify.db.unit_of_work`): committed after the route, before the
    response is sent, so a browser that sees the answer can rely on what it says was saved.

    A redirect to sign in is an answer, not a failure: what the request did is kept (ending an
    idle session, say); any other exception rolls everything back.
    """
    redirect: PortalRedirect | None = None
    async with unit_of_work(get_runtime(request).sessions) as db:
        try:
            yield db
        except PortalRedirect as exc:
            redirect = exc
    if redirect is not None:
        raise redirect


async def visitor(
    request: Request,
    # Scope "function": the unit of work ends before the response is sent, not after.
    db: Session = Depends(_unit_of_work, scope="function"),
) -> Visitor:
    runtime = get_runtime(request)
    query = request.query_params.multi_items()
    problem = _unstorable(
        [request.scope.get("path", ""), *(text for pair in query for text in pair)]
    )
    if problem is not None:
        raise PortalRefusal(400, "The address could not be read", f"The address holds {problem}.")
    secure = is_tls(request.scope, runtime.settings.portal)
    names = cookie_names(secure)
    current = Visitor(request=request, runtime=runtime, db=db, secure=secure, cookies=names)
    token = request.cookies.get(names.session)
    if token:
        found = await asyncio.to_thread(_load_account, db, runtime, token)
        if found is None:
            current.sign_out()
        else:
            current.session_id, current.account, current.policy_banner = found
    binding = current.session_id or csrf.ANONYMOUS
    cookie = request.cookies.get(names.csrf)
    if request.method == "POST":
        if not _same_origin(request):
            raise PortalRefusal(403, "Refused", "This form was sent from another site.")
        await _read_form(request, current)
        if not csrf.is_valid(runtime.secret, binding, cookie, current.form.get(csrf.FIELD)):
            raise PortalRefusal(
                403,
                "This form has expired",
                "The form's security token is missing or out of date (CSRF check). "
                "Go back, reload the page and send it again.",
            )
    if not current.csrf_token:
        if cookie and csrf.is_bound(runtime.secret, binding, cookie):
            current.csrf_token = cookie
        else:
            current.issue_csrf()
    return current


async def member(request: Request, current: Visitor = Depends(visitor)) -> Visitor:
    """A signed-in visitor; anyone else is sent to sign in and brought back afterwards."""
    if current.account is None:
        next_path = request.url.path if request.method == "GET" else "/dashboard"
        raise PortalRedirect(f"/login?{urlencode({'next': next_path})}")
    return current


async def operator(current: Visitor = Depends(member)) -> Visitor:
    assert current.account is not None
    if current.account.role != "admin":
        raise PortalRefusal(403, "Operators only", "This page is for the service's operators.")
    return current


def error_page(title: str, message: str, *, status: int) -> HTMLResponse:
    page = TEMPLATES.get_template("error.html").render(
        account=None, csrf_token="", notice=None, path="", title=title, message=message
    )
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})


def exception_handlers() -> dict[type[Exception], Callable[[Request, Exception], Any]]:
    async def on_redirect(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PortalRedirect)
        return RedirectResponse(exc.url, status_code=303)

    async def on_refusal(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PortalRefusal)
        return error_page(exc.title, exc.message, status=exc.status)

    return {PortalRedirect: on_redirect, PortalRefusal: on_refusal}
