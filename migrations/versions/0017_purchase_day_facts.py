"""stage engine: each customer's purchase-day facts, computed from the event log

``customers`` gains the facts the predictive models read, under their rule of one transaction
per UTC calendar day (``clm_domain.customer_state``):

- ``purchase_days``: distinct UTC days with a purchase;
- ``repeat_spend``: the summed amounts of the purchases on days after the first purchase day;
- ``purchase_currency``: the purchases' currency, ``*`` once they came in more than one
  (NULL: no purchase, or not known, below).

The backfill reads the purchases in each customer's event log (``customer_events.payload`` is
the event's JSON: its ``type`` and its ``properties``' ``amount`` and ``currency``; the day is
the row's ``occurred_at`` in UTC). Where the log holds as many purchases as the row counted,
the facts are exactly what the engine would have folded. Where it holds fewer (an anonymised
customer's log was dropped), the row itself is all there is: ``purchase_days`` is the number
of distinct UTC days among the purchase times it keeps (the first, the last and the last few:
exact when it keeps them all, else a lower bound), ``repeat_spend`` stays 0 and
``purchase_currency`` NULL, which says the spend facts are unknown. One scan of the event log
and one update of the purchasing customers; a customer's later purchases fold on top.

A stage engine of the older version writing while (or after) this runs does not keep the
facts: stop the stage engines for the migration, or ``clm replay --yes`` once the new ones
run (``docs/operations.md``). Downgrading drops the columns.

Revision ID: 0017_purchase_day_facts
Revises: 0016_status_views
Create Date: 2026-12-08 12:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_purchase_day_facts"
down_revision: str | Sequence[str] | None = "0016_status_views"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(precision=1000, scale=4)
CHECKS = {
    "purchase_days_within_purchases": "purchase_days >= 0 AND purchase_days <= purchases",
    "repeat_spend_not_negative": "repeat_spend >= 0",
    "purchase_currency": "purchase_currency ~ '^[A-Z]{3}$' OR purchase_currency = '*'",
}

# Postgres refuses the escape \u0000 (which an event's free properties may hold) when it reads
# a JSON text's strings: it becomes \u0020 first. That leaves the text valid JSON whatever
# precedes it (after an escaped backslash, "u0000" becomes the text "u0020"), and changes no
# field read here (a type, an amount, a currency never hold it).
FROM_THE_LOG = """
WITH bought AS (
    SELECT customer_id, (occurred_at AT TIME ZONE 'UTC')::date AS day,
        CAST(doc -> 'properties' ->> 'amount' AS numeric) AS amount,
        doc -> 'properties' ->> 'currency' AS currency
    FROM (
        SELECT customer_id, occurred_at,
            CAST(replace(convert_from(payload, 'UTF8'), '\\u0000', '\\u0020') AS json) AS doc
        FROM customer_events
    ) AS logged
    WHERE doc ->> 'type' = 'purchase'
), dated AS (
    SELECT *, min(day) OVER (PARTITION BY customer_id) AS first_day FROM bought
), facts AS (
    SELECT customer_id, count(*) AS purchases, count(DISTINCT day) AS days,
        coalesce(sum(amount) FILTER (WHERE day <> first_day), 0) AS repeat_spend,
        CASE WHEN count(DISTINCT currency) = 1 THEN min(currency) ELSE '*' END AS currency
    FROM dated GROUP BY customer_id
)
UPDATE customers AS c
SET purchase_days = f.days, repeat_spend = f.repeat_spend, purchase_currency = f.currency
FROM facts AS f
WHERE c.customer_id = f.customer_id AND c.purchases = f.purchases
"""

FROM_THE_ROW = """
UPDATE customers
SET purchase_days = LEAST(purchases, GREATEST(1, (
    SELECT count(DISTINCT (t AT TIME ZONE 'UTC')::date)
    FROM unnest(recent_purchases || ARRAY[converted_at, last_purchase_at]) AS t
)))
WHERE purchases > 0 AND purchase_days = 0
"""


def upgrade() -> None:
    op.add_column(
        "customers", sa.Column("purchase_days", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("customers", sa.Column("repeat_spend", MONEY, server_default="0", nullable=False))
    op.add_column("customers", sa.Column("purchase_currency", sa.Text(), nullable=True))
    op.execute(FROM_THE_LOG)
    op.execute(FROM_THE_ROW)
    for name, condition in CHECKS.items():
        op.create_check_constraint(op.f(f"ck_customers_{name}"), "customers", condition)


def downgrade() -> None:
    for name in CHECKS:
        op.drop_constraint(op.f(f"ck_customers_{name}"), "customers", type_="check")
    for column in ("purchase_currency", "repeat_spend", "purchase_days"):
        op.drop_column("customers", column)
