"""`vms sweep` through the real entry point (python -m vms) on a sweep large enough to share its shards between
worker processes (one per core): every camera gets exactly one result, as in one process; `--processes` out of
range is one line and exit 2. On SQLite and PostgreSQL. The cameras point at loopback addresses where nothing
listens (refused at once), so the sweep is quick and needs no simulated fleet."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from tests.services import free_port
from vms.catalog.domain import Observation, SourceKind
from vms.health.sweep import WORKER_MIN_CAMERAS
from vms.store.models import health_results

VMS = [sys.executable, "-m", "vms"]


@pytest.fixture
def run(settings, tmp_path):
    env = {
        **os.environ,
        "VMS_DATA_DIR": str(tmp_path / "data"),
        "VMS_DATABASE_URL": settings.url,
        "VMS_SECRET_KEY": settings.secret_key.get_secret_value(),
        "VMS_LOG_LEVEL": "WARNING",
        "COLUMNS": "250",
    }

    def vms(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*VMS, *args], env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == code, proc.stderr + proc.stdout
        return proc

    return vms


def test_a_large_sweep_from_the_command_line_on_worker_processes(inventory, run):
    proc = run("sweep", "--processes", "99", code=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "processes must be 0" in lines[0] and "Traceback" not in proc.stderr, proc.stderr

    count = WORKER_MIN_CAMERAS  # the smallest sweep that uses a worker process per core
    port = free_port()  # nothing listens there: every connection is refused at once
    pid = os.getpid()
    hosts = [f"127.{200 + pid % 40}.{i // 250}.{i % 250 + 1}" for i in range(count)]
    inventory.ingest_observations(
        [Observation("onvif", SourceKind.ONVIF, f"host_port:{h}:{port}",
                     {"ip_address": h, "port": port, "device_service_url": f"http://{h}:{port}/onvif/device_service"})
         for h in hosts],
        source="onvif", kind=SourceKind.ONVIF, snapshot=False, actor="test",
    )
    summary = json.loads(run("sweep", "--stages", "tcp,onvif", "--json").stdout)
    assert summary["planned"] == count and summary["checked"] == count and summary["not_checkable"] == 0, summary
    assert summary["outcome"] == {"off": count} and summary["cause"] == {"tcp": {"refused": count}}, summary
    assert summary["events"] == {"OFF": count}
    with inventory.session(write=False) as s:
        per_camera = s.execute(
            select(health_results.c.camera_id, func.count())
            .where(health_results.c.sweep_id == summary["sweep_id"])
            .group_by(health_results.c.camera_id)
        ).all()
    assert len(per_camera) == count and {n for _cid, n in per_camera} == {1}  # each camera exactly once

    again = json.loads(run("sweep", "--stages", "tcp", "--processes", "1", "--json").stdout)  # one process
    assert again["outcome"] == {"off": count} and again["status_changed"] == 0
