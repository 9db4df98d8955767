"""customers: the sweeper's index holds only the customers inactivity can move

``ix_customers_last_seen`` (stage, last_seen_at) held every customer, and every applied event
moves ``last_seen_at``: each event of a visitor who never bought (most profiles) rewrote an
entry the sweeper never reads (it moves only converted and at-risk customers). The new
partial index holds the stages inactivity moves on from (conversion, retention, loyalty,
at_risk); the sweeper's query, which names them, uses it as it used the old one.

Building it locks ``customers`` against writes while it runs (about a second per million
rows); on a large live table create it CONCURRENTLY by hand first (same name and
definition) and this migration keeps it.

Revision ID: 0010_lapsing_index
Revises: 0009_outbox_batches
Create Date: 2026-12-04 03:40:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_lapsing_index"
down_revision: str | Sequence[str] | None = "0009_outbox_batches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LAPSING = "stage IN ('conversion', 'retention', 'loyalty', 'at_risk')"


def upgrade() -> None:
    op.execute(
        f"CREATE INDEX IF NOT EXISTS ix_customers_lapsing ON customers (stage, last_seen_at) "
        f"WHERE {LAPSING}"
    )
    op.drop_index("ix_customers_last_seen", table_name="customers")


def downgrade() -> None:
    op.create_index("ix_customers_last_seen", "customers", ["stage", "last_seen_at"])
    op.drop_index("ix_customers_lapsing", table_name="customers")
