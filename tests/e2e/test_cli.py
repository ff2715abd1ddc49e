"""The operator's path through the real `vms` command, in a subprocess, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.component.test_import_files import independent_district_counts, write_ledger
from tests.e2e.cli import vms_env, vms_runner


@pytest.fixture
def run(settings, tmp_path):
    return vms_runner(vms_env(settings, tmp_path))


def test_hk_counts_quality_and_show(run, test_data):
    run("db", "upgrade")
    run("regions", "import", str(test_data / "cameras/hk_18_districts.geojson"))
    imported = json.loads(run("import", str(test_data / "cameras/hk_traffic_cameras.csv"), "--json").stdout)
    assert (imported["accepted"], imported["rejected"], imported["cameras_created"]) == (210, 0, 210)

    stats = json.loads(run("stats", "--by", "region", "--json").stdout)
    assert {r["name"]: r["count"] for r in stats} == independent_district_counts(test_data)

    quality = json.loads(run("quality", "--json", "--cameras").stdout)
    outside = [r for r in quality["by_rule"] if r["code"] == "COORD-OUTSIDE-REGIONS"]
    assert outside and outside[0]["cameras"] == independent_district_counts(test_data)[None]
    assert quality["total"] == 210

    listing = json.loads(run("cameras", "list", "--search", "Aberdeen Praya", "--json").stdout)
    assert listing["total"] == 1
    shown = json.loads(run("cameras", "show", str(listing["items"][0]["id"]), "--json").stdout)
    assert shown["record"]["local_id"] == "H429F"
    assert shown["region_name"] == "南區"
    assert shown["provenance"]["name"]["source"] == "ledger:hk_traffic_cameras"

    again = json.loads(run("import", str(test_data / "cameras/hk_traffic_cameras.csv"), "--json").stdout)
    assert again["changed"] is False


def test_broken_ledger_report_dry_run_and_export(run, tmp_path):
    ledger = tmp_path / "台账.csv"
    expected = write_ledger(ledger, "gbk")
    dry = json.loads(run("import", str(ledger), "--dry-run", "--json").stdout)
    assert dry["dry_run"] and dry["cameras_created"] == 4
    assert json.loads(run("cameras", "list", "--json").stdout)["total"] == 0

    proc = run("import", str(ledger))
    for line, code in expected.items():
        assert code in proc.stdout and str(line) in proc.stdout
    strict = run("import", str(ledger), "--strict", code=None)
    assert strict.returncode == 1  # rows were rejected; nothing changed
    assert "0 new, 0 updated" in strict.stdout

    out = tmp_path / "export.xml"
    run("export", str(out))
    assert out.read_bytes().count(b"<Item>") == 4

    explain = json.loads(run("ids", "explain", "37131100001326000123", "--json").stdout)
    assert explain["type_code"] == "132" or "132" in json.dumps(explain)
    bad = run("ids", "explain", "123", code=None)
    assert bad.returncode == 2 and "20" in bad.stderr

    audit = json.loads(run("audit", "--json").stdout)
    assert {"import", "export"} <= {a["action"] for a in audit}


def test_missing_file_is_a_clear_error(run, tmp_path: Path):
    proc = run("import", str(tmp_path / "nope.csv"), code=None)
    assert proc.returncode == 2
    assert "nope.csv" in proc.stderr
    assert "Traceback" not in proc.stderr
