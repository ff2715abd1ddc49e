"""API key scopes read < operate < admin (the old role "write" becomes "operate"); the audit log says from where

Revision ID: 0015_access_scopes
Revises: 0014_trials
Create Date: 2026-11-30 02:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_access_scopes"
down_revision = "0014_trials"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("role", new_column_name="scope", existing_type=sa.String(16), existing_nullable=False)
    op.execute("UPDATE api_keys SET scope = 'operate' WHERE scope = 'write'")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("address", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("address")
    # Before scopes a key could read or write: an admin key goes back to being a write key.
    op.execute("UPDATE api_keys SET scope = 'write' WHERE scope IN ('operate', 'admin')")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("scope", new_column_name="role", existing_type=sa.String(16), existing_nullable=False)
