"""coverage daily: the counts behind the intact, aggregation and data-quality pass rates per region and UTC day,
for their series over time (vms.coverage)

Revision ID: 0019_coverage_daily
Revises: 0018_camera_status_index
Create Date: 2026-11-30 03:25:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_coverage_daily"
down_revision = "0018_camera_status_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coverage_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("registered", sa.Integer(), nullable=False),
        sa.Column("online_now", sa.Integer(), nullable=False),
        sa.Column("intact", sa.Integer(), nullable=False),
        sa.Column("aggregated", sa.Integer(), nullable=False),
        sa.Column("known", sa.Integer(), nullable=False),
        sa.Column("quality_passed", sa.Integer(), nullable=False),
        sa.Column("quality_checked", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "region", name=op.f("pk_coverage_daily")),
    )


def downgrade() -> None:
    op.drop_table("coverage_daily")
