"""Two real `vms scheduler` processes on one database (an SQLite file, and PostgreSQL) with a schedule every second:
each scheduled sweep runs exactly once, in one of them, and the real sweep runs (health_sweeps rows). Also the
`vms schedules` commands as a user types them, bad input included."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from vms.store.models import health_sweeps, schedule_runs

RUN_FOR_S = 6.0


def vms_env(settings, tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "VMS_DATABASE_URL": settings.database_url,
        "VMS_DATA_DIR": str(tmp_path / "data"),
        "VMS_SECRET_KEY": settings.secret_key.get_secret_value(),
        "VMS_LOG_LEVEL": "INFO",
        "VMS_EXECUTOR": "local",
    }
    env.pop("VMS_HEALTH_DEFAULT_SCHEDULE_S", None)
    return env


def vms(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vms", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_schedules_commands(inventory, settings, tmp_path):
    env = vms_env(settings, tmp_path)
    listed = vms(env, "schedules", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"builtin": true' in listed.stdout and '"interval_s": 300' in listed.stdout
    added = vms(
        env, "schedules", "add", "hourly", "--cron", "0 * * * *", "--stages", "rtsp,snapshot", "--group", "tag:school"
    )
    assert added.returncode == 0, added.stderr
    assert "hourly: cron 0 * * * *, rtsp,snapshot of tag:school" in added.stdout
    for bad in (
        ["bad", "--cron", "0 25 * * *"],
        ["bad", "--every", "0"],
        ["bad", "--every", "60", "--cron", "* * * * *"],
        ["bad", "--every", "60", "--stages", "frames"],
        ["bad", "--every", "60", "--group", "street:x"],
        ["bad", "--every", "soon"],
        ["hourly", "--every", "60"],
    ):
        done = vms(env, "schedules", "add", *bad)
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert done.stderr.startswith("error:") and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
    gone = vms(env, "schedules", "remove", "nothing")
    assert gone.returncode == 2 and "no schedule named 'nothing'" in gone.stderr
    listed = vms(env, "schedules", "list")
    assert "hourly" in listed.stdout and "built-in" not in listed.stdout
    assert vms(env, "schedules", "remove", "hourly").returncode == 0
    audit = vms(env, "audit", "--json").stdout
    assert audit.count('"schedule.add"') == 1 and audit.count('"schedule.remove"') == 1


def test_two_scheduler_processes_run_each_sweep_once(inventory, settings, tmp_path):
    env = vms_env(settings, tmp_path)
    assert vms(env, "schedules", "add", "every-second", "--every", "1", "--stages", "tcp,onvif").returncode == 0
    logs = [tmp_path / f"scheduler{i}.log" for i in (1, 2)]
    procs = []
    for log in logs:
        with log.open("w") as out:
            cmd = [sys.executable, "-m", "vms", "scheduler"]
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all("Ctrl-C stops" in log.read_text() for log in logs):
            assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
            time.sleep(0.1)
        assert all("Ctrl-C stops" in log.read_text() for log in logs), "the schedulers did not start"
        both_up = datetime.now(UTC).timestamp()
        time.sleep(RUN_FOR_S)
        window_end = datetime.now(UTC).timestamp()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
    texts = [log.read_text() for log in logs]
    assert all("vms scheduler: stopped" in t for t in texts), [t[-2000:] for t in texts]
    assert not any("Traceback" in t for t in texts), [t[-3000:] for t in texts]

    with inventory.session(write=False) as s:
        runs = s.execute(select(schedule_runs).order_by(schedule_runs.c.slot)).all()
        sweeps = int(s.scalar(select(func.count()).select_from(health_sweeps)) or 0)
        swept = set(s.scalars(select(health_sweeps.c.id)))
    slots = [r.slot for r in runs]
    # Every run recorded, finished, with its own real sweep: as many sweeps as run times, none twice.
    assert len(slots) == len(set(slots)) and sweeps == len(runs)
    assert all(r.error is None and r.finished_at is not None for r in runs), runs
    assert {r.sweep_id for r in runs} == swept
    # Run times are whole seconds apart (the schedule's), and every one due while both ran was run, once; a run
    # time is skipped only while the schedule's previous sweep still ran (never two of its sweeps side by side).
    due = [t for t in slots if both_up + 0.5 <= t <= window_end - 1.5]
    assert due and all(abs((b - a) - round(b - a)) < 1e-3 for a, b in itertools.pairwise(slots))
    ended = {r.slot: _epoch(r.finished_at) for r in runs}
    for k in range(1, round(due[-1] - due[0])):
        missing = due[0] + k
        if all(abs(missing - t) > 1e-3 for t in slots):
            assert any(t < missing <= ended[t] for t in slots), (missing, slots, ended)
    holders = {r.holder for r in runs}
    skipped = sum(t.count("is another process's") for t in texts)
    print(f"{len(runs)} runs by {len(holders)} processes; {skipped} run times found taken by the other process")


def _epoch(at: datetime) -> float:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
