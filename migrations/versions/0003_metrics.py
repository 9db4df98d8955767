"""metrics: KPI rollups (hour, day, all time), distinct-count sketches, cohorts

Revision ID: 0003_metrics
Revises: 0002_ingest
Create Date: 2026-11-23 12:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_metrics"
down_revision: str | Sequence[str] | None = "0002_ingest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kpi_rollups",
        sa.Column("grain", sa.Text(), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("value", sa.Numeric(28, 4), nullable=False),
        sa.CheckConstraint("grain IN ('hour', 'day', 'all')", name=op.f("ck_kpi_rollups_grain")),
        sa.PrimaryKeyConstraint(
            "grain",
            "bucket_start",
            "metric",
            "source",
            "channel",
            "currency",
            name=op.f("pk_kpi_rollups"),
        ),
    )
    op.create_table(
        "kpi_sketches",
        sa.Column("grain", sa.Text(), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("registers", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(
            "grain IN ('minute', 'hour', 'day')", name=op.f("ck_kpi_sketches_grain")
        ),
        sa.PrimaryKeyConstraint(
            "grain", "bucket_start", "metric", "source", "channel", name=op.f("pk_kpi_sketches")
        ),
    )
    op.create_table(
        "metrics_cohort_activity",
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint(
            "period", "customer_id", "period_start", name=op.f("pk_metrics_cohort_activity")
        ),
    )
    op.create_table(
        "kpi_cohorts",
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("cohort", sa.Date(), nullable=False),
        sa.Column("periods_since", sa.Integer(), nullable=False),
        sa.Column("customers", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("period", "cohort", "periods_since", name=op.f("pk_kpi_cohorts")),
    )


def downgrade() -> None:
    op.drop_table("kpi_cohorts")
    op.drop_table("metrics_cohort_activity")
    op.drop_table("kpi_sketches")
    op.drop_table("kpi_rollups")
