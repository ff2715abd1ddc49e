"""camera tags: the operator's labels (a JSON list of strings) that health sweep schedules can select by

Revision ID: 0010_camera_tags
Revises: 0008_camera_search_punctuation
Create Date: 2026-11-29 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_camera_tags"
down_revision = "0008_camera_search_punctuation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cameras", sa.Column("tags", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cameras") as batch:
        batch.drop_column("tags")
