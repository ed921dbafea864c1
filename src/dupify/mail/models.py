"""The outbox: every email the product sends, with its delivery state."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dupify.db import Base, UtcDateTime, utcnow


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_…
    # Mail to an account goes with the account when it is deleted.
    account_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("accounts.id", ondelete="CASCADE"), index=True, default=None
    )
    # verification | password_reset | email_change | security | policy | announcement
    kind: Mapped[str] = mapped_column(String(30))
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(
        String(20), default="pending", index=True
    )  # pending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
