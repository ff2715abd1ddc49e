"""camera list filter indexes: the status index carries the id (PostgreSQL walks a status in id order, as a keyset
page asks, instead of sorting every camera of that status), so do new ones on the use type and the owner, and an
index on the position for a bounding box

Revision ID: 0022_camera_list_filter_indexes
Revises: 0021_gb28181_catalog_request
Create Date: 2026-11-30 06:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0022_camera_list_filter_indexes"
down_revision = "0021_gb28181_catalog_request"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_cameras_status", table_name="cameras")
    op.create_index("ix_cameras_status", "cameras", ["status", "id"])
    op.create_index("ix_cameras_use_type", "cameras", ["use_type", "id"])
    op.create_index("ix_cameras_owner", "cameras", ["owner", "id"])
    op.create_index("ix_cameras_position", "cameras", ["longitude", "latitude"])


def downgrade() -> None:
    op.drop_index("ix_cameras_owner", table_name="cameras")
    op.drop_index("ix_cameras_use_type", table_name="cameras")
    op.drop_index("ix_cameras_position", table_name="cameras")
    op.drop_index("ix_cameras_status", table_name="cameras")
    op.create_index("ix_cameras_status", "cameras", ["status"])
