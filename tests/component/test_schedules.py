"""Health sweep schedules (vms.jobs.schedules, vms.jobs.scheduler): the table and its audit, validation, the
built-in default, the lease, a running scheduler picking up changes, and runs missed while no scheduler ran caught
up once (coalesced). Every test runs on SQLite and PostgreSQL; schedulers are real APScheduler instances on the
database's job store, with the sweep injected (recorded) except in the test of the real job."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from vms.errors import Conflict, NotFound, ValidationFailed
from vms.jobs import schedules as sch
from vms.jobs.scheduler import build_scheduler, start_health, stop_scheduler
from vms.store.models import AuditEntry, apscheduler_jobs, health_sweeps, schedule_runs


class Recorder:
    """An injected sweep: records (schedule name, group, run time) and returns a fake sweep id."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.calls: list[tuple[str, str, datetime]] = []
        self.called: list[datetime] = []  # when each call came
        self.lock = threading.Lock()
        self.seconds = seconds

    def __call__(self, _inv, schedule: sch.Schedule, at: datetime) -> int:
        if self.seconds:
            time.sleep(self.seconds)
        with self.lock:
            self.calls.append((schedule.name, schedule.group, at))
            self.called.append(datetime.now(UTC))
            return len(self.calls)

    def names(self) -> list[str]:
        with self.lock:
            return [c[0] for c in self.calls]


