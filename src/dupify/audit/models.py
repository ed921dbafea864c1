"""The audit event row: who did what to which account or key, and when; no personal data."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dupify.db import Base, UtcDateTime, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    # login | login_failed | logout | password_changed | key_created | key_revoked | export |
    # account_deleted | admin_* ...
    event: Mapped[str] = mapped_column(String(40))
    # Plain ids, not foreign keys: deleting an account removes its rows explicitly.
    actor_account_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    account_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    key_id: Mapped[str | None] = mapped_column(String(40), default=None)
    detail: Mapped[str | None] = mapped_column(String(500), default=None)  # never personal data
