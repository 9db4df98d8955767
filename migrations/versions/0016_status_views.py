"""operators' read model: views ``clm status`` reads instead of the engine's private tables

- ``status_consumer_offsets``: every consumer group's stored next offset per partition
  (``group_id``, ``topic``, ``partition``, ``next_offset``);
- ``status_outbox_backlog``: one row, the lifecycle records waiting to be published
  (``records``) and the age of the oldest in seconds (``oldest_age_s``, NULL when none wait),
  over both outbox tables;
- ``status_webhook_deliveries``: webhook deliveries per status (``status``, ``deliveries``).

They are the documented contract for operators (``docs/read-model.md``): the tables behind
them may change shape, the views keep their columns. Downgrading drops them.

Revision ID: 0016_status_views
Revises: 0015_cohort_retractions
Create Date: 2026-12-07 18:45:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016_status_views"
down_revision: str | Sequence[str] | None = "0015_cohort_retractions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = {
    "status_consumer_offsets": (
        "SELECT group_id, topic, partition, next_offset FROM consumer_offsets"
    ),
    "status_outbox_backlog": (
        "SELECT coalesce(sum(records), 0)::bigint AS records,"
        " extract(epoch FROM now() - min(created_at))::double precision AS oldest_age_s"
        " FROM (SELECT records, created_at FROM outbox_batches"
        " UNION ALL SELECT 1, created_at FROM outbox) AS waiting"
    ),
    "status_webhook_deliveries": (
        "SELECT status, count(*)::bigint AS deliveries FROM webhook_deliveries GROUP BY status"
    ),
}


def upgrade() -> None:
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
