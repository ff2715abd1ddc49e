"""What a new user tripped on, through the real `vms` command with piped output (never a terminal)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import text

from probes.sim.devices import build_fleet
from tests.e2e.cli import VMS, vms_env, vms_runner
from tests.services import free_port, interrupt
from vms.access.apikeys import authenticate
from vms.inventory.service import Inventory

HEADER = "设备编码,设备名称,经度,纬度,行政区域,IP地址\n"


@pytest.fixture
def run(settings, tmp_path):
    # COLUMNS: what a narrow terminal would say; a pipe must not be cut to it
    return vms_runner(vms_env(settings, tmp_path, COLUMNS="80"), no_traceback=True)


def gb_id(i: int) -> str:
    return f"37131100001320{i:06d}"


def write_cameras(path: Path, count: int, *, name: str = "罗庄区沂河路与通达路交叉口东北角高点全景摄像机") -> Path:
    rows = [
        f"{gb_id(i)},{name}{i}号,{118.28 + i / 10000:.6f},{35.00 + i / 10000:.6f},371311,10.62.0.{i}"
        for i in range(1, count + 1)
    ]
    path.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_piped_list_prints_full_values_and_says_how_many_are_left(run, tmp_path):
    run("import", str(write_cameras(tmp_path / "ledger.csv", 60)), "--source", "ledger:police")
    out = run("cameras", "list").stdout
    assert "…" not in out
    for i in range(1, 51):
        assert gb_id(i) in out and f"罗庄区沂河路与通达路交叉口东北角高点全景摄像机{i}号" in out
    assert gb_id(51) not in out
    assert "50 of 60; --limit/--offset for more" in out
    assert max(len(line) for line in out.splitlines()) > 80  # a pipe is not a terminal: nothing was wrapped
    rest = run("cameras", "list", "--offset", "50").stdout
    assert all(gb_id(i) in rest for i in range(51, 61))
    assert "10 of 60 from offset 50" in rest
    assert "of 60" not in run("cameras", "list", "--limit", "100").stdout  # everything shown: nothing to say


def test_piped_error_is_one_line(run):
    ref = "a-camera-reference-long-enough-to-wrap-at-eighty-columns-" + "x" * 40
    proc = run("cameras", "show", ref, code=None)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and ref in proc.stderr


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (("cameras", "list"), "a page at a time"),
        (("regions", "list"), "Imported regions"),
        (("apikey", "revoke"), "Revoke an API key"),
        (("apikey", "list"), "never the key or its hash"),
    ],
)
def test_commands_have_help_text(command, says):
    def usage(*args: str) -> str:
        proc = subprocess.run([*VMS, *args, "--help"], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    group = usage(command[0])
    line = next(li for li in group.splitlines() if re.search(rf"\b{command[1]}\b", li))
    assert re.search(r"\b" + command[1] + r"\s+\S", line), f"no help text beside {command}: {line!r}"
    assert says.lower() in " ".join(usage(*command).split()).lower()


def test_apikey_list_shows_use_and_revocation_never_the_key(run, settings):
    read_key = run("apikey", "create", "dashboard").stdout.strip()
    write_key = run("apikey", "create", "ledger-sync", "--role", "write").stdout.strip()
    run("apikey", "create", "old-script")
    run("apikey", "revoke", "old-script")
    assert json.loads(run("apikey", "list", "--json").stdout)[0]["last_used_at"] is None
    inv = Inventory(settings)
    try:
        assert authenticate(inv, read_key).name == "dashboard"
        authenticate(inv, read_key)  # a second use within the minute writes nothing more
        with inv.session(write=False) as s:
            hashes = [h for (h,) in s.execute(text("SELECT key_hash FROM api_keys"))]
    finally:
        inv.engine.dispose()
    listed = {k["name"]: k for k in json.loads(run("apikey", "list", "--json").stdout)}
    assert set(listed) == {"dashboard", "ledger-sync", "old-script"}
    assert set(listed["dashboard"]) == {"name", "scope", "created_at", "last_used_at", "revoked_at"}
    assert listed["dashboard"]["last_used_at"] and listed["dashboard"]["revoked_at"] is None
    assert listed["ledger-sync"]["scope"] == "operate" and listed["ledger-sync"]["last_used_at"] is None
    assert listed["old-script"]["revoked_at"]
    table = run("apikey", "list").stdout
    lines = {line.split()[1]: line for line in table.splitlines() if line.startswith("│")}
    assert "never" in lines["ledger-sync"] and "UTC" in lines["old-script"].split("│")[5]
    for secret in (read_key, write_key):
        assert secret not in table
    assert len(hashes) == 3 and not any(h in table or h in json.dumps(listed) for h in hashes)


def test_stats_by_source_says_a_camera_counts_once_per_source(run, tmp_path):
    run("import", str(write_cameras(tmp_path / "police.csv", 50)), "--source", "ledger:police")
    run("import", str(write_cameras(tmp_path / "traffic.csv", 46)), "--source", "ledger:traffic")
    assert {r["source"]: r["count"] for r in json.loads(run("stats", "--by", "source", "--json").stdout)} == {
        "ledger:police": 50,
        "ledger:traffic": 46,
    }
    out = run("stats", "--by", "source").stdout
    assert "a camera counts once for each source that lists it: 96 listings of 50 distinct cameras" in out
    assert re.search(r"│ cameras \(distinct\)\s+│\s+│ 50\s+│", out)
    assert "total" not in out
    region = run("stats", "--by", "region").stdout  # other groupings add up: a plain total
    assert re.search(r"│ total\s+│\s+│ 50\s+│", region) and "listings" not in region


def _vms_run(env: dict[str, str], api_port: int) -> str:
    """`vms run` until its API answers, then Ctrl-C; everything it printed (stdout and stderr, piped)."""
    proc = subprocess.Popen([*VMS, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/", timeout=5):
                    break
            except OSError:
                time.sleep(0.3)
    finally:
        out = interrupt(proc)
    assert "Traceback" not in out, out
    return out


def test_vms_run_says_what_the_demo_fleet_is_and_why_it_starts(tmp_path):
    size, pid = 30, os.getpid()
    base = f"127.{140 + pid % 40}.{(pid // 40) % 250}.1"
    offline = [d.host for d in build_fleet(size, base_host=base) if "offline" in d.faults]
    assert offline  # the demo fleet's fault mix takes some devices offline, as in a real district
    api_port = free_port()
    env = {
        **os.environ,
        "VMS_DATA_DIR": str(tmp_path / "data"),
        "VMS_API_PORT": str(api_port),
        "VMS_DEMO_FLEET_SIZE": str(size),
        "VMS_DEMO_FLEET_HOST": base,
        "VMS_DEMO_FLEET_PORT": "0",
        "VMS_LOG_LEVEL": "INFO",
        "VMS_DISCOVERY_INTERVAL_MIN": "600",
    }
    for name in ("VMS_DATABASE_URL", "VMS_DEMO_FLEET", "VMS_DISCOVERY_RANGES", "VMS_DISCOVERY_INTERFACES"):
        env.pop(name, None)

    first = _vms_run(env, api_port)
    online = size - len(offline)
    assert "vms: no camera configured: starting the demo, a simulated fleet of 30 ONVIF devices" in first
    assert f"({len(offline)} of them deliberately offline, as in a real district)" in first
    assert f"ONVIF simulator: {online} of {size} devices listening on port" in first
    assert f"{len(offline)} deliberately offline (fault 'offline', never answer): {', '.join(offline)}" in first
    assert f"WS-Discovery: {online} devices answer: multicast 239.255.255.250:3702 on 127.0.0.1" in first
    assert "multicast on on" not in first and "listening on 48" not in first

    again = _vms_run(env, api_port)  # a restart: the inventory holds the demo's cameras and nothing else
    assert "no camera configured" not in again
    assert (
        f"vms: the inventory holds only the {size} cameras of an earlier demo: starting the demo again, "
        f"a simulated fleet of {size} ONVIF devices"
    ) in again
