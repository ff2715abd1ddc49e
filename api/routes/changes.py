"""The change feed: every create, update, removal and status change of a camera in commit order (read scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic_core import to_json

from api.common import inventory_of, public_camera
from api.deps import require_reader
from vms.inventory import changes
from vms.inventory.service import Inventory

router = APIRouter()
Inv = Annotated[Inventory, Depends(inventory_of)]

Since = Annotated[
    int, Query(ge=0, le=2**62, description="the last seq the client applied (0: from the start, every camera)")
]
PageSize = Annotated[int, Query(ge=1, le=changes.MAX_PAGE, description=f"at most {changes.MAX_PAGE} changes")]


@router.get("/api/v1/changes", dependencies=[Depends(require_reader)])
def list_changes(inv: Inv, since: Since = 0, limit: PageSize = 500) -> Response:
    """The changes after ``since``, oldest first: ``{"items", "next", "more", "head"}``.

    An item is ``{"seq", "op" (create|update|status), "camera_id", "at", "record"}`` with the camera's current
    public record (no credential), or a tombstone ``{"seq", "op": "remove", "camera_id", "gb_id", "at"}``. Apply
    the items in order (upsert the record, delete on a tombstone), then ask again with ``since=next``; while
    ``more`` is true there are more already. ``next`` is the cursor to keep: after any interruption, asking from
    it again misses nothing (sequence order is commit order). ``head``: the latest seq.
    """
    page = changes.page(inv, since, limit)
    for item in page.items:
        if "record" in item:
            item["record"] = public_camera(item["record"])
    body = {"items": page.items, "next": page.next, "more": page.more, "head": page.head}
    return Response(to_json(body), media_type="application/json")
