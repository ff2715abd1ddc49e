"""The dashboard's map data on SQLite and PostgreSQL: camera points as columns (read from the DBAPI cursor), a
region's points with its sub-regions (the code literal, not a LIKE pattern), and region polygons simplified for
display."""

from __future__ import annotations

from pathlib import Path

import shapely
from shapely.geometry import shape
from sqlalchemy import select, update

from vms.catalog.domain import Observation, SourceKind
from vms.geo import mapdata
from vms.inventory.ingest import observation_key
from vms.store.models import cameras

DISTRICTS = Path(__file__).resolve().parents[1] / "data" / "cameras" / "hk_18_districts.geojson"


def test_camera_points_by_region(inventory) -> None:
    rows = [
        {"local_id": "a", "name": "a", "longitude": 118.30, "latitude": 35.05, "status": "ON"},
        {"local_id": "b", "name": "b", "longitude": 118.31, "latitude": 35.06, "status": "OFF"},
        {"local_id": "c", "name": "c", "longitude": 118.123456789, "latitude": 35.987654321},
        {"local_id": "d", "name": "d", "status": "ON"},  # no position
    ]
    obs = [Observation("ledger", SourceKind.LEDGER, observation_key(r), r) for r in rows]
    inventory.ingest_observations(obs, source="ledger", kind=SourceKind.LEDGER, snapshot=True, actor="test")
    placed = {"a": "371311", "b": "371311001", "c": "3713120", "d": "371311"}  # b in a township of a's district
    with inventory.session() as s:
        for local_id, code in placed.items():
            s.execute(update(cameras).where(cameras.c.local_id == local_id).values(region_code=code))
    with inventory.session(write=False) as s:
        every = mapdata.camera_points(s)
        ids = {str(k): int(v) for k, v in s.execute(select(cameras.c.local_id, cameras.c.id))}
        district = mapdata.camera_points(s, region="371311")
        township = mapdata.camera_points(s, region="371311001")
        pattern = mapdata.camera_points(s, region="3713_1")
    assert every.as_dict()["count"] == 3 and every.without_position == 1
    assert every.ids == sorted(every.ids) == sorted([ids["a"], ids["b"], ids["c"]])
    columns = zip(every.ids, every.lon, every.lat, every.status, strict=True)
    at = {i: (x, y, mapdata.STATUSES[st]) for i, x, y, st in columns}
    assert at[ids["c"]] == (118.12346, 35.98765, "unknown")  # 5 decimals; no status yet
    assert at[ids["a"]][2] == "ON" and at[ids["b"]][2] == "OFF"
    assert sorted(district.ids) == sorted([ids["a"], ids["b"]]) and district.without_position == 1
    assert township.ids == [ids["b"]]
    assert pattern.ids == []  # the code is literal text, not a LIKE pattern


def test_region_shapes_simplified(inventory) -> None:
    inventory.import_regions(DISTRICTS, name_property="name_en", actor="test")
    with inventory.session(write=False) as s:
        exact = mapdata.region_shapes(s, tolerance=0)
        simple = mapdata.region_shapes(s, tolerance=0.0005)
        version = mapdata.regions_version(s)
    assert version[0] == 18 and len(simple["features"]) == 18
    for a, b in zip(exact["features"], simple["features"], strict=True):
        ga, gb = shape(a["geometry"]), shape(b["geometry"])
        assert a["properties"] == b["properties"] and gb.is_valid
        assert shapely.get_num_coordinates(gb) <= shapely.get_num_coordinates(ga)
        assert abs(gb.area - ga.area) <= 0.02 * ga.area  # the same district, drawn with fewer points
    points = sum(shapely.get_num_coordinates(shape(f["geometry"])) for f in simple["features"])
    assert points < sum(shapely.get_num_coordinates(shape(f["geometry"])) for f in exact["features"]) / 2
