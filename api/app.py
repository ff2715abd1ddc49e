"""FastAPI app factory: routes translate HTTP to service calls; no SQL or device I/O here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from api.deps import require_reader, require_writer
from api.schemas import CameraEdit
from vms.catalog.domain import without_url_credentials
from vms.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed, VmsError
from vms.inventory.service import Inventory
from vms.store import repository as repo

STATIC = Path(__file__).with_name("static")

STATUS_OF: dict[type[VmsError], int] = {
    NotFound: 404,
    ValidationFailed: 422,
    Conflict: 409,
    Unauthorized: 401,
    Forbidden: 403,
}


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """What the API may show of a camera: never the credential reference or URL credentials."""
    row = without_url_credentials(row)
    row.pop("credential_id", None)
    return row


def create_app(inventory: Inventory) -> FastAPI:
    app = FastAPI(title="vms", version="0.1.0", description="Unified inventory of public video cameras")
    app.state.inventory = inventory

    @app.exception_handler(VmsError)
    async def _domain_error(_request: Request, exc: VmsError) -> JSONResponse:
        status = next((code for cls, code in STATUS_OF.items() if isinstance(exc, cls)), 400)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    reader = [Depends(require_reader)]

    @app.get("/api/v1/cameras", dependencies=reader)
    def list_cameras(
        region: str | None = None,
        status: str | None = None,
        source: str | None = None,
        search: str | None = None,
        include_removed: bool = False,
        limit: Annotated[int, Query(ge=1, le=5000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        flt = repo.CameraFilter(
            region=region, status=status, source=source, search=search, include_removed=include_removed
        )
        total, rows = inventory.list_cameras(flt, limit=limit, offset=offset)
        return {"total": total, "limit": limit, "offset": offset, "items": [_public(r) for r in rows]}

    @app.get("/api/v1/cameras/{ref}", dependencies=reader)
    def show_camera(ref: str) -> dict[str, Any]:
        data = inventory.show_camera(ref)
        data["record"] = _public(data["record"])
        data["problems"] = inventory.camera_problems(data["id"])
        return data

    @app.patch("/api/v1/cameras/{ref}")
    def edit_camera(ref: str, body: CameraEdit, actor: Annotated[str, Depends(require_writer)]) -> dict[str, Any]:
        data = inventory.edit_camera(ref, body.fields, actor=actor)
        data["record"] = _public(data["record"])
        return data

    @app.get("/api/v1/stats", dependencies=reader)
    def stats(by: str = "region") -> dict[str, Any]:
        rows = inventory.stats(by)
        return {
            "by": by,
            # distinct cameras: by source, one camera listed by two sources counts in both rows
            "total": inventory.list_cameras(repo.CameraFilter(), limit=0)[0],
            "items": [{"key": r.key, "name": r.name, "count": r.count, **r.extra} for r in rows],
        }

    @app.get("/api/v1/quality", dependencies=reader)
    def quality(cameras: bool = False) -> dict[str, Any]:
        report, names = inventory.quality()
        return report.as_dict(region_names=names, include_cameras=cameras)

    @app.get("/api/v1/regions", dependencies=reader)
    def regions() -> list[dict[str, Any]]:
        return inventory.list_regions()

    return app
