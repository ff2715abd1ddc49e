"""Reading admin code CSVs and GeoJSON boundaries from the repository's test data (tests/data)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
import shapely

from tests.conftest import TEST_DATA
from vms.geo.regions import (
    RegionFileError,
    RegionRecord,
    generated_region_code,
    read_admin_codes,
    read_region_geojson,
    read_regions,
)


def _csv_rows(path: Path) -> int:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return sum(1 for _ in csv.DictReader(fh))


@pytest.fixture(scope="module")
def admin() -> list[RegionRecord]:
    return read_admin_codes(TEST_DATA / "admin")


# --- admin codes ---------------------------------------------------------------------------------------


def test_admin_counts_match_csv_rows(admin: list[RegionRecord]) -> None:
    d = TEST_DATA / "admin"
    by_source: dict[str, int] = {}
    for r in admin:
        by_source[r.source] = by_source.get(r.source, 0) + 1
    for name in ("provinces.csv", "cities.csv", "areas.csv", "streets.csv"):
        assert by_source[name] == _csv_rows(d / name), name
    assert by_source["provinces.csv"] == 31
    assert len(admin) == sum(by_source.values())
    levels: dict[str, set[str]] = {}
    for r in admin:
        levels.setdefault(r.source, set()).add(r.level)
    assert levels == {
        "provinces.csv": {"province"},
        "cities.csv": {"city"},
        "areas.csv": {"district"},
        "streets.csv": {"township"},
    }


def test_admin_luozhuang_hierarchy(admin: list[RegionRecord]) -> None:
    by_code = {r.code: r for r in admin}
    lz = by_code["371311"]
    assert (lz.name, lz.level, lz.parent_code, lz.geometry_wkb) == ("罗庄区", "district", "3713", None)
    assert by_code["3713"].name == "临沂市"
    assert by_code["3713"].parent_code == "37"
    assert by_code["37"].name == "山东省"
    assert by_code["37"].parent_code is None
    town = by_code["371311001"]
    assert (town.level, town.parent_code, town.name) == ("township", "371311", "罗庄街道")
    townships = sorted(r.code for r in admin if r.parent_code == "371311")
    assert townships == [f"371311{s}" for s in ("001", "002", "003", "006", "007", "100", "101", "102")]


def test_admin_parents_precede_and_resolve(admin: list[RegionRecord]) -> None:
    seen: set[str] = set()
    for r in admin:
        if r.parent_code is not None:
            assert r.parent_code in seen, r
        seen.add(r.code)


def test_admin_single_file_and_dispatch() -> None:
    areas = TEST_DATA / "admin" / "areas.csv"
    records = read_admin_codes(areas)
    assert len(records) == _csv_rows(areas)
    assert all(r.level == "district" and r.parent_code and len(r.parent_code) == 4 for r in records)
    assert read_regions(areas) == records
    assert len(read_regions(TEST_DATA / "admin")) > len(records)


def test_admin_bom_and_plain_utf8_read_the_same(tmp_path: Path) -> None:
    body = 'code,name,provinceCode\n3713,"临沂市",37\n3714,"德州市",37\n'
    plain = tmp_path / "plain.csv"
    bom = tmp_path / "bom.csv"
    plain.write_text(body, encoding="utf-8")
    bom.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    a = read_admin_codes(plain)
    b = read_admin_codes(bom)
    assert [(r.code, r.name, r.parent_code, r.level) for r in a] == [
        ("3713", "临沂市", "37", "city"),
        ("3714", "德州市", "37", "city"),
    ]
    assert b == [RegionRecord(r.code, r.name, r.parent_code, r.level, None, "bom.csv") for r in a]


def test_admin_directory_with_some_files(tmp_path: Path) -> None:
    (tmp_path / "provinces.csv").write_text('code,name\n37,"山东省"\n', encoding="utf-8")
    (tmp_path / "streets.csv").write_text(
        'code,name,areaCode,provinceCode,cityCode\n371311001,"罗庄街道",371311,37,3713\n\n', encoding="utf-8"
    )
    records = read_admin_codes(tmp_path)
    assert [(r.code, r.parent_code, r.level) for r in records] == [
        ("37", None, "province"),
        ("371311001", "371311", "township"),
    ]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "empty"),
        ("id,title\n1,x\n", "'code' and 'name'"),
        ("code,name\nabc,x\n", "not a number"),
        ("code,name,cityCode\n371311\n", "columns"),
    ],
)
def test_admin_bad_files(tmp_path: Path, content: str, fragment: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(RegionFileError, match=fragment):
        read_admin_codes(p)


def test_admin_missing_and_undecodable(tmp_path: Path) -> None:
    with pytest.raises(RegionFileError, match="no such"):
        read_admin_codes(tmp_path / "nope.csv")
    with pytest.raises(RegionFileError, match="none of"):
        read_admin_codes(tmp_path)
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes('code,name\n37,"山东省"\n'.encode("gbk"))
    with pytest.raises(RegionFileError, match="UTF-8"):
        read_admin_codes(gbk)


# --- GeoJSON -------------------------------------------------------------------------------------------


def test_luozhuang_array_file_is_converted_from_gcj02() -> None:
    path = TEST_DATA / "geo" / "luozhuang_gcj02.json"
    (rec,) = read_region_geojson(path)
    assert (rec.code, rec.name, rec.level, rec.parent_code, rec.source) == (
        "371311",
        "罗庄区",
        "district",
        None,
        "luozhuang_gcj02.json",
    )
    assert rec.geometry_wkb is not None
    geom = shapely.from_wkb(rec.geometry_wkb)
    assert geom.geom_type in ("Polygon", "MultiPolygon") and geom.is_valid
    # Read as WGS-84 (no conversion) the boundary lies east of the converted one by a few hundred metres.
    (raw,) = read_region_geojson(path, crs="wgs84")
    assert raw.geometry_wkb is not None
    raw_geom = shapely.from_wkb(raw.geometry_wkb)
    dx = raw_geom.centroid.x - geom.centroid.x
    assert 0.003 < dx < 0.008, dx
    (forced,) = read_region_geojson(path, crs="gcj02")
    assert forced.geometry_wkb == rec.geometry_wkb


def test_linyi_districts() -> None:
    records = read_region_geojson(TEST_DATA / "geo" / "linyi_districts_gcj02.geojson")
    assert len(records) == 12
    codes = [r.code for r in records]
    assert len(set(codes)) == 12
    assert all(c.startswith("3713") and len(c) == 6 for c in codes)
    # parent.adcode 371300 is shortened to the admin-file form of the city.
    assert {r.parent_code for r in records} == {"3713"}
    assert {r.level for r in records} == {"district"}
    names = {r.code: r.name for r in records}
    assert names["371311"] == "罗庄区"
    assert names["371302"] == "兰山区"


def test_linyi_codes_join_admin_codes(admin: list[RegionRecord]) -> None:
    known = {r.code: r for r in admin}
    for r in read_region_geojson(TEST_DATA / "geo" / "linyi_districts_gcj02.geojson"):
        assert r.code in known
        assert known[r.code].parent_code == r.parent_code


def test_hk_districts_without_codes_get_generated_codes_never_names() -> None:
    path = TEST_DATA / "cameras" / "hk_18_districts.geojson"
    records = read_region_geojson(path)
    assert len(records) == 18
    assert len({r.code for r in records}) == 18
    assert all(r.code_generated for r in records)
    with path.open(encoding="utf-8") as fh:
        props = [f["properties"] for f in json.load(fh)["features"]]
    names = {v for p in props for v in p.values()}
    assert not {r.code for r in records} & names  # never a name as a code
    assert all(re.fullmatch(r"N[0-9A-F]{10}", r.code) for r in records)
    assert {r.name for r in records} == {p["name_zh"] for p in props}
    southern = next(r for r in records if r.name == "南區")
    assert southern.code == generated_region_code("SOUTHERN") == generated_region_code(" southern ")
    assert all(r.level == "other" and r.parent_code is None for r in records)
    # WGS-84 file (no "gcj" in the name): coordinates are untouched.
    with path.open(encoding="utf-8") as fh:
        first = json.load(fh)["features"][0]
    assert records[0].geometry_wkb is not None
    assert shapely.from_wkb(records[0].geometry_wkb).equals(shapely.geometry.shape(first["geometry"]))
    en = read_region_geojson(path, name_property="name_en")
    assert [r.code for r in en] == [r.code for r in records]  # the display name does not change the code
    assert {r.name for r in en} >= {"WONG TAI SIN", "SOUTHERN"}
    by_zh = read_region_geojson(path, code_property="name_zh")
    assert "南區" in {r.code for r in by_zh}


def _square(x: float, y: float, size: float = 0.01) -> dict[str, Any]:
    ring = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


def _write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def test_single_feature_and_crs_member(tmp_path: Path) -> None:
    feature = {"type": "Feature", "properties": {"code": 371311, "name": "罗庄区"}, "geometry": _square(118.3, 35.0)}
    wgs = read_region_geojson(_write(tmp_path / "one.geojson", feature))
    assert [(r.code, r.name) for r in wgs] == [("371311", "罗庄区")]
    doc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "GCJ-02"}},
        "features": [feature],
    }
    gcj = read_region_geojson(_write(tmp_path / "plain_name.geojson", doc))
    assert wgs[0].geometry_wkb is not None and gcj[0].geometry_wkb is not None
    moved = shapely.from_wkb(gcj[0].geometry_wkb).centroid.x - shapely.from_wkb(wgs[0].geometry_wkb).centroid.x
    assert -0.008 < moved < -0.003
    # An explicit crs wins over the crs member.
    again = read_region_geojson(tmp_path / "plain_name.geojson", crs="wgs84")
    assert again[0].geometry_wkb == wgs[0].geometry_wkb


def test_code_and_name_property_order(tmp_path: Path) -> None:
    features = [
        {"type": "Feature", "properties": {"adcode": "371311", "code": "x", "name": "A"}, "geometry": _square(0, 0)},
        {"type": "Feature", "properties": {"civil_code": 371312.0, "name_zh": "河东区"}, "geometry": _square(1, 1)},
        {"type": "Feature", "properties": {"id": "R9", "NAME": "Upper"}, "geometry": _square(2, 2)},
        {"type": "Feature", "properties": {"adcode": 371300, "level": "city"}, "geometry": _square(3, 3)},
        {"type": "Feature", "properties": {"name": "Only a name"}, "geometry": _square(4, 4)},
    ]
    records = read_region_geojson(_write(tmp_path / "mix.json", features))
    assert [(r.code, r.name, r.level) for r in records] == [
        ("371311", "A", "district"),
        ("371312", "河东区", "district"),
        ("R9", "Upper", "other"),
        ("3713", "3713", "city"),
        (generated_region_code("Only a name"), "Only a name", "other"),
    ]


def test_invalid_polygon_is_repaired_and_points_skipped(tmp_path: Path) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}
    doc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"code": "B"}, "geometry": bowtie},
            {"type": "Feature", "properties": {"code": "P"}, "geometry": {"type": "Point", "coordinates": [1, 1]}},
            {"type": "Feature", "properties": {"code": "N"}, "geometry": None},
        ],
    }
    records = read_region_geojson(_write(tmp_path / "mixed.geojson", doc))
    assert [r.code for r in records] == ["B"]
    assert records[0].geometry_wkb is not None
    geom = shapely.from_wkb(records[0].geometry_wkb)
    assert geom.is_valid and geom.geom_type == "MultiPolygon"
    assert geom.area == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"type": "Polygon", "coordinates": []}, "expected a FeatureCollection"),
        ([{"type": "Polygon"}], "not a GeoJSON Feature"),
        ({"type": "FeatureCollection", "features": []}, "no Polygon"),
        (
            {"type": "Feature", "properties": {"code": "P"}, "geometry": {"type": "Point", "coordinates": [1, 1]}},
            "no Polygon",
        ),
        ({"type": "Feature", "properties": {}, "geometry": _square(0, 0)}, "no code property"),
        (
            {"type": "Feature", "properties": {"code": "x"}, "geometry": {"type": "Polygon", "coordinates": [[[0]]]}},
            "bad Polygon",
        ),
        (
            {"type": "FeatureCollection", "crs": {"properties": {"name": "BD09"}}, "features": []},
            "BD-09",
        ),
    ],
)
def test_geojson_bad_files(tmp_path: Path, doc: Any, fragment: str) -> None:
    with pytest.raises(RegionFileError, match=fragment):
        read_region_geojson(_write(tmp_path / "bad.geojson", doc))


def test_geojson_unreadable_and_options(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(RegionFileError, match="JSON"):
        read_region_geojson(broken)
    with pytest.raises(RegionFileError, match="no such"):
        read_region_geojson(tmp_path / "missing.geojson")
    ok = _write(tmp_path / "ok.geojson", {"type": "Feature", "properties": {"name": "A"}, "geometry": _square(0, 0)})
    with pytest.raises(RegionFileError, match="code property 'adcode'"):
        read_region_geojson(ok, code_property="adcode")
    with pytest.raises(RegionFileError, match="name property 'title'"):
        read_region_geojson(ok, name_property="title")
    with pytest.raises(ValueError, match="crs"):
        read_region_geojson(ok, crs="bd09")


def test_read_regions_dispatch(tmp_path: Path) -> None:
    hk = TEST_DATA / "cameras" / "hk_18_districts.geojson"
    assert len(read_regions(hk)) == 18
    assert read_regions(TEST_DATA / "geo" / "luozhuang_gcj02.json")[0].code == "371311"
    other = tmp_path / "regions.txt"
    other.write_text("x", encoding="utf-8")
    with pytest.raises(RegionFileError, match="unsupported"):
        read_regions(other)
    assert issubclass(RegionFileError, ValueError)
