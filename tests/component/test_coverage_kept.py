"""Covered areas kept in the database (table coverage_areas): a new process reads them instead of building them,
and builds again only what changed: the regions whose cameras' views changed (and the regions above them), every
region when the view defaults change, a region whose polygon changed; a status change builds only the working
cameras' union. A reader that cannot write still answers. The Hong Kong cameras and districts, the districts under
a whole-Hong Kong region (code 81) made from their union; SQLite and PostgreSQL (the inventory fixture)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from shapely import union_all
from shapely.geometry import MultiPoint, mapping, shape
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import SQLAlchemyError

from tests.e2e.cli import vms_env, vms_runner
from vms.coverage.service import Coverage
from vms.inventory.service import Inventory
from vms.settings import Settings
from vms.store.models import cameras

WHOLE = "81"  # Hong Kong's civil code (810000): its districts are 810001..810018 beneath it


def _regions_file(test_data: Path, path: Path, *, changed: dict[str, Any] | None = None) -> Path:
    """The 18 districts as 810001.. under a whole-Hong Kong region 810000 (their union). ``changed``: only the
    districts given (code: geometry), for a re-import of those."""
    doc = json.loads((test_data / "cameras/hk_18_districts.geojson").read_text(encoding="utf-8"))
    features = []
    for i, f in enumerate(doc["features"], start=1):
        code = f"8100{i:02d}"
        if changed is not None and code not in changed:
            continue
        props = {
            "adcode": code,
            "name": f["properties"]["name_zh"],
            "level": "district",
            "parent": {"adcode": "810000"},
        }
        geometry = mapping(changed[code]) if changed is not None else f["geometry"]
        features.append({"type": "Feature", "properties": props, "geometry": geometry})
    if changed is None:
        whole = union_all([shape(f["geometry"]) for f in doc["features"]])
        props = {"adcode": "810000", "name": "香港", "level": "province"}
        features.insert(0, {"type": "Feature", "properties": props, "geometry": mapping(whole)})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return path


@pytest.fixture
def hk(inventory: Inventory, test_data: Path, tmp_path: Path) -> Inventory:
    inventory.import_regions(_regions_file(test_data, tmp_path / "hk_districts.geojson"))
    assert inventory.import_file(test_data / "cameras/hk_traffic_cameras.csv").accepted == 210
    return inventory


@pytest.fixture
def process(settings: Settings) -> Iterator[Callable[..., Coverage]]:
    """``process(**settings changes)``: the Coverage of a new process (its own engine, nothing kept in memory)."""
    made: list[Inventory] = []

    def new(**changes: Any) -> Coverage:
        changed = settings.model_copy(update=changes)
        changed.__dict__.pop("url", None)  # a cached property: from the database_url given
        inv = Inventory(changed)
        made.append(inv)
        return Coverage(inv)

    yield new
    for inv in made:
        inv.engine.dispose()


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``no_build(rework=True)``: from now on, building a covered area (or also a working union) fails the test."""

    def forbid(*, rework: bool = False) -> None:
        def built(*_a: Any, **_k: Any) -> Any:
            raise AssertionError("built, not read")

        monkeypatch.setattr(Coverage, "_union", built)
        if rework:
            monkeypatch.setattr(Coverage, "_rework", built)

    return forbid


def _rows(area: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["region"]: r for r in area["by_region"]}


def _placed(inv: Inventory) -> list[tuple[int, float, float, str]]:
    c = cameras.c
    stmt = select(c.id, c.longitude, c.latitude, c.region_code).where(c.region_code.is_not(None)).order_by(c.id)
    with inv.session(write=False) as s:
        return [(int(i), float(lon), float(lat), str(code)) for i, lon, lat, code in s.execute(stmt)]


