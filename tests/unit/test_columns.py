"""Header mapping and value parsing (vms.catalog.columns)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest

from vms.catalog.columns import (
    IGNORE,
    ColumnMap,
    ColumnMapError,
    ValueNote,
    default_aliases,
    load_column_map,
    normalize_header,
    parse_value,
)
from vms.catalog.fields import FIELDS

# --- headers ---


@pytest.mark.parametrize(
    ("header", "field"),
    [
        *[(h, "device_id") for h in ("设备编码", "国标编码", "国标ID", "设备国标编码", "摄像机编码", "DeviceID",
                                      "device_id", "gb_id", "gbid", "GBID", "Device-ID", "device id")],
        *[(h, "name") for h in ("设备名称", "点位名称", "摄像机名称", "名称", "Name", "description", "camera_name")],
        *[(h, "longitude") for h in ("经度", "Longitude", "lon", "lng", "x", "经度(°)", "经度（度）",
                                      "Longitude (WGS84)", "LONGITUDE [deg]")],
        *[(h, "latitude") for h in ("纬度", "Latitude", "lat", "y", "纬度(°)", "Latitude (WGS-84)")],
        *[(h, "civil_code") for h in ("行政区划", "行政区域", "行政区划代码", "CivilCode")],
        *[(h, "ip_address") for h in ("IP地址", "IP", "IPAddress", "ＩＰ地址", "ip_address")],
        ("端口", "port"), ("Port", "port"),
        *[(h, "manufacturer") for h in ("厂商", "设备厂商", "品牌", "Manufacturer")],
        ("型号", "model"), ("设备型号", "model"), ("Model", "model"),
        ("安装地址", "address"), ("地址", "address"), ("Address", "address"),
        ("摄像机类型", "ptz_type"), ("PTZType", "ptz_type"),
        ("补光属性", "supply_light_type"), ("SupplyLightType", "supply_light_type"),
        ("监视方位", "direction_type"), ("DirectionType", "direction_type"),
        ("位置类型", "position_type"), ("PositionType", "position_type"),
        ("用途", "use_type"), ("UseType", "use_type"),
        ("分辨率", "resolution"), ("Resolution", "resolution"),
        ("点位类型", "point_type"), ("PointType", "point_type"),
        ("MAC", "mac"), ("MAC地址", "mac"),
        ("序列号", "serial_number"), ("SerialNumber", "serial_number"), ("serial", "serial_number"),
        ("安装时间", "install_time"), ("InstallTime", "install_time"),
        ("管理单位", "management_unit"), ("ManagementUnit", "management_unit"),
        ("联系方式", "contact_info"), ("联系电话", "contact_info"), ("ContactInfo", "contact_info"),
        ("录像保存天数", "record_save_days"), ("存储天数", "record_save_days"), ("RecordSaveDays", "record_save_days"),
        ("编号", "local_id"), ("点位编号", "local_id"), ("key", "local_id"), ("local_id", "local_id"),
        ("url", "snapshot_uri"), ("snapshot", "snapshot_uri"), ("抓图地址", "snapshot_uri"),
        ("snapshot_uri", "snapshot_uri"),
        ("视频流地址", "stream_uri"), ("rtsp", "stream_uri"), ("stream_uri", "stream_uri"),
        ("设备编码【必填】", "device_id"), ("* 设备名称", "name"), ("经度：", "longitude"),
    ],
)
def test_default_header_spellings(header: str, field: str) -> None:
    assert ColumnMap().field_for(header) == field


def test_every_field_maps_by_name_xml_and_label() -> None:
    cmap = ColumnMap()
    for f in FIELDS:
        assert cmap.field_for(f.name) == f.name
        if f.xml:
            assert cmap.field_for(f.xml) == f.name
        assert cmap.field_for(f.label_zh) == f.name


def test_aliases_have_no_conflicts() -> None:
    table = default_aliases()  # raises on an alias claimed by two fields
    assert table[normalize_header("国标ID")] == ("device_id", 1)
    assert table[normalize_header("DeviceID")] == ("device_id", 0)


def test_normalize_header() -> None:
    assert normalize_header("Longitude (WGS84)") == "longitude"
    assert normalize_header("经度(°)") == normalize_header("经度") == "经度"
    assert normalize_header("ＤｅｖｉｃｅＩＤ") == "deviceid"
    assert normalize_header("device_id") == normalize_header("Device-ID") == normalize_header("device id")
    assert normalize_header("(备注)") == "备注"


def test_resolve_and_unmapped() -> None:
    headers = ["key", "region", "description", "easting", "northing", "latitude", "longitude", "url"]
    mapping, unmapped = ColumnMap().resolve(headers)
    assert mapping == {
        0: "local_id",
        2: "name",
        3: "easting",  # pseudo-fields: converted with a stated CRS, kept as extra columns
        4: "northing",
        5: "latitude",
        6: "longitude",
        7: "snapshot_uri",
    }
    assert unmapped == ["region"]


def test_canonical_header_beats_alias_for_the_same_field() -> None:
    plan = ColumnMap().plan(["description", "name", "备注", "备注"])
    assert plan.fields == {1: "name"}
    assert plan.shadowed == {0: "name"}
    assert plan.extra == {0: "description", 2: "备注", 3: "备注 (2)"}


def test_overrides_win_and_can_ignore() -> None:
    cmap = ColumnMap({"编号": "device_id", "region": "-", "备注": "", "x": "address"})
    mapping, unmapped = cmap.resolve(["编号", "region", "备注", "X", "名称"])
    assert mapping == {0: "device_id", 3: "address", 4: "name"}
    assert unmapped == []
    assert cmap.field_for("region") == IGNORE


def test_unknown_override_target_is_a_clear_error() -> None:
    with pytest.raises(ColumnMapError, match=r"'经度' is not a known field \(did you mean 'longitude'\?\)"):
        ColumnMap({"lon_wgs": "经度"})
    with pytest.raises(ColumnMapError, match="not a known field"):
        ColumnMap({"foo": "bar"})


def test_load_column_map_json_and_toml(tmp_path: Path) -> None:
    js = tmp_path / "map.json"
    js.write_text(json.dumps({"摄像头国标": "device_id", "备注": "-"}, ensure_ascii=False), encoding="utf-8")
    cmap = load_column_map(js)
    assert cmap.field_for("摄像头国标") == "device_id"
    assert cmap.field_for("备注") == IGNORE

    toml = tmp_path / "map.toml"
    toml.write_text('[columns]\n"点位" = "name"\n"经度坐标(GCJ)" = "longitude"\n', encoding="utf-8")
    cmap = load_column_map(toml)
    assert cmap.field_for("点位") == "name"
    assert cmap.field_for("经度坐标") == "longitude"

    bad = tmp_path / "bad.toml"
    bad.write_text('"点位" = "place"\n', encoding="utf-8")
    with pytest.raises(ColumnMapError, match=r"bad\.toml.*'place' is not a known field"):
        load_column_map(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ColumnMapError, match="not valid JSON or TOML"):
        load_column_map(broken)
    wrong_type = tmp_path / "wrong.json"
    wrong_type.write_text('{"a": 1}', encoding="utf-8")
    with pytest.raises(ColumnMapError, match="must map to a field name"):
        load_column_map(wrong_type)


# --- values ---


@pytest.mark.parametrize("raw", ["", "  ", "-", "/", "无", "null", "NULL", "none", "N/A", "n/a"])
def test_placeholders_are_empty(raw: str) -> None:
    for field in ("name", "port", "longitude", "ptz_type", "device_id", "mac", "ip_address", "install_time"):
        assert parse_value(field, raw) == (None, ())


def test_zero_means_not_reported() -> None:
    assert parse_value("longitude", "0")[0] is None
    assert parse_value("latitude", 0.0)[0] is None
    assert parse_value("port", "0")[0] is None
    assert parse_value("ptz_type", "0")[0] is None
    assert parse_value("status", "0")[0] is None
    # ...except where 0 is a code of the value set.
    assert parse_value("secrecy", "0")[0] == "0"
    assert parse_value("parental", 0)[0] == "0"
    assert parse_value("record_save_days", "0")[0] == 0


def codes(notes: tuple[ValueNote, ...]) -> list[str]:
    return [n.code for n in notes]


@pytest.mark.parametrize(
    ("field", "raw", "value", "note"),
    [
        ("port", "8000", 8000, None),
        ("port", 8000.0, 8000, None),
        ("port", "1,234", 1234, "NUMBER-FORMAT"),
        ("port", "1 234", 1234, "NUMBER-FORMAT"),
        ("port", "１２３", 123, "NUMBER-FORMAT"),
        ("record_save_days", "90天", 90, "NUMBER-FORMAT"),
        ("record_save_days", "90 days", 90, "NUMBER-FORMAT"),
        ("port", "abc", None, "VALUE-DROPPED"),
        ("port", "80.5", None, "VALUE-DROPPED"),
        ("max_view_distance", "120米", 120.0, "NUMBER-FORMAT"),
        ("max_view_distance", "far", None, "VALUE-DROPPED"),
        ("horizontal_field_angle", "1,234.5", 1234.5, "NUMBER-FORMAT"),
        ("longitude", "118.2918", 118.2918, None),
        ("longitude", "118,2918", 118.2918, "NUMBER-FORMAT"),  # cannot be a thousands separator
        ("longitude", "１１８．５", 118.5, "NUMBER-FORMAT"),
        ("longitude", "118.5°", 118.5, "NUMBER-FORMAT"),
        ("latitude", "35°03'36\"N", 35.06, "NUMBER-FORMAT"),
        ("latitude", "35°03'36\"S", -35.06, "NUMBER-FORMAT"),
        ("longitude", "东经118度17分30.5秒", 118 + 17 / 60 + 30.5 / 3600, "NUMBER-FORMAT"),
        ("longitude", "nan", None, None),
        ("longitude", "abc", None, "COORD-GARBAGE"),
        ("longitude", "118.5.3", None, "COORD-GARBAGE"),
    ],
)
def test_numbers(field: str, raw: object, value: object, note: str | None) -> None:
    got, notes = parse_value(field, raw)
    assert got == pytest.approx(value) if isinstance(value, float) else got == value
    assert codes(notes) == ([note] if note else [])


def test_ambiguous_comma_is_thousands() -> None:
    assert parse_value("horizontal_field_angle", "1,234")[0] == 1234.0
    assert parse_value("longitude", "118°17'30.5\"E")[0] == pytest.approx(118.291805, abs=1e-6)


def test_coordinate_garbage_is_fatal_other_numbers_are_not() -> None:
    assert parse_value("latitude", "north")[1][0].fatal
    assert not parse_value("port", "north")[1][0].fatal


@pytest.mark.parametrize(
    ("field", "raw", "code"),
    [
        ("ptz_type", "1", "1"), ("ptz_type", "1.0", "1"), ("ptz_type", 3.0, "3"), ("ptz_type", 4, "4"),
        ("ptz_type", "球机", "1"), ("ptz_type", "半球", "2"), ("ptz_type", "固定枪机", "3"), ("ptz_type", "枪机", "3"),
        ("ptz_type", "遥控枪机", "4"), ("ptz_type", "1-球机", "1"), ("ptz_type", "3：固定枪机", "3"),
        ("room_type", "室外", "1"), ("room_type", "室内", "2"),
        ("supply_light_type", "无补光", "1"), ("supply_light_type", "红外", "2"), ("supply_light_type", "白光", "3"),
        ("supply_light_type", "激光", "4"),
        ("direction_type", "东", "1"), ("direction_type", "西", "2"), ("direction_type", "南", "3"),
        ("direction_type", "北", "4"), ("direction_type", "东南", "5"), ("direction_type", "东北", "6"),
        ("direction_type", "西南", "7"), ("direction_type", "西北", "8"),
        ("use_type", "治安", "1"), ("use_type", "交通", "2"), ("use_type", "重点", "3"),
        ("resolution", "QCIF", "1"), ("resolution", "CIF", "2"), ("resolution", "4CIF", "3"), ("resolution", "D1", "4"),
        ("resolution", "720P", "5"), ("resolution", "1080p", "6"), ("resolution", "720P/1080P", "5/6"),
        ("resolution", "5/6", "5/6"),
        ("point_type", "一类", "1"), ("point_type", "二类", "2"), ("point_type", "三类点位", "3"),
        ("status", "在线", "ON"), ("status", "ON", "ON"), ("status", "on", "ON"), ("status", "离线", "OFF"),
        ("status", "OFF", "OFF"),
        ("function_type", "人脸", "01"), ("function_type", "人员", "02"), ("function_type", "人体", "02"),
        ("function_type", "机动车", "03"), ("function_type", "车辆", "03"), ("function_type", "非机动车", "04"),
        ("function_type", "物品", "05"), ("function_type", "1", "01"), ("function_type", "01/03", "01/03"),
        ("function_type", "人脸/机动车", "01/03"), ("function_type", "人脸、车辆", "01/03"),
        ("function_type", "人脸,非机动车", "01/04"), ("function_type", "1、3", "01/03"),
        ("secrecy", "涉密", "1"), ("secrecy", "不涉密", "0"), ("parental", "是", "1"), ("parental", "否", "0"),
    ],
)
def test_enum_codes_and_labels(field: str, raw: object, code: str) -> None:
    assert parse_value(field, raw) == (code, ())


def test_unknown_enum_value_is_kept_as_text() -> None:
    assert parse_value("ptz_type", " 鱼眼 ") == ("鱼眼", ())
    assert parse_value("ptz_type", "12") == ("12", ())
    assert parse_value("function_type", "人脸/飞碟") == ("人脸/飞碟", ())


def test_mac() -> None:
    assert parse_value("mac", "00-1A-2B-3C-4D-5E") == ("00:1a:2b:3c:4d:5e", ())
    assert parse_value("mac", "001a2b3c4d5e") == ("00:1a:2b:3c:4d:5e", ())
    assert parse_value("mac", "not-a-mac") == ("not-a-mac", ())


def test_device_id() -> None:
    assert parse_value("device_id", "37131100001320000123") == ("37131100001320000123", ())
    value, notes = parse_value("device_id", " 3713 1100 0013 2000 0123 ")
    assert value == "37131100001320000123" and codes(notes) == ["NUMBER-FORMAT"]
    assert parse_value("device_id", "３７１３１１００００１３２００００１２３")[0] == "37131100001320000123"
    assert parse_value("device_id", "'37131100001320000123")[0] == "37131100001320000123"
    # An Excel integer cell holds every digit.
    assert parse_value("device_id", 37131100001320000123) == ("37131100001320000123", ())
    # A float in scientific notation lost the last digits: fatal.
    for lost in (3.7131100001326e19, "3.7131100001326E+19", "3.71311E+19"):
        value, notes = parse_value("device_id", lost)
        assert value is None
        assert codes(notes) == ["ID-MALFORMED"] and notes[0].fatal and "lost" in notes[0].message
    # ... unless all 20 digits are still written out.
    assert parse_value("device_id", "3.7131100001320000123E+19")[0] == "37131100001320000123"
    value, notes = parse_value("device_id", "3713110000132000012")
    assert value is None and notes[0].fatal and notes[0].code == "ID-MALFORMED"
    assert parse_value("device_id", "3713110000132000012X")[1][0].code == "ID-MALFORMED"


def test_ip_address() -> None:
    assert parse_value("ip_address", "192.168.1.10") == ("192.168.1.10", ())
    assert parse_value("ip_address", "fe80::1") == ("fe80::1", ())
    assert parse_value("ip_address", "cam-01.example.org") == ("cam-01.example.org", ())
    assert parse_value("ip_address", "192.168.001.010")[0] == "192.168.1.10"
    assert parse_value("ip_address", "１９２．１６８．１．１０")[0] == "192.168.1.10"
    for bad in ("192.168.1.300", "not an ip", "1.2.3"):
        value, notes = parse_value("ip_address", bad)
        assert value is None and codes(notes) == ["VALUE-DROPPED"] and not notes[0].fatal


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("2023/5/6", "2023-05-06"),
        ("2023-05-06", "2023-05-06"),
        ("2023.5.6", "2023-05-06"),
        ("2023年5月6日", "2023-05-06"),
        ("20230506", "2023-05-06"),
        ("2023/5/6 8:30", "2023-05-06T08:30:00"),
        ("2023-05-06T08:30:15", "2023-05-06T08:30:15"),
        (datetime(2023, 5, 6), "2023-05-06"),
        (datetime(2023, 5, 6, 8, 30), "2023-05-06T08:30:00"),
        (date(2023, 5, 6), "2023-05-06"),
        (45052, "2023-05-06"),  # Excel serial day number of a cell that lost its date format
        ("2023年5月", "2023-05"),
        ("去年", "去年"),  # unrecognised: kept for the quality rules
        ("2023/13/45", "2023/13/45"),
    ],
)
def test_install_time(raw: object, iso: str) -> None:
    assert parse_value("install_time", raw) == (iso, ())


def test_text_and_json() -> None:
    assert parse_value("name", "  北门口  ") == ("北门口", ())
    assert parse_value("civil_code", 371311) == ("371311", ())
    assert parse_value("civil_code", 371311.0) == ("371311", ())
    assert parse_value("services", '{"device": "http://x/onvif"}') == ({"device": "http://x/onvif"}, ())
    assert parse_value("media_profiles", [{"token": "p1"}]) == ([{"token": "p1"}], ())
    assert parse_value("services", "not json") == ("not json", ())
