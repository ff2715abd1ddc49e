"""`vms serve --workers N` serves the API from N worker processes sharing one port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.services import free_port, interrupt


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return ""


def test_serve_runs_worker_processes(tmp_path):
    port = free_port()
    env = {**os.environ, "VMS_DATA_DIR": str(tmp_path / "data"), "VMS_LOG_LEVEL": "WARNING"}
    env.pop("VMS_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vms", "serve", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        page = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/cameras?limit=5", timeout=5) as r:
                    page = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.3)
        assert page == {"total": 0, "total_exact": True, "limit": 5, "offset": 0, "next": None, "items": []}
        workers: set[int] = set()
        while time.monotonic() < deadline and len(workers) < 2:
            # uvicorn's supervisor spawns the workers (beside multiprocessing's resource tracker)
            workers = {c for c in children(proc.pid) if "spawn_main" in cmdline(c)}
            time.sleep(0.2)
        assert len(workers) == 2
    finally:
        out = interrupt(proc)
    assert "Traceback" not in out, out
    assert "2 worker processes" in out
