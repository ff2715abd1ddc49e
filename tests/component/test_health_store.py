"""vms.health: results, status with hysteresis, events, cameras.status, daily figures, online rate, drift, raw
retention. SQLite and PostgreSQL (the inventory fixture)."""

from __future__ import annotations

import datetime as dt
import random
import threading

from sqlalchemy import func, select, update

from probes.health.results import CheckResult, StageResult
from vms.catalog.domain import Observation, SourceKind
from vms.health.service import Health
from vms.inventory.ingest import observation_key
from vms.store.models import cameras, health_daily, health_events, health_latest, health_results

T0 = dt.datetime(2026, 11, 20, 0, 0, tzinfo=dt.UTC)
LATER = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)  # "now" for the online rate: after every recorded result

REGIONS = ["371311", "371311", "371312", "3713", "371402", None]  # sub-regions of 3713, another city, none


def _cameras(inventory, n: int) -> list[int]:
    rows = [{"local_id": f"cam-{i}", "name": f"Camera {i}", "ip_address": f"10.9.0.{i + 1}"} for i in range(n)]
    kind = SourceKind.LEDGER
    obs = [Observation("ledger", kind, observation_key(r), r) for r in rows]
    inventory.ingest_observations(obs, source="ledger", kind=kind, snapshot=True, actor="test")
    with inventory.engine.begin() as conn:
        ids = list(conn.execute(select(cameras.c.id).order_by(cameras.c.id)).scalars())
        for cid, region in zip(ids, REGIONS, strict=False):
            conn.execute(update(cameras).where(cameras.c.id == cid).values(region_code=region))
    return ids


def _result(cid, at, outcome, *, stage=None, cause=None, offset=None) -> CheckResult:
    stage = stage or {"ok": "login", "off": "tcp", "defect": "login", "deadline": "onvif"}[outcome]
    if outcome != "ok" and cause is None:
        cause = {"off": "timeout", "defect": "auth", "deadline": "deadline"}[outcome]
    stages = (StageResult("tcp", outcome != "off", 1.5, None if outcome != "off" else cause),)
    return CheckResult(cid, at, stages, outcome, stage, cause, offset)


def _status(inventory, cid):
    with inventory.engine.connect() as conn:
        latest = conn.execute(select(health_latest.c.status).where(health_latest.c.camera_id == cid)).scalar()
        cam = conn.execute(select(cameras.c.status).where(cameras.c.id == cid)).scalar()
    assert latest == cam
    return latest


def test_status_follows_results_with_hysteresis_and_every_change_is_an_event(inventory):
    health = Health(inventory)
    a, b, c = _cameras(inventory, 3)
    plan = [  # per sweep: outcomes of a, b, c
        ("ok", "off", "ok"),
        ("off", "off", ("defect", "rtsp", "rtsp_timeout")),
        ("ok", "ok", ("defect", "rtsp", "rtsp_timeout")),
        ("off", "ok", ("defect", "rtsp", "rtsp_timeout")),
        ("ok", "deadline", "ok"),
        ("off", "off", "ok"),
    ]
    for k, outcomes in enumerate(plan):
        sweep = health.start_sweep(["tcp", "onvif", "login", "rtsp"], "all", at=T0 + dt.timedelta(minutes=5 * k))
        at = T0 + dt.timedelta(minutes=5 * k, seconds=1)
        results = []
        for cid, o in zip((a, b, c), outcomes, strict=True):
            o, stage, cause = (o, None, None) if isinstance(o, str) else o
            results.append(_result(cid, at, o, stage=stage, cause=cause))
        summary = health.record(results, sweep)
        assert (summary.written, summary.duplicate, summary.unknown_camera) == (3, 0, 0)
        health.finish_sweep(sweep)
    # a fails every other check: ON throughout; b: OFF, then two good checks make it ON, a deadline changes
    # nothing; c: ON, VLOST after three rtsp failures, ON again after two good checks
    assert _status(inventory, a) == "ON"
    assert _status(inventory, b) == "ON"
    assert _status(inventory, c) == "ON"
    events = {
        cid: [(e["event"], e["previous"], e["stage"], e["cause"]) for e in reversed(health.events(camera_id=cid))]
        for cid in (a, b, c)
    }
    assert events[a] == [("ON", None, "login", None)]
    assert events[b] == [("OFF", None, "tcp", "timeout"), ("ON", "OFF", "login", None)]
    assert events[c] == [
        ("ON", None, "login", None),
        ("VLOST", "ON", "rtsp", "rtsp_timeout"),
        ("ON", "DEFECT", "login", None),
    ]
    latest = health.latest(b)
    assert latest is not None and latest["outcome"] == "off" and latest["stages"][0][0] == "tcp"
    with inventory.engine.connect() as conn:
        checks = conn.execute(select(func.sum(health_daily.c.checks), func.sum(health_daily.c.ok))).one()
    assert tuple(checks) == (17, 8)  # 18 results, one deadline; 8 good


