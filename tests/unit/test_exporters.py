"""Exports (vms.ingest.exporters) and their round trip through vms.ingest.importers."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from vms.catalog.fields import BY_NAME, CATALOG_FIELDS, FIELD_NAMES
from vms.ingest.catalog_ext import EXT_TAG
from vms.ingest.exporters import INFO_FIELDS, write_catalog_xml, write_csv, write_geojson
from vms.ingest.importers import read_records


def sample_records() -> list[dict[str, Any]]:
    full: dict[str, Any] = {
        "device_id": "37131100001320000123",
        "name": "沂蒙路与通达路口东 <北> & \"南\"",
        "manufacturer": "Hikvision",
        "model": "DS-2DE4425IW",
        "owner": "罗庄分局",
        "civil_code": "371311",
        "block": "一警区",
        "address": "山东省临沂市罗庄区沂蒙路, 通达路口",
        "parental": "0",
        "parent_id": "37131100002160000001",
        "register_way": "1",
        "secrecy": "0",
        "ip_address": "192.168.1.10",
        "port": 8000,
        "status": "ON",
        "longitude": 118.2918345,
        "latitude": 35.0512001,
        "ptz_type": "1",
        "room_type": "1",
        "supply_light_type": "2",
        "direction_type": "5",
        "position_type": "10",
        "use_type": "2",
        "resolution": "5/6",
        "point_type": "1",
        "point_common_name": "通达路口",
        "mac": "00:1a:2b:3c:4d:5e",
        "function_type": "01/03",
        "horizontal_field_angle": 90.5,
        "vertical_field_angle": 45.0,
        "max_view_distance": 120.0,
        "install_time": "2023-05-06",
        "management_unit": "罗庄分局科技科",
        "contact_info": "+86 539 1234567",
        "record_save_days": 90,
        "photoelectric_imaging_type": "1/2",
        "local_id": "LZ-0001",
        "serial_number": "DS-2DE4425IW20230506AACH123456789",
        "firmware_version": "V5.7.3 build 220112",
        "hardware_id": "88",
        "endpoint_ref": "urn:uuid:1c852a4d-b800-1f08-abcd-001a2b3c4d5e",
        "device_service_url": "http://192.168.1.10/onvif/device_service",
        "services": {"device": "http://192.168.1.10/onvif/device_service", "media": "http://192.168.1.10/onvif/Media"},
        "media_profiles": [{"token": "Profile_1", "encoding": "H264", "width": 1920, "height": 1080}],
        "stream_uri": "rtsp://192.168.1.10:554/Streaming/Channels/101",
        "snapshot_uri": "http://192.168.1.10/ISAPI/Streaming/channels/101/picture",
        "extra": {"备注": "=HYPERLINK(\"http://x\")", "region": "罗庄", "序号": "1", "地址": "另一个地址"},
    }
    bare = {
        "device_id": "37131100001320000124",
        "name": "-5 号杆",  # starts like a formula / negative number
        "ip_address": "cam-02.example.org",
        "latitude": -33.8688,  # only one coordinate
        "extra": {"region": "南坊"},
    }
    third = {
        "device_id": "37131100001320000125",
        "name": "西门\n临时点",
        "longitude": -0.1275,
        "latitude": 51.5072,
        "status": "OFF",
        "install_time": "2023-05-06T08:30:00",
    }
    return [full, bare, third]


def expected_fields(record: dict[str, Any], names: tuple[str, ...] = FIELD_NAMES) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k in names and v is not None}


def test_csv_round_trip(tmp_path: Path) -> None:
    records = sample_records()
    path = tmp_path / "out.csv"
    assert write_csv(records, path) == 3
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        header = next(csv.reader(fh))
    assert header == [*FIELD_NAMES, "region", "地址", "备注", "序号"]

    result = read_records(path)
    assert not any(i.fatal for i in result.issues)
    assert [r.line for r in result.rows] == [2, 3, 4]
    for record, row in zip(records, result.rows, strict=True):
        assert row.fields == expected_fields(record)
        assert row.extra == record.get("extra", {})


def test_csv_neutralises_formulas(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_csv(sample_records(), path)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["备注"] == "'=HYPERLINK(\"http://x\")"
    assert rows[1]["name"] == "'-5 号杆"
    assert rows[1]["latitude"] == "-33.8688"  # numbers stay numbers
    assert json.loads(rows[0]["services"]) == sample_records()[0]["services"]


def test_geojson_round_trip(tmp_path: Path) -> None:
    records = sample_records()
    path = tmp_path / "out.geojson"

    def stream() -> Iterator[dict[str, Any]]:  # writers take any iterable
        yield from records

    assert write_geojson(stream(), path) == 3
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["type"] == "FeatureCollection"
    first, second, _ = doc["features"]
    assert first["geometry"] == {"type": "Point", "coordinates": [118.2918345, 35.0512001]}
    assert "longitude" not in first["properties"]
    assert first["properties"]["region"] == "罗庄"
    assert second["geometry"] is None
    assert second["properties"]["latitude"] == -33.8688

    result = read_records(path)
    assert not any(i.fatal for i in result.issues)
    for record, row in zip(records, result.rows, strict=True):
        assert row.fields == expected_fields(record)
        assert row.extra == record.get("extra", {})




@pytest.mark.parametrize("encoding", ["UTF-8", "GB2312"])
def test_catalog_xml_round_trip(tmp_path: Path, encoding: str) -> None:
    records = sample_records()
    path = tmp_path / "catalog.xml"
    assert write_catalog_xml(records, path, platform_id="37131100002000000001", sn=7, encoding=encoding) == 3
    assert path.read_bytes().startswith(f'<?xml version="1.0" encoding="{encoding}"?>\n<Response>'.encode())

    result = read_records(path)
    assert not any(i.fatal for i in result.issues)
    for record, row in zip(records, result.rows, strict=True):
        # The catalog fields in their standard elements, the rest and the extra columns in <vms:Ext>.
        assert row.fields == expected_fields(record)
        assert row.extra == record.get("extra", {})


def test_catalog_xml_structure(tmp_path: Path) -> None:
    path = tmp_path / "catalog.xml"
    write_catalog_xml(sample_records(), path, platform_id="37131100002000000001", sn=7)
    root = etree.parse(str(path)).getroot()
    assert root.tag == "Response"
    assert [c.tag for c in root] == ["CmdType", "SN", "DeviceID", "SumNum", "DeviceList"]
    assert root.findtext("CmdType") == "Catalog"
    assert root.findtext("SN") == "7"
    assert root.findtext("DeviceID") == "37131100002000000001"
    assert root.findtext("SumNum") == "3"
    device_list = root.find("DeviceList")
    assert device_list is not None and device_list.get("Num") == "3"
    item = device_list[0]
    core = [c.tag for c in item if c.tag not in {"Info", EXT_TAG}]
    info = item.find("Info")
    assert info is not None
    order = [f.xml for f in CATALOG_FIELDS]
    assert core == [x for x in order if BY_NAME[_name(x)].name not in INFO_FIELDS]
    assert [c.tag for c in info] == [x for x in order if _name(x) in INFO_FIELDS]
    assert item[-2].tag == "Info"
    assert item[-1].tag == EXT_TAG  # what the standard has no element for comes last, in its own namespace
    assert {"PTZType", "Resolution", "PointType", "MAC", "FunctionType", "RecordSaveDays"} <= {c.tag for c in info}
    assert item.findtext("Name") == sample_records()[0]["name"]
    assert device_list[1].find("Info") is None
    assert device_list[0].sourceline == 8
    assert [r.line for r in read_records(path).rows] == [i.sourceline for i in device_list]


def _name(xml: str | None) -> str:
    return next(f.name for f in CATALOG_FIELDS if f.xml == xml)


def test_catalog_xml_strips_invalid_characters(tmp_path: Path) -> None:
    path = tmp_path / "catalog.xml"
    write_catalog_xml([{"device_id": "37131100001320000001", "name": "北门\x00\x1b摄像机"}], path)
    assert read_records(path).rows[0].fields["name"] == "北门摄像机"


def test_large_export_streams(tmp_path: Path) -> None:
    records = (
        {"device_id": f"371311000013200{i:05d}", "name": f"点位{i}", "longitude": 118.0 + i / 1e5, "latitude": 35.0}
        for i in range(20_000)
    )
    path = tmp_path / "big.geojson"
    assert write_geojson(records, path) == 20_000
    result = read_records(path)
    assert len(result.accepted) == 20_000
