"""consent: each customer's latest consent per purpose, and the purpose of webhook subscriptions

- ``customer_consent``: per customer and purpose (``analytics``, ``marketing``), the latest
  ``consent`` event in event order (granted or withdrawn, when, which event); derived from
  the events (a replay rebuilds it);
- ``webhook_subscriptions.purpose``: ``marketing`` (the default, for existing subscriptions
  too: privacy by default) gets nothing of customers who withdrew marketing consent;
  ``service`` gets every customer.

Revision ID: 0021_consent
Revises: 0020_segments
Create Date: 2026-12-08 02:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021_consent"
down_revision: str | Sequence[str] | None = "0020_segments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "customer_consent",
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "purpose", name=op.f("pk_customer_consent")),
        sa.CheckConstraint(
            "purpose IN ('analytics', 'marketing')", name=op.f("ck_customer_consent_purpose")
        ),
    )
    op.add_column(
        "webhook_subscriptions",
        sa.Column("purpose", sa.Text(), nullable=False, server_default="marketing"),
    )
    op.create_check_constraint(
        op.f("ck_webhook_subscriptions_purpose"),
        "webhook_subscriptions",
        "purpose IN ('marketing', 'service')",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_webhook_subscriptions_purpose"), "webhook_subscriptions")
    op.drop_column("webhook_subscriptions", "purpose")
    op.drop_table("customer_consent")
