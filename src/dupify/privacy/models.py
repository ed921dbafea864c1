"""The policy-version tables: each version's text, which versions were announced, and which each
account has seen."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dupify.db import Base, UtcDateTime, utcnow


class PolicyNotice(Base):
    """A policy version whose change notice has been queued to every account (exactly once)."""

    __tablename__ = "policy_notices"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    announced_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PolicyAcknowledgement(Base):
    """That an account has seen a policy version (the portal banner stops showing)."""

    __tablename__ = "policy_acknowledgements"

    account_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    acknowledged_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PolicyVersion(Base):
    """The text of a policy version as this deployment first showed it: kept when the version is
    raised, so /privacy/changes can show what changed."""

    __tablename__ = "policy_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    text: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
