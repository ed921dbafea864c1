"""Server-side portal sessions: a random token in the cookie, only its keyed hash in the database.

Unlike a signed cookie, a row can be revoked: logout, a password change and account deletion end
sessions at once, and a session that is idle or past its lifetime is refused and removed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dupify.accounts.models import Account, WebSession
from dupify.config import PortalSettings

# last_seen_at is written at most this often, so page views are not one write each.
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class CookieNames:
    session: str
    csrf: str


# Over TLS the __Host- prefix makes the browser insist on Secure, Path=/ and no Domain, so a
# sibling subdomain cannot plant or overwrite these cookies.
TLS_COOKIES = CookieNames(session="__Host-dupify_session", csrf="__Host-dupify_csrf")
PLAIN_COOKIES = CookieNames(session="dupify_session", csrf="dupify_csrf")


def cookie_names(secure: bool) -> CookieNames:
    return TLS_COOKIES if secure else PLAIN_COOKIES


def session_id_for(token: str, secret: bytes) -> str:
    """The row id for a cookie token: HMAC-SHA256, so a database leak yields no usable cookie."""
    return hmac.new(secret, b"web-session:" + token.encode(), hashlib.sha256).hexdigest()


def start_session(
    db: Session, account_id: str, *, secret: bytes, settings: PortalSettings, now: datetime
) -> tuple[str, WebSession]:
    """A new session for the account; returns the cookie token (shown to the browser only)."""
    token = secrets.token_urlsafe(32)
    row = WebSession(
        id=session_id_for(token, secret),
        account_id=account_id,
        created_at=now,
        last_seen_at=now,
        expires_at=now + settings.session_lifetime,
    )
    db.add(row)
    db.flush()
    return token, row


def load_session(
    db: Session, token: str, *, secret: bytes, settings: PortalSettings, now: datetime
) -> tuple[WebSession, Account] | None:
    """The live session and its account, or None (an expired or idle session is removed).

    Like `touch_session`, this flushes nothing: the removal goes out with the page's own writes,
    so on SQLite the request does not hold the write lock before it needs it.
    """
    row = db.execute(
        select(WebSession, Account)
        .join(Account, Account.id == WebSession.account_id)
        .where(WebSession.id == session_id_for(token, secret))
    ).first()
    if row is None:
        return None
    web_session, account = row[0], row[1]
    if (
        web_session.expires_at <= now
        or web_session.last_seen_at + settings.session_idle_timeout <= now
    ):
        db.delete(web_session)
        return None
    return web_session, account


def touch_session(web_session: WebSession, now: datetime) -> None:
    """Note that the session was used (for the idle timeout), written at the next flush."""
    if now - web_session.last_seen_at >= _TOUCH_EVERY:
        web_session.last_seen_at = now


def end_session(db: Session, session_id: str) -> None:
    db.execute(delete(WebSession).where(WebSession.id == session_id))


def end_all_sessions(db: Session, account_id: str) -> int:
    """End every session of the account (password change, deletion, suspension)."""
    result = db.execute(delete(WebSession).where(WebSession.account_id == account_id))
    return int(getattr(result, "rowcount", 0) or 0)
