"""metrics: exact distinct counts (Roaring bitmaps of customer numbers) replace the sketches

- ``metrics_customer_numbers``: each customer (or anonymous profile) id the metrics service
  counts, with a dense 32-bit number from an identity sequence.
- ``metrics_customer_days``: the UTC days each number is in a distinct set of, so an erasure
  or a merge rewrites only those days' rows.
- ``kpi_distinct``: per grain, bucket, metric and source/channel, the bucket's customer
  numbers as a Roaring bitmap (portable serialization), replacing ``kpi_sketches``.

No data is carried over: a HyperLogLog sketch cannot be turned back into the ids it saw, so
the distinct counts (unique visitors, purchasing customers, repeat purchasers) of buckets
written before this version read 0 until the metrics are rebuilt from the event log (the
metrics tables emptied, then ``clm replay``: README, *Upgrades and migrations*). The sums
(orders, revenue, flows …) are untouched. Downgrading recreates an empty
``kpi_sketches``.

Revision ID: 0013_exact_distinct
Revises: 0012_key_scopes
Create Date: 2026-12-07 13:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_exact_distinct"
down_revision: str | Sequence[str] | None = "0012_key_scopes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metrics_customer_numbers",
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("number", sa.Integer(), sa.Identity(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_metrics_customer_numbers")),
        sa.UniqueConstraint("number", name=op.f("uq_metrics_customer_numbers_number")),
    )
    op.create_table(
        "metrics_customer_days",
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("number", "day", name=op.f("pk_metrics_customer_days")),
    )
    op.create_table(
        "kpi_distinct",
        sa.Column("grain", sa.Text(), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("members", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(
            "grain IN ('minute', 'hour', 'day')", name=op.f("ck_kpi_distinct_grain")
        ),
        sa.PrimaryKeyConstraint(
            "grain", "bucket_start", "metric", "source", "channel", name=op.f("pk_kpi_distinct")
        ),
    )
    op.drop_table("kpi_sketches")


def downgrade() -> None:
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
    op.drop_table("kpi_distinct")
    op.drop_table("metrics_customer_days")
    op.drop_table("metrics_customer_numbers")
