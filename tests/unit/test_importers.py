"""Reading ledgers and catalogs (vms.ingest.importers) from real files built in tmp_path and tests/data."""

from __future__ import annotations

import json
import time
import zipfile
from datetime import datetime
from pathlib import Path

import openpyxl
import pytest

from tests.conftest import TEST_DATA
from vms.catalog.columns import ColumnMap
from vms.ingest.importers import ReadError, ReadResult, detect_format, read_records


def issues_by_line(result: ReadResult) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for issue in result.issues:
        out.setdefault(issue.line, set()).add(issue.code)
    return out


def row_at(result: ReadResult, line: int):
    return next(r for r in result.rows if r.line == line)


# --------------------------------------------------------------------------------------------------------
# The real Hong Kong file
# --------------------------------------------------------------------------------------------------------


def test_hong_kong_traffic_cameras() -> None:
    path = TEST_DATA / "cameras" / "hk_traffic_cameras.csv"
    result = read_records(path)
    assert result.format == "csv"
    assert result.encoding == "utf-8-sig"
    assert result.total_rows == len(result.rows) == 210
    assert [i for i in result.issues if i.fatal] == []
    assert len(result.accepted) == 210
    assert result.columns == {
        "key": "local_id",
        "description": "name",
        "latitude": "latitude",
        "longitude": "longitude",
        "url": "snapshot_uri",
        "easting": "easting",  # projected coordinates (EPSG:2326): used only with a stated CRS, kept as extra
        "northing": "northing",
    }
    assert result.unmapped == ["region"]
    first = result.rows[0]
    assert first.line == 2
    assert first.fields == {
        "local_id": "H429F",
        "name": "Aberdeen Praya Road near Fish Market",
        "latitude": 22.2485255,
        "longitude": 114.1501576,
        "snapshot_uri": "http://tdcctv.data.one.gov.hk/H429F.JPG",
    }
    assert first.extra == {"region": "Hong Kong Island", "easting": "833514", "northing": "812196"}
    assert result.rows[-1].line == 211
    assert all(113.8 < r.fields["longitude"] < 114.5 and 22.1 < r.fields["latitude"] < 22.6 for r in result.rows)


# --------------------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------------------

LEDGER = (
    "设备编码,设备名称,经度(°),纬度(°),IP地址,端口,摄像机类型,安装时间,备注\n"
    "37131100001320000001,沂蒙路与通达路口东,118.2918,35.0512,192.168.1.10,8000,球机,2023/5/6,北向\n"
    "37131100001320000002,罗庄镇政府门口,118.2840,35.0031,192.168.1.11,,枪机,2023年5月7日,\n"
)


@pytest.mark.parametrize(
    ("encoding", "prefix", "label"),
    [("utf-8", b"", "utf-8"), ("utf-8", b"\xef\xbb\xbf", "utf-8-sig"), ("gbk", b"", "gb18030")],
)
def test_csv_encodings(tmp_path: Path, encoding: str, prefix: bytes, label: str) -> None:
    path = tmp_path / "ledger.csv"
    path.write_bytes(prefix + LEDGER.encode(encoding))
    result = read_records(path)
    assert result.encoding == label
    assert [r.line for r in result.rows] == [2, 3]
    assert [i for i in result.issues if i.fatal] == []
    assert result.rows[0].fields == {
        "device_id": "37131100001320000001",
        "name": "沂蒙路与通达路口东",
        "longitude": 118.2918,
        "latitude": 35.0512,
        "ip_address": "192.168.1.10",
        "port": 8000,
        "ptz_type": "1",
        "install_time": "2023-05-06",
    }
    assert result.rows[0].extra == {"备注": "北向"}
    assert result.rows[1].fields["ptz_type"] == "3"
    assert result.rows[1].fields["install_time"] == "2023-05-07"
    assert "port" not in result.rows[1].fields
    assert result.rows[1].extra == {}


