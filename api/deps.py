"""Request dependencies: API-key authentication. Keys are stored as SHA-256 hashes only."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Request
from starlette.concurrency import run_in_threadpool

from vms.access.apikeys import authenticate
from vms.errors import Forbidden, Unauthorized
from vms.inventory.service import Inventory


def _inventory(request: Request) -> Inventory:
    inv: Inventory = request.app.state.inventory
    return inv


async def require_reader(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> str:
    # async: an open read answers here, on the event loop, without a hop to a worker thread (FastAPI runs a sync
    # dependency in one); only a key's look-up in the database goes to a thread.
    inv = _inventory(request)
    if x_api_key is None:
        if inv.settings.api_open_reads:
            return "anonymous"
        raise Unauthorized("an X-API-Key header is required")
    key = await run_in_threadpool(authenticate, inv, x_api_key)
    return key.name


def require_writer(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> str:
    if x_api_key is None:
        raise Unauthorized("writes need an X-API-Key header with a write key")
    key = authenticate(_inventory(request), x_api_key)
    if key.role != "write":
        raise Forbidden(f"key {key.name!r} may only read")
    return f"apikey:{key.name}"
