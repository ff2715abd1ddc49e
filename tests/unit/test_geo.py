"""GCJ-02 / WGS-84 conversion and the region point index, against the real boundary files."""

from __future__ import annotations

import csv
import json
import math
import random

import numpy as np
import pytest
import shapely
from shapely.geometry import Point, box, shape

from tests.conftest import TEST_DATA
from vms.geo.coords import (
    RegionIndex,
    gcj02_to_wgs84,
    gcj02_to_wgs84_arrays,
    out_of_china,
    valid_lon_lat,
    wgs84_to_gcj02,
    wgs84_to_gcj02_arrays,
)
from vms.geo.regions import read_region_geojson


def _metres(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Haversine distance on a 6371 km sphere (plenty for offsets of a few hundred metres)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(h))


def _reference_wgs_to_gcj(lon: float, lat: float) -> tuple[float, float]:
    """Independent scalar transcription of the well-known formula, to catch slips in the vectorised one."""
    a, ee = 6378245.0, 0.00669342162296594323
    x, y = lon - 105.0, lat - 35.0
    pi = math.pi
    t_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    t_lat += (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    t_lat += (20.0 * math.sin(y * pi) + 40.0 * math.sin(y / 3.0 * pi)) * 2.0 / 3.0
    t_lat += (160.0 * math.sin(y / 12.0 * pi) + 320 * math.sin(y * pi / 30.0)) * 2.0 / 3.0
    t_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    t_lon += (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    t_lon += (20.0 * math.sin(x * pi) + 40.0 * math.sin(x / 3.0 * pi)) * 2.0 / 3.0
    t_lon += (150.0 * math.sin(x / 12.0 * pi) + 300.0 * math.sin(x / 30.0 * pi)) * 2.0 / 3.0
    radlat = lat / 180.0 * pi
    magic = 1 - ee * math.sin(radlat) ** 2
    sqrtmagic = math.sqrt(magic)
    dlat = (t_lat * 180.0) / ((a * (1 - ee)) / (magic * sqrtmagic) * pi)
    dlon = (t_lon * 180.0) / (a / sqrtmagic * math.cos(radlat) * pi)
    return lon + dlon, lat + dlat


# --- datum conversion ----------------------------------------------------------------------------------


def test_forward_matches_reference_formula() -> None:
    rng = random.Random(1)
    for _ in range(500):
        lon, lat = rng.uniform(73.5, 135.0), rng.uniform(18.0, 53.5)
        got = wgs84_to_gcj02(lon, lat)
        want = _reference_wgs_to_gcj(lon, lat)
        assert got == pytest.approx(want, abs=1e-12)


def test_linyi_offset_is_a_few_hundred_metres() -> None:
    lon, lat = 118.3, 35.05  # central Linyi, WGS-84
    glon, glat = wgs84_to_gcj02(lon, lat)
    shift = _metres(lon, lat, glon, glat)
    assert 300 < shift < 800, shift
    # GCJ-02 is shifted east in this part of China.
    assert glon > lon


def test_round_trips_within_1e_6() -> None:
    rng = random.Random(2)
    for _ in range(2000):
        lon, lat = rng.uniform(73.5, 135.0), rng.uniform(18.0, 53.5)
        # GCJ -> WGS -> GCJ
        wlon, wlat = gcj02_to_wgs84(lon, lat)
        back = wgs84_to_gcj02(wlon, wlat)
        assert abs(back[0] - lon) < 1e-6 and abs(back[1] - lat) < 1e-6
        # WGS -> GCJ -> WGS
        glon, glat = wgs84_to_gcj02(lon, lat)
        again = gcj02_to_wgs84(glon, glat)
        assert abs(again[0] - lon) < 1e-6 and abs(again[1] - lat) < 1e-6


def test_outside_china_is_unchanged() -> None:
    for lon, lat in [(2.3522, 48.8566), (-74.006, 40.7128), (151.2093, -33.8688), (139.0, 35.0)]:
        assert out_of_china(lon, lat)
        assert wgs84_to_gcj02(lon, lat) == (lon, lat)
        assert gcj02_to_wgs84(lon, lat) == (lon, lat)
    assert not out_of_china(118.3, 35.05)


def test_non_finite_scalars_pass_through() -> None:
    lon, lat = gcj02_to_wgs84(float("nan"), 35.0)
    assert math.isnan(lon) and lat == 35.0


def test_forward_arrays_match_scalars() -> None:
    rng = np.random.default_rng(6)
    lons = rng.uniform(73.5, 135.0, 300)
    lats = rng.uniform(18.0, 53.5, 300)
    gl, gt = wgs84_to_gcj02_arrays(lons, lats)
    for i in range(300):
        assert (gl[i], gt[i]) == pytest.approx(wgs84_to_gcj02(float(lons[i]), float(lats[i])), abs=1e-12)


def test_arrays_match_scalars_and_keep_nan() -> None:
    rng = np.random.default_rng(3)
    lons = np.concatenate([rng.uniform(73.5, 135.0, 1000), [2.35, np.nan, 118.3]])
    lats = np.concatenate([rng.uniform(18.0, 53.5, 1000), [48.85, 35.0, np.nan]])
    wl, wt = gcj02_to_wgs84_arrays(lons, lats)
    for i in range(1000):
        assert (wl[i], wt[i]) == pytest.approx(gcj02_to_wgs84(float(lons[i]), float(lats[i])), abs=1e-9)
    assert (wl[1000], wt[1000]) == (2.35, 48.85)
    assert math.isnan(wl[1001]) and math.isnan(wt[1002])
    gl, gt = wgs84_to_gcj02_arrays(wl[:1000], wt[:1000])
    assert np.max(np.abs(gl - lons[:1000])) < 1e-6
    assert np.max(np.abs(gt - lats[:1000])) < 1e-6
    # Inputs are not modified in place.
    assert lons[1000] == 2.35


def test_arrays_empty_and_shape_mismatch() -> None:
    el, et = gcj02_to_wgs84_arrays(np.array([]), np.array([]))
    assert el.shape == et.shape == (0,)
    with pytest.raises(ValueError):
        gcj02_to_wgs84_arrays(np.array([1.0, 2.0]), np.array([1.0]))


@pytest.mark.parametrize(
    ("lon", "lat", "ok"),
    [
        (118.3, 35.05, True),
        (-180.0, -90.0, True),
        (0.0, 0.0, False),
        (0.0, 35.0, True),
        (181.0, 35.0, False),
        (118.3, 90.5, False),
        (float("nan"), 35.0, False),
        (118.3, float("inf"), False),
        (None, 35.0, False),
        (118.3, None, False),
    ],
)
def test_valid_lon_lat(lon: float | None, lat: float | None, ok: bool) -> None:
    assert valid_lon_lat(lon, lat) is ok


# --- RegionIndex: synthetic --------------------------------------------------------------------------------


def test_region_index_nested_boundary_and_missing() -> None:
    city = box(0.0, 0.0, 10.0, 10.0)
    district = box(2.0, 2.0, 4.0, 4.0)
    idx = RegionIndex([("city", city), ("district", district)])
    assert len(idx) == 2
    assert idx.codes == ["city", "district"]
    got = idx.locate([3.0, 8.0, 11.0, 2.0, 10.0, None, float("nan")], [3.0, 8.0, 5.0, 3.0, 10.0, 1.0, 1.0])
    # inside both -> smallest; city only; outside; on the district edge; on the city corner; missing x2
    assert got == ["district", "city", None, "district", "city", None, None]
    assert idx.locate_one(3.0, 3.0) == "district"
    assert idx.locate_one(None, None) is None


def test_region_index_ties_go_to_first_added_and_invalid_is_repaired() -> None:
    a = box(0, 0, 1, 1)
    b = box(0, 0, 1, 1)
    assert RegionIndex([("a", a), ("b", b)]).locate_one(0.5, 0.5) == "a"
    assert RegionIndex([("b", b), ("a", a)]).locate_one(0.5, 0.5) == "b"
    bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])
    assert not bowtie.is_valid
    idx = RegionIndex([("bowtie", bowtie), ("empty", shapely.Polygon())])
    assert len(idx) == 1
    # make_valid splits the bow-tie into its two triangles; the gap between them stays outside.
    assert idx.locate([0.2, 1.8, 1.0], [1.0, 1.0, 0.2]) == ["bowtie", "bowtie", None]


