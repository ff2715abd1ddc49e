"""Region boundaries from real projected Shapefiles, and camera files with easting/northing (issue 6 point 9).

The Shapefiles are built here, with pyshp and pyproj, from the repository's real boundaries: the Luozhuang
District boundary (vms/data, GCJ-02, converted to WGS-84 by the GeoJSON reader) and the 18 Hong Kong districts
(tests/data, WGS-84). They are projected into CGCS2000 Gauss-Kruger (EPSG:4549, EPSG:4527 with the zone number in
the easting), UTM (EPSG:32650) and the Hong Kong 1980 Grid (EPSG:2326), written with GBK or UTF-8 DBFs, with and
without a .cpg, zipped and not, and their .prj in the ESRI WKT that GIS software writes.
"""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapefile
import shapely
from pyproj import CRS, Geod, Transformer
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from tests.conftest import TEST_DATA
from vms.geo.regions import RegionFileError, generated_region_code, read_regions
from vms.store import repository as repo

ROOT = Path(__file__).resolve().parents[2]
LUOZHUANG = ROOT / "vms" / "data" / "luozhuang_gcj02.geojson"
HK_DISTRICTS = TEST_DATA / "cameras" / "hk_18_districts.geojson"
HK_CAMERAS = TEST_DATA / "cameras" / "hk_traffic_cameras.csv"
METRES_PER_DEGREE = 111_320.0  # of latitude; a longitude degree is shorter, so this overstates distances

# Rows of the Hong Kong camera file whose published lat/lon disagree with their own easting/northing (the source
# data, checked with pyproj directly): 8.5 m, 18 m and 8.3 km. Of the others, 201 agree to 1 cm and the rest to
# within 4 m (published positions rounded or moved by hand).
HK_INCONSISTENT_ROWS = {"AID03203", "AID09255", "AID09157"}


def _metres(a: BaseGeometry, b: BaseGeometry) -> float:
    """Hausdorff distance between the two vertex sets, in metres (an upper bound: see METRES_PER_DEGREE).

    Both directions: every vertex of one lies this close to a vertex of the other. (Shapely's own Hausdorff
    distance is quadratic: minutes for the district polygons.)
    """
    pa, pb = shapely.points(shapely.get_coordinates(a)), shapely.points(shapely.get_coordinates(b))
    worst = 0.0
    for src, dst in ((pa, pb), (pb, pa)):
        _, distances = shapely.STRtree(dst).query_nearest(src, return_distance=True, all_matches=False)
        worst = max(worst, float(distances.max()))
    return worst * METRES_PER_DEGREE


def _luozhuang_wgs84() -> BaseGeometry:
    (record,) = read_regions(LUOZHUANG)
    assert record.geometry_wkb is not None
    return shapely.from_wkb(record.geometry_wkb)


def _hk_districts() -> list[dict[str, Any]]:
    with HK_DISTRICTS.open(encoding="utf-8") as fh:
        features = json.load(fh)["features"]
    return [{**f["properties"], "geometry": shape(f["geometry"])} for f in features]


def _project(geom: BaseGeometry, epsg: int) -> BaseGeometry:
    to = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    return shapely.transform(geom, lambda c: np.column_stack(to.transform(c[:, 0], c[:, 1])))


def _rings(geom: BaseGeometry) -> list[list[tuple[float, float]]]:
    """Shapefile ring order: each exterior clockwise, its holes counter-clockwise."""
    polygons = geom.geoms if isinstance(geom, MultiPolygon) else [geom]
    rings: list[list[tuple[float, float]]] = []
    for poly in polygons:
        assert isinstance(poly, Polygon)
        for i, ring in enumerate([poly.exterior, *poly.interiors]):
            coords = list(ring.coords)
            if ring.is_ccw == (i == 0):
                coords.reverse()
            rings.append(coords)
    return rings


