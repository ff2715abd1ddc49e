"""Operations: start discovery, health sweeps, frame sampling and trials; follow their progress; cancel them
(vms.jobs.operations). Starting and cancelling need the operate scope and are audited with who and from where."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.common import inventory_of
from api.deps import Caller, operate_access, read_access
from vms.inventory.service import Inventory
from vms.jobs.operations import KINDS, manager

log = logging.getLogger(__name__)


@asynccontextmanager
async def _operations(app: FastAPI) -> AsyncIterator[None]:
    """At start, the operations a dead process left queued or running are marked failed; at the end, this
    process's own are stopped (cancelled) before it goes."""
    inv: Inventory = app.state.inventory
    try:
        ops = await run_in_threadpool(manager, inv)
    except Exception as exc:  # no schema yet (a database not migrated): the first request will say so
        log.warning("operations: stale rows not checked at start: %s", exc)
        ops = None
    try:
        yield
    finally:
        if ops is not None:
            await run_in_threadpool(ops.shutdown)


router = APIRouter(lifespan=_operations)
Inv = Annotated[Inventory, Depends(inventory_of)]
OperationId = Annotated[int, PathParam(ge=1, le=2**31 - 1)]
Status = Literal["queued", "running", "done", "failed", "cancelled"]


class OperationStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(max_length=32, description=f"one of {', '.join(KINDS)}")
    params: dict[str, Any] = Field(default_factory=dict, description="the kind's parameters (see the README)")


@router.post("/api/v1/operations", status_code=202)
def start_operation(
    inv: Inv, body: OperationStart, caller: Annotated[Caller, Depends(operate_access)]
) -> JSONResponse:
    ops = manager(inv)
    op_id = ops.start(body.kind, body.params, actor=caller.actor(), address=caller.address)
    found = ops.get(op_id)
    return JSONResponse(found, status_code=202, headers={"Location": f"/api/v1/operations/{op_id}"})


@router.get("/api/v1/operations", dependencies=[Depends(read_access)])
def list_operations(
    inv: Inv,
    status: Status | None = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    return {"items": manager(inv).recent(status=status, kind=kind, limit=limit)}


@router.get("/api/v1/operations/{op_id}", dependencies=[Depends(read_access)])
def show_operation(inv: Inv, op_id: OperationId) -> dict[str, Any]:
    return manager(inv).get(op_id)


@router.post("/api/v1/operations/{op_id}/cancel", status_code=202)
def cancel_operation(
    inv: Inv, op_id: OperationId, caller: Annotated[Caller, Depends(operate_access)]
) -> dict[str, Any]:
    return manager(inv).cancel(op_id, actor=caller.actor(), address=caller.address)
