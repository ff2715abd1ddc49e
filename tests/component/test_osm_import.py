"""OpenStreetMap camera files through Inventory.import_file, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from vms.store import repository as repo

OSM = Path(__file__).resolve().parents[1] / "data" / "osm"


@pytest.mark.parametrize(
    ("name", "cameras", "skipped"),
    [
        ("luozhuang_overpass.json", 8, 1),  # guard (the ALPR is a checkpoint camera)
        ("luozhuang.osm", 4, 1),  # guard (a road, a hospital and way vertices are not counted as rows)
        ("luozhuang_overpass_turbo.geojson", 4, 0),  # the ALPR is a checkpoint camera
    ],
)
def test_osm_files_import(inventory, name: str, cameras: int, skipped: int) -> None:
    rep = inventory.import_file(OSM / name)
    assert rep.format == "osm" and rep.kind.value == "ledger"
    assert (rep.rows, rep.accepted, rep.rejected) == (cameras, cameras, 0)
    assert rep.result.cameras_created == cameras
    assert sum(1 for i in rep.issues if i.code == "OSM-NOT-CAMERA") == skipped
    assert any(i.code == "OSM-ID" and i.line == 0 for i in rep.issues)
    total, rows = inventory.list_cameras(repo.CameraFilter(), limit=None)
    assert total == cameras
    assert all(str(r["local_id"]).startswith(("osm:node/", "osm:way/")) for r in rows)
    assert all(r["longitude"] and r["latitude"] for r in rows)

    again = inventory.import_file(OSM / name)
    assert again.result.changed is False


def test_osm_camera_record(inventory) -> None:
    inventory.import_file(OSM / "luozhuang_overpass.json")
    shown = inventory.show_camera("osm:node/11482736501")  # the department number finds the camera
    record = shown["record"]
    assert record["name"] == "沂河路与湖北路交叉口东"
    assert record["management_unit"] == "临沂市公安局罗庄分局"
    assert (record["ptz_type"], record["room_type"], record["use_type"], record["direction_type"]) == (
        "2",
        "1",
        "2",
        "5",
    )
    assert (record["longitude"], record["latitude"]) == (118.2843217, 35.0003812)
    assert shown["extra"]["camera:direction"] == "135"  # the degrees, beside the 8-way code
    assert shown["extra"]["camera:mount"] == "pole"
    assert shown["provenance"]["direction_type"]["source"] == "ledger:luozhuang_overpass"

    # All three shapes of one camera agree on what it is.
    inventory.import_file(OSM / "luozhuang.osm")
    way = inventory.show_camera("osm:way/1250373402")["record"]
    assert way["longitude"] == pytest.approx(118.2803494) and way["latitude"] == pytest.approx(35.0000512)


def test_bare_id_file_keeps_its_ids_and_says_so(inventory, tmp_path: Path) -> None:
    path = tmp_path / "open_data_points.csv"
    path.write_text(
        "id,lat,lon,type\n"
        "4471,35.0003812,118.2843217,dome\n"
        "4472,35.0012001,118.2851990,bullet\n"
        "4473,35.0020450,118.2860115,PTZ\n",
        encoding="utf-8",
    )
    rep = inventory.import_file(path, column_map={"type": "ptz_type"})
    assert (rep.accepted, rep.rejected) == (3, 0)
    notes = [i for i in rep.issues if i.code == "ID-AS-LOCAL-ID"]
    assert len(notes) == 1 and notes[0].line == 0 and "department number" in notes[0].reason
    assert rep.as_dict()["issues"][0]["code"] == "ID-AS-LOCAL-ID"
    _, rows = inventory.list_cameras(repo.CameraFilter(), limit=None)
    assert sorted((r["local_id"], r["ptz_type"]) for r in rows) == [("4471", "2"), ("4472", "3"), ("4473", "1")]
    # A second export of the same file, reordered: the ids keep each camera its own record.
    path.write_text(
        "id,lat,lon,type\n4473,35.0020450,118.2860115,PTZ\n4471,35.0003812,118.2843217,dome\n"
        "4472,35.0012001,118.2851990,bullet\n",
        encoding="utf-8",
    )
    assert inventory.import_file(path, column_map={"type": "ptz_type"}).result.changed is False
