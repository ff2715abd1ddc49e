"""The indicators' online time, summed per region with grouped counts for the cameras whose status held (issue 10's
cold statistics), equals the health service's camera-by-camera figure over any period: partial first and last
days, a period inside one day, status changes inside those partial days and while an interval is still open."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from probes.health.results import CheckResult, StageResult
from vms.coverage.service import Coverage
from vms.health.service import Health
from vms.store.models import cameras

T0 = dt.datetime(2026, 11, 20, 6, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 24, 15, 30, tzinfo=dt.UTC)


@pytest.fixture
def hk(inventory, test_data):
    inventory.import_regions(test_data / "cameras/hk_18_districts.geojson")
    inventory.import_file(test_data / "cameras/hk_traffic_cameras.csv")
    return inventory


def _result(cid: int, at: dt.datetime, ok: bool) -> CheckResult:
    stages = (StageResult("tcp", ok, 1.0, None if ok else "timeout"),)
    outcome, stage, cause = ("ok", "login", None) if ok else ("off", "tcp", "timeout")
    return CheckResult(cid, at, stages, outcome, stage, cause, None)


def test_online_sums_per_region_equal_the_camera_by_camera_figures(hk):
    with hk.engine.connect() as conn:
        rows = conn.execute(
            select(cameras.c.id, cameras.c.region_code).where(cameras.c.region_code.is_not(None)).order_by(cameras.c.id)
        ).all()
    health = Health(hk)
    # most cameras stay ON from T0; some flip in the first hours, some on the last day, some back and forth
    picked = rows[:40]
    times = [T0 + dt.timedelta(hours=h) for h in (0, 1, 2, 3, 30, 31, 32, 80, 81, 82, 99, 100, 101)]
    for k, at in enumerate(times):
        sweep = health.start_sweep(["tcp"], "all", at=at)
        results = []
        for i, (cid, _code) in enumerate(picked):
            ok = True if i % 4 == 0 else (k // 3 + i) % 2 == 0
            results.append(_result(cid, at, ok))
        health.record(results, sweep)
        health.finish_sweep(sweep)
    cov = Coverage(hk)
    periods = [
        (T0, NOW),  # partial first day, whole days, today so far
        (T0 + dt.timedelta(hours=1, minutes=30), T0 + dt.timedelta(days=3, hours=9)),
        (T0 + dt.timedelta(days=3, hours=1), T0 + dt.timedelta(days=3, hours=20)),  # inside one day
        (T0 - dt.timedelta(days=2), NOW + dt.timedelta(days=1)),
    ]
    codes = sorted({code for _cid, code in picked})
    for start, end in periods:
        ind = cov.indicators(start=start, end=end, now=NOW)
        ref = health.online_rate(start, end, now=NOW)
        assert ref.known_s > 0 and ref.online_s < ref.known_s
        assert ind["online_rate"] == pytest.approx(ref.rate, abs=1e-6), (start, end)
        by = {r["region"]: r for r in ind["by_region"]}
        for code in codes:
            want = health.online_rate(start, end, region=code, now=NOW)
            assert by[code]["online_rate"] == pytest.approx(want.rate, abs=1e-6), (start, end, code)
        for day in ind["series"]:
            lo = dt.datetime.fromisoformat(day["day"]).replace(tzinfo=dt.UTC)
            want = health.online_rate(lo, lo + dt.timedelta(days=1), now=NOW)
            assert day["online_rate"] == (None if not want.known_s else pytest.approx(want.rate, abs=1e-6))
