"""The databases benchmarks run on: an upgraded Inventory on SQLite or a throw-away PostgreSQL, or a scratch
database on the session's PostgreSQL. Shared by the benchmark modules."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine

from tests.services import ServiceUnavailable, start_postgres
from vms.inventory.service import Inventory
from vms.settings import Settings


@contextmanager
def bench_inventory(kind: str, tmp_path: Path) -> Iterator[Inventory]:
    """An upgraded Inventory on SQLite in tmp_path, or ("postgresql") on a PostgreSQL started for it and stopped
    after (the test is skipped when none can be started)."""
    url = f"sqlite:///{tmp_path / 'vms.sqlite3'}"
    pg = None
    if kind == "postgresql":
        try:
            pg = start_postgres()
        except ServiceUnavailable as exc:
            pytest.skip(str(exc))
        url = pg.url
    settings = Settings(
        database_url=url, data_dir=tmp_path / "data", secret_key=Fernet.generate_key().decode(), _env_file=None
    )
    inv = Inventory(settings)
    inv.upgrade()
    try:
        yield inv
    finally:
        inv.engine.dispose()
        if pg is not None:
            pg.stop()


@contextmanager
def scratch_database(server_url: str, prefix: str, options: str = "") -> Iterator[str]:
    """The URL of a new database (named prefix + random hex, created with the given CREATE DATABASE options) on the
    PostgreSQL server of server_url, dropped after."""
    base = server_url.rsplit("/", 1)[0]
    name = prefix + uuid.uuid4().hex[:10]
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}{' ' + options if options else ''}")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()
