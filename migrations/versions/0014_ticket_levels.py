"""metrics: open support tickets counted per ticket

- ``metrics_tickets``: per ``(customer, ticket id)`` the first open (with its source and
  channel) and the first solve, written in the metrics batch's transaction; each ticket adds
  +1 at its open and -1 at its solve to the ``tickets_open`` level buckets, so the open tickets
  at a window's end are exact and never below zero (a solve without a known open, a repeated
  open or solve change nothing).

No data is carried over: tickets counted before this version are not in ``tickets_open`` and
``open_support_tickets`` reads only tickets seen after it until the metrics are rebuilt from
the event log (the metrics tables emptied, then ``clm replay``: README, *Upgrades and
migrations*). Downgrading drops the table (the ``tickets_open`` bucket rows stay, unread).

Revision ID: 0014_ticket_levels
Revises: 0013_exact_distinct
Create Date: 2026-12-07 14:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_ticket_levels"
down_revision: str | Sequence[str] | None = "0013_exact_distinct"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metrics_tickets",
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("ticket_id", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("solved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "ticket_id", name=op.f("pk_metrics_tickets")),
    )


def downgrade() -> None:
    op.drop_table("metrics_tickets")
