"""covered areas kept between processes, and the online seconds of each closed day by region (with the count of
writes to a day after it closed, which says whether its roll-up still stands)

Revision ID: 0023_coverage_kept
Revises: 0022_camera_list_filter_indexes
Create Date: 2026-11-30 08:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_coverage_kept"
down_revision = "0022_camera_list_filter_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coverage_areas",
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("geometry_fp", sa.String(64), nullable=False),
        sa.Column("cameras", sa.Integer(), nullable=False),
        sa.Column("covered_km2", sa.Float(), nullable=False),
        sa.Column("covered", sa.LargeBinary(), nullable=True),
        sa.Column("views", sa.LargeBinary(), nullable=False),
        sa.Column("working_fp", sa.String(64), nullable=True),
        sa.Column("working", sa.Integer(), nullable=True),
        sa.Column("working_km2", sa.Float(), nullable=True),
        sa.Column("working_geom", sa.LargeBinary(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("region", name="pk_coverage_areas"),
    )
    op.create_table(
        "health_region_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("online_s", sa.Float(), nullable=False),
        sa.Column("known_s", sa.Float(), nullable=False),
        sa.Column("cameras", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "region", name="pk_health_region_daily"),
    )
    op.create_table(
        "health_daily_marks",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("writes", sa.Integer(), nullable=False),
        sa.Column("rolled", sa.Integer(), nullable=True),
        sa.Column("rolled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("day", name="pk_health_daily_marks"),
    )


def downgrade() -> None:
    op.drop_table("health_daily_marks")
    op.drop_table("health_region_daily")
    op.drop_table("coverage_areas")
