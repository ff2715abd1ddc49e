"""`vms coverage` through the real command in a subprocess, on the Hong Kong data (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

from tests.component.test_import_files import independent_district_counts
from tests.e2e.cli import vms_env, vms_runner


def test_coverage_command_counts_area_places_and_bad_input(inventory, settings, test_data, tmp_path):
    inventory.import_regions(test_data / "cameras/hk_18_districts.geojson")
    inventory.import_file(test_data / "cameras/hk_traffic_cameras.csv")
    run = vms_runner(vms_env(settings, tmp_path, COLUMNS="200"), no_traceback=True)
    places = tmp_path / "places.csv"
    places.write_text("name,lon,lat\nschool,114.15,22.25\nhospital,114.17,22.28\n", encoding="utf-8")
    out = tmp_path / "covered.geojson"
    data = json.loads(run("coverage", "--json", "--places", str(places), "--geojson", str(out)).stdout)
    expected = independent_district_counts(test_data)
    ours = {r["name"]: r["cameras"] for r in data["summary"]["by_region"] if r["cameras"]}
    assert ours == {k: v for k, v in expected.items() if k is not None}
    assert len(data["area"]["by_region"]) == 18
    assert all(r["covered_km2"] > 0 for r in data["area"]["by_region"] if r["cameras"])
    assert [p["name"] for p in data["places"]["gaps"]] == ["school", "hospital"]  # no camera is ON yet
    assert len(json.loads(out.read_text(encoding="utf-8"))["features"]) == 18

    bad = run("coverage", "--region", "nowhere", code=2)
    assert bad.stderr.startswith("error:") and "nowhere" in bad.stderr
