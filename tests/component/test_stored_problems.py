"""Stored quality problems (kept up to date by every write) equal a from-scratch check of every camera, after a
sequence of imports, edits, removals, discovery-style ingests, ID allocation and regions imports, on SQLite and
PostgreSQL; and reading them costs the same however many cameras there are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vms.catalog.domain import Observation, SourceKind
from vms.inventory.service import Inventory
from vms.store import repository as repo

HEADER = "设备编码,设备名称,经度,纬度,行政区域,摄像机类型,MAC,序列号,厂商,父设备编码,点位类型\n"


def ledger_rows(n: int = 30) -> list[str]:
    rows = []
    for i in range(1, n + 1):
        device_id = f"3713110000132600{i:04d}" if i % 11 else ""  # a few without an ID
        name = f"罗庄区测试路{i}号"
        lon, lat = 118.28 + i / 1000, 34.99 + i / 1000
        mac = f"00:11:22:33:44:{i:02x}" if i % 5 else "00:11:22:33:44:ff"  # 5, 10, ...: one MAC
        serial = f"SN{i:05d}" if i % 6 else "SN-SHARED"
        parent = f"3713110000132600{i + 1:04d}" if i % 4 == 0 else ("37131100002150000001" if i % 9 == 0 else "")
        point = "1" if i % 8 == 0 else "3"
        civil = "371311" if i % 13 else "110101"
        rows.append(f"{device_id},{name},{lon:.4f},{lat:.4f},{civil},球机,{mac},{serial},海康威视,{parent},{point}")
    return rows


def write(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    return path


CATALOG = """<?xml version="1.0" encoding="GB2312"?>
<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>37131100002000000001</DeviceID><SumNum>2</SumNum>
<DeviceList Num="2">
<Item><DeviceID>37131100002150000001</DeviceID><Name>罗庄分局</Name><ParentID>37131100002000000001</ParentID></Item>
<Item><DeviceID>37131100001326000003</DeviceID><Name>罗庄区测试路3号</Name><CivilCode>371311</CivilCode>
<ParentID>37131100002150000001</ParentID><Longitude>118.2830</Longitude><Latitude>34.9930</Latitude></Item>
</DeviceList></Response>
"""


def tallies(report: Any) -> dict[str, Any]:
    return {
        "overall": (report.overall.total, report.overall.passed),
        "rules": dict(report.by_rule),
        "regions": {k: (t.total, t.passed) for k, t in report.by_region.items() if t.total},
        "sources": {k: (t.total, t.passed) for k, t in report.by_source.items() if t.total},
        "conflicts": report.with_conflicts,
    }


def assert_same_as_from_scratch(inv: Inventory, step: str) -> dict[int, list[str]]:
    stored, names = inv.quality()
    fresh, fresh_names = inv.quality_from_scratch()
    assert tallies(stored) == tallies(fresh), step
    assert stored.problems == fresh.problems, step
    assert stored.as_dict(region_names=names) == fresh.as_dict(region_names=fresh_names), step
    _, rows = inv.list_cameras(repo.CameraFilter(include_removed=True), limit=None)
    for row in rows:
        assert inv.camera_problems(row["id"]) == fresh.problems.get(row["id"], []), (step, row["id"])
    total, page = inv.quality_cameras(limit=1000)
    assert total == len(fresh.problems) and [c["id"] for c in page] == sorted(fresh.problems), step
    for code, count in fresh.by_rule.items():
        total, page = inv.quality_cameras(code=code, limit=1000)
        expected = sorted(cid for cid, codes in fresh.problems.items() if code in codes)
        assert total == count and [c["id"] for c in page] == expected, (step, code)
    return fresh.problems


def camera_id(inv: Inventory, ref: str) -> int:
    with inv.session(write=False) as s:
        return inv.resolve_camera(s, ref)


def pin(inv: Inventory, camera_id: int, **fields: Any) -> None:
    """A correction that skips the API's validation (to reach states only old data or other tools make)."""
    key = f"camera:{camera_id}"
    inv.ingest_observations(
        [Observation("fixup", SourceKind.API, key, fields)],
        source="fixup",
        kind=SourceKind.API,
        snapshot=False,
        actor="test",
        pinned={key: camera_id},
    )


