"""`vms sweep`, `vms health`, `vms events` and `vms cameras tag` as an operator runs them, in a subprocess through
the real entry point (python -m vms), on SQLite and PostgreSQL, against simulated devices on 127.x.

Bad input (an unknown stage, two groups, a bad --since, a bad option value, a missing argument) is one line and
exit 2 with no sweep recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from probes.sim import SimFleet
from tests.e2e.cli import clock_skew_pair, vms_env, vms_runner


@pytest.fixture
def run(settings, tmp_path):
    return vms_runner(vms_env(settings, tmp_path, SIM_PASSWORD="Sim-Cam-2024", COLUMNS="250"))


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with clock_skew_pair(160) as running:
        yield running


BAD_INPUT = [
    (["sweep", "--stages", "tcp,ping"], "unknown stage(s) ping"),
    (["sweep", "--stages", "tcp,Frame"], "unknown stage(s) Frame"),
    (["sweep", "--region", "3713", "--tag", "school"], "at most one of --region, --source, --tag"),
    (["sweep", "--deadline", "-1"], "deadline must be a positive number"),
    (["sweep", "--concurrency", "0"], "must be at least 1"),
    (["sweep", "--executor", "threads"], "unknown executor 'threads'"),
    (["sweep", "--deadline", "soon"], "Invalid value for '--deadline'"),
    (["sweep", "--bogus"], "No such option: --bogus"),
    (["events", "--since", "yesterday"], "--since 'yesterday'"),
    (["events", "--limit", "0"], "Invalid value for '--limit'"),
    (["events", "--camera", "no-such-camera"], "no camera 'no-such-camera'"),
    (["health"], "Missing argument"),
    (["health", "424242"], "no camera '424242'"),
    (["cameras", "tag", "1"], "Missing argument"),
]


def test_bad_input_is_one_line_exit_2_and_records_no_sweep(run):
    for args, says in BAD_INPUT:
        proc = run(*args, code=2)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in proc.stderr, (args, proc.stderr)
    proc = run("sweep", "--json")  # the first sweep recorded: id 1 (the bad ones recorded nothing)
    assert json.loads(proc.stdout)["sweep_id"] == 1


def test_sweep_health_events_and_tags_as_an_operator_runs_them(run, fleet):
    run("credentials", "add", "estate", "--username", "admin", "--default", "--password-env", "SIM_PASSWORD")
    run("discover", *[a for d in fleet.devices for a in ("--target", d.url)])
    cameras = json.loads(run("cameras", "list", "--json").stdout)["items"]
    assert len(cameras) == 2
    by_host = {c["ip_address"]: c["id"] for c in cameras}
    first, skewed = (by_host[d.host] for d in fleet.devices)

    summary = json.loads(run("sweep", "--json").stdout)
    assert summary["planned"] == 2 and summary["outcome"] == {"ok": 2} and summary["not_checkable"] == 0
    assert summary["status_changed"] == 2 and summary["stages"] == ["tcp", "onvif", "login", "stream"]

    text = run("sweep", "--stages", "tcp", "--stages", "onvif").stdout
    assert "2 cameras, 2 checked (2 ok, 0 defect, 0 off, 0 deadline)" in text and "0 statuses changed" in text

    assert run("cameras", "tag", str(first), "school", "north").stdout.strip().endswith("tags: north, school")
    tagged = json.loads(run("sweep", "--tag", "school", "--stages", "tcp,onvif,login", "--json").stdout)
    assert tagged["planned"] == 1 and tagged["group"] == "tag:school"
    assert run("cameras", "tag", str(first), "north", "--remove").stdout.strip().endswith("tags: school")
    assert any(e["action"] == "camera.untag" for e in json.loads(run("audit", "--json").stdout))
    assert json.loads(run("cameras", "show", str(first), "--json").stdout)["tags"] == ["school"]

    health = json.loads(run("health", str(skewed), "--json").stdout)
    assert health["status"] == "ON" and health["outcome"] == "ok"
    assert [s["stage"] for s in health["stages"]] == ["tcp", "onvif"]  # its latest check: the second sweep
    assert health["online_rate"]["1d"] == 1.0 and set(health["online_rate"]) == {"1d", "7d", "30d"}
    assert abs(health["clock_offset_s"]) > 60  # the clock_skew device is hours off
    assert [e["event"] for e in health["events"]] == ["ON"]
    shown = run("health", str(skewed)).stdout
    assert f"camera {skewed}: ON since" in shown and "online rate: 1d 100.0%" in shown and "clock:" in shown

    events = json.loads(run("events", "--since", "1h", "--json").stdout)
    assert sorted(e["camera_id"] for e in events) == sorted([first, skewed])
    assert all(e["event"] == "ON" and e["previous"] is None for e in events)
    one = json.loads(run("events", "--camera", str(first), "--limit", "5", "--json").stdout)
    assert [e["camera_id"] for e in one] == [first]
    assert json.loads(run("events", "--since", "2999-01-01T00:00:00", "--json").stdout) == []
    assert "2 events" in run("events").stdout
