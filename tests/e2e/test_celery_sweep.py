"""Sweeps on Celery (VMS_EXECUTOR=celery): a real Redis, two real `vms worker` processes, a simulated fleet with
slow devices so that a shard takes seconds; one worker is killed with SIGKILL (its whole process group: the machine
died) while it runs a shard. The shard goes back to the queue after the (short) visibility timeout and the other
worker runs it: every camera ends with exactly one result of the sweep, none is lost or counted twice, and the
counts equal those of the local executor over the same fleet. Every database test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from probes.health.check import StageTimeouts
from probes.sim import SimFleet, build_fleet
from tests.fleets import fleet_in_thread
from tests.services import RunningService, ServiceUnavailable, skip_or_fail, start_redis
from vms.catalog.domain import Observation, SourceKind
from vms.discovery.service import Discovery, DiscoveryRequest
from vms.health.sweep import SweepRequest, run_sweep
from vms.inventory.credentials import Cipher, add_credential
from vms.store.models import cameras, health_results

COUNT = 36
OFFLINE = (5, 23)  # no listener: OFF (tcp refused)
SLOW_S = (0.3, 0.5)  # every device answers each HTTP request after this long: a shard takes seconds
SHARD = 6
VISIBILITY_S = 8.0  # a shard of a dead worker is given to another one after this
STAGES = ("tcp", "onvif", "login", "stream")
TIMEOUTS = StageTimeouts(tcp=2.0, onvif=6.0, login=6.0, stream=8.0)
ROOT = Path(__file__).resolve().parents[2]


_DBS = itertools.count(1)


def _broker(redis: RunningService) -> str:
    """A Redis database of its own for each test: no message of an earlier test reaches this one's workers."""
    return f"{redis.url.rsplit('/', 1)[0]}/{next(_DBS)}"


def _base_host() -> str:
    pid = os.getpid()
    return f"127.{60 + pid % 30}.{(pid // 30) % 250}.1"


@pytest.fixture(scope="module")
def redis() -> Iterator[RunningService]:
    try:
        service = start_redis()
    except ServiceUnavailable as exc:
        skip_or_fail(exc)
    with service:
        yield service


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    devices = build_fleet(COUNT, fault_mix={}, faults_by_index={i: {"offline"} for i in OFFLINE},
                          base_host=_base_host(), port=0)
    sim = SimFleet(devices=devices, rtsp=False, discovery=False, slow_delay_s=SLOW_S, lock_period_s=600.0)
    with fleet_in_thread(sim) as running:
        yield running


def _register(inv, fleet: SimFleet) -> int:
    """Discovery registers the devices that answer (all quick then); the offline ones were registered by an
    earlier run; a ledger-only camera cannot be checked. Then every device turns slow. Returns the cameras."""
    initial = list(fleet.server.devices)
    fleet.server.update_devices(initial)
    with inv.session() as s:
        add_credential(s, Cipher(inv.settings.fernet_key()), name="estate", username=fleet.credentials.default_username,
                       password=fleet.credentials.default_password, default=True, actor="test")
    online = [d for d in fleet.devices if d.index not in OFFLINE]
    outcome = asyncio.run(Discovery(inv).run(DiscoveryRequest(targets=[d.url for d in online], call_timeout=3.0)))
    assert outcome.registered == len(online), outcome.failures
    offline = [fleet.device(i) for i in OFFLINE]
    inv.ingest_observations(
        [Observation("onvif", SourceKind.ONVIF, f"host_port:{d.host}:{d.port}",
                     {"ip_address": d.host, "port": d.port, "device_service_url": d.url, "mac": d.mac})
         for d in offline],
        source="onvif", kind=SourceKind.ONVIF, snapshot=False, actor="test",
    )
    inv.ingest_observations(
        [Observation("ledger:police", SourceKind.LEDGER, "local:L-1",
                     {"name": "Gate camera", "local_id": "L-1", "ip_address": "127.0.0.77"})],
        source="ledger:police", kind=SourceKind.LEDGER, snapshot=False, actor="test",
    )
    devices = list(initial)
    for i, d in enumerate(devices):
        if i not in OFFLINE:
            devices[i] = replace(d, faults=frozenset({"slow"}))
    fleet.server.update_devices(devices)
    with inv.session(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(cameras)) or 0)


