"""One-click unsubscribe from announcements (RFC 8058): the link in the body and the
`List-Unsubscribe` / `List-Unsubscribe-Post` headers, made from a secret that is never stored.

An announcement is queued with an unsubscribe line whose address ends in `TOKEN_SLOT`
(`announcement_footer`). When the sender claims it, `issue` gives it a random seed (from
`secrets`, kept in the outbox row until the message is sent, then wiped) and a one-time token row
of purpose `unsubscribe` holding only an HMAC of the token (`dupify.mail.links`). Opening the link
(GET shows a button; a mail client's one-click POST needs none) records the objection without
signing in; a forged, expired, already used or other-purpose token is refused.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dupify.accounts.models import OneTimeToken
from dupify.mail.links import TOKEN_SLOT, new_seed, token_from_seed, token_hash

PURPOSE = "unsubscribe"
PATH = "/unsubscribe/"
# Where the deployment's public address goes when the queuing code knew none (the command line
# without DUPIFY_PORTAL__PUBLIC_URL): the sender fills it in from its settings.
BASE_SLOT = "{public-url}"
# Long enough for mail read weeks later; expired rows go with the retention job's token sweep.
LIFETIME = timedelta(days=90)
ONE_CLICK = "List-Unsubscribe=One-Click"
_URL = re.compile(r"https?://\S+" + re.escape(PATH) + r"[A-Za-z0-9_-]+")


def announcement_footer(link_base: str | None) -> str:
    """The unsubscribe line appended to every announcement's body (token still a slot)."""
    base = (link_base or BASE_SLOT).rstrip("/")
    return (
        "\n\n--\nYou receive announcements because your account accepts them. To stop them in one "
        f"click (no sign-in needed), open:\n{base}{PATH}{TOKEN_SLOT}\n"
        "Security and privacy-policy notices are still sent.\n"
    )


def issue(session: Session, account_id: str, *, secret: bytes, now: datetime) -> str:
    """A fresh seed for one announcement's link, and the token row (its HMAC) in `session`."""
    seed = new_seed()
    session.add(
        OneTimeToken(
            token_hash=token_hash(token_from_seed(seed, secret), secret),
            account_id=account_id,
            purpose=PURPOSE,
            created_at=now,
            expires_at=now + LIFETIME,
        )
    )
    return seed


def find(session: Session, raw: str, *, secret: bytes, now: datetime) -> OneTimeToken | None:
    """The live unsubscribe token for a link, or None (forged, expired, used, other purpose)."""
    if not raw or len(raw) > 200:
        return None
    row = session.scalar(
        select(OneTimeToken).where(OneTimeToken.token_hash == token_hash(raw, secret))
    )
    if row is None or row.purpose != PURPOSE or row.used_at is not None or row.expires_at <= now:
        return None
    return row


def url_in(body: str) -> str | None:
    """The unsubscribe address in a rendered announcement, for its headers."""
    found = _URL.search(body)
    return found.group(0) if found else None


def list_headers(body: str) -> dict[str, str]:
    """RFC 8058's two headers for a message whose body carries an unsubscribe link (RFC 2369's
    angle brackets; the POST header tells clients a body-less one-click POST is enough)."""
    url = url_in(body)
    if url is None:
        return {}
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": ONE_CLICK}
