"""Coverage statistics (read scope): counts, the four indicators, covered area (JSON or GeoJSON), gaps."""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from api.common import RegionCode, etag_for, inventory_of, not_modified
from api.deps import require_reader
from vms.coverage.service import MAX_PLACES, Coverage, Place
from vms.inventory.service import Inventory

router = APIRouter(tags=["coverage"])
Inv = Annotated[Inventory, Depends(inventory_of)]
reader = [Depends(require_reader)]
Distance = Annotated[float, Query(gt=0, le=100_000, description="metres")]


class PlaceIn(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)


class GapsIn(BaseModel):
    distance_m: float = Field(300.0, gt=0, le=100_000)
    places: list[PlaceIn] = Field(max_length=MAX_PLACES)


def _json(data: Any, media_type: str = "application/json", etag: str | None = None) -> Response:
    return Response(to_json(data), media_type=media_type, headers={"ETag": etag} if etag else None)


# Answers of the ETag'd reads by ETag (it names everything they depend on, the query included): a repeated read
# of a large GeoJSON is sent as it was serialised, not built again. A few, per process.
_BODIES: OrderedDict[str, bytes] = OrderedDict()
_BODIES_MAX = 32
_BODIES_LOCK = threading.Lock()


def _remembered(etag: str, media_type: str) -> Response | None:
    with _BODIES_LOCK:
        body = _BODIES.get(etag)
        if body is not None:
            _BODIES.move_to_end(etag)
    return None if body is None else Response(body, media_type=media_type, headers={"ETag": etag})


def _remember(etag: str, response: Response) -> Response:
    with _BODIES_LOCK:
        _BODIES[etag] = bytes(response.body)
        while len(_BODIES) > _BODIES_MAX:
            _BODIES.popitem(last=False)
    return response


async def _etag(request: Request, cov: Coverage) -> str:
    """The counts' and areas' ETag: the change feed's head and a digest of what else they depend on."""
    head, digest = await run_in_threadpool(cov.version)
    return etag_for(request, head, digest)


@router.get("/api/v1/coverage/summary", dependencies=reader)
async def coverage_summary(request: Request, inv: Inv, region: RegionCode = None) -> Response:
    """Camera counts by region (sub-regions included), status, use type, owner and source; cameras per km2.
    ETag / If-None-Match: 304 while nothing it counts has changed."""
    cov = Coverage(inv)
    etag = await _etag(request, cov)
    if not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return _json(await run_in_threadpool(cov.summary, region=region or None), etag=etag)


@router.get("/api/v1/coverage/indicators", dependencies=reader)
async def coverage_indicators(
    inv: Inv,
    region: RegionCode = None,
    start: Annotated[
        dt.datetime | None,
        Query(
            alias="from",
            description="start (ISO date or time, UTC); default the UTC midnight VMS_COVERAGE_ONLINE_DAYS days before"
            " the day of 'to'",
        ),
    ] = None,
    end: Annotated[dt.datetime | None, Query(alias="to", description="end, exclusive (default now)")] = None,
) -> Response:
    """Online, intact, aggregation and data-quality pass rates, overall and by region; daily online-rate series."""
    cov = Coverage(inv)
    return _json(await run_in_threadpool(cov.indicators, region=region or None, start=start, end=end))


@router.get("/api/v1/coverage/area", dependencies=reader)
async def coverage_area(
    request: Request,
    inv: Inv,
    region: RegionCode = None,
    format: Literal["json", "geojson"] = "json",
    status: Annotated[
        Literal["all", "ON"], Query(description="ON: also (JSON) or only (GeoJSON) the working cameras' views")
    ] = "all",
) -> Response:
    """Covered area per region from the cameras' fields of view: km2 and share; or the unions as GeoJSON.
    ETag / If-None-Match: 304 while no camera, region or listing it depends on has changed."""
    cov = Coverage(inv)
    etag = await _etag(request, cov)
    if not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag})
    media_type = "application/geo+json" if format == "geojson" else "application/json"
    if (hit := _remembered(etag, media_type)) is not None:
        return hit
    if format == "geojson":
        data = await run_in_threadpool(cov.area_geojson, region=region or None, working=status == "ON")
    else:
        data = await run_in_threadpool(cov.area, region=region or None, working=status == "ON")
        data.pop("seconds", None)  # the same answer for the same ETag
    return _remember(etag, _json(data, media_type, etag))


@router.get("/api/v1/coverage/gaps", dependencies=reader)
async def coverage_region_gaps(inv: Inv) -> Response:
    """Regions with no working camera (status ON)."""
    return _json({"regions": await run_in_threadpool(Coverage(inv).region_gaps)})


@router.post("/api/v1/coverage/gaps", dependencies=reader)
async def coverage_place_gaps(inv: Inv, body: GapsIn) -> Response:
    """Key places (schools, hospitals, stations) with no working camera within ``distance_m``: a read."""
    places = [Place(p.name, p.lon, p.lat) for p in body.places]
    cov = Coverage(inv)
    data = await run_in_threadpool(cov.place_gaps, places, body.distance_m)
    data["regions"] = await run_in_threadpool(cov.region_gaps)
    return _json(data)
