"""Imports keep every camera (issue 6, points 7 and 10), on SQLite and PostgreSQL.

A row is rejected only when it names no camera or repeats another: a value that cannot be read lands the camera
without it, keeps the text as written and is reported. An import that would remove more than
VMS_MAX_REMOVAL_SHARE of its source's cameras (a header-only file, a file whose every row is rejected) stops
and changes nothing, unless removals are allowed.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from vms.inventory.ingest import RemovalRefused
from vms.store import repository as repo

HEADER = "设备编码,设备名称,经度,纬度,端口\n"


def municipal_export(path: Path, rows: int = 20) -> None:
    """A real-looking export whose spreadsheet turned decimal points into thousands separators in most rows."""
    lines = [HEADER]
    for i in range(1, rows + 1):
        if i == 1:
            lon, lat = "118.123456", "35.123456"  # one row the spreadsheet left alone
        elif i % 2:
            lon, lat = '"118,123,456"', "35.123.456"
        else:
            lon, lat = "118.123.4%02d" % i, '"35,1%02d,456"' % i  # noqa: UP031
        lines.append(f"371311000013200000{i:02d},罗庄点位{i},{lon},{lat},80\n")
    path.write_text("".join(lines), encoding="utf-8")


def live_count(inventory) -> int:
    return inventory.list_cameras(repo.CameraFilter())[0]


def test_mangled_coordinates_land_without_position_keep_raw_and_are_counted(inventory, tmp_path):
    path = tmp_path / "municipal.csv"
    municipal_export(path)
    rep = inventory.import_file(path)
    assert (rep.accepted, rep.rejected) == (20, 0)
    garbage = [i for i in rep.issues if i.code == "COORD-GARBAGE"]
    assert garbage and not any(i.fatal for i in rep.issues)
    assert {i.line for i in garbage} == set(range(3, 22))  # every mangled row reported, by its line
    assert all(f"line {i.line}" in i.reason for i in garbage)

    total, rows = inventory.list_cameras(repo.CameraFilter(), limit=None)
    assert total == 20
    by_id = {r["device_id"]: r for r in rows}
    kept = by_id["37131100001320000001"]
    assert (kept["longitude"], kept["latitude"]) == (118.123456, 35.123456)
    mangled = by_id["37131100001320000003"]
    assert (mangled["longitude"], mangled["latitude"]) == (None, None)
    assert mangled["extra"] == {"经度": "118,123,456", "纬度": "35.123.456"}  # as written, nothing lost
    assert by_id["37131100001320000004"]["extra"] == {"经度": "118.123.404", "纬度": "35,104,456"}

    report, _ = inventory.quality()
    assert report.overall.total == 20
    missing = [cid for cid, codes in report.problems.items() if "COORD-MISSING" in codes]
    assert len(missing) == 19  # quality counts every camera that landed without a position

    out = tmp_path / "export.csv"
    inventory.export(out)
    exported = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    row3 = next(r for r in exported if r["device_id"] == "37131100001320000003")
    assert (row3["longitude"], row3["经度"], row3["纬度"]) == ("", "118,123,456", "35.123.456")

    assert not inventory.import_file(path).result.changed  # idempotent with the raw values kept


def test_every_unreadable_value_lands_flagged(inventory, tmp_path):
    path = tmp_path / "values.csv"
    path.write_text(
        "设备编码,设备名称,经度,纬度,端口,IP地址,录像保存天数\n"
        "3.71311E+19,科学计数法编码,118.30,35.06,80,127.0.1.1,30\n"  # 2: ID lost its digits, the name identifies
        "37131100001320000003,端口乱码,118.31,35.07,八十,127.0.1.3,30\n"  # 3: port garbage
        "37131100001320000004,越界坐标,500,95,80,127.0.1.4,30\n"  # 4: out of range
        "37131100001320000005," + "长" * 300 + ",118.32,35.08,80,127.0.1.5,30\n"  # 5: name too long for its column
        "37131100001320000006,天数乱码,118.33,35.09,80,not-an-ip!,很多\n"  # 6: IP and days garbage
        "3713110000132000000X,,,,,,\n"  # 7: a broken ID and nothing else: cannot name a camera
        ",,118.34,35.10,80,,\n",  # 8: nothing identifies the camera
        encoding="utf-8",
    )
    rep = inventory.import_file(path)
    fatal = {i.line: i.code for i in rep.issues if i.fatal}
    assert fatal == {7: "ID-MALFORMED", 8: "NO-IDENTITY"}
    flagged = {(i.line, i.code) for i in rep.issues if not i.fatal}
    assert {(2, "ID-MALFORMED"), (3, "VALUE-DROPPED"), (4, "COORD-GARBAGE"), (5, "VALUE-TOO-LONG")} <= flagged
    assert {(6, "VALUE-DROPPED")} <= flagged
    assert (rep.accepted, rep.rejected) == (5, 2)

    _, rows = inventory.list_cameras(repo.CameraFilter(), limit=None)
    by_line = {inventory.show_camera(str(r["id"]))["sources"][0]["line"]: r for r in rows}
    assert by_line[2]["device_id"] is None and by_line[2]["extra"] == {"设备编码": "3.71311E+19"}
    assert by_line[3]["port"] is None and by_line[3]["extra"] == {"端口": "八十"}
    assert by_line[4]["longitude"] is None and by_line[4]["extra"] == {"经度": "500", "纬度": "95"}
    assert by_line[5]["name"] is None and by_line[5]["extra"] == {"设备名称": "长" * 300}
    assert by_line[6]["ip_address"] is None and by_line[6]["record_save_days"] is None
    assert by_line[6]["extra"] == {"IP地址": "not-an-ip!", "录像保存天数": "很多"}


def ledger(path: Path, ids: range) -> None:
    path.write_text(
        HEADER + "".join(f"371311000013200{i:05d},点位{i},118.{i:04d},35.{i:04d},80\n" for i in ids),
        encoding="utf-8",
    )


def test_header_only_or_all_rejected_file_is_refused(inventory, tmp_path):
    full = tmp_path / "full.csv"
    ledger(full, range(1, 11))
    inventory.import_file(full, source="ledger:police")
    assert live_count(inventory) == 10

    empty = tmp_path / "empty.csv"
    empty.write_text(HEADER, encoding="utf-8")
    with pytest.raises(RemovalRefused) as refused:
        inventory.import_file(empty, source="ledger:police")
    message = str(refused.value)
    assert "10 of the 10" in message and "--allow-removals" in message and "\n" not in message
    with pytest.raises(RemovalRefused):
        inventory.import_file(empty, source="ledger:police", dry_run=True)

    rejected = tmp_path / "rejected.csv"  # every row names no camera
    rejected.write_text(HEADER + ",,118.1,35.1,80\n,,118.2,35.2,80\n", encoding="utf-8")
    with pytest.raises(RemovalRefused):
        inventory.import_file(rejected, source="ledger:police")
    assert live_count(inventory) == 10  # nothing changed

    rep = inventory.import_file(empty, source="ledger:police", allow_removals=True)
    assert rep.result.cameras_removed == 10 and live_count(inventory) == 0


def test_removal_share_limit_and_partial(inventory, tmp_path, settings):
    assert settings.max_removal_share == 0.2
    full = tmp_path / "full.csv"
    ledger(full, range(1, 11))
    inventory.import_file(full, source="ledger:police")

    fewer = tmp_path / "fewer.csv"
    ledger(fewer, range(1, 8))  # 3 of 10 gone: 30 %
    with pytest.raises(RemovalRefused, match="3 of the 10"):
        inventory.import_file(fewer, source="ledger:police")
    assert inventory.import_file(fewer, source="ledger:police", snapshot=False).result.cameras_removed == 0
    ledger(fewer, range(1, 9))  # 2 of 10 gone: 20 %, allowed
    assert inventory.import_file(fewer, source="ledger:police").result.cameras_removed == 2
    assert live_count(inventory) == 8

    strict = type(inventory)(settings.model_copy(update={"max_removal_share": 0.0}), engine=inventory.engine)
    ledger(fewer, range(1, 8))
    with pytest.raises(RemovalRefused):
        strict.import_file(fewer, source="ledger:police")
    assert strict.import_file(fewer, source="ledger:police", allow_removals=True).result.cameras_removed == 1
