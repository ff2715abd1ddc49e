"""camera list filter indexes on PostgreSQL hold the live cameras only: an index led by status, use type or owner
with the id second could serve a foreign-key check (id = $1) planned while the table was small, which then walked
the whole index for every row an import wrote (100,000 cameras: 220 s instead of 20 s). A partial index cannot serve
that check; the lists, which ask for live cameras, still walk it. SQLite is left as it is.

Revision ID: 0024_camera_filter_partial
Revises: 0023_coverage_kept
Create Date: 2026-11-30 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024_camera_filter_partial"
down_revision = "0023_coverage_kept"
branch_labels = None
depends_on = None

_INDEXES = {"ix_cameras_status": "status", "ix_cameras_use_type": "use_type", "ix_cameras_owner": "owner"}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, column in _INDEXES.items():
        op.drop_index(name, table_name="cameras")
        op.create_index(name, "cameras", [column, "id"], postgresql_where=sa.text("removed_at IS NULL"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, column in _INDEXES.items():
        op.drop_index(name, table_name="cameras")
        op.create_index(name, "cameras", [column, "id"])
