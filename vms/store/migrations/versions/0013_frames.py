"""frame samples: sample sets (which cameras, when, with which settings), one row per sampled frame (its JPEG is a
file addressed by content under the data directory), and each camera's reference frame for the occlusion check

Revision ID: 0013_frames
Revises: 0012_source_file_shortcut
Create Date: 2026-11-30 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_frames"
down_revision = "0012_source_file_shortcut"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sample_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("camera_ids", sa.JSON(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sample_sets"),
        sa.UniqueConstraint("name", name="uq_sample_sets_name"),
    )
    op.create_table(
        "frame_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("camera_id", sa.Integer(), nullable=False),
        sa.Column("set_id", sa.Integer(), nullable=True),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("codec", sa.String(16), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("thumb", sa.LargeBinary(), nullable=True),
        sa.Column("faults", sa.String(255), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["camera_id"], ["cameras.id"], name="fk_frame_samples_camera_id_cameras", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["set_id"], ["sample_sets.id"], name="fk_frame_samples_set_id_sample_sets", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_frame_samples"),
    )
    op.create_index("ix_frame_samples_camera_id", "frame_samples", ["camera_id", "taken_at"])
    op.create_index("ix_frame_samples_set_id", "frame_samples", ["set_id"])
    op.create_index("ix_frame_samples_sha256", "frame_samples", ["sha256"])
    op.create_index("ix_frame_samples_taken_at", "frame_samples", ["taken_at"])
    op.create_table(
        "camera_references",
        sa.Column("camera_id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=True),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ref", sa.LargeBinary(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["camera_id"], ["cameras.id"], name="fk_camera_references_camera_id_cameras", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["sample_id"],
            ["frame_samples.id"],
            name="fk_camera_references_sample_id_frame_samples",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("camera_id", name="pk_camera_references"),
    )


def downgrade() -> None:
    for table in ("camera_references", "frame_samples", "sample_sets"):
        op.drop_table(table)
