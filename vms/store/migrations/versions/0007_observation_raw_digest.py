"""observations: the raw digest of the row each was read from (re-imports skip parsing unchanged rows)

``raw_digest``: 64 bits of a hash of the row's cells as written plus everything that decides how they are read
(header, column map, reader version); ``raw_spot``: the stable hash of the row's name and position, for the
duplicate check of rows recognised by their digest; ``raw_issues``: the row's non-fatal issues, reported again
for it. NULL for existing rows: the next import of their source
reads every row in full once and fills them in.

Revision ID: 0007_observation_raw_digest
Revises: 0009_health
Create Date: 2026-11-29 23:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_observation_raw_digest"
down_revision = "0009_health"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("observations", sa.Column("raw_digest", sa.BigInteger(), nullable=True))
    op.add_column("observations", sa.Column("raw_spot", sa.BigInteger(), nullable=True))
    op.add_column("observations", sa.Column("raw_issues", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.drop_column("raw_issues")
        batch_op.drop_column("raw_spot")
        batch_op.drop_column("raw_digest")
