"""Benchmark: one GET /metrics scrape at city scale (100,000 cameras with a status, two sweeps in the last day),
SQLite and PostgreSQL. The health figures are read from the database at each scrape (api/metrics.py); the
baseline, in the same run, is what the scrape's 24-hour online rate cost before vms.health.figures.online_window:
Health.online_rate, which reads a row per camera. Median of 5 scrapes, wall and CPU. Prints figures; never
asserts on time.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest
from sqlalchemy import insert

from api.metrics import metrics_registry
from probes.health.results import CheckResult, StageResult
from tests.bench.databases import bench_inventory
from tests.bench.report import record, size
from vms.health.service import Health
from vms.inventory.service import Inventory
from vms.store.models import cameras

CAMERAS = size("VMS_BENCH_METRICS_CAMERAS", 100_000, 3_000)
RUNS = 5
OK = (StageResult("tcp", True, 0.8), StageResult("onvif", True, 3.1))
OFF = (StageResult("tcp", False, 1000.0, "timeout"),)


@pytest.fixture(params=["sqlite", "postgresql"])
def inventory(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Inventory]:
    with bench_inventory(request.param, tmp_path) as inv:
        yield inv


def _results(ids: list[int], at: dt.datetime, k: int) -> list[CheckResult]:
    return [
        CheckResult(cid, at, OFF if (cid + k) % 50 == 0 else OK, "off" if (cid + k) % 50 == 0 else "ok",
                    "tcp" if (cid + k) % 50 == 0 else "onvif", "timeout" if (cid + k) % 50 == 0 else None)
        for cid in ids
    ]


def _timed(fn: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def test_bench_metrics_scrape(inventory: Inventory) -> None:
    now = dt.datetime.now(dt.UTC)
    rows = [{"id": i, "name": f"camera {i}", "region_code": "371311", "created_at": now, "updated_at": now}
            for i in range(1, CAMERAS + 1)]
    with inventory.engine.begin() as conn:
        for k in range(0, CAMERAS, 10_000):
            conn.execute(insert(cameras), rows[k : k + 10_000])
    ids = [r["id"] for r in rows]
    health = Health(inventory)
    for k, ago in enumerate((dt.timedelta(hours=30), dt.timedelta(hours=1))):  # statuses set, then a sweep today
        sweep = health.start_sweep(["tcp", "onvif"], "all", at=now - ago)
        results = _results(ids, now - ago, k)
        for i in range(0, CAMERAS, 5_000):
            health.record(results[i : i + 5_000], sweep)
        health.finish_sweep(sweep, at=now - ago + dt.timedelta(seconds=60))
    registry = metrics_registry(inventory)
    text = generate_latest(registry).decode()
    assert f'vms_health_cameras{{status="ON"}} {float(CAMERAS - CAMERAS // 50)}' in text, text[-2000:]

    def floor() -> None:
        health.online_rate(now - dt.timedelta(hours=24), now)

    ours = [_timed(lambda: generate_latest(registry)) for _ in range(RUNS)]
    base = [_timed(floor) for _ in range(RUNS)]
    wall, cpu = statistics.median(w for w, _ in ours), statistics.median(c for _, c in ours)
    f_wall, f_cpu = statistics.median(w for w, _ in base), statistics.median(c for _, c in base)
    backend = inventory.engine.dialect.name
    print()
    print(f"/metrics scrape, {CAMERAS:,} cameras ({backend}): {wall * 1000:7.1f} ms wall, {cpu * 1000:7.1f} ms CPU "
          f"(this process)")
    print(f"before: Health.online_rate over 24 h alone: {f_wall * 1000:7.1f} ms wall, {f_cpu * 1000:7.1f} ms CPU; "
          f"ratio {wall / f_wall:.2f}x wall")
    record(f"/metrics scrape, {CAMERAS:,} cameras ({backend})", wall * 1000, "ms", baseline=f_wall * 1000,
           baseline_name="Health.online_rate over 24 h alone (a row per camera: what a scrape read before)",
           group="health")
