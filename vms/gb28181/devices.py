"""The registered GB/T 28181 devices as stored (for `vms gb28181 devices` and GET /api/v1/gb28181/devices)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from vms.inventory.service import Inventory
from vms.store.models import Observation as ObservationRow
from vms.store.models import Source, gb_devices

__all__ = ["list_devices"]

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
    "user_agent",
    "camera_id",
)


def _utc(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def list_devices(inventory: Inventory, *, online: bool | None = None) -> list[dict[str, Any]]:
    """Every device that registered, by ID, with its channel count (cameras its catalog lists now)."""
    g = gb_devices.c
    stmt = select(*(g[name] for name in _PUBLIC)).order_by(g.device_id)
    if online is not None:
        stmt = stmt.where(g.online.is_(online))
    o = ObservationRow
    with inventory.session(write=False) as s:
        rows = [{k: _utc(v) for k, v in r._mapping.items()} for r in s.execute(stmt)]
        counts = dict(
            s.execute(
                select(Source.name, func.count(o.id))
                .join(o, o.source_id == Source.id)
                .where(Source.name.startswith("gb28181:"), o.removed_at.is_(None))
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