class Worker:
    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vms", "worker", "--concurrency", "1", "--name", f"{name}@%h"],
            cwd=log.parent,  # no developer's .env
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the pool process dies with it
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def started(self) -> list[str]:
        return re.findall(r"(sweep \d+: shard of \d+ cameras \(\d+\.\.\d+\)) started", self.text())

    def done(self) -> list[str]:
        return re.findall(r"(sweep \d+: shard of \d+ cameras \(\d+\.\.\d+\)) done", self.text())

    def wait_ready(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if " ready." in self.text():
                return
            assert self.proc.poll() is None, f"worker {self.name} exited:\n{self.text()[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} not ready in {timeout:.0f}s:\n{self.text()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._out.close()


def _sweep_results(inv, sweep_id: int) -> list[tuple[int, str]]:
    with inv.session(write=False) as s:
        return [
            (int(cid), str(outcome))
            for cid, outcome in s.execute(
                select(health_results.c.camera_id, health_results.c.outcome)
                .where(health_results.c.sweep_id == sweep_id)
                .order_by(health_results.c.camera_id)
            )
        ]


def test_a_worker_killed_mid_shard_loses_no_camera(inventory, settings, fleet, redis, tmp_path):
    started = time.monotonic()
    total = _register(inventory, fleet)
    req = SweepRequest(stages=STAGES, timeouts=TIMEOUTS, concurrency=50, shard_size=SHARD)
    local = run_sweep(inventory, req)
    checkable = total - 1
    assert local["checked"] == checkable and local["not_checkable"] == 1, local
    assert local["outcome"] == {"ok": checkable - len(OFFLINE), "off": len(OFFLINE)}, local

    broker = _broker(redis)
    inventory.settings = inventory.settings.model_copy(
        update={"celery_broker": broker, "celery_visibility_timeout": VISIBILITY_S, "celery_wait_s": 180.0}
    )
    import vms.jobs.celery_app  # noqa: F401  (registers the celery executor)

    env = {k: v for k, v in os.environ.items() if not k.startswith("VMS_")}
    env.update(
        VMS_DATABASE_URL=settings.url,
        VMS_DATA_DIR=str(settings.data_dir),
        VMS_SECRET_KEY=settings.fernet_key().decode(),
        VMS_CELERY_BROKER=broker,
        VMS_CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_S),
        VMS_LOG_LEVEL="INFO",
        VMS_DEMO_FLEET="off",
        PYTHONPATH=str(ROOT),
    )
    workers = [Worker(name, env, tmp_path / f"{name}.log") for name in ("w1", "w2")]
    try:
        for w in workers:
            w.wait_ready()
        victim, survivor = workers
        summary: dict = {}
        failure: list[BaseException] = []

        def sweep() -> None:
            try:
                summary.update(run_sweep(inventory, req, executor="celery"))
            except BaseException as exc:  # reported below
                failure.append(exc)

        runner = threading.Thread(target=sweep, daemon=True)
        runner.start()
        end = time.monotonic() + 60
        while not victim.started() and time.monotonic() < end:
            time.sleep(0.02)
        taken = victim.started()
        assert taken, f"the first worker took no shard:\n{victim.text()[-3000:]}"
        victim.kill()  # SIGKILL, mid-shard: a shard takes seconds (slow devices)
        assert len(victim.done()) < len(victim.started()), "the shard finished before the kill"
        lost = victim.started()[-1]
        runner.join(150)
        assert not runner.is_alive(), "the sweep did not end"
        assert not failure, failure
    finally:
        for w in workers:
            w.stop()

    # the killed worker's shard was run again by the other one, after the visibility timeout
    assert lost in survivor.done(), (lost, survivor.done())
    sweep_id = summary["sweep_id"]
    rows = _sweep_results(inventory, sweep_id)
    ids = [cid for cid, _ in rows]
    assert len(ids) == len(set(ids)) == checkable  # every checkable camera exactly once
    assert not [cid for cid, outcome in rows if outcome == "deadline"]
    for key in ("planned", "checked", "not_checkable", "outcome", "cause"):
        assert summary[key] == local[key], (key, summary[key], local[key])
    assert time.monotonic() - started < 240


