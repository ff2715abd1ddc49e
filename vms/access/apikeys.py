"""API keys: shown once at creation, stored as SHA-256 hashes (keys are 256-bit random, so no salt needed).

Each key has a scope: ``read`` < ``operate`` < ``admin``; a higher scope includes the lower ones. ``operate`` edits
cameras and starts operations (discovery, sweeps, sampling, trials); ``admin`` also reads the audit log. The role
``write`` of earlier versions is ``operate`` (the migration 0015 renamed the stored keys; the name is still accepted).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from vms.errors import Conflict, Forbidden, Unauthorized, ValidationFailed
from vms.store import repository as repo
from vms.store.models import ApiKey, utcnow

if TYPE_CHECKING:
    from vms.inventory.service import Inventory

log = logging.getLogger(__name__)

SCOPES = ("read", "operate", "admin")  # each includes the ones before it
ALIASES = {"write": "operate"}  # the roles of earlier versions
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}
ROLES = SCOPES  # the former name
# A key's name: letters (any script), digits and . _ @ - (it appears in the audit log as "apikey:NAME").
_NAME = re.compile(r"\w[\w.@-]{0,127}")
# No key of ours is longer; a longer header is refused before it is hashed.
MAX_KEY_LENGTH = 256
# "Last used" is kept to this resolution: at most one write per key per minute, never one per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Recording a use never holds up the request: it waits this long for the database, then gives up until next time.
LAST_USED_WAIT_S = 0.2


@dataclass(frozen=True, slots=True)
class KeyInfo:
    name: str
    scope: str


@dataclass(frozen=True)
class Caller:
    """Who is asking: a key's name and scope (or an anonymous reader, or the CLI) and from where (the client's IP)."""

    name: str
    scope: str
    address: str | None
    kind: str = "apikey"  # "apikey": a key's holder; "": anonymous or the command line, named as they are

    def actor(self) -> str:
        """As the audit log names it: "apikey:NAME", "anonymous" or "cli"."""
        return f"{self.kind}:{self.name}" if self.kind else self.name

    def allows(self, scope: str) -> bool:
        return allows(self.scope, scope)


def anonymous(address: str | None) -> Caller:
    return Caller("anonymous", "read", address, kind="")


def cli_address() -> str:
    """From where a command-line change comes, for the audit log: "cli@<host name>"."""
    return f"cli@{socket.gethostname()}"[:255]


def cli_caller() -> Caller:
    """The command line: whoever may run it owns the database, so it may do anything."""
    return Caller("cli", "admin", cli_address(), kind="")


def normalise_scope(scope: str) -> str:
    """A scope by its name, or an earlier role's ("write" is operate); anything else is a ValidationFailed."""
    name = ALIASES.get(scope.strip().lower(), scope.strip().lower())
    if name not in _RANK:
        raise ValidationFailed(f"scope must be one of {', '.join(SCOPES)} (not {scope[:32]!r})")
    return name


def allows(have: str, need: str) -> bool:
    """Whether a key of scope ``have`` may do what needs ``need`` (an unknown stored scope allows nothing)."""
    rank = _RANK.get(ALIASES.get(have, have))
    return rank is not None and rank >= _RANK[need]


def require(key: KeyInfo, need: str) -> None:
    if not allows(key.scope, need):
        raise Forbidden(f"key {key.name!r} has scope {key.scope}; this needs {need}")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(inv: Inventory, name: str, scope: str, *, actor: str, address: str | None = None) -> str:
    """A new key of ``scope`` (read, operate, admin; "write" means operate): returned once, stored as its hash."""
    scope = normalise_scope(scope)
    if not _NAME.fullmatch(name):
        raise ValidationFailed(
            f"key name {name[:40]!r}: 1-128 letters, digits and . _ @ - (starting with a letter or digit)"
        )
    key = "vms_" + secrets.token_urlsafe(32)
    with inv.session() as s:
        if s.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
            raise Conflict(f"an API key named {name!r} exists")
        s.add(ApiKey(name=name, key_hash=hash_key(key), scope=scope))
        repo.audit(s, actor=actor, action="apikey.create", target=name, details={"scope": scope}, address=address)
    return key


