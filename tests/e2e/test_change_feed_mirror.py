"""A command system's mirror: a client holding a read key follows GET /api/v1/changes over real HTTP (uvicorn on a
free port) and stays exactly equal to the database through an import, a discovery of simulated ONVIF devices, an
edit, a removal by a snapshot import and health status changes (a real sweep over the devices). Without a key:
401 (reads closed); a read key writing: 403. Camera reads carry an ETag and answer If-None-Match with 304."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.common import public_camera
from probes.health.check import StageTimeouts
from probes.sim import SimFleet
from tests.estates import register_estate
from tests.fleets import fleet_in_thread
from tests.services import serve_in_thread
from vms.access.apikeys import create_key
from vms.health.sweep import SweepRequest, run_sweep
from vms.inventory.service import Inventory
from vms.store import repository as repo

OFFLINE = 2  # of 3 devices: registered by an earlier discovery, no listener: OFF at its first check
HEADER = "设备编码,设备名称,经度,纬度\n"


def _base_host() -> str:
    pid = os.getpid()  # per process: parallel runs never share addresses
    return f"127.{60 + pid % 40}.{(pid // 40) % 250}.1"


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    sim = SimFleet(
        3,
        fault_mix={},
        faults_by_index={OFFLINE: {"offline"}},
        base_host=_base_host(),
        port=0,
        rtsp=False,
        discovery=False,
        lock_period_s=600.0,
    )
    with fleet_in_thread(sim) as running:
        yield running


@pytest.fixture
def server(inventory: Inventory) -> Iterator[str]:
    """The API over the test's database with reads closed, served by uvicorn in a thread; its base URL."""
    closed = Inventory(inventory.settings.model_copy(update={"api_open_reads": False}))
    try:
        with serve_in_thread(create_app(closed, bind_host="127.0.0.1"), start_timeout=20) as url:
            yield url
    finally:
        closed.engine.dispose()


class Mirror:
    """What a command system keeps: the cameras by id, and the last seq it applied."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.cameras: dict[int, dict[str, Any]] = {}
        self.seq = 0

    def catch_up(self, limit: int = 4) -> list[dict[str, Any]]:
        applied: list[dict[str, Any]] = []
        for _ in range(500):  # bounded
            r = self.http.get("/api/v1/changes", params={"since": self.seq, "limit": limit})
            assert r.status_code == 200, r.text
            page = r.json()
            for item in page["items"]:
                assert item["seq"] > self.seq
                if item["op"] == "remove":
                    self.cameras.pop(item["camera_id"], None)
                else:
                    self.cameras[item["camera_id"]] = item["record"]
                self.seq = item["seq"]
                applied.append(item)
            self.seq = page["next"]
            if not page["more"]:
                assert page["next"] == page["head"]
                return applied
        raise AssertionError("the feed never ended")


def _database(inventory: Inventory, http: httpx.Client) -> dict[int, dict[str, Any]]:
    """Every live camera as the API shows it (the public form, JSON), read straight from the database."""
    _, rows = inventory.list_cameras(repo.CameraFilter(), limit=None)
    body = httpx.Response(200, content=_json([public_camera(r) for r in rows])).json()
    return {r["id"]: r for r in body}


def _json(value: Any) -> bytes:
    from pydantic_core import to_json

    return to_json(value)


def _ledger(path: Path, ids: range) -> Path:
    lines = [HEADER, *(f"37131100001320{i:06d},路口{i},118.{300 + i},35.{100 + i}\n" for i in ids)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_a_read_key_mirrors_the_inventory_through_the_change_feed(inventory, server, fleet, tmp_path):
    reader = create_key(inventory, "command-system", "read", actor="test")
    anonymous = httpx.Client(base_url=server, timeout=10)
    assert anonymous.get("/api/v1/changes").status_code == 401  # reads closed: no key, no feed
    assert anonymous.get("/api/v1/cameras").status_code == 401
    http = httpx.Client(base_url=server, headers={"X-API-Key": reader}, timeout=10)
    mirror = Mirror(http)

    def in_sync(step: str) -> list[dict[str, Any]]:
        applied = mirror.catch_up()
        assert mirror.cameras == _database(inventory, http), step
        return applied

    assert in_sync("empty") == []

    inventory.import_file(_ledger(tmp_path / "a.csv", range(1, 6)), source="ledger:city")  # 1. an import
    assert [i["op"] for i in in_sync("import")] == ["create"] * 5

    ids = register_estate(inventory, fleet, OFFLINE)  # 2. discovery registers the devices (and two more)
    applied = in_sync("discovery")
    assert {i["camera_id"] for i in applied} >= set(ids.values()) and len(mirror.cameras) == 5 + 3 + 1

    # 3. an edit; a read key may not write
    first = min(mirror.cameras)
    body = {"fields": {"name": "沂河路口东北角"}}
    assert http.patch(f"/api/v1/cameras/{first}", json=body).status_code == 403
    inventory.edit_camera(str(first), body["fields"], actor="test")
    assert [(i["op"], i["camera_id"]) for i in in_sync("edit")] == [("update", first)]
    assert mirror.cameras[first]["name"] == "沂河路口东北角"

    # 4. a removal: the snapshot import without its 5th row
    gone = max(r["id"] for r in mirror.cameras.values() if (r["device_id"] or "").endswith("000005"))
    inventory.import_file(_ledger(tmp_path / "b.csv", range(1, 5)), source="ledger:city")
    applied = in_sync("removal")
    assert [(i["op"], i["camera_id"], i["gb_id"]) for i in applied] == [("remove", gone, "37131100001320000005")]
    assert gone not in mirror.cameras

    # 5. status changes: a health sweep over the devices (two answer, one is offline)
    timeouts = StageTimeouts(tcp=1.0, onvif=1.0, login=1.5, stream=2.0, rtsp=4.0, snapshot=2.0)
    summary = run_sweep(inventory, SweepRequest(stages=("tcp",), timeouts=timeouts, concurrency=8))
    assert summary["outcome"] == {"ok": 2, "off": 1}, summary
    applied = in_sync("sweep")
    assert [(i["camera_id"], i["op"]) for i in applied] == [(ids[OFFLINE], "status")]  # discovery had said ON
    assert mirror.cameras[ids[OFFLINE]]["status"] == "OFF" and mirror.cameras[ids[0]]["status"] == "ON"

    # A client that lost everything after the import resumes from the seq it had then, and agrees again.
    late = Mirror(http)
    late.catch_up(limit=1000)
    assert late.cameras == mirror.cameras and late.seq == mirror.seq

    # ETag: the same read is 304 until anything changes; any change moves the feed's head and so the ETag.
    listing = http.get("/api/v1/cameras", params={"limit": 3})
    tag = listing.headers["etag"]
    assert tag.startswith(f'W/"{mirror.seq}-')
    again = http.get("/api/v1/cameras", params={"limit": 3}, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    other = http.get("/api/v1/cameras", params={"limit": 4}, headers={"If-None-Match": tag})
    assert other.status_code == 200 and other.headers["etag"] != tag
    one = http.get(f"/api/v1/cameras/{first}")
    assert http.get(f"/api/v1/cameras/{first}", headers={"If-None-Match": one.headers["etag"]}).status_code == 304
    inventory.edit_camera(str(first), {"name": "又改名"}, actor="test")
    assert http.get("/api/v1/cameras", params={"limit": 3}, headers={"If-None-Match": tag}).status_code == 200
    assert http.get(f"/api/v1/cameras/{first}", headers={"If-None-Match": one.headers["etag"]}).status_code == 200
    in_sync("after the ETag checks")
