"""A local health sweep on several processes (vms.health.sweep, SweepRequest.processes): worker processes run
whole shards, each with its own database connection and the login budget of its shards' devices, and the sweep
gives what one process gives: every camera exactly one result, the same outcomes, stages, causes and statuses.
What the checks learnt of each device (media service addresses) comes back to the parent for the next sweep.
Real simulated devices registered by real discovery; every database test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from probes.health.check import StageTimeouts
from probes.sim import SimFleet, build_fleet
from tests.estates import register_estate
from tests.fleets import fleet_in_thread
from vms.health import sweep as sweep_module
from vms.health.sweep import SweepRequest, process_count, run_sweep, worker_pids
from vms.store.models import health_latest, health_results

COUNT = 10
OFFLINE, BROKEN, OLD_FIRMWARE = 1, 2, 3  # offline from the start; password changed after registration; no GetServices
STAGES = ("tcp", "onvif", "login", "stream")
TIMEOUTS = StageTimeouts(tcp=1.0, onvif=1.5, login=1.5, stream=2.0)


def _base_host() -> str:
    pid = os.getpid()  # per process: parallel runs never share addresses
    return f"127.{150 + pid % 40}.{(pid // 40) % 250}.1"


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    devices = build_fleet(
        COUNT,
        fault_mix={},
        faults_by_index={OFFLINE: {"offline"}, OLD_FIRMWARE: {"no_get_services"}},
        auth_by_index={i: "both" for i in range(COUNT)},
        base_host=_base_host(),
        port=0,
    )
    sim = SimFleet(devices=devices, discovery=False, rtsp=False, lock_period_s=600.0)
    with fleet_in_thread(sim) as running:
        yield running


@pytest.fixture
def healthy_fleet(fleet: SimFleet) -> Iterator[SimFleet]:
    initial = list(fleet.devices)
    fleet.server.update_devices(initial)
    fleet.server.reset_accounts()
    yield fleet
    fleet.server.update_devices(initial)
    fleet.server.reset_accounts()


def _register(inv, fleet: SimFleet) -> None:
    register_estate(inv, fleet, OFFLINE)  # its ledger camera is not checkable, in one process or several


def _results(inv, sweep_id: int) -> dict[int, tuple[str, str | None, str | None]]:
    with inv.session(write=False) as s:
        rows = s.execute(
            select(health_results.c.camera_id, health_results.c.outcome, health_results.c.stage,
                   health_results.c.cause).where(health_results.c.sweep_id == sweep_id)
        ).all()
    by_camera: dict[int, tuple[str, str | None, str | None]] = {}
    for cid, outcome, stage, cause in rows:
        assert cid not in by_camera, f"camera {cid} has two results in sweep {sweep_id}"
        by_camera[cid] = (outcome, stage if outcome != "ok" else None, cause)
    return by_camera


def _statuses(inv) -> dict[int, str | None]:
    with inv.session(write=False) as s:
        return dict(s.execute(select(health_latest.c.camera_id, health_latest.c.status)).all())  # type: ignore[arg-type]


def test_a_sweep_on_two_processes_gives_what_one_process_gives(inventory, healthy_fleet):
    fleet = healthy_fleet
    _register(inventory, fleet)
    devices = list(fleet.server.devices)
    devices[BROKEN] = replace(devices[BROKEN], faults=frozenset({"wrong_password"}), password="changed-by-someone")
    fleet.server.update_devices(devices)
    sweep_module._MEMORY.devices.clear()  # this test's devices only
    req = SweepRequest(stages=STAGES, timeouts=TIMEOUTS, concurrency=16, shard_size=3)

    one = run_sweep(inventory, replace(req, processes=1))
    statuses_one = _statuses(inventory)
    results_one = _results(inventory, one["sweep_id"])
    learnt_one = dict(sweep_module._MEMORY.devices)
    sweep_module._MEMORY.devices.clear()  # the workers learn it again, send it back

    two = run_sweep(inventory, replace(req, processes=2))
    pids = worker_pids()
    assert pids and os.getpid() not in pids  # the shards ran in worker processes
    results_two = _results(inventory, two["sweep_id"])

    assert len(results_one) == COUNT and set(results_two) == set(results_one)
    assert results_two == results_one
    assert {r[0] for r in results_one.values()} == {"ok", "off", "defect"}
    for summary in (one, two):
        assert summary["planned"] == COUNT + 1 and summary["checked"] == COUNT and summary["not_checkable"] == 1
        assert summary["outcome"] == {"ok": COUNT - 2, "off": 1, "defect": 1}, summary
    assert _statuses(inventory) == statuses_one  # the same results change nothing
    assert set(statuses_one.values()) == {"ON", "OFF", "DEFECT"}
    # what the workers learnt of each device came back: the same service addresses as one process learnt
    learnt_two = sweep_module._MEMORY.devices
    assert set(learnt_two) == set(learnt_one) and len(learnt_one) >= COUNT - 2
    assert all(learnt_two[k].media == v.media and learnt_two[k].services == v.services for k, v in learnt_one.items())
    with inventory.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(health_results)) == 2 * COUNT


def test_how_many_processes_a_local_sweep_uses(inventory):
    req = SweepRequest(stages=STAGES)
    assert process_count(inventory, req, 100, 1) == 1  # one shard: one process
    assert process_count(inventory, req, 1000, 4) == 1  # small sweeps stay in this process
    cores = len(os.sched_getaffinity(0))
    assert process_count(inventory, req, 10_000, 20) == min(cores, 20)
    assert process_count(inventory, replace(req, processes=1), 10_000, 20) == 1
    assert process_count(inventory, replace(req, processes=3), 10_000, 2) == 2  # never more than shards
    with pytest.raises(ValueError, match="processes"):
        replace(req, processes=-1).validate()
    assert SweepRequest.from_json(replace(req, processes=3).to_json()).processes == 3
