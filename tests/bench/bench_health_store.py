"""Benchmark: writing a sweep's check results at city scale (100,000 cameras), SQLite and PostgreSQL.

Prints figures (never asserts on time): ``Health.record`` writing 100,000 results in shards of 5,000 (raw rows,
latest result and status, events, cameras.status, daily figures; a few statements per shard), the first sweep
(every camera gets its first status: 100,000 events) and steady sweeps (median of 3; a few percent of cameras
change), and in the same run a naive per-row writer (one query per table per result, the same tables and
transaction size) on a subset of the same cameras, with the ratio. 100,000 cameras every 5 minutes need 333
results/s. Wall time, and the CPU time of this process (the database server's CPU is not in it on PostgreSQL).

Run: .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/bench/bench_health_store.py
(VMS_BENCH_HEALTH_CAMERAS=20000 for a quick run)
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update

from probes.health.results import CheckResult, StageResult
from tests.bench.report import record, size
from vms.health.service import Health, _details_json, _stages_json
from vms.health.status import State, step
from vms.store.models import cameras, health_daily, health_events, health_latest, health_results, utcnow

CAMERAS = size("VMS_BENCH_HEALTH_CAMERAS", 100_000, 5_000)
NAIVE = min(CAMERAS, size("VMS_BENCH_HEALTH_NAIVE", 5_000, 1_000))
SHARD = 5_000
T0 = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
STAGES = (StageResult("tcp", True, 0.8), StageResult("onvif", True, 3.1), StageResult("login", True, 4.2))


def _make_cameras(inventory: Any, n: int) -> list[int]:
    rows = [
        {"id": i, "name": f"camera {i}", "region_code": f"3713{11 + i % 3:02d}", "created_at": T0, "updated_at": T0}
        for i in range(1, n + 1)
    ]
    with inventory.engine.begin() as conn:
        for k in range(0, n, 10_000):
            conn.execute(insert(cameras), rows[k : k + 10_000])
    return [r["id"] for r in rows]


def _sweep(ids: Sequence[int], k: int, rng: random.Random, bad: set[int]) -> list[CheckResult]:
    at = T0 + dt.timedelta(minutes=5 * k)
    out = []
    for cid in ids:
        if rng.random() < 0.01:  # a few cameras go bad or come back each sweep
            bad.symmetric_difference_update({cid})
        off = cid in bad or rng.random() < 0.02  # and some checks are flaky
        stages = (*STAGES[:1], StageResult("onvif", False, 3000.0, "timeout")) if off else STAGES
        out.append(
            CheckResult(
                cid,
                at + dt.timedelta(milliseconds=cid % 60_000),
                stages,
                "off" if off else "ok",
                "onvif" if off else "login",
                "timeout" if off else None,
                None if off else round(rng.uniform(-3, 3), 3),
            )
        )
    return out


def _timed(fn: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _ours(health: Health, results: list[CheckResult], sweep: int) -> None:
    for k in range(0, len(results), SHARD):
        health.record(results[k : k + SHARD], sweep)


def _naive(health: Health, results: list[CheckResult], sweep: int) -> None:
    """One statement per table per result: what a straightforward writer does (shards of the same size)."""
    settings = health.settings
    for k in range(0, len(results), SHARD):
        with health.inventory.engine.begin() as conn:
            for r in results[k : k + SHARD]:
                conn.execute(
                    insert(health_results).values(
                        sweep_id=sweep,
                        camera_id=r.camera_id,
                        at=r.at,
                        outcome=r.outcome,
                        stage=r.stage,
                        cause=r.cause,
                        clock_offset_s=r.clock_offset_s,
                        stages=_stages_json(r),
                        details=_details_json(r),
                    )
                )
                prev = conn.execute(select(health_latest).where(health_latest.c.camera_id == r.camera_id)).first()
                state = State(prev.status, prev.pending, prev.streak) if prev else State()
                new, change = step(
                    state,
                    r.outcome,
                    stage=r.stage,
                    cause=r.cause,
                    fail_count=settings.health_fail_count,
                    recover_count=settings.health_recover_count,
                )
                since = r.at if change else (prev.since if prev else None)
                values = {
                    "sweep_id": sweep,
                    "at": r.at,
                    "outcome": r.outcome,
                    "stage": r.stage,
                    "cause": r.cause,
                    "clock_offset_s": r.clock_offset_s,
                    "stages": _stages_json(r),
                    "details": _details_json(r),
                    "status": new.status,
                    "since": since,
                    "pending": new.pending,
                    "streak": new.streak,
                }
                if prev:
                    conn.execute(update(health_latest).where(health_latest.c.camera_id == r.camera_id).values(values))
                else:
                    conn.execute(insert(health_latest).values(camera_id=r.camera_id, **values))
                if change:
                    conn.execute(
                        insert(health_events).values(
                            camera_id=r.camera_id,
                            at=r.at,
                            event=change.event,
                            previous=change.previous,
                            status=change.status,
                            stage=r.stage,
                            cause=r.cause,
                            sweep_id=sweep,
                        )
                    )
                    conn.execute(update(cameras).where(cameras.c.id == r.camera_id).values(status=new.status))
                day = r.at.date()
                d = health_daily.c
                key = (d.camera_id == r.camera_id) & (d.day == day)
                row = conn.execute(select(d.checks).where(key)).first()
                if row:
                    conn.execute(update(health_daily).where(key).values(checks=d.checks + 1, ok=d.ok + int(r.ok)))
                else:
                    conn.execute(
                        insert(health_daily).values(
                            camera_id=r.camera_id,
                            day=day,
                            checks=1,
                            ok=int(r.ok),
                            online_s=0.0,
                            known_s=0.0,
                            drift_n=0,
                        )
                    )


def test_bench_health_store(inventory: Any) -> None:
    inventory.upgrade()
    db = "PostgreSQL" if inventory.engine.dialect.name == "postgresql" else "SQLite"
    health = Health(inventory)
    ids = _make_cameras(inventory, CAMERAS)
    rng, bad = random.Random(8), set[int]()
    first = _sweep(ids, 0, rng, bad)
    wall, cpu = _timed(lambda: _ours(health, first, health.start_sweep(["tcp", "onvif", "login"])))
    print(f"\n{db}: first sweep, {CAMERAS:,} results: {wall:.2f} s wall, {cpu:.2f} s CPU ({CAMERAS / wall:,.0f}/s)")
    record(
        f"record, first sweep ({CAMERAS:,} new statuses), {db}",
        CAMERAS / wall,
        "results/s",
        min_value=333,
        goal_note="100,000 cameras every 5 min",
        group="health",
    )
    walls, cpus = [], []
    for k in range(1, 4):
        results = _sweep(ids, k, rng, bad)
        sweep = health.start_sweep(["tcp", "onvif", "login"])
        wall, cpu = _timed(lambda results=results, sweep=sweep: _ours(health, results, sweep))
        walls.append(wall)
        cpus.append(cpu)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    # the naive writer on a subset of the same cameras, in a sweep of its own (the state it reads is the same)
    subset = _sweep(ids[:NAIVE], 4, rng, bad)
    n_wall, n_cpu = _timed(lambda: _naive(health, subset, health.start_sweep(["tcp", "onvif", "login"])))
    ours_rate, naive_rate = CAMERAS / wall, NAIVE / n_wall
    print(
        f"{db}: steady sweep (median of 3), {CAMERAS:,} results: {wall:.2f} s wall, {cpu:.2f} s CPU "
        f"({ours_rate:,.0f}/s, {CAMERAS / cpu:,.0f}/CPU-s); naive per-row on {NAIVE:,}: {n_wall:.2f} s wall, "
        f"{n_cpu:.2f} s CPU ({naive_rate:,.0f}/s, {NAIVE / n_cpu:,.0f}/CPU-s); ratio {ours_rate / naive_rate:.1f}x"
    )
    record(
        f"record, steady sweep ({CAMERAS:,} results), {db}",
        ours_rate,
        "results/s",
        baseline=naive_rate,
        baseline_name=f"per-row writer on {NAIVE:,}",
        min_value=333,
        group="health",
    )
    record(
        f"record, steady sweep, CPU of this process, {db}",
        CAMERAS / cpu,
        "results/CPU-s",
        baseline=NAIVE / n_cpu,
        baseline_name="per-row writer",
        group="health",
    )
    # a shard delivered again (a worker died after writing it): counted nothing twice, at what cost
    again = results[:SHARD]
    r_wall, _ = _timed(lambda: health.record(again, sweep))
    print(f"{db}: a re-delivered shard of {len(again):,}: {r_wall:.3f} s")
    # the online rate over a day, overall and per region, at this size
    start = time.perf_counter()
    rate = health.online_rate(T0, T0 + dt.timedelta(days=1), now=utcnow())
    o_wall = time.perf_counter() - start
    start = time.perf_counter()
    health.online_rate(T0, T0 + dt.timedelta(days=1), region="371311", now=utcnow())
    g_wall = time.perf_counter() - start
    # a period with partial days at both ends (the status before it and the events inside, from the events)
    start = time.perf_counter()
    health.online_rate(T0 + dt.timedelta(minutes=7), T0 + dt.timedelta(hours=25), now=utcnow())
    p_wall = time.perf_counter() - start
    print(
        f"{db}: online rate over {CAMERAS:,} cameras: overall {o_wall:.2f} s (rate {rate.rate:.4f}), "
        f"one region {g_wall:.2f} s, overall with partial days {p_wall:.2f} s"
    )
    record(f"online rate, {CAMERAS:,} cameras, overall, {db}", o_wall, "s", group="health")