def test_region_index_empty_and_bad_input() -> None:
    idx = RegionIndex([])
    assert idx.locate([1.0, 2.0], [1.0, 2.0]) == [None, None]
    assert RegionIndex([("a", box(0, 0, 1, 1))]).locate([], []) == []
    with pytest.raises(ValueError):
        RegionIndex([("a", box(0, 0, 1, 1))]).locate([1.0], [1.0, 2.0])


# --- RegionIndex: Hong Kong districts and cameras ----------------------------------------------------------


@pytest.fixture(scope="module")
def hk_regions() -> list[tuple[str, shapely.Geometry]]:
    records = read_region_geojson(TEST_DATA / "cameras" / "hk_18_districts.geojson")
    return [(r.name, shapely.from_wkb(r.geometry_wkb)) for r in records]


@pytest.fixture(scope="module")
def hk_cameras() -> list[dict[str, str]]:
    with (TEST_DATA / "cameras" / "hk_traffic_cameras.csv").open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def test_hk_camera_in_southern(hk_regions: list[tuple[str, shapely.Geometry]]) -> None:
    idx = RegionIndex(hk_regions)
    # H429F, Aberdeen Praya Road near Fish Market: lat 22.2485255, lon 114.1501576.
    assert idx.locate_one(114.1501576, 22.2485255) == "南區"  # Southern District


