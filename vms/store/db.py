"""Engine, sessions and schema migrations (Alembic, shipped inside the package)."""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from vms.errors import Busy

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str, *, lock_timeout: float = 5.0, **kw: Any) -> Engine:
    """An engine whose writes wait at most ``lock_timeout`` seconds for another writer (then: Busy).

    SQLite has one writer at a time: a write during a long import waits that long, then fails cleanly. PostgreSQL
    writes proceed side by side; only a wait for the same rows (or the quality counters) is bounded.
    """
    wait_ms = max(1, int(lock_timeout * 1000))
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
        if path and path != ":memory:" and not path.startswith("file:"):
            secure_sqlite_files(Path(path))
        engine = create_engine(url, connect_args={"timeout": lock_timeout}, **kw)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the API read while an import or sweep writes; NORMAL sync is safe with WAL.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={wait_ms}")
            cur.close()

        return engine
    if not url.startswith("postgresql"):
        return create_engine(url, pool_pre_ping=True, **kw)
    args = dict(kw.pop("connect_args", {}))
    # jit=off: PostgreSQL compiles a query whose estimated cost passes jit_above_cost (any grouped pass over 100,000
    # cameras) with LLVM first, 0.3-2 s of CPU (measured: the coverage figures' cold read, 1.2 s for a 30 ms query);
    # this application's queries are short and their plans change with the data: the compilation never pays off.
    args["options"] = f"{args.get('options', '')} -c lock_timeout={wait_ms} -c jit=off".strip()
    kw["connect_args"] = args
    engine = create_engine(url, **kw)
    # Instead of pool_pre_ping's round trip (a SELECT 1 before every request's first statement): a pooled connection
    # that the server ended (a restart, pg_terminate_backend, idle_session_timeout) has its socket readable (the
    # server's last message, then end of file), where an idle one has nothing to read. A local poll, no round trip.
    event.listen(engine, "checkout", _drop_if_ended)
    return engine


def upsert_insert(conn: Connection, table: Table) -> Any:
    """INSERT for ``table`` in the connection's dialect, which has ON CONFLICT (``on_conflict_do_update`` /
    ``on_conflict_do_nothing``): PostgreSQL's, else SQLite's."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _drop_if_ended(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    try:
        if dbapi_conn.closed:
            ended = True
        else:
            poll = select.poll()  # not select.select: that refuses descriptors above 1023
            poll.register(dbapi_conn.fileno(), select.POLLIN)
            ended = bool(poll.poll(0))
    except Exception:  # a closed connection's fileno() raises: ended as well
        ended = True
    if ended:
        raise DisconnectionError("the server ended this pooled connection")  # the pool connects afresh


def read_statements(session: Session) -> None:
    """A read made of separate statements, at the start of its session: on PostgreSQL without BEGIN and ROLLBACK
    (two round trips). Under READ COMMITTED each statement reads its own snapshot either way."""
    if not session.in_transaction() and session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


# --- files at rest -------------------------------------------------------------------------------------

SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def private_dir(path: Path, *, fix: bool = True) -> None:
    """Create ``path`` readable by its owner only (0700), or tighten an existing one of ours that is not."""
    if not path.exists():
        try:
            path.mkdir(parents=True, mode=0o700)
        except FileExistsError:
            pass  # made meanwhile by another thread (a sweep writes its samples from several): as if it was there
        else:
            path.chmod(0o700)  # mkdir's mode is filtered by the umask; be exact
            return
    if fix:
        _tighten(path, 0o700)


def secure_sqlite_files(path: Path) -> None:
    """The database and its WAL files: owner-only (0600). SQLite gives -wal and -shm the database's mode."""
    if not path.parent.exists():
        private_dir(path.parent)
    if not path.exists():
        # An empty file is a new database to SQLite; creating it here fixes its mode before any data lands.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    for suffix in SQLITE_SUFFIXES:
        _tighten(path.with_name(path.name + suffix), 0o600)


def _tighten(path: Path, mode: int) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        path.chmod(mode)
        log.warning("%s was readable by others (mode %03o): now %03o", path, st.st_mode & 0o777, mode)


# --- errors --------------------------------------------------------------------------------------------

_BUSY_SQLSTATES = {"55P03", "40P01", "40001"}  # lock_not_available, deadlock_detected, serialization_failure
_BUSY_SQLITE = ("database is locked", "database table is locked", "database is busy")


def is_busy(exc: BaseException) -> bool:
    """A write gave up waiting for another (SQLite's lock, PostgreSQL's lock_timeout or a deadlock)."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state in _BUSY_SQLSTATES:
        return True
    return isinstance(exc, OperationalError) and any(m in str(orig).lower() for m in _BUSY_SQLITE)


@contextmanager
def busy_as_domain_error(retry_after: int = 5) -> Iterator[None]:
    """Turn a lock wait that timed out into the domain's Busy (HTTP 503 with Retry-After); nothing was written."""
    try:
        yield
    except DBAPIError as exc:
        if is_busy(exc):
            raise Busy(
                "the database is busy with another write (an import?); nothing was changed, try again shortly",
                retry_after=retry_after,
            ) from exc
        raise


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to run on every start."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
