"""stage engine: an applied event's event-log row is its dedupe claim

``processed_events`` now holds only the events that leave no ``customer_events`` row (no
customer, or failed in the reducer); the rows the two tables shared are dropped. Downgrading
writes them back, as the older engine dedupes by ``processed_events`` alone.

Revision ID: 0008_event_log_claims
Revises: 0007_metrics_hour_versions
Create Date: 2026-11-23 18:10:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008_event_log_claims"
down_revision: str | Sequence[str] | None = "0007_metrics_hour_versions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM processed_events p USING customer_events c "
        "WHERE c.source = p.source AND c.event_id = p.event_id"
    )


def downgrade() -> None:
    op.execute(
        "INSERT INTO processed_events (source, event_id, customer_id) "
        "SELECT source, event_id, customer_id FROM customer_events ON CONFLICT DO NOTHING"
    )
