"""gb28181 catalog request: a Catalog query asked for on demand (`vms gb28181 catalog`, POST
/api/v1/gb28181/devices/{id}/catalog), picked up by whichever process runs the SIP server, and why it failed

Revision ID: 0021_gb28181_catalog_request
Revises: 0020_gb28181
Create Date: 2026-11-30 05:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021_gb28181_catalog_request"
down_revision = "0020_gb28181"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("gb_devices", sa.Column("catalog_requested_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("gb_devices", sa.Column("catalog_error", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gb_devices", schema=None) as batch_op:
        batch_op.drop_column("catalog_error")
        batch_op.drop_column("catalog_requested_at")
