"""Operations through the HTTP API, against a simulated ONVIF fleet on loopback and a real database (SQLite and
PostgreSQL): a discovery started with an operate key is followed to done and its cameras are registered; a sweep
of hanging devices is cancelled mid-way, ends "cancelled" and keeps the results its finished shards recorded; a read
key cannot start one (403), no key is 401; an unknown kind, a bad region, an unknown sample set or parameter are
422 with one line. Starts and cancels are audited with who and from where."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from probes.sim import SimFleet
from tests.fleets import onvif_fleet, pid_base_host
from vms.access.apikeys import create_key
from vms.inventory.credentials import Cipher, add_credential
from vms.store import repository as repo
from vms.store.models import health_results, health_sweeps

COUNT = 6


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with onvif_fleet(COUNT, pid_base_host(60, spread=40)) as running:
        yield running


@pytest.fixture
def api(inventory: Any) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    reader = create_key(inventory, "viewer", "read", actor="test")
    operator = create_key(inventory, "ops", "operate", actor="test")
    with TestClient(create_app(inventory), base_url="http://127.0.0.1:8000") as client:
        yield client, {"X-API-Key": reader}, {"X-API-Key": operator}


def _login(inventory: Any, fleet: SimFleet) -> None:
    with inventory.session() as s:
        add_credential(s, Cipher(inventory.settings.fernet_key()), name="fleet",
                       username=fleet.credentials.default_username, password=fleet.credentials.default_password,
                       default=True, actor="test")


def _follow(
    client: TestClient, headers: dict[str, str], op_id: int, done: Any, timeout: float = 60.0
) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/v1/operations/{op_id}", headers=headers)
        assert r.status_code == 200, r.text
        op = r.json()
        if done(op) or time.monotonic() > end:
            return op  # type: ignore[no-any-return]
        time.sleep(0.05)


def _finished(op: dict[str, Any]) -> bool:
    return op["status"] in ("done", "failed", "cancelled")


def _discover(client: TestClient, operator: dict[str, str], reader: dict[str, str], fleet: SimFleet) -> dict[str, Any]:
    r = client.post(
        "/api/v1/operations",
        json={"kind": "discovery", "params": {"targets": fleet.device_urls, "call_timeout": 3.0}},
        headers=operator,
    )
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/api/v1/operations/{r.json()['id']}"
    return _follow(client, reader, r.json()["id"], _finished)


def test_a_discovery_started_through_the_api_registers_the_fleet(api, inventory, fleet):
    client, reader, operator = api
    _login(inventory, fleet)
    op = _discover(client, operator, reader, fleet)
    assert op["status"] == "done", op
    assert op["kind"] == "discovery" and op["created_by"] == "apikey:ops"
    assert op["result"]["registered"] == COUNT and op["result"]["new"] == COUNT
    assert op["progress"]["done"] == op["progress"]["total"] > 0
    cams = client.get("/api/v1/cameras", params={"limit": 100}, headers=reader).json()
    assert cams["total"] == COUNT
    assert {c["ip_address"] for c in cams["items"]} == {d.host for d in fleet.devices}
    listed = client.get("/api/v1/operations", params={"kind": "discovery"}, headers=reader).json()["items"]
    assert [o["id"] for o in listed] == [op["id"]]
    with inventory.session(write=False) as s:
        started = [e for e in repo.audit_entries(s) if e.action == "operation.start"]
    assert len(started) == 1 and started[0].actor == "apikey:ops" and started[0].target == f"operation:{op['id']}"
    assert started[0].address == "testclient"  # TestClient's client address


def test_a_sweep_is_cancelled_midway_and_keeps_what_it_recorded(api, inventory, fleet):
    client, reader, operator = api
    _login(inventory, fleet)
    assert _discover(client, operator, reader, fleet)["status"] == "done"
    healthy = list(fleet.devices)
    fleet.server.update_devices([replace(d, faults=frozenset({"hang"})) for d in healthy])
    try:
        # One camera at a time (a shard each, recorded as it ends), each answering nothing for 1.5 s: ~9 s in all.
        params = {"stages": ["tcp", "onvif"], "timeouts": {"tcp": 1.0, "onvif": 1.5}, "concurrency": 1,
                  "shard_size": 1}
        r = client.post("/api/v1/operations", json={"kind": "sweep", "params": params}, headers=operator)
        assert r.status_code == 202, r.text
        op_id = r.json()["id"]
        running = _follow(client, reader, op_id, lambda o: o["progress"]["done"] >= 1 or _finished(o))
        assert running["status"] == "running" and running["progress"]["total"] == COUNT, running
        c = client.post(f"/api/v1/operations/{op_id}/cancel", headers=operator)
        assert c.status_code == 202 and c.json()["cancel_requested"] is True
        op = _follow(client, reader, op_id, _finished, timeout=30)
    finally:
        fleet.server.update_devices(healthy)
    assert op["status"] == "cancelled", op
    assert op["progress"]["done"] < COUNT
    sweep_id = op["result"]["sweep_id"]
    with inventory.session(write=False) as s:
        recorded = s.scalar(select(func.count()).where(health_results.c.sweep_id == sweep_id))
        finished_at = s.scalar(select(health_sweeps.c.finished_at).where(health_sweeps.c.id == sweep_id))
        cancels = [e for e in repo.audit_entries(s) if e.action == "operation.cancel"]
    assert 1 <= recorded < COUNT  # the shards that ended before the cancel stay recorded
    assert finished_at is not None  # the sweep is closed with them
    assert [(e.actor, e.target, e.address) for e in cancels] == [("apikey:ops", f"operation:{op_id}", "testclient")]
    # a finished operation cannot be cancelled again
    assert client.post(f"/api/v1/operations/{op_id}/cancel", headers=operator).status_code == 409


def test_who_may_start_and_what_is_refused(api):
    client, reader, operator = api
    body = {"kind": "sweep", "params": {}}
    assert client.post("/api/v1/operations", json=body).status_code == 401
    assert client.post("/api/v1/operations", json=body, headers=reader).status_code == 403
    assert client.get("/api/v1/operations", headers=reader).json() == {"items": []}  # nothing was started
    refused = {
        "unknown operation kind": {"kind": "reboot", "params": {}},
        "unknown region 'nowhere'": {"kind": "sweep", "params": {"region": "nowhere"}},
        "unknown sample set 'none-such'": {"kind": "trial", "params": {"sample_set": "none-such"}},
        "colour": {"kind": "sweep", "params": {"colour": "red"}},
        "bad range": {"kind": "discovery", "params": {"ranges": ["10.0.0.0/33"]}},
        "unknown stage": {"kind": "sweep", "params": {"stages": ["teleport"]}},
        "sample_set": {"kind": "sample", "params": {}},
    }
    for words, bad in refused.items():
        r = client.post("/api/v1/operations", json=bad, headers=operator)
        assert r.status_code == 422, (words, r.text)
        assert words in r.json()["detail"] and "\n" not in r.json()["detail"], r.text
    assert client.get("/api/v1/operations", headers=reader).json() == {"items": []}
    assert client.get("/api/v1/operations/12345", headers=reader).status_code == 404
    assert client.post("/api/v1/operations/12345/cancel", headers=operator).status_code == 404
    assert client.post("/api/v1/operations/12345/cancel", headers=reader).status_code == 403
