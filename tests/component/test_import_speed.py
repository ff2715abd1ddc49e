"""Import speed (issue 7, point 1): the bulk paths (COPY on PostgreSQL, executemany on SQLite) keep every
value as written, and the import benchmark measures ours against its floors in the same run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.bench import bench_inventory as bench
from vms.catalog.domain import SourceKind
from vms.inventory.service import Inventory
from vms.settings import Settings
from vms.store import repository as repo

# Characters COPY's text format escapes (tab, backslash, \N as text) and CSV's quoting must carry.
TRICKY = ["tab\there", "back\\slash", "\\N", 'quote " and , comma', "罗庄区\\t路"]


def test_bulk_paths_keep_tricky_text(inventory: Inventory, tmp_path: Path) -> None:
    path = tmp_path / "tricky.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["设备编码", "设备名称", "安装地址", "经度", "纬度", "备注"])
        for i, text in enumerate(TRICKY, start=1):
            w.writerow([f"371311000013250{i:05d}", f"{text} {i}", text, "118.3", f"34.9{i}", text])
    report = inventory.import_file(path, source="ledger:tricky")
    assert report.accepted == len(TRICKY) and report.rejected == 0
    with inventory.session(write=False) as s:
        cams = repo.list_cameras(s, repo.CameraFilter())
        assert [c["name"] for c in cams] == [f"{t} {i}" for i, t in enumerate(TRICKY, start=1)]
        assert [c["address"] for c in cams] == TRICKY
        assert [c["extra"] for c in cams] == [{"备注": t} for t in TRICKY]
        assert all(c["created_at"] is not None and c["latitude"] is not None for c in cams)
        rows = repo.source_of_observation(s, cams[0]["id"])
        assert rows[0].seen_at is not None and rows[0].first_seen is not None and rows[0].line == 2
        source_id = repo.get_or_create_source(s, "ledger:tricky", SourceKind.LEDGER).id
        stored = repo.stored_observations(s, source_id, [r.key for r in rows] + ["id:nothing", "x,'{}\""])
        assert set(stored) == {r.key for r in rows}
    # Re-importing the same file changes nothing, and last-seen moves on.
    again = inventory.import_file(path, source="ledger:tricky")
    assert not again.result.changed and again.result.observations_unchanged == len(TRICKY)
    with inventory.session(write=False) as s:
        seen = repo.source_of_observation(s, cams[0]["id"])[0]
        assert seen.seen_at > rows[0].seen_at and seen.first_seen == rows[0].first_seen


def test_import_benchmark_measures_floors(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = tmp_path / "ledger.csv"
    bench.generate(ledger, 300)
    got = bench.timed_imports(settings, ledger, 1)
    got["inv"].engine.dispose()
    assert got["first"].accepted > 250 and got["first_s"] > 0 and got["re_s"] > 0
    if settings.database_url.startswith("sqlite"):
        floor, name = bench.floor_load(ledger, tmp_path / "floor.sqlite3"), "csv+sqlite3 executemany"
    else:
        floor, name = bench.copy_floor(settings.database_url, ledger), "csv+COPY"
    bench.print_import_figures("db", got, floor, name, 4, bench.read_and_hash(ledger))
    out = capsys.readouterr().out
    assert f"{name} floor" in out and "read+hash" in out and out.count("ratio") == 2
    assert json.dumps(got["timings"])


def test_unchanged_reimport_writes_no_observation_and_keeps_last_seen(inventory: Inventory, tmp_path: Path) -> None:
    """Last-seen is written once per snapshot import (the source's listed_at), not on each observation; what
    `vms cameras show` reports is unchanged: the last import that listed the camera."""
    from sqlalchemy import select

    from vms.store.models import Observation, Source

    path = tmp_path / "two.csv"
    rows = [["设备编码", "设备名称"], ["37131100001325000001", "东门"], ["37131100001325000002", "西门"]]
    path.write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    inventory.import_file(path, source="ledger:two")
    with inventory.session(write=False) as s:
        stored_before = dict(s.execute(select(Observation.key, Observation.seen_at)).all())
    again = inventory.import_file(path, source="ledger:two")
    assert not again.result.changed
    with inventory.session(write=False) as s:
        stored_after = dict(s.execute(select(Observation.key, Observation.seen_at)).all())
        listed_at = s.scalar(select(Source.listed_at).where(Source.name == "ledger:two"))
    assert stored_after == stored_before  # no row rewritten by an unchanged re-import
    assert listed_at is not None
    with inventory.session(write=False) as s:
        cid = repo.camera_ids_by(s, "device_id", "37131100001325000001")[0]
        (seen,) = repo.source_of_observation(s, cid)
        assert seen.seen_at > stored_before["id:37131100001325000001"]
        assert abs((seen.seen_at - listed_at).total_seconds()) < 1e-3
    # The next snapshot no longer lists 西门: removed, last seen when the previous snapshot listed it.
    path.write_text("\n".join(",".join(r) for r in rows[:2]) + "\n", encoding="utf-8")
    third = inventory.import_file(path, source="ledger:two", allow_removals=True)
    assert third.result.observations_removed == 1
    with inventory.session(write=False) as s:
        cid = repo.camera_ids_by(s, "device_id", "37131100001325000002")[0]
        (gone,) = repo.source_of_observation(s, cid)
        assert gone.removed_at is not None
        assert abs((gone.seen_at - listed_at).total_seconds()) < 1e-3
