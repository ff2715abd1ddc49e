"""The main job as a new user starts it: `vms run` on embedded defaults, with the simulated fleet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

from tests.services import free_port, interrupt


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback only)
        return json.loads(resp.read())


def test_vms_run_serves_the_demo_fleet(tmp_path):
    api_port = free_port()
    pid = os.getpid()
    env = {
        **os.environ,
        "VMS_DATA_DIR": str(tmp_path / "data"),
        "VMS_API_PORT": str(api_port),
        "VMS_DEMO_FLEET_SIZE": "12",
        "VMS_DEMO_FLEET_HOST": f"127.{100 + pid % 40}.{(pid // 40) % 250}.1",
        "VMS_DEMO_FLEET_PORT": str(free_port()),
        "VMS_LOG_LEVEL": "WARNING",
    }
    env.pop("VMS_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vms", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        stats = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                stats = get(f"http://127.0.0.1:{api_port}/api/v1/stats?by=source")
                break
            except OSError:
                time.sleep(0.5)
        assert stats is not None, "API did not come up"
        # the first discovery sweep runs in the background once the API is up
        while time.monotonic() < deadline and "onvif" not in {i["key"] for i in stats["items"]}:
            time.sleep(0.5)
            stats = get(f"http://127.0.0.1:{api_port}/api/v1/stats?by=source")
        by_source = {i["key"]: i["count"] for i in stats["items"]}
        assert by_source["ledger:demo-police"] == 12
        assert 0 < by_source["onvif"] <= 12  # the healthy and recoverable devices of the demo fleet
        cameras = get(f"http://127.0.0.1:{api_port}/api/v1/cameras?limit=100")
        assert cameras["total"] == 12  # discovery merged with the ledger: one record per camera
        found = [c for c in cameras["items"] if c["mac"]]
        assert len(found) == by_source["onvif"] and all(c["device_id"] and c["name"] for c in found)
        regions = get(f"http://127.0.0.1:{api_port}/api/v1/stats?by=region")["items"]
        assert {i["key"] for i in regions} == {"371311"}
        quality = get(f"http://127.0.0.1:{api_port}/api/v1/quality")
        assert quality["total"] == 12
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/", timeout=5) as resp:
            assert b"/static/app.js" in resp.read()  # the dashboard page (its script asks the API)
        assert (tmp_path / "data" / "vms.sqlite3").exists()
    finally:
        out = interrupt(proc)
    assert "Traceback" not in out, out
