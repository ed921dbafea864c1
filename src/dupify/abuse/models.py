"""The abuse flag table: a key's traffic that an operator should review."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dupify.db import Base, UtcDateTime, utcnow


class AbuseFlag(Base):
    """A key's traffic looked abusive (a spike, repeated bad keys): for an operator to review."""

    __tablename__ = "abuse_flags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    key_id: Mapped[str | None] = mapped_column(String(40), default=None)
    kind: Mapped[str] = mapped_column(String(40))  # request_spike | ...
    detail: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
