"""Scheduled jobs, registered in one place. The in-process scheduler is APScheduler 3; at city scale the
same job functions run as Celery tasks on workers.

Health sweep schedules (:mod:`vms.jobs.schedules`) live in the job store ``shared`` (APScheduler's
SQLAlchemyJobStore on the inventory's database, table ``apscheduler_jobs``), so that every scheduler process
(``vms scheduler``, ``vms run``) sees the same jobs and the same next run times. Each process re-reads the
schedules every ``SYNC_S`` seconds (and at start) and replaces a job only when its schedule changed, so run times
missed while no scheduler ran are caught up once (coalesced) at the next start. A run goes ahead only in the
process that takes its lease for that run time (:func:`vms.jobs.schedules.claim`); the others skip it.
Per-process jobs (discovery, the sync itself) live in the memory store ``default``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import SQLAlchemyError

from vms.jobs import schedules as sch

if TYPE_CHECKING:
    from vms.discovery.service import DiscoveryRequest
    from vms.inventory.service import Inventory

log = logging.getLogger(__name__)
T = TypeVar("T")

SHARED: Final = "shared"  # the job store on the database, seen by every scheduler process
SYNC_S: Final = 30.0  # how often a running scheduler re-reads the schedules (changes apply within this)
MISFIRE_MIN_S: Final = 60  # a run this late still runs (once, coalesced); longer schedules allow one period
RUN_REF: Final = "vms.jobs.scheduler:run_scheduled"
RETENTION_S: Final = 3600  # raw health results and frame samples past their limits go once an hour
RETENTION_LEASE: Final = ":retention"  # not a valid schedule name: no schedule shares its lease
INDICATORS_LEASE: Final = ":indicators"

# What a scheduled sweep does: (inventory, schedule, run time) -> the sweep's id. Tests inject their own.
SweepFn = Callable[["Inventory", sch.Schedule, datetime], "int | None"]


def sweep_discovery(inventory: Inventory, request: DiscoveryRequest) -> None:
    """Discover, interrogate and register; failures are logged, never raised into the scheduler."""
    from vms.discovery.service import Discovery

    try:
        outcome = asyncio.run(Discovery(inventory).run(request))
    except Exception:
        log.exception("discovery sweep failed")
        return
    log.info(
        "discovery run %d: %d found, %d new, %d updated, %d unchanged, %d failed %s",
        outcome.run_id,
        outcome.found,
        outcome.new,
        outcome.updated,
        outcome.unchanged,
        outcome.failed,
        outcome.by_cause,
    )


def build_scheduler(
    inventory: Inventory,
    *,
    discovery: DiscoveryRequest | None,
    discovery_minutes: float,
    health: bool = False,
    sweep: SweepFn | None = None,
    sync_s: float = SYNC_S,
    holder: str | None = None,
    lease_ttl: float = sch.LEASE_TTL_S,
) -> BackgroundScheduler:
    """The scheduler of this process (not started). ``health``: also run the health sweep schedules (see the
    module's text; :func:`start_health` syncs them once the scheduler runs)."""
    runner = ScheduleRunner(inventory, sweep=sweep, holder=holder, lease_ttl=lease_ttl)
    stores: dict[str, Any] = {"default": MemoryJobStore()}
    if health:
        stores[SHARED] = _SharedJobStore(engine=inventory.engine)
    scheduler = BackgroundScheduler(
        timezone="UTC",
        jobstores=stores,
        executors={"default": _SlotExecutor(runner, max_workers=8)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_MIN_S},
    )
    if health:
        for job, name in ((apply_retention, "retention"), (record_indicators, "indicators")):
            scheduler.add_job(job, "interval", seconds=RETENTION_S, args=[inventory, runner.holder], id=name,
                              name=name, jobstore="default", next_run_time=datetime.now(UTC))
        scheduler.add_job(
            sync_schedules,
            "interval",
            seconds=sync_s,
            args=[scheduler, inventory],
            id="schedules-sync",
            name="schedule sync",
            jobstore="default",
        )
    if discovery is not None:
        # The first sweep starts at once, in the background: the API is up while a large range is scanned.
        if discovery_minutes > 0:
            scheduler.add_job(
                sweep_discovery,
                "interval",
                minutes=discovery_minutes,
                args=[inventory, discovery],
                id="discovery",
                name="discovery sweep",
                next_run_time=datetime.now(UTC),
            )
        else:
            scheduler.add_job(sweep_discovery, args=[inventory, discovery], id="discovery", name="discovery sweep")
    return scheduler


def _once_per_hour(inventory: Inventory, lease: str, holder: str, now: float | None, work: Callable[[], T]) -> T | None:
    """``work()`` in this process if it takes ``lease`` for the current ``RETENTION_S`` period (every scheduler
    process runs the job; one does the work); None when another process has the period or the work failed (logged,
    never raised into the scheduler)."""
    at = time.time() if now is None else now
    try:
        if not sch.claim(inventory, lease, holder, at - at % RETENTION_S):
            return None
        return work()
    except Exception:
        log.exception("%s failed", lease.lstrip(":"))
        return None
    finally:
        with contextlib.suppress(Exception):
            sch.release(inventory, lease, holder)


def apply_retention(inventory: Inventory, holder: str, *, now: float | None = None) -> dict[str, int] | None:
    """Raw health results past VMS_HEALTH_RAW_DAYS, and frame samples beyond VMS_SAMPLES_KEEP_PER_CAMERA or older
    than VMS_SAMPLES_MAX_AGE_DAYS (their files too), removed once per period. Returns what was removed, None when
    another process has the period."""
    from vms.frames.store import SampleStore
    from vms.health.service import Health

    def work() -> dict[str, int]:
        results = Health(inventory).prune()
        samples = SampleStore(inventory).prune(actor="scheduler")
        done = {"health_results": results, "samples": samples.rows, "sample_files": samples.files}
        log.info("retention: %s", done)
        return done

    return _once_per_hour(inventory, RETENTION_LEASE, holder, now, work)


def record_indicators(inventory: Inventory, holder: str, *, now: float | None = None) -> bool:
    """The four indicators of the day, overall and per region, read and kept (vms.coverage: the day's last reading
    wins) once per period, so that their daily series has every day even when nobody looked. True when this
    process did it."""
    from vms.coverage.service import Coverage

    done = _once_per_hour(inventory, INDICATORS_LEASE, holder, now, lambda: bool(Coverage(inventory).indicators()))
    return done is not None


def start_health(scheduler: BackgroundScheduler, inventory: Inventory) -> list[sch.Schedule]:
    """Start ``scheduler`` (built with ``health=True``) and put the schedules in force into the job store now."""
    scheduler.start()
    return sync_schedules(scheduler, inventory)


def stop_scheduler(scheduler: BackgroundScheduler, *, wait: bool = True) -> None:
    """Stop ``scheduler``; with ``wait``, after its running jobs end.

    APScheduler 3's shutdown(wait=True) holds the job-store lock while it waits for running jobs, and the schedule
    sync job takes that lock (get_jobs): the two wait for each other for ever. So: shut down without waiting, then
    wait for the executors' threads with the lock free."""
    executors = list(scheduler._executors.values())
    scheduler.shutdown(wait=False)
    if wait:
        for executor in executors:
            pool = getattr(executor, "_pool", None)
            if pool is not None:
                pool.shutdown(wait=True)


# --- health sweep schedules -------------------------------------------------------------------------------------


def sync_schedules(scheduler: BackgroundScheduler, inventory: Inventory) -> list[sch.Schedule]:
    """Make the shared job store hold one job per enabled schedule in force: add new ones, replace changed ones
    (their fingerprint differs), remove the others. An unchanged job keeps its next run time. Safe to run in
    several processes at once. Returns the schedules in force."""
    try:
        schedules = sch.effective_schedules(inventory)
        wanted = {sch.job_id(s.name): s for s in schedules if s.enabled}
        existing = {job.id: job for job in scheduler.get_jobs(jobstore=SHARED)}
    except SQLAlchemyError as exc:
        log.warning("schedules not synchronised now (%s); next try in a while", exc)
        return []
    for jid in existing:
        if jid.startswith("schedule:") and jid not in wanted:
            try:
                scheduler.remove_job(jid, jobstore=SHARED)
                log.info("schedule %s: removed", jid.partition(":")[2])
            except (JobLookupError, SQLAlchemyError):
                pass  # another process removed it first
    for jid, s in wanted.items():
        job = existing.get(jid)
        version = s.version()
        if job is not None and job.kwargs.get("version") == version:
            continue
        try:
            scheduler.add_job(
                RUN_REF,
                trigger=s.trigger(),
                id=jid,
                name=f"health sweep {s.name}",
                kwargs={"name": s.name, "version": version},
                jobstore=SHARED,
                replace_existing=True,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=max(MISFIRE_MIN_S, int(s.period_s())),
            )
            log.info("schedule %s: %s, %s of %s", s.name, s.every, ",".join(s.stages), s.group)
        except SQLAlchemyError as exc:
            log.warning("schedule %s not synchronised now (%s)", s.name, exc)
    return schedules


def run_scheduled(name: str, version: str) -> None:
    """The job function the shared job store names. The scheduler's executor calls :meth:`ScheduleRunner.run` in
    its place, with the run time; this is reached only outside such a scheduler."""
    raise RuntimeError(f"schedule {name} ({version}): run by vms.jobs.scheduler's executor only")


def default_holder() -> str:
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def health_sweep(inventory: Inventory, schedule: sch.Schedule, at: datetime) -> int | None:
    """Run the schedule's sweep with the configured executor (VMS_EXECUTOR); returns the sweep's id. Its deadline
    is the schedule's, or the time until its next run."""
    import importlib

    from vms.health.sweep import Group, SweepRequest, run_sweep

    executor = str(getattr(inventory.settings, "executor", "local"))
    if executor == "celery":
        importlib.import_module("vms.jobs.celery_app")  # registers the Celery executor
    request = SweepRequest(
        stages=schedule.stages,
        group=Group.parse(schedule.group),
        deadline_s=schedule.deadline_s or schedule.period_s(at),
    )
    summary = run_sweep(inventory, request, executor=executor)
    sweep_id = summary.get("sweep_id")
    log.info(
        "schedule %s: sweep %s, %s cameras planned, outcome %s, %s status changes",
        schedule.name,
        sweep_id,
        summary.get("planned"),
        summary.get("outcome"),
        summary.get("status_changed"),
    )
    return int(sweep_id) if sweep_id is not None else None


class ScheduleRunner:
    """Runs a schedule's sweep at a run time if this process takes its lease; renews the lease meanwhile."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        sweep: SweepFn | None = None,
        holder: str | None = None,
        lease_ttl: float = sch.LEASE_TTL_S,
    ) -> None:
        self.inventory = inventory
        self.sweep: SweepFn = sweep or health_sweep
        self.holder = holder or default_holder()
        self.lease_ttl = lease_ttl

    def run(self, name: str, version: str, *, slot: float) -> bool:
        """True when this process ran the slot; False when another took it (or the schedule is gone)."""
        inv = self.inventory
        current = {s.name: s for s in sch.effective_schedules(inv)}.get(name)
        if current is None or not current.enabled:
            log.info("schedule %s: gone or disabled, run skipped", name)
            return False
        if not sch.claim(inv, name, self.holder, slot, ttl=self.lease_ttl):
            log.info("schedule %s: the run at %s is another process's", name, _when(slot))
            return False
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(name, stop), name=f"lease-{name}", daemon=True)
        try:
            run_id = sch.start_run(inv, name, self.holder, slot)
            if run_id is None:
                log.info("schedule %s: the run at %s was already run", name, _when(slot))
                return False
            renewer.start()
            sweep_id: int | None = None
            error: str | None = None
            try:
                sweep_id = self.sweep(inv, current, datetime.fromtimestamp(slot, UTC))
            except Exception as exc:
                log.exception("schedule %s: sweep failed", name)
                error = " ".join(str(exc).split())[:500] or type(exc).__name__
            sch.finish_run(inv, run_id, sweep_id=sweep_id, error=error)
            return error is None
        finally:
            stop.set()
            if renewer.is_alive():
                renewer.join(timeout=5)
            sch.release(inv, name, self.holder)

    def _renew(self, name: str, stop: threading.Event) -> None:
        while not stop.wait(self.lease_ttl / 3):
            try:
                if not sch.renew(self.inventory, name, self.holder, ttl=self.lease_ttl):
                    log.warning("schedule %s: lease lost while its sweep runs", name)
                    return
            except SQLAlchemyError as exc:
                log.warning("schedule %s: lease not renewed now (%s)", name, exc)


def _when(slot: float) -> str:
    return datetime.fromtimestamp(slot, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class _SlotExecutor(ThreadPoolExecutor):  # type: ignore[misc]
    """A thread pool that runs a schedule's job as ``runner.run(name, version, slot=<its run time>)``: the lease
    is taken per run time, which APScheduler does not hand to a job function."""

    def __init__(self, runner: ScheduleRunner, max_workers: int = 8) -> None:
        super().__init__(max_workers=max_workers)
        self.runner = runner

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        if job.func_ref == RUN_REF and run_times:
            clone = Job.__new__(Job)
            clone.__setstate__(job.__getstate__())
            clone._scheduler = job._scheduler
            clone._jobstore_alias = job._jobstore_alias
            clone.func = functools.partial(self.runner.run, slot=run_times[-1].timestamp())
            job = clone
        super()._do_submit_job(job, run_times)


class _SharedJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """The job store shared by scheduler processes. Another process may remove or replace a job between this
    one's read and write: that, or a busy database, is logged and the loop goes on (APScheduler would otherwise
    end its scheduling thread)."""

    def update_job(self, job: Job) -> None:
        try:
            super().update_job(job)
        except (JobLookupError, SQLAlchemyError) as exc:
            log.info("job %s not updated (%s): another scheduler changed it", job.id, exc)
