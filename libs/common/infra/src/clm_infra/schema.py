"""The Postgres schema as SQLAlchemy Core tables (Alembic migrations own the DDL).

Kept in step with ``migrations/versions``; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)

from clm_domain import bounds
from clm_domain.customer_state import MIXED_CURRENCY

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: Money sums (customers' revenue and refunds, KPI values): as wide as Postgres declares a
#: numeric, so no count of events within the per-event bound can overflow one (bounds.py).
MONEY = Numeric(bounds.SUM_DIGITS, bounds.MONEY_PLACES)
TS = DateTime(timezone=True)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("key_hash", Text, nullable=False, unique=True),
    Column("label", Text, nullable=False, server_default=""),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("revoked_at", TS),
    CheckConstraint("kind IN ('write', 'read', 'admin')", name="kind"),
)

customers = Table(
    "customers",
    metadata,
    Column("customer_id", Text, primary_key=True),
    Column("stage", Text, nullable=False),
    Column("stage_entered_at", TS, nullable=False),
    Column("first_seen_at", TS, nullable=False),
    Column("last_seen_at", TS, nullable=False),
    Column("first_source", Text, nullable=False),
    Column("first_channel", Text),
    Column("first_campaign", Text),
    Column("acquired_at", TS),
    Column("converted_at", TS),
    Column("last_purchase_at", TS),
    Column("purchases", Integer, nullable=False, server_default="0"),
    Column("revenue", MONEY, nullable=False, server_default="0"),
    Column("refunds", Integer, nullable=False, server_default="0"),
    Column("refunded", MONEY, nullable=False, server_default="0"),
    Column("tickets_opened", Integer, nullable=False, server_default="0"),
    Column("tickets_solved", Integer, nullable=False, server_default="0"),
    Column("reviews", Integer, nullable=False, server_default="0"),
    Column("review_sum", Integer, nullable=False, server_default="0"),
    Column("last_nps", SmallInteger),
    Column("referrals", Integer, nullable=False, server_default="0"),
    Column("events", Integer, nullable=False, server_default="0"),
    Column("updated_at", TS, nullable=False, server_default=func.now()),
    Column("reactivations", Integer, nullable=False, server_default="0"),
    Column("last_event_source", Text, nullable=False, server_default=""),
    Column("last_event_id", Text, nullable=False, server_default=""),
    Column("recent_visits", ARRAY(TS), nullable=False, server_default="{}"),
    Column("recent_purchases", ARRAY(TS), nullable=False, server_default="{}"),
    # the purchase-day facts (clm_domain.customer_state; migration 0017)
    Column("purchase_days", Integer, nullable=False, server_default="0"),
    Column("repeat_spend", MONEY, nullable=False, server_default="0"),
    Column("purchase_currency", Text),
    CheckConstraint(
        "purchase_days >= 0 AND purchase_days <= purchases", name="purchase_days_within_purchases"
    ),
    CheckConstraint("repeat_spend >= 0", name="repeat_spend_not_negative"),
    CheckConstraint(
        f"purchase_currency ~ '^[A-Z]{{3}}$' OR purchase_currency = '{MIXED_CURRENCY}'",
        name="purchase_currency",
    ),
)
#: The stages inactivity moves a customer on from (``clm_domain.lifecycle.CAN_LAPSE``): the
#: only rows the sweeper's index holds (migration 0010), so the events of customers in the
#: other stages, most of them, never write to it.
LAPSING_STAGES = ("conversion", "retention", "loyalty", "at_risk")
Index(
    "ix_customers_lapsing",
    customers.c.stage,
    customers.c.last_seen_at,
    postgresql_where=customers.c.stage.in_(LAPSING_STAGES),
)
Index("ix_customers_stage", customers.c.stage, customers.c.customer_id)

stage_transitions = Table(
    "stage_transitions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("customer_id", Text, nullable=False),
    Column("from_stage", Text),
    Column("to_stage", Text, nullable=False),
    Column("at", TS, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("recorded_at", TS, nullable=False, server_default=func.now()),
)
Index("ix_stage_transitions_customer", stage_transitions.c.customer_id, stage_transitions.c.id)

processed_events = Table(
    "processed_events",
    metadata,
    Column("source", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("customer_id", Text),
    Column("processed_at", TS, nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("source", "event_id"),
)

consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("group_id", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at", TS, nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("group_id", "topic", "partition"),
)

# Set by a replay: the end of the events topic when it began. Until the group's stored offsets
# reach it, the sweeper moves nobody (it would act on half-rebuilt histories).
replay_targets = Table(
    "replay_targets",
    metadata,
    Column("group_id", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("end_offset", BigInteger, nullable=False),
    PrimaryKeyConstraint("group_id", "topic", "partition"),
)

# The outbox of engines before migration 0009, a row per record: drained (rolling upgrades).
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("topic", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
)

# The outbox: one row per write (a batch, a sweep, an erasure, a merge) holding its ``records``
# lifecycle records for ``topic`` as one blob (clm_stage_engine.outbox), TOASTed with lz4
# (set by migration 0009: cheaper for Postgres than pglz or no compression). Ids come from
# ``outbox``'s sequence, so the two tables' rows are published in one order.
outbox_batches = Table(
    "outbox_batches",
    metadata,
    Column("id", BigInteger, primary_key=True, server_default=text("nextval('outbox_id_seq')")),
    Column("topic", Text, nullable=False),
    Column("records", Integer, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    CheckConstraint("records > 0", name="records_positive"),
)

kpi_buckets = Table(
    "kpi_buckets",
    metadata,
    Column("bucket_start", TS, nullable=False),
    Column("metric", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("value", MONEY, nullable=False),
    PrimaryKeyConstraint("bucket_start", "metric", "source", "channel", "currency"),
)

metrics_processed = Table(
    "metrics_processed",
    metadata,
    Column("record_id", Text, primary_key=True),
    Column("processed_at", TS, nullable=False, server_default=func.now()),
)

stage_counts = Table(
    "stage_counts",
    metadata,
    Column("stage", Text, primary_key=True),
    Column("customers", BigInteger, nullable=False, server_default="0"),
)


customer_events = Table(
    "customer_events",
    metadata,
    Column("source", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("occurred_at", TS, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    PrimaryKeyConstraint("source", "event_id"),
)
Index("ix_customer_events_customer", customer_events.c.customer_id, customer_events.c.occurred_at)

identity_links = Table(
    "identity_links",
    metadata,
    Column("anonymous_id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("linked_at", TS, nullable=False, server_default=func.now()),
)
Index("ix_identity_links_customer", identity_links.c.customer_id)

erasures = Table(
    "erasures",
    metadata,
    # HMAC-SHA256 under CLM_PSEUDONYM_KEY of the id's SHA-256 (clm_domain.pseudonyms); rows
    # of older versions hold the bare SHA-256 (keyed false) until the engine rehashes them
    Column("customer_hash", Text, primary_key=True),
    Column("erased_at", TS, nullable=False, server_default=func.now()),
    Column("keyed", Boolean, nullable=False, server_default=text("false")),
)

webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False),
    # Fernet token of the signing secret (CLM_SECRETS_KEY, clm_infra.subscription_secrets);
    # rows of older versions hold it in clear ("whsec_…") until the engine seals them
    Column("secret", Text, nullable=False),
    Column("stages", ARRAY(Text)),
    Column("segments", ARRAY(BigInteger)),  # set: segment entries and exits, no stage changes
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("purpose", Text, nullable=False, server_default="marketing"),  # clm_domain.consent
    CheckConstraint("purpose IN ('marketing', 'service')", name="purpose"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("subscription_id", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", TS, nullable=False, server_default=func.now()),
    Column("last_error", Text),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('pending', 'delivered', 'parked')", name="status"),
)
Index(
    "ix_webhook_deliveries_due", webhook_deliveries.c.status, webhook_deliveries.c.next_attempt_at
)

webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("source", Text, nullable=False),
    Column("provider", Text, nullable=False),
    # Fernet token of the secret (CLM_SECRETS_KEY): HMAC needs the secret itself, so it is
    # encrypted at rest, never only hashed
    Column("secret_encrypted", Text, nullable=False),
    Column("label", Text, nullable=False, server_default=""),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("revoked_at", TS),
    CheckConstraint("provider IN ('shopify', 'stripe', 'zendesk', 'generic')", name="provider"),
)
Index("ix_webhook_secrets_provider", webhook_secrets.c.provider, webhook_secrets.c.source)

# Rollups of kpi_buckets written in the same transaction: grain 'hour', 'day' and 'all' (one
# all-time row per key, bucket_start 1970-01-01). Minute rows are pruned after a retention.
kpi_rollups = Table(
    "kpi_rollups",
    metadata,
    Column("grain", Text, nullable=False),
    Column("bucket_start", TS, nullable=False),
    Column("metric", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("value", MONEY, nullable=False),
    PrimaryKeyConstraint("grain", "bucket_start", "metric", "source", "channel", "currency"),
    CheckConstraint("grain IN ('hour', 'day', 'all')", name="grain"),
)

# How often each event day's buckets, rollups or distinct sets were written to (bumped in the same
# transaction): a reader may keep a closed day's sums while its version is unchanged.
kpi_day_versions = Table(
    "kpi_day_versions",
    metadata,
    Column("day", Date, primary_key=True),
    Column("version", BigInteger, nullable=False),
)

# The same per event hour (bumped with the day's): a reader may keep today's closed hours.
kpi_hour_versions = Table(
    "kpi_hour_versions",
    metadata,
    Column("hour", TS, primary_key=True),
    Column("version", BigInteger, nullable=False),
)

# Exact distinct counts: each bucket's customer numbers as a Roaring bitmap (portable
# serialization), per grain, metric and source/channel (``\x1fany``: merged over every one).
kpi_distinct = Table(
    "kpi_distinct",
    metadata,
    Column("grain", Text, nullable=False),
    Column("bucket_start", TS, nullable=False),
    Column("metric", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("members", LargeBinary, nullable=False),
    PrimaryKeyConstraint("grain", "bucket_start", "metric", "source", "channel"),
    CheckConstraint("grain IN ('minute', 'hour', 'day')", name="grain"),
)

# The dense integer number of each customer (or anonymous profile) id the metrics service
# counts: what the distinct-count bitmaps hold (32-bit: Roaring's range).
metrics_customer_numbers = Table(
    "metrics_customer_numbers",
    metadata,
    Column("customer_id", Text, primary_key=True),
    Column("number", Integer, Identity(), nullable=False, unique=True),
)

# The UTC days each customer number is in a distinct set of: where an erasure or a merge has to
# clear or move its bits (the minute, hour and day rows of those days).
metrics_customer_days = Table(
    "metrics_customer_days",
    metadata,
    Column("number", Integer, nullable=False),
    Column("day", Date, nullable=False),
    PrimaryKeyConstraint("number", "day"),
)

# Each support ticket the metrics service saw, per customer: its first open (with that event's
# source and channel) and first solve, so open tickets are counted per ticket (never below 0).
metrics_tickets = Table(
    "metrics_tickets",
    metadata,
    Column("customer_id", Text, nullable=False),
    Column("ticket_id", Text, nullable=False),
    Column("opened_at", TS),
    Column("solved_at", TS),
    Column("source", Text, nullable=False),
    Column("channel", Text, nullable=False),
    PrimaryKeyConstraint("customer_id", "ticket_id"),
)

# Which customer purchased in which period, how often and in which cohort it was counted
# (exact cohort counts that restatements can take back), and the counts themselves.
metrics_cohort_activity = Table(
    "metrics_cohort_activity",
    metadata,
    Column("period", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("period_start", Date, nullable=False),
    Column("purchases", Integer, nullable=False, server_default="1"),
    Column("cohort", Date, nullable=True),
    PrimaryKeyConstraint("period", "customer_id", "period_start"),
)

kpi_cohorts = Table(
    "kpi_cohorts",
    metadata,
    Column("period", Text, nullable=False),
    Column("cohort", Date, nullable=False),
    Column("periods_since", Integer, nullable=False),
    Column("customers", BigInteger, nullable=False),
    PrimaryKeyConstraint("period", "cohort", "periods_since"),
)