def test_a_redelivered_shard_counts_nothing_twice(inventory):
    health = Health(inventory)
    ids = _cameras(inventory, 4)
    sweep = health.start_sweep(["tcp", "onvif"], "all")
    first = [_result(cid, T0, "ok" if cid % 2 else "off", offset=0.5) for cid in ids[:2]]
    assert health.record(first, sweep).written == 2
    # the shard runs again on another worker (other timings), together with the cameras it had not reached
    again = [_result(cid, T0 + dt.timedelta(seconds=9), "off", offset=9.0) for cid in ids]
    summary = health.record([*again, _result(99999, T0, "ok")], sweep)
    assert (summary.written, summary.duplicate, summary.unknown_camera) == (2, 2, 1)
    assert health.record(again, sweep).written == 0
    with inventory.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(health_results)).scalar() == 4
        assert conn.execute(select(func.sum(health_daily.c.checks))).scalar() == 4
        assert conn.execute(select(func.count()).select_from(health_events)).scalar() == 4
        kept = conn.execute(select(health_results.c.at).where(health_results.c.camera_id == ids[0])).scalar()
    assert kept.replace(tzinfo=dt.UTC) == T0  # the first delivery's row stays
    counts = health.finish_sweep(sweep)
    assert sum(counts["outcome"].values()) == 4
    assert counts["cause"] == {"tcp": {"timeout": sum(1 for cid in ids[:2] if not cid % 2) + 2}}


def _simulate(inventory, health, ids, days: int = 3, seed: int = 8) -> None:
    """Sweeps every 47 minutes for ``days`` days; each camera drifts between good and bad with flaky checks."""
    rng = random.Random(seed)
    good = dict.fromkeys(ids, True)
    t = T0 + dt.timedelta(hours=3, minutes=11)
    while t < T0 + dt.timedelta(days=days):
        sweep = health.start_sweep(["tcp", "onvif", "login"], "all", at=t)
        batch = []
        for i, cid in enumerate(ids):
            if rng.random() < 0.12:
                good[cid] = not good[cid]
            flaky = rng.random() < 0.15
            outcome = "ok" if good[cid] != flaky else rng.choice(["off", "defect"])
            if rng.random() < 0.03:
                outcome = "deadline"
            at = t + dt.timedelta(seconds=13 * i + rng.randrange(5))
            if i == 0 and t < T0 + dt.timedelta(hours=20):
                continue  # the first camera is unknown until the evening of the first day
            batch.append(_result(cid, at, outcome, offset=round(rng.uniform(-2, 2), 3)))
        health.record(batch, sweep)
        t += dt.timedelta(minutes=47)


def _by_hand(events, cids, a, b):
    """Seconds ON and seconds with a known status over [a, b), from the events alone."""
    online = known = 0.0
    for cid in cids:
        mine = sorted((e for e in events if e[0] == cid), key=lambda e: (e[1], e[3]))
        for k, (_, at, status, _id) in enumerate(mine):
            end = mine[k + 1][1] if k + 1 < len(mine) else dt.datetime.max.replace(tzinfo=dt.UTC)
            lo, hi = max(at, a), min(end, b)
            if lo < hi:
                seconds = (hi - lo).total_seconds()
                known += seconds
                online += seconds if status == "ON" else 0.0
    return online, known


