"""Benchmark: import, merge and quality-check 100,000 generated ledger rows on SQLite.

Prints figures (never asserts on time). Baselines run in the same process on the same machine:
- floor: stdlib csv + sqlite3 executemany of the raw rows (no mapping, validation, identity or provenance);
- naive: a per-row ORM loader that looks each row's identity up with its own query (measured on a subset).

Peak memory: each size is imported in a fresh subprocess (``python -m tests.bench.bench_inventory ROWS DIR``),
which reports its resident-set high-water mark; VMS_BENCH_PEAK_ROWS picks the sizes (default 100,000 and
1,000,000; goal: 1,000,000 rows under 500 MB).

Run: make bench  (or .venv/bin/python -m pytest -q -s tests/bench/bench_inventory.py)
"""

from __future__ import annotations

import csv
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from tests.conftest import TEST_DATA
from vms.discovery.demo import DEMO_ROADS
from vms.inventory.service import Inventory
from vms.settings import Settings
from vms.store import repository as repo

ROWS = int(os.environ.get("VMS_BENCH_ROWS", "100000"))
PEAK_ROWS = [int(n) for n in os.environ.get("VMS_BENCH_PEAK_ROWS", "100000,1000000").split(",") if n.strip()]
PEAK_GOAL_MB = 500
REPO = Path(__file__).resolve().parents[2]
NAIVE_ROWS = 3000
ROADS = DEMO_ROADS
TOWNS = ["371311", "37131100", "37131101", "37131102"]
HEADER = [
    "设备编码",
    "设备名称",
    "经度",
    "纬度",
    "行政区域",
    "摄像机类型",
    "IP地址",
    "端口",
    "厂商",
    "录像保存天数",
    "点位类型",
    "安装地址",
    "安装时间",
    "联系方式",
]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(1, rows + 1):
            road = ROADS[i % len(ROADS)]
            lon = 118.20 + rnd.random() * 0.16
            lat = 34.88 + rnd.random() * 0.14
            device_id = f"3713110000132{rnd.choice('56')}{i:06d}"
            if i % 200 == 0:
                device_id = device_id[:-1]  # a broken ID now and then
            w.writerow(
                [
                    device_id,
                    f"罗庄区{road}{i}号点位",
                    f"{lon:.6f}",
                    f"{lat:.6f}",
                    rnd.choice(TOWNS),
                    rnd.choice(["球机", "枪机", "半球", "3"]),
                    f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
                    "80",
                    rnd.choice(["海康威视", "大华", "宇视"]),
                    rnd.choice(["30", "90", "1,000"]),
                    rnd.choice(["1", "2", "3"]),
                    f"临沂市罗庄区{road}{i}号",
                    f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    "0539-8221234",
                ]
            )


def floor_load(path: Path, db: Path) -> float:
    t = time.perf_counter()
    conn = sqlite3.connect(db)
    conn.execute(f"CREATE TABLE raw ({', '.join(f'c{i} TEXT' for i in range(len(HEADER)))})")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        conn.executemany(f"INSERT INTO raw VALUES ({', '.join('?' * len(HEADER))})", reader)
    conn.commit()
    conn.close()
    return time.perf_counter() - t


def naive_load(inv: Inventory, path: Path, limit: int) -> float:
    """What a straightforward loader does: per row, query for the camera by ID, then insert or update it."""
    from vms.store.models import cameras

    t = time.perf_counter()
    with path.open(encoding="utf-8-sig", newline="") as fh, inv.session() as s:
        reader = csv.DictReader(fh)
        for n, row in enumerate(reader):
            if n >= limit:
                break
            found = s.execute(select(cameras.c.id).where(cameras.c.device_id == row["设备编码"])).first()
            values = {
                "device_id": row["设备编码"],
                "name": row["设备名称"],
                "longitude": float(row["经度"]),
                "latitude": float(row["纬度"]),
                "civil_code": row["行政区域"],
            }
            if found:
                s.execute(cameras.update().where(cameras.c.id == found[0]).values(**values))
            else:
                s.execute(cameras.insert().values(**values))
            s.flush()
    return time.perf_counter() - t


