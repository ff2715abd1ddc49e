"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from vms.store.db import current_revision
from vms.store.models import Base, described_by_models


def test_migrated_schema_matches_models(inventory):
    inventory.upgrade()  # idempotent
    from alembic.script import ScriptDirectory

    from vms.store.db import alembic_config

    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"one migration head, not {heads}"
    assert current_revision(inventory.engine) == heads[0]
    with inventory.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": described_by_models})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
