"""The predictive models' table (the stage engine's fits), on the shared :data:`metadata`."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    Identity,
    Index,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from clm_infra.schema import TS, metadata

# Each fit of the predictive models (BG/NBD for purchases, Gamma-Gamma for spend per currency),
# and each refit that was refused: the scores use the newest row that ``fitted``; ``clm status``
# shows the newest row of all (a refusal says why). Its id is the model version the scores name.
model_fits = Table(
    "model_fits",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("attempted_at", TS, nullable=False, server_default=func.now()),
    Column("outcome", Text, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("trigger", Text, nullable=False),
    Column("as_of", TS, nullable=False),
    Column("customers", BigInteger, nullable=False, server_default="0"),
    Column("repeat_customers", BigInteger, nullable=False, server_default="0"),
    Column("log_likelihood", Float),
    Column("bgnbd", JSONB),
    Column("gamma_gamma", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("unit", Text, nullable=False, server_default="week"),
    Column("duration_s", Float, nullable=False, server_default="0"),
    CheckConstraint("outcome IN ('fitted', 'refused')", name="outcome"),
    CheckConstraint("trigger IN ('schedule', 'manual')", name="trigger"),
    CheckConstraint("outcome = 'refused' OR bgnbd IS NOT NULL", name="fitted_has_params"),
)
Index("ix_model_fits_fitted", model_fits.c.id, postgresql_where=model_fits.c.outcome == "fitted")
