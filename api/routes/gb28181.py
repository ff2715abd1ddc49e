"""GB/T 28181 access: the devices and lower platforms registered to vms over SIP (vms.gb28181), read scope; a Catalog
query on demand, operate scope, audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic_core import to_json

from api.common import inventory_of
from api.deps import Caller, operate_access, require_reader
from vms.gb28181.devices import device, list_devices, request_catalog
from vms.inventory.service import Inventory

router = APIRouter(tags=["gb28181"])
Inv = Annotated[Inventory, Depends(inventory_of)]
DeviceId = Annotated[str, PathParam(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z]+$")]


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


@router.get("/api/v1/gb28181/devices/{device_id}", dependencies=[Depends(require_reader)])
def one_device(inv: Inv, device_id: DeviceId) -> Response:
    """One device as the list gives it, with ``catalog_requested_at`` (a catalog asked for on demand and not yet
    taken by the SIP server) and ``catalog_error`` (why the last one taken failed). 404 when it never registered."""
    return Response(to_json(device(inv, device_id)), media_type="application/json")


@router.post("/api/v1/gb28181/devices/{device_id}/catalog", status_code=202)
def ask_catalog(inv: Inv, device_id: DeviceId, caller: Annotated[Caller, Depends(operate_access)]) -> Response:
    """Ask the device for its Catalog now (operate scope; audited ``gb28181.catalog``). 202: the SIP server's
    process (`vms gb28181 serve` or `vms run`) takes the request within a second or two; follow it with GET
    ``follow`` (the Location): ``catalog_requested_at`` clears when taken, then ``catalog_at`` moves past
    ``requested_at`` with the answer's ``catalog_items`` and ``catalog_complete``, or ``catalog_error`` says why it
    failed. 404 for a device that never registered, 409 for one offline."""
    at = request_catalog(inv, device_id, actor=caller.actor(), address=caller.address)
    follow = f"/api/v1/gb28181/devices/{device_id}"
    body = {"device_id": device_id, "requested_at": at, "follow": follow}
    return Response(to_json(body), status_code=202, media_type="application/json", headers={"Location": follow})
