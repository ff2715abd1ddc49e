"""`vms sim --faults none|default|FILE` through the CLI: a healthy fleet, the default mix, or a chosen one.

Each run serves for a fraction of a second on its own loopback addresses (--duration) and prints its summary;
bad fault files give one line and exit 2. The fault plan itself is checked directly for exact counts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from probes.sim.devices import DEFAULT_FAULT_MIX, build_fleet, fault_plan

VMS = [sys.executable, "-m", "vms"]


def _base_host(n: int) -> str:
    pid = os.getpid()
    return f"127.{150 + n}.{pid % 250}.1"


def sim(tmp_path: Path, *args: str, code: int = 0, n: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VMS_DATA_DIR": str(tmp_path / "data"), "VMS_LOG_LEVEL": "WARNING", "COLUMNS": "200"}
    cmd = [*VMS, "sim", "--no-rtsp", "--duration", "0.3", "--port", "0", "--base-host", _base_host(n), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == code, proc.stderr + proc.stdout
    return proc


def faults_line(out: str) -> dict[str, int]:
    line = next(x for x in out.splitlines() if x.strip().startswith("faults:"))
    body = line.split(":", 1)[1].strip()
    return {} if body == "none" else {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", body)}


def test_none_is_a_healthy_fleet(tmp_path: Path) -> None:
    out = sim(tmp_path, "--count", "40", "--faults", "none", n=1).stdout
    assert faults_line(out) == {}
    assert "healthy: 40" in out


def test_default_is_the_default_mix(tmp_path: Path) -> None:
    out = sim(tmp_path, "--count", "200", "--faults", "default", n=2).stdout
    faults = faults_line(out)
    assert faults, out
    assert set(faults) <= set(DEFAULT_FAULT_MIX)
    expected = build_fleet(200, fault_mix=DEFAULT_FAULT_MIX, base_host=_base_host(2))
    assert sum(faults.values()) == sum(1 for d in expected if d.faults)


def test_a_file_gives_exact_counts_and_shares(tmp_path: Path) -> None:
    spec = tmp_path / "mix.toml"
    spec.write_text('hang = 3\nslow = 5\nno_get_services = 1.0\n')
    out = sim(tmp_path, "--count", "20", "--faults", str(spec), n=3).stdout
    # counts are exact; the share 1.0 takes every other device
    assert faults_line(out) == {"hang": 3, "slow": 5, "no_get_services": 12}
    js = tmp_path / "mix.json"
    js.write_text('{"offline": 4}')
    out = sim(tmp_path, "--count", "10", "--faults", str(js), n=4).stdout
    assert faults_line(out) == {"offline": 4}
    assert "healthy: 6" in out


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("bad.json", '{"hang": ', "not valid JSON"),
        ("bad.toml", "hang = = 3", "not valid TOML"),
        ("unknown.json", '{"melting": 2}', "unknown fault 'melting'"),
        ("share.json", '{"slow": 1.5}', "share must be between 0 and 1"),
        ("neg.json", '{"slow": -1}', "count must be >= 0"),
        ("text.json", '{"slow": "many"}', "must be a count"),
        ("list.json", "[1, 2]", "expected a mapping"),
        ("sum.json", '{"slow": 0.6, "hang": 0.6}', "more than 1"),
        ("many.json", '{"slow": 30}', "in a fleet of 10"),
    ],
)
def test_bad_fault_files_are_one_line_and_exit_2(tmp_path: Path, name: str, content: str, says: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    proc = sim(tmp_path, "--count", "10", "--faults", str(path), code=2, n=5)
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert says in err, err


def test_a_missing_file_or_word_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = sim(tmp_path, "--faults", "sometimes", code=2, n=6)
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "none, default or a JSON/TOML file" in proc.stderr


def test_fault_plan_counts_are_exact_and_deterministic() -> None:
    assert fault_plan("none", 100) == ({}, {})
    assert fault_plan("default", 100) == (dict(DEFAULT_FAULT_MIX), {})
