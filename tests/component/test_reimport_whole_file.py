"""A re-import of an unchanged file reads no row (issue 7, point 1): when the file's digest (its bytes plus format,
encoding, column map, CRS, snapshot flag and reader code) and a token of the source's stored records are what the
source's last import left, that import's report is replayed and recorded as a new import run. Anything else runs
the import in full (with the per-row fast path), and its result is what a full read gives. SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from vms.ingest import importers
from vms.inventory.service import ImportReport, Inventory
from vms.store.models import ImportRun, Source, cameras
from vms.store.models import Observation as ObservationRow

HEADER = "设备编码,设备名称,经度,纬度,端口,录像保存天数\n"
ROWS = 30
SOURCE = "ledger:a"


def row(i: int, *, name: str | None = None) -> str:
    days = '"1,000"' if i % 3 == 0 else "30"  # a third of the rows carry a (non-fatal) NUMBER-FORMAT issue
    return f"3713110000132{i:07d},{name or f'罗庄点位{i}'},118.{i:06d},35.{i:06d},80,{days}\n"


def rows() -> list[str]:
    out = [row(i) for i in range(1, ROWS + 1)]
    out.insert(10, ",,118.5,35.5,80,30\n")  # nothing identifies the camera: rejected, every time
    out.append(row(4, name="重复"))  # device 4 again: rejected as a duplicate
    return out


def write(path: Path, lines: list[str]) -> Path:
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    return path


def summary(report: ImportReport) -> dict[str, Any]:
    """Everything a report says about the file and what it did, without timings and ids."""
    out = report.as_dict()
    for k in ("timings", "run_id", "file_unchanged"):
        out.pop(k)
    return out


def forget(inv: Inventory) -> None:
    """Drop what the last import stored for the shortcut: the next import of the source runs in full."""
    with inv.session() as s:
        s.execute(update(Source).where(Source.name == SOURCE).values(file_digest=None))


def source_row(inv: Inventory) -> Source:
    with inv.session(write=False) as s:
        src = s.scalar(select(Source).where(Source.name == SOURCE))
        assert src is not None
        s.expunge(src)
        return src


def run_counts(inv: Inventory, run_id: int | None) -> dict[str, Any]:
    with inv.session(write=False) as s:
        run = s.get(ImportRun, run_id)
        assert run is not None
        return {"counts": run.counts, "issues": run.issues}


def test_an_unchanged_file_reads_no_row_and_reports_what_a_full_read_does(inventory, tmp_path):
    path = write(tmp_path / "ledger.csv", rows())
    first = inventory.import_file(path, source=SOURCE)
    assert not first.file_unchanged and first.rows_read == ROWS + 2 and first.rejected == 2
    assert {i.code for i in first.issues} >= {"NUMBER-FORMAT", "NO-IDENTITY", "ID-DUPLICATE"}
    before = source_row(inventory)

    again = inventory.import_file(path, source=SOURCE)
    assert again.file_unchanged and again.rows_read == 0  # not one row read
    assert not again.result.changed and again.result.observations_unchanged == ROWS
    after = source_row(inventory)
    assert after.last_import_at is not None and before.last_import_at is not None
    assert after.last_import_at > before.last_import_at and after.listed_at == after.last_import_at

    forget(inventory)
    full = inventory.import_file(path, source=SOURCE)
    assert not full.file_unchanged and full.rows_read == ROWS + 2
    assert summary(again) == summary(full)
    assert [(i.line, i.code, i.reason, i.fatal, i.field) for i in again.issues] == [
        (i.line, i.code, i.reason, i.fatal, i.field) for i in full.issues
    ]
    assert again.issue_counts == full.issue_counts
    assert run_counts(inventory, again.run_id) == run_counts(inventory, full.run_id)
    # the full read stored the shortcut again: the next one reads nothing
    assert inventory.import_file(path, source=SOURCE).file_unchanged


def test_a_single_changed_byte_reads_the_file(inventory, tmp_path):
    lines = rows()
    path = write(tmp_path / "ledger.csv", lines)
    inventory.import_file(path, source=SOURCE)
    lines[4] = lines[4].replace("罗庄点位5", "罗庄点位6")  # one byte
    write(path, lines)
    report = inventory.import_file(path, source=SOURCE)
    assert not report.file_unchanged and report.result.observations_changed == 1
    assert inventory.show_camera("37131100001320000005")["record"]["name"] == "罗庄点位6"
    assert inventory.import_file(path, source=SOURCE).file_unchanged


def test_another_column_map_or_reader_code_reads_the_file(inventory, tmp_path, monkeypatch):
    path = write(tmp_path / "ledger.csv", rows())
    inventory.import_file(path, source=SOURCE)
    mapped = inventory.import_file(path, source=SOURCE, column_map={"录像保存天数": "-"})
    assert not mapped.file_unchanged and mapped.result.observations_changed == ROWS
    assert "NUMBER-FORMAT" not in {i.code for i in mapped.issues}
    assert inventory.import_file(path, source=SOURCE, column_map={"录像保存天数": "-"}).file_unchanged
    back = inventory.import_file(path, source=SOURCE)
    assert not back.file_unchanged and back.result.observations_changed == ROWS
    assert "NUMBER-FORMAT" in {i.code for i in back.issues}
    # an upgrade of the code that reads rows: every row is read again once
    monkeypatch.setattr(importers, "_reading_code", lambda: "another reader")
    upgraded = inventory.import_file(path, source=SOURCE)
    assert not upgraded.file_unchanged and upgraded.rows_read == ROWS + 2 and upgraded.result.unparsed == 0
    assert not upgraded.result.changed
    assert inventory.import_file(path, source=SOURCE).file_unchanged


def test_another_file_of_the_source_in_between_reads_the_file(inventory, tmp_path):
    path = write(tmp_path / "ledger.csv", rows())
    inventory.import_file(path, source=SOURCE)
    other = write(tmp_path / "other.csv", [row(i) for i in range(1, ROWS + 1) if i != 7])
    between = inventory.import_file(other, source=SOURCE)
    assert between.result.observations_removed == 1
    report = inventory.import_file(path, source=SOURCE)
    assert not report.file_unchanged
    assert (report.result.observations_changed, report.result.cameras_restored) == (1, 1)
    assert inventory.show_camera("37131100001320000007")["removed_at"] is None


def test_records_changed_by_anything_else_read_the_file(inventory, tmp_path):
    path = write(tmp_path / "ledger.csv", rows())
    inventory.import_file(path, source=SOURCE)
    cid = inventory.show_camera("37131100001320000003")["id"]
    other = inventory.show_camera("37131100001320000009")["id"]

    # A camera deleted: its record of this source goes with it; the full read brings it back.
    with inventory.session() as s:
        s.execute(delete(cameras).where(cameras.c.id == cid))
    report = inventory.import_file(path, source=SOURCE)
    assert not report.file_unchanged
    assert (report.result.observations_new, report.result.cameras_created) == (1, 1)
    assert inventory.show_camera("37131100001320000003")["record"]["name"] == "罗庄点位3"
    assert inventory.import_file(path, source=SOURCE).file_unchanged

    # A record moved to another camera (a merge): read in full, nothing of the file changed.
    with inventory.session() as s:
        mine = s.scalar(select(ObservationRow).where(ObservationRow.key.like("%37131100001320000010")))
        assert mine is not None
        mine.camera_id = other
    report = inventory.import_file(path, source=SOURCE)
    assert not report.file_unchanged and not report.result.changed

    # A record marked removed behind the import's back: the full read lists it again.
    with inventory.session() as s:
        s.execute(
            update(ObservationRow)
            .where(ObservationRow.key.like("%37131100001320000011"))
            .values(removed_at=ObservationRow.updated_at)
        )
    report = inventory.import_file(path, source=SOURCE)
    assert not report.file_unchanged and report.result.observations_changed == 1


def test_an_operator_edit_is_kept_whichever_path_runs(inventory, tmp_path):
    """An edit is the 'api' source's record: this source's records are as its import left them, so the replayed
    report is the full read's (nothing of this source changed) and the edit stays."""
    path = write(tmp_path / "ledger.csv", rows())
    inventory.import_file(path, source=SOURCE)
    inventory.edit_camera("37131100001320000002", {"name": "改过的名字"}, actor="test")
    again = inventory.import_file(path, source=SOURCE)
    assert inventory.show_camera("37131100001320000002")["record"]["name"] == "改过的名字"
    forget(inventory)
    full = inventory.import_file(path, source=SOURCE)
    assert summary(again) == summary(full) and not full.result.changed
    assert inventory.show_camera("37131100001320000002")["record"]["name"] == "改过的名字"


