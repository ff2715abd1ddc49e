"""Access: who the caller is (any key) and the audit log (admin keys only)."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.common import Limit, inventory_of
from api.deps import Caller, admin_access, read_access
from vms.inventory.service import Inventory
from vms.store import repository as repo

router = APIRouter()
Inv = Annotated[Inventory, Depends(inventory_of)]


@router.get("/api/v1/whoami")
def whoami(caller: Annotated[Caller, Depends(read_access)]) -> dict[str, Any]:
    """The key's name and scope (read, operate or admin) and the address the server sees; never the key."""
    return {"actor": caller.actor(), "name": caller.name, "scope": caller.scope, "address": caller.address}


@router.get("/api/v1/audit", dependencies=[Depends(admin_access)])
def audit_log(
    inv: Inv,
    limit: Limit = 100,
    before: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="entries older than this id (next page)")
    ] = None,
) -> dict[str, Any]:
    """The audit log, newest first (admin scope): who, what, when and from where for every write and operation."""
    with inv.session(write=False) as s:
        rows = repo.audit_entries(s, limit, before=before)
        items = [
            {
                "id": e.id,
                "at": (e.at if e.at.tzinfo else e.at.replace(tzinfo=UTC)).isoformat(),  # SQLite: naive UTC
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "details": e.details,
                "address": e.address,
            }
            for e in rows
        ]
    return {"limit": limit, "items": items, "next": items[-1]["id"] if len(items) == limit else None}
