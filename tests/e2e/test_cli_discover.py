"""`vms discover` and `vms discoveries` as an operator runs them, in a subprocess, on SQLite and PostgreSQL.

Bad input is one line and exit 2 with nothing recorded; the summary counts as "answered" only devices that
replied; failed optional steps show by step and cause. Devices are simulated on 127.x only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from probes.sim import SimFleet
from tests.e2e.cli import clock_skew_pair, vms_env, vms_runner


@pytest.fixture
def run(settings, tmp_path):
    # COLUMNS: room for every column of the runs table
    return vms_runner(vms_env(settings, tmp_path, SIM_PASSWORD="Sim-Cam-2024", COLUMNS="250"))


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with clock_skew_pair(180) as running:
        yield running


BAD_INPUT = [
    (["--range", "999.1.1.0/24"], "bad range '999.1.1.0/24'"),
    (["--range", "127.3.0.0/33"], "bad range"),
    (["--range", "10.0.0.0/8"], "--force"),  # 16 million addresses: not without --force
    (["--target", "127.3.0.9", "--port", "70000"], "bad port 70000"),
    (["--target", "http://[::1"], "bad target"),
    (["--target", "http://127.3.0.9:99999/onvif/device_service"], "bad target"),
    (["--interface", "eth0"], "bad interface 'eth0'"),
    (["--unicast", "999.1.1.1"], "bad unicast host"),
    (["--target", "127.3.0.9", "--timeout", "0"], "bad timeout"),
]


def test_bad_input_is_one_line_exit_2_and_records_nothing(run):
    for args, says in BAD_INPUT:
        proc = run("discover", *args, code=2)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert json.loads(run("discoveries", "--json").stdout) == []


def test_answered_and_failed_steps_in_the_summary(run, fleet):
    run("credentials", "add", "estate", "--username", "admin", "--default", "--password-env", "SIM_PASSWORD")
    live = [d.url for d in fleet.devices]
    nobody = f"{fleet.devices[0].host.rsplit('.', 1)[0]}.250:{fleet.port}"  # nothing listens there

    out = json.loads(run("discover", *(a for u in [*live, nobody] for a in ("--target", u)), "--json").stdout)
    assert (out["found"], out["answered"], out["registered"], out["failed"]) == (3, 2, 2, 1)
    assert out["by_cause"] == {"refused": 1}
    assert out["step_failures"] == {"GetSystemDateAndTime": {"clock_skew": 1}}

    text = run("discover", "--target", live[1], "--target", nobody).stdout
    assert "2 devices found, 1 answered, 1 registered" in text
    assert "GetSystemDateAndTime clock_skew 1" in text

    runs = json.loads(run("discoveries", "--json").stdout)
    assert [r["counts"]["answered"] for r in runs] == [1, 2]
    assert runs[0]["step_failures"][0]["cause"] == "clock_skew"
    table = run("discoveries").stdout
    assert "clock_skew" in table