def test_bench_inventory_100k(tmp_path: Path, test_data: Path) -> None:
    ledger = tmp_path / "ledger.csv"
    generate(ledger, ROWS)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'vms.sqlite3'}",
        secret_key="x" * 43 + "=",
        _env_file=None,
    )
    inv = Inventory(settings)
    inv.upgrade()
    inv.import_regions(test_data / "geo/luozhuang_gcj02.json")
    inv.import_regions(test_data / "admin/areas.csv")

    t0 = time.perf_counter()
    first = inv.import_file(ledger, source="ledger:bench")
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    report, _ = inv.quality()
    t_quality = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = inv.import_file(ledger, source="ledger:bench")
    t_reimport = time.perf_counter() - t0
    with inv.session(write=False) as s:
        n = repo.count_cameras(s, repo.CameraFilter())
    assert n == first.accepted and not second.result.changed

    t_floor = floor_load(ledger, tmp_path / "floor.sqlite3")
    naive_inv = Inventory(settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'naive.sqlite3'}"}))
    naive_inv.upgrade()
    t_naive = naive_load(naive_inv, ledger, NAIVE_ROWS)
    naive_per_row = t_naive / NAIVE_ROWS
    ours_per_row = t_import / ROWS

    total = t_import + t_quality
    print()
    print(f"rows generated:                {ROWS:>10,}  ({first.rejected} rejected as broken, {n:,} cameras)")
    print(f"import+merge (first):          {t_import:>10.2f} s   {ROWS / t_import:>10,.0f} rows/s")
    print(f"re-import (nothing changes):   {t_reimport:>10.2f} s")
    print(f"quality report ({n:,}):      {t_quality:>10.2f} s   pass rate {report.overall.rate:.1%}")
    print(f"end to end (import + quality): {total:>10.2f} s   goal < 30 s; quality goal < 5 s")
    print(
        f"baseline floor (csv+sqlite3):  {t_floor:>10.2f} s   ours/floor = {t_import / t_floor:.1f}x slower "
        "(mapping, validation, identity, provenance)"
    )
    print(
        f"baseline naive per-row ORM:    {naive_per_row * 1e3:>10.3f} ms/row on {NAIVE_ROWS:,} rows "
        f"(~{naive_per_row * ROWS:.0f} s for {ROWS:,}); ours {ours_per_row * 1e3:.3f} ms/row: "
        f"{naive_per_row / ours_per_row:.1f}x faster"
    )
    inv.engine.dispose()
    naive_inv.engine.dispose()


def bench_settings(tmp: Path) -> Settings:
    return Settings(
        data_dir=tmp / "data",
        database_url=f"sqlite:///{tmp / 'vms.sqlite3'}",
        secret_key="x" * 43 + "=",
        _env_file=None,
    )


def import_once(rows: int, tmp: Path) -> dict[str, float]:
    """In this process (a fresh one, see test_bench_import_peak_memory): regions, then one import of ``rows``."""
    ledger = tmp / "ledger.csv"
    inv = Inventory(bench_settings(tmp))
    inv.upgrade()
    inv.import_regions(TEST_DATA / "geo/luozhuang_gcj02.json")
    inv.import_regions(TEST_DATA / "admin/areas.csv")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    rep = inv.import_file(ledger, source="ledger:bench")
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    inv.engine.dispose()
    return {
        "rows": rows,
        "accepted": rep.accepted,
        "seconds": round(seconds, 2),
        "peak_mb": round(peak_kb / 1024, 1),
        "before_mb": round(before / 1024, 1),
    }


def test_bench_import_peak_memory(tmp_path: Path) -> None:
    print()
    for rows in PEAK_ROWS:
        work = tmp_path / f"peak{rows}"
        work.mkdir()
        generate(work / "ledger.csv", rows)
        proc = subprocess.run(
            [sys.executable, "-m", "tests.bench.bench_inventory", str(rows), str(work)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["accepted"] == rows
        print(
            f"peak memory, {rows:>9,} rows:   {got['peak_mb']:>8,.0f} MB   (high-water mark before the import, "
            f"regions loaded: {got['before_mb']:,.0f} MB; import {got['seconds']:,.1f} s, "
            f"{rows / got['seconds']:,.0f} rows/s; goal < {PEAK_GOAL_MB} MB at 1,000,000)"
        )
        (work / "ledger.csv").unlink()


if __name__ == "__main__":
    print(json.dumps(import_once(int(sys.argv[1]), Path(sys.argv[2]))))
