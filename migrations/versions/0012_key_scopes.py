"""api keys of kind admin; erasure tombstones marked once keyed

- ``api_keys.kind`` accepts ``admin`` (erasure, merges, webhook subscriptions); write keys
  lose those rights in the code, not here.
- ``erasures.keyed``: false for the tombstones written before this version (bare SHA-256 of
  the customer id), true for keyed ones (HMAC-SHA256 under ``CLM_PSEUDONYM_KEY`` of that
  SHA-256). The stage engine rehashes the unkeyed ones when it starts (it holds the key; this
  migration does not), so no customer id is needed to upgrade a tombstone.

Revision ID: 0012_key_scopes
Revises: 0011_bounds
Create Date: 2026-12-07 12:50:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_key_scopes"
down_revision: str | Sequence[str] | None = "0011_bounds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_api_keys_kind"), "api_keys", type_="check")
    op.create_check_constraint(
        op.f("ck_api_keys_kind"), "api_keys", "kind IN ('write', 'read', 'admin')"
    )
    op.add_column(
        "erasures",
        sa.Column("keyed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    # keyed tombstones cannot be turned back into bare hashes: they stay (and an older engine
    # no longer recognises them); admin keys cannot exist under the old constraint
    op.drop_column("erasures", "keyed")
    op.execute("DELETE FROM api_keys WHERE kind = 'admin'")
    op.drop_constraint(op.f("ck_api_keys_kind"), "api_keys", type_="check")
    op.create_check_constraint(op.f("ck_api_keys_kind"), "api_keys", "kind IN ('write', 'read')")
