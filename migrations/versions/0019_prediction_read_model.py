"""prediction read model: views the metrics service reads the predictive KPIs from

The stage engine owns ``customers`` and ``model_fits``; the metrics service computes
``clv_predicted`` and ``expected_purchases_90d`` from two views instead, which keep their
columns while those tables change shape (``docs/read-model.md``):

- ``customer_purchase_facts``: one row a customer who purchased (``customer_id``,
  ``converted_at``, ``last_purchase_at``, their UTC days ``first_purchase_day`` and
  ``last_purchase_day``, ``purchase_days``, ``repeat_spend``, ``purchase_currency``);
- ``model_current``: the model version the scores use, one row or none (``version``,
  ``fitted_at``, ``bgnbd``, ``gamma_gamma``).

Downgrading drops them.

Revision ID: 0019_prediction_read_model
Revises: 0018_model_fits
Create Date: 2026-12-07 22:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019_prediction_read_model"
down_revision: str | Sequence[str] | None = "0018_model_fits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = {
    "customer_purchase_facts": (
        "SELECT customer_id, converted_at, last_purchase_at,"
        " (converted_at AT TIME ZONE 'UTC')::date AS first_purchase_day,"
        " (last_purchase_at AT TIME ZONE 'UTC')::date AS last_purchase_day,"
        " purchase_days, repeat_spend, purchase_currency"
        " FROM customers"
        " WHERE converted_at IS NOT NULL AND last_purchase_at IS NOT NULL"
        " AND purchase_days >= 1"
    ),
    "model_current": (
        "SELECT id AS version, attempted_at AS fitted_at, bgnbd, gamma_gamma"
        " FROM model_fits WHERE outcome = 'fitted' ORDER BY id DESC LIMIT 1"
    ),
}


def upgrade() -> None:
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
