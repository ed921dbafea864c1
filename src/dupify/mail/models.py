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
    # A message with a one-time link holds, in place of the link's token, the seed it is made
    # from with the server secret (`dupify.mail.links`), until it is sent or fails for good;
    # then '' (the link can never be sent again). None: a message without such a link.
    link_seed: Mapped[str | None] = mapped_column(String(64), default=None)
    state: Mapped[str] = mapped_column(
        String(20), default="pending", index=True
    )  # pending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
