"""sources: when a snapshot import last listed the source's cameras (their last-seen, written once per import)

Before, every snapshot import rewrote ``observations.seen_at`` of each observation it listed again (100,000 row
updates for an unchanged file). Now a live observation was last seen at the later of its own ``seen_at`` (set
when it was new or changed) and its source's ``listed_at``: a snapshot import marks every live observation it
does not list removed, so whatever is still live was listed by that import. Existing rows need nothing: NULL
means "no snapshot since this column exists", and the stored ``seen_at`` values were kept current until now.

Revision ID: 0005_source_listed_at
Revises: 0004_camera_search
Create Date: 2026-11-29 21:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_source_listed_at"
down_revision = "0004_camera_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sources", sa.Column("listed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.drop_column("listed_at")
