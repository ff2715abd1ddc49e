"""The real `vms` command in a subprocess (python -m vms) on a test's database, and a small simulated fleet for it:
shared by the CLI end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from probes.sim import SimFleet, build_fleet
from tests.fleets import fleet_in_thread, pid_base_host
from vms.settings import Settings

VMS = [sys.executable, "-m", "vms"]

Vms = Callable[..., subprocess.CompletedProcess[str]]


def vms_env(settings: Settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a command run on ``settings``' database and secret, with ``extra`` variables beside."""
    return {
        **os.environ,
        "VMS_DATA_DIR": str(tmp_path / "data"),
        "VMS_DATABASE_URL": settings.url,
        "VMS_SECRET_KEY": settings.secret_key.get_secret_value(),
        "VMS_LOG_LEVEL": "WARNING",
        **extra,
    }


def run_vms(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``vms *args`` as an operator runs it; the caller judges the exit code."""
    return subprocess.run([*VMS, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def vms_runner(env: dict[str, str], *, no_traceback: bool = False) -> Vms:
    """``vms(*args, code=0)``: runs the command and asserts its exit code (``code=None``: any exit code); with
    ``no_traceback``, also that stderr never holds a traceback."""

    def vms(*args: str, code: int | None = 0) -> subprocess.CompletedProcess[str]:
        proc = run_vms(env, *args)
        if code is not None:
            assert proc.returncode == code, proc.stderr + proc.stdout
        if no_traceback:
            assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return vms


@contextmanager
def clock_skew_pair(first: int) -> Iterator[SimFleet]:
    """Two simulated ONVIF devices at ``pid_base_host(first)`` (the second one's clock skewed), no RTSP, no
    discovery, served from a thread."""
    devices = build_fleet(2, fault_mix={}, faults_by_index={1: {"clock_skew"}}, base_host=pid_base_host(first), port=0)
    sim = SimFleet(devices=devices, rtsp=False, discovery=False)
    with fleet_in_thread(sim) as running:
        yield running
