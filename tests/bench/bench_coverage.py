"""Benchmark: coverage statistics at 100,000 cameras (the 18 Hong Kong districts, positions inside them, mixed camera
types, directions and statuses), SQLite and PostgreSQL, through the API.

For each endpoint: the first request (cold: every district's field-of-view union built, the quality problems computed)
as the baseline of the same run, then the median of repeated requests (the cache kept per district, checked against
the change feed's head or the grouped counts), then the request after one camera's edit (only its district rebuilt).
Median of runs, wall and CPU (this process: the server side); prints figures, never asserts on time.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from shapely.geometry import shape
from sqlalchemy import insert, select

from api.app import create_app
from tests.bench.databases import bench_inventory
from tests.bench.report import record, size
from vms.inventory.service import Inventory
from vms.store.models import Region, cameras

CAMERAS = size("VMS_BENCH_COVERAGE_CAMERAS", 100_000, 3_000)
RUNS = 7
STATUSES = ["ON"] * 90 + ["OFF"] * 6 + ["DEFECT"] * 3 + [None]


@pytest.fixture(params=["sqlite", "postgresql"])
def inventory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Inventory]:
    with bench_inventory(request.param, tmp_path) as inv:
        yield inv


def _fill(inv: Inventory, test_data: Path) -> list[tuple[float, float]]:
    inv.import_regions(test_data / "cameras/hk_18_districts.geojson")
    with inv.session(write=False) as s:
        codes = {name: code for code, name in s.execute(select(Region.code, Region.name))}
    doc = json.loads((test_data / "cameras/hk_18_districts.geojson").read_text())
    districts = [(codes[f["properties"]["name_zh"]], shape(f["geometry"])) for f in doc["features"]]
    rng = np.random.default_rng(10)
    rnd = random.Random(10)
    now = dt.datetime.now(dt.UTC)
    per = CAMERAS // len(districts)
    rows: list[dict[str, Any]] = []
    for code, poly in districts:
        x0, y0, x1, y1 = poly.bounds
        pts = np.empty((0, 2))
        while len(pts) < per:
            cand = np.column_stack([rng.uniform(x0, x1, per * 4), rng.uniform(y0, y1, per * 4)])
            pts = np.vstack([pts, cand[shapely.contains_xy(poly, cand[:, 0], cand[:, 1])]])
        for lon, lat in pts[:per]:
            i = len(rows) + 1
            ptz = rnd.choice(["1", "2", "3", "3", "3", None])
            rows.append(
                {
                    "id": i,
                    "name": f"camera {i}",
                    "device_id": f"3713110000132{i:07d}",
                    "region_code": code,
                    "longitude": float(lon),
                    "latitude": float(lat),
                    "status": rnd.choice(STATUSES),
                    "ptz_type": ptz,
                    "direction_type": rnd.choice(["1", "2", "3", "4", "5", "6", "7", "8", None]),
                    "horizontal_field_angle": rnd.choice([None, 45.0, 90.0]),
                    "max_view_distance": rnd.choice([None, 60.0, 120.0]),
                    "created_at": now,
                    "updated_at": now,
                }
            )
    with inv.engine.begin() as conn:
        for k in range(0, len(rows), 10_000):
            conn.execute(insert(cameras), rows[k : k + 10_000])
    return [(r["longitude"], r["latitude"]) for r in rows[:: max(1, len(rows) // 500)]]


def _timed(fn: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def test_bench_coverage(inventory: Inventory, test_data: Path) -> None:
    near = _fill(inventory, test_data)
    backend = inventory.engine.dialect.name
    places = {
        "distance_m": 300,
        "places": [{"name": f"p{i}", "lon": x + 0.002, "lat": y} for i, (x, y) in enumerate(near)],
    }
    calls = {
        "summary": ("GET", "/api/v1/coverage/summary", None),
        "area": ("GET", "/api/v1/coverage/area", None),
        "area geojson": ("GET", "/api/v1/coverage/area?format=geojson", None),
        "area of working cameras": ("GET", "/api/v1/coverage/area?status=ON", None),
        "indicators": ("GET", "/api/v1/coverage/indicators", None),
        f"gaps ({len(near)} places)": ("POST", "/api/v1/coverage/gaps", places),
    }
    with TestClient(create_app(inventory), base_url="http://127.0.0.1") as client:

        def call(method: str, url: str, body: Any) -> None:
            r = client.request(method, url, json=body)
            assert r.status_code == 200, r.text

        cold = {name: _timed(lambda c=c: call(*c)) for name, c in calls.items()}
        warm = {name: _median([_timed(lambda c=c: call(*c)) for _ in range(RUNS)]) for name, c in calls.items()}
        # one camera edited: its district's union is rebuilt, the 17 others are reused
        first = client.get("/api/v1/coverage/area").json()["by_region"][0]["region"]
        with inventory.engine.begin() as conn:
            cid = conn.execute(select(cameras.c.id).where(cameras.c.region_code == first).limit(1)).scalar()
            conn.execute(
                cameras.update()
                .where(cameras.c.id == cid)
                .values(ptz_type="1", max_view_distance=300.0, updated_at=dt.datetime.now(dt.UTC))
            )
        edited = _timed(lambda: call("GET", "/api/v1/coverage/area", None))
    print()
    for name in calls:
        (cw, cc), (ww, wc) = cold[name], warm[name]
        print(
            f"coverage {name}, {CAMERAS:,} cameras ({backend}): first {cw * 1000:8.1f} ms wall {cc * 1000:8.1f} ms "
            f"CPU; then {ww * 1000:7.1f} ms wall {wc * 1000:7.1f} ms CPU (median of {RUNS}); ratio {ww / cw:.4f}x"
        )
        record(
            f"coverage {name}, {CAMERAS:,} cameras ({backend})",
            ww * 1000,
            "ms",
            baseline=cw * 1000,
            baseline_name="the first request (every union built)",
            max_value=500,
            goal_note="statistics under 500 ms",
            group="coverage",
        )
    wall, cpu = edited[0] * 1000, edited[1] * 1000
    print(f"coverage area after one camera's edit ({backend}): {wall:7.1f} ms wall, {cpu:7.1f} ms CPU")
    record(
        f"coverage area after one camera's edit (one district rebuilt), {CAMERAS:,} cameras ({backend})",
        edited[0] * 1000,
        "ms",
        baseline=cold["area"][0] * 1000,
        baseline_name="the first request (every union built)",
        group="coverage",
    )
