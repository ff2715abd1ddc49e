"""Health as a dashboard shows it: the latest status changes of every camera, with the camera's name and IDs."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from vms.health import store
from vms.store.models import cameras, health_events

if TYPE_CHECKING:
    from vms.inventory.service import Inventory

__all__ = ["recent_events"]


def recent_events(inv: Inventory, *, limit: int = 50, since: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Status changes, newest first (the (at) index read backwards), each with its camera's name, GB ID,
    department number and region."""
    e, c = health_events, cameras
    stmt = (
        select(
            e.c.id,
            e.c.at,
            e.c.camera_id,
            e.c.event,
            e.c.previous,
            e.c.status,
            e.c.stage,
            e.c.cause,
            c.c.name,
            c.c.device_id,
            c.c.local_id,
            c.c.region_code,
        )
        .select_from(e.join(c, c.c.id == e.c.camera_id))
        .order_by(e.c.at.desc(), e.c.id.desc())
        .limit(limit)
    )
    if since is not None:
        stmt = stmt.where(e.c.at >= since)
    with inv.session(write=False) as s:
        rows = s.execute(stmt).all()
    return [{**r._mapping, "at": store.utc(r.at).isoformat()} for r in rows]
