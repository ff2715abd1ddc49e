"""`Inventory.allocate_ids`: an ID names a region, so a camera gets one only where its region is known (issue 6
point 14). Real data: the 210 Hong Kong cameras and districts, the Luozhuang boundary. SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import shapely

from tests.conftest import TEST_DATA
from vms.catalog.domain import Observation, SourceKind
from vms.errors import ValidationFailed
from vms.geo.regions import read_regions
from vms.inventory.ingest import observation_key
from vms.store import repository as repo

LUOZHUANG = Path(__file__).resolve().parents[2] / "vms" / "data" / "luozhuang_gcj02.geojson"
HK_DISTRICTS = TEST_DATA / "cameras" / "hk_18_districts.geojson"
HK_CAMERAS = TEST_DATA / "cameras" / "hk_traffic_cameras.csv"


def _observe(inventory, source: str, rows: list[dict[str, object]]) -> None:
    kind = SourceKind.LEDGER
    obs = [Observation(source, kind, observation_key(r), r) for r in rows]
    inventory.ingest_observations(obs, source=source, kind=kind, snapshot=True, actor="test")


def _inside_luozhuang() -> tuple[float, float]:
    (record,) = read_regions(LUOZHUANG)
    assert record.geometry_wkb is not None
    point = shapely.from_wkb(record.geometry_wkb).representative_point()
    return point.x, point.y


def _device_ids(inventory) -> dict[str, str | None]:
    _, rows = inventory.list_cameras(repo.CameraFilter(), limit=None)
    return {r["local_id"]: r["device_id"] for r in rows}


def test_hong_kong_cameras_get_no_luozhuang_ids(inventory):
    """The governed region is Luozhuang (371311): it is not a default for cameras that are elsewhere."""
    inventory.import_regions(HK_DISTRICTS)
    assert inventory.import_file(HK_CAMERAS).accepted == 210
    result = inventory.allocate_ids()
    assert result.allocated == []
    assert len(result.skipped) == 210
    assert {c["local_id"] for c in result.skipped} == set(_device_ids(inventory))
    placed = [c for c in result.skipped if c["region_by_position"]]
    assert placed and all("has no civil code" in c["reason"] for c in placed)  # in a district without a code
    outside = [c for c in result.skipped if not c["region_by_position"]]
    assert outside and all("no position in a known region" in c["reason"] for c in outside)
    assert set(_device_ids(inventory).values()) == {None}

    # The operator says which code they get: Hong Kong's GB/T 2260 code.
    dry = inventory.allocate_ids(civil_code="810000", dry_run=True)
    assert len(dry.allocated) == 210 and dry.skipped == [] and dry.dry_run
    assert set(_device_ids(inventory).values()) == {None}  # a dry run writes nothing
    done = inventory.allocate_ids(civil_code="810000")
    assert sorted(g for _, g in done.allocated) == [f"81000000001326{n:06d}" for n in range(1, 211)]
    assert all(g and g.startswith("810000") for g in _device_ids(inventory).values())


def test_code_then_position_then_the_given_civil_code(inventory):
    inventory.import_regions(LUOZHUANG)
    inventory.import_regions(HK_DISTRICTS)
    lon, lat = _inside_luozhuang()
    hk_lon, hk_lat = 114.1501576, 22.2485255  # H429F, Aberdeen: in the Southern district (no civil code)
    _observe(
        inventory,
        "ledger:mixed",
        [
            {"local_id": "coded", "name": "有区划", "civil_code": "371302"},
            {"local_id": "township", "name": "乡镇区划", "civil_code": "371311001"},
            {"local_id": "in-luozhuang", "name": "罗庄点位", "longitude": lon, "latitude": lat},
            {"local_id": "in-hk", "name": "Aberdeen", "longitude": hk_lon, "latitude": hk_lat},
            {"local_id": "nowhere", "name": "无位置"},
            {"local_id": "city-only", "name": "只有市级", "civil_code": "3713"},
        ],
    )
    result = inventory.allocate_ids()
    ids = dict(result.allocated)
    by_local = {local: ids.get(cid) for local, cid in _camera_ids(inventory).items()}
    assert by_local["coded"] == "37130200001326000001"
    # A township code (9 digits) and a position in the Luozhuang polygon both give centre 37131100.
    assert {by_local["township"], by_local["in-luozhuang"]} == {"37131100001326000001", "37131100001326000002"}
    skipped = {c["local_id"]: c["reason"] for c in result.skipped}
    assert set(skipped) == {"in-hk", "nowhere", "city-only"}
    assert skipped["nowhere"] == "no civil code, no position in a known region"
    assert skipped["city-only"].startswith("civil code '3713' is not a 6- or 8-digit code")
    assert "has no civil code" in skipped["in-hk"]

    rest = inventory.allocate_ids(civil_code="37131100")
    assert sorted(g for _, g in rest.allocated) == [f"37131100001326{n:06d}" for n in (3, 4, 5)]
    assert inventory.allocate_ids().allocated == []  # every camera has an ID now
    with inventory.session(write=False) as s:
        audit = [e for e in repo.audit_entries(s) if e.action == "ids.allocate"]
    assert {"count": 3, "skipped": 3} in [e.details for e in audit]


def _camera_ids(inventory) -> dict[str, int]:
    _, rows = inventory.list_cameras(repo.CameraFilter(), limit=None)
    return {r["local_id"]: r["id"] for r in rows}


@pytest.mark.parametrize("bad", ["81", "8100000", "abcdef", "８１００００x"])
def test_a_bad_civil_code_is_refused(inventory, bad):
    with pytest.raises(ValidationFailed, match="6- or 8-digit"):
        inventory.allocate_ids(civil_code=bad)