def test_online_rate_matches_a_hand_computation_over_the_recorded_events(inventory):
    health = Health(inventory)
    ids = _cameras(inventory, 6)
    _simulate(inventory, health, ids)
    with inventory.engine.connect() as conn:
        rows = conn.execute(
            select(health_events.c.camera_id, health_events.c.at, health_events.c.status, health_events.c.id)
        ).all()
    events = [
        (cid, at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at, status, eid) for cid, at, status, eid in rows
    ]
    assert len(events) > 30  # statuses changed inside and across days
    day = dt.timedelta(days=1)
    periods = [
        (T0 + dt.timedelta(hours=10, minutes=17, seconds=3), T0 + dt.timedelta(hours=14)),  # inside a day
        (T0 + dt.timedelta(hours=22, minutes=30), T0 + day + dt.timedelta(hours=1, minutes=45)),  # across midnight
        (T0 - day, T0 + 2 * day + dt.timedelta(hours=7, minutes=13, seconds=29)),  # before the first event on
        (T0 + day, T0 + 3 * day),  # whole days only
        (T0 + dt.timedelta(hours=5), T0 + 2 * day),
        (T0 + 2 * day + dt.timedelta(hours=23), T0 + 10 * day),  # into the open intervals
    ]
    scopes = [({"camera_id": cid}, [cid]) for cid in ids]
    scopes += [({"region": "3713"}, ids[:4]), ({"region": "371311"}, ids[:2]), ({}, ids)]
    for a, b in periods:
        for kwargs, cids in scopes:
            got = health.online_rate(a, b, now=LATER, **kwargs)
            online, known = _by_hand(events, cids, a, b)
            assert (got.online_s, got.known_s) == (online, known), (a, b, kwargs)
            assert got.rate == (online / known if known else None)
    # every region at once (each with its sub-regions) equals asking region by region
    by_region = health.online_by_region(periods[2][0], periods[2][1], now=LATER)
    assert set(by_region) == {"3713", "371311", "371312", "371402"}
    for code, rate in by_region.items():
        one = health.online_rate(periods[2][0], periods[2][1], region=code, now=LATER)
        assert (rate.online_s, rate.known_s, rate.cameras) == (one.online_s, one.known_s, one.cameras)
    # the period's end is cut at "now": nothing is known about the future
    now = T0 + 2 * day + dt.timedelta(hours=12)
    got = health.online_rate(T0, LATER, now=now)
    assert (got.online_s, got.known_s) == _by_hand(events, ids, T0, now)
    # the first camera's time before its first check is unknown, not offline
    first = health.online_rate(T0, T0 + dt.timedelta(hours=20), camera_id=ids[0], now=LATER)
    assert (first.known_s, first.rate) == (0.0, None)


def test_clock_drift_per_day_and_raw_retention(inventory):
    health = Health(inventory)
    (cid,) = _cameras(inventory, 1)
    offsets = {0: [1.0, 2.0, 3.0], 1: [4.0, 5.5], 2: [None, 7.0]}
    for d, values in offsets.items():
        for k, off in enumerate(values):
            sweep = health.start_sweep(["onvif"])
            at = T0 + dt.timedelta(days=d, hours=23, minutes=k)
            health.record([_result(cid, at, "ok", offset=off)], sweep)
    days = health.drift(cid)
    assert [(x.day.day, x.samples, x.min_s, x.max_s, x.mean_s) for x in days] == [
        (20, 3, 1.0, 3.0, 2.0),
        (21, 2, 4.0, 5.5, 4.75),
        (22, 1, 7.0, 7.0, 7.0),
    ]
    assert health.drift_rate(days) == 2.5
    assert [o for _, o in health.drift_samples(cid)] == [1.0, 2.0, 3.0, 4.0, 5.5, 7.0]
    # raw results older than VMS_HEALTH_RAW_DAYS go; the daily figures, events and latest result stay
    deleted = health.prune(now=T0 + dt.timedelta(days=1, hours=23, minutes=30) + dt.timedelta(days=7))
    assert deleted == 5
    assert [o for _, o in health.drift_samples(cid)] == [7.0]
    assert len(health.drift(cid)) == 3 and health.latest(cid) is not None


def test_cameras_status_is_put_back_after_an_import_overwrote_it(inventory):
    health = Health(inventory)
    (cid,) = _cameras(inventory, 1)
    health.record([_result(cid, T0, "defect")], health.start_sweep(["onvif"]))
    assert _status(inventory, cid) == "DEFECT"
    with inventory.engine.begin() as conn:
        conn.execute(update(cameras).where(cameras.c.id == cid).values(status="ON"))
    health.record([_result(cid, T0 + dt.timedelta(minutes=5), "defect")], health.start_sweep(["onvif"]))
    assert _status(inventory, cid) == "DEFECT"
    assert "ENUM-STATUS" not in inventory.camera_problems(cid)  # DEFECT is a value of the Status field