def test_a_killed_pool_process_gives_its_shard_back_at_once(inventory, settings, fleet, redis, tmp_path):
    """Only the pool process running a shard dies (SIGKILL; the worker lives on): the task is rejected and queued
    again at once (task_reject_on_worker_lost), long before the visibility timeout, and runs again."""
    total = _register(inventory, fleet)
    req = SweepRequest(stages=STAGES, timeouts=TIMEOUTS, concurrency=50, shard_size=SHARD)
    broker = _broker(redis)
    inventory.settings = inventory.settings.model_copy(
        update={"celery_broker": broker, "celery_visibility_timeout": 600.0, "celery_wait_s": 150.0}
    )
    import vms.jobs.celery_app  # noqa: F401  (registers the celery executor)

    env = {k: v for k, v in os.environ.items() if not k.startswith("VMS_")}
    env.update(VMS_DATABASE_URL=settings.url, VMS_DATA_DIR=str(settings.data_dir),
               VMS_SECRET_KEY=settings.fernet_key().decode(), VMS_CELERY_BROKER=broker,
               VMS_CELERY_VISIBILITY_TIMEOUT="600", VMS_LOG_LEVEL="INFO", PYTHONPATH=str(ROOT))
    worker = Worker("w", env, tmp_path / "w.log")
    summary: dict = {}
    try:
        worker.wait_ready()
        runner = threading.Thread(target=lambda: summary.update(run_sweep(inventory, req, executor="celery")),
                                  daemon=True)
        t0 = time.monotonic()
        runner.start()
        end = time.monotonic() + 60
        while not (pids := re.findall(r"started in process (\d+)", worker.text())) and time.monotonic() < end:
            time.sleep(0.02)
        assert pids, worker.text()[-3000:]
        lost = worker.started()[0]
        os.kill(int(pids[0]), signal.SIGKILL)  # the pool process, mid-shard; the worker's main process lives
        runner.join(120)
        assert not runner.is_alive(), f"the sweep did not end:\n{worker.text()[-3000:]}"
        assert time.monotonic() - t0 < 120  # far less than the 600 s visibility timeout
        assert worker.proc.poll() is None
    finally:
        worker.stop()
    assert lost in worker.done(), worker.text()[-3000:]
    ids = [cid for cid, _ in _sweep_results(inventory, summary["sweep_id"])]
    assert len(ids) == len(set(ids)) == total - 1
    assert summary["outcome"] == {"ok": total - 1 - len(OFFLINE), "off": len(OFFLINE)}, summary

def test_an_unreachable_broker_is_one_line_and_exit_2(settings, tmp_path):
    from tests.services import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("VMS_")}
    env.update(
        VMS_DATABASE_URL=settings.url,
        VMS_DATA_DIR=str(settings.data_dir),
        VMS_SECRET_KEY=settings.fernet_key().decode(),
        VMS_CELERY_BROKER=f"redis://:hunter2@127.0.0.1:{free_port()}/0",  # nothing listens there
        VMS_DEMO_FLEET="off",
        PYTHONPATH=str(ROOT),
    )
    r = subprocess.run([sys.executable, "-m", "vms", "sweep", "--executor", "celery"], cwd=tmp_path, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "cannot reach the Celery broker redis://:***@127.0.0.1:" in " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr and "hunter2" not in r.stderr + r.stdout
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_worker_on_another_database_records_nothing(inventory, settings, redis, tmp_path):
    """Same broker, another VMS_DATABASE_URL: the worker refuses the shard (this database's sweep 1 is not its
    sweep 1) instead of recording it elsewhere, and the sweep fails with one line naming the cause."""
    from vms.errors import VmsError

    inventory.ingest_observations(
        [Observation("ledger:police", SourceKind.LEDGER, "local:L-1",
                     {"name": "Gate camera", "local_id": "L-1", "ip_address": "127.0.0.77"})],
        source="ledger:police", kind=SourceKind.LEDGER, snapshot=False, actor="test",
    )
    broker = _broker(redis)
    inventory.settings = inventory.settings.model_copy(update={"celery_broker": broker, "celery_wait_s": 60.0})
    import vms.jobs.celery_app  # noqa: F401  (registers the celery executor)

    env = {k: v for k, v in os.environ.items() if not k.startswith("VMS_")}
    other = tmp_path / "other"
    env.update(VMS_DATABASE_URL=f"sqlite:///{other / 'vms.sqlite3'}", VMS_DATA_DIR=str(other),
               VMS_SECRET_KEY=settings.fernet_key().decode(), VMS_CELERY_BROKER=broker, VMS_LOG_LEVEL="INFO",
               PYTHONPATH=str(ROOT))
    other.mkdir()
    worker = Worker("elsewhere", env, tmp_path / "elsewhere.log")
    try:
        worker.wait_ready()
        with pytest.raises(VmsError, match="not in this worker's database"):
            run_sweep(inventory, SweepRequest(stages=STAGES, timeouts=TIMEOUTS), executor="celery")
    finally:
        worker.stop()
    with inventory.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(health_results)) == 0