def wait_for(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def schedulers(inventory) -> Iterator[list]:
    started: list = []
    yield started
    for s in started:
        if s.running:
            stop_scheduler(s)


def start(inventory, schedulers, sweep, *, sync_s: float = 0.3, holder: str | None = None):
    scheduler = build_scheduler(
        inventory, discovery=None, discovery_minutes=0, health=True, sweep=sweep, sync_s=sync_s, holder=holder
    )
    schedulers.append(scheduler)
    start_health(scheduler, inventory)
    return scheduler


# --- table, audit, validation --------------------------------------------------------------------------------


def test_schedules_are_stored_listed_and_audited(inventory):
    added = sch.add_schedule(
        inventory, sch.make_schedule("onvif", interval_s=300, group="region:371311"), actor="tester"
    )
    assert added.interval_s == 300 and added.group == "region:371311" and added.created_at is not None
    sch.add_schedule(
        inventory,
        sch.make_schedule("media", cron="0 * * * *", stages=["snapshot", "rtsp", "tcp"], deadline_s=600),
        actor="tester",
    )
    with pytest.raises(Conflict):
        sch.add_schedule(inventory, sch.make_schedule("onvif", interval_s=60), actor="tester")
    changed = sch.add_schedule(inventory, sch.make_schedule("onvif", interval_s=60), actor="tester", replace=True)
    assert changed.interval_s == 60 and changed.group == "all" and changed.version() != added.version()

    listed = {r["name"]: r for r in sch.list_schedules(inventory)}
    assert set(listed) == {"onvif", "media"}  # the built-in default stands in only when none is configured
    assert listed["media"]["stages"] == ["tcp", "rtsp", "snapshot"]  # check order
    assert listed["media"]["cron"] == "0 * * * *" and listed["media"]["deadline_s"] == 600
    assert listed["onvif"]["last_run"] is None and not listed["onvif"]["builtin"]

    sch.remove_schedule(inventory, "media", actor="tester")
    with pytest.raises(NotFound):
        sch.remove_schedule(inventory, "media", actor="tester")
    assert [r["name"] for r in sch.list_schedules(inventory)] == ["onvif"]
    with inventory.session(write=False) as s:
        audit = [(e.actor, e.action, e.target) for e in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert audit == [
        ("tester", "schedule.add", "onvif"),
        ("tester", "schedule.add", "media"),
        ("tester", "schedule.replace", "onvif"),
        ("tester", "schedule.remove", "media"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval_s": 300, "cron": "* * * * *"}, "either every N seconds"),
        ({}, "either every N seconds"),
        ({"interval_s": 0}, "at least 1"),
        ({"interval_s": 1.5}, "whole number"),
        ({"interval_s": float("nan")}, "whole number"),
        ({"cron": "61 * * * *"}, "cron expression"),
        ({"cron": "* * *"}, "cron expression"),
        ({"cron": "0 0 31 2 *"}, "never fires"),
        ({"interval_s": 60, "stages": ["onvif", "ping"]}, "unknown stage"),
        ({"interval_s": 60, "stages": ["frames"]}, "unknown stage"),
        ({"interval_s": 60, "group": "region:"}, "needs a value"),
        ({"interval_s": 60, "group": "street:x"}, "camera group"),
        ({"interval_s": 60, "deadline_s": -5}, "deadline"),
    ],
)
def test_a_bad_schedule_is_one_clear_line(kwargs, message):
    with pytest.raises(ValidationFailed) as info:
        sch.make_schedule("s", **kwargs)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_schedule_names_are_checked():
    for bad in ("", "has space", "-dash", "x" * 65, "semi;colon"):
        with pytest.raises(ValidationFailed):
            sch.make_schedule(bad, interval_s=60)
    assert sch.make_schedule("onvif-5min.v2_a", interval_s=60).name == "onvif-5min.v2_a"


def test_the_builtin_default_stands_in_only_when_none_is_configured(inventory):
    (default,) = sch.effective_schedules(inventory)
    assert default.builtin and default.name == "default" and default.interval_s == 300
    assert default.stages == ("tcp", "onvif", "login", "stream") and default.group == "all"
    inventory.settings.health_default_schedule_s = 0
    assert sch.effective_schedules(inventory) == []
    inventory.settings.health_default_schedule_s = 300
    sch.add_schedule(inventory, sch.make_schedule("mine", interval_s=60, enabled=False), actor="t")
    assert [s.name for s in sch.effective_schedules(inventory)] == ["mine"]  # a disabled one is configured too


def test_a_scheduler_with_nothing_configured_runs_the_default_every_5_minutes(inventory, schedulers):
    start(inventory, schedulers, Recorder())  # as `vms run` and `vms scheduler` do
    with inventory.session(write=False) as s:
        jobs = s.execute(select(apscheduler_jobs.c.id, apscheduler_jobs.c.next_run_time)).all()
    assert [j.id for j in jobs] == ["schedule:default"]
    assert jobs[0].next_run_time % 300 == 0 and 0 < jobs[0].next_run_time - time.time() <= 300  # the 5-minute marks
    (listed,) = sch.list_schedules(inventory)
    assert listed["builtin"] and listed["next_run"].timestamp() == jobs[0].next_run_time


# --- the lease -----------------------------------------------------------------------------------------------


def test_a_run_time_is_taken_once_and_a_live_lease_is_never_shared(inventory):
    assert sch.claim(inventory, "s", "A", 100.0)
    assert not sch.claim(inventory, "s", "B", 100.0)  # that run time is taken
    assert not sch.claim(inventory, "s", "B", 101.0)  # A's sweep still runs (its lease is live)
    assert not sch.renew(inventory, "s", "B")
    assert sch.renew(inventory, "s", "A")
    sch.release(inventory, "s", "A")
    assert not sch.claim(inventory, "s", "A", 100.0)  # released, but the run time stays taken
    assert sch.claim(inventory, "s", "B", 101.0)
    sch.release(inventory, "s", "B")
    assert sch.claim(inventory, "s", "A", 102.0, ttl=0.05)  # A dies without releasing...
    assert not sch.claim(inventory, "s", "B", 103.0)
    time.sleep(0.2)
    assert sch.claim(inventory, "s", "B", 103.0)  # ...its lease expires and the next run time goes ahead
    assert not sch.claim(inventory, "s", "A", 102.5)  # an older run time never runs after a newer one


def test_holders_racing_for_one_run_time_get_it_once(inventory):
    for slot in (1000.0, 1001.0, 1002.0):
        barrier = threading.Barrier(6)
        won: list[str] = []

        def take(holder: str, slot: float = slot, barrier: threading.Barrier = barrier, won: list[str] = won) -> None:
            barrier.wait(timeout=10)
            if sch.claim(inventory, "race", holder, slot):
                won.append(holder)
                sch.release(inventory, "race", holder)

        threads = [threading.Thread(target=take, args=(f"h{i}",)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(won) == 1, (slot, won)


# --- the scheduler -------------------------------------------------------------------------------------------


def test_a_running_scheduler_picks_up_added_changed_and_removed_schedules(inventory, schedulers):
    inventory.settings.health_default_schedule_s = 0
    rec = Recorder()
    start(inventory, schedulers, rec, sync_s=0.3)
    time.sleep(0.6)
    assert rec.calls == []  # nothing configured, the default turned off

    sch.add_schedule(inventory, sch.make_schedule("fast", interval_s=1), actor="t")
    assert wait_for(lambda: len(rec.calls) >= 2, 6), rec.calls
    assert {c[1] for c in rec.calls} == {"all"}

    sch.add_schedule(inventory, sch.make_schedule("fast", interval_s=1, group="tag:school"), actor="t", replace=True)
    assert wait_for(lambda: rec.calls[-1][1] == "tag:school", 6), rec.calls

    sch.remove_schedule(inventory, "fast", actor="t")
    time.sleep(0.8)  # the next sync drops it (and a run in flight sees it gone)
    n = len(rec.calls)
    time.sleep(2.0)
    assert len(rec.calls) == n
    with inventory.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(apscheduler_jobs)) == 0
        runs = s.execute(select(schedule_runs.c.slot, schedule_runs.c.sweep_id)).all()
    assert len(runs) == n and len({r.slot for r in runs}) == n  # each run recorded once, with its sweep
    assert sorted(r.sweep_id for r in runs) == list(range(1, n + 1))


def test_runs_missed_while_no_scheduler_ran_are_caught_up_once(inventory, schedulers):
    sch.add_schedule(inventory, sch.make_schedule("every2", interval_s=2), actor="t")
    first = Recorder()
    one = start(inventory, schedulers, first, holder="first")
    assert wait_for(lambda: len(first.calls) >= 1, 5)
    stop_scheduler(one)
    time.sleep(5.0)  # two or three run times pass with no scheduler running

    second = Recorder()
    restart = datetime.now(UTC)
    start(inventory, schedulers, second, holder="second")
    assert wait_for(lambda: len(second.calls) >= 1, 3), "the missed runs were dropped"
    time.sleep(0.5)
    first_call = second.called[0]
    assert (first_call - restart).total_seconds() < 3  # caught up at once
    caught_up = [at for _, _, at in second.calls if at <= first_call]
    assert len(caught_up) == 1, second.calls  # coalesced: one run for all the run times missed until then
    assert (caught_up[0] - first.calls[-1][2]).total_seconds() >= 4  # the latest of them (two or more missed)


def test_a_schedule_runs_the_real_sweep(inventory, schedulers):
    sch.add_schedule(
        inventory, sch.make_schedule("tagged", interval_s=1, group="tag:school", stages=["tcp", "onvif"]), actor="t"
    )
    start(inventory, schedulers, None)  # the real job: vms.health.sweep.run_sweep with the local executor
    assert wait_for(lambda: _count(inventory, health_sweeps) >= 2, 8)
    with inventory.session(write=False) as s:
        sweep = s.execute(select(health_sweeps).order_by(health_sweeps.c.id)).first()
        runs = s.execute(select(schedule_runs).where(schedule_runs.c.sweep_id == sweep.id)).all()
    assert sweep.camera_group == "tag:school" and list(sweep.stages) == ["tcp", "onvif"]
    assert sweep.finished_at is not None and len(runs) == 1 and runs[0].error is None


def _count(inventory, table) -> int:
    with inventory.session(write=False) as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)
