"""segments: definitions, their versions, membership spans and the customers' segment clock

- ``segments``: a definition (name, description, condition, version) and its backfill's
  progress; ``segment_versions``: every version as written; ``segment_catalog``: one row, the
  definitions' version, bumped by every definition change;
  (``paused`` while a replay rebuilds the customers: memberships are re-evaluated by a
  backfill once it is done);
- ``segment_memberships``: one row a span (a customer entered a segment, and left it or not);
  the open spans are the members;
- ``segment_clock``: when time alone may next change a customer's memberships;
- ``clm_segment_catalog()``: takes the catalog's advisory lock shared for the transaction,
  then reads the catalog's version (plpgsql: the read's snapshot is taken after the lock is
  granted, so a definition change that committed while the caller waited is seen);
- ``webhook_subscriptions.segments``: the segments whose entries and exits a subscription gets;
- views for the metrics service (``docs/read-model.md``): ``segment_spans`` and
  ``segment_names``; for ``clm status``: ``status_segments``.

Revision ID: 0020_segments
Revises: 0019_prediction_read_model
Create Date: 2026-12-08 00:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision: str = "0020_segments"
down_revision: str | Sequence[str] | None = "0019_prediction_read_model"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)

#: ``clm_infra.segment_schema.CATALOG_LOCK``
CATALOG_LOCK = 0x636C6D5347

CATALOG_FUNCTION = f"""
CREATE FUNCTION clm_segment_catalog() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared({CATALOG_LOCK});
    RETURN (SELECT version FROM segment_catalog WHERE id = 1);
END
$$
"""

VIEWS = {
    "segment_spans": "SELECT segment_id, entered_at, left_at FROM segment_memberships",
    "segment_names": "SELECT id AS segment_id, name, deleted_at FROM segments",
    # the operators' read model (``clm status``): one row
    "status_segments": (
        "SELECT (SELECT count(*) FROM segments WHERE deleted_at IS NULL) AS active,"
        " (SELECT count(*) FROM segments WHERE deleted_at IS NULL"
        " AND backfill_version IS NOT NULL AND backfill_finished_at IS NULL) AS backfilling,"
        " (SELECT paused FROM segment_catalog WHERE id = 1) AS paused,"
        " (SELECT count(*) FROM segment_clock WHERE due_at < now() - interval '5 minutes')"
        " AS overdue"
    ),
}


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("condition", JSONB(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("announce_backfill", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("deleted_at", TS),
        sa.Column("backfill_version", sa.Integer()),
        sa.Column("backfill_after", sa.Text()),
        sa.Column("backfill_done", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("backfill_total", sa.BigInteger()),
        sa.Column("backfill_started_at", TS),
        sa.Column("backfill_finished_at", TS),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
    )
    op.create_index(
        "ux_segments_name",
        "segments",
        ["name"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "segment_versions",
        sa.Column("segment_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("condition", JSONB(), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("segment_id", "version", name=op.f("pk_segment_versions")),
    )
    op.create_table(
        "segment_catalog",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_catalog")),
        sa.CheckConstraint("id = 1", name=op.f("ck_segment_catalog_one_row")),
    )
    op.execute("INSERT INTO segment_catalog (id, version) VALUES (1, 0)")
    op.create_table(
        "segment_memberships",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("segment_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.Text()),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("entered_at", TS, nullable=False),
        sa.Column("left_at", TS),
        sa.Column("entered_by", sa.Text(), nullable=False),
        sa.Column("left_by", sa.Text()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_memberships")),
        sa.CheckConstraint(
            "left_at IS NOT NULL OR customer_id IS NOT NULL",
            name=op.f("ck_segment_memberships_open_has_customer"),
        ),
    )
    op.create_index(
        "ux_segment_memberships_open",
        "segment_memberships",
        ["segment_id", "customer_id"],
        unique=True,
        postgresql_where=sa.text("left_at IS NULL"),
    )
    op.create_index(
        "ix_segment_memberships_customer",
        "segment_memberships",
        ["customer_id"],
        postgresql_where=sa.text("left_at IS NULL"),
    )
    op.create_index(
        "ix_segment_memberships_entered", "segment_memberships", ["segment_id", "entered_at"]
    )
    op.create_index(
        "ix_segment_memberships_left",
        "segment_memberships",
        ["segment_id", "left_at"],
        postgresql_where=sa.text("left_at IS NOT NULL"),
    )
    op.create_table(
        "segment_clock",
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_segment_clock")),
    )
    op.create_index("ix_segment_clock_due_at", "segment_clock", ["due_at"])
    op.add_column("webhook_subscriptions", sa.Column("segments", ARRAY(sa.BigInteger())))
    op.execute(CATALOG_FUNCTION)
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.execute("DROP FUNCTION IF EXISTS clm_segment_catalog()")
    op.drop_column("webhook_subscriptions", "segments")
    for table in (
        "segment_clock",
        "segment_memberships",
        "segment_catalog",
        "segment_versions",
        "segments",
    ):
        op.drop_table(table)