def write_shapefile(
    stem: Path,
    fields: list[tuple[str, str, int]],
    features: list[tuple[BaseGeometry, list[Any]]],
    *,
    epsg: int | None,
    encoding: str,
    cpg: str | None,
) -> Path:
    """Write WGS-84 ``features`` projected into ``epsg`` (None: unprojected, no .prj) as ``stem``.shp and parts."""
    with shapefile.Writer(str(stem), shapeType=shapefile.POLYGON, encoding=encoding) as w:
        for name, kind, size in fields:
            w.field(name, kind, size)
        for geom, values in features:
            w.poly(_rings(_project(geom, epsg) if epsg else geom))
            w.record(*values)
    if epsg:
        stem.with_suffix(".prj").write_text(CRS.from_epsg(epsg).to_wkt("WKT1_ESRI"), encoding="ascii")
    if cpg is not None:
        stem.with_suffix(".cpg").write_text(cpg, encoding="ascii")
    return stem.with_suffix(".shp")


def zip_shapefile(shp: Path, folder: str = "") -> Path:
    out = shp.with_name(shp.stem + "_export.zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for part in sorted(shp.parent.glob(shp.stem + ".*")):
            zf.write(part, folder + part.name)
        zf.writestr("__MACOSX/._" + shp.name, b"\x00\x05\x16\x07")  # the resource fork a Mac zip carries
    return out


def hk_shapefile(tmp_path: Path, epsg: int, encoding: str, cpg: str | None, zipped: bool) -> Path:
    fields = [("NAME_EN", "C", 40), ("NAME_ZH", "C", 40), ("AREA_KM2", "N", 12)]
    features = [
        (d["geometry"], [d["name_en"], d["name_zh"], round(_project(d["geometry"], 2326).area / 1e6)])
        for d in _hk_districts()
    ]
    shp = write_shapefile(tmp_path / "HK_Districts", fields, features, epsg=epsg, encoding=encoding, cpg=cpg)
    return zip_shapefile(shp, "Hong_Kong_18_Districts/") if zipped else shp


# --- reading -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epsg", "cpg", "zipped"),
    [
        (4549, "GBK", False),  # CGCS2000 3-degree Gauss-Kruger CM 120E (Luozhuang lies just west of its band)
        (4527, None, True),  # zone 39 with the zone number in the easting; no .cpg: GBK is detected
        (32650, "936", False),  # UTM 50N, the .cpg as a Windows code page
    ],
)
def test_luozhuang_projected_shapefile_matches_the_source(tmp_path: Path, epsg: int, cpg: str | None, zipped: bool):
    source = _luozhuang_wgs84()
    fields = [("PAC", "C", 12), ("NAME", "C", 30), ("NAME_EN", "C", 30)]
    shp = write_shapefile(
        tmp_path / "luozhuang_boundary",
        fields,
        [(source, ["371311000000", "罗庄区", "Luozhuang"])],  # the 12-digit code official data carries
        epsg=epsg,
        encoding="gbk",
        cpg=cpg,
    )
    (record,) = read_regions(zip_shapefile(shp) if zipped else shp)
    assert (record.code, record.name, record.level, record.code_generated) == ("371311", "罗庄区", "district", False)
    assert record.geometry_wkb is not None
    imported = shapely.from_wkb(record.geometry_wkb)
    assert _metres(imported, source) < 0.01
    assert imported.area == pytest.approx(source.area, rel=1e-6)


@pytest.mark.parametrize(
    ("epsg", "encoding", "cpg", "zipped"),
    [
        (2326, "utf-8", "UTF-8", False),  # Hong Kong 1980 Grid, the district data's own system
        (2326, "gbk", None, True),  # GBK DBF without .cpg, zipped in a folder
        (32650, "utf-8", None, True),  # UTF-8 DBF without .cpg: UTF-8 is tried first
        (32650, "gbk", "ANSI 936", False),
    ],
)
def test_hk_districts_projected_shapefile_matches_the_source(
    tmp_path: Path, epsg: int, encoding: str, cpg: str | None, zipped: bool
):
    path = hk_shapefile(tmp_path, epsg, encoding, cpg, zipped)
    records = read_regions(path, name_property="NAME_ZH")
    sources = {d["name_zh"]: d for d in _hk_districts()}
    assert {r.name for r in records} == set(sources) and len(records) == 18
    assert {"黃大仙區", "南區", "油尖旺區"} <= {r.name for r in records}  # traditional characters intact
    for r in records:
        assert r.geometry_wkb is not None
        assert _metres(shapely.from_wkb(r.geometry_wkb), sources[r.name]["geometry"]) < 0.01, r.name
        # No code in the file: generated from the English name, the same as the GeoJSON of the same districts.
        assert r.code_generated and r.code == generated_region_code(sources[r.name]["name_en"])
    assert {r.code for r in records} == {r.code for r in read_regions(HK_DISTRICTS)}


