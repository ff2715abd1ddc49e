"""GB/T 28181 access (read scope): the devices and lower platforms registered to vms over SIP (vms.gb28181)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic_core import to_json

from api.common import inventory_of
from api.deps import require_reader
from vms.gb28181.devices import list_devices
from vms.inventory.service import Inventory

router = APIRouter(tags=["gb28181"])
Inv = Annotated[Inventory, Depends(inventory_of)]


@router.get("/api/v1/gb28181/devices", dependencies=[Depends(require_reader)])
def devices(
    inv: Inv, online: Annotated[bool | None, Query(description="only the devices online (true) or offline")] = None
) -> Response:
    """``{"items": [...], "total", "online"}``: each device's ID, transport, source address and port, online,
    last_seen, registered_at, expires_at, offline_deadline, keepalive interval and count, its last catalog (at,
    items, complete), user agent, ``source`` (``gb28181:<id>``, the provenance of the cameras its catalog lists) and
    ``channels`` (those cameras)."""
    items: list[dict[str, Any]] = list_devices(inv, online=online)
    body = {"items": items, "total": len(items), "online": sum(1 for i in items if i["online"])}
    return Response(to_json(body), media_type="application/json")
