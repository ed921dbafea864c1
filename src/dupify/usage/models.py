"""The API request log row: the fields PRIVACY.md row 2 names, and nothing else."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dupify.db import Base, UtcDateTime


class RequestLog(Base):
    __tablename__ = "request_logs"
    __table_args__ = (Index("ix_request_logs_account_time", "account_id", "created_at"),)

    # A surrogate key: a client may resend its own X-Request-Id, so the request id is not unique.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    account_id: Mapped[str | None] = mapped_column(String(40))
    key_id: Mapped[str | None] = mapped_column(String(40))
    endpoint: Mapped[str] = mapped_column(String(120))  # method + route template
    status: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(40))
    latency_ms: Mapped[float] = mapped_column(Float)
    images: Mapped[int] = mapped_column(Integer, default=0)
    cached_images: Mapped[int] = mapped_column(Integer, default=0)
    bytes_in: Mapped[int] = mapped_column(Integer, default=0)
    # Which model(s) answered (`/v1/analyze` may run several, joined with `+`): a model id, for
    # the per-model breakdown; nothing about the caller or the input.
    model: Mapped[str | None] = mapped_column(String(120), default=None)
