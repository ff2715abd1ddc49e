"""observations: identity-key indexes hold only the rows that have the key

A ledger row has a device ID and an address but no MAC, serial or ONVIF endpoint: full indexes took a NULL entry
per row and key kind on every import. Matching looks keys up by equality (``= ANY`` / ``IN``), which implies
``IS NOT NULL``, so both databases use the partial indexes for it.

Revision ID: 0006_partial_key_indexes
Revises: 0005_source_listed_at
Create Date: 2026-11-29 21:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_partial_key_indexes"
down_revision = "0005_source_listed_at"
branch_labels = None
depends_on = None

KEYS = ("k_device_id", "k_mac", "k_serial", "k_endpoint_ref", "k_host_port")


def upgrade() -> None:
    for column in KEYS:
        name = f"ix_observations_{column}"
        op.drop_index(name, table_name="observations")
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "observations", [column], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for column in KEYS:
        name = f"ix_observations_{column}"
        op.drop_index(name, table_name="observations")
        op.create_index(name, "observations", [column])
