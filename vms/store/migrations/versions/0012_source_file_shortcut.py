"""sources: what the last import of a whole file left, so a re-import of the unchanged file reads no row

``file_digest``: a hash of the file's bytes plus everything that decides how they are read (format, encoding,
column map, CRS, snapshot flag, reader code); ``file_state``: a token of the source's stored observations right
after that import (counts, highest id and update time, sum of camera ids, the source's last-import time);
``file_report``: that import's row report (issues and counts), zlib-compressed JSON, replayed when both match.
NULL for existing sources: their next import runs in full and fills them in.

Revision ID: 0012_source_file_shortcut
Revises: 0011_health_schedules
Create Date: 2026-11-29 23:58:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_source_file_shortcut"
down_revision = "0011_health_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sources", sa.Column("file_digest", sa.String(64), nullable=True))
    op.add_column("sources", sa.Column("file_state", sa.Text(), nullable=True))
    op.add_column("sources", sa.Column("file_report", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.drop_column("file_report")
        batch_op.drop_column("file_state")
        batch_op.drop_column("file_digest")
