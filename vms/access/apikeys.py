"""API keys: shown once at creation, stored as SHA-256 hashes (keys are 256-bit random, so no salt needed)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from vms.errors import Conflict, Unauthorized, ValidationFailed
from vms.store import repository as repo
from vms.store.models import ApiKey, utcnow

if TYPE_CHECKING:
    from vms.inventory.service import Inventory

log = logging.getLogger(__name__)

ROLES = ("read", "write")
# "Last used" is kept to this resolution: at most one write per key per minute, never one per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Recording a use never holds up the request: it waits this long for the database, then gives up until next time.
LAST_USED_WAIT_S = 0.2


@dataclass(frozen=True, slots=True)
class KeyInfo:
    name: str
    role: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(inv: Inventory, name: str, role: str, *, actor: str) -> str:
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}")
    key = "vms_" + secrets.token_urlsafe(32)
    with inv.session() as s:
        if s.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
            raise Conflict(f"an API key named {name!r} exists")
        s.add(ApiKey(name=name, key_hash=hash_key(key), role=role))
        repo.audit(s, actor=actor, action="apikey.create", target=name, details={"role": role})
    return key


def revoke_key(inv: Inventory, name: str, *, actor: str) -> None:
    with inv.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)))
        if row is None:
            raise ValidationFailed(f"no active API key named {name!r}")
        row.revoked_at = utcnow()
        repo.audit(s, actor=actor, action="apikey.revoke", target=name)


def list_keys(inv: Inventory) -> list[dict[str, Any]]:
    """Every key, revoked ones too: name, role, created, last used, revoked. Never the key or its hash."""
    with inv.session(write=False) as s:
        return [
            {
                "name": k.name,
                "role": k.role,
                "created_at": _aware(k.created_at),
                "last_used_at": _aware(k.last_used_at),
                "revoked_at": _aware(k.revoked_at),
            }
            for k in s.scalars(select(ApiKey).order_by(ApiKey.name))
        ]


def authenticate(inv: Inventory, key: str) -> KeyInfo:
    digest = hash_key(key)
    with inv.session(write=False) as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None)))
    # The lookup is by hash, so timing reveals nothing about the key; compare again to be explicit.
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        raise Unauthorized("unknown or revoked API key")
    now = utcnow()
    last = _aware(row.last_used_at)
    if last is None or now - last >= LAST_USED_RESOLUTION:
        _record_use(inv, row.id, now)
    return KeyInfo(row.name, row.role)


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
