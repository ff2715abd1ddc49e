"""GET /metrics (Prometheus): the health figures after results recorded through Health.record parse with
prometheus_client's own text parser and equal the stored figures (and a hand computation); they are read at scrape
time (another app over the same database, as another API worker process, reports the same numbers; a new result
shows at the next scrape); access follows the API's read rule. SQLite and PostgreSQL (the inventory fixture)."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from api.app import create_app
from probes.health.results import CheckResult, StageResult
from vms.access.apikeys import create_key
from vms.catalog.domain import Observation, SourceKind
from vms.health.service import Health
from vms.inventory.ingest import observation_key
from vms.inventory.service import Inventory
from vms.store.models import cameras, health_latest

ONVIF = ["tcp", "onvif", "login", "stream"]
WITH_RTSP = [*ONVIF, "rtsp"]
HOUR = dt.timedelta(hours=1)


def _cameras(inventory, n: int) -> list[int]:
    rows = [{"local_id": f"m-{i}", "name": f"Metric camera {i}", "ip_address": f"10.8.0.{i + 1}"} for i in range(n)]
    obs = [Observation("ledger", SourceKind.LEDGER, observation_key(r), r) for r in rows]
    inventory.ingest_observations(obs, source="ledger", kind=SourceKind.LEDGER, snapshot=True, actor="test")
    with inventory.engine.connect() as conn:
        return list(conn.execute(select(cameras.c.id).order_by(cameras.c.id)).scalars())


def _result(cid: int, at: dt.datetime, outcome: str, stage: str, cause: str | None = None) -> CheckResult:
    stages = (StageResult(stage, outcome == "ok", 2.0, cause),)
    return CheckResult(cid, at, stages, outcome, stage, cause)  # type: ignore[arg-type]


def _sweep(health: Health, stages, group: str, at: dt.datetime, seconds: float, results) -> int:
    sweep = health.start_sweep(stages, group, at=at)
    assert health.record(results, sweep).written == len(results)
    health.finish_sweep(sweep, at=at + dt.timedelta(seconds=seconds))
    return sweep


def _scrape(client: TestClient, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def _history(inventory) -> tuple[list[int], dict[str, int]]:
    """a ON all along; b OFF until an hour ago, then ON (two good checks); c DEFECT; d only a deadline (unknown);
    e never checked. Schedules: every camera on the ONVIF stages two days ago; region:371311 with RTSP twice."""
    health = Health(inventory)
    a, b, c, d, e = _cameras(inventory, 5)
    now = dt.datetime.now(dt.UTC)
    s1 = _sweep(health, ONVIF, "all", now - 48 * HOUR, 30.0, [
        _result(a, now - 48 * HOUR, "ok", "stream"),
        _result(b, now - 48 * HOUR, "off", "tcp", "timeout"),
        _result(c, now - 48 * HOUR, "defect", "login", "auth"),
        _result(d, now - 48 * HOUR, "deadline", "onvif", "deadline"),
    ])
    _sweep(health, WITH_RTSP, "region:371311", now - 2 * HOUR, 5.0, [_result(b, now - 2 * HOUR, "ok", "rtsp")])
    s3 = _sweep(health, WITH_RTSP, "region:371311", now - HOUR, 7.5, [
        _result(b, now - HOUR, "ok", "rtsp"),
        _result(a, now - HOUR, "defect", "rtsp", "rtsp_timeout"),  # one failure: a stays ON (hysteresis)
    ])
    return [a, b, c, d, e], {"all": s1, "region": s3}


def _key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_metrics_equal_the_stored_figures(inventory):
    _ids, sweeps = _history(inventory)
    health = Health(inventory)
    with TestClient(create_app(inventory), base_url="http://127.0.0.1:8000") as client:
        got = _scrape(client)
    now = dt.datetime.now(dt.UTC)

    onvif, rtsp = ",".join(ONVIF), ",".join(WITH_RTSP)
    all_ = {"group": "all", "stages": onvif}
    region = {"group": "region:371311", "stages": rtsp}
    # the last finished sweep of each schedule: its duration, id, cameras by outcome, failures by stage and cause
    assert got[_key("vms_health_sweep_duration_seconds", **all_)] == pytest.approx(30.0)
    assert got[_key("vms_health_sweep_duration_seconds", **region)] == pytest.approx(7.5)
    assert got[_key("vms_health_sweep_id", **all_)] == sweeps["all"]
    assert got[_key("vms_health_sweep_id", **region)] == sweeps["region"]
    for name, labels in (("all", all_), ("region", region)):
        stored = health.sweep_counts(sweeps[name])
        outcomes = {k[1]: v for k, v in got.items() if k[0] == "vms_health_sweep_cameras" and
                    dict(k[1])["group"] == labels["group"]}
        assert {dict(lbl)["outcome"]: int(v) for lbl, v in outcomes.items()} == stored["outcome"]
        failures = {
            (dict(k[1])["stage"], dict(k[1])["cause"]): int(v)
            for k, v in got.items()
            if k[0] == "vms_health_sweep_failures" and dict(k[1])["group"] == labels["group"]
        }
        assert failures == {(st, ca): n for st, by in stored["cause"].items() for ca, n in by.items()}
    assert health.sweep_counts(sweeps["all"])["outcome"] == {"ok": 1, "off": 1, "defect": 1, "deadline": 1}
    assert got[_key("vms_health_sweep_failures", **region, stage="rtsp", cause="rtsp_timeout")] == 1

    # cameras by status: the health_latest statuses of current cameras, unknown for the rest
    with inventory.engine.connect() as conn:
        stored_status = dict(conn.execute(
            select(health_latest.c.status, func.count()).where(health_latest.c.status.is_not(None))
            .group_by(health_latest.c.status)
        ).all())
    statuses = {dict(k[1])["status"]: int(v) for k, v in got.items() if k[0] == "vms_health_cameras"}
    assert statuses == {"ON": 2, "OFF": 0, "DEFECT": 1, "unknown": 2}
    assert {k: v for k, v in statuses.items() if v and k != "unknown"} == stored_status

    # online rate over the last 24 h: a ON 24 h, b ON its last hour, c DEFECT 24 h (d, e: no known status)
    stored = health.online_rate(now - 24 * HOUR, now, now=now)
    assert stored.cameras == 3
    assert got[_key("vms_health_known_cameras", window="24h")] == 3
    assert got[_key("vms_health_known_seconds", window="24h")] == pytest.approx(stored.known_s, abs=5)
    assert got[_key("vms_health_online_seconds", window="24h")] == pytest.approx(stored.online_s, abs=5)
    assert got[_key("vms_health_online_ratio", window="24h")] == pytest.approx(stored.rate, abs=1e-4)
    assert got[_key("vms_health_online_ratio", window="24h")] == pytest.approx(25 / 72, abs=1e-4)  # by hand
    assert got[_key("vms_health_figures_up")] == 1
    # the process's default figures are there too
    assert any(name.startswith("process_") for name, _ in got)
    assert any(name.startswith("python_gc_") for name, _ in got)


def test_metrics_are_read_at_scrape_time_by_every_app(inventory, settings):
    ids, _ = _history(inventory)
    e = ids[4]
    other = Inventory(settings)  # what another `vms serve` worker process holds: its own engine
    try:
        with TestClient(create_app(inventory), base_url="http://127.0.0.1:8000") as one, \
                TestClient(create_app(other), base_url="http://127.0.0.1:8000") as two:
            first = _scrape(one)
            assert first[_key("vms_health_cameras", status="unknown")] == 2
            health = Health(inventory)
            now = dt.datetime.now(dt.UTC)
            sweep = _sweep(health, ONVIF, "tag:new", now - dt.timedelta(seconds=30), 3.0,
                           [_result(e, now - dt.timedelta(seconds=30), "ok", "stream")])
            for client in (one, two):
                got = _scrape(client)
                assert got[_key("vms_health_cameras", status="unknown")] == 1
                assert got[_key("vms_health_cameras", status="ON")] == 3
                assert got[_key("vms_health_sweep_id", group="tag:new", stages=",".join(ONVIF))] == sweep
                assert got[_key("vms_health_known_cameras", window="24h")] == 4
    finally:
        other.engine.dispose()


def test_metrics_follow_the_read_rule(inventory):
    inventory.settings = inventory.settings.model_copy(update={"api_open_reads": False})
    reader = create_key(inventory, "prometheus", "read", actor="test")
    with TestClient(create_app(inventory), base_url="http://127.0.0.1:8000") as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": "vms_forged"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer vms_forged"}).status_code == 401
        assert _scrape(client, **{"X-API-Key": reader})[_key("vms_health_figures_up")] == 1
        assert _scrape(client, Authorization=f"Bearer {reader}")[_key("vms_health_figures_up")] == 1
        # other API routes keep their rule: the same key reads them, none answers without it
        assert client.get("/api/v1/stats").status_code == 401


def test_the_scrape_online_rate_equals_the_health_service_over_any_window(inventory):
    """The scrape's own computation (no row per camera) against Health.online_rate, on a random history with
    status changes, deadlines and cameras never known, over windows that cut intervals anywhere."""
    import random

    from vms.health.figures import online_window

    rng = random.Random(8)
    ids = _cameras(inventory, 12)
    health = Health(inventory)
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    for k in range(40):
        at = t0 + dt.timedelta(minutes=47 * k)
        sweep = health.start_sweep(ONVIF, "all", at=at)
        results = []
        for cid in ids[:-2]:  # the last two are never checked
            o = rng.choice(["ok", "ok", "ok", "off", "defect", "deadline"])
            stage, cause = {"ok": ("stream", None), "off": ("tcp", "timeout"), "defect": ("login", "auth"),
                            "deadline": ("onvif", "deadline")}[o]
            results.append(_result(cid, at + dt.timedelta(seconds=rng.randint(0, 600)), o, stage, cause))
        health.record(results, sweep)
    end = t0 + dt.timedelta(minutes=47 * 40)
    windows = [(t0 - HOUR, end + HOUR), (t0 + 3 * HOUR, t0 + 9 * HOUR), (end - 24 * HOUR, end),
               (t0 + dt.timedelta(minutes=301), t0 + dt.timedelta(minutes=302))]
    for _ in range(6):
        a = t0 + dt.timedelta(seconds=rng.randint(0, 40 * 47 * 60))
        windows.append((a, a + dt.timedelta(seconds=rng.randint(1, 20 * 3600))))
    for lo, hi in windows:
        want = health.online_rate(lo, hi, now=hi)
        with inventory.engine.connect() as conn:
            got = online_window(conn, lo, hi)
        assert got.cameras == want.cameras, (lo, hi)
        assert got.known_s == pytest.approx(want.known_s, abs=1e-3), (lo, hi)
        assert got.online_s == pytest.approx(want.online_s, abs=1e-3), (lo, hi)
