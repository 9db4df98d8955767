"""metrics: cohort activity counts purchases, so a restatement can take one back

``metrics_cohort_activity`` kept one row per customer and period it was active in (claimed
once, never taken back). Restatements (``clm.lifecycle.v2``) take purchases back and add them
again at their place (a late earlier first purchase moves a customer's cohort; an erasure or a
merge removes a profile's purchases), so each row now counts its purchases and remembers the
cohort it was counted in: the period leaves ``kpi_cohorts`` when its count reaches zero, and
moves when the cohort changes.

Rows written before this version get ``purchases = 1`` and no cohort (it was not stored): a
restatement touching them takes the cohort it retracts as theirs. For exact cohorts of that
older history, rebuild the metrics (README, *Upgrades and migrations*).

Revision ID: 0015_cohort_retractions
Revises: 0014_ticket_levels
Create Date: 2026-12-07 16:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_cohort_retractions"
down_revision: str | Sequence[str] | None = "0014_ticket_levels"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "metrics_cohort_activity",
        sa.Column("purchases", sa.Integer(), server_default="1", nullable=False),
    )
    op.add_column("metrics_cohort_activity", sa.Column("cohort", sa.Date(), nullable=True))


def downgrade() -> None:
    op.drop_column("metrics_cohort_activity", "cohort")
    op.drop_column("metrics_cohort_activity", "purchases")
