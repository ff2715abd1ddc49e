"""Cameras: lists, one camera, edits; counts by a field; data quality; regions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic_core import to_json

from api.common import (
    MAX_LIMIT,
    CameraRef,
    Limit,
    Offset,
    RegionCode,
    Search,
    SourceName,
    inventory_of,
    public_camera,
)
from api.deps import Caller, operate_access, require_reader
from api.schemas import CameraEdit, CameraPage
from vms.errors import ValidationFailed
from vms.inventory.quality import RULES
from vms.inventory.service import Inventory
from vms.store import repository as repo

router = APIRouter()
StatsBy = Literal["region", "status", "source", "manufacturer"]
Inv = Annotated[Inventory, Depends(inventory_of)]

reader = [Depends(require_reader)]


@router.get("/api/v1/cameras", dependencies=reader, response_model=CameraPage)
def list_cameras(
    inv: Inv,
    region: RegionCode = None,
    status: Literal["ON", "OFF"] | None = None,
    source: SourceName = None,
    search: Search = None,
    include_removed: bool = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    flt = repo.CameraFilter(
        region=region or None,
        status=status,
        source=source or None,
        search=(search or "").strip() or None,
        include_removed=include_removed,
    )
    found = inv.camera_page(flt, limit=limit, offset=offset)
    # Plain dicts with str keys, serialised once (pydantic-core, the encoder FastAPI would use) and returned as
    # they are: validating 100 rows of 60 fields against the response model again cost 30-50 ms a page.
    page = {
        "total": found.total,
        "total_exact": found.exact,
        "limit": limit,
        "offset": offset,
        "items": [public_camera(r) for r in found.rows],
    }
    return Response(to_json(page), media_type="application/json")


@router.get("/api/v1/cameras/{ref}", dependencies=reader)
def show_camera(inv: Inv, ref: CameraRef) -> dict[str, Any]:
    data = inv.show_camera(ref)
    data["record"] = public_camera(data["record"])
    data["problems"] = inv.camera_problems(data["id"])
    return data


@router.patch("/api/v1/cameras/{ref}")
def edit_camera(
    inv: Inv, ref: CameraRef, body: CameraEdit, caller: Annotated[Caller, Depends(operate_access)]
) -> dict[str, Any]:
    """An operator's correction (operate scope), audited with the key's name and the client's address."""
    with repo.audit_from(caller.address):
        data = inv.edit_camera(ref, body.fields, actor=caller.actor())
    data["record"] = public_camera(data["record"])
    return data


@router.get("/api/v1/stats", dependencies=reader)
def stats(inv: Inv, by: StatsBy = "region", limit: Limit = MAX_LIMIT, offset: Offset = 0) -> dict[str, Any]:
    rows = inv.stats(by, limit=limit + 1, offset=offset)
    return {
        "by": by,
        # distinct cameras: by source, one camera listed by two sources counts in both rows
        "total": inv.list_cameras(repo.CameraFilter(), limit=0)[0],
        "limit": limit,
        "offset": offset,
        "more": len(rows) > limit,
        "items": [{"key": r.key, "name": r.name, "count": r.count, **r.extra} for r in rows[:limit]],
    }


@router.get("/api/v1/quality", dependencies=reader)
def quality(inv: Inv, cameras: bool = False, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """The summary (overall, by rule, region and source); ``cameras``: also a page of failing cameras."""
    report, names = inv.quality(cameras=False)
    out = report.as_dict(region_names=names)
    if cameras:
        out["cameras_total"], out["cameras"] = inv.quality_cameras(limit=limit, offset=offset)
    return out


@router.get("/api/v1/quality/cameras", dependencies=reader)
def quality_cameras(
    inv: Inv,
    code: Annotated[str | None, Query(max_length=32, description="only cameras failing this rule")] = None,
    region: RegionCode = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    if code and code not in RULES:
        raise ValidationFailed(f"code: no rule {code[:32]!r}; the codes are listed by /api/v1/quality")
    total, items = inv.quality_cameras(code=code or None, region=region or None, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/api/v1/regions", dependencies=reader)
def regions(inv: Inv, limit: Limit = MAX_LIMIT, offset: Offset = 0) -> dict[str, Any]:
    total, items = inv.list_regions_page(limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": items}
