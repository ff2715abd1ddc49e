"""Retention runs by itself: the scheduler's hourly job removes raw health results past VMS_HEALTH_RAW_DAYS and frame
samples past VMS_SAMPLES_MAX_AGE_DAYS (their files too), once per period whichever scheduler process takes it;
the latest result, events and daily figures stay. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import time

import cv2
import numpy as np

from probes.health.results import CheckResult, StageResult
from vms.catalog.domain import Observation, SourceKind
from vms.frames.store import SampleRow, SampleStore
from vms.health.service import Health
from vms.jobs.scheduler import RETENTION_S, apply_retention, build_scheduler, record_indicators
from vms.store import repository as repo
from vms.store.models import coverage_daily


def _camera(inv) -> int:
    inv.ingest_observations(
        [Observation("ledger:r", SourceKind.LEDGER, "local:R-1", {"name": "Kept", "local_id": "R-1",
                                                                  "ip_address": "127.0.0.31"})],
        source="ledger:r", kind=SourceKind.LEDGER, snapshot=False, actor="test",
    )
    with inv.session(write=False) as s:
        return repo.camera_ids_by(s, "ip_address", "127.0.0.31")[0]


def _result(cid: int, at: dt.datetime) -> CheckResult:
    return CheckResult(cid, at, (StageResult("tcp", True, 1.0),), "ok", "tcp")


def _sample(store: SampleStore, cid: int, at: dt.datetime, shade: int) -> SampleRow:
    ok, jpeg = cv2.imencode(".jpg", np.full((36, 64, 3), shade, np.uint8))
    assert ok
    sha = store.write_jpeg(jpeg.tobytes())
    return SampleRow(cid, at, "rtsp", 64, 36, "H264", 10.0, len(jpeg), sha, np.full((9, 16), shade, np.uint8))


def test_the_hourly_retention_job_removes_old_results_and_samples_once_per_period(inventory) -> None:
    cid = _camera(inventory)
    health, store = Health(inventory), SampleStore(inventory)
    now = dt.datetime.now(dt.UTC)
    old = now - dt.timedelta(days=inventory.settings.health_raw_days + 1)
    for at in (old, now):
        sweep = health.start_sweep(["tcp"], at=at)
        health.record([_result(cid, at)], sweep)
        health.finish_sweep(sweep, at=at)
    stale = now - dt.timedelta(days=inventory.settings.samples_max_age_days + 1)
    ids = store.add([_sample(store, cid, stale, 40), _sample(store, cid, now, 200)])
    store.set_reference(cid, ids[1], actor=None)
    gone = store.path_of(store.get(ids[0]).sha256)
    assert gone.exists()

    # the file grace (a sweep may be about to add a fresh file's row) is over for the stale file
    past = time.time() - 3600
    os.utime(gone, (past, past))
    slot_time = time.time()
    done = apply_retention(inventory, "scheduler-a", now=slot_time)
    assert done == {"health_results": 1, "samples": 1, "sample_files": 1}, done
    assert not gone.exists() and store.get(ids[1]) is not None
    assert health.latest(cid) is not None  # the latest result stays
    # the same period again, from another process: already done
    assert apply_retention(inventory, "scheduler-b", now=slot_time + 1) is None
    # the next period runs again (nothing left to remove)
    assert apply_retention(inventory, "scheduler-b", now=slot_time + RETENTION_S) == {
        "health_results": 0, "samples": 0, "sample_files": 0}


def test_a_health_scheduler_has_the_retention_job(inventory) -> None:
    scheduler = build_scheduler(inventory, discovery=None, discovery_minutes=0, health=True)
    for name in ("retention", "indicators"):
        job = scheduler.get_job(name)
        assert job is not None and job.trigger.interval.total_seconds() == RETENTION_S, name
    assert build_scheduler(inventory, discovery=None, discovery_minutes=0).get_job("retention") is None


def test_the_hourly_indicators_job_keeps_the_days_figures_once_per_period(inventory) -> None:
    _camera(inventory)
    at = time.time()
    assert record_indicators(inventory, "scheduler-a", now=at)
    assert not record_indicators(inventory, "scheduler-b", now=at + 1)  # that hour is taken
    with inventory.session(write=False) as s:
        rows = s.execute(coverage_daily.select().where(coverage_daily.c.region == "")).all()
    assert [r.registered for r in rows] == [1], rows  # one row for today, every camera counted
