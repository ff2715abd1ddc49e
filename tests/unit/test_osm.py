"""OpenStreetMap cameras (vms.ingest.osm through vms.ingest.importers): Overpass JSON, .osm XML, OSM GeoJSON; the
bare `id` column as department number; English labels of enumerations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vms.catalog.columns import ColumnMap, parse_value
from vms.ingest.exporters import write_geojson
from vms.ingest.importers import ReadError, ReadResult, read_records
from vms.ingest.osm import direction_code

OSM = Path(__file__).resolve().parents[1] / "data" / "osm"


def by_local_id(result: ReadResult) -> dict[str, Any]:
    return {row.fields["local_id"]: row for row in result.rows}


def codes(result: ReadResult) -> list[tuple[int, str]]:
    return [(i.line, i.code) for i in result.issues]


def test_overpass_json() -> None:
    result = read_records(OSM / "luozhuang_overpass.json")
    assert result.format == "osm"
    assert not result.rejected
    rows = by_local_id(result)
    assert list(rows) == [
        "osm:node/11482736501",
        "osm:node/11482736502",
        "osm:node/11482736503",
        "osm:node/11482736504",
        "osm:node/11482736505",
        "osm:node/11482736507",
        "osm:node/11482736508",
        "osm:way/1250373401",
    ]
    first = rows["osm:node/11482736501"]
    assert first.line == 1
    assert first.fields == {
        "local_id": "osm:node/11482736501",
        "name": "沂河路与湖北路交叉口东",
        "management_unit": "临沂市公安局罗庄分局",
        "longitude": 118.2843217,
        "latitude": 35.0003812,
        "ptz_type": "2",  # camera:type=dome
        "room_type": "1",  # surveillance=public
        "use_type": "2",  # surveillance:zone=traffic
        "direction_type": "5",  # 135 degrees: SE
    }
    # Tags that are not copied verbatim stay with the record: the degrees, the mount, the raw labels.
    assert first.extra == {
        "camera:direction": "135",
        "camera:mount": "pole",
        "camera:type": "dome",
        "man_made": "surveillance",
        "surveillance": "public",
        "surveillance:type": "camera",
        "surveillance:zone": "traffic",
    }
    second = rows["osm:node/11482736502"].fields
    assert (second["ptz_type"], second["direction_type"], second["room_type"]) == ("3", "6", "1")  # fixed, NE
    assert "use_type" not in second and rows["osm:node/11482736502"].extra["surveillance:zone"] == "parking"
    assert rows["osm:node/11482736503"].fields["ptz_type"] == "1"  # panning: a PTZ camera
    assert rows["osm:node/11482736503"].fields["use_type"] == "1"  # zone town: public order
    assert rows["osm:node/11482736504"].fields["direction_type"] == "7"  # SSW
    shop = rows["osm:node/11482736507"]
    assert shop.fields["name"] == "银座商城一楼大厅"  # name:zh when there is no name
    assert shop.fields["manufacturer"] == "Hikvision"  # brand
    assert (shop.fields["room_type"], shop.fields["direction_type"]) == ("2", "6")  # indoor; 45;225 -> the first
    untyped = rows["osm:node/11482736508"]
    assert untyped.fields["install_time"] == "2019-06"
    assert "direction_type" not in untyped.fields and untyped.extra["camera:direction"] == "north-east"
    way = rows["osm:way/1250373401"].fields
    assert (way["longitude"], way["latitude"]) == (118.285482, 35.0089734)  # its center
    assert codes(result) == [(0, "OSM-ID"), (6, "OSM-NOT-CAMERA"), (8, "OSM-DIRECTION")]
    assert "guard" in result.issues[1].reason
    assert result.issues[2].reason.startswith("record 8: node/11482736508: camera:direction 'north-east'")
    alpr = rows["osm:node/11482736505"].fields  # a plate reader is a checkpoint camera
    assert (alpr["position_type"], alpr["function_type"], alpr["use_type"]) == ("1", "03", "2")
    assert not any(i.fatal for i in result.issues)


def test_osm_xml() -> None:
    path = OSM / "luozhuang.osm"
    result = read_records(path)
    assert result.format == "osm"
    rows = by_local_id(result)
    assert list(rows) == [
        "osm:node/11482736601",
        "osm:node/11482736602",
        "osm:node/11482736604",
        "osm:way/1250373402",
    ]
    lines = path.read_text(encoding="utf-8").splitlines()
    for local_id, row in rows.items():
        kind, osm_id = local_id.removeprefix("osm:").split("/")
        assert lines[row.line - 1].lstrip().startswith(f'<{kind} id="{osm_id}"')  # the element's own line
    first = rows["osm:node/11482736601"].fields
    assert (first["ptz_type"], first["direction_type"], first["use_type"]) == ("3", "1", "2")  # fixed, 90: E
    assert rows["osm:node/11482736602"].fields["direction_type"] == "5"  # SE
    assert rows["osm:node/11482736604"].fields["direction_type"] == "7"  # 225: SW
    # A way without center sits at the mean of its nodes (the closing node counted once).
    way = rows["osm:way/1250373402"].fields
    assert way["longitude"] == pytest.approx((118.2801377 + 118.2805611) / 2)
    assert way["latitude"] == pytest.approx((35.0002104 + 34.9998920) / 2)
    found = codes(result)
    assert (0, "OSM-ID") in found
    assert [c for _, c in found].count("OSM-NOT-CAMERA") == 1  # the guard
    other = [i for i in result.issues if i.code == "OSM-OTHER-ELEMENTS"]
    assert len(other) == 1 and other[0].reason.split(": ", 1)[1].startswith("2 elements")  # hospital and road


def test_osm_geojson_from_overpass_turbo() -> None:
    result = read_records(OSM / "luozhuang_overpass_turbo.geojson")
    assert result.format == "osm"
    rows = by_local_id(result)
    assert list(rows) == ["osm:node/11482736701", "osm:node/11482736702", "osm:node/11482736703", "osm:way/1250373403"]
    first = rows["osm:node/11482736701"].fields
    assert (first["longitude"], first["latitude"]) == (118.2923417, 35.0047712)
    assert (first["direction_type"], first["ptz_type"], first["use_type"]) == ("8", "2", "2")  # 315: NW
    assert rows["osm:node/11482736702"].fields["direction_type"] == "2"  # W
    assert "@id" not in rows["osm:node/11482736701"].extra
    way = rows["osm:way/1250373403"].fields  # a polygon: the mean of its corners
    assert way["longitude"] == pytest.approx(118.270225) and way["latitude"] == pytest.approx(35.018731)
    assert codes(result) == [(0, "OSM-ID")]  # the ALPR lands as a checkpoint camera


def test_other_geojson_exports_of_osm(tmp_path: Path) -> None:
    # osmtogeojson before 3.0 nests tags; ogr2ogr's OSM driver keeps the rare tags in an hstore string.
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "node/900",
                "properties": {
                    "type": "node",
                    "id": 900,
                    "tags": {"man_made": "surveillance", "camera:type": "dome", "name": "北门"},
                    "relations": [],
                    "meta": {},
                },
                "geometry": {"type": "Point", "coordinates": [118.28, 35.0]},
            },
            {
                "type": "Feature",
                "properties": {
                    "osm_id": "901",
                    "name": "南门",
                    "man_made": "surveillance",
                    "other_tags": '"camera:direction"=>"180","surveillance"=>"indoor"',
                },
                "geometry": {"type": "Point", "coordinates": [118.29, 35.01]},
            },
        ],
    }
    path = tmp_path / "export.geojson"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    rows = by_local_id(read_records(path))
    assert rows["osm:node/900"].fields["ptz_type"] == "2" and rows["osm:node/900"].fields["name"] == "北门"
    south = rows["osm:node/901"]
    assert (south.fields["direction_type"], south.fields["room_type"]) == ("3", "2")
    assert south.extra["camera:direction"] == "180" and "other_tags" not in south.extra


def test_our_own_geojson_export_is_not_taken_for_osm(tmp_path: Path) -> None:
    rows = read_records(OSM / "luozhuang_overpass.json").accepted
    out = tmp_path / "export.geojson"
    write_geojson([{**r.fields, "extra": r.extra} for r in rows], out)
    again = read_records(out)
    assert again.format == "geojson"
    assert [r.fields for r in again.rows] == [r.fields for r in rows]
    assert [r.extra for r in again.rows] == [r.extra for r in rows]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("0", "4"),
        ("22.4", "4"),
        ("45", "6"),
        ("90", "1"),
        ("135", "5"),
        ("180", "3"),
        ("225", "7"),
        ("270", "2"),
        ("315", "8"),
        ("359", "4"),
        ("-45", "8"),
        ("N", "4"),
        ("ne", "6"),
        ("E", "1"),
        ("NNE", "6"),  # 22.5: the boundary goes clockwise
        ("SSW", "7"),
        ("WSW", "2"),
        ("WNW", "8"),
        ("90;270", "1"),
        ("350-10", "4"),
        ("north-east", None),
        ("", None),
        ("nan", None),
    ],
)
def test_direction_code(raw: str, code: str | None) -> None:
    assert direction_code(raw)[0] == code


def test_direction_keeps_degrees() -> None:
    assert direction_code("135") == ("5", 135.0)
    assert direction_code("NNE") == ("6", 22.5)


def test_hostile_osm_xml_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do-not-read-me", encoding="utf-8")
    for body in (
        f'<!DOCTYPE osm [<!ENTITY x SYSTEM "file://{secret}">]>\n'
        '<osm version="0.6"><node id="1" lat="35" lon="118.28">'
        '<tag k="man_made" v="surveillance"/><tag k="name" v="&x;"/></node></osm>',
        '<!DOCTYPE osm [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n'
        '<osm version="0.6"><node id="1" lat="35" lon="118.28">'
        '<tag k="man_made" v="surveillance"/><tag k="name" v="&b;"/></node></osm>',
    ):
        path = tmp_path / "evil.osm"
        path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + body, encoding="utf-8")
        with pytest.raises(ReadError) as caught:
            read_records(path)
        assert "do-not-read-me" not in str(caught.value) and "\n" not in str(caught.value)


def test_osm_pbf_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "shandong-latest.osm.pbf"
    path.write_bytes(b"\x00\x00\x00\x0d\n\tOSMHeader")
    with pytest.raises(ReadError, match="osmium"):
        read_records(path)


def test_format_osm_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "cameras.txt"
    path.write_bytes((OSM / "luozhuang.osm").read_bytes())
    assert read_records(path, fmt="osm").format == "osm"
    path.write_bytes((OSM / "luozhuang_overpass.json").read_bytes())
    assert len(read_records(path, fmt="osm").rows) == 8


# --- a bare `id` column ---------------------------------------------------------------------------------


def test_bare_id_column_is_the_department_number(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    path.write_text("id,lat,lon,camera_type\n17,35.0003812,118.2843217,PTZ\n18,35.0012,118.2851,Bullet\n")
    result = read_records(path)
    assert not result.rejected
    assert [r.fields["local_id"] for r in result.rows] == ["17", "18"]
    notes = [i for i in result.issues if i.code == "ID-AS-LOCAL-ID"]
    assert len(notes) == 1 and notes[0].line == 0 and not notes[0].fatal
    assert "'id'" in notes[0].reason and "department number" in notes[0].reason
    assert result.columns["id"] == "local_id"


def test_bare_id_in_json_records_is_noted_once(tmp_path: Path) -> None:
    path = tmp_path / "points.json"
    records = [{"id": n, "name": f"点位{n}", "lng": 118.28, "lat": 35.0 + n / 1000} for n in range(3)]
    records.append({"id": 9, "lng": 118.3, "lat": 35.1, "note": "another key set"})
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    result = read_records(path)
    assert [r.fields["local_id"] for r in result.rows] == ["0", "1", "2", "9"]
    assert [i.code for i in result.issues] == ["ID-AS-LOCAL-ID"]


def test_id_stays_extra_when_something_else_identifies_the_camera(tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    path.write_text("ID,设备编码,设备名称\n5,37131100001326000001,北门\n", encoding="utf-8")
    result = read_records(path)
    row = result.rows[0]
    assert "local_id" not in row.fields and row.extra == {"ID": "5"}
    assert not any(i.code == "ID-AS-LOCAL-ID" for i in result.issues)
    # The operator's map wins over the fallback.
    path.write_text("id,name,lat\n5,北门,35.0\n", encoding="utf-8")
    mapped = read_records(path, column_map=ColumnMap({"id": "-"}))
    assert "local_id" not in mapped.rows[0].fields


# --- English labels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "label", "code"),
    [
        ("ptz_type", "PTZ", "1"),
        ("ptz_type", "PTZ Camera", "1"),
        ("ptz_type", "Speed Dome", "1"),
        ("ptz_type", "panning", "1"),
        ("ptz_type", "Dome", "2"),
        ("ptz_type", "dome camera", "2"),
        ("ptz_type", "Turret", "2"),
        ("ptz_type", "Bullet", "3"),
        ("ptz_type", "Box Camera", "3"),
        ("ptz_type", "fixed", "3"),
        ("ptz_type", "Motorized Bullet", "4"),
        ("ptz_type", "半球摄像机", "2"),
        ("room_type", "Outdoor", "1"),
        ("room_type", "INDOOR", "2"),
        ("supply_light_type", "IR", "2"),
        ("supply_light_type", "Infrared", "2"),
        ("supply_light_type", "White Light", "3"),
        ("supply_light_type", "laser", "4"),
        ("use_type", "Public Security", "1"),
        ("use_type", "Traffic", "2"),
        ("use_type", "Key Area", "3"),
        ("resolution", "1080P", "6"),
        ("resolution", "Full HD", "6"),
        ("direction_type", "North-East", "6"),
        ("status", "Online", "ON"),
    ],
)
def test_english_labels_map_like_chinese_ones(field: str, label: str, code: str) -> None:
    assert parse_value(field, label) == (code, ())