def test_csv_explicit_encoding(tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    path.write_bytes(LEDGER.encode("gbk"))
    assert read_records(path, encoding="GB2312").rows[1].fields["name"] == "罗庄镇政府门口"


@pytest.mark.parametrize(("suffix", "delimiter"), [(".csv", ";"), (".tsv", "\t"), (".txt", "\t"), (".csv", "|")])
def test_csv_delimiters(tmp_path: Path, suffix: str, delimiter: str) -> None:
    path = tmp_path / f"ledger{suffix}"
    path.write_text(LEDGER.replace(",", delimiter), encoding="utf-8")
    result = read_records(path)
    assert len(result.accepted) == 2
    assert result.rows[0].fields["longitude"] == 118.2918


def test_csv_title_lines_blank_rows_and_multiline_cells(tmp_path: Path) -> None:
    text = (
        "罗庄区公共视频监控点位台账\n"
        "填报单位：罗庄分局,,,,\n"
        "\n"
        "设备编码,设备名称,经度,纬度,备注\n"
        "37131100001320000001,北门,118.29,35.05,\n"
        ",,,,\n"
        "\n"
        '37131100001320000002,"南门\n(临时)",118.28,35.04,"备注\n两行"\n'
        "37131100001320000003,西门,118.27,35.03,\n"
    )
    path = tmp_path / "ledger.csv"
    path.write_text(text, encoding="utf-8")
    result = read_records(path)
    assert [r.line for r in result.rows] == [5, 8, 11]  # the record on line 8 spans lines 8-10
    assert result.total_rows == 3
    assert result.rows[1].fields["name"] == "南门\n(临时)"
    assert result.rows[1].extra == {"备注": "备注\n两行"}


def test_csv_without_header_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    path.write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    with pytest.raises(ReadError, match="no header row"):
        read_records(path)


def test_csv_column_map_override(tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    path.write_text("点位,东经,北纬,备注\n北门,118.29,35.05,x\n", encoding="utf-8")
    cmap = ColumnMap({"点位": "name", "东经": "longitude", "北纬": "latitude", "备注": "-"})
    result = read_records(path, column_map=cmap)
    assert result.rows[0].fields == {"name": "北门", "longitude": 118.29, "latitude": 35.05}
    assert result.rows[0].extra == {}


# --------------------------------------------------------------------------------------------------------
# The broken ledger: every row-level failure, with its line
# --------------------------------------------------------------------------------------------------------


def broken_ledger_bytes() -> bytes:
    lines: list[bytes] = [
        "罗庄区视频监控点位台账（2024年）".encode(),  # 1 title
        "序号,设备编码,设备名称,经度,纬度,IP地址,端口,摄像机类型,录像保存天数,备注".encode(),  # 2 header
        "1,37131100001320000001,沂蒙路与通达路口东,118.2918,35.0512,192.168.1.10,8000,球机,90,".encode(),  # 3
        "2,3713110000132,短编码,118.2901,35.0501,,,,,".encode(),  # 4 ID-MALFORMED
        "3,3.71311E+19,科学计数法,118.3001,35.0601,,,,,".encode(),  # 5 ID-MALFORMED (precision lost)
        "4,37131100001320000001,重复编码,118.3101,35.0701,,,,,".encode(),  # 6 ID-DUPLICATE of 3
        "5,37131100001320000005,沂蒙路与通达路口东,118.2918,35.0512,,,,,".encode(),  # 7 DUPLICATE-NAME-POSITION
        "6,37131100001320000006,坐标乱码,abc,35.0,,,,,".encode(),  # 8 COORD-GARBAGE
        "7,37131100001320000007,坐标越界,500,95,,,,,".encode(),  # 9 COORD-GARBAGE (range)
        b"8,37131100001320000008," + "错误编码".encode("gbk") + b",118.3,35.1,,,,,",  # 10 ENCODING
        b"9,,,118.3201,35.1201,,,,,",  # 11 NO-IDENTITY
        "10,37131100001320000010,经纬度颠倒,35.0612,118.2950,,,,,".encode(),  # 12 COORD-SWAPPED
        "11,37131100001320000011,缺坐标,0,,,,,,".encode(),  # 13 COORD-MISSING
        "12,37131100001320000012,端口错误,118.2902,35.0402,192.168.1.12,abc,,,".encode(),  # 14 VALUE-DROPPED
        "13,37131100001320000013,天数带单位,118.2803,35.0303,,,枪机,30天,".encode(),  # 15 NUMBER-FORMAT
        b"",  # 16 blank
        '14,37131100001320000014,"多行\n名称",118.2704,35.0204,,,,,'.encode(),  # 17-18
        "15,37131100001320000015,多余单元格,118.2605,35.0105,,,,,备注,多出".encode(),  # 19 EXTRA-CELLS
        "16,37131100001320000016,最后一行,118.2506,35.0006,,,,,".encode(),  # 20
    ]
    return b"\n".join(lines) + b"\n"


# Only a row that names no camera or repeats another is rejected; every other defect lands flagged.
EXPECTED_REJECTED = {
    6: {"ID-DUPLICATE"},
    7: {"DUPLICATE-NAME-POSITION"},
    11: {"NO-IDENTITY"},
}
EXPECTED_NOTES = {
    4: {"ID-MALFORMED"},
    5: {"ID-MALFORMED"},
    8: {"COORD-GARBAGE"},
    9: {"COORD-GARBAGE"},
    10: {"ENCODING"},
    12: {"COORD-SWAPPED"},
    13: {"COORD-MISSING"},
    14: {"VALUE-DROPPED"},
    15: {"NUMBER-FORMAT"},
    19: {"EXTRA-CELLS"},
}


def test_broken_ledger(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(broken_ledger_bytes())
    result = read_records(path)
    assert result.encoding == "utf-8"
    by_line = issues_by_line(result)
    assert by_line == {**EXPECTED_REJECTED, **EXPECTED_NOTES}
    assert {r.line for r in result.rejected} == set(EXPECTED_REJECTED)
    assert {r.line for r in result.accepted} == {3, 4, 5, 8, 9, 10, 12, 13, 14, 15, 17, 19, 20}
    for issue in result.issues:
        assert issue.fatal == (issue.line in EXPECTED_REJECTED)
        assert f"line {issue.line}" in issue.reason

    reasons = {i.code: i.reason for i in result.issues}
    assert "line 3" in next(i.reason for i in result.issues if i.code == "ID-DUPLICATE")
    assert "line 3" in reasons["DUPLICATE-NAME-POSITION"]
    assert "wrong encoding" in reasons["ENCODING"]
    assert "lost" in next(i.reason for i in result.issues if i.line == 5)
    # What could not be read is kept as written, in extra under its header, and the camera lands without it.
    assert "device_id" not in row_at(result, 4).fields and row_at(result, 4).extra["设备编码"] == "3713110000132"
    assert row_at(result, 8).extra == {"序号": "6", "经度": "abc", "纬度": "35.0"}
    assert "longitude" not in row_at(result, 8).fields and "latitude" not in row_at(result, 8).fields
    assert row_at(result, 9).extra == {"序号": "7", "经度": "500", "纬度": "95"}
    assert row_at(result, 14).extra == {"序号": "12", "端口": "abc"}

    swapped = row_at(result, 12).fields
    assert (swapped["longitude"], swapped["latitude"]) == (118.2950, 35.0612)
    assert "longitude" not in row_at(result, 13).fields
    dropped = row_at(result, 14).fields
    assert "port" not in dropped and dropped["ip_address"] == "192.168.1.12"
    assert row_at(result, 15).fields["record_save_days"] == 30
    assert row_at(result, 15).fields["ptz_type"] == "3"
    assert row_at(result, 17).fields["name"] == "多行\n名称"
    assert row_at(result, 19).extra == {"序号": "15", "备注": "备注", "column 11": "多出"}
    assert row_at(result, 3).extra == {"序号": "1"}
    assert result.total_rows == 16


def test_mostly_gbk_file_with_one_utf8_line(tmp_path: Path) -> None:
    head = "设备编码,设备名称,经度,纬度\n37131100001320000001,北门,118.29,35.05\n".encode("gbk")
    bad = "37131100001320000002,南门,118.28,35.04\n".encode()
    tail = "37131100001320000003,西门,118.27,35.03\n37131100001320000004,东门,118.26,35.02\n".encode("gbk")
    path = tmp_path / "ledger.csv"
    path.write_bytes(head + bad + tail)
    result = read_records(path)
    assert result.encoding == "gb18030"
    assert [(i.line, i.code) for i in result.issues] == [(3, "ENCODING")]
    assert [r.fields["name"] for r in result.accepted] == ["北门", "南门", "西门", "东门"]


# --------------------------------------------------------------------------------------------------------
# XLSX
# --------------------------------------------------------------------------------------------------------


def test_xlsx(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    notes = wb.active
    notes.title = "填表说明"
    notes.append(["本表由各派出所填报"])
    sheet = wb.create_sheet("点位")
    sheet.append(["罗庄区视频监控点位一机一档"])  # row 1: title
    sheet.append(["国标编码", "点位名称", "经度", "纬度", "端口", "安装时间", "补光属性", "管理单位", "备注"])
    # openpyxl writes big ints as floats; other writers store every digit: patched in below.
    sheet.append([123456789, "北门", 118.29, 35.05, 8000, datetime(2023, 5, 6), "红外", "罗庄分局", 1])
    sheet.append([3.7131100001326e19, "南门", 118.28, 35.04, None, None, None, None, None])  # row 4
    sheet.append([])  # row 5: empty
    sheet.append(["37131100001320000003", "西门", "118.27", "35.03", 8000.0, "2023/6/1", "白光", None, "x"])
    path = tmp_path / "ledger.xlsx"
    wb.save(path)
    patch_zip_member(path, "xl/worksheets/sheet2.xml", b"<v>123456789</v>", b"<v>37131100001320000001</v>")

    result = read_records(path)
    assert result.format == "xlsx"
    assert [r.line for r in result.rows] == [3, 4, 6]
    first = result.rows[0]
    assert first.fields == {
        "device_id": "37131100001320000001",
        "name": "北门",
        "longitude": 118.29,
        "latitude": 35.05,
        "port": 8000,
        "install_time": "2023-05-06",
        "supply_light_type": "2",
        "management_unit": "罗庄分局",
    }
    assert first.extra == {"备注": "1"}
    assert [(i.line, i.code, i.fatal) for i in result.issues] == [(4, "ID-MALFORMED", False)]
    assert "row 4" in result.issues[0].reason
    assert "device_id" not in result.rows[1].fields and result.rows[1].extra == {"国标编码": "3.7131100001326e+19"}
    assert result.rows[2].fields["port"] == 8000
    assert result.rows[2].fields["install_time"] == "2023-06-01"
    assert result.rows[2].fields["supply_light_type"] == "3"


def patch_zip_member(path: Path, member: str, old: bytes, new: bytes) -> None:
    with zipfile.ZipFile(path) as zin:
        items = [(info, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info, data in items:
            if info.filename == member:
                assert old in data
                data = data.replace(old, new)
            zout.writestr(info, data)


def test_xlsx_without_any_header_sheet(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    wb.active.append(["nothing", "here"])
    path = tmp_path / "empty.xlsx"
    wb.save(path)
    with pytest.raises(ReadError, match="no header row"):
        read_records(path)


# --------------------------------------------------------------------------------------------------------
# JSON and GeoJSON
# --------------------------------------------------------------------------------------------------------


def test_json_list_and_wrapped(tmp_path: Path) -> None:
    records = [
        {"DeviceID": "37131100001320000001", "Name": "北门", "Longitude": 118.29, "Latitude": 35.05,
         "Info": {"PTZType": 1, "Resolution": "6"}, "owner_note": "x", "tags": ["a", "b"]},
        {"device_id": "37131100001320000002", "name": "南门", "lon": "abc", "lat": 35.0},
        "not an object",
    ]
    for i, payload in enumerate((records, {"code": 0, "data": {"list": records}}, {"DeviceList": records})):
        path = tmp_path / f"cams{i}.json"
        path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
        result = read_records(path)
        assert result.format == "json"
        assert [r.line for r in result.rows] == [1, 2, 3]
        assert result.rows[0].fields == {
            "device_id": "37131100001320000001",
            "name": "北门",
            "longitude": 118.29,
            "latitude": 35.05,
            "ptz_type": "1",
            "resolution": "6",
        }
        assert result.rows[0].extra == {"owner_note": "x", "tags": '["a", "b"]'}
        assert [(i.line, i.code) for i in result.issues] == [(2, "COORD-GARBAGE"), (3, "RECORD-INVALID")]
        assert result.issues[0].reason.startswith("record 2:")


def test_geojson(tmp_path: Path) -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [118.29, 35.05]},
             "properties": {"设备编码": "37131100001320000001", "名称": "北门", "region": "罗庄"}},
            {"type": "Feature", "geometry": None,
             "properties": {"name": "南门", "longitude": 118.28, "latitude": 35.04}},
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": []},
             "properties": {"name": "西门"}},
        ],
    }
    path = tmp_path / "cams.geojson"
    path.write_text(json.dumps(fc, ensure_ascii=False), encoding="utf-8")
    result = read_records(path)
    assert result.format == "geojson"
    assert result.rows[0].fields == {
        "device_id": "37131100001320000001", "name": "北门", "longitude": 118.29, "latitude": 35.05,
    }
    assert result.rows[0].extra == {"region": "罗庄"}
    assert result.rows[1].fields == {"name": "南门", "longitude": 118.28, "latitude": 35.04}
    assert issues_by_line(result) == {3: {"GEOMETRY-IGNORED", "COORD-MISSING"}}
    # A .json file holding a FeatureCollection is recognised too.
    other = tmp_path / "cams.json"
    other.write_bytes(path.read_bytes())
    assert read_records(other).format == "geojson"


# --------------------------------------------------------------------------------------------------------
# GB/T 28181 Catalog XML
# --------------------------------------------------------------------------------------------------------

CATALOG = """<?xml version="1.0" encoding="GB2312"?>
<Response>
<CmdType>Catalog</CmdType>
<SN>17430</SN>
<DeviceID>37131100002000000001</DeviceID>
<SumNum>{sum_num}</SumNum>
<DeviceList Num="{num}">
{items}
</DeviceList>
</Response>
"""

ITEM_REGION = """<Item>
<DeviceID>371311</DeviceID>
<Name>罗庄区</Name>
</Item>"""

ITEM_CAMERA = """<Item>
<DeviceID>37131100001320000001</DeviceID>
<Name>镕锋路口</Name>
<Manufacturer>Hikvision</Manufacturer>
<CivilCode>371311</CivilCode>
<Parental>0</Parental>
<ParentID>37131100002000000001</ParentID>
<Secrecy>0</Secrecy>
<IPAddress>192.168.1.10</IPAddress>
<Port>8000</Port>
<Status>ON</Status>
<Longitude>118.2918</Longitude>
<Latitude>35.0512</Latitude>
<Vendor_Note>自定义</Vendor_Note>
<Info>
<PTZType>1</PTZType>
<Resolution>5/6</Resolution>
<PointType>1</PointType>
<MAC>00-1A-2B-3C-4D-5E</MAC>
<FunctionType>01/03</FunctionType>
<RecordSaveDays>90</RecordSaveDays>
<DownloadSpeed>1/2/4</DownloadSpeed>
</Info>
</Item>"""

ITEM_GROUP = """<Item>
<DeviceID>37131100002150000001</DeviceID>
<Name>治安监控</Name>
</Item>"""


def test_catalog_xml_gb2312(tmp_path: Path) -> None:
    items = "\n".join((ITEM_REGION, ITEM_CAMERA, ITEM_GROUP))
    path = tmp_path / "catalog.xml"
    # "镕" is outside GB2312: real devices declare GB2312 and send GBK.
    path.write_bytes(CATALOG.format(sum_num=3, num=3, items=items).encode("gbk"))
    result = read_records(path)
    assert result.format == "xml"
    assert result.encoding == "gb18030"
    camera, group = result.rows
    assert camera.line == 12  # the <Item> element's line
    assert camera.fields == {
        "device_id": "37131100001320000001",
        "name": "镕锋路口",
        "manufacturer": "Hikvision",
        "civil_code": "371311",
        "parental": "0",
        "parent_id": "37131100002000000001",
        "secrecy": "0",
        "ip_address": "192.168.1.10",
        "port": 8000,
        "status": "ON",
        "longitude": 118.2918,
        "latitude": 35.0512,
        "ptz_type": "1",
        "resolution": "5/6",
        "point_type": "1",
        "mac": "00:1a:2b:3c:4d:5e",
        "function_type": "01/03",
        "record_save_days": 90,
    }
    assert camera.extra == {"Vendor_Note": "自定义", "DownloadSpeed": "1/2/4"}
    # Organisations and business groups are imported; the caller decides what they are.
    assert group.fields == {"device_id": "37131100002150000001", "name": "治安监控"}
    assert issues_by_line(result) == {8: {"CATALOG-REGION"}, 36: {"COORD-MISSING"}}
    assert not any(i.fatal for i in result.issues)


def test_catalog_split_into_several_responses(tmp_path: Path) -> None:
    part1 = CATALOG.format(sum_num=3, num=1, items=ITEM_CAMERA)
    part2 = CATALOG.format(sum_num=3, num=1, items=ITEM_GROUP).replace("<Response>", "<Notify>").replace(
        "</Response>", "</Notify>"
    )
    path = tmp_path / "catalog.xml"
    path.write_bytes((part1 + part2).encode("gbk"))
    result = read_records(path)
    assert [r.fields["device_id"] for r in result.rows] == ["37131100001320000001", "37131100002150000001"]
    assert result.rows[1].line == part1.count("\n") + 8
    assert [i.code for i in result.issues if i.code == "CATALOG-INCOMPLETE"] == ["CATALOG-INCOMPLETE"]


def test_catalog_utf8_body_declared_gb2312_and_sniffed_suffix(tmp_path: Path) -> None:
    path = tmp_path / "catalog.dat"
    path.write_bytes(CATALOG.format(sum_num=1, num=1, items=ITEM_CAMERA).encode("utf-8"))
    assert detect_format(path, path.read_bytes()[:64]) == "xml"
    result = read_records(path)
    assert result.encoding == "utf-8"
    assert result.rows[0].fields["name"] == "镕锋路口"


def test_xml_billion_laughs_is_not_expanded(tmp_path: Path) -> None:
    entities = "\n".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    doc = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE Response [
<!ENTITY lol0 "lol">
{entities}
]>
<Response>
<CmdType>Catalog</CmdType>
<DeviceList Num="1">
<Item><DeviceID>37131100001320000001</DeviceID><Name>&lol9;</Name></Item>
</DeviceList>
</Response>
"""
    path = tmp_path / "laughs.xml"
    path.write_text(doc, encoding="utf-8")
    started = time.perf_counter()
    try:
        result = read_records(path)
    except ReadError as exc:  # libxml2 >= 2.11 refuses the document outright (amplification limit)
        assert "amplification" in str(exc) or "entity" in str(exc).lower()
    else:
        assert result.rows[0].fields.get("name") is None
        assert "lol" not in json.dumps([(r.fields, r.extra) for r in result.rows])
    assert time.perf_counter() - started < 2


def test_xml_external_entities_are_not_loaded(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT", encoding="utf-8")
    doc = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE Response [
<!ENTITY xxe SYSTEM "{secret.as_uri()}">
<!ENTITY net SYSTEM "http://127.0.0.1:9/evil.dtd">
<!ENTITY local "expanded-internal">
]>
<Response>
<CmdType>Catalog</CmdType>
<SumNum>2</SumNum>
<DeviceList Num="2">
<Item><DeviceID>37131100001320000001</DeviceID><Name>a&xxe;</Name><Address>&net;</Address></Item>
<Item><DeviceID>37131100001320000002</DeviceID><Name>b&local;</Name></Item>
</DeviceList>
</Response>
"""
    path = tmp_path / "xxe.xml"
    path.write_text(doc, encoding="utf-8")
    result = read_records(path)
    assert [r.fields.get("name") for r in result.rows] == ["a", "b"]
    assert "address" not in result.rows[0].fields
    everything = json.dumps([(r.fields, r.extra) for r in result.rows], ensure_ascii=False)
    assert "TOP-SECRET" not in everything
    assert "expanded-internal" not in everything


def test_xml_without_device_list(tmp_path: Path) -> None:
    path = tmp_path / "keepalive.xml"
    path.write_text("<Notify><CmdType>Keepalive</CmdType></Notify>", encoding="utf-8")
    with pytest.raises(ReadError, match="DeviceList"):
        read_records(path)
    path.write_text("<Response><DeviceList>", encoding="utf-8")
    with pytest.raises(ReadError, match="not well-formed"):
        read_records(path)


def test_unknown_format_argument(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(LEDGER, encoding="utf-8")
    with pytest.raises(ReadError, match="unknown format"):
        read_records(path, fmt="parquet")
    assert read_records(path, fmt="CSV").format == "csv"