def test_hk_index_agrees_with_naive_loop(
    hk_regions: list[tuple[str, shapely.Geometry]], hk_cameras: list[dict[str, str]]
) -> None:
    assert len(hk_cameras) == 210
    lons = [float(c["longitude"]) for c in hk_cameras]
    lats = [float(c["latitude"]) for c in hk_cameras]
    got = RegionIndex(hk_regions).locate(lons, lats)
    expected: list[str | None] = []
    for lon, lat in zip(lons, lats, strict=True):
        pt = Point(lon, lat)
        hits = [(g.area, code) for code, g in hk_regions if g.covers(pt)]
        expected.append(min(hits)[1] if hits else None)
    assert got == expected
    located = [g for g in got if g is not None]
    # A few cameras (bridges, sea crossings) lie outside every simplified district polygon.
    assert 0 < got.count(None) <= 10
    assert len(set(located)) == 18


def test_hk_index_locates_100k_points(hk_regions: list[tuple[str, shapely.Geometry]]) -> None:
    # Correctness at scale only: speed is the benchmarks' to print (a timed assertion fails on a loaded machine).
    idx = RegionIndex(hk_regions)
    rng = np.random.default_rng(4)
    lons = rng.uniform(113.8, 114.5, 100_000)
    lats = rng.uniform(22.1, 22.6, 100_000)
    got = idx.locate(lons, lats)
    assert len(got) == 100_000
    # Spot-check against the exact predicate.
    geoms = dict(hk_regions)
    for i in range(0, 100_000, 2_500):
        code = got[i]
        if code is not None:
            assert geoms[code].covers(Point(lons[i], lats[i]))
        else:
            assert not any(g.covers(Point(lons[i], lats[i])) for g in geoms.values())


# --- Luozhuang and Linyi (GCJ-02 boundaries) --------------------------------------------------------------


def test_luozhuang_boundary_in_wgs84_contains_its_centre() -> None:
    path = TEST_DATA / "geo" / "luozhuang_gcj02.json"
    feature = json.loads(path.read_text(encoding="utf-8"))[0]
    gcj_geom = shape(feature["geometry"])
    wgs_geom = shapely.from_wkb(read_region_geojson(path)[0].geometry_wkb)
    assert wgs_geom.is_valid
    # The published centroid is GCJ-02; converted, it lies inside the converted boundary.
    clon, clat = gcj02_to_wgs84(*feature["properties"]["centroid"])
    assert wgs_geom.contains(Point(clon, clat))
    # The conversion moved the boundary by a few hundred metres (westward in Linyi).
    shift = _metres(gcj_geom.centroid.x, gcj_geom.centroid.y, wgs_geom.centroid.x, wgs_geom.centroid.y)
    assert 300 < shift < 800, shift
    assert wgs_geom.centroid.x < gcj_geom.centroid.x
    # Area: Luozhuang District is about 570 km^2.
    lat0 = math.radians(wgs_geom.centroid.y)
    km2 = wgs_geom.area * (111.32**2) * math.cos(lat0)
    assert 500 < km2 < 650, km2


def test_linyi_districts_index() -> None:
    records = read_region_geojson(TEST_DATA / "geo" / "linyi_districts_gcj02.geojson")
    regions = [(r.code, shapely.from_wkb(r.geometry_wkb)) for r in records]
    # Add the whole city as an enclosing region: districts must win over it.
    city = shapely.union_all([g for _, g in regions])
    idx = RegionIndex([("3713", city), *regions])
    lz_lon, lz_lat = gcj02_to_wgs84(118.267588, 34.928656)
    assert idx.locate_one(lz_lon, lz_lat) == "371311"
    assert idx.locate_one(118.3, 37.0) is None  # north of Linyi, outside
    rng = np.random.default_rng(5)
    minx, miny, maxx, maxy = city.bounds
    lons = rng.uniform(minx, maxx, 100_000)
    lats = rng.uniform(miny, maxy, 100_000)
    got = idx.locate(lons, lats)
    # Every located point is a district (the city never wins because a district always covers it too,
    # except for slivers between district polygons).
    located = [g for g in got if g is not None]
    assert located.count("3713") < len(located) * 0.01
    assert {g for g in located if g != "3713"} == {code for code, _ in regions}
