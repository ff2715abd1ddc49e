"""camera text search through an index: SQLite FTS5 (trigram tokenizer), PostgreSQL pg_trgm (GIN)

SQLite: ``camera_search``, an external-content FTS5 table over the searchable columns of the cameras that are not
removed (rowid = cameras.id), kept current by triggers on ``cameras``, so that every write path (the ORM, Core,
raw DBAPI executemany of the imports) keeps it in step. A removed camera leaves the index; searches that include
removed cameras scan those (few) rows besides.

PostgreSQL: the pg_trgm extension (shipped with PostgreSQL, a trusted extension since 13) and one GIN index over
the same columns, joined into one text by U+001F (the expression is ``vms.store.repository.SEARCH_DOCUMENT``; both
must stay identical for the planner to use the index). pg_trgm indexes CJK text when the database's LC_CTYPE is a
UTF-8 locale (Debian's default, e.g. C.UTF-8 or zh_CN.UTF-8); under LC_CTYPE=C it sees ASCII only and such
searches are a scan (still exact).

Note for later migrations: a batch (copy-and-move) alteration of ``cameras`` on SQLite drops its triggers; create
them again (``create_sqlite_search``) after one.

Revision ID: 0004_camera_search
Revises: 0003_apikey_last_used
Create Date: 2026-11-29 21:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0004_camera_search"
down_revision = "0003_apikey_last_used"
branch_labels = None
depends_on = None

COLUMNS = ("name", "device_id", "local_id", "address", "ip_address", "mac")
# Joined by U+001F (unit separator), which a search for other text cannot match across.
DOCUMENT = " || E'\\x1f' || ".join(f"coalesce({c}, '')" for c in COLUMNS)


def _values(prefix: str) -> str:
    return ", ".join(f"{prefix}.{c}" for c in COLUMNS)


def create_sqlite_search() -> None:
    cols = ", ".join(COLUMNS)
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in COLUMNS)
    op.execute(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS camera_search USING fts5({cols}, content='cameras', "
        "content_rowid='id', tokenize='trigram', columnsize=0)"
    )
    # A row here: the writer indexes the rows it inserts itself, in one statement (the bulk insert of an import,
    # vms.store.repository.insert_cameras): FTS5 flushes its pending terms at every statement, so indexing row by
    # row from a trigger during an executemany costs several times more. Only ever set inside a transaction.
    op.execute("CREATE TABLE IF NOT EXISTS camera_search_deferred (writer INTEGER)")
    op.execute(
        f"CREATE TRIGGER IF NOT EXISTS cameras_search_insert AFTER INSERT ON cameras WHEN NEW.removed_at IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM camera_search_deferred) "
        f"BEGIN INSERT INTO camera_search(rowid, {cols}) VALUES (NEW.id, {_values('NEW')}); END"
    )
    op.execute(
        f"CREATE TRIGGER IF NOT EXISTS cameras_search_delete AFTER DELETE ON cameras WHEN OLD.removed_at IS NULL "
        f"BEGIN INSERT INTO camera_search(camera_search, rowid, {cols}) VALUES ('delete', OLD.id, {_values('OLD')}); "
        "END"
    )
    # Out of the index when removed, back in when listed again; re-indexed only when a searchable value changed.
    op.execute(
        f"CREATE TRIGGER IF NOT EXISTS cameras_search_update AFTER UPDATE OF {cols}, removed_at ON cameras "
        f"WHEN (OLD.removed_at IS NULL) <> (NEW.removed_at IS NULL) "
        f"OR (NEW.removed_at IS NULL AND ({changed})) "
        f"BEGIN "
        f"INSERT INTO camera_search(camera_search, rowid, {cols}) "
        f"SELECT 'delete', OLD.id, {_values('OLD')} WHERE OLD.removed_at IS NULL; "
        f"INSERT INTO camera_search(rowid, {cols}) SELECT NEW.id, {_values('NEW')} WHERE NEW.removed_at IS NULL; "
        "END"
    )
    op.execute("INSERT INTO camera_search(camera_search) VALUES ('delete-all')")
    op.execute(f"INSERT INTO camera_search(rowid, {cols}) SELECT id, {cols} FROM cameras WHERE removed_at IS NULL")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        create_sqlite_search()
    elif dialect == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(f"CREATE INDEX IF NOT EXISTS ix_cameras_search ON cameras USING gin (({DOCUMENT}) gin_trgm_ops)")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS cameras_search_{name}")
        op.execute("DROP TABLE IF EXISTS camera_search")
        op.execute("DROP TABLE IF EXISTS camera_search_deferred")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_cameras_search")
