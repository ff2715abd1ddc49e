"""Operations (vms.jobs.operations) over a real database (SQLite and PostgreSQL) and a simulated fleet of hanging
devices: at most two run at once in a process, the rest wait in order; a queued one cancelled never runs; a cancel
asked through another process's manager reaches the runner through the row; an operation a dead process left
queued or running is marked failed when a process starts its operations, a live one's is left alone."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from probes.sim import SimFleet
from tests.fleets import onvif_fleet, pid_base_host
from vms.discovery.service import Discovery, DiscoveryRequest
from vms.errors import ValidationFailed
from vms.inventory.credentials import Cipher, add_credential
from vms.jobs.operations import Operations, manager, plan
from vms.store.models import operations, utcnow

COUNT = 4
# Every camera hangs 1.5 s at the onvif stage, one at a time: a sweep lasts ~6 s, far longer than the test's steps.
SLOW = {"stages": ["tcp", "onvif"], "timeouts": {"tcp": 1.0, "onvif": 1.5}, "concurrency": 1, "shard_size": 1}


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    with onvif_fleet(COUNT, pid_base_host(20, spread=40)) as running:
        yield running


@pytest.fixture
def hanging(inventory: Any, fleet: SimFleet) -> Iterator[Any]:
    """The fleet registered in the inventory, then every device hanging."""
    with inventory.session() as s:
        add_credential(s, Cipher(inventory.settings.fernet_key()), name="fleet",
                       username=fleet.credentials.default_username, password=fleet.credentials.default_password,
                       default=True, actor="test")
    outcome = asyncio.run(Discovery(inventory).run(DiscoveryRequest(targets=fleet.device_urls, call_timeout=3.0)))
    assert outcome.registered == COUNT, outcome.failures
    healthy = list(fleet.devices)
    fleet.server.update_devices([replace(d, faults=frozenset({"hang"})) for d in healthy])
    try:
        yield inventory
    finally:
        fleet.server.update_devices(healthy)


def _until(ops: Operations, op_id: int, check: Any, timeout: float = 30.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        op = ops.get(op_id)
        if check(op) or time.monotonic() > end:
            return op
        time.sleep(0.05)


def test_two_run_at_once_the_rest_wait_and_cancels_stop_them(hanging):
    ops = Operations(hanging)  # max_running=2
    other = Operations(hanging)  # as another API process of the same database would
    try:
        first, second, third = (ops.start("sweep", SLOW, actor="apikey:ops", address="10.0.0.9") for _ in range(3))
        for op_id in (first, second):
            assert _until(ops, op_id, lambda o: o["progress"]["done"] >= 1)["status"] == "running"
        assert ops.get(third)["status"] == "queued"  # no third slot
        # a queued operation cancelled ends at once and never runs
        assert ops.cancel(third, actor="apikey:ops")["status"] == "cancelled"
        # a cancel asked elsewhere reaches this process through the row
        assert other.cancel(first, actor="apikey:ops")["cancel_requested"] is True
        assert _until(ops, first, lambda o: o["status"] != "running")["status"] == "cancelled"
        ops.cancel(second, actor="apikey:ops")
        done = _until(ops, second, lambda o: o["status"] != "running")
        assert done["status"] == "cancelled" and done["result"]["sweep_id"]
        assert ops.get(third)["started_at"] is None
    finally:
        ops.shutdown()
        other.shutdown()


def _row(s: Any, runner: str, status: str, seen_ago_s: float = 0.0) -> int:
    now = utcnow()
    return int(s.connection().scalar(operations.insert().values(
        kind="sweep", params={}, status=status, done=0, total=0, created_by="test", runner=runner,
        created_at=now, updated_at=now - timedelta(seconds=seen_ago_s), cancel_requested=False,
    ).returning(operations.c.id)))


def test_operations_of_a_dead_process_are_marked_failed_at_start(inventory):
    host = socket.gethostname()[:64]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    alive = Operations(inventory)  # a live manager of this process: its rows stay
    with inventory.session() as s:
        gone_running = _row(s, f"{host}:{dead_pid}:aaaa", "running")
        gone_queued = _row(s, f"{host}:{dead_pid}:aaaa", "queued")
        old_token = _row(s, f"{host}:{os.getpid()}:bbbb", "running")  # this pid, a manager that is gone
        silent = _row(s, "elsewhere:123:cccc", "running", seen_ago_s=3600)  # another host, quiet for an hour
        live_elsewhere = _row(s, "elsewhere:123:dddd", "running", seen_ago_s=5)
        live_here = _row(s, alive.runner, "running")
    ops = manager(inventory)  # what an API process does at start
    try:
        with inventory.session(write=False) as s:
            status = dict(s.execute(select(operations.c.id, operations.c.status)).all())
            errors = dict(s.execute(select(operations.c.id, operations.c.error)).all())
        assert {i: status[i] for i in (gone_running, gone_queued, old_token, silent)} == dict.fromkeys(
            (gone_running, gone_queued, old_token, silent), "failed"
        )
        assert status[live_elsewhere] == status[live_here] == "running"
        assert f"pid {dead_pid}" in errors[gone_running] and "stopped" in errors[gone_running]
        assert ops.recover() == 0  # once is enough
    finally:
        ops.shutdown()
        alive.shutdown()


def test_parameters_are_checked_before_anything_is_recorded(inventory):
    for kind, params, words in [
        ("scan", {}, "unknown operation kind 'scan'"),
        ("sweep", {"region": "nowhere"}, "unknown region 'nowhere'"),
        ("sweep", {"group": "region:"}, "needs a value"),
        ("sweep", {"timeouts": {"warp": 1}}, "timeouts"),
        ("sample", {"sample_set": "s", "frames": 0}, "frames"),
        ("trial", {"sample_set": "none"}, "unknown sample set 'none'"),
        ("discovery", {}, "give at least one range"),
        ("discovery", {"ranges": ["127.0.0.0/8"]}, "more than"),
    ]:
        with pytest.raises(ValidationFailed) as caught:
            plan(inventory, kind, params)
        assert words in str(caught.value), (kind, params, str(caught.value))
    assert plan(inventory, "sweep", {"region": "371311"}).params["region"] == "371311"  # a civil code
    with inventory.session(write=False) as s:
        assert s.execute(select(operations.c.id)).first() is None


def test_a_trial_runs_as_an_operation_with_its_progress(inventory):
    from tests.component.test_trials import _cameras, _dark, _store_set
    from vms.errors import Conflict

    cams = _cameras(inventory, 2)
    _store_set(inventory, "night", {cams[0]: _dark(3), cams[1]: _dark(2)})
    ops = Operations(inventory)
    try:
        op_id = ops.start("trial", {"sample_set": "night", "analyzers": ["motion"], "name": "t-night"},
                          actor="apikey:ops", address="10.0.0.9")
        op = _until(ops, op_id, lambda o: o["status"] not in ("queued", "running"))
        assert op["status"] == "done", op
        assert op["progress"] == {"stage": "analyze", "done": 5, "total": 5}
        assert op["result"]["name"] == "t-night" and op["result"]["status"] == "done"
        with pytest.raises(Conflict):  # the name is taken: refused before anything is recorded
            ops.start("trial", {"sample_set": "night", "name": "t-night"}, actor="apikey:ops")
        with pytest.raises(ValidationFailed, match="unknown analyzer 'magic'"):
            ops.start("trial", {"sample_set": "night", "analyzers": ["magic"]}, actor="apikey:ops")
    finally:
        ops.shutdown()


def test_a_sampling_run_makes_its_sample_set(hanging):
    from vms.frames.store import SampleSets

    ops = Operations(hanging)
    try:
        params = {"sample_set": "morning", "timeouts": {"frame": 1.0}, "deadline_s": 20}
        op = _until(ops, ops.start("sample", params, actor="apikey:ops"), lambda o: o["status"] not in
                    ("queued", "running"))
        assert op["status"] == "done", op
        assert op["result"]["stages"] == ["frame"] and op["result"]["planned"] == COUNT
        assert op["progress"]["done"] == op["progress"]["total"] == COUNT
        assert SampleSets(hanging).get("morning") is not None
    finally:
        ops.shutdown()


def test_a_discovery_of_hanging_devices_is_cancelled(hanging, fleet):
    ops = Operations(hanging)
    try:
        # one device at a time, each answering nothing for 2 s: ~8 s unless cancelled
        params = {"targets": fleet.device_urls, "call_timeout": 2.0, "concurrency": 1}
        op_id = ops.start("discovery", params, actor="apikey:ops")
        assert _until(ops, op_id, lambda o: o["status"] != "queued")["status"] == "running"
        ops.cancel(op_id, actor="apikey:ops")
        op = _until(ops, op_id, lambda o: o["status"] != "running")
        assert op["status"] == "cancelled" and op["error"] is None, op
    finally:
        ops.shutdown()
