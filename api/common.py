"""What every route module shares: parameter types with their bounds, the inventory of the app, and what the API
may show of a camera."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path as PathParam
from fastapi import Query, Request

from vms.catalog.domain import URI_FIELDS, without_url_credentials
from vms.inventory.service import Inventory

MAX_LIMIT = 1000
MAX_OFFSET = 10_000_000

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"page size, at most {MAX_LIMIT}")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")]
RegionCode = Annotated[str | None, Query(max_length=64, description="region code, sub-regions included")]
SourceName = Annotated[str | None, Query(max_length=255)]
Search = Annotated[
    str | None,
    Query(max_length=100, description="text in the name, GB ID, department number, address, IP or MAC (literal)"),
]
CameraRef = Annotated[str, PathParam(min_length=1, max_length=64, description="id, GB ID, department number or MAC")]


async def inventory_of(request: Request) -> Inventory:
    """The app's inventory (``app.state.inventory``, set by :func:`api.app.create_app`). async: a sync dependency
    would cost every request a hop to a worker thread."""
    inv: Inventory = request.app.state.inventory
    return inv


def public_camera(row: dict[str, Any]) -> dict[str, Any]:
    """What the API may show of a camera: never the credential reference or URL credentials. ``row`` is the
    caller's own (changed in place); a row without URLs (most of a ledger) is not copied."""
    for name in URI_FIELDS:
        if row.get(name):
            row = without_url_credentials(row)
            break
    row.pop("credential_id", None)
    return row
