"""The portal's emails: their words, and the outbox rows that carry them (sent after commit)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from dupify.accounts.models import Account
from dupify.mail.links import SealedLink
from dupify.mail.outbox import enqueue


def _send(
    db: Session,
    account: Account,
    kind: str,
    subject: str,
    text: str,
    to_address: str = "",
    link: SealedLink | None = None,
) -> None:
    """One message to the account holder (or to `to_address`), greeting them by name; `link`,
    if given, is in `text` as `link.url` (its token is put in only as the message is sent)."""
    enqueue(
        db,
        kind=kind,
        to_address=to_address or account.email,
        account_id=account.id,
        subject=subject,
        body=f"Hello {account.name},\n\n{text}",
        link_seed=link.seed if link else None,
    )


def send_verification(db: Session, account: Account, link: SealedLink) -> None:
    _send(
        db,
        account,
        "verification",
        "Confirm your email address for Dupify",
        "Confirm your email address for your Dupify account by opening this link "
        f"(it works once, for 24 hours):\n\n{link.url}\n\n"
        "If you did not create an account, ignore this message.\n",
        link=link,
    )


def send_signup_attempt_notice(db: Session, account: Account, login_link: str) -> None:
    """Sign-up with a taken address: tell its owner, and show the visitor the usual page."""
    _send(
        db,
        account,
        "security",
        "Someone tried to sign up to Dupify with your address",
        "Someone tried to create a Dupify account with this email address, which already "
        f"has one. If it was you, sign in here (or reset your password):\n\n{login_link}\n\n"
        "If it was not you, nothing changed and you can ignore this message.\n",
    )


def send_password_reset(db: Session, account: Account, link: SealedLink) -> None:
    _send(
        db,
        account,
        "password_reset",
        "Reset your Dupify password",
        "Choose a new password for your Dupify account with this link "
        f"(it works once, for one hour):\n\n{link.url}\n\n"
        "If you did not ask for this, ignore this message: your password is unchanged.\n",
        link=link,
    )


def send_email_change(db: Session, account: Account, new_email: str, link: SealedLink) -> None:
    _send(
        db,
        account,
        "email_change",
        "Confirm your new email address for Dupify",
        "Open this link to make this address the one your Dupify account uses "
        f"(it works once, for 24 hours):\n\n{link.url}\n\n"
        "Until then, the account keeps its current address.\n",
        to_address=new_email,
        link=link,
    )
    _send(
        db,
        account,
        "security",
        "Your Dupify email address is being changed",
        "Someone signed in to your Dupify account asked to move it to another email address. "
        "It changes only when the link sent to the new address is opened. If this was not "
        "you, change your password now.\n",
    )


def send_password_changed(db: Session, account: Account) -> None:
    _send(
        db,
        account,
        "security",
        "Your Dupify password was changed",
        "The password of your Dupify account was just changed and every signed-in session "
        "was ended. If this was not you, reset your password at once.\n",
    )
