"""the change feed: ``camera_changes``, one row per create, update, removal and status change of a camera, with a
sequence number a client resumes from (vms.inventory.changes, GET /api/v1/changes)

Written by triggers on ``cameras``, so every write path (imports and their merges, edits, health status, region
reassignment, removals, raw DBAPI executemany and COPY) is in the feed:
- insert: "create" ("remove" for a row inserted already removed);
- update of any column but ``credential_id`` (not public) of a camera that is live before or after: "remove" when
  it becomes removed, "create" when it comes back, "status" when only ``status`` (and ``updated_at``) changed, else
  "update"; a removed camera that stays removed is not in the feed;
- delete of a live camera: "remove". ``gb_id``: the GB ID of a removed camera, for the tombstone.

SQLite has one writer at a time, so the rowid order (an INTEGER PRIMARY KEY, never reused: rows are never deleted)
is the commit order; a row trigger writes each change. PostgreSQL: statement triggers with transition tables (one
INSERT ... SELECT per statement: a COPY of 100,000 rows costs one; a one-row UPDATE about 40 us more, where row
triggers comparing the columns in a WHEN clause or a function cost 100-170 us) put a transaction's changes in
``camera_changes_pending`` (UNLOGGED; only the transaction itself sees its rows) and, the first time, a marker row
in ``camera_changes_flush`` whose deferred constraint trigger runs at COMMIT: it takes a transaction-scoped
advisory lock, numbers the pending changes into ``camera_changes`` and empties its own pending rows; the commit
releases the lock. So seq order is commit order (a reader that has seen seq N never gets a change below N later),
while writers of different cameras still proceed side by side: the lock is held only from the numbering to the
end of the commit, by a transaction that waits for nothing else then (no deadlock).

Every live camera is written as a "create" at upgrade, so a client starting at 0 gets the whole inventory.

Note for later migrations: the triggers compare the columns ``cameras`` had here (reflected); one that adds a
column to ``cameras`` (or, on SQLite, alters it by batch, which drops triggers) calls ``create_triggers()`` again.

Revision ID: 0017_camera_changes
Revises: 0016_operations
Create Date: 2026-11-30 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_camera_changes"
down_revision = "0016_operations"
branch_labels = None
depends_on = None

# Taken only to number a transaction's changes at its commit (not vms.store.problems.ADVISORY_LOCK, which is held
# for longer, while other locks are wanted): its holder waits for nothing else, so it cannot be in a deadlock.
ADVISORY_LOCK = 73_131_100_017
PENDING_FLAG = "vms.camera_changes"  # a transaction-local setting: this transaction has a flush marker
NOT_COMPARED = frozenset({"id", "credential_id"})
STATUS_ONLY = frozenset({"status", "updated_at"})
SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"  # SQLAlchemy's SQLite DateTime format


def _columns(bind: sa.engine.Connection) -> list[tuple[str, bool]]:
    """(name, is JSON) of the columns of ``cameras`` the triggers compare."""
    return [
        (c["name"], isinstance(c["type"], sa.JSON))
        for c in sa.inspect(bind).get_columns("cameras")
        if c["name"] not in NOT_COMPARED
    ]


def _differ(cols: list[tuple[str, bool]], old: str, new: str, dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [f"{old}.{c} IS NOT {new}.{c}" for c, _ in cols]
    return [
        # json has no equality: compared as text (the app writes a value as one text; jsonb would parse each)
        f"{old}.{c}::text IS DISTINCT FROM {new}.{c}::text" if js else f"{old}.{c} IS DISTINCT FROM {new}.{c}"
        for c, js in cols
    ]


def _update_op(cols: list[tuple[str, bool]], old: str, new: str, dialect: str) -> str:
    others = _differ([c for c in cols if c[0] not in STATUS_ONLY], old, new, dialect)
    status = _differ([("status", False)], old, new, dialect)[0]
    return (
        f"CASE WHEN {new}.removed_at IS NOT NULL THEN 'remove' WHEN {old}.removed_at IS NOT NULL THEN 'create' "
        f"WHEN NOT ({' OR '.join(others)}) AND {status} THEN 'status' ELSE 'update' END"
    )


def drop_triggers(dialect: str) -> None:
    if dialect == "sqlite":
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS camera_changes_{name}")
    elif dialect == "postgresql":
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS camera_changes_{name} ON cameras")
        op.execute("DROP TRIGGER IF EXISTS camera_changes_flush ON camera_changes_flush")
        for name in ("insert", "update", "delete", "flush"):
            op.execute(f"DROP FUNCTION IF EXISTS camera_changes_{name}()")


def create_triggers() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    cols = _columns(bind)
    drop_triggers(dialect)
    into = "INSERT INTO camera_changes (camera_id, op, gb_id, at)"
    if dialect == "sqlite":
        changed_sqlite = " OR ".join(_differ(cols, "OLD", "NEW", dialect))
        op.execute(
            f"CREATE TRIGGER camera_changes_insert AFTER INSERT ON cameras BEGIN {into} VALUES (NEW.id, "
            "CASE WHEN NEW.removed_at IS NULL THEN 'create' ELSE 'remove' END, "
            f"CASE WHEN NEW.removed_at IS NULL THEN NULL ELSE NEW.device_id END, {SQLITE_NOW}); END"
        )
        op.execute(
            "CREATE TRIGGER camera_changes_update AFTER UPDATE ON cameras "
            f"WHEN (OLD.removed_at IS NULL OR NEW.removed_at IS NULL) AND ({changed_sqlite}) "
            f"BEGIN {into} VALUES (NEW.id, {_update_op(cols, 'OLD', 'NEW', dialect)}, "
            f"CASE WHEN NEW.removed_at IS NULL THEN NULL ELSE NEW.device_id END, {SQLITE_NOW}); END"
        )
        op.execute(
            "CREATE TRIGGER camera_changes_delete AFTER DELETE ON cameras WHEN OLD.removed_at IS NULL "
            f"BEGIN {into} VALUES (OLD.id, 'remove', OLD.device_id, {SQLITE_NOW}); END"
        )
        return
    if dialect != "postgresql":
        return

    def function(name: str, body: str) -> None:
        op.execute(
            f"CREATE FUNCTION camera_changes_{name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"DECLARE changed bigint; BEGIN {body} RETURN NULL; END $$"
        )

    # The statement's changes go to this transaction's pending rows; the first ones also leave a marker whose
    # deferred trigger moves them into the feed at commit (see the module's docstring).
    pending = "INSERT INTO camera_changes_pending (camera_id, op, gb_id, at)"
    mark = (
        "GET DIAGNOSTICS changed = ROW_COUNT; "
        f"IF changed > 0 AND coalesce(current_setting('{PENDING_FLAG}', true), '') <> 'pending' THEN "
        "INSERT INTO camera_changes_flush DEFAULT VALUES; "
        f"PERFORM set_config('{PENDING_FLAG}', 'pending', true); END IF;"
    )
    function(
        "insert",
        f"{pending} SELECT n.id, CASE WHEN n.removed_at IS NULL THEN 'create' ELSE 'remove' END, "
        "CASE WHEN n.removed_at IS NULL THEN NULL ELSE n.device_id END, statement_timestamp() "
        f"FROM new_rows n ORDER BY n.id; {mark}",
    )
    function(
        "update",
        f"{pending} SELECT n.id, {_update_op(cols, 'o', 'n', dialect)}, "
        "CASE WHEN n.removed_at IS NULL THEN NULL ELSE n.device_id END, statement_timestamp() "
        "FROM new_rows n JOIN old_rows o ON o.id = n.id "
        f"WHERE (o.removed_at IS NULL OR n.removed_at IS NULL) AND ({' OR '.join(_differ(cols, 'o', 'n', dialect))}) "
        f"ORDER BY n.id; {mark}",
    )
    function(
        "delete",
        f"{pending} SELECT o.id, 'remove', o.device_id, statement_timestamp() FROM old_rows o "
        f"WHERE o.removed_at IS NULL ORDER BY o.id; {mark}",
    )
    # At commit: take the lock, number the pending changes, commit (which releases it). Another transaction sees
    # only its own pending rows and markers (uncommitted ones are invisible), so these deletes touch only ours.
    function(
        "flush",
        f"PERFORM pg_advisory_xact_lock({ADVISORY_LOCK}); "
        "INSERT INTO camera_changes (camera_id, op, gb_id, at) "
        "SELECT camera_id, op, gb_id, at FROM camera_changes_pending ORDER BY ord; "
        "DELETE FROM camera_changes_pending; DELETE FROM camera_changes_flush; "
        f"PERFORM set_config('{PENDING_FLAG}', '', true);",
    )
    op.execute(
        "CREATE TRIGGER camera_changes_insert AFTER INSERT ON cameras REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION camera_changes_insert()"
    )
    op.execute(
        "CREATE TRIGGER camera_changes_update AFTER UPDATE ON cameras REFERENCING OLD TABLE AS old_rows "
        "NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION camera_changes_update()"
    )
    op.execute(
        "CREATE TRIGGER camera_changes_delete AFTER DELETE ON cameras REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION camera_changes_delete()"
    )
    op.execute(
        "CREATE CONSTRAINT TRIGGER camera_changes_flush AFTER INSERT ON camera_changes_flush "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION camera_changes_flush()"
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    # SQLite: an INTEGER PRIMARY KEY is the rowid (BIGINT would not be); PostgreSQL: BIGSERIAL.
    seq_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "camera_changes",
        sa.Column("seq", seq_type, autoincrement=True, nullable=False),
        sa.Column("camera_id", sa.Integer(), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("gb_id", sa.String(64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_camera_changes"),
    )
    now = "CURRENT_TIMESTAMP" if dialect != "sqlite" else "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"
    op.execute(
        f"INSERT INTO camera_changes (camera_id, op, at) SELECT id, 'create', {now} FROM cameras "
        "WHERE removed_at IS NULL ORDER BY id"
    )
    if dialect == "postgresql":
        # A transaction's changes until its commit numbers them (UNLOGGED: nothing in them outlives it).
        op.execute(
            "CREATE UNLOGGED TABLE camera_changes_pending (ord BIGSERIAL PRIMARY KEY, camera_id INTEGER NOT NULL, "
            "op VARCHAR(8) NOT NULL, gb_id VARCHAR(64), at TIMESTAMP WITH TIME ZONE NOT NULL)"
        )
        op.execute("CREATE UNLOGGED TABLE camera_changes_flush (id BIGSERIAL PRIMARY KEY)")
    create_triggers()


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    drop_triggers(dialect)
    if dialect == "postgresql":
        op.execute("DROP TABLE IF EXISTS camera_changes_flush")
        op.execute("DROP TABLE IF EXISTS camera_changes_pending")
    op.drop_table("camera_changes")
