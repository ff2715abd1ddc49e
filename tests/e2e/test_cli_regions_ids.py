"""`vms regions import` of a projected Shapefile, `vms import --crs` and `vms ids allocate` skipping cameras whose
region is unknown, through the real command in a subprocess (SQLite and PostgreSQL). Issue 6 points 9 and 14."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.component.test_region_shapefiles import _hk_camera_rows, hk_shapefile, write_projected_camera_csv
from tests.e2e.cli import vms_env, vms_runner


@pytest.fixture
def run(settings, tmp_path):
    return vms_runner(vms_env(settings, tmp_path, COLUMNS="200"))


def _one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:") and fragment in proc.stderr, proc.stderr


def test_projected_shapefile_cameras_by_easting_northing_and_ids(run, tmp_path: Path):
    shp_zip = hk_shapefile(tmp_path, 2326, "gbk", None, zipped=True)
    regions = json.loads(run("regions", "import", str(shp_zip), "--name-property", "NAME_ZH", "--json").stdout)
    assert (regions["created"], regions["with_geometry"], regions["generated_codes"]) == (18, 18, 18)
    listed = json.loads(run("regions", "list", "--json").stdout)
    assert {r["name"] for r in listed} >= {"南區", "黃大仙區"} and not any(r["code"] == r["name"] for r in listed)

    cams = write_projected_camera_csv(tmp_path / "hk_cameras_grid.csv", _hk_camera_rows())
    imported = json.loads(run("import", str(cams), "--crs", "EPSG:2326", "--json").stdout)
    assert (imported["accepted"], imported["rejected"], imported["cameras_created"]) == (210, 0, 210)
    shown = json.loads(run("cameras", "show", "H429F", "--json").stdout)
    assert shown["region_name"] == "南區"
    assert (
        abs(shown["record"]["longitude"] - 114.1501576) < 1e-5 and abs(shown["record"]["latitude"] - 22.2485255) < 1e-5
    )

    # No civil code and no region with a code: nothing is allocated, every camera is listed.
    text = run("ids", "allocate").stdout
    assert "allocated 0 IDs" in text and "skipped 210 cameras" in text and "--civil-code" in text
    assert "H429F" in text and "... 190 more" in text
    data = json.loads(run("ids", "allocate", "--json").stdout)
    assert data["allocated"] == [] and len(data["skipped"]) == 210
    assert {c["local_id"] for c in data["skipped"]} == {r["key"] for r in _hk_camera_rows()}

    _one_line_error(run("ids", "allocate", "--civil-code", "12", code=2), "6- or 8-digit")
    given = json.loads(run("ids", "allocate", "--civil-code", "810000", "--json").stdout)
    assert len(given["allocated"]) == 210 and given["skipped"] == []
    assert all(a["device_id"].startswith("81000000") for a in given["allocated"])


def test_bad_coordinate_systems_exit_2_with_one_line(run, tmp_path: Path):
    cams = write_projected_camera_csv(tmp_path / "grid.csv", _hk_camera_rows()[:5])
    _one_line_error(run("import", str(cams), "--crs", "EPSG:99999999", code=2), "unknown coordinate system")
    shp = hk_shapefile(tmp_path, 2326, "utf-8", "UTF-8", zipped=False)
    shp.with_suffix(".prj").unlink()
    _one_line_error(run("regions", "import", str(shp), code=2), "--crs")
    stated = json.loads(run("regions", "import", str(shp), "--crs", "EPSG:2326", "--json").stdout)
    assert stated["created"] == 18