def test_stored_quality_problems_stay_equal_to_a_fresh_check_when_the_status_changes(inventory):
    row = {"local_id": "cam-x", "name": "Camera X", "ip_address": "10.9.1.1", "status": "BROKEN"}
    kind = SourceKind.LEDGER
    inventory.ingest_observations(
        [Observation("ledger", kind, observation_key(row), row)],
        source="ledger",
        kind=kind,
        snapshot=True,
        actor="test",
    )
    (cid,) = _cameras_ids(inventory)
    assert "ENUM-STATUS" in inventory.camera_problems(cid)
    Health(inventory).record([_result(cid, T0, "ok")], Health(inventory).start_sweep(["onvif"]))
    assert _status(inventory, cid) == "ON"
    stored, _ = inventory.quality()
    fresh, _ = inventory.quality_from_scratch()
    assert stored.problems == fresh.problems
    assert inventory.camera_problems(cid) == fresh.problems.get(cid, [])
    assert "ENUM-STATUS" not in inventory.camera_problems(cid)


def _cameras_ids(inventory):
    with inventory.engine.connect() as conn:
        return list(conn.execute(select(cameras.c.id).order_by(cameras.c.id)).scalars())


def test_a_late_result_is_stored_and_counted_but_does_not_move_the_status(inventory):
    health = Health(inventory)
    (cid,) = _cameras(inventory, 1)
    health.record([_result(cid, T0 + dt.timedelta(minutes=10), "ok")], health.start_sweep(["onvif"]))
    # an older sweep's shard arrives after a newer one (a worker was slow): three failures, all older
    for k in range(3):
        summary = health.record([_result(cid, T0 + dt.timedelta(minutes=k), "off")], health.start_sweep(["onvif"]))
        assert (summary.written, summary.late, summary.events) == (1, 1, 0)
    assert _status(inventory, cid) == "ON"
    with inventory.engine.connect() as conn:
        assert conn.execute(select(func.sum(health_daily.c.checks))).scalar() == 4


def _together(*calls):
    """Run the calls in threads started at the same moment; their results (or the first exception)."""
    barrier = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def run(i, fn):
        barrier.wait(timeout=10)
        try:
            out[i] = fn()
        except Exception as exc:  # reported below
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    for r in out:
        if isinstance(r, Exception):
            raise r
    return out


def test_concurrent_writers_count_each_result_once_and_lose_no_update(inventory):
    health = Health(inventory)
    ids = _cameras(inventory, 6)
    # the same shard delivered twice at the same time (a worker presumed dead was only slow)
    sweep = health.start_sweep(["onvif"])
    batch = [_result(cid, T0, "ok") for cid in ids]
    first, second = _together(lambda: health.record(batch, sweep), lambda: health.record(batch, sweep))
    assert first.written + second.written == len(ids)
    assert first.duplicate + second.duplicate == len(ids)
    # two sweeps checking the same cameras at once: both failures count toward leaving ON (no lost update)
    at = T0 + dt.timedelta(minutes=5)
    s1, s2 = health.start_sweep(["onvif"]), health.start_sweep(["rtsp"])
    _together(
        lambda: health.record([_result(cid, at, "off") for cid in ids], s1),
        lambda: health.record([_result(cid, at, "off") for cid in ids], s2),
    )
    with inventory.engine.connect() as conn:
        streaks = conn.execute(select(health_latest.c.status, health_latest.c.streak)).all()
        assert conn.execute(select(func.sum(health_daily.c.checks))).scalar() == 3 * len(ids)
        assert conn.execute(select(func.count()).select_from(health_events)).scalar() == len(ids)
    assert {tuple(r) for r in streaks} == {("ON", 2)}
    health.record([_result(cid, at + dt.timedelta(minutes=5), "off") for cid in ids], health.start_sweep(["onvif"]))
    assert {_status(inventory, cid) for cid in ids} == {"OFF"}


def test_times_in_other_zones_or_naive_are_utc_and_a_deadline_first_sets_nothing(inventory):
    health = Health(inventory)
    a, b = _cameras(inventory, 2)
    beijing = dt.timezone(dt.timedelta(hours=8))
    sweep = health.start_sweep(["onvif"])
    summary = health.record([_result(a, T0.astimezone(beijing), "ok"), _result(b, T0, "deadline")], sweep)
    assert (summary.written, summary.events) == (2, 1)
    assert health.events(camera_id=a)[0]["at"] == T0
    assert health.latest(b)["status"] is None and _status(inventory, b) is None
    health.record([_result(b, T0.replace(tzinfo=None) + dt.timedelta(minutes=5), "off")], health.start_sweep(["x"]))
    assert health.events(camera_id=b)[0]["at"] == T0 + dt.timedelta(minutes=5)
    assert health.online_rate(T0, T0 + dt.timedelta(hours=1), now=LATER).known_s == 3600 + 3300
