"""API keys: shown once at creation, stored as SHA-256 hashes (keys are 256-bit random, so no salt needed)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from vms.errors import Conflict, Unauthorized, ValidationFailed
from vms.store import repository as repo
from vms.store.models import ApiKey, utcnow

if TYPE_CHECKING:
    from vms.inventory.service import Inventory

ROLES = ("read", "write")


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


def authenticate(inv: Inventory, key: str) -> KeyInfo:
    digest = hash_key(key)
    with inv.session(write=False) as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None)))
    # The lookup is by hash, so timing reveals nothing about the key; compare again to be explicit.
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        raise Unauthorized("unknown or revoked API key")
    return KeyInfo(row.name, row.role)
