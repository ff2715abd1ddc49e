"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from vms.store.db import current_revision
from vms.store.models import Base


def test_migrated_schema_matches_models(inventory):
    inventory.upgrade()  # idempotent
    assert current_revision(inventory.engine) == "0001"
    with inventory.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