def test_stored_problems_equal_a_fresh_check_after_every_kind_of_write(inventory, tmp_path, test_data):
    inv = inventory
    rows = ledger_rows()
    ledger = write(tmp_path / "ledger.csv", rows)
    inv.import_file(ledger, source="ledger:police")
    assert_same_as_from_scratch(inv, "first import")
    # Another department lists a camera of its own at the same place under the same name as row 7.
    other = tmp_path / "other.csv"
    other.write_text(HEADER + "37131100001326008007,罗庄区测试路7号,118.2870,34.9970,371311,球机,,,,,3\n")
    inv.import_file(other, source="ledger:traffic")
    problems = assert_same_as_from_scratch(inv, "second department")
    assert {"DUP-NAME-POSITION", "DUP-MAC", "DUP-SERIAL", "PARENT-UNRESOLVED"} <= {
        c for codes in problems.values() for c in codes
    }

    # A catalog with a tree node: cameras naming it as parent resolve now.
    xml = tmp_path / "catalog.xml"
    xml.write_bytes(CATALOG.encode("gb18030"))
    inv.import_file(xml, source="catalog:platform")
    assert_same_as_from_scratch(inv, "catalog with a parent node")

    # Edits: a duplicate MAC made and unmade, a parent's ID changed under its child, a name fixed.
    a = camera_id(inv, "37131100001326000001")
    b = camera_id(inv, "37131100001326000002")
    inv.edit_camera(str(a), {"mac": "00:aa:bb:cc:dd:ee"}, actor="test")
    inv.edit_camera(str(b), {"mac": "00:aa:bb:cc:dd:ee"}, actor="test")
    problems = assert_same_as_from_scratch(inv, "two cameras given one MAC")
    assert "DUP-MAC" in problems[a] and "DUP-MAC" in problems[b]
    inv.edit_camera(str(b), {"mac": "00:aa:bb:cc:dd:01"}, actor="test")
    problems = assert_same_as_from_scratch(inv, "one MAC changed back")
    assert "DUP-MAC" not in problems.get(a, [])
    child = camera_id(inv, "37131100001326000004")  # its parent is ...0005
    parent = camera_id(inv, "37131100001326000005")
    assert "PARENT-UNRESOLVED" not in problems.get(child, [])
    inv.edit_camera(str(parent), {"device_id": "37131100001326009005"}, actor="test")
    problems = assert_same_as_from_scratch(inv, "a parent's ID changed")
    assert "PARENT-UNRESOLVED" in problems[child]
    pin(inv, a, device_id="37131100001326000002")  # two records with one ID (only another tool can do this)
    problems = assert_same_as_from_scratch(inv, "two records with one ID")
    assert "DUP-ID" in problems[a] and "DUP-ID" in problems[b]
    pin(inv, a, device_id="37131100001326000001")
    assert_same_as_from_scratch(inv, "ID given back")

    # Removals and restores by snapshot imports (a few cameras: under any removal guard).
    write(ledger, [r for i, r in enumerate(rows) if i not in (6, 4)])  # row 7 (same place as traffic's), row 5
    inv.import_file(ledger, source="ledger:police")
    problems = assert_same_as_from_scratch(inv, "two cameras removed")
    assert "DUP-NAME-POSITION" not in problems.get(camera_id(inv, "37131100001326008007"), [])
    write(ledger, rows)
    inv.import_file(ledger, source="ledger:police")
    assert_same_as_from_scratch(inv, "cameras restored")

    # A discovery-style source listing known cameras: by-source counts change, records may not.
    inv.ingest_observations(
        [
            Observation("onvif", SourceKind.ONVIF, "mac:00:11:22:33:44:01", {"mac": "00:11:22:33:44:01"}),
            Observation("onvif", SourceKind.ONVIF, "mac:00:11:22:33:44:99", {"mac": "00:11:22:33:44:99", "name": "1"}),
        ],
        source="onvif",
        kind=SourceKind.ONVIF,
        snapshot=False,
        actor="test",
    )
    assert_same_as_from_scratch(inv, "discovery")

    # ID allocation, regions (every camera checked again), a merge priority change.
    inv.allocate_ids(civil_code="371311")
    assert_same_as_from_scratch(inv, "IDs allocated")
    inv.import_regions(test_data / "admin/areas.csv")
    assert_same_as_from_scratch(inv, "administrative codes imported")
    inv.import_regions(test_data / "geo/luozhuang_gcj02.json")
    assert_same_as_from_scratch(inv, "region polygons imported")
    inv.settings.source_priority = ["ledger", "catalog", "onvif", "api"]
    inv.remerge_all()
    assert_same_as_from_scratch(inv, "remerged with another priority")


def test_a_changed_governed_region_or_rule_set_rechecks_everything(inventory, settings, tmp_path):
    inventory.import_file(write(tmp_path / "ledger.csv", ledger_rows(20)), source="ledger:police")
    before, _ = inventory.quality()
    moved = Inventory(settings.model_copy(update={"governed_region": "110101"}), engine=inventory.engine)
    after = assert_same_as_from_scratch(moved, "governed region changed")
    assert after != before.problems and any("CIVIL-CODE-OUTSIDE" in p for p in after.values())
    with inventory.session() as s:  # as after an upgrade whose rules differ
        from vms.store.problems import set_state

        set_state(s, "fingerprint", "older rules")
    assert_same_as_from_scratch(inventory, "rules changed")


def test_summary_reads_counters_not_cameras(inventory, tmp_path):
    """The summary and one camera's problems are lookups: no query grows with the inventory."""
    from sqlalchemy import event

    inventory.import_file(write(tmp_path / "ledger.csv", ledger_rows(30)), source="ledger:police")
    inventory.quality(cameras=False)  # current
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(inventory.engine, "before_cursor_execute", seen)
    try:
        report, _ = inventory.quality(cameras=False)
        inventory.camera_problems(1)
    finally:
        event.remove(inventory.engine, "before_cursor_execute", seen)
    assert report.overall.total == 30
    assert not [s for s in statements if "FROM cameras" in s and "WHERE" not in s], statements
    assert not [s for s in statements if "observations" in s], statements
