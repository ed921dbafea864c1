"""request_logs: which model answered, for the per-model usage breakdown

Revision ID: 5b0e9d2a7c31
Revises: 3d8e41c6f207
Create Date: 2026-11-30 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b0e9d2a7c31"
down_revision: str | None = "3d8e41c6f207"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: rows written before this version, and requests refused before a model was
    # chosen, name none.
    with op.batch_alter_table("request_logs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model", sa.String(length=120), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("request_logs", schema=None) as batch_op:
        batch_op.drop_column("model")
