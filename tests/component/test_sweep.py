"""Health sweeps (vms.health.sweep) over a simulated fleet registered by real discovery, with RTSP from the real
GStreamer server: each fault ends in its status and cause once the hysteresis allows; a device that fails every
other sweep keeps its status; wrong credentials never lock an account; a re-run shard changes nothing; a stream
URI the device changed lands as an onvif observation; the sweep deadline gives "deadline"; cameras without an
ONVIF address are "not checkable", never OFF. Every database test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from probes.health.check import StageTimeouts
from probes.sim import SimFleet, build_fleet
from probes.sim.devices import DeviceSpec
from tests.estates import register_estate
from tests.fleets import rtsp_fleet_in_thread
from vms.health.service import Health
from vms.health.sweep import Group, SweepRequest, camera_ids, plan_sweep, run_shard, run_sweep
from vms.store import repository as repo
from vms.store.models import DeviceLogin, health_events, health_latest, health_results

ALL = ("tcp", "onvif", "login", "stream", "rtsp", "snapshot")
TIMEOUTS = StageTimeouts(tcp=1.0, onvif=1.0, login=1.5, stream=2.0, rtsp=4.0, snapshot=2.0)
COUNT = 9
OFFLINE = 1  # no listener from the start: registered by an earlier discovery, OFF at its first check
HANG, LOCKED, SMALL, MOVED, LOST, FLAKY = 2, 3, 4, 5, 6, 7  # faults set after the first sweep
HEALTHY = (0, 8)


def _base_host() -> str:
    pid = os.getpid()  # per process: parallel runs never share addresses
    return f"127.{100 + pid % 40}.{(pid // 40) % 250}.1"


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    devices = build_fleet(
        COUNT,
        fault_mix={},
        faults_by_index={OFFLINE: {"offline"}},
        auth_by_index={i: "both" for i in range(COUNT)},
        base_host=_base_host(),
        port=0,
        rtsp_mounts=COUNT,
    )
    sim = SimFleet(devices=devices, discovery=False, lock_period_s=600.0)
    with rtsp_fleet_in_thread(sim) as running:
        yield running


@pytest.fixture
def healthy_fleet(fleet: SimFleet) -> Iterator[SimFleet]:
    initial = list(fleet.devices)
    fleet.server.update_devices(initial)
    fleet.server.reset_accounts()
    yield fleet
    fleet.server.update_devices(initial)
    fleet.server.reset_accounts()


def _set(fleet: SimFleet, index: int, **changes: object) -> None:
    devices = list(fleet.server.devices)
    devices[index] = replace(devices[index], **changes)  # type: ignore[arg-type]
    fleet.server.update_devices(devices)


def _register(inv, fleet: SimFleet) -> dict[int, int]:
    ids = register_estate(inv, fleet, OFFLINE)
    assert len(set(ids.values())) == COUNT
    return ids


def _sweep(inv, stages: tuple[str, ...] = ALL, **kw: object) -> dict:
    return run_sweep(inv, SweepRequest(stages=stages, timeouts=TIMEOUTS, concurrency=16, **kw))  # type: ignore[arg-type]


def _status(inv, cid: int) -> tuple[str | None, str | None, str | None]:
    latest = Health(inv).latest(cid)
    assert latest is not None
    return latest["status"], latest["stage"], latest["cause"]


def _camera(inv, cid: int) -> dict:
    with inv.session(write=False) as s:
        row = repo.camera(s, cid)
    assert row is not None
    return row


def test_faults_end_in_their_status_and_cause_after_the_hysteresis(inventory, healthy_fleet):
    fleet = healthy_fleet
    ids = _register(inventory, fleet)
    first = _sweep(inventory)
    assert first["planned"] == COUNT + 1 and first["not_checkable"] == 1, first  # the ledger-only camera
    assert first["outcome"] == {"ok": COUNT - 1, "off": 1}, first
    assert first["cause"] == {"tcp": {"refused": 1}}
    assert _status(inventory, ids[OFFLINE]) == ("OFF", "tcp", "refused")  # from unknown: at once
    for i in set(range(COUNT)) - {OFFLINE}:
        assert _status(inventory, ids[i])[0] == "ON", i
        assert _camera(inventory, ids[i])["status"] == "ON"

    d: dict[int, DeviceSpec] = {i: fleet.device(i) for i in range(COUNT)}
    _set(fleet, HANG, faults=frozenset({"hang"}))
    _set(fleet, LOCKED, faults=frozenset({"lockout", "wrong_password"}), password="changed-by-someone")
    _set(fleet, SMALL, faults=frozenset({"snapshot_small"}))
    _set(fleet, MOVED, rtsp_url_base=d[MOVED].rtsp_url_base.replace(d[MOVED].rtsp_mount, d[0].rtsp_mount))
    _set(fleet, LOST, rtsp_url_base=d[LOST].rtsp_url_base.replace(d[LOST].rtsp_mount, "/no-such-mount"))
    summaries = []
    for n in range(4):
        _set(fleet, FLAKY, faults=frozenset({"hang"} if n % 2 == 0 else set()))  # fails every other sweep
        summaries.append(_sweep(inventory))
        if n < 2:  # two failures in a row: not yet enough to leave ON
            for i in (HANG, LOCKED, SMALL, LOST):
                assert _status(inventory, ids[i])[0] == "ON", (n, i)

    assert _status(inventory, ids[HANG]) == ("OFF", "onvif", "timeout")
    assert _status(inventory, ids[LOCKED]) == ("DEFECT", "login", "auth")
    assert _status(inventory, ids[SMALL]) == ("DEFECT", "snapshot", "snapshot_size")
    assert _status(inventory, ids[LOST]) == ("DEFECT", "rtsp", "rtsp_not_found")
    assert _status(inventory, ids[FLAKY])[0] == "ON"  # never three failures in a row: no change
    for i in (*HEALTHY, MOVED):
        assert _status(inventory, ids[i]) == ("ON", "snapshot", None), i
    assert _status(inventory, ids[OFFLINE])[0] == "OFF"
    for i, status in ((HANG, "OFF"), (LOCKED, "DEFECT"), (SMALL, "DEFECT"), (LOST, "DEFECT")):
        assert _camera(inventory, ids[i])["status"] == status

    events = Health(inventory).events(limit=100)
    by_camera = {(e["camera_id"], e["event"]) for e in events if e["previous"] is not None}
    assert by_camera == {(ids[HANG], "OFF"), (ids[LOCKED], "DEFECT"), (ids[SMALL], "DEFECT"), (ids[LOST], "VLOST")}
    assert sum(s["status_changed"] for s in summaries) == 4
    # wrong credentials never lock the account, sweep after sweep
    assert not fleet.is_locked(LOCKED) and fleet.failed_logins(LOCKED) < 3
    with inventory.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(DeviceLogin)) >= 1  # the budget persisted between sweeps

    # the stream URI the device changed is now the onvif source's, merged into the camera
    moved = _camera(inventory, ids[MOVED])
    assert moved["stream_uri"].endswith(d[0].rtsp_mount), moved["stream_uri"]
    with inventory.session(write=False) as s:
        live = repo.live_observations(s, [ids[MOVED]])[ids[MOVED]]
    assert [o.fields["stream_uri"] for o in live if o.source == "onvif"] == [moved["stream_uri"]]
    # merged at the first sweep that saw it (later sweeps find nothing to change); its RTSP check used the new URI
    assert _camera(inventory, ids[LOST])["stream_uri"].endswith("/no-such-mount")
    assert Health(inventory).latest(ids[LOST])["details"]["stream_uri"].endswith("/no-such-mount")
    # the ledger-only camera was never checked and is not OFF
    ledger = next(cid for cid in camera_ids(inventory, Group()) if cid not in ids.values())
    assert Health(inventory).latest(ledger) is None and _camera(inventory, ledger)["status"] is None
    last = summaries[-1]
    assert last["not_checkable"] == 1 and sum(last["outcome"].values()) == COUNT
    assert last["cause"]["login"] == {"auth": 1} and last["cause"]["onvif"] == {"timeout": 1}


def test_a_rerun_shard_changes_nothing_and_the_deadline_gives_deadline(inventory, healthy_fleet):
    fleet = healthy_fleet
    ids = _register(inventory, fleet)
    req = SweepRequest(stages=("tcp", "onvif", "login", "stream"), timeouts=TIMEOUTS, concurrency=16, shard_size=4)
    sweep_id, shards = plan_sweep(inventory, req)
    assert sorted(c for shard in shards for c in shard) == camera_ids(inventory, Group())
    assert len(shards) >= 2
    first = [asyncio.run(run_shard(inventory, sweep_id, shard, req)) for shard in shards]

    def stored() -> tuple[list, list, list]:
        with inventory.session(write=False) as s:
            return (
                s.execute(select(health_results).order_by(health_results.c.camera_id)).all(),
                s.execute(select(health_latest).order_by(health_latest.c.camera_id)).all(),
                s.execute(select(health_events).order_by(health_events.c.id)).all(),
            )

    before = stored()
    again = asyncio.run(run_shard(inventory, sweep_id, shards[0], req))  # a re-delivered shard
    assert again["written"] == 0 and again["duplicate"] == first[0]["written"] and again["events"] == 0
    assert stored() == before
    assert len(before[0]) == COUNT  # one result per checkable camera

    _set(fleet, HANG, faults=frozenset({"hang"}))
    slow = run_sweep(inventory, replace(req, deadline_s=0.5, timeouts=StageTimeouts(onvif=10.0)))
    # the hanging device is cut by the deadline (its onvif stage would wait 10 s); only the offline one is off
    assert slow["outcome"] == {"ok": COUNT - 2, "off": 1, "deadline": 1}, slow
    assert slow["duration_s"] < 8.0
    with inventory.session(write=False) as s:
        row = s.execute(
            select(health_results.c.outcome, health_results.c.cause)
            .where(health_results.c.sweep_id == slow["sweep_id"], health_results.c.camera_id == ids[HANG])
        ).one()
    assert tuple(row) == ("deadline", "deadline")
    assert _status(inventory, ids[HANG])[0] == "ON"  # a deadline changes nothing


def test_groups_select_cameras_by_tag_region_and_source(inventory, healthy_fleet):
    ids = _register(inventory, healthy_fleet)
    assert inventory.tag_camera(str(ids[0]), ["school", "ring-road"], actor="test") == ["ring-road", "school"]
    inventory.tag_camera(str(ids[8]), ["school"], actor="test")
    assert camera_ids(inventory, Group("tag", "school")) == sorted([ids[0], ids[8]])
    assert inventory.tag_camera(str(ids[8]), ["school"], remove=True, actor="test") == []
    assert camera_ids(inventory, Group("tag", "school")) == [ids[0]]
    assert len(camera_ids(inventory, Group("source", "onvif"))) == COUNT
    assert len(camera_ids(inventory, Group("source", "ledger:police"))) == 1
    tagged = run_sweep(inventory, SweepRequest(stages=("tcp", "onvif"), group=Group("tag", "school"),
                                               timeouts=TIMEOUTS))
    assert tagged["planned"] == 1 and tagged["outcome"] == {"ok": 1} and tagged["group"] == "tag:school"
    with inventory.session(write=False) as s:
        actions = [e.action for e in repo.audit_entries(s, 10)]
    assert "camera.tag" in actions and "camera.untag" in actions
    with pytest.raises(ValueError, match="need the frame stage"):
        run_sweep(inventory, SweepRequest(stages=("tcp",), sample_set="s"))
    with pytest.raises(ValueError, match="camera group"):
        Group.parse("building:3")
    req = SweepRequest(stages=("tcp",), group=Group("region", "371311"), deadline_s=30.0, shard_size=7)
    assert SweepRequest.from_json(req.to_json()) == req