def revoke_key(inv: Inventory, name: str, *, actor: str, address: str | None = None) -> None:
    with inv.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)))
        if row is None:
            raise ValidationFailed(f"no active API key named {name!r}")
        row.revoked_at = utcnow()
        repo.audit(s, actor=actor, action="apikey.revoke", target=name, details={"scope": row.scope}, address=address)


def list_keys(inv: Inventory) -> list[dict[str, Any]]:
    """Every key, revoked ones too: name, scope, created, last used, revoked. Never the key or its hash."""
    with inv.session(write=False) as s:
        return [
            {
                "name": k.name,
                "scope": k.scope,
                "created_at": _aware(k.created_at),
                "last_used_at": _aware(k.last_used_at),
                "revoked_at": _aware(k.revoked_at),
            }
            for k in s.scalars(select(ApiKey).order_by(ApiKey.name))
        ]


# One statement by the unique index on key_hash, in the driver's own terms: per request, where SQLAlchemy's
# statement building, result processing and transaction handling cost several times the read itself.
_LOOKUP = "SELECT id, name, scope, key_hash, last_used_at FROM api_keys WHERE key_hash = {} AND revoked_at IS NULL"


def _find(inv: Inventory, digest: str) -> tuple[Any, ...] | None:
    """The live key's (id, name, scope, key_hash, last_used_at), or None."""
    dialect = inv.engine.dialect
    if dialect.name == "sqlite" or dialect.driver == "psycopg":
        pooled = inv.engine.raw_connection()  # the pool's checks (a dead PostgreSQL connection) run as usual
        try:
            dbapi: Any = pooled.driver_connection
            if dialect.name == "sqlite":
                cur = dbapi.cursor()
                try:
                    cur.execute(_LOOKUP.format("?"), (digest,))
                    row = cur.fetchone()
                finally:
                    cur.close()
            else:
                # One statement outside a transaction: no BEGIN and no ROLLBACK round trip. The connection's mode is
                # put back before it returns to the pool.
                dbapi.autocommit = True
                try:
                    row = dbapi.execute(_LOOKUP.format("%s"), (digest,)).fetchone()
                finally:
                    dbapi.autocommit = False
        finally:
            pooled.close()
        return tuple(row) if row is not None else None
    with inv.engine.connect() as conn:  # another driver: through SQLAlchemy
        found = conn.execute(
            select(ApiKey.id, ApiKey.name, ApiKey.scope, ApiKey.key_hash, ApiKey.last_used_at).where(
                ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None)
            )
        ).first()
    return tuple(found) if found is not None else None


def authenticate(inv: Inventory, key: str) -> KeyInfo:
    """The live key whose hash this is (one read by the unique index on the hash), else Unauthorized."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise Unauthorized("unknown or revoked API key")
    digest = hash_key(key)
    row = _find(inv, digest)
    # The lookup is by hash, so timing reveals nothing about the key; compare again to be explicit.
    if row is None or not hmac.compare_digest(row[3], digest):
        raise Unauthorized("unknown or revoked API key")
    key_id, name, scope, _digest, last_used = row
    now = utcnow()
    last = _aware(_as_datetime(last_used))
    if last is None or now - last >= LAST_USED_RESOLUTION:
        _record_use(inv, key_id, now)
    return KeyInfo(name, ALIASES.get(scope, scope))


def _as_datetime(value: Any) -> datetime | None:
    """A datetime as the driver gives it: SQLite's is text ("2026-11-30 02:57:15.123456", as SQLAlchemy wrote it)."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None  # unreadable: recorded afresh


def _aware(at: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; they are stored in UTC."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def _record_use(inv: Inventory, key_id: int, now: datetime) -> None:
    """Best effort: when the database is busy (an import holds SQLite's write lock), skip rather than wait."""
    try:
        with inv.engine.connect() as conn:
            dialect = conn.dialect.name
            if dialect == "sqlite":
                previous = int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0)
                conn.exec_driver_sql(f"PRAGMA busy_timeout={int(LAST_USED_WAIT_S * 1000)}")
            elif dialect == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(LAST_USED_WAIT_S * 1000)}ms'")
            try:
                conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
                conn.commit()
            finally:
                if conn.in_transaction():
                    conn.rollback()
                if dialect == "sqlite":
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={previous}")
    except OperationalError as exc:
        log.debug("API key %d: last use not recorded now (%s)", key_id, exc.orig)
