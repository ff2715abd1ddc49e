"""camera search on PostgreSQL: the trigram index reads '.', ':' and '-' as letters

pg_trgm splits words at punctuation: an IP prefix such as "10.0.23." gave the trigrams of "10", "0" and "23", which
most cameras have (every IP of a 10.x network), so the index returned a thousand candidates to check for 256
matches. The index now covers the same joined text with '.', ':' and '-' translated to U+01C0-U+01C2 (letters to
pg_trgm under a UTF-8 LC_CTYPE): an IP, a MAC or a department number is one word and its trigrams are rare. The
expression is ``vms.store.repository.SEARCH_INDEXED``; both must stay identical for the planner to use the index.
Searches keep their results: text with those characters is also checked against the untranslated text.

SQLite (FTS5 trigram tokenizer, which keeps punctuation) is unchanged.

Revision ID: 0008_camera_search_punctuation
Revises: 0007_observation_raw_digest
Create Date: 2026-11-29 23:15:00
"""

from __future__ import annotations

from alembic import op

revision = "0008_camera_search_punctuation"
down_revision = "0007_observation_raw_digest"
branch_labels = None
depends_on = None

COLUMNS = ("name", "device_id", "local_id", "address", "ip_address", "mac")
DOCUMENT = " || E'\\x1f' || ".join(f"coalesce({c}, '')" for c in COLUMNS)
INDEXED = f"translate({DOCUMENT}, '.:-', '\u01c0\u01c1\u01c2')"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_cameras_search")
    op.execute(f"CREATE INDEX ix_cameras_search ON cameras USING gin (({INDEXED}) gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_cameras_search")
    op.execute(f"CREATE INDEX ix_cameras_search ON cameras USING gin (({DOCUMENT}) gin_trgm_ops)")
