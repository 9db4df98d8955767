"""money sums as wide as Postgres declares a numeric: no count of events can overflow one

``customers.revenue`` and ``customers.refunded`` were ``numeric(20,4)`` (under 10**16), so a
hundred purchases of the contract's largest amount (10**14 - 0.0001) made one customer's
revenue overflow: the engine's batch failed, and the lane stalled. ``kpi_buckets.value`` and
``kpi_rollups.value`` (``numeric(28,4)``) sum every customer's events, the all-time rows
without end. All four become ``numeric(1000,4)``: the widest declared numeric, exact to four
places, more than 10**980 events of the largest amount from overflowing (see
``clm_domain/bounds.py``). The scale stays 4, so values read back as they did ("59.9000").

Raising a numeric's precision at the same scale changes only the catalogue (no table rewrite,
no index rebuild: a test checks the files stay the same): instant on a live table. Statements a
running service prepared on the old types fail once per connection afterwards ("cached
statement plan is invalid"; SQLAlchemy then drops its caches and the retry succeeds): restart
the services after migrating, as for any release. Downgrading narrows the columns again and
fails if a value no longer fits.

Revision ID: 0011_bounds
Revises: 0010_lapsing_index
Create Date: 2026-12-07 13:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_bounds"
down_revision: str | Sequence[str] | None = "0010_lapsing_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUM = sa.Numeric(precision=1000, scale=4)
COLUMNS = (
    ("customers", "revenue", sa.Numeric(precision=20, scale=4)),
    ("customers", "refunded", sa.Numeric(precision=20, scale=4)),
    ("kpi_buckets", "value", sa.Numeric(precision=28, scale=4)),
    ("kpi_rollups", "value", sa.Numeric(precision=28, scale=4)),
)


def upgrade() -> None:
    for table, column, before in COLUMNS:
        op.alter_column(table, column, type_=SUM, existing_type=before, existing_nullable=False)


def downgrade() -> None:
    for table, column, before in COLUMNS:
        op.alter_column(table, column, type_=before, existing_type=SUM, existing_nullable=False)