def _rebuilt(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> set[str]:
    assert before.keys() == after.keys()
    return {code for code in before if before[code]["built_at"] != after[code]["built_at"]}


def test_a_new_process_reads_the_kept_areas_instead_of_building_them(hk, process, no_build):
    cov = Coverage(hk)
    first = cov.area(working=True)
    assert cov.last_build == {"regions": 19, "read": 0, "built": 19, "reworked": 19, "kept": True}
    geo = cov.area_geojson()
    rows = _rows(first)
    assert len(rows) == 19 and rows[WHOLE]["cameras"] == sum(r["cameras"] for c, r in rows.items() if c != WHOLE)
    for r in rows.values():
        assert dt.datetime.fromisoformat(r["built_at"]).tzinfo is not None

    no_build(rework=True)
    again = process()
    assert again.area(working=True)["by_region"] == first["by_region"]  # the same figures, the same built_at
    assert again.last_build == {"regions": 19, "read": 19, "built": 0, "reworked": 0, "kept": None}
    assert again.area_geojson() == geo  # the unions themselves, read when asked for
    assert process().refresh()["built"] == 0  # `vms coverage refresh` finds nothing to build


def test_an_edit_builds_its_district_and_the_region_above_it_only(hk, process, test_data, tmp_path):
    before = _rows(Coverage(hk).area())
    cid, lon, lat, code = next(p for p in _placed(hk) if before[p[3]]["cameras"] > 1)
    hk.edit_camera(str(cid), {"longitude": lon + 0.0003, "latitude": lat}, actor="test")  # 30 m east
    cov = process()
    moved = _rows(cov.area())
    assert _rebuilt(before, moved) == {code, WHOLE} and cov.last_build["read"] == 17
    assert all(moved[c] == before[c] for c in before if c not in (code, WHOLE))

    # a camera added (another source's file) beside one of another district
    _cid2, lon2, lat2, code2 = next(p for p in _placed(hk) if p[3] != code)
    extra = tmp_path / "extra.csv"
    extra.write_text(f"key,description,latitude,longitude\nX001,added,{lat2 + 0.0004},{lon2}\n", encoding="utf-8")
    assert hk.import_file(extra).accepted == 1
    cov = process()
    added = _rows(cov.area())
    assert _rebuilt(moved, added) == {code2, WHOLE}
    assert added[code2]["cameras"] == moved[code2]["cameras"] + 1
    assert added[code2]["covered_km2"] > moved[code2]["covered_km2"]


def test_other_view_defaults_build_every_area_again(hk, process):
    before = _rows(Coverage(hk).area())
    cov = process(coverage_bullet_distance_m=120.0)
    after = _rows(cov.area())
    assert _rebuilt(before, after) == set(before) and cov.last_build["built"] == 19
    assert all(after[c]["covered_km2"] > r["covered_km2"] for c, r in before.items() if r["cameras"])
    back = process()  # the defaults as they were: the rows hold the other defaults' areas now
    assert _rows(back.area())[WHOLE]["covered_km2"] == before[WHOLE]["covered_km2"]
    assert back.last_build["built"] == 19


def test_a_changed_polygon_builds_its_area_again(hk, process, test_data, tmp_path):
    before = _rows(Coverage(hk).area())
    code = next(c for c, r in before.items() if c != WHOLE and r["cameras"] >= 3)
    doc = json.loads((test_data / "cameras/hk_18_districts.geojson").read_text(encoding="utf-8"))
    old = shape(doc["features"][int(code[-2:]) - 1]["geometry"])
    points = MultiPoint([(lon, lat) for _i, lon, lat, c in _placed(hk) if c == code])
    smaller = old.intersection(points.convex_hull.buffer(0.005))  # the same cameras inside, less land
    hk.import_regions(_regions_file(test_data, tmp_path / "one.geojson", changed={code: smaller}))
    cov = process()
    after = _rows(cov.area())
    assert after[code]["area_km2"] < before[code]["area_km2"] and after[code]["cameras"] == before[code]["cameras"]
    assert _rebuilt(before, after) == {code} and cov.last_build["read"] == 18


def test_a_status_change_builds_only_the_working_union(hk, process, no_build):
    before = _rows(Coverage(hk).area(working=True))
    cid, _lon, _lat, code = _placed(hk)[0]
    with hk.engine.begin() as conn:  # as a health sweep writes it: updated_at untouched
        conn.execute(cameras.update().where(cameras.c.id == cid).values(status="ON"))
    no_build()  # the covered union stands: building it fails the test
    cov = process()
    after = _rows(cov.area(working=True))
    assert cov.last_build == {"regions": 19, "read": 19, "built": 0, "reworked": 2, "kept": True}  # code's, 81
    assert _rebuilt(before, after) == set()
    assert {c: r["covered_km2"] for c, r in after.items()} == {c: r["covered_km2"] for c, r in before.items()}
    assert after[code]["working"] == after[WHOLE]["working"] == 1 and after[code]["working_km2"] > 0
    assert all(r["working"] == 0 for c, r in after.items() if c not in (code, WHOLE))

    no_build(rework=True)  # the working unions were kept as well
    again = process()
    assert again.area(working=True)["by_region"] == cov.area(working=True)["by_region"]
    assert again.last_build["reworked"] == 0
    assert again.area_geojson(working=True) == cov.area_geojson(working=True)


def _read_only(settings: Settings) -> dict[str, Any]:
    """Settings changes for a process that can read the database and not write it."""
    url = settings.url
    if url.startswith("sqlite"):
        return {"database_url": "sqlite:///file:" + url.split("///", 1)[1] + "?mode=ro&uri=true"}
    base, name = url.rsplit("/", 1)
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"ALTER DATABASE {name} SET default_transaction_read_only = on"))
    admin.dispose()
    return {}


def test_a_reader_that_cannot_write_still_answers(hk, process, settings, caplog):
    before = _rows(Coverage(hk).area())
    cid, _lon, _lat, code = _placed(hk)[0]
    hk.edit_camera(str(cid), {"ptz_type": "2", "max_view_distance": 200}, actor="test")  # a dome: a wider view
    hk.engine.dispose()
    ro = _read_only(settings)
    with caplog.at_level(logging.INFO, logger="vms.coverage.service"):
        cov = process(**ro)
        after = _rows(cov.area(working=True))
    assert after[code]["covered_km2"] > before[code]["covered_km2"]
    assert _rebuilt(before, after) == {code, WHOLE}
    assert cov.last_build["kept"] is False and "not kept now" in caplog.text
    with pytest.raises(SQLAlchemyError, match=r"read-only|readonly"), cov.inv.session() as s:  # it really cannot
        s.execute(cameras.update().where(cameras.c.id == cid).values(name="x"))


def test_vms_coverage_refresh_builds_and_keeps_them(hk, settings, tmp_path, process, no_build):
    run = vms_runner(vms_env(settings, tmp_path, COLUMNS="200"), no_traceback=True)
    out = run("coverage", "refresh").stdout
    assert "covered areas of 19 regions" in out and "19 built" in out and "kept in the database" in out
    assert json.loads(run("coverage", "refresh", "--json").stdout)["built"] == 0
    assert "19 built" in run("coverage", "refresh", "--force").stdout
    no_build(rework=True)
    cov = process()
    cov.area(working=True)
    assert cov.last_build["read"] == 19 and cov.last_build["built"] == 0
