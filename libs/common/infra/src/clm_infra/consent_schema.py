"""Each customer's latest consent per purpose (``docs/security.md``, *Consent*), on the
shared :data:`metadata`: derived from the ``consent`` events, so a replay rebuilds it."""

from __future__ import annotations

from sqlalchemy import Boolean, CheckConstraint, Column, PrimaryKeyConstraint, Table, Text

from clm_infra.schema import TS, metadata

customer_consent = Table(
    "customer_consent",
    metadata,
    Column("customer_id", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("at", TS, nullable=False),  # the consent event's occurred_at
    Column("source", Text, nullable=False),  # with event_id: the event that said so
    Column("event_id", Text, nullable=False),
    PrimaryKeyConstraint("customer_id", "purpose"),
    CheckConstraint("purpose IN ('analytics', 'marketing')", name="purpose"),
)
