"""structured-processing trials: a run of analyzers over a sample set, and the objects they found (GA/T 1400 kinds
with their boxes, scores, analyzer name and version, plate number where read)

Revision ID: 0014_trials
Revises: 0013_frames
Create Date: 2026-11-30 02:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_trials"
down_revision = "0013_frames"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("analyzers", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["set_id"], ["sample_sets.id"], name="fk_trials_set_id_sample_sets", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_trials"),
        sa.UniqueConstraint("name", name="uq_trials_name"),
    )
    op.create_index("ix_trials_set_id", "trials", ["set_id"])
    op.create_table(
        "trial_objects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("camera_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("left_top_x", sa.Integer(), nullable=False),
        sa.Column("left_top_y", sa.Integer(), nullable=False),
        sa.Column("right_btm_x", sa.Integer(), nullable=False),
        sa.Column("right_btm_y", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("analyzer", sa.String(32), nullable=False),
        sa.Column("analyzer_version", sa.String(128), nullable=False),
        sa.Column("plate_no", sa.String(32), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name="fk_trial_objects_trial_id_trials", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["sample_id"], ["frame_samples.id"], name="fk_trial_objects_sample_id_frame_samples", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_trial_objects"),
    )
    op.create_index("ix_trial_objects_trial_id", "trial_objects", ["trial_id", "sample_id"])
    op.create_index("ix_trial_objects_sample_id", "trial_objects", ["sample_id"])


def downgrade() -> None:
    for table in ("trial_objects", "trials"):
        op.drop_table(table)
