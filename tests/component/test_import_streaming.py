"""Imports stream (issue 6, point 12): rows go from the reader to the ingest a chunk at a time, memory does not
grow with the file, issues are kept in full up to a cap and counted by code beyond it, and duplicates,
idempotent re-imports and removals still see the whole file. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from vms.catalog.domain import ParsedRow
from vms.ingest import importers
from vms.ingest.importers import CHUNK_ROWS, ISSUE_CAP, read_records
from vms.store import repository as repo

HEADER = "设备编码,设备名称,经度,纬度,端口\n"


def ledger(path: Path, rows: int, *, skip: frozenset[int] = frozenset(), port: str = "80") -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(HEADER)
        for i in range(1, rows + 1):
            if i not in skip:
                fh.write(f"3713110000132{i:07d},罗庄点位{i},118.{i:06d},35.{i:06d},{port}\n")


def test_rows_reach_the_sink_in_chunks_and_duplicates_are_found_across_them(tmp_path):
    path = tmp_path / "big.csv"
    rows = 2 * CHUNK_ROWS + 500
    ledger(path, rows)
    with path.open("a", encoding="utf-8") as fh:  # the last line repeats the first row's ID, two chunks later
        fh.write("37131100001320000001,又一个点位,118.9,35.9,80\n")
    chunks: list[list[ParsedRow]] = []
    result = read_records(path, sink=chunks.append)
    assert len(chunks) == 3 and all(len(c) <= CHUNK_ROWS for c in chunks)
    assert result.rows == [] and result.total_rows == rows + 1 and result.rejected_rows == 1
    duplicate = chunks[-1][-1]
    assert duplicate.rejected and duplicate.issues[-1].code == "ID-DUPLICATE"
    assert "line 2" in duplicate.issues[-1].reason  # where the first one is


def test_json_and_geojson_stream_record_by_record(tmp_path):
    records = [{"DeviceID": f"3713110000132{i:07d}", "Name": f"点{i}", "Port": 80} for i in range(1, CHUNK_ROWS + 2)]
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"total": len(records), "data": {"list": records}}), encoding="utf-8")
    chunks: list[list[ParsedRow]] = []
    result = read_records(path, sink=chunks.append)
    assert [len(c) for c in chunks] == [CHUNK_ROWS, 1] and result.format == "json"
    assert chunks[1][0].fields["device_id"] == records[-1]["DeviceID"] and chunks[1][0].line == len(records)

    features = {
        "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [118.1, 35.1]}, "properties": r}
            for r in records[:3]
        ],
        "type": "FeatureCollection",
    }
    geo = tmp_path / "cams.geojson"
    geo.write_text(json.dumps(features), encoding="utf-8")
    got: list[ParsedRow] = []
    assert read_records(geo, sink=got.extend).format == "geojson"
    assert [(r.fields["longitude"], r.fields["name"]) for r in got] == [(118.1, f"点{i}") for i in (1, 2, 3)]


def read_peak(path: Path) -> int:
    tracemalloc.start()
    try:
        read_records(path, sink=lambda rows: None)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_reading_memory_does_not_grow_with_the_file(tmp_path):
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    ledger(small, 2 * CHUNK_ROWS)
    ledger(large, 8 * CHUNK_ROWS)
    peak_small, peak_large = read_peak(small), read_peak(large)
    # Four times the rows; only the duplicate-check indexes grow (32 bytes a row, copied when they grow).
    assert peak_large < 1.25 * peak_small + 64 * 6 * CHUNK_ROWS, (peak_small, peak_large)


def test_issues_are_capped_and_counted(inventory, tmp_path, monkeypatch):
    monkeypatch.setattr(importers, "CHUNK_ROWS", 500)  # several chunks without a large file
    path = tmp_path / "garbage-ports.csv"
    rows = ISSUE_CAP + 1500
    ledger(path, rows, port="端口号")  # every row lands, with its port dropped and reported
    rep = inventory.import_file(path)
    assert rep.accepted == rows and rep.rejected == 0
    assert len(rep.issues) == ISSUE_CAP and rep.issue_counts == {("VALUE-DROPPED", False): rows}
    assert [i.line for i in rep.issues] == list(range(2, ISSUE_CAP + 2))  # the first ones, in file order
    shown = rep.as_dict()
    assert shown["issues_total"] == rows
    assert shown["issue_counts"] == [{"code": "VALUE-DROPPED", "rejected": False, "count": rows}]


@pytest.mark.parametrize("chunk", [7, 1000])
def test_chunked_ingest_is_idempotent_and_removes_across_chunks(inventory, tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(importers, "CHUNK_ROWS", chunk)
    path = tmp_path / "ledger.csv"
    ledger(path, 100)
    with path.open("a", encoding="utf-8") as fh:  # row 1 again (name and position) chunks later: a duplicate
        fh.write("3713110000132XXXXXXX,罗庄点位1,118.000001,35.000001,80\n")
    first = inventory.import_file(path)
    assert first.result.cameras_created == 100 and first.rejected == 1
    assert not inventory.import_file(path).result.changed

    ledger(path, 100, skip=frozenset(range(1, 101, 10)))  # 10 % gone, in every chunk
    gone = inventory.import_file(path)
    assert (gone.result.observations_removed, gone.result.cameras_removed) == (10, 10)
    assert gone.result.observations_unchanged == 90
    total, _ = inventory.list_cameras(repo.CameraFilter())
    assert total == 90
