"""Request dependencies: API-key authentication and scopes (read < operate < admin). Keys are stored as SHA-256
hashes only (vms.access.apikeys).

``read_access``, ``operate_access`` and ``admin_access`` give the :class:`Caller` (the key's name and scope, the
client's address); no key is 401, a key whose scope is too low 403. Each also makes the client's address the one
that this request's audit rows record (vms.store.repository.AUDIT_ADDRESS), so every write and operation is audited
with who, what, when and from where.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Request
from starlette.concurrency import run_in_threadpool

from vms.access.apikeys import Caller, anonymous, authenticate, require
from vms.errors import Unauthorized
from vms.inventory.service import Inventory
from vms.store.repository import AUDIT_ADDRESS

__all__ = [
    "Caller",
    "admin_access",
    "caller_for",
    "operate_access",
    "read_access",
    "require_reader",
    "require_writer",
]

ApiKeyHeader = Annotated[str | None, Header(description="an API key (`vms apikey create NAME --scope SCOPE`)")]


def _inventory(request: Request) -> Inventory:
    inv: Inventory = request.app.state.inventory
    return inv


def client_address(request: Request) -> str | None:
    """The client's IP as the ASGI server gives it (behind a proxy: uvicorn's --forwarded-allow-ips sets it)."""
    return request.client.host if request.client is not None else None


async def caller_for(request: Request, x_api_key: str | None, need: str) -> Caller:
    """The caller if it may do what needs scope ``need``; else Unauthorized (no or a bad key) or Forbidden."""
    inv = _inventory(request)
    address = client_address(request)
    if x_api_key is None:
        if need == "read" and inv.settings.api_open_reads:
            # async: an open read answers here, on the event loop, without a hop to a worker thread (FastAPI runs
            # a sync dependency in one); only a key's look-up in the database goes to a thread.
            caller = anonymous(address)
        else:
            raise Unauthorized(f"an X-API-Key header with a key of scope {need} (or higher) is required")
    else:
        key = await run_in_threadpool(authenticate, inv, x_api_key)
        require(key, need)
        caller = Caller(key.name, key.scope, address)
    # This request's task (and the worker thread its endpoint runs in, which copies the context) audits from here.
    AUDIT_ADDRESS.set(address)
    request.state.caller = caller
    return caller


async def read_access(request: Request, x_api_key: ApiKeyHeader = None) -> Caller:
    """Reads: any key; no key when VMS_API_OPEN_READS (the default) is on, else 401."""
    return await caller_for(request, x_api_key, "read")


async def operate_access(request: Request, x_api_key: ApiKeyHeader = None) -> Caller:
    """Writes and operations (camera edits, discovery, sweeps, sampling, trials): an operate or admin key."""
    return await caller_for(request, x_api_key, "operate")


async def admin_access(request: Request, x_api_key: ApiKeyHeader = None) -> Caller:
    """Administration (the audit log): an admin key."""
    return await caller_for(request, x_api_key, "admin")


# The names of earlier versions, as they behaved: the reader's key name (or "anonymous"), the writer's actor.
async def require_reader(request: Request, x_api_key: ApiKeyHeader = None) -> str:
    return (await read_access(request, x_api_key)).name


async def require_writer(request: Request, x_api_key: ApiKeyHeader = None) -> str:
    return (await operate_access(request, x_api_key)).actor()
