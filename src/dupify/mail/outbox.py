"""Queueing email: one outbox row in the caller's transaction, and a wake-up for the sender."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy.orm import Session

from dupify.db import after_commit, new_id
from dupify.mail.models import OutboxMessage

# What each kind is for; announcements alone honour the account's objection (PRIVACY row 7).
KINDS = ("verification", "password_reset", "email_change", "security", "policy", "announcement")

_listeners: list[Callable[[], None]] = []
_listeners_lock = threading.Lock()


class OutboxError(ValueError):
    """A message that cannot be queued (message is safe to show)."""


def enqueue(
    session: Session,
    *,
    kind: str,
    to_address: str,
    subject: str,
    body: str,
    account_id: str | None = None,
    link_seed: str | None = None,
) -> OutboxMessage:
    """Add a pending message in the caller's transaction; it is sent only if that commits.
    A one-time link in `body` ends in `dupify.mail.links.TOKEN_SLOT`, with its `link_seed`.

    After the commit, running senders in this process are woken at once (others find the row at
    their next poll), so a verification email leaves within moments of the sign-up.
    """
    if kind not in KINDS:
        raise OutboxError(f"unknown mail kind {kind!r}; one of {', '.join(KINDS)}")
    if not to_address.strip() or "\n" in to_address or "\r" in to_address:
        raise OutboxError("a message needs one recipient address")
    if "\n" in subject or "\r" in subject:
        raise OutboxError("a subject is one line")
    message = OutboxMessage(
        id=new_id("msg"),
        account_id=account_id,
        kind=kind,
        to_address=to_address.strip(),
        subject=subject.strip(),
        body=body,
        link_seed=link_seed,
    )
    session.add(message)
    after_commit(session, wake_senders)
    return message


def wake_senders() -> None:
    """Tell this process's running senders that mail is waiting (safe from any thread)."""
    with _listeners_lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener()


def add_wake_listener(listener: Callable[[], None]) -> Callable[[], None]:
    """Register a sender's wake-up callback; returns the function that removes it."""
    with _listeners_lock:
        _listeners.append(listener)

    def remove() -> None:
        with _listeners_lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return remove
