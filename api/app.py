"""FastAPI app factory: routes translate HTTP to service calls; no SQL or device I/O here.

Every read is bounded: lists are pages (``limit`` at most MAX_LIMIT), summaries read counters kept by the writes,
and every parameter has a type, a range or a length; a bad one is a 422 with a one-line message.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic_core import to_json

from api.deps import require_reader, require_writer
from api.metrics import add_metrics
from api.schemas import CameraEdit, CameraPage
from api.security import BodyLimit, HostGuard, default_allowed_hosts
from vms.catalog.domain import URI_FIELDS, without_url_credentials
from vms.errors import (
    Busy,
    ConfigurationError,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
    VmsError,
)
from vms.inventory.quality import RULES
from vms.inventory.service import Inventory
from vms.store import repository as repo

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")

# The one map from domain errors to HTTP (the first class an error is an instance of wins).
STATUS_OF: dict[type[VmsError], int] = {
    NotFound: 404,
    ValidationFailed: 422,
    Conflict: 409,
    Unauthorized: 401,
    Forbidden: 403,
    Busy: 503,
    ConfigurationError: 500,
}

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
StatsBy = Literal["region", "status", "source", "manufacturer"]


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """What the API may show of a camera: never the credential reference or URL credentials. ``row`` is the
    caller's own (changed in place); a row without URLs (most of a ledger) is not copied."""
    for name in URI_FIELDS:
        if row.get(name):
            row = without_url_credentials(row)
            break
    row.pop("credential_id", None)
    return row


def _one_line(exc: RequestValidationError) -> str:
    """'offset: Input should be less than or equal to 10000000' (never the offending input echoed back)."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body", "header"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)[:500]


def create_app(inventory: Inventory, *, bind_host: str | None = None) -> FastAPI:
    """The API over ``inventory``. ``bind_host``: where it listens (for the default allowed Host names)."""
    settings = inventory.settings
    app = FastAPI(title="vms", version="0.1.0", description="Unified inventory of public video cameras")
    app.state.inventory = inventory
    allowed = settings.allowed_hosts or default_allowed_hosts(bind_host or settings.api_host)
    if allowed == ["*"]:
        log.warning("the API answers any Host name; set VMS_ALLOWED_HOSTS to the names clients use")
    app.add_middleware(BodyLimit)
    app.add_middleware(HostGuard, allowed=allowed)  # added last: runs first

    @app.exception_handler(VmsError)
    async def _domain_error(_request: Request, exc: VmsError) -> JSONResponse:
        status = next((code for cls, code in STATUS_OF.items() if isinstance(exc, cls)), 400)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=422)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    reader = [Depends(require_reader)]

    @app.get("/api/v1/cameras", dependencies=reader, response_model=CameraPage)
    def list_cameras(
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
        found = inventory.camera_page(flt, limit=limit, offset=offset)
        # Plain dicts with str keys, serialised once (pydantic-core, the encoder FastAPI would use) and returned as
        # they are: validating 100 rows of 60 fields against the response model again cost 30-50 ms a page.
        page = {
            "total": found.total,
            "total_exact": found.exact,
            "limit": limit,
            "offset": offset,
            "items": [_public(r) for r in found.rows],
        }
        return Response(to_json(page), media_type="application/json")

    @app.get("/api/v1/cameras/{ref}", dependencies=reader)
    def show_camera(ref: CameraRef) -> dict[str, Any]:
        data = inventory.show_camera(ref)
        data["record"] = _public(data["record"])
        data["problems"] = inventory.camera_problems(data["id"])
        return data

    @app.patch("/api/v1/cameras/{ref}")
    def edit_camera(ref: CameraRef, body: CameraEdit, actor: Annotated[str, Depends(require_writer)]) -> dict[str, Any]:
        data = inventory.edit_camera(ref, body.fields, actor=actor)
        data["record"] = _public(data["record"])
        return data

    @app.get("/api/v1/stats", dependencies=reader)
    def stats(by: StatsBy = "region", limit: Limit = MAX_LIMIT, offset: Offset = 0) -> dict[str, Any]:
        rows = inventory.stats(by, limit=limit + 1, offset=offset)
        return {
            "by": by,
            # distinct cameras: by source, one camera listed by two sources counts in both rows
            "total": inventory.list_cameras(repo.CameraFilter(), limit=0)[0],
            "limit": limit,
            "offset": offset,
            "more": len(rows) > limit,
            "items": [{"key": r.key, "name": r.name, "count": r.count, **r.extra} for r in rows[:limit]],
        }

    @app.get("/api/v1/quality", dependencies=reader)
    def quality(cameras: bool = False, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
        """The summary (overall, by rule, region and source); ``cameras``: also a page of failing cameras."""
        report, names = inventory.quality(cameras=False)
        out = report.as_dict(region_names=names)
        if cameras:
            out["cameras_total"], out["cameras"] = inventory.quality_cameras(limit=limit, offset=offset)
        return out

    @app.get("/api/v1/quality/cameras", dependencies=reader)
    def quality_cameras(
        code: Annotated[str | None, Query(max_length=32, description="only cameras failing this rule")] = None,
        region: RegionCode = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        if code and code not in RULES:
            raise ValidationFailed(f"code: no rule {code[:32]!r}; the codes are listed by /api/v1/quality")
        total, items = inventory.quality_cameras(code=code or None, region=region or None, limit=limit, offset=offset)
        return {"total": total, "limit": limit, "offset": offset, "items": items}

    @app.get("/api/v1/regions", dependencies=reader)
    def regions(limit: Limit = MAX_LIMIT, offset: Offset = 0) -> dict[str, Any]:
        total, items = inventory.list_regions_page(limit=limit, offset=offset)
        return {"total": total, "limit": limit, "offset": offset, "items": items}

    add_metrics(app, inventory)  # GET /metrics (Prometheus), same read rule
    return app


def app_from_environment() -> FastAPI:
    """The app of one `vms serve` worker process (a uvicorn factory): settings from the environment and .env."""
    from vms.settings import Settings

    return create_app(Inventory(Settings()))