def test_chosen_code_and_name_properties(tmp_path: Path):
    source = _luozhuang_wgs84()
    fields = [("DM", "N", 12), ("MC", "C", 30), ("Id", "N", 6)]
    shp = write_shapefile(
        tmp_path / "lz", fields, [(source, [371311, "罗庄区", 0])], epsg=4549, encoding="utf-8", cpg="UTF-8"
    )
    (chosen,) = read_regions(shp, code_property="DM", name_property="MC")
    assert (chosen.code, chosen.name, chosen.code_generated) == ("371311", "罗庄区", False)
    # Neither DM nor MC is a known code or name property and ArcGIS's "Id" (0) is not a code: reported, with the
    # properties to choose from.
    with pytest.raises(RegionFileError, match=r"no code property .*\(properties: DM, MC, Id\)"):
        read_regions(shp)
    with pytest.raises(RegionFileError, match=r"no value for code property 'CODE'.*DM, MC, Id"):
        read_regions(shp, code_property="CODE")


def test_no_prj_needs_a_stated_crs_and_a_wrong_one_is_caught(tmp_path: Path):
    districts = _hk_districts()[:3]
    shp = write_shapefile(
        tmp_path / "hk",
        [("NAME_ZH", "C", 30)],
        [(d["geometry"], [d["name_zh"]]) for d in districts],
        epsg=2326,
        encoding="utf-8",
        cpg=None,
    )
    shp.with_suffix(".prj").unlink()
    with pytest.raises(RegionFileError, match=r"no \.prj.*--crs"):
        read_regions(shp)
    stated = read_regions(shp, crs="EPSG:2326")
    for r, d in zip(stated, districts, strict=True):
        assert r.geometry_wkb is not None and _metres(shapely.from_wkb(r.geometry_wkb), d["geometry"]) < 0.01
    with pytest.raises(RegionFileError, match="far from where that system is used"):
        read_regions(shp, crs="EPSG:4549")  # a Gauss-Kruger zone of eastern China: lands in the sea near Taiwan
    with pytest.raises(ValueError, match="crs must be"):
        read_regions(shp, crs="EPSG:999999")
    shp.with_suffix(".prj").write_text("PROJCS[nonsense", encoding="ascii")
    with pytest.raises(RegionFileError, match=r"\.prj not understood"):
        read_regions(shp)


def test_unprojected_shapefile_without_prj_is_wgs84(tmp_path: Path):
    d = _hk_districts()[0]
    shp = write_shapefile(
        tmp_path / "plain",
        [("NAME", "C", 30)],
        [(d["geometry"], [d["name_en"]])],
        epsg=None,
        encoding="utf-8",
        cpg=None,
    )
    (r,) = read_regions(shp)
    assert r.geometry_wkb is not None and _metres(shapely.from_wkb(r.geometry_wkb), d["geometry"]) < 1e-6


def test_broken_shapefiles_and_zips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    empty_zip = tmp_path / "docs.zip"
    with zipfile.ZipFile(empty_zip, "w") as zf:
        zf.writestr("readme.txt", "no layers here")
    with pytest.raises(RegionFileError, match=r"holds no \.shp"):
        read_regions(empty_zip)
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RegionFileError, match=r"not a readable \.zip"):
        read_regions(not_zip)
    shp = hk_shapefile(tmp_path, 2326, "utf-8", "UTF-8", zipped=False)
    zipped = zip_shapefile(shp)
    import vms.geo.regions as regions

    monkeypatch.setattr(regions, "_MAX_ZIP_BYTES", 100_000)  # the district layer unpacks to ~1 MB
    with pytest.raises(RegionFileError, match="unpacks to more than"):
        read_regions(zipped)
    monkeypatch.undo()
    truncated = tmp_path / "cut.shp"
    truncated.write_bytes(shp.read_bytes()[:300])
    truncated.with_suffix(".dbf").write_bytes(shp.with_suffix(".dbf").read_bytes())
    with pytest.raises(RegionFileError, match=r"cut\.shp"):
        read_regions(truncated)
    shp.with_suffix(".dbf").unlink()
    with pytest.raises(RegionFileError, match=r"no \.dbf"):
        read_regions(shp)


