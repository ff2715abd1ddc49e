"""The change feed: every create, update, removal and status change of a camera, in commit order, with a sequence
number a client resumes from after any interruption.

The database writes it (triggers of migration 0017_camera_changes on ``cameras``), so no write path can miss it.
A client mirrors the inventory by asking for the changes after the last ``seq`` it applied, until ``more`` is
false: starting from 0 it gets every live camera (its create) and then every change. An item carries the camera's
CURRENT record, so a client applies the items in order (upsert a record, delete on a tombstone) and is then equal
to the inventory as of the page; a camera changed twice within one page comes once, at its last change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from vms.store import repository as repo
from vms.store.models import camera_changes

if TYPE_CHECKING:
    from vms.inventory.service import Inventory

MAX_PAGE = 1000


@dataclass(frozen=True)
class ChangePage:
    items: list[dict[str, Any]]  # in seq order: {"seq", "op", "camera_id", "at", "record"} or a tombstone
    next: int  # the seq to ask after next time (the last seq read; ``since`` when there was none)
    more: bool  # more changes after ``next`` already
    head: int  # the latest seq when the page was read


def head(inv: Inventory) -> int:
    """The latest sequence number (0 when the feed is empty): any change to the cameras moves it."""
    with inv.session(write=False) as s:
        return int(s.scalar(select(func.coalesce(func.max(camera_changes.c.seq), 0))) or 0)


def changes_since(inv: Inventory, seq: int, limit: int) -> tuple[list[dict[str, Any]], int, bool]:
    """Up to ``limit`` changes after ``seq``: (items, next seq, more). See :func:`page`."""
    got = page(inv, seq, limit)
    return got.items, got.next, got.more


def page(inv: Inventory, since: int, limit: int) -> ChangePage:
    """The changes after ``since`` (at most ``limit``, 1..MAX_PAGE), each with the camera's current record (the
    full stored row: the API shows its public form), or a tombstone ``{"seq", "op": "remove", "camera_id",
    "gb_id", "at"}`` for a camera removed (or deleted) since."""
    limit = max(1, min(limit, MAX_PAGE))
    c = camera_changes.c
    with inv.session(write=False) as s:
        rows = s.execute(
            select(c.seq, c.camera_id, c.op, c.gb_id, c.at).where(c.seq > since).order_by(c.seq).limit(limit + 1)
        ).all()
        more = len(rows) > limit
        rows = rows[:limit]
        top = int(s.scalar(select(func.coalesce(func.max(c.seq), 0))) or 0)
        records = repo.camera_rows(s, {r.camera_id for r in rows})
    last_of = {r.camera_id: r.seq for r in rows}
    items: list[dict[str, Any]] = []
    for r in rows:
        if last_of[r.camera_id] != r.seq:
            continue  # the camera's later item in this page carries its current state
        rec = records.get(r.camera_id)
        if rec is None or rec["removed_at"] is not None:
            gb_id = (rec.get("device_id") if rec is not None else None) or r.gb_id
            items.append({"seq": r.seq, "op": "remove", "camera_id": r.camera_id, "gb_id": gb_id, "at": r.at})
        else:
            op = "create" if r.op == "remove" else r.op  # removed then restored: its restore comes later still
            items.append({"seq": r.seq, "op": op, "camera_id": r.camera_id, "at": r.at, "record": rec})
    nxt = rows[-1].seq if rows else since
    return ChangePage(items, int(nxt), more, max(top, int(nxt)))
