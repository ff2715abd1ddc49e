"""Benchmark: the dashboard at city scale (100,000 cameras with a position and a status), SQLite and PostgreSQL.

- the map's camera points (GET /api/v1/dashboard/points: columns, 5 decimals) against what the page had to read
  before to draw the cameras: every page of GET /api/v1/cameras (limit 1000), in the same run;
- in headless Chromium (SQLite run only; skipped without Chromium): one redraw of the page's canvas points layer
  against the usual Leaflet way, an L.circleMarker per camera on a canvas renderer, built in the same page.

Median of runs, wall and CPU (this process: the server side); prints figures, never asserts on time.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from api.app import create_app
from tests.bench.databases import bench_inventory
from tests.bench.report import record, size
from tests.services import ServiceUnavailable
from vms.inventory.service import Inventory
from vms.store.models import cameras

CAMERAS = size("VMS_BENCH_DASHBOARD_CAMERAS", 100_000, 3_000)
RUNS = 5
STATUSES = ["ON"] * 90 + ["OFF"] * 6 + ["DEFECT"] * 3 + [None]


@pytest.fixture(params=["sqlite", "postgresql"])
def inventory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Inventory]:
    with bench_inventory(request.param, tmp_path) as inv:
        yield inv


def _fill(inv: Inventory) -> None:
    rnd = random.Random(10)
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "id": i,
            "name": f"camera {i}",
            "device_id": f"3713110000132{i:07d}",
            "region_code": f"371311{rnd.randrange(1, 9):03d}",
            "longitude": 118.2 + rnd.random() * 0.3,
            "latitude": 34.9 + rnd.random() * 0.3,
            "status": rnd.choice(STATUSES),
            "created_at": now,
            "updated_at": now,
        }
        for i in range(1, CAMERAS + 1)
    ]
    with inv.engine.begin() as conn:
        for k in range(0, CAMERAS, 10_000):
            conn.execute(insert(cameras), rows[k : k + 10_000])


def _timed(fn: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def test_bench_dashboard(inventory: Inventory, tmp_path: Path) -> None:
    _fill(inventory)
    backend = inventory.engine.dialect.name
    with TestClient(create_app(inventory), base_url="http://127.0.0.1") as client:
        body = client.get("/api/v1/dashboard/points").content

        def points() -> None:
            assert client.get("/api/v1/dashboard/points").status_code == 200

        def pages() -> None:
            for offset in range(0, CAMERAS, 1000):
                r = client.get("/api/v1/cameras", params={"limit": 1000, "offset": offset})
                assert r.status_code == 200

        ours = _median([_timed(points) for _ in range(RUNS)])
        base = _median([_timed(pages) for _ in range(2)])
        listed = len(client.get("/api/v1/cameras", params={"limit": 1000}).content)
    print()
    print(
        f"dashboard points, {CAMERAS:,} cameras ({backend}): {ours[0] * 1000:7.1f} ms wall, {ours[1] * 1000:7.1f} ms "
        f"CPU, {len(body) / 1e6:.2f} MB; before (every page of /api/v1/cameras, limit 1000): {base[0] * 1000:7.1f} "
        f"ms wall, {base[1] * 1000:7.1f} ms CPU, ~{listed * CAMERAS / 1000 / 1e6:.0f} MB; "
        f"ratio {ours[0] / base[0]:.3f}x"
    )
    record(
        f"dashboard camera points, {CAMERAS:,} cameras ({backend})",
        ours[0] * 1000,
        "ms",
        baseline=base[0] * 1000,
        baseline_name="every page of GET /api/v1/cameras (limit 1000): what the page read before",
        group="dashboard",
    )
    if backend == "sqlite":
        _browser(inventory, tmp_path)


def _browser(inventory: Inventory, tmp_path: Path) -> None:
    from tests.e2e.test_dashboard import Browser, Server, chromium_binary

    try:
        chromium_binary()
    except ServiceUnavailable as exc:
        print(f"browser figures skipped: {exc}")
        return
    server = Server(inventory)
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(server.url + "/")
        browser.wait_for("document.body && document.body.dataset.state === 'ready'", timeout=120)
        drawn = int(browser.js("$('#map').dataset.points"))
        ours = browser.js(
            """(() => { const t = []; for (let i = 0; i < 5; i++) { const a = performance.now(); points.redraw();
                t.push(performance.now() - a); } t.sort((a, b) => a - b); return t[2]; })()"""
        )
        base = browser.js(
            """(() => { const d = points.data, r = L.canvas(), t = [];
                for (let k = 0; k < 2; k++) { const a = performance.now(); const g = L.layerGroup();
                  for (let i = 0; i < d.count; i++) g.addLayer(L.circleMarker([d.lat[i], d.lon[i]],
                    { renderer: r, radius: 3, color: '#fff', weight: 1, fillColor: '#1e9e45', fillOpacity: 1 }));
                  g.addTo(map); r._update(); r._draw(); t.push(performance.now() - a); g.remove(); }
                return Math.min(...t); })()"""
        )
    finally:
        browser.close()
        server.stop()
    print(
        f"dashboard map redraw in Chromium, {drawn:,} cameras drawn: {ours:7.1f} ms; an L.circleMarker per camera "
        f"(canvas renderer), built and drawn: {base:7.1f} ms; ratio {ours / base:.3f}x"
    )
    record(
        f"dashboard map redraw in Chromium, {CAMERAS:,} cameras",
        ours,
        "ms",
        baseline=base,
        baseline_name="an L.circleMarker per camera on Leaflet's canvas renderer, built and drawn",
        group="dashboard",
    )
