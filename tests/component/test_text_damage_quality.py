"""TEXT-DAMAGED through a real import and the quality report, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
from pathlib import Path

from vms.store import repository as repo


def test_damaged_names_makers_and_addresses_are_counted(inventory, tmp_path: Path) -> None:
    # A ledger that went through a wrong decoding once (then saved as UTF-8): the damage is in the text itself.
    rows = [
        ("37131100001326000001", "罗庄区沂河路与湖北路交叉口东", "海康威视", "DS-2DE4425IW", "罗庄街道湖北路"),
        ("37131100001326000002", "褚墩镇政府门口".encode().decode("gbk", errors="replace"), "大华", "", ""),
        ("37131100001326000003", "黄山镇G206国道", "海康威视".encode().decode("latin-1"), "", ""),
        ("37131100001326000004", "册山街道册山村", "宇视", "IPC-B\ufffd", ""),
        ("37131100001326000005", "高都街道罗庄一中", "", "", "罗庄区高都街道".encode("gbk").decode("latin-1")),
        ("37131100001326000006", "沂堂镇????路口", "", "", ""),
    ]
    path = tmp_path / "ledger.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["设备编码", "设备名称", "设备厂商", "设备型号", "安装地址", "经度", "纬度"])
        for row in rows:
            writer.writerow([*row, "118.2841", "34.9972"])
    rep = inventory.import_file(path)
    assert rep.accepted == 6 and rep.rejected == 0

    report, _ = inventory.quality()
    assert report.by_rule["TEXT-DAMAGED"] == 5
    with inventory.session(write=False) as s:
        ids = {r["device_id"]: r["id"] for r in repo.camera_dicts(s, ("device_id",))}
    damaged = {d for d, cid in ids.items() if "TEXT-DAMAGED" in report.problems.get(cid, [])}
    assert damaged == {r[0] for r in rows[1:]}
    assert "TEXT-DAMAGED" in inventory.camera_problems(ids["37131100001326000005"])
    assert "TEXT-DAMAGED" not in inventory.camera_problems(ids["37131100001326000001"])
    listed = {r["code"]: (r["rule"], r["cameras"]) for r in report.as_dict()["by_rule"]}
    assert listed["TEXT-DAMAGED"] == (6, 5)
