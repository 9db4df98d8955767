"""model fits: the predictive models' parameters, one row a fit or refused refit

``model_fits`` holds each fit of BG/NBD (purchases, all customers) and Gamma-Gamma (spend, one
model per currency) with its time, the customers it used and its log-likelihood, and each
scheduled or asked-for refit that was refused (too few repeat customers, no convergence) with
the reason. The scores use the newest fitted row; its id is the model version. The view
``status_model`` (the operators' read model) shows the current version and the last attempt.

Revision ID: 0018_model_fits
Revises: 0017_purchase_day_facts
Create Date: 2026-12-07 21:45:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0018_model_fits"
down_revision: str | Sequence[str] | None = "0017_purchase_day_facts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)

#: The operators' read model of the models (``docs/read-model.md``): one row, the version the
#: scores use and the newest attempt (a refused refit says why in ``last_reason``).
STATUS_MODEL = (
    "SELECT fitted.id AS version, fitted.attempted_at AS fitted_at,"
    " fitted.customers, fitted.repeat_customers,"
    " last.attempted_at AS last_attempt_at, last.outcome AS last_outcome,"
    " last.reason AS last_reason"
    " FROM (SELECT 1) AS one"
    " LEFT JOIN LATERAL (SELECT * FROM model_fits WHERE outcome = 'fitted'"
    " ORDER BY id DESC LIMIT 1) AS fitted ON true"
    " LEFT JOIN LATERAL (SELECT * FROM model_fits ORDER BY id DESC LIMIT 1) AS last ON true"
)


def upgrade() -> None:
    op.create_table(
        "model_fits",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("attempted_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("as_of", TS, nullable=False),
        sa.Column("customers", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("repeat_customers", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("log_likelihood", sa.Float()),
        sa.Column("bgnbd", JSONB()),
        sa.Column("gamma_gamma", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("unit", sa.Text(), nullable=False, server_default="week"),
        sa.Column("duration_s", sa.Float(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_fits")),
        sa.CheckConstraint("outcome IN ('fitted', 'refused')", name=op.f("ck_model_fits_outcome")),
        sa.CheckConstraint("trigger IN ('schedule', 'manual')", name=op.f("ck_model_fits_trigger")),
        sa.CheckConstraint(
            "outcome = 'refused' OR bgnbd IS NOT NULL", name=op.f("ck_model_fits_fitted_has_params")
        ),
    )
    op.create_index(
        "ix_model_fits_fitted",
        "model_fits",
        ["id"],
        postgresql_where=sa.text("outcome = 'fitted'"),
    )

    op.execute(f"CREATE VIEW status_model AS {STATUS_MODEL}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS status_model")
    op.drop_table("model_fits")
