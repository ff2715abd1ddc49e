"""Sweeps scaled out on Celery (``VMS_EXECUTOR=celery``): the shards of a sweep run on ``vms worker`` processes.

Redis is the broker and the result backend (``VMS_CELERY_BROKER``). A shard is one task, ``vms.health.shard``
(sweep id, camera ids, the request as JSON), that runs :func:`vms.health.sweep.run_shard` on the worker's own
connection to the same database. Tasks are acknowledged late and rejected when the worker process running them
dies, one at a time per worker process (prefetch 1): a shard taken by a worker that was killed goes back to the
queue (at once when only its pool process died, after ``VMS_CELERY_VISIBILITY_TIMEOUT`` when the whole worker
did) and another worker runs it again. Results are idempotent per (sweep, camera): the rows a killed worker
already wrote stay, the re-run adds the missing ones, nothing is counted twice.

The sweep's side (:func:`run_sweep_distributed`, or :func:`vms.health.sweep.run_sweep` with ``executor="celery"``)
sends every shard, waits for all of them (until the sweep's deadline and a short grace, else at most
``VMS_CELERY_WAIT_S``), records the cameras of shards still unfinished then as ``deadline`` (not OFF) and
finishes the sweep from the stored rows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from celery import Celery
from sqlalchemy import func, select

from probes.health.check import select_stages
from probes.health.results import CheckResult, StageResult
from vms.errors import ConfigurationError, VmsError
from vms.health import store, sweep
from vms.health.service import Health
from vms.store.models import health_results, health_sweeps

if TYPE_CHECKING:
    from vms.inventory.service import Inventory
    from vms.settings import Settings

__all__ = ["QUEUE", "TASK", "celery_app", "make_celery", "run_shards", "run_sweep_distributed", "worker_argv"]

log = logging.getLogger(__name__)

TASK: Final = "vms.health.shard"
QUEUE: Final = "vms.health"
POLL_S: Final = 0.5  # how often the sweep looks at its shards and its progress


def make_celery(settings: Settings) -> Celery:
    """A Celery app for these settings, with the shard task registered. JSON only (no pickle from the broker)."""
    vt = float(settings.celery_visibility_timeout)
    transport = {
        "visibility_timeout": vt,
        # how often a worker looks for shards whose worker died (kombu's default is ~100 s): a fraction of the
        # visibility timeout, so a lost shard is re-run soon after the timeout, not minutes later
        "unacked_restore_interval": max(1.0, min(10.0, vt / 4)),
        "unacked_restore_throttle": 1,
    }
    app = Celery("vms", broker=settings.celery_broker, backend=settings.celery_broker, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        task_track_started=True,
        result_expires=dt.timedelta(days=1),
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
    )
    inventories: dict[int, Inventory] = {}

    def inventory() -> Inventory:
        """The inventory of this (pool) process: database connections are never shared across a fork."""
        from vms.inventory.service import Inventory

        pid = os.getpid()
        if pid not in inventories:
            inventories.clear()
            inventories[pid] = Inventory(settings)
        return inventories[pid]

    def shard(
        sweep_id: int, camera_ids: list[int], request: dict[str, Any], started_at: str | None = None
    ) -> dict[str, Any]:
        req = sweep.SweepRequest.from_json(request)
        ids = [int(c) for c in camera_ids]
        where = f"sweep {sweep_id}: shard of {len(ids)} cameras ({ids[0] if ids else '-'}..{ids[-1] if ids else '-'})"
        inv = inventory()
        if started_at is not None and _sweep_started(inv, int(sweep_id)) != started_at:
            # another database's sweep (a worker with another VMS_DATABASE_URL on the same broker): never record it
            raise ConfigurationError(
                f"sweep {sweep_id} started at {started_at} is not in this worker's database "
                f"({inv.engine.url.render_as_string()}): workers and sweeps must share VMS_DATABASE_URL"
            )
        log.info("%s started in process %d", where, os.getpid())
        started = time.monotonic()
        counts = asyncio.run(sweep.run_shard(inv, int(sweep_id), ids, req))
        log.info("%s done in %.1f s: %s", where, time.monotonic() - started, counts)
        return counts

    app.task(name=TASK, shared=False, acks_late=True, reject_on_worker_lost=True)(shard)
    return app


_APPS: dict[tuple[str, float], Celery] = {}


def celery_app(settings: Settings) -> Celery:
    """One app per broker and visibility timeout in this process (the sending side reuses its connections)."""
    key = (settings.celery_broker, float(settings.celery_visibility_timeout))
    app = _APPS.get(key)
    if app is None:
        app = _APPS[key] = make_celery(settings)
    return app


def worker_argv(concurrency: int, *, name: str | None = None, loglevel: str = "INFO") -> list[str]:
    """The arguments of ``celery worker`` that `vms worker` runs in-process."""
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--queues={QUEUE}",
        f"--loglevel={loglevel.upper()}",
        "--pool=prefork",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if name:
        argv.append(f"--hostname={name}")
    return argv


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rsplit('@', 1)[1]}"))


def _reach_broker(app: Celery, url: str) -> None:
    """A clear error (one line) when the broker does not answer, instead of a sweep that waits for nothing."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.5, timeout=5)
    except Exception as exc:  # kombu's OperationalError and friends: the message says what failed
        where = _without_password(url) if "://" in url else "(not a URL)"
        raise ConfigurationError(
            f"cannot reach the Celery broker {where} (VMS_CELERY_BROKER): {' '.join(str(exc).split())[:200]}"
        ) from None


