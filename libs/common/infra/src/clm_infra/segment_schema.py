"""The segments' tables (definitions, their versions, membership spans and each customer's
segment clock), on the shared :data:`metadata`. ``docs/segments.md`` describes them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from clm_infra.schema import TS, metadata

# A segment's current definition, and the progress of its backfill (the evaluation of every
# existing customer under ``backfill_version``; null: none pending). Deleting one sets
# ``deleted_at``: its id and history stay, its name is free again.
segments = Table(
    "segments",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("condition", JSONB, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("announce_backfill", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("updated_at", TS, nullable=False, server_default=func.now()),
    Column("deleted_at", TS),
    Column("backfill_version", Integer),
    Column("backfill_after", Text),
    Column("backfill_done", BigInteger, nullable=False, server_default="0"),
    Column("backfill_total", BigInteger),
    Column("backfill_started_at", TS),
    Column("backfill_finished_at", TS),
)
Index(
    "ux_segments_name",
    segments.c.name,
    unique=True,
    postgresql_where=segments.c.deleted_at.is_(None),
)

# Every version of every definition, as it was written.
segment_versions = Table(
    "segment_versions",
    metadata,
    Column("segment_id", BigInteger, nullable=False),
    Column("version", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("condition", JSONB, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("segment_id", "version"),
)

# One row: the definitions' version, bumped (the row locked) by every definition change; a
# writer of customer rows reads it and evaluates the definitions of that version.
segment_catalog = Table(
    "segment_catalog",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("version", BigInteger, nullable=False),
    # set by a replay: writers leave memberships alone until the replay is done and a
    # backfill of every segment re-evaluates the rebuilt customers
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    CheckConstraint("id = 1", name="one_row"),
)

# Membership spans: a customer entered a segment at ``entered_at`` and left it at ``left_at``
# (null: still a member); ``entered_by`` / ``left_by`` name the cause. An erasure closes the
# customer's spans and forgets its id (the spans stay: the segment's size over time).
segment_memberships = Table(
    "segment_memberships",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("segment_id", BigInteger, nullable=False),
    Column("customer_id", Text),
    Column("version", Integer, nullable=False),
    Column("entered_at", TS, nullable=False),
    Column("left_at", TS),
    Column("entered_by", Text, nullable=False),
    Column("left_by", Text),
    CheckConstraint("left_at IS NOT NULL OR customer_id IS NOT NULL", name="open_has_customer"),
)
Index(
    "ux_segment_memberships_open",
    segment_memberships.c.segment_id,
    segment_memberships.c.customer_id,
    unique=True,
    postgresql_where=segment_memberships.c.left_at.is_(None),
)
Index(
    "ix_segment_memberships_customer",
    segment_memberships.c.customer_id,
    postgresql_where=segment_memberships.c.left_at.is_(None),
)
Index(
    "ix_segment_memberships_entered",
    segment_memberships.c.segment_id,
    segment_memberships.c.entered_at,
)
Index(
    "ix_segment_memberships_left",
    segment_memberships.c.segment_id,
    segment_memberships.c.left_at,
    postgresql_where=segment_memberships.c.left_at.is_not(None),
)

# When time alone may next change a customer's memberships (a ``days_since`` threshold, a new
# UTC day for the prediction facts): the sweeper re-evaluates the customers due.
segment_clock = Table(
    "segment_clock",
    metadata,
    Column("customer_id", Text, primary_key=True),
    Column("due_at", TS, nullable=False),
)
Index("ix_segment_clock_due_at", segment_clock.c.due_at)

#: The advisory lock (one int8 key) of the segment definitions: every writer of customer rows
#: holds it shared for its transaction and evaluates the definitions of the catalog version
#: it reads (the SQL function ``clm_segment_catalog()`` takes it and then reads the version);
#: a definition change holds it exclusive while it bumps ``segment_catalog``. So
#: once a change commits, every later write of a customer evaluates the new definitions, and
#: a backfill may skip the rows such writes hold.
CATALOG_LOCK = 0x636C6D5347  # "clmSG"
