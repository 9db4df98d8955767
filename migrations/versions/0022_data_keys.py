"""data_keys: each customer's (or anonymous profile's) data key, wrapped by a master key

Personal fields of events are sealed under their subject's data key by the ingest; erasure
deletes the key (``docs/security.md``, "Personal data"). Not derived from the events topic: a
replay keeps it.

Revision ID: 0022_data_keys
Revises: 0021_consent
Create Date: 2026-12-08 02:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022_data_keys"
down_revision: str | Sequence[str] | None = "0021_consent"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("subject", sa.Text(), primary_key=True),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("master_id", sa.Text(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("rewrapped_at", TS),
    )


def downgrade() -> None:
    op.drop_table("data_keys")
