"""The dashboard's data and assets: compact map data (camera points, simplified region polygons) and recent status
changes; the page's own files and the OpenAPI docs, served from the app (no CDN: government networks are offline).
Its indicators, region table and online-rate trend are the coverage statistics' (api/routes/coverage.py)."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic_core import to_json

from api.common import RegionCode, inventory_of
from api.deps import require_reader
from vms.errors import NotFound
from vms.geo import mapdata
from vms.health import feed
from vms.inventory.service import Inventory

router = APIRouter()
Inv = Annotated[Inventory, Depends(inventory_of)]
reader = [Depends(require_reader)]

STATIC = (Path(__file__).parent.parent / "static").resolve()
SWAGGER = "/static/vendor/swagger-ui"
_shapes: dict[tuple[str, float, tuple[int, str]], bytes] = {}  # (database, tolerance, regions' version) -> JSON
_shapes_lock = threading.Lock()


def _json(data: Any, *, cache: str = "no-store") -> Response:
    return Response(to_json(data), media_type="application/json", headers={"Cache-Control": cache})


@router.get("/api/v1/dashboard/points", dependencies=reader)
def points(inv: Inv, region: RegionCode = None) -> Response:
    """Every registered camera with a position, as columns: ``id``, ``lon``, ``lat`` (5 decimals) and ``status``
    (an index into ``statuses``: ON, OFF, DEFECT, unknown); ``without_position`` counts those not drawn."""
    with inv.session(write=False) as s:
        found = mapdata.camera_points(s, region=region or None)
    return _json(found.as_dict())


@router.get("/api/v1/dashboard/regions", dependencies=reader)
def region_shapes(
    inv: Inv,
    tolerance: Annotated[float, Query(ge=0, le=0.1, description="simplification, degrees (0: as stored)")] = 0.0005,
) -> Response:
    """GeoJSON FeatureCollection of the regions with a polygon (WGS-84), simplified for display; properties code,
    name, level, parent_code. Computed once per import of the regions."""
    with inv.session(write=False) as s:
        key = (inv.settings.url, tolerance, mapdata.regions_version(s))
        with _shapes_lock:
            body = _shapes.get(key)
        if body is None:
            body = to_json(mapdata.region_shapes(s, tolerance=tolerance))
            with _shapes_lock:
                if len(_shapes) >= 16:
                    _shapes.clear()
                _shapes[key] = body
    return Response(body, media_type="application/geo+json", headers={"Cache-Control": "no-store"})


@router.get("/api/v1/events", dependencies=reader)
def events(
    inv: Inv,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    since: Annotated[dt.datetime | None, Query(description="ISO time: only changes from then on")] = None,
) -> Response:
    """Status changes of every camera (ON, OFF, DEFECT, VLOST), newest first, with the camera's name and IDs."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    return _json({"items": feed.recent_events(inv, limit=limit, since=since)})


# --- the page's files and the OpenAPI docs, all local ------------------------------------------------------


@router.get("/docs", include_in_schema=False)
def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="vms API",
        swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER}/favicon-32x32.png",
    )


@router.get("/static/{path:path}", include_in_schema=False)
def static(path: str) -> FileResponse:
    """A file of api/static (the page's script and style, the vendored Leaflet and Swagger UI); nothing outside."""
    target = (STATIC / path).resolve()
    if not target.is_relative_to(STATIC) or not target.is_file() or len(path) > 200:
        raise NotFound(f"no file {path[:100]!r}")
    return FileResponse(target, headers={"Cache-Control": "public, max-age=3600"})