def _sweep_started(inv: Inventory, sweep_id: int) -> str | None:
    """When the sweep started, as stored (ISO, UTC): what tells this database's sweep N from another's."""
    with inv.session(write=False) as s:
        at = s.scalar(select(health_sweeps.c.started_at).where(health_sweeps.c.id == sweep_id))
    return store.utc(at).isoformat() if at is not None else None


def _grace(req: sweep.SweepRequest) -> float:
    """How long past the sweep's deadline the shards still queued then get to record their 'deadline' results."""
    return min(60.0, max(5.0, 0.1 * (req.deadline_s or 0.0)))


def _deadline_result(camera_id: int, stage: str, at: dt.datetime) -> CheckResult:
    return CheckResult(
        camera_id=camera_id,
        at=at,
        stages=(StageResult(stage, False, 0.0, "deadline", "the shard was not finished by the sweep's deadline"),),
        outcome="deadline",
        stage=stage,
        cause="deadline",
    )


def run_shards(
    inv: Inventory,
    sweep_id: int,
    shards: Sequence[Sequence[int]],
    req: sweep.SweepRequest,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, int]:
    """Send every shard of a planned sweep to the workers and wait for them (the executor ``celery`` of
    :func:`vms.health.sweep.run_sweep`, which finishes the sweep afterwards). Returns {"shards", "done",
    "failed", "unfinished"}; VmsError when a shard failed on its worker (the sweep is then left unfinished)."""
    app = celery_app(inv.settings)
    _reach_broker(app, inv.settings.celery_broker)
    total = sum(len(s) for s in shards)
    payload = req.to_json()
    started_at = _sweep_started(inv, sweep_id)
    run = uuid.uuid4().hex[:12]  # task ids unique across databases and restarts sharing one Redis
    pending = {f"sweep-{sweep_id}-{run}-shard-{i}": list(ids) for i, ids in enumerate(shards)}
    results = {
        task_id: app.send_task(TASK, args=[sweep_id, ids, payload, started_at], task_id=task_id, queue=QUEUE)
        for task_id, ids in pending.items()
    }
    if req.deadline_at is not None:
        wait_until = req.deadline_at + _grace(req)
    else:
        wait_until = time.time() + float(inv.settings.celery_wait_s)
    failed: list[str] = []
    done = 0
    last = -1
    while pending:
        for task_id in list(pending):
            result = results[task_id]
            if result.ready():
                if result.failed():
                    failed.append(" ".join(str(result.result).split())[:300] or type(result.result).__name__)
                    log.error("sweep %d: %s failed on its worker: %s", sweep_id, task_id, failed[-1])
                else:
                    done += 1
                result.forget()
                del pending[task_id]
        if progress is not None:
            with inv.session(write=False) as s:
                n = int(s.scalar(
                    select(func.count()).select_from(health_results).where(health_results.c.sweep_id == sweep_id)
                ) or 0) if pending else total
            if n != last:
                progress("sweep", min(n, total), total)
                last = n
        if not pending or time.time() >= wait_until:
            break
        time.sleep(POLL_S)
    unfinished = len(pending)
    if pending:
        # Lost or still running after the deadline: their cameras are "deadline" (never OFF); a late run of the
        # shard finds the rows claimed and changes nothing. Shards not started yet are revoked.
        app.control.revoke(list(pending))
        ids = sorted({cid for members in pending.values() for cid in members})
        with inv.session(write=False) as s:
            have = set(s.scalars(
                select(health_results.c.camera_id).where(health_results.c.sweep_id == sweep_id)
            ))
        first = select_stages(req.stages, frame=True)[0]
        now = dt.datetime.now(dt.UTC)
        missing = [_deadline_result(cid, first, now) for cid in ids if cid not in have]
        health = Health(inv)
        for i in range(0, len(missing), sweep.RECORD_BATCH):
            health.record(missing[i : i + sweep.RECORD_BATCH], sweep_id)
        log.warning(
            "sweep %d: %d shards unfinished when the wait ended; %d cameras recorded as deadline",
            sweep_id, unfinished, len(missing),
        )
    if failed:
        # not finished: its summary would count the failed shards' cameras as not checkable
        raise VmsError(
            f"sweep {sweep_id}: {len(failed)} of {len(shards)} shards failed on the workers (first: {failed[0]})"
        )
    return {"shards": len(shards), "done": done, "failed": len(failed), "unfinished": unfinished}


def run_sweep_distributed(
    inv: Inventory, req: sweep.SweepRequest, progress: Callable[[str, int, int], None] | None = None
) -> dict[str, Any]:
    """Plan a sweep, run its shards on the Celery workers, wait for them and finish it; returns its summary."""
    return sweep.run_sweep(inv, req, executor="celery", progress=progress)


sweep.register_executor("celery", run_shards)
