"""initial schema

Revision ID: f3513dd1d7b6
Revises:
Create Date: 2026-11-24 21:13:41.454753
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dupify.db

revision: str = "f3513dd1d7b6"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("plan", sa.String(length=40), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("pref_announcements", sa.Boolean(), nullable=False),
        sa.Column("pref_usage_analytics", sa.Boolean(), nullable=False),
        sa.Column("email_verified_at", dupify.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("suspended_at", dupify.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", dupify.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", dupify.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("email", name=op.f("uq_accounts_email")),
    )
    op.create_table(
        "request_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", dupify.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=True),
        sa.Column("key_id", sa.String(length=40), nullable=True),
        sa.Column("endpoint", sa.String(length=120), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=40), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("cached_images", sa.Integer(), nullable=False),
        sa.Column("bytes_in", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_logs")),
    )
    with op.batch_alter_table("request_logs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_request_logs_account_time", ["account_id", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_request_logs_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("display_prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=200), nullable=False),
        sa.Column("created_at", dupify.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", dupify.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", dupify.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("suspended_at", dupify.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", dupify.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_api_keys_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_account_id"), ["account_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_account_id"))

    op.drop_table("api_keys")
    with op.batch_alter_table("request_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_request_logs_created_at"))
        batch_op.drop_index("ix_request_logs_account_time")

    op.drop_table("request_logs")
    op.drop_table("accounts")
