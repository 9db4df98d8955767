"""metrics: a change counter per event day, so readers may cache closed days exactly

Revision ID: 0005_metrics_day_versions
Revises: 0004_stage
Create Date: 2026-11-23 15:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_metrics_day_versions"
down_revision: str | Sequence[str] | None = "0004_stage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No backfill: a day without a row has version 0, and the first write to it makes it 1.
    op.create_table(
        "kpi_day_versions",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_kpi_day_versions")),
    )


def downgrade() -> None:
    op.drop_table("kpi_day_versions")
