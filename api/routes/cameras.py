"""Cameras: lists (filters, cursor pages, field selection), streamed exports, one camera (with provenance, health
and samples), edits; counts by a field; data quality; regions."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic_core import to_json

from api.common import (
    MAX_LIMIT,
    CameraRef,
    Limit,
    Offset,
    RegionCode,
    Search,
    SourceName,
    etag_for,
    inventory_of,
    not_modified,
    public_camera,
)
from api.deps import Caller, operate_access, require_reader
from api.schemas import CameraEdit, CameraPage
from probes.onvif.addresses import strip_credentials
from vms.catalog.fields import FIELD_NAMES
from vms.errors import ValidationFailed
from vms.frames.store import SampleStore
from vms.gb28181.devices import camera_devices
from vms.health.service import Health
from vms.ingest import exporters
from vms.inventory import changes as change_feed
from vms.inventory.quality import RULES
from vms.inventory.service import MAX_TAG_CHARS, Inventory
from vms.store import repository as repo
from vms.store.models import cameras as camera_table

router = APIRouter()
StatsBy = Literal["region", "status", "source", "manufacturer"]
Inv = Annotated[Inventory, Depends(inventory_of)]

reader = [Depends(require_reader)]


# What a list item may hold (``fields=``): the camera's columns but the credential reference.
PUBLIC_FIELDS = tuple(str(c.name) for c in camera_table.c if c.name != "credential_id")
MAX_TAG_FILTERS = 10
CameraStatus = Literal["ON", "OFF", "DEFECT"]
ExportFormat = Literal["csv", "geojson", "gb28181"]
_CURSOR = re.compile(r"c([0-9]{1,18})")


def camera_filter(
    region: RegionCode = None,
    status: Annotated[CameraStatus | None, Query(description="the health status (GB/T 28181: ON, OFF, DEFECT)")] = None,
    use_type: Annotated[str | None, Query(max_length=8, description="UseType code (1 public security, ...)")] = None,
    owner: Annotated[str | None, Query(max_length=255, description="the Owner field, exactly")] = None,
    source: SourceName = None,
    tag: Annotated[
        list[str] | None,
        Query(description=f"an operator's label; repeat for cameras carrying every one (<= {MAX_TAG_FILTERS})"),
    ] = None,
    bbox: Annotated[
        str | None,
        Query(max_length=128, description="minLon,minLat,maxLon,maxLat (WGS-84 degrees, the stored coordinates)"),
    ] = None,
    search: Search = None,
    include_removed: bool = False,
) -> repo.CameraFilter:
    """The filters a list and an export share; each narrows the list (all must hold)."""
    tags = tuple(t.strip() for t in tag or () if t.strip())
    if len(tags) > MAX_TAG_FILTERS or any(len(t) > MAX_TAG_CHARS for t in tags):
        raise ValidationFailed(f"tag: at most {MAX_TAG_FILTERS} tags of at most {MAX_TAG_CHARS} characters")
    return repo.CameraFilter(
        region=region or None,
        status=status,
        source=source or None,
        search=(search or "").strip() or None,
        include_removed=include_removed,
        use_type=(use_type or "").strip() or None,
        owner=owner or None,
        tags=tags,
        bbox=_bbox(bbox) if bbox else None,
    )


Filter = Annotated[repo.CameraFilter, Depends(camera_filter)]


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValidationFailed("bbox: want minLon,minLat,maxLon,maxLat (four numbers, WGS-84 degrees)")
    min_lon, min_lat, max_lon, max_lat = values
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise ValidationFailed("bbox: want -180 <= minLon <= maxLon <= 180 and -90 <= minLat <= maxLat <= 90")
    return min_lon, min_lat, max_lon, max_lat


def _fields(text: str | None) -> list[str] | None:
    """The columns ``fields=a,b`` asks for (``id`` always first); None for every one."""
    if not text or not text.strip():
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PUBLIC_FIELDS]
    if unknown:
        raise ValidationFailed(f"fields: no field {unknown[0][:40]!r} (a camera's fields are listed by /docs)")
    return list(dict.fromkeys(["id", *names]))


def encode_cursor(last_id: int) -> str:
    """Opaque to clients: the position after the camera ``last_id`` in id order."""
    return base64.urlsafe_b64encode(f"c{last_id}".encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raw = ""
    match = _CURSOR.fullmatch(raw)
    if match is None:
        raise ValidationFailed("cursor: not a cursor this API gave (take `next` from the previous page)")
    return int(match.group(1))


@router.get("/api/v1/cameras", dependencies=reader, response_model=CameraPage)
def list_cameras(
    request: Request,
    inv: Inv,
    flt: Filter,
    limit: Limit = 100,
    offset: Offset = 0,
    cursor: Annotated[
        str | None, Query(max_length=64, description="`next` of the previous page (pages by id; no offset then)")
    ] = None,
    fields: Annotated[
        str | None, Query(max_length=2000, description="comma-separated fields to return (id always comes)")
    ] = None,
) -> Response:
    """A page of cameras in id order. Follow ``next`` (a cursor: every page costs what the first costs, and a
    camera added or removed meanwhile never shifts the pages); ``offset`` still pages the old way."""
    columns = _fields(fields)
    if cursor is not None and offset:
        raise ValidationFailed("cursor and offset: give one of them")
    # ETag: the change feed's head moves with any write to a camera (a source's listing is not a camera column:
    # no ETag for a list by source). Read before the page, so a tag never labels an older answer.
    etag = None if flt.source else etag_for(request, change_feed.head(inv))
    if etag is not None and not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag})
    if offset:
        found = inv.camera_page(flt, limit=limit, offset=offset)
        more = len(found.rows) == limit and (not found.exact or offset + limit < found.total)
        rows = found.rows if columns is None else [{k: r[k] for k in columns} for r in found.rows]
    else:
        after = decode_cursor(cursor) if cursor is not None else 0
        found, more = inv.camera_cursor_page(flt, after=after, limit=limit, columns=columns)
        rows = found.rows
    # Plain dicts with str keys, serialised once (pydantic-core, the encoder FastAPI would use) and returned as
    # they are: validating 100 rows of 60 fields against the response model again cost 30-50 ms a page.
    page = {
        "total": found.total,
        "total_exact": found.exact,
        "limit": limit,
        "offset": offset,
        "next": encode_cursor(rows[-1]["id"]) if more and rows else None,
        "items": [public_camera(r) for r in rows],
    }
    return Response(to_json(page), media_type="application/json", headers={"ETag": etag} if etag else None)


_EXPORTS: dict[str, tuple[str, str]] = {
    "csv": ("text/csv; charset=utf-8", "cameras.csv"),
    "geojson": ("application/geo+json", "cameras.geojson"),
    "gb28181": ("application/xml; charset=utf-8", "cameras.xml"),
}


def export_records(inv: Inventory, flt: repo.CameraFilter) -> Iterator[dict[str, Any]]:
    """The export's records, read a page at a time (never the whole list): the public form of each camera."""
    for row in inv.iter_cameras(flt):
        public = public_camera(row)
        yield {**{k: public.get(k) for k in FIELD_NAMES}, "extra": public.get("extra") or {}}


