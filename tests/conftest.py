"""Shared fixtures. Every database test runs twice: on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from tests.services import RunningService, ServiceUnavailable, services_required, start_postgres
from vms.inventory.service import Inventory
from vms.settings import Settings

# The real, public data the tests read (sources and licences in tests/data/SOURCES.md): in the repository, so a
# fresh clone tests with nothing beside it.
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def test_data() -> Path:
    return TEST_DATA


def _skip_or_fail(reason: str) -> None:
    if services_required():
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres() -> Iterator[RunningService]:
    try:
        svc = start_postgres()
    except ServiceUnavailable as exc:
        _skip_or_fail(str(exc))
        raise
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def pg_template(postgres: RunningService) -> str:
    """A database migrated once; each test copies it (CREATE DATABASE ... TEMPLATE is fast)."""
    from vms.store.db import make_engine, upgrade

    admin = create_engine(postgres.url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    name = "vms_template"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine = make_engine(postgres.url.rsplit("/", 1)[0] + "/" + name)
    upgrade(engine)
    engine.dispose()
    admin.dispose()
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_database(request, request.param, tmp_path / "vms.sqlite3")


def fresh_database(request: pytest.FixtureRequest, backend: str, sqlite_path: Path) -> Iterator[str]:
    """An empty, migrated database on ``backend`` (a file at ``sqlite_path``, or a copy of the PostgreSQL template)."""
    if backend == "sqlite":
        yield f"sqlite:///{sqlite_path}"
        return
    postgres: RunningService = request.getfixturevalue("postgres")
    template: str = request.getfixturevalue("pg_template")
    base = postgres.url.rsplit("/", 1)[0]
    name = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE {template}"))
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        data_dir=tmp_path / "data",
        secret_key=Fernet.generate_key().decode(),
        governed_region="371311",
        _env_file=None,
    )


@pytest.fixture
def inventory(settings: Settings) -> Iterator[Inventory]:
    inv = Inventory(settings)
    inv.upgrade()
    try:
        yield inv
    finally:
        inv.engine.dispose()
