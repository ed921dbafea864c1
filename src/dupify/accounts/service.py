"""Account operations shared by the CLI, the API and the portal; services flush, callers commit."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from dupify.accounts.models import Account
from dupify.db import new_id, utcnow

ROLES = ("user", "admin")


class AccountError(ValueError):
    """A request about accounts that cannot be carried out (message is safe to show)."""


def normalise_email(email: str) -> str:
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise AccountError(f"invalid email address: {exc}") from exc


def create_account(
    session: Session, *, email: str, name: str, plan: str = "free", role: str = "user"
) -> Account:
    address = normalise_email(email)
    if not name.strip():
        raise AccountError("name must not be empty")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if find_by_email(session, address) is not None:
        raise AccountError(f"an account with email {address} already exists")
    account = Account(id=new_id("acct"), email=address, name=name.strip(), plan=plan, role=role)
    session.add(account)
    session.flush()
    return account


def find_by_email(session: Session, email: str) -> Account | None:
    return session.scalar(select(Account).where(Account.email == email.strip().lower()))


def require_by_email(session: Session, email: str) -> Account:
    account = find_by_email(session, email)
    if account is None:
        raise AccountError(f"no account with email {email.strip().lower()}")
    return account


def list_accounts(session: Session) -> list[Account]:
    return list(session.scalars(select(Account).order_by(Account.created_at)))


def mark_verified(account: Account) -> None:
    account.email_verified_at = account.email_verified_at or utcnow()
