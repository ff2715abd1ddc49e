"""health sweep schedules, their leases and runs, and APScheduler's job store table

Revision ID: 0011_health_schedules
Revises: 0010_camera_tags
Create Date: 2026-11-29 23:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_health_schedules"
down_revision = "0010_camera_tags"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "health_schedules",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("camera_group", sa.String(255), nullable=False),
        sa.Column("stages", sa.JSON(), nullable=False),
        sa.Column("interval_s", sa.Integer(), nullable=True),
        sa.Column("cron", sa.String(255), nullable=True),
        sa.Column("deadline_s", sa.Float(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_health_schedules"),
    )
    op.create_table(
        "schedule_leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("slot", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_schedule_leases"),
    )
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule", sa.String(64), nullable=False),
        sa.Column("slot", sa.Float(), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_schedule_runs"),
        sa.UniqueConstraint("schedule", "slot", name="uq_schedule_runs_schedule"),
    )
    op.create_index("ix_schedule_runs_started_at", "schedule_runs", ["started_at"])
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(191), nullable=False),
        sa.Column("next_run_time", sa.Float(25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_apscheduler_jobs"),
    )
    op.create_index("ix_apscheduler_jobs_next_run_time", "apscheduler_jobs", ["next_run_time"])


def downgrade() -> None:
    op.drop_index("ix_apscheduler_jobs_next_run_time", table_name="apscheduler_jobs")
    op.drop_table("apscheduler_jobs")
    op.drop_index("ix_schedule_runs_started_at", table_name="schedule_runs")
    op.drop_table("schedule_runs")
    op.drop_table("schedule_leases")
    op.drop_table("health_schedules")
