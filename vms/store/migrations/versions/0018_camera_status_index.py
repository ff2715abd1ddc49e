"""camera status index: a list filtered by status (the command system's "what is down") walks the index in id
order instead of scanning every camera when few match

Revision ID: 0018_camera_status_index
Revises: 0017_camera_changes
Create Date: 2026-11-30 03:15:00
"""

from __future__ import annotations

from alembic import op

revision = "0018_camera_status_index"
down_revision = "0017_camera_changes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_cameras_status", "cameras", ["status"])


def downgrade() -> None:
    op.drop_index("ix_cameras_status", table_name="cameras")
