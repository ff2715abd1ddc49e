"""What every route module shares: parameter types with their bounds, the inventory of the app, and what the API
may show of a camera."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import Path as PathParam
from fastapi import Query, Request

from vms.catalog.columns import login_free
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
    """What the API may show of a camera: never the credential reference, URL credentials or extra columns named
    like a login (vms.catalog.columns.login_role). ``row`` is the caller's own (changed in place); a row without
    URLs (most of a ledger) is not copied."""
    for name in URI_FIELDS:
        if row.get(name):
            row = without_url_credentials(row)
            break
    row.pop("credential_id", None)
    extra = row.get("extra")
    if extra and isinstance(extra, dict) and (clean := login_free(extra)) is not extra:
        row["extra"] = clean  # a login column an import before their recognition left in extra
    return row


def etag_for(request: Request, head: int, *extra: bytes) -> str:
    """A weak ETag for a read of the cameras: ``W/"<head>-<hash>"``, ``head`` the change feed's latest sequence
    (vms.inventory.changes.head: any write to a camera moves it) and the hash of the path and query (and of
    ``extra``, for what the feed does not cover). Equal ETags: the same answer."""
    h = hashlib.blake2b(digest_size=8)
    h.update(request.url.path.encode())
    h.update(b"?" + request.url.query.encode())
    for part in extra:
        h.update(b"\0" + part)
    return f'W/"{head}-{h.hexdigest()}"'


def not_modified(request: Request, etag: str) -> bool:
    """True when the request's If-None-Match names ``etag`` (or is ``*``): answer 304 without a body."""
    wanted = request.headers.get("if-none-match")
    if not wanted:
        return False
    tags = {t.strip().removeprefix("W/") for t in wanted.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags
