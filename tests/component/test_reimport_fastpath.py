"""Re-imports recognise unchanged rows by their raw digest (issue 7, point 1): a CSV row whose cells, header,
column map and reader version are those of a row the source's last import stored is not parsed, compared or
merged again. What must keep holding: 0 changed, row reports as complete as a full read, provenance lines, a
changed cell updates exactly its camera, removals, duplicates found across recognised and read rows, and a
change of column map reads everything again. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from vms.ingest.importers import CHUNK_ROWS
from vms.inventory.service import ImportReport, Inventory

HEADER = "设备编码,设备名称,经度,纬度,端口,录像保存天数\n"
ROWS = 30


def row(i: int, *, name: str | None = None, device: str | None = None) -> str:
    days = '"1,000"' if i % 3 == 0 else "30"  # a third of the rows carry a (non-fatal) NUMBER-FORMAT issue
    device = device or f"3713110000132{i:07d}"
    return f"{device},{name or f'罗庄点位{i}'},118.{i:06d},35.{i:06d},80,{days}\n"


def write(path: Path, lines: list[str]) -> Path:
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    return path


def issues(report: ImportReport) -> list[tuple[int, str, str, bool]]:
    return [(i.line, i.code, i.reason, i.fatal) for i in report.issues]


def camera(inv: Inventory, device_id: str) -> dict:
    return inv.show_camera(device_id)


def test_an_unchanged_file_is_recognised_row_by_row_and_reported_in_full(inventory, tmp_path):
    rows = [row(i) for i in range(1, ROWS + 1)]
    rows.insert(10, ",,118.5,35.5,80,30\n")  # nothing identifies the camera: rejected, every time
    path = write(tmp_path / "ledger.csv", rows)
    first = inventory.import_file(path, source="ledger:a")
    assert first.result.unparsed == 0 and first.result.cameras_created == ROWS and first.rejected == 1
    assert {i.code for i in first.issues} == {"NUMBER-FORMAT", "NO-IDENTITY"}

    again = inventory.import_file(path, source="ledger:a")
    assert not again.result.changed and again.result.observations_unchanged == ROWS
    assert again.result.unparsed == ROWS  # not one accepted row was parsed again
    assert (again.rows, again.accepted, again.rejected) == (first.rows, first.accepted, first.rejected)
    assert issues(again) == issues(first) and again.issue_counts == first.issue_counts
    assert again.result.counts() == first.result.counts() | {
        "observations_new": 0,
        "observations_unchanged": ROWS,
        "cameras_created": 0,
    }


def test_one_changed_cell_updates_exactly_that_camera(inventory, tmp_path):
    rows = [row(i) for i in range(1, ROWS + 1)]
    path = write(tmp_path / "ledger.csv", rows)
    inventory.import_file(path, source="ledger:a")
    rows[4] = row(5, name="东门新名字")
    write(path, rows)
    report = inventory.import_file(path, source="ledger:a")
    r = report.result
    assert (r.observations_changed, r.cameras_updated, r.observations_new, r.observations_removed) == (1, 1, 0, 0)
    assert r.unparsed == ROWS - 1
    assert camera(inventory, "37131100001320000005")["record"]["name"] == "东门新名字"
    assert camera(inventory, "37131100001320000006")["record"]["name"] == "罗庄点位6"
    assert not inventory.import_file(path, source="ledger:a").result.changed


def test_a_moved_row_keeps_its_line_and_a_missing_row_is_removed(inventory, tmp_path):
    rows = [row(i) for i in range(1, ROWS + 1)]
    path = write(tmp_path / "ledger.csv", rows)
    inventory.import_file(path, source="ledger:a")
    moved = rows.pop(2)  # device 3: line 4 -> the last line
    rows.append(moved)
    del rows[5]  # device 7 goes
    write(path, rows)
    report = inventory.import_file(path, source="ledger:a")
    r = report.result
    assert (r.observations_removed, r.cameras_removed, r.observations_changed, r.observations_new) == (1, 1, 0, 0)
    assert r.unparsed == ROWS - 1
    last_line = len(rows) + 1
    assert [s["line"] for s in camera(inventory, "37131100001320000003")["sources"]] == [last_line]
    assert [s["line"] for s in camera(inventory, "37131100001320000004")["sources"]] == [4]  # moved up one
    assert camera(inventory, "37131100001320000007")["removed_at"] is not None
    # the moved row's issue is reported on its new line
    assert (last_line, "NUMBER-FORMAT") in {(i.line, i.code) for i in report.issues}
    assert 4 not in {i.line for i in report.issues if i.code == "NUMBER-FORMAT"}  # device 4 has none


def test_a_duplicate_of_a_recognised_row_is_found_and_the_earlier_row_wins(inventory, tmp_path):
    rows = [row(i) for i in range(1, ROWS + 1)]
    path = write(tmp_path / "ledger.csv", rows)
    inventory.import_file(path, source="ledger:a")
    # A new first row with device 10's ID: as on a first read, the earlier row wins and row 10 is rejected.
    write(path, [row(10, name="新的第一行"), *rows])
    report = inventory.import_file(path, source="ledger:a")
    dup = [i for i in report.issues if i.code == "ID-DUPLICATE"]
    assert len(dup) == 1 and dup[0].line == 12 and "line 2" in dup[0].reason and "37131100001320000010" in dup[0].reason
    assert report.rejected == 1 and report.result.observations_changed == 1
    assert camera(inventory, "37131100001320000010")["record"]["name"] == "新的第一行"
    # A new row repeating a recognised row's name and position later in the file is rejected.
    write(path, [*rows, row(31, name="罗庄点位4").replace("118.000031,35.000031", "118.000004,35.000004")])
    report = inventory.import_file(path, source="ledger:a")
    dup = [i for i in report.issues if i.code == "DUPLICATE-NAME-POSITION"]
    assert len(dup) == 1 and dup[0].line == ROWS + 2 and "line 5" in dup[0].reason


def test_a_changed_column_map_reads_every_row_again(inventory, tmp_path):
    path = write(tmp_path / "ledger.csv", [row(i) for i in range(1, ROWS + 1)])
    inventory.import_file(path, source="ledger:a")
    report = inventory.import_file(path, source="ledger:a", column_map={"录像保存天数": "-"})
    assert report.result.unparsed == 0 and report.result.observations_changed == ROWS
    assert "NUMBER-FORMAT" not in {i.code for i in report.issues}
    again = inventory.import_file(path, source="ledger:a", column_map={"录像保存天数": "-"})
    assert again.result.unparsed == ROWS and not again.result.changed


def test_recognised_rows_across_chunks_and_the_issue_cap(inventory, tmp_path):
    n = CHUNK_ROWS + 2500
    path = write(tmp_path / "big.csv", [row(i) for i in range(1, n + 1)])
    first = inventory.import_file(path, source="ledger:big")
    again = inventory.import_file(path, source="ledger:big")
    assert again.result.unparsed == n and not again.result.changed
    assert issues(again) == issues(first) and again.issue_counts == first.issue_counts
