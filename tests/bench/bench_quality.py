"""Benchmark: the data-quality summary at 100,000 cameras, stored problems vs the from-scratch check.

Prints figures (never asserts on time): ours (the counters every write keeps current) and the baseline (checking
every camera on each request, as /api/v1/quality did), their ratio, and peak memory of each; one camera's problems;
the cost a single edit pays to keep the problems current; a full re-check (after a regions import or a rule
change); 40 concurrent API calls.

Run: .venv/bin/python -m pytest -q -s tests/bench/bench_quality.py   (VMS_BENCH_ROWS=20000 for a quick run;
VMS_BENCH_DATABASE_URL=postgresql+psycopg://... for PostgreSQL)
"""

from __future__ import annotations

import csv
import os
import random
import resource
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.bench.databases import scratch_database
from tests.bench.report import record, size
from vms.inventory.service import Inventory
from vms.settings import Settings

ROWS = size("VMS_BENCH_ROWS", 100_000, 2_000)
HEADER = ["设备编码", "设备名称", "经度", "纬度", "行政区域", "摄像机类型", "MAC", "厂商", "父设备编码", "点位类型"]


def generate(path: Path, rows: int, seed: int = 11) -> None:
    """A district ledger with the usual faults: broken IDs, default names, shared MACs, dangling parents."""
    rnd = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(1, rows + 1):
            device_id = f"3713110000132{rnd.choice('56')}{i:06d}"
            if i % 250 == 0:
                device_id = device_id[:10] + "999" + device_id[13:]  # not a camera type
            name = f"罗庄区道路{i % 997}路口{i}" if i % 300 else f"IPC-{i}"
            mac = f"00:1a:2b:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"
            if i % 400 == 0:
                mac = "00:1a:2b:00:00:01"  # one MAC on many records
            parent = f"3713110000132{rnd.choice('56')}{i - 1:06d}" if i % 50 == 0 else ""
            w.writerow(
                [
                    device_id,
                    name,
                    f"{118.20 + rnd.random() * 0.16:.6f}",
                    f"{34.88 + rnd.random() * 0.14:.6f}",
                    rnd.choice(["371311", "37131100", "37131101", "371312"]),
                    rnd.choice(["球机", "枪机", "半球", "3"]),
                    mac,
                    rnd.choice(["海康威视", "大华", "宇视"]),
                    parent,
                    rnd.choice(["1", "3", "3", "3"]),
                ]
            )


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``runs`` calls."""
    walls, cpus = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def peak_kib(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def quality_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: SQLite, or one on the session's throw-away PostgreSQL (VMS_BENCH_DATABASE_URL: that
    database instead, for both)."""
    if os.environ.get("VMS_BENCH_DATABASE_URL"):
        yield os.environ["VMS_BENCH_DATABASE_URL"]
        return
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vms.sqlite3'}"
        return
    with scratch_database(request.getfixturevalue("postgres").url, "bench_quality_") as url:
        yield url