def test_a_file_changed_while_read_is_not_trusted_next_time(inventory, tmp_path):
    lines = rows()
    path = write(tmp_path / "ledger.csv", lines)
    changed = [*lines]
    changed[4] = row(5, name="读时改的")

    def progress(stage: str, done: int, total: int) -> None:
        if done and not total:  # a chunk was read: the file changes under the import
            write(path, changed)

    inventory.import_file(path, source=SOURCE, progress=progress)
    assert source_row(inventory).file_digest is None
    report = inventory.import_file(path, source=SOURCE)
    assert not report.file_unchanged and report.result.observations_changed == 1
    assert inventory.show_camera("37131100001320000005")["record"]["name"] == "读时改的"


def test_a_dry_run_neither_stores_nor_replays(inventory, tmp_path):
    path = write(tmp_path / "ledger.csv", rows())
    dry = inventory.import_file(path, source=SOURCE, dry_run=True)
    assert not dry.file_unchanged and dry.rows_read == ROWS + 2
    first = inventory.import_file(path, source=SOURCE)
    assert not first.file_unchanged and first.result.cameras_created == ROWS
    digest = source_row(inventory).file_digest
    assert digest is not None
    dry = inventory.import_file(path, source=SOURCE, dry_run=True)
    assert not dry.file_unchanged and dry.rows_read == ROWS + 2 and not dry.result.changed
    assert source_row(inventory).file_digest == digest
    assert inventory.import_file(path, source=SOURCE).file_unchanged
