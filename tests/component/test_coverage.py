"""vms.coverage with the real Hong Kong data (210 traffic cameras, 18 district polygons): counts per district against
an independent point-in-polygon count, covered area per district against an independent union in another
projection, gaps, the indicators, the cache kept per region. SQLite and PostgreSQL (the inventory fixture)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pyproj import Geod, Transformer
from shapely import transform as transform_coords
from shapely import union_all
from shapely.geometry import Point, shape
from sqlalchemy import select

from api.app import create_app
from probes.health.results import CheckResult, StageResult
from tests.component.test_import_files import independent_district_counts
from vms.coverage.fov import FovDefaults, sector_polygons, view_of
from vms.coverage.service import Coverage, Place
from vms.health.service import Health
from vms.store.models import cameras

GEOD = Geod(ellps="WGS84")
T0 = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)


@pytest.fixture
def hk(inventory, test_data):
    inventory.import_regions(test_data / "cameras/hk_18_districts.geojson")
    rep = inventory.import_file(test_data / "cameras/hk_traffic_cameras.csv")
    assert rep.accepted == 210
    return inventory


def _districts(test_data):
    doc = json.loads((test_data / "cameras/hk_18_districts.geojson").read_text())
    return {f["properties"]["name_zh"]: shape(f["geometry"]) for f in doc["features"]}


def _geodesic_km2(geom) -> float:
    return abs(GEOD.geometry_area_perimeter(geom)[0]) / 1e6


def test_counts_per_district_match_an_independent_count_and_area_is_reported(hk, test_data):
    cov = Coverage(hk)
    summary = cov.summary()
    expected = independent_district_counts(test_data)
    ours = {r["name"]: r["cameras"] for r in summary["by_region"] if r["cameras"]}
    assert ours == {k: v for k, v in expected.items() if k is not None}
    assert summary["outside_regions"] == expected[None] > 0
    assert summary["cameras"] == 210 and summary["by_status"] == {"unknown": 210}
    assert summary["by_source"][0]["cameras"] == 210

    districts = _districts(test_data)
    area = cov.area()
    assert len(area["by_region"]) == 18
    for row in area["by_region"]:
        poly = districts[row["name"]]
        assert row["area_km2"] == pytest.approx(_geodesic_km2(poly), rel=1e-3)  # LAEA vs the ellipsoid
        per = next(r for r in summary["by_region"] if r["region"] == row["region"])
        assert per["per_km2"] == pytest.approx(per["cameras"] / per["area_km2"], rel=1e-3)
        assert row["cameras"] == expected.get(row["name"], 0)
        assert (row["covered_km2"] > 0) == (row["cameras"] > 0)
        assert 0 <= row["covered_share"] < 1
    # Independently: no direction, no type, no angle: the default bullet (60 deg, 80 m) as a disc of the sector's
    # area, built in UTM zone 50N with shapely buffers, unioned and clipped to the district.
    radius = 80 * math.sqrt(60 / 360)
    utm = Transformer.from_crs(4326, 32650, always_xy=True).transform
    by_name: dict[str, list[Point]] = {}
    with open(test_data / "cameras/hk_traffic_cameras.csv", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            p = Point(float(row["longitude"]), float(row["latitude"]))
            hits = sorted((poly.area, name) for name, poly in districts.items() if poly.covers(p))
            if hits:
                by_name.setdefault(hits[0][1], []).append(p)
    for row in area["by_region"]:
        pts = by_name.get(row["name"], [])
        if not pts:
            continue
        union = union_all([transform_coords(p, utm, interleaved=False).buffer(radius, quad_segs=64) for p in pts])
        independent = union.intersection(transform_coords(districts[row["name"]], utm, interleaved=False)).area / 1e6
        assert row["covered_km2"] == pytest.approx(independent, rel=0.02), row["name"]
    assert area["covered_km2"] == pytest.approx(sum(r["covered_km2"] for r in area["by_region"]))

    geo = cov.area_geojson()
    assert len(geo["features"]) == 18
    for feat in geo["features"]:
        props = feat["properties"]
        if props["cameras"]:
            g = shape(feat["geometry"])
            assert g.geom_type in ("Polygon", "MultiPolygon")
            assert g.bounds[0] > 113.8 and g.bounds[2] < 114.5 and g.bounds[1] > 22.1 and g.bounds[3] < 22.6
            assert _geodesic_km2(g) == pytest.approx(props["covered_km2"], rel=0.01)


def test_field_of_view_from_direction_angle_distance_and_type():
    d = FovDefaults(dome_radius_m=50, bullet_angle_deg=60, bullet_distance_m=80, default_ptz="3")
    assert view_of({"ptz_type": "1"}, d)[1:] == (360.0, 50.0)  # a ball camera: a circle
    az, angle, dist = view_of(
        {"ptz_type": "3", "direction_type": "1", "horizontal_field_angle": 90, "max_view_distance": 100}, d
    )
    assert (az, angle, dist) == (90.0, 90.0, 100.0)  # east
    assert view_of({"direction_type": "8", "extra": {"Azimuth": "10"}}, d)[0] == 10.0  # an azimuth wins
    assert view_of({"direction_type": "6"}, d)[:3] == (45.0, 60.0, 80.0)  # NE, the bullet defaults
    assert math.isnan(view_of({}, d)[0])
    polys = sector_polygons(
        np.array([0.0, 0.0]),
        np.array([0.0, 0.0]),
        np.array([90.0, math.nan]),
        np.array([90.0, 360.0]),
        np.array([100.0, 100.0]),
    )
    east = polys[0]
    assert east.bounds[0] == pytest.approx(0) and east.bounds[2] == pytest.approx(100, rel=0.01)
    assert east.area == pytest.approx(math.pi * 100**2 / 4, rel=1e-9)  # widened: the area is exact
    assert polys[1].area == pytest.approx(math.pi * 100**2, rel=1e-9)


def _set(inventory, cid: int, **values) -> None:
    with inventory.engine.begin() as conn:
        conn.execute(cameras.update().where(cameras.c.id == cid).values(updated_at=dt.datetime.now(dt.UTC), **values))


def _cams(inventory) -> list[tuple[int, float, float, str | None]]:
    with inventory.engine.connect() as conn:
        stmt = select(cameras.c.id, cameras.c.longitude, cameras.c.latitude, cameras.c.region_code).order_by(
            cameras.c.id
        )
        return [tuple(r) for r in conn.execute(stmt)]


def test_gaps_the_cache_rebuilds_only_the_changed_district_and_the_api(hk):
    cov = Coverage(hk)
    rows = _cams(hk)
    placed = [r for r in rows if r[3] is not None]
    first = cov.area()
    before = {r["region"]: r for r in first["by_region"]}
    kept = dict(cov._state.areas)
    # one camera becomes a working dome with a 200 m view: its district's cover grows, the others stay as built
    cid, lon, lat, code = placed[0]
    hk.edit_camera(str(cid), {"ptz_type": "2", "max_view_distance": 200, "status": "ON"}, actor="test")
    after = {r["region"]: r for r in Coverage(hk).area(working=True)["by_region"]}
    assert after[code]["covered_km2"] > before[code]["covered_km2"]
    assert after[code]["working"] == 1 and after[code]["working_km2"] > 0
    assert all(cov._state.areas[c] is kept[c] for c in kept if c != code)
    assert cov._state.areas[code] is not kept[code]

    gaps = cov.region_gaps()
    assert code not in {g["region"] for g in gaps} and len(gaps) == 17
    north_100m = lat + 100 / 111_320
    result = cov.place_gaps(
        [Place("school", lon, north_100m), Place("hospital", lon + 0.05, lat + 0.05)], distance_m=300
    )
    school, hospital = result["places"]
    assert school["covered"] and school["nearest_camera"] == cid and school["distance_m"] == pytest.approx(100, abs=1)
    assert not hospital["covered"] and [g["name"] for g in result["gaps"]] == ["hospital"]
    assert not cov.place_gaps([Place("school", lon, north_100m)], distance_m=50)["places"][0]["covered"]

    # the same through the API (read scope)
    with TestClient(create_app(hk), base_url="http://127.0.0.1:8000") as c:
        got = c.get("/api/v1/coverage/summary")
        assert got.json()["cameras"] == 210
        summary_etag = got.headers["etag"]
        assert c.get("/api/v1/coverage/summary", headers={"If-None-Match": summary_etag}).status_code == 304
        area = c.get("/api/v1/coverage/area").json()
        assert len(area["by_region"]) == 18
        first = area["by_region"][0]["region"]
        one = c.get("/api/v1/coverage/area", params={"region": first, "format": "geojson"})
        assert one.status_code == 200 and one.headers["content-type"].startswith("application/geo+json")
        assert [f["properties"]["region"] for f in one.json()["features"]] == [first]
        assert c.get("/api/v1/coverage/area", params={"region": "nowhere"}).status_code == 422
        etag = one.headers["etag"]
        again = c.get(
            "/api/v1/coverage/area", params={"region": first, "format": "geojson"}, headers={"If-None-Match": etag}
        )
        assert again.status_code == 304
        assert c.get("/api/v1/coverage/area", headers={"If-None-Match": etag}).status_code == 200  # another query
        assert c.get("/api/v1/coverage/indicators", params={"from": "0001-01-01"}).status_code == 422
        assert c.get("/api/v1/coverage/indicators", params={"to": "0001-01-03"}).status_code == 422
        ind = c.get("/api/v1/coverage/indicators", params={"from": "2026-11-01", "to": "2026-11-03"}).json()
        assert len(ind["series"]) == 2 and ind["registered"] == 210
        backwards = {"from": "2026-11-03", "to": "2026-11-01"}
        assert c.get("/api/v1/coverage/indicators", params=backwards).status_code == 422
        gaps = c.get("/api/v1/coverage/gaps").json()
        assert len(gaps["regions"]) == 17  # the one working camera's district is not a gap
        posted = c.post(
            "/api/v1/coverage/gaps", json={"distance_m": 300, "places": [{"name": "x", "lon": 114.2, "lat": 22.3}]}
        )
        assert posted.status_code == 200 and posted.json()["gaps"][0]["name"] == "x"
        bad = c.post("/api/v1/coverage/gaps", json={"distance_m": 300, "places": [{"name": "x", "lon": 500, "lat": 0}]})
        assert bad.status_code == 422

    # a status change alone (as a health sweep makes it: updated_at untouched) rebuilds only the working union
    other = next(r for r in placed if r[3] != code)
    covered_before = {r["region"]: r["covered_km2"] for r in cov.area()["by_region"]}
    with hk.engine.begin() as conn:
        conn.execute(cameras.update().where(cameras.c.id == other[0]).values(status="ON"))
    now = {r["region"]: r for r in cov.area(working=True)["by_region"]}
    assert now[other[3]]["working"] == 1 and now[other[3]]["working_km2"] > 0
    assert {k: r["covered_km2"] for k, r in now.items()} == covered_before
    assert len(cov.region_gaps()) == 16
    with TestClient(create_app(hk), base_url="http://127.0.0.1:8000") as c:  # the status change moved the ETag
        assert c.get("/api/v1/coverage/summary", headers={"If-None-Match": summary_etag}).status_code == 200


def _result(cid, at, ok: bool) -> CheckResult:
    stages = (StageResult("tcp", ok, 1.0, None if ok else "timeout"),)
    outcome, stage, cause = ("ok", "login", None) if ok else ("off", "tcp", "timeout")
    return CheckResult(cid, at, stages, outcome, stage, cause, None)


def test_indicators_by_district_and_the_daily_online_series(hk, settings):
    rows = [r for r in _cams(hk) if r[3] is not None]
    health = Health(hk)
    a, b = rows[0], rows[-1]
    # a: ON from T0; b: ON from T0, OFF from T0 + 1.5 days (after 3 failed checks)
    times = [
        T0,
        T0 + dt.timedelta(hours=1),
        T0 + dt.timedelta(days=1.5),
        T0 + dt.timedelta(days=1.5, hours=1),
        T0 + dt.timedelta(days=1.5, hours=2),
    ]
    for k, at in enumerate(times):
        sweep = health.start_sweep(["tcp"], "all", at=at)
        health.record([_result(a[0], at, True), _result(b[0], at, k < 2)], sweep)
        health.finish_sweep(sweep)
    cov = Coverage(hk)
    ind = cov.indicators(start=T0, end=T0 + dt.timedelta(days=3), now=NOW)
    assert ind["registered"] == 210
    ref = health.online_rate(T0, T0 + dt.timedelta(days=3), now=NOW)
    assert ind["online_rate"] == pytest.approx(ref.rate, abs=1e-6)
    by = {r["region"]: r for r in ind["by_region"]}
    for cam in (a, b):
        r = health.online_rate(T0, T0 + dt.timedelta(days=3), region=cam[3], now=NOW)
        assert by[cam[3]]["online_rate"] == pytest.approx(r.rate, abs=1e-6)
    report, _ = hk.quality(cameras=False)
    assert ind["quality_pass_rate"] == pytest.approx(report.overall.rate, abs=1e-6)
    for code, t in report.by_region.items():
        if code:
            assert by[code]["quality_pass_rate"] == pytest.approx(t.rate, abs=1e-6)
    assert ind["aggregation_rate"] == 0  # a ledger only: nothing connected to the platform, no GB IDs
    assert ind["intact"] == 0 and ind["intact_rate"] == 0
    # the series: each whole day equals the health service's online rate over that day
    assert [s["day"] for s in ind["series"]] == ["2026-11-20", "2026-11-21", "2026-11-22"]
    for s in ind["series"]:
        day = dt.datetime.fromisoformat(s["day"]).replace(tzinfo=dt.UTC)
        want = health.online_rate(day, day + dt.timedelta(days=1), now=NOW).rate
        assert s["online_rate"] == pytest.approx(want, abs=1e-6), s
    assert ind["series"][0]["online_rate"] == 1.0 and ind["series"][2]["online_rate"] == 0.5
    # the other three indicators over time: each computation keeps the day's counts (coverage_daily)
    assert all(s["quality_pass_rate"] is None for s in ind["series"])  # nothing was read on those days
    later = cov.indicators(start=T0, end=NOW + dt.timedelta(hours=1), now=NOW)
    today = later["series"][-1]
    assert today["day"] == "2026-11-23" and today["registered"] == 210
    assert today["quality_pass_rate"] == pytest.approx(report.overall.rate, abs=1e-6)
    assert today["aggregation_rate"] == 0 and today["intact_rate"] == 0
    one = cov.indicators(region=a[3], start=T0, end=NOW + dt.timedelta(hours=1), now=NOW)
    assert one["series"][-1]["registered"] == by[a[3]]["registered"]


def test_places_file_bad_rows_are_one_line_errors(tmp_path):
    from vms.cli.coverage import read_places

    good = tmp_path / "p.json"
    good.write_text(json.dumps([{"name": "school", "lon": 114.15, "lat": 22.25}]), encoding="utf-8")
    assert read_places(good) == [Place("school", 114.15, 22.25)]
    bad = tmp_path / "p.csv"
    bad.write_text("name,longitude,latitude\nschool,east,22.25\n", encoding="utf-8")
    with pytest.raises(ValueError, match="place 1 has no numeric lon/lat"):
        read_places(bad)
