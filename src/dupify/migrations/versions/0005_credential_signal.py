"""credential_signal: the token every revocation, suspension and plan change replaces

Revision ID: 3d8e41c6f207
Revises: 7c2f5e0b9a14
Create Date: 2026-11-30 07:30:00.000000
"""

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import dupify.db

revision: str = "3d8e41c6f207"
down_revision: str | None = "7c2f5e0b9a14"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "credential_signal",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("changed_at", dupify.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credential_signal")),
    )
    # The one row, so every change is an UPDATE (a row lock orders concurrent changes).
    op.bulk_insert(
        table, [{"id": 1, "token": secrets.token_hex(16), "changed_at": datetime.now(UTC)}]
    )


def downgrade() -> None:
    op.drop_table("credential_signal")