# --- through the inventory (SQLite and PostgreSQL) ------------------------------------------------------


def _hk_camera_rows() -> list[dict[str, str]]:
    with HK_CAMERAS.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def write_projected_camera_csv(path: Path, rows: list[dict[str, str]], *, crs_column: bool = False) -> Path:
    """The real Hong Kong camera rows with only their easting/northing (EPSG:2326), no longitude/latitude."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "description", "Easting", "Northing", *(["CRS"] if crs_column else [])])
        for r in rows:
            w.writerow(
                [r["key"], r["description"], r["easting"], r["northing"], *(["EPSG:2326"] if crs_column else [])]
            )
    return path


def assert_positions_match_published(inventory: Any, rows: list[dict[str, str]]) -> None:
    _, cams = inventory.list_cameras(repo.CameraFilter(), limit=None)
    by_key = {c["local_id"]: c for c in cams}
    geod = Geod(ellps="WGS84")
    metres = {}
    for r in rows:
        cam = by_key[r["key"]]
        metres[r["key"]] = geod.inv(cam["longitude"], cam["latitude"], float(r["longitude"]), float(r["latitude"]))[2]
    assert len(cams) == len(rows)
    assert {k for k, m in metres.items() if m > 5.0} <= HK_INCONSISTENT_ROWS, metres
    assert sum(m < 0.01 for m in metres.values()) >= 0.9 * len(rows)


def test_projected_regions_and_cameras_land_in_place(inventory, tmp_path: Path):
    rep = inventory.import_regions(hk_shapefile(tmp_path, 2326, "gbk", None, zipped=True), name_property="NAME_ZH")
    assert (rep.created, rep.with_geometry, rep.generated_codes) == (18, 18, 18)
    rows = _hk_camera_rows()
    cams = inventory.import_file(write_projected_camera_csv(tmp_path / "cams.csv", rows), crs="EPSG:2326")
    assert (cams.accepted, cams.rejected) == (210, 0)
    assert not [i for i in cams.issues if i.code.startswith("COORD")]
    assert_positions_match_published(inventory, rows)
    shown = inventory.show_camera("H429F")  # Aberdeen Praya Road near Fish Market
    assert shown["region_name"] == "南區"
    # The same districts from the GeoJSON update the same 18 regions: the generated codes agree.
    again = inventory.import_regions(HK_DISTRICTS)
    assert (again.created, again.updated) == (0, 18)
    assert len(inventory.list_regions()) == 18


def test_crs_column_and_rows_that_cannot_be_converted(inventory, tmp_path: Path):
    rows = _hk_camera_rows()[:20]
    path = write_projected_camera_csv(tmp_path / "with_crs.csv", rows, crs_column=True)
    rep = inventory.import_file(path)  # each row names its system
    assert (rep.accepted, rep.rejected) == (20, 0)
    assert_positions_match_published(inventory, rows)
    shown = inventory.show_camera(rows[0]["key"])
    assert shown["extra"] == {"easting": rows[0]["easting"], "northing": rows[0]["northing"], "crs": "EPSG:2326"}

    bare = write_projected_camera_csv(tmp_path / "bare.csv", rows)
    rep = inventory.import_file(bare, source="ledger:bare")  # no CRS anywhere: land without a position, reported
    assert (rep.accepted, rep.rejected) == (20, 0)
    assert {i.code for i in rep.issues} >= {"COORD-PROJECTED"}
    assert all("--crs" in i.reason for i in rep.issues if i.code == "COORD-PROJECTED")

    with pytest.raises(ValueError, match="unknown coordinate system"):
        inventory.import_file(bare, crs="EPSG:99999999")
    with pytest.raises(ValueError, match="no easting and northing columns"):
        inventory.import_file(bare, crs="EPSG:2326", column_map={"Easting": "-"})


def test_twelve_digit_codes_of_official_data_shorten():
    from vms.catalog.gbid import short_civil_code

    assert short_civil_code("371311001000") == "371311001"  # township
    assert short_civil_code("371311000000") == "371311"  # district
    assert short_civil_code("371300000000") == "3713"  # city
    assert short_civil_code("371311001201") == "371311001201"  # a village keeps all 12