@router.get("/api/v1/cameras/export", dependencies=reader)
def export_cameras(inv: Inv, flt: Filter, format: ExportFormat = "csv") -> StreamingResponse:
    """The filtered list as CSV (UTF-8 with BOM, for Excel), GeoJSON (WGS-84 points) or a GB/T 28181 Catalog
    ``<Response>``, in the formats of `vms export`, streamed as it is read (flat memory whatever its length)."""
    media_type, filename = _EXPORTS[format]
    body: Iterator[bytes]
    if format == "csv":
        # The header names every extra column: one pass over the extras first (a page at a time too).
        keys = exporters.csv_extra_keys(inv.iter_cameras(flt, columns=["extra"]))
        body = _utf8(exporters.csv_chunks(export_records(inv, flt), keys), bom=True)
    elif format == "geojson":
        body = _utf8(exporters.geojson_chunks(export_records(inv, flt)))
    else:
        body = exporters.catalog_xml_chunks(export_records(inv, flt), inv.count_matching(flt))
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(body, media_type=media_type, headers=headers)


def _utf8(pieces: Iterator[str], *, bom: bool = False) -> Iterator[bytes]:
    if bom:
        yield "\ufeff".encode()
    for piece in pieces:
        yield piece.encode("utf-8")


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
RECENT_EVENTS = 20
LATEST_SAMPLES = 5
ONLINE_DAYS = 7


def _no_logins(value: Any) -> Any:
    """``value`` (a health result's findings) with user info and login parameters taken out of every URL."""
    if isinstance(value, str):
        if "://" not in value:
            return value
        whole_url = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S*$", value)
        return strip_credentials(value) if whole_url else _USERINFO.sub(r"\1", value)
    if isinstance(value, dict):
        return {k: _no_logins(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_logins(v) for v in value]
    return value


def camera_health(inv: Inventory, camera_id: int) -> dict[str, Any]:
    """The latest check, the recent status changes (newest first) and the online rate over the last 7 days."""
    health = Health(inv)
    now = dt.datetime.now(dt.UTC)
    rate = health.online_rate(now - dt.timedelta(days=ONLINE_DAYS), now, camera_id=camera_id, now=now)
    return {
        "latest": _no_logins(health.latest(camera_id)),
        "events": health.events(camera_id=camera_id, limit=RECENT_EVENTS),
        "online_rate_7d": rate.rate,
        "online_s_7d": rate.online_s,
        "known_s_7d": rate.known_s,
    }


def camera_samples(inv: Inventory, camera_id: int, limit: int = LATEST_SAMPLES) -> list[dict[str, Any]]:
    """The newest frame samples: when, what faults, and where their JPEG is."""
    return [
        {
            "id": r.id,
            "taken_at": r.taken_at,
            "faults": list(r.faults),
            "source": r.source,
            "width": r.width,
            "height": r.height,
            "url": f"/api/v1/samples/{r.id}.jpg",
        }
        for r in SampleStore(inv).list(camera_id=camera_id, limit=limit)
    ]


@router.get("/api/v1/cameras/{ref}", dependencies=reader)
def show_camera(request: Request, inv: Inv, ref: CameraRef) -> Response:
    """The record (public: no credential), each field's provenance (the source it came from, when, and what other
    sources say), its quality problems, its health (latest check, recent status changes, 7-day online rate) and
    its latest frame samples, and the GB/T 28181 devices (registered to vms) it is reached through."""
    data = inv.show_camera(ref)
    data["record"] = public_camera(data["record"])
    data["problems"] = inv.camera_problems(data["id"])
    data["health"] = camera_health(inv, data["id"])
    data["samples"] = camera_samples(inv, data["id"])
    data["gb28181"] = camera_devices(inv, data["id"])  # the GB/T 28181 devices it is reached through, online or not
    # ETag: the feed's head, and a hash of the answer too (health checks and samples are not camera columns)
    body = to_json(data)
    etag = etag_for(request, change_feed.head(inv), body)
    if not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


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