def test_bench_quality_summary(quality_url: str, tmp_path: Path, test_data: Path) -> None:
    url = quality_url
    settings = Settings(data_dir=tmp_path / "data", database_url=url, secret_key="x" * 43 + "=", _env_file=None)
    inv = Inventory(settings)
    inv.upgrade()
    inv.import_regions(test_data / "geo/luozhuang_gcj02.json")
    inv.import_regions(test_data / "admin/areas.csv")
    ledger = tmp_path / "ledger.csv"
    generate(ledger, ROWS)
    t0 = time.perf_counter()
    imported = inv.import_file(ledger, source="ledger:bench")
    t_import = time.perf_counter() - t0

    summary_wall, summary_cpu = timed(lambda: inv.quality(cameras=False), 15)
    scratch_wall, scratch_cpu = timed(inv.quality_from_scratch, 3)
    ours, _ = inv.quality(cameras=True)
    fresh, _ = inv.quality_from_scratch()
    assert ours.problems == fresh.problems and ours.overall == fresh.overall  # the same answer
    summary_peak = peak_kib(lambda: inv.quality(cameras=False))
    scratch_peak = peak_kib(inv.quality_from_scratch)
    one_wall, _ = timed(lambda: inv.camera_problems(ROWS // 2), 51)

    with TestClient(create_app(inv), base_url="http://127.0.0.1:8000") as client:
        api_wall, api_cpu = timed(lambda: client.get("/api/v1/quality").raise_for_status(), 15)
        page_wall, _ = timed(lambda: client.get("/api/v1/quality/cameras", params={"limit": 100}), 15)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        statuses: list[int] = []

        def call() -> None:
            statuses.append(client.get("/api/v1/quality").status_code)

        threads = [threading.Thread(target=call) for _ in range(40)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        t_40 = time.perf_counter() - t0
        rss_grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024

    names = [f"罗庄区道路{k}路口{k}" for k in range(5)]
    edits = iter(names)
    edit_wall, _ = timed(lambda: inv.edit_camera("2", {"name": next(edits)}, actor="bench"), 5)
    with inv.session() as s:
        t0 = time.perf_counter()
        inv.refresh_problems(s, (), full=True)
        t_full = time.perf_counter() - t0
        s.rollback()

    n = ours.overall.total
    print()
    print(f"quality at {n:,} cameras ({url.split(':')[0]}; import of {imported.rows:,} rows took {t_import:.1f} s,")
    print("  keeping the problems current included); medians; ratio = from scratch / ours")
    print(f"{'figure':<44}{'ours':>12}{'from scratch':>15}{'ratio':>10}")
    print(
        f"{'summary, wall':<44}{summary_wall * 1e3:>9.2f} ms{scratch_wall * 1e3:>12.0f} ms"
        f"{scratch_wall / summary_wall:>9.0f}x"
    )
    print(
        f"{'summary, CPU':<44}{summary_cpu * 1e3:>9.2f} ms{scratch_cpu * 1e3:>12.0f} ms"
        f"{scratch_cpu / max(summary_cpu, 1e-6):>9.0f}x"
    )
    print(
        f"{'summary, peak Python memory':<44}{summary_peak:>8.0f} KiB{scratch_peak / 1024:>11.0f} MiB"
        f"{scratch_peak / summary_peak:>9.0f}x"
    )
    print(f"{'GET /api/v1/quality, wall (CPU)':<44}{api_wall * 1e3:>9.2f} ms   ({api_cpu * 1e3:.2f} ms CPU)")
    print(f"{'GET /api/v1/quality/cameras?limit=100':<44}{page_wall * 1e3:>9.2f} ms")
    print(f"{'one camera problems (lookup)':<44}{one_wall * 1e3:>9.2f} ms")
    print(f"{'one edit, problems kept current':<44}{edit_wall * 1e3:>9.1f} ms")
    print(f"{'full re-check (regions import, new rules)':<44}{t_full:>10.2f} s {scratch_wall:>12.2f} s (check only)")
    print(
        f"{'40 concurrent GET /api/v1/quality':<44}{t_40 * 1e3:>9.0f} ms   statuses {sorted(set(statuses))}, "
        f"peak RSS grew {rss_grew:.0f} MiB"
    )
    print("goal: summary under 50 ms at 100,000 cameras, memory independent of inventory size")
    db = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    at = f"{n:,} cameras"
    record(f"quality summary at {at}, wall", summary_wall * 1e3, "ms", baseline=scratch_wall * 1e3,
           baseline_name="checked from scratch", peak_mb=summary_peak / 1024, max_value=50,
           goal_note="at 100,000 cameras; memory independent of size", group=db)
    record(f"quality summary at {at}, CPU", summary_cpu * 1e3, "ms", baseline=scratch_cpu * 1e3,
           baseline_name="checked from scratch", group=db)
    record(f"quality summary, peak Python memory ({at})", summary_peak / 1024, "MB", baseline=scratch_peak / 1024,
           baseline_name="checked from scratch", peak_mb=summary_peak / 1024, group=db)
    record(f"GET /api/v1/quality at {at}", api_wall * 1e3, "ms", group=db)
    record(f"one edit, problems kept current ({at})", edit_wall * 1e3, "ms", group=db)
    record(f"40 concurrent GET /api/v1/quality ({at}; peak: RSS growth)", t_40 * 1e3, "ms", peak_mb=rss_grew,
           goal_note=f"every answer 200 (got {sorted(set(statuses))})",
           holds=len(statuses) == 40 and set(statuses) == {200}, group=db)
    inv.engine.dispose()
