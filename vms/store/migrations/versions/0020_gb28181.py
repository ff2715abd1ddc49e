"""gb28181: the GB/T 28181 devices and lower platforms registered to vms, their keepalive state and last catalog
(vms.gb28181)

Revision ID: 0020_gb28181
Revises: 0019_coverage_daily
Create Date: 2026-11-30 05:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_gb28181"
down_revision = "0019_coverage_daily"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gb_devices",
        sa.Column("device_id", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("domain", sa.String(length=64), nullable=True),
        sa.Column("transport", sa.String(length=8), nullable=True),
        sa.Column("host", sa.String(length=64), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("keepalive_interval_s", sa.Float(), nullable=True),
        sa.Column("keepalive_count", sa.Integer(), nullable=True),
        sa.Column("offline_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("catalog_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("catalog_items", sa.Integer(), nullable=True),
        sa.Column("catalog_complete", sa.Boolean(), nullable=True),
        sa.Column("user_agent", sa.String(length=255), nullable=True),
        sa.Column("camera_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["camera_id"], ["cameras.id"], name=op.f("fk_gb_devices_camera_id_cameras"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_gb_devices")),
    )


def downgrade() -> None:
    op.drop_table("gb_devices")
