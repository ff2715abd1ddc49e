"""Hostile and broken files (issue 6, point 11): `vms import` answers each with one line and exit 2, or lands the
good rows with the bad value cleaned and reported; never a traceback. Run through the real command in a
subprocess and through the service, on SQLite and PostgreSQL alike (a NUL byte used to abort PostgreSQL only).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import openpyxl
import pytest

from tests.e2e.cli import run_vms, vms_env
from vms.ingest.importers import ReadError
from vms.store import repository as repo

HEADER = "设备编码,设备名称,经度,纬度,端口\n"
GOOD = "37131100001320000001,好点位,118.28,35.05,80\n"


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]
    error: str | None = None  # expected in the one-line error; None: the import succeeds
    cameras: int = 0  # cameras landed when it succeeds
    codes: frozenset[str] = field(default_factory=frozenset)  # issue codes it must report
    names: frozenset[str] = field(default_factory=frozenset)  # camera names that must land exactly so


def csv_file(name: str, body: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(HEADER.encode() + GOOD.encode() + body)
        return path

    return build


def json_file(name: str, text: str | bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    return build


def workbook_bytes() -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["设备编码", "设备名称", "经度", "纬度"])
    ws.append(["37131100001320000001", "好点位", 118.28, 35.05])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def rezip(data: bytes, change: Callable[[str, bytes], bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, change(info.filename, zin.read(info.filename)))
    return out.getvalue()


def xlsx_file(name: str, make: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(make(workbook_bytes()))
        return path

    return build


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def corrupt_deflate(data: bytes) -> bytes:
    raw = bytearray(data)
    at = raw.find(b"xl/worksheets/sheet1.xml") + len("xl/worksheets/sheet1.xml")
    for i in range(at + 10, at + 60):  # inside the member's compressed bytes; the directory stays intact
        raw[i] ^= 0x55
    return bytes(raw)


def in_sheet(extra: bytes) -> Callable[[bytes], bytes]:
    def make(data: bytes) -> bytes:
        return rezip(data, lambda n, b: b.replace(b"</sheetData>", extra + b"</sheetData>") if "sheet1" in n else b)

    return make


CASES = [
    Case(
        "stray-cr",
        csv_file("cr.csv", "37131100001320000002,坏\r点位,118.29,35.06,80\n".encode()),
        cameras=2,
        codes=frozenset({"CONTROL-CHARACTERS"}),
        names=frozenset({"坏 点位"}),
    ),
    Case(
        "field-over-limit",
        csv_file("long.csv", b"37131100001320000002," + b"x" * 200_000 + b",1,2,80\n"),
        "field limit",
    ),
    Case(
        "nul-in-cell",
        csv_file("nul.csv", "37131100001320000002,空\x00字符,118.29,35.06,80\n".encode()),
        cameras=2,
        codes=frozenset({"CONTROL-CHARACTERS"}),
        names=frozenset({"空字符"}),
    ),
    Case(
        "thousands-of-digits",
        csv_file("digits.csv", b"37131100001320000002,long," + b"1" * 5000 + b",35.06," + b"9" * 5000 + b"\n"),
        cameras=2,
        codes=frozenset({"COORD-GARBAGE", "VALUE-DROPPED"}),
    ),
    Case(
        "exponent-id",
        csv_file("exp.csv", "1e999999999,指数编码,118.3,35.1,80\n".encode()),
        cameras=2,
        codes=frozenset({"ID-MALFORMED"}),
    ),
    Case(
        "markup-and-bad-bytes",
        csv_file(
            "markup.csv",
            b"37131100001320000002,[/red][bold],[/x],35.1,80\n37131100001320000003,\xff\xfe\xfa,1,2,3\n",
        ),
        cameras=3,
        codes=frozenset({"COORD-GARBAGE", "ENCODING"}),
    ),
    Case("xlsx-truncated", xlsx_file("trunc.xlsx", truncated), "not a readable .xlsx"),
    Case("xlsx-corrupt", xlsx_file("corrupt.xlsx", corrupt_deflate), ".xlsx"),
    Case("xlsx-row-bomb", xlsx_file("rows.xlsx", in_sheet(b'<row r="900000000"><c r="A900000000"/></row>')), "beyond"),
    Case(
        "xlsx-zip-bomb",
        xlsx_file(
            "bomb.xlsx",
            in_sheet(b'<row r="3"><c r="A3" t="inlineStr"><is><t>' + b" " * (40 << 20) + b"</t></is></c></row>"),
        ),
        "zip bomb",
    ),
    Case("json-deep", json_file("deep.json", "[" * 100_000 + "]" * 100_000), "nested too deeply"),
    Case(
        "json-big-int",
        json_file("bigint.json", '[{"DeviceID": "37131100001320000001", "Name": "a", "Port": ' + "1" * 5000 + "}]"),
        cameras=1,
        codes=frozenset({"VALUE-DROPPED"}),
    ),
    Case(
        "json-nul-surrogate",
        json_file(
            "nul.json",
            '[{"DeviceID": "37131100001320000001", "Name": "a\\u0000b"},'
            ' {"DeviceID": "37131100001320000002", "Name": "\\ud800x", "\\u0000key": "v"}]',
        ),
        cameras=2,
        codes=frozenset({"CONTROL-CHARACTERS"}),
        names=frozenset({"ab", "\ufffdx"}),
    ),
    Case("json-not-text", json_file("bytes.json", b'[{"Name": "\x81\x30\xff\xff"}]'), "neither UTF-8 nor GB18030"),
]


@pytest.fixture
def vms(settings, tmp_path):
    return partial(run_vms, vms_env(settings, tmp_path))


def names_landed(inventory) -> set[str]:
    return {r["name"] for r in inventory.list_cameras(repo.CameraFilter(), limit=None)[1]}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file_through_the_command(case: Case, vms, inventory, tmp_path):
    path = case.build(tmp_path)
    proc = vms("import", str(path), "--json")
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    if case.error:
        assert proc.returncode == 2, proc.stdout[-500:] + proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and case.error in lines[0], proc.stderr
        assert inventory.list_cameras(repo.CameraFilter())[0] == 0  # nothing changed
        return
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["cameras_created"] == case.cameras
    assert case.codes <= {i["code"] for i in report["issues"]}
    assert case.names <= names_landed(inventory)
    again = vms("import", str(path))  # and again, as a person reads it (cell text is never markup): no change
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert "cameras: 0 new, 0 updated" in again.stdout


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file_through_the_service(case: Case, inventory, tmp_path):
    path = case.build(tmp_path)
    if case.error:
        with pytest.raises(ReadError, match=case.error.replace(".", r"\.")):
            inventory.import_file(path)
        assert inventory.list_cameras(repo.CameraFilter())[0] == 0
        return
    rep = inventory.import_file(path)
    assert rep.result.cameras_created == case.cameras
    assert case.codes <= {i.code for i in rep.issues}
    assert case.names <= names_landed(inventory)
    for row in inventory.list_cameras(repo.CameraFilter(), limit=None)[1]:
        assert "\x00" not in json.dumps(row, default=str, ensure_ascii=False)
