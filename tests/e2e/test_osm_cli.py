"""OpenStreetMap imports through the real `vms` command, in a subprocess, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

from tests.e2e.cli import run_vms, vms_env

OSM = Path(__file__).resolve().parents[1] / "data" / "osm"


@pytest.fixture
def vms(settings, tmp_path):
    return partial(run_vms, vms_env(settings, tmp_path))


def test_import_osm_files_and_show_a_camera(vms, tmp_path: Path) -> None:
    counts = {}
    for name in ("luozhuang.osm", "luozhuang_overpass.json", "luozhuang_overpass_turbo.geojson"):
        proc = vms("import", str(OSM / name), "--json")
        assert proc.returncode == 0, proc.stderr
        rep = json.loads(proc.stdout)
        assert rep["format"] == "osm" and rep["rejected"] == 0
        assert rep["issues"][0]["code"] == "OSM-ID" and rep["issues"][0]["line"] == 0
        counts[name] = rep["cameras_created"]
    assert counts == {"luozhuang.osm": 4, "luozhuang_overpass.json": 8, "luozhuang_overpass_turbo.geojson": 4}

    text = vms("import", str(OSM / "luozhuang.osm"))
    assert text.returncode == 0 and "OSM-NOT-CAMERA 1" in text.stdout and "OSM-OTHER-ELEMENTS 1" in text.stdout

    shown = json.loads(vms("cameras", "show", "osm:node/11482736604", "--json").stdout)
    assert shown["record"]["name"] == "双月湖公园南门"
    assert (shown["record"]["ptz_type"], shown["record"]["direction_type"]) == ("1", "7")  # panning, 225 degrees
    assert shown["extra"]["camera:direction"] == "225"

    # A catalog export carries the department numbers and the tags.
    out = tmp_path / "osm.xml"
    assert vms("export", str(out)).returncode == 0
    exported = out.read_text(encoding="utf-8")
    assert exported.count("<Item>") == 16
    assert "<vms:local_id>osm:node/11482736604</vms:local_id>" in exported
    assert '<vms:Extra key="camera:direction">225</vms:Extra>' in exported


def test_hostile_osm_file_gives_one_line_and_exit_2(vms, tmp_path: Path) -> None:
    evil = tmp_path / "evil.osm"
    evil.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE osm [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
        '<osm version="0.6"><node id="1" lat="35" lon="118.28"><tag k="man_made" v="surveillance"/>'
        '<tag k="name" v="&x;"/></node></osm>\n',
        encoding="utf-8",
    )
    proc = vms("import", str(evil))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error:")
    assert "entit" in proc.stderr and proc.stdout == ""

    pbf = tmp_path / "shandong-latest.osm.pbf"
    pbf.write_bytes(b"\x00\x00\x00\x0d\n\tOSMHeader")
    proc = vms("import", str(pbf))
    assert proc.returncode == 2 and "osmium" in proc.stderr
