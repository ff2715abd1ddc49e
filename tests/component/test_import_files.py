"""File imports into a real database (SQLite and PostgreSQL): bad rows, idempotence, merge, round trips."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from shapely.geometry import Point, shape

from vms.store import repository as repo

HEADER = "设备编码,设备名称,经度,纬度,行政区域,摄像机类型,IP地址,端口,录像保存天数\n"
GOOD = [
    "37131100001326000001,沂河路与通达路交叉口东,118.2841,34.9972,371311,球机,127.0.1.1,80,30",
    '37131100001326000002,双月湖公园南门,118.2702,34.9881,371311,3,127.0.1.2,80,"1,000"',
    "37131100001326000003,罗庄区政府西侧,34.9902,118.2788,371311,枪机,127.0.1.3,80,90",  # swapped
    "37131100001326000004,盛庄街道办事处,,,371311,2,127.0.1.4,80,30",  # no coordinates
]
# Rejected: rows that repeat another (the only other reason is a row that names no camera at all).
BAD = [
    ("37131100001326000001,重复编码,118.29,34.98,371311,1,127.0.1.10,80,30", "ID-DUPLICATE"),
    (
        "37131100001326000007,沂河路与通达路交叉口东,118.2841,34.9972,371311,1,127.0.1.12,80,30",
        "DUPLICATE-NAME-POSITION",
    ),
]
# Landed flagged: a value that cannot be read is left out (kept as written in extra), the camera is imported.
FLAGGED = [
    ("3713110000132600000X,坏编码,118.28,34.99,371311,1,127.0.1.9,80,30", "ID-MALFORMED"),
    ("37131100001326000006,乱码坐标,东经118度,abc,371311,1,127.0.1.11,80,30", "COORD-GARBAGE"),
]


def write_ledger(path: Path, encoding: str = "utf-8", *, flagged: bool = False) -> dict[int, str]:
    """The ledger file, and the line of each bad row -> its expected code (``flagged``: also FLAGGED rows)."""
    lines = [HEADER.rstrip("\n")]
    expected: dict[int, str] = {}
    for row in GOOD[:2]:
        lines.append(row)
    for row, code in BAD + (FLAGGED if flagged else []):
        lines.append(row)
        expected[len(lines)] = code
    lines.extend(GOOD[2:])
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return expected


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk"])
def test_broken_ledger_lands_good_rows_and_reports_bad_ones(inventory, tmp_path, encoding):
    path = tmp_path / "ledger.csv"
    expected = write_ledger(path, encoding, flagged=True)
    rep = inventory.import_file(path)
    fatal = {i.line: i.code for i in rep.issues if i.fatal}
    assert fatal == {line: code for line, code in expected.items() if code in dict(BAD).values()}
    assert all(
        str(line) in i.reason or f"line {line}" in i.reason or i.line == line
        for line, i in ((i.line, i) for i in rep.issues)
    )
    assert rep.accepted == 6 and rep.rejected == 2
    notes = {(i.line, i.code) for i in rep.issues if not i.fatal}
    assert {(line, code) for line, code in expected.items() if code in dict(FLAGGED).values()} <= notes
    assert (len(GOOD[:2]) + len(BAD) + len(FLAGGED) + 2, "COORD-SWAPPED") in notes
    assert (len(GOOD[:2]) + len(BAD) + len(FLAGGED) + 3, "COORD-MISSING") in notes
    assert any(code == "NUMBER-FORMAT" for _, code in notes)

    total, rows = inventory.list_cameras(repo.CameraFilter(), limit=10)
    assert total == 6
    garbled = next(r for r in rows if r["name"] == "乱码坐标")
    assert (garbled["longitude"], garbled["latitude"]) == (None, None)
    assert garbled["extra"] == {"经度": "东经118度", "纬度": "abc"}
    no_id = next(r for r in rows if r["name"] == "坏编码")
    assert no_id["device_id"] is None and no_id["extra"] == {"设备编码": "3713110000132600000X"}
    by_id = {r["device_id"]: r for r in rows}
    assert by_id["37131100001326000002"]["record_save_days"] == 1000
    assert by_id["37131100001326000003"]["longitude"] == pytest.approx(118.2788)
    assert by_id["37131100001326000001"]["ptz_type"] == "1"
    assert by_id["37131100001326000001"]["name"] == "沂河路与通达路交叉口东"

    again = inventory.import_file(path)
    assert not again.result.changed
    assert again.result.observations_unchanged == 6


def test_wrong_encoding_rows_are_reported_not_lost(inventory, tmp_path):
    path = tmp_path / "mixed.csv"
    good = (HEADER + GOOD[0] + "\n" + GOOD[1] + "\n").encode("utf-8")
    bad = b"37131100001326000009," + "错误编码行".encode("gbk") + b",118.28,34.99,371311,1,127.0.1.9,80,30\n"
    path.write_bytes(good + bad)
    rep = inventory.import_file(path)
    assert [(i.line, i.code, i.fatal) for i in rep.issues if i.code == "ENCODING"] == [(4, "ENCODING", False)]
    assert rep.accepted == 3


def test_dry_run_changes_nothing(inventory, tmp_path):
    path = tmp_path / "ledger.csv"
    write_ledger(path)
    rep = inventory.import_file(path, dry_run=True)
    assert rep.result.cameras_created == 4
    assert inventory.list_cameras(repo.CameraFilter())[0] == 0
    rep = inventory.import_file(path)
    assert rep.result.cameras_created == 4


CATALOG = """<?xml version="1.0" encoding="GB2312"?>
<Response>
<CmdType>Catalog</CmdType>
<SN>17</SN>
<DeviceID>37131100002000000001</DeviceID>
<SumNum>3</SumNum>
<DeviceList Num="3">
<Item><DeviceID>37131100002150000001</DeviceID><Name>罗庄分局</Name><ParentID>37131100002000000001</ParentID></Item>
<Item>
<DeviceID>37131100001326000001</DeviceID><Name>沂河路通达路口东</Name><Manufacturer>Hikvision</Manufacturer>
<Model>DS-2DE4425IW</Model><Owner>Owner</Owner><CivilCode>371311</CivilCode><Address>沂河路</Address>
<Parental>0</Parental><ParentID>37131100002150000001</ParentID><RegisterWay>1</RegisterWay><Secrecy>0</Secrecy>
<IPAddress>127.0.1.1</IPAddress><Port>5060</Port><Status>ON</Status>
<Longitude>118.2841</Longitude><Latitude>34.9972</Latitude>
<Info><PTZType>1</PTZType><Resolution>5/6</Resolution></Info>
</Item>
<Item><DeviceID>37131100001326000099</DeviceID><Name>新目录点位</Name><Status>OFF</Status>
<ParentID>37131100002150000001</ParentID><CivilCode>371311</CivilCode></Item>
</DeviceList>
</Response>
"""


def test_same_camera_from_ledger_and_catalog_is_one_record(inventory, tmp_path):
    ledger = tmp_path / "ledger.csv"
    write_ledger(ledger)
    inventory.import_file(ledger, source="ledger:police")
    xml = tmp_path / "catalog.xml"
    xml.write_bytes(CATALOG.encode("gb18030"))
    rep = inventory.import_file(xml, source="catalog:platform")
    assert rep.nodes == 1  # the business group is a tree node, not a camera
    assert rep.result.cameras_created == 1 and rep.result.cameras_updated == 1
    assert inventory.list_cameras(repo.CameraFilter())[0] == 5
    shown = inventory.show_camera("37131100001326000001")
    assert {s["source"] for s in shown["sources"]} == {"ledger:police", "catalog:platform"}
    assert shown["record"]["manufacturer"] == "Hikvision"
    assert shown["record"]["name"] == "沂河路通达路口东"
    assert shown["provenance"]["name"]["conflicts"]["ledger:police"] == "沂河路与通达路交叉口东"
    assert shown["record"]["resolution"] == "5/6"
    report, _ = inventory.quality()
    cid = shown["id"]
    assert "PARENT-UNRESOLVED" not in report.problems.get(cid, [])


@pytest.mark.parametrize("fmt", ["csv", "geojson", "xml"])
def test_export_round_trips_through_import(inventory, tmp_path, fmt, settings):
    ledger = tmp_path / "ledger.csv"
    write_ledger(ledger)
    inventory.import_file(ledger)
    xml = tmp_path / "catalog.xml"
    xml.write_bytes(CATALOG.encode("gb18030"))
    inventory.import_file(xml)
    out = tmp_path / f"export.{fmt}"
    assert inventory.export(out, fmt=fmt) == 5
    _, before = inventory.list_cameras(repo.CameraFilter(), limit=None)

    from vms.catalog.fields import CATALOG_FIELDS, FIELD_NAMES
    from vms.inventory.service import Inventory

    fresh = Inventory(settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'fresh.sqlite3'}"}))
    fresh.upgrade()
    rep = fresh.import_file(out)
    assert rep.rejected == 0, rep.issues
    _, after = fresh.list_cameras(repo.CameraFilter(), limit=None)
    names = [f.name for f in CATALOG_FIELDS] if fmt == "xml" else list(FIELD_NAMES)
    key = lambda r: r["device_id"]  # noqa: E731
    assert [{n: r[n] for n in names} for r in sorted(before, key=key)] == [
        {n: r[n] for n in names} for r in sorted(after, key=key)
    ]
    fresh.engine.dispose()


def independent_district_counts(data: Path) -> dict[str | None, int]:
    """Point-in-polygon with plain shapely over the raw files: no code of ours.

    One camera (K209F, on Boundary Street) lies where two simplified district polygons overlap; like the
    inventory, count it in the smaller one. Districts are keyed by the name the inventory shows (name_zh): the
    file has no codes, so the inventory generates them.
    """
    districts = json.loads((data / "cameras/hk_18_districts.geojson").read_text())["features"]
    shapes = [(f["properties"]["name_zh"], shape(f["geometry"])) for f in districts]
    counts: dict[str | None, int] = {}
    with open(data / "cameras/hk_traffic_cameras.csv", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            p = Point(float(row["longitude"]), float(row["latitude"]))
            hits = sorted((poly.area, name) for name, poly in shapes if poly.covers(p))
            hit = hits[0][1] if hits else None
            counts[hit] = counts.get(hit, 0) + 1
    return counts


def test_hk_cameras_per_district_match_independent_count(inventory, test_data):
    inventory.import_regions(test_data / "cameras/hk_18_districts.geojson")
    rep = inventory.import_file(test_data / "cameras/hk_traffic_cameras.csv")
    assert rep.accepted == 210 and rep.rejected == 0
    ours = {s.name: s.count for s in inventory.stats("region")}
    expected = independent_district_counts(test_data)
    assert ours == expected
    assert expected.get(None, 0) > 0  # real out-of-region cameras exist in this data

    report, _ = inventory.quality()
    flagged = {cid for cid, codes in report.problems.items() if "COORD-OUTSIDE-REGIONS" in codes}
    _, rows = inventory.list_cameras(repo.CameraFilter(), limit=None)
    outside = {r["id"] for r in rows if r["region_code"] is None}
    assert flagged == outside and len(flagged) == expected[None]


def test_excel_ledger_with_title_row(inventory, tmp_path):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["罗庄区公安分局视频监控点位台账（2025年）"])  # title row above the header, as departments do
    ws.append(HEADER.strip().split(","))
    # Excel keeps numbers as doubles: a 20-digit ID typed as a number has lost its last digits.
    ws.append([37131100001326000009, "数字格式编码", 118.2841, 34.9972, "371311", "球机", "127.0.1.8", 80, 30])
    ws.append(
        ["37131100001326000001", "沂河路与通达路交叉口东", 118.2841, 34.9972, "371311", "球机", "127.0.1.1", 80, 30]
    )
    ws.append(
        ["37131100001326000002", "双月湖公园南门", "118.2702", "34.9881", 371311, "3", "127.0.1.2", "80", "1,000"]
    )
    ws.append(["3713110000132600000", "短编码", 118.28, 34.99, "371311", 1, "127.0.1.9", 80, 30])
    ws.append(["37131100001326000004", "坐标乱码", "N/A?", "xx", "371311", 1, "127.0.1.4", 80, 30])
    path = tmp_path / "台账.xlsx"
    wb.save(path)
    rep = inventory.import_file(path)
    flagged = {i.line: i for i in rep.issues if i.code in {"ID-MALFORMED", "COORD-GARBAGE"}}
    assert {line: (i.code, i.fatal) for line, i in flagged.items()} == {
        3: ("ID-MALFORMED", False),
        6: ("ID-MALFORMED", False),
        7: ("COORD-GARBAGE", False),
    }
    assert "lost its last digits" in flagged[3].reason
    assert rep.accepted == 5 and rep.rejected == 0
    shown = inventory.show_camera("37131100001326000001")
    assert shown["record"]["ptz_type"] == "1" and shown["record"]["port"] == 80
    assert shown["sources"][0]["line"] == 4
    assert not inventory.import_file(path).result.changed


def test_one_camera_problems_equal_the_full_report(inventory, tmp_path, test_data):
    ledger = tmp_path / "ledger.csv"
    write_ledger(ledger)
    inventory.import_file(ledger)
    other = tmp_path / "other.csv"  # another department lists a camera with the same name and position
    other.write_text(HEADER + "37131100001326000011,双月湖公园南门,118.2702,34.9881,371311,3,127.0.1.22,80,30\n")
    inventory.import_file(other)
    xml = tmp_path / "catalog.xml"
    xml.write_bytes(CATALOG.encode("gb18030"))
    inventory.import_file(xml)
    inventory.import_regions(test_data / "cameras/hk_18_districts.geojson")
    inventory.import_file(test_data / "cameras/hk_traffic_cameras.csv")
    report, _ = inventory.quality()
    _, rows = inventory.list_cameras(repo.CameraFilter(), limit=None)
    assert any("DUP-NAME-POSITION" in codes for codes in report.problems.values())
    for row in rows:
        assert sorted(inventory.camera_problems(row["id"])) == sorted(report.problems.get(row["id"], [])), row


def test_one_column_holding_both_coordinates(inventory, tmp_path):
    path = tmp_path / "combined.csv"
    path.write_text(
        "国标编码,监控点位名称,经纬度,IP地址\n"
        "37131100001326000001,沂河路口,\"118.2841,34.9972\",127.0.1.1\n"
        "37131100001326000002,通达路口,118.2702 34.9881,127.0.1.2\n"
        "37131100001326000003,双月湖,\"34.9902，118.2788\",127.0.1.3\n"
        "37131100001326000004,坏坐标,118.28,127.0.1.4\n",
        encoding="utf-8",
    )
    rep = inventory.import_file(path)
    assert [(i.line, i.code, i.fatal) for i in rep.issues if i.code == "COORD-GARBAGE"] == [(5, "COORD-GARBAGE", False)]
    assert (4, "COORD-SWAPPED") in {(i.line, i.code) for i in rep.issues}
    _, rows = inventory.list_cameras(repo.CameraFilter())
    got = {r["device_id"][-1]: (r["longitude"], r["latitude"]) for r in rows}
    assert got == {"1": (118.2841, 34.9972), "2": (118.2702, 34.9881), "3": (118.2788, 34.9902), "4": (None, None)}
