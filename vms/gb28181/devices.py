"""The registered GB/T 28181 devices as stored (for `vms gb28181 devices` and GET /api/v1/gb28181/devices), and
Catalog queries on demand (`vms gb28181 catalog`, POST /api/v1/gb28181/devices/{id}/catalog).

On demand: the request is a time stored in the device's row (``catalog_requested_at``, audited), so it works
whichever process runs the SIP server (`vms gb28181 serve` or `vms run`): that process's GbService takes it within a
second (clearing it and ``catalog_error``) and asks the device; the answer moves ``catalog_at`` (merged like any
other), a failure is written to ``catalog_error``. :func:`wait_catalog` follows it for the command line."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Collection
from typing import Any

from sqlalchemy import func, select, update

from vms.errors import Conflict, NotFound, ValidationFailed, VmsError
from vms.inventory.service import Inventory
from vms.store import repository as repo
from vms.store.models import Observation as ObservationRow
from vms.store.models import Source, gb_devices, utcnow

__all__ = ["catalog_failed", "device", "list_devices", "request_catalog", "take_catalog_requests", "wait_catalog"]

_DEVICE_ID = re.compile(r"^[0-9A-Za-z]{1,32}$")

_PUBLIC = (
    "device_id",
    "name",
    "domain",
    "transport",
    "host",
    "port",
    "online",
    "last_seen",
    "registered_at",
    "expires_at",
    "offline_deadline",
    "keepalive_interval_s",
    "keepalive_count",
    "catalog_at",
    "catalog_items",
    "catalog_complete",
    "catalog_requested_at",
    "catalog_error",
    "user_agent",
    "camera_id",
)


def _utc(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def list_devices(
    inventory: Inventory, *, online: bool | None = None, device_id: str | None = None
) -> list[dict[str, Any]]:
    """Every device that registered (or the one ``device_id``), by ID, with its channel count (cameras its catalog
    lists now)."""
    g = gb_devices.c
    stmt = select(*(g[name] for name in _PUBLIC)).order_by(g.device_id)
    if online is not None:
        stmt = stmt.where(g.online.is_(online))
    sources = Source.name.startswith("gb28181:")
    if device_id is not None:
        stmt = stmt.where(g.device_id == device_id)
        sources = Source.name == f"gb28181:{device_id}"
    o = ObservationRow
    with inventory.session(write=False) as s:
        rows = [{k: _utc(v) for k, v in r._mapping.items()} for r in s.execute(stmt)]
        counts = dict(
            s.execute(
                select(Source.name, func.count(o.id))
                .join(o, o.source_id == Source.id)
                .where(sources, o.removed_at.is_(None))
                .group_by(Source.name)
            ).all()
        )
    for row in rows:
        row["online"] = bool(row["online"])
        row["source"] = f"gb28181:{row['device_id']}"
        row["channels"] = int(counts.get(row["source"], 0))
    return rows


def camera_devices(inventory: Inventory, camera_id: int) -> list[dict[str, Any]]:
    """The GB/T 28181 devices a camera is reached through: those whose catalog lists it now (source
    ``gb28181:<id>``) and the device itself when it registers directly; each with its online state."""
    g, o = gb_devices.c, ObservationRow
    with inventory.session(write=False) as s:
        names = set(
            s.scalars(
                select(Source.name)
                .join(o, o.source_id == Source.id)
                .where(o.camera_id == camera_id, o.removed_at.is_(None), Source.name.startswith("gb28181:"))
            )
        )
        ids = {n.split(":", 1)[1] for n in names}
        stmt = select(g.device_id, g.online, g.last_seen, g.catalog_at, g.transport).where(
            g.device_id.in_(sorted(ids)) | (g.camera_id == camera_id)
        )
        rows = [{k: _utc(v) for k, v in r._mapping.items()} for r in s.execute(stmt.order_by(g.device_id))]
    for row in rows:
        row["online"] = bool(row["online"])
        row["source"] = f"gb28181:{row['device_id']}"
    return rows


def _checked_id(device_id: str) -> str:
    device_id = device_id.strip()
    if not _DEVICE_ID.match(device_id):
        raise ValidationFailed(f"{device_id[:40]!r} is not a GB/T 28181 device ID (up to 32 letters and digits)")
    return device_id


def device(inventory: Inventory, device_id: str) -> dict[str, Any]:
    """One registered device as :func:`list_devices` gives it; NotFound when it never registered."""
    rows = list_devices(inventory, device_id=_checked_id(device_id))
    if not rows:
        raise NotFound(f"no GB/T 28181 device {device_id.strip()} (`vms gb28181 devices` lists those that registered)")
    return rows[0]


def request_catalog(inventory: Inventory, device_id: str, *, actor: str, address: str | None = None) -> dt.datetime:
    """Ask for the device's Catalog now (audited ``gb28181.catalog``): the SIP server's process takes the request
    within a second or two. Returns when it was asked. NotFound for a device that never registered, Conflict for one
    offline (it cannot be reached until it registers or keeps alive again)."""
    device_id = _checked_id(device_id)
    g = gb_devices.c
    now = utcnow()
    with inventory.session() as s:
        row = s.execute(select(g.online).where(g.device_id == device_id)).first()
        if row is None:
            raise NotFound(f"no GB/T 28181 device {device_id} (`vms gb28181 devices` lists those that registered)")
        if not row.online:
            raise Conflict(f"GB/T 28181 device {device_id} is offline: ask again once it registers or keeps alive")
        s.execute(update(gb_devices).where(g.device_id == device_id).values(catalog_requested_at=now))
        repo.audit(s, actor=actor, action="gb28181.catalog", target=f"gb28181:{device_id}", address=address)
    return now


def take_catalog_requests(inventory: Inventory, *, busy: Collection[str] = ()) -> list[str]:
    """The devices whose catalog was asked for on demand, taken (request and last error cleared) for the SIP server
    to ask now; a device in ``busy`` (a query in flight) is left for later. One read when there is none."""
    g = gb_devices.c
    with inventory.session(write=False) as s:
        rows = s.execute(
            select(g.device_id, g.catalog_requested_at).where(g.catalog_requested_at.is_not(None))
        ).all()
    asked = [(d, at) for d, at in rows if d not in busy]
    if not asked:
        return []
    taken: list[str] = []
    with inventory.session() as s:
        for device_id, at in asked:  # only the request read: one made meanwhile is taken next time
            done = s.connection().execute(
                update(gb_devices)
                .where(g.device_id == device_id, g.catalog_requested_at == at)
                .values(catalog_requested_at=None, catalog_error=None)
            )
            if done.rowcount:
                taken.append(device_id)
    return taken


def catalog_failed(inventory: Inventory, device_id: str, error: str) -> None:
    """Why a catalog query taken on demand failed (the device is not registered here, refused, never answered)."""
    with inventory.session() as s:
        s.execute(
            update(gb_devices)
            .where(gb_devices.c.device_id == device_id)
            .values(catalog_error=" ".join(error.split())[:255] or "failed")
        )


def wait_catalog(
    inventory: Inventory, device_id: str, since: dt.datetime, *, timeout: float, poll: float = 0.2
) -> dict[str, Any]:
    """The device (as :func:`device` gives it) once its catalog has been answered at or after ``since``. VmsError
    when the query failed, when no SIP server took the request within ``timeout`` seconds, or when the device gave
    no answer within it."""
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        row = device(inventory, device_id)
        if row["catalog_at"] is not None and row["catalog_at"] >= since:
            return row
        if row["catalog_requested_at"] is None and row["catalog_error"]:
            raise VmsError(f"GB/T 28181 device {row['device_id']}: catalog query failed: {row['catalog_error']}")
        if time.monotonic() >= deadline:
            if row["catalog_requested_at"] is not None:
                raise VmsError(
                    f"no GB/T 28181 SIP server took the catalog request within {timeout:g} s (is `vms gb28181 serve` "
                    "or `vms run` running on this database?); it is still pending"
                )
            raise VmsError(f"GB/T 28181 device {row['device_id']}: no catalog answer within {timeout:g} s")
        time.sleep(poll)
