"""stage engine: the log end a replay must reach before the sweeper moves anyone again

Revision ID: 0006_replay_targets
Revises: 0005_metrics_day_versions
Create Date: 2026-11-23 16:45:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_replay_targets"
down_revision: str | Sequence[str] | None = "0005_metrics_day_versions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replay_targets",
        sa.Column("group_id", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("end_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "topic", "partition", name=op.f("pk_replay_targets")),
    )


def downgrade() -> None:
    op.drop_table("replay_targets")
