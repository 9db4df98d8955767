"""metrics: a change counter per event hour, so readers may cache today's closed hours exactly

Revision ID: 0007_metrics_hour_versions
Revises: 0006_replay_targets
Create Date: 2026-11-23 18:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_metrics_hour_versions"
down_revision: str | Sequence[str] | None = "0006_replay_targets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No backfill: an hour without a row has version 0, and the first write to it makes it 1.
    op.create_table(
        "kpi_hour_versions",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", name=op.f("pk_kpi_hour_versions")),
    )


def downgrade() -> None:
    op.drop_table("kpi_hour_versions")
