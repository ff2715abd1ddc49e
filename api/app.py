"""FastAPI app factory: routes (api/routes/, a module per resource) translate HTTP to service calls; no SQL or
device I/O there.

Every read is bounded: lists are pages (``limit`` at most MAX_LIMIT), summaries read counters kept by the writes,
and every parameter has a type, a range or a length; a bad one is a 422 with a one-line message.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse

from api.metrics import add_metrics
from api.openapi import document_errors
from api.routes import access, cameras, changes, coverage, dashboard, gb28181, operations, samples
from api.security import BodyLimit, HostGuard, NoNul, PrivateCache, default_allowed_hosts
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
from vms.inventory.service import Inventory

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

# Included in this order; each module's ``router`` holds its routes (add a resource: a module and a line here).
ROUTES = (cameras, access, coverage, operations, dashboard, samples, changes, gb28181)


def _one_line(exc: RequestValidationError) -> str:
    """'offset: Input should be less than or equal to 10000000' (never the offending input echoed back)."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body", "header"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)[:500]


def create_app(inventory: Inventory, *, bind_host: str | None = None, warm: bool = False) -> FastAPI:
    """The API over ``inventory``. ``bind_host``: where it listens (for the default allowed Host names). ``warm``:
    build the coverage figures in the background now (the serving processes do; tests need not)."""
    settings = inventory.settings
    # /docs is served by api/routes/dashboard.py with Swagger UI's files from api/static/vendor (no CDN); no ReDoc
    app = FastAPI(
        title="vms",
        version="0.1.0",
        description="Unified inventory of public video cameras",
        docs_url=None,
        redoc_url=None,
    )
    app.state.inventory = inventory
    allowed = settings.allowed_hosts or default_allowed_hosts(bind_host or settings.api_host)
    if allowed == ["*"]:
        log.warning("the API answers any Host name; set VMS_ALLOWED_HOSTS to the names clients use")
    app.add_middleware(PrivateCache)
    app.add_middleware(NoNul)  # inside BodyLimit: reads a bounded body
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

    for module in ROUTES:
        app.include_router(module.router)
    add_metrics(app, inventory)  # GET /metrics (Prometheus), same read rule
    document_errors(app)  # the schema's 422 is the one-line error sent
    if warm:
        threading.Thread(target=_warm, args=(inventory,), name="coverage-warm", daemon=True).start()
    return app


def _warm(inventory: Inventory) -> None:
    """Build the coverage figures once in the background (at 100,000 cameras the covered area's first build is
    seconds of CPU): the first operator to ask gets them from the cache. Failures only cost that head start."""
    from vms.coverage.service import Coverage

    try:
        cov = Coverage(inventory)
        cov.summary()  # the covered area's build and the indicators' each hold their own lock: a summary never waits
        cov.area()
        cov.indicators()
    except Exception as exc:
        log.info("coverage not warmed at start: %s", str(exc).splitlines()[0][:200] if str(exc) else exc)


def app_from_environment() -> FastAPI:
    """The app of one `vms serve` worker process (a uvicorn factory): settings from the environment and .env."""
    from vms.settings import Settings

    return create_app(Inventory(Settings()), warm=True)
