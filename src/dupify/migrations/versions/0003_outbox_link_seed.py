"""outbox: a one-time link's token is kept only as a seed, until the message is sent

Revision ID: ba91a37751c4
Revises: 4e7742305076
Create Date: 2026-11-25 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ba91a37751c4"
down_revision: str | None = "4e7742305076"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("link_seed", sa.String(length=64), nullable=True))
    # Earlier versions kept each emailed link readable in the outbox for 30 days: the links not
    # used yet stop working now (their holders ask for new ones), so none read from a copy of
    # the database works.
    op.execute(sa.text("DELETE FROM one_time_tokens WHERE used_at IS NULL"))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("link_seed")
