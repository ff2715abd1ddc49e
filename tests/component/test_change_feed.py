"""The change feed (vms.inventory.changes, written by the triggers of migration 0017_camera_changes): every write
path is in it, a client resumes from any seq, tombstones for removals, seq order is commit order. SQLite and
PostgreSQL (the inventory fixture)."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from sqlalchemy import delete, func, select, update

from probes.health.results import CheckResult, StageResult
from vms.catalog.domain import Observation, SourceKind
from vms.health.service import Health
from vms.inventory import changes
from vms.inventory.ingest import observation_key
from vms.store import repository as repo
from vms.store.models import camera_changes, cameras

T0 = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)


def _rows(ids: range) -> list[dict[str, Any]]:
    return [
        {"device_id": f"371311000013200000{i:02d}", "name": f"点位{i}", "longitude": 118.2 + i / 1000, "latitude": 35.0}
        for i in ids
    ]


def _ingest(inventory, rows: list[dict[str, Any]], source: str = "ledger") -> None:
    obs = [Observation(source, SourceKind.LEDGER, observation_key(r), r) for r in rows]
    inventory.ingest_observations(obs, source=source, kind=SourceKind.LEDGER, snapshot=True, actor="test")


def _follow(inventory, mirror: dict[int, dict[str, Any]], since: int, limit: int = 3) -> tuple[int, list[dict]]:
    """Apply every change after ``since`` to ``mirror``, ``limit`` at a time (a bounded loop); the new cursor."""
    seen: list[dict[str, Any]] = []
    for _ in range(1000):
        page = changes.page(inventory, since, limit)
        assert page.next >= since and len(page.items) <= limit
        for item in page.items:
            if item["op"] == "remove":
                assert "record" not in item
                mirror.pop(item["camera_id"], None)
            else:
                mirror[item["camera_id"]] = item["record"]
        seen += page.items
        since = page.next
        if not page.more:
            assert page.head == since or not page.items
            return since, seen
    raise AssertionError("the feed never ended")


def _live(inventory) -> dict[int, dict[str, Any]]:
    _, rows = inventory.list_cameras(repo.CameraFilter(), limit=None)
    return {r["id"]: r for r in rows}


def _result(cid: int, at: dt.datetime, ok: bool) -> CheckResult:
    stage = StageResult("tcp", ok, 1.0, None if ok else "timeout")
    return CheckResult(cid, at, (stage,), "ok" if ok else "off", "tcp", None if ok else "timeout", None)


def test_every_write_path_is_in_the_feed_and_a_mirror_stays_equal(inventory):
    mirror: dict[int, dict[str, Any]] = {}
    assert changes.head(inventory) == 0
    _ingest(inventory, _rows(range(1, 8)))
    since, seen = _follow(inventory, mirror, 0)
    assert [i["op"] for i in seen] == ["create"] * 7 and mirror == _live(inventory)
    assert [i["seq"] for i in seen] == sorted(i["seq"] for i in seen)

    _ingest(inventory, _rows(range(1, 8)))  # the same list again: nothing changed, nothing in the feed
    assert changes.head(inventory) == since

    first = min(mirror)
    inventory.edit_camera(str(first), {"name": "改名"}, actor="test")
    since, seen = _follow(inventory, mirror, since)
    assert [(i["op"], i["camera_id"]) for i in seen] == [("update", first)] and mirror == _live(inventory)
    assert mirror[first]["name"] == "改名"

    health = Health(inventory)  # a health status change: cameras.status
    sweep = health.start_sweep(["tcp"], "all", at=T0)
    health.record([_result(cid, T0, True) for cid in sorted(mirror)[:3]], sweep)
    since, seen = _follow(inventory, mirror, since)
    assert [i["op"] for i in seen] == ["status"] * 3 and mirror == _live(inventory)
    assert {mirror[c]["status"] for c in sorted(mirror)[:3]} == {"ON"}

    _ingest(inventory, _rows(range(1, 6)))  # a snapshot without rows 6 and 7: removed, tombstones with GB IDs
    since, seen = _follow(inventory, mirror, since)
    assert [(i["op"], i["gb_id"]) for i in seen] == [("remove", f"371311000013200000{i:02d}") for i in (6, 7)]
    assert mirror == _live(inventory) and len(mirror) == 5

    _ingest(inventory, _rows(range(1, 7)))  # row 6 back: the same camera again
    _ingest(inventory, _rows(range(1, 5)), source="osm")  # another source: merges into the same cameras
    since, seen = _follow(inventory, mirror, since)
    assert seen[0]["op"] == "create" and mirror == _live(inventory) and len(mirror) == 6

    with inventory.engine.begin() as conn:  # any write at all, even outside the service
        conn.execute(update(cameras).where(cameras.c.id == first).values(owner="某单位"))
        conn.execute(delete(cameras).where(cameras.c.id == max(mirror)))
    since, seen = _follow(inventory, mirror, since)
    assert [i["op"] for i in seen] == ["update", "remove"] and mirror == _live(inventory)

    # A new client starting from 0 gets the inventory as it is now, each camera once per page at most.
    fresh: dict[int, dict[str, Any]] = {}
    end, _ = _follow(inventory, fresh, 0, limit=1000)
    assert fresh == _live(inventory) and end == since == changes.head(inventory)
    with inventory.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(camera_changes)).scalar_one() > len(fresh)


def test_a_resumed_client_misses_nothing_committed_late(inventory):
    """seq order is commit order: a change numbered when its transaction commits, so a reader that has seen a
    later seq never gets an earlier one afterwards. PostgreSQL: a second writer commits while the first is still
    open and comes first; SQLite: it waits for the first (one writer at a time)."""
    _ingest(inventory, _rows(range(1, 4)))
    a, b = sorted(_live(inventory))[:2]
    since = changes.head(inventory)
    slow = inventory.engine.connect()
    tx = slow.begin()
    slow.execute(update(cameras).where(cameras.c.id == a).values(name="slow writer"))
    done = threading.Event()

    def second_writer() -> None:
        with inventory.engine.begin() as conn:
            conn.execute(update(cameras).where(cameras.c.id == b).values(name="fast writer"))
        done.set()

    t = threading.Thread(target=second_writer, daemon=True)
    t.start()
    postgres = inventory.engine.dialect.name == "postgresql"
    assert done.wait(10) if postgres else not done.wait(0.5)
    read: list[tuple[int, int]] = []
    page = changes.page(inventory, since, 10)  # a client reads meanwhile
    read += [(i["seq"], i["camera_id"]) for i in page.items]
    assert [c for _, c in read] == ([b] if postgres else [])
    since = page.next
    tx.commit()
    slow.close()
    t.join(10)
    assert done.is_set()
    page = changes.page(inventory, since, 10)  # and resumes from its cursor
    read += [(i["seq"], i["camera_id"]) for i in page.items]
    assert [c for _, c in read] == ([b, a] if postgres else [a, b])  # each once, in commit order
    assert [s for s, _ in read] == sorted(s for s, _ in read) and not page.more


def test_cameras_present_before_the_feed_come_as_creates(inventory):
    """Upgrading a database that has cameras: each live one is in the feed as a create, the removed ones not."""
    from alembic import command

    from vms.store.db import alembic_config

    _ingest(inventory, _rows(range(1, 5)))
    _ingest(inventory, _rows(range(1, 4)))  # the 4th removed
    cfg = alembic_config(inventory.engine.url.render_as_string(hide_password=False))
    with inventory.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0017_camera_changes-1")
    inventory.upgrade()
    mirror: dict[int, dict[str, Any]] = {}
    _, seen = _follow(inventory, mirror, 0)
    assert [i["op"] for i in seen] == ["create"] * 3 and mirror == _live(inventory)
    inventory.edit_camera(str(min(mirror)), {"name": "改名"}, actor="test")  # the triggers are back
    assert [i["op"] for i in _follow(inventory, mirror, seen[-1]["seq"])[1]] == ["update"]
