"""health checks: sweeps, raw results (kept VMS_HEALTH_RAW_DAYS), latest result and status per camera, status
events, daily figures per camera

Revision ID: 0009_health
Revises: 0006_partial_key_indexes
Create Date: 2026-11-29 23:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_health"
down_revision = "0006_partial_key_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "health_sweeps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stages", sa.JSON(), nullable=False),
        sa.Column("camera_group", sa.String(255), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_health_sweeps"),
    )
    op.create_table(
        "health_results",
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("camera_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("cause", sa.String(32), nullable=True),
        sa.Column("clock_offset_s", sa.Float(), nullable=True),
        sa.Column("stages", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["health_sweeps.id"], name="fk_health_results_sweep_id_health_sweeps", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["camera_id"], ["cameras.id"], name="fk_health_results_camera_id_cameras", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("sweep_id", "camera_id", name="pk_health_results"),
    )
    op.create_index("ix_health_results_at", "health_results", ["at"])
    op.create_index("ix_health_results_camera_id", "health_results", ["camera_id", "at"])
    op.create_table(
        "health_latest",
        sa.Column("camera_id", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("cause", sa.String(32), nullable=True),
        sa.Column("clock_offset_s", sa.Float(), nullable=True),
        sa.Column("stages", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("status", sa.String(8), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pending", sa.String(8), nullable=True),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["camera_id"], ["cameras.id"], name="fk_health_latest_camera_id_cameras", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("camera_id", name="pk_health_latest"),
    )
    op.create_index("ix_health_latest_status", "health_latest", ["status"])
    op.create_table(
        "health_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("camera_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(8), nullable=False),
        sa.Column("previous", sa.String(8), nullable=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("stage", sa.String(16), nullable=True),
        sa.Column("cause", sa.String(32), nullable=True),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["camera_id"], ["cameras.id"], name="fk_health_events_camera_id_cameras", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_health_events"),
    )
    op.create_index("ix_health_events_camera_id", "health_events", ["camera_id", "at"])
    op.create_index("ix_health_events_at", "health_events", ["at"])
    op.create_table(
        "health_daily",
        sa.Column("camera_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("checks", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Integer(), nullable=False),
        sa.Column("online_s", sa.Float(), nullable=False),
        sa.Column("known_s", sa.Float(), nullable=False),
        sa.Column("drift_n", sa.Integer(), nullable=False),
        sa.Column("drift_min", sa.Float(), nullable=True),
        sa.Column("drift_max", sa.Float(), nullable=True),
        sa.Column("drift_sum", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["camera_id"], ["cameras.id"], name="fk_health_daily_camera_id_cameras", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("camera_id", "day", name="pk_health_daily"),
    )
    op.create_index("ix_health_daily_day", "health_daily", ["day"])


def downgrade() -> None:
    for table in ("health_daily", "health_events", "health_latest", "health_results", "health_sweeps"):
        op.drop_table(table)
