"""Operations: discovery, health sweeps, frame sampling and trials started through the API, run in the background.

An operation is a row of ``operations`` (kind, parameters, status, progress, result or error, who started it and
from where) and a thread of the API process that started it. Each process runs at most ``max_running`` at once
(2 by default); the others wait in its queue, in order. Progress comes from the services' own progress callbacks
(done/total of the step they report), written at most twice a second.

Cancelling is cooperative: the progress callback raises :class:`Cancelled` at its next call (a discovery's task is
cancelled at its next await). What a sweep recorded before stays recorded (its shards' stored results; the sweep
is closed with them); a trial ends ``failed`` with the reason; the operation ends ``cancelled``. A cancel asked
through another API process of the same database reaches the runner through the row's ``cancel_requested`` (read
every second while it runs).

An operation left ``queued`` or ``running`` by a process that died (same host and its pid gone, or no sign of life
for :data:`STALE_S`) is marked ``failed`` when an API process starts its operations (:func:`manager`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select, update

from vms.errors import Conflict, NotFound, ValidationFailed
from vms.store import repository as repo
from vms.store.models import operations, utcnow

if TYPE_CHECKING:
    from vms.inventory.service import Inventory

log = logging.getLogger(__name__)

KINDS: Final = ("discovery", "sweep", "sample", "trial")
ACTIVE: Final = ("queued", "running")
FINISHED: Final = ("done", "failed", "cancelled")
MAX_RUNNING: Final = 2  # operations running at once in one API process
PROGRESS_EVERY_S: Final = 0.5  # progress rows written at most this often
WATCH_EVERY_S: Final = 1.0  # the runner's look at cancels asked elsewhere, and its sign of life
HEARTBEAT_S: Final = 30.0
STALE_S: Final = 600.0  # an active row of another host with no sign of life this long: its process is gone
MAX_FAILURES_SHOWN: Final = 100


class Cancelled(Exception):
    """Raised by an operation's progress callback once a cancel was asked."""

    def __init__(self) -> None:
        super().__init__("cancelled")


# --- parameters -------------------------------------------------------------------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


Seconds = Field(default=None, gt=0, le=86_400)


class DiscoveryParams(_Params):
    ranges: list[str] = Field(default_factory=list, max_length=256)
    ports: list[int] | None = Field(default=None, max_length=64)
    interfaces: list[str] = Field(default_factory=list, max_length=64)
    unicast: list[str] = Field(default_factory=list, max_length=4096)
    targets: list[str] = Field(default_factory=list, max_length=4096)
    probe_timeout: float = Field(default=3.0, gt=0, le=300)
    call_timeout: float = Field(default=3.0, gt=0, le=300)
    device_deadline: float = Field(default=20.0, gt=0, le=3600)
    concurrency: int = Field(default=200, ge=1, le=10_000)
    scan_concurrency: int = Field(default=512, ge=1, le=10_000)
    force: bool = False
    # One process by default: a cancel then stops the whole run at once (worker processes finish their share).
    workers: int = Field(default=1, ge=0, le=64)


class _CameraGroup(_Params):
    group: str = Field(default="all", max_length=300)  # all, region:CODE, source:NAME, tag:TAG
    region: str | None = Field(default=None, min_length=1, max_length=64)  # shorthand for group region:CODE
    deadline_s: float | None = Seconds
    concurrency: int = Field(default=200, ge=1, le=10_000)
    per_host: int = Field(default=2, ge=1, le=64)
    timeouts: dict[str, float] | None = None
    shard_size: int = Field(default=500, ge=1, le=100_000)


class SweepParams(_CameraGroup):
    stages: list[str] | None = Field(default=None, max_length=16)


class SampleParams(_CameraGroup):
    sample_set: str = Field(min_length=1, max_length=128)
    frames: int = Field(default=1, ge=1, le=100)
    spacing_s: float = Field(default=0.0, ge=0, le=3600)
    source: str = Field(default="rtsp", max_length=16)


class TrialParams(_Params):
    sample_set: str = Field(min_length=1, max_length=128)
    analyzers: list[str] | None = Field(default=None, min_length=1, max_length=32)
    name: str | None = Field(default=None, min_length=1, max_length=128)


PARAMS: Final[dict[str, type[_Params]]] = {
    "discovery": DiscoveryParams,
    "sweep": SweepParams,
    "sample": SampleParams,
    "trial": TrialParams,
}


def _one_line(kind: str, exc: PydanticValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where or 'params'}: {err.get('msg', 'invalid')}")
    return f"{kind} parameters: " + "; ".join(parts)


Job = Callable[["Inventory", "Reporter"], dict[str, Any]]


@dataclass(frozen=True)
class Plan:
    """A validated operation: its kind, its parameters as stored, and what runs it."""

    kind: str
    params: dict[str, Any]
    run: Job


def plan(inv: Inventory, kind: str, params: Mapping[str, Any] | None, *, actor: str = "api") -> Plan:
    """Check ``params`` for ``kind`` against the inventory (regions, sample sets, trial names) and build the run;
    ValidationFailed (HTTP 422) with one line for anything no run could use, Conflict for a taken trial name."""
    if kind not in PARAMS:
        raise ValidationFailed(f"unknown operation kind {kind!r}: choose {', '.join(KINDS)}")
    if params is not None and not isinstance(params, Mapping):
        raise ValidationFailed("params must be an object")
    try:
        parsed = PARAMS[kind].model_validate(dict(params or {}))
    except PydanticValidationError as exc:
        raise ValidationFailed(_one_line(kind, exc)) from None
    stored = parsed.model_dump(exclude_none=True)
    if isinstance(parsed, DiscoveryParams):
        return Plan(kind, stored, _discovery_job(parsed, actor))
    if isinstance(parsed, TrialParams):
        return Plan(kind, stored, _trial_job(inv, parsed, actor))
    assert isinstance(parsed, SweepParams | SampleParams)
    return Plan(kind, stored, _sweep_job(inv, parsed))


def _discovery_job(p: DiscoveryParams, actor: str) -> Job:
    from vms.discovery.service import Discovery, DiscoveryRequest

    req = DiscoveryRequest(
        ranges=list(p.ranges),
        interfaces=list(p.interfaces),
        unicast=list(p.unicast),
        targets=list(p.targets),
        probe_timeout=p.probe_timeout,
        call_timeout=p.call_timeout,
        device_deadline=p.device_deadline,
        concurrency=p.concurrency,
        scan_concurrency=p.scan_concurrency,
        actor=actor,
        force=p.force,
        workers=p.workers,
    )
    if p.ports is not None:
        req.ports = list(p.ports)
    try:
        req.validate()
    except ValueError as exc:
        raise ValidationFailed(f"discovery parameters: {exc}") from None

    def run(inv: Inventory, reporter: Reporter) -> dict[str, Any]:
        async def guarded() -> Any:
            # Discovery's own progress calls may not raise (a broken progress bar must not stop a sweep): the
            # run's task is cancelled at its next await instead.
            task = asyncio.create_task(Discovery(inv).run(req, reporter.quietly))
            while not task.done():
                await asyncio.wait({task}, timeout=0.2)
                if reporter.cancelled and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    if task.cancelled():
                        raise Cancelled
            return task.result()

        outcome = asyncio.run(guarded())
        summary = outcome.as_dict()
        summary.pop("step_failure_items", None)
        failures = summary.get("failures") or []
        if len(failures) > MAX_FAILURES_SHOWN:
            summary["failures"] = failures[:MAX_FAILURES_SHOWN]
            summary["failures_truncated"] = len(failures) - MAX_FAILURES_SHOWN
        return dict(summary)

    return run


def _region_known(inv: Inventory, code: str) -> bool:
    code = code.strip()
    if code.isdigit() and 2 <= len(code) <= 20:
        return True  # a civil code (its sub-regions by prefix), with or without a boundary imported
    with inv.session(write=False) as s:
        return code in repo.region_codes_and_names(s)


def _sweep_job(inv: Inventory, p: SweepParams | SampleParams) -> Job:
    from probes.health.check import ONVIF_STAGES, StageTimeouts
    from vms.health.service import Health
    from vms.health.sweep import Group, SweepRequest, run_sweep

    kind = "sample" if isinstance(p, SampleParams) else "sweep"
    try:
        if p.region is not None:
            if p.group != "all":
                raise ValueError("give at most one of region and group")
            group = Group("region", p.region.strip())
        else:
            group = Group.parse(p.group)
        timeouts = StageTimeouts(**(p.timeouts or {}))
    except TypeError as exc:
        raise ValidationFailed(f"{kind} parameters: timeouts: {exc}") from None
    except ValueError as exc:
        raise ValidationFailed(f"{kind} parameters: {exc}") from None
    if group.kind == "region" and not _region_known(inv, str(group.value)):
        raise ValidationFailed(f"{kind} parameters: unknown region {group.value!r}")
    common: dict[str, Any] = {
        "group": group,
        "deadline_s": p.deadline_s,
        "concurrency": p.concurrency,
        "per_host": p.per_host,
        "timeouts": timeouts,
        "shard_size": p.shard_size,
        # This process only: a cancel then stops every shard (worker processes would finish theirs).
        "processes": 1,
    }
    if isinstance(p, SampleParams):
        req = SweepRequest(
            stages=("frame",), sample_set=p.sample_set.strip(), frames=p.frames, spacing_s=p.spacing_s,
            source=p.source, **common,
        )
    else:
        stages = tuple(p.stages) if p.stages else ONVIF_STAGES
        req = SweepRequest(stages=stages, **common)
    try:
        req.validate()
    except ValueError as exc:
        raise ValidationFailed(f"{kind} parameters: {exc}") from None

    def run(inv: Inventory, reporter: Reporter) -> dict[str, Any]:
        planned: list[int] = []
        try:
            return run_sweep(inv, req, progress=reporter, planned=planned.append)
        except Cancelled:
            if planned:  # what was recorded stays: the sweep is closed with it
                counts = Health(inv).finish_sweep(planned[0])
                reporter.partial = {"sweep_id": planned[0], "outcome": counts.get("outcome", {})}
            raise

    return run


def _trial_job(inv: Inventory, p: TrialParams, actor: str) -> Job:
    from vms.frames.analyzers import DEFAULT_ANALYZERS, AnalyzerSpec, available_analyzers
    from vms.frames.store import SampleSets
    from vms.frames.trials import run_trial
    from vms.store.models import trials

    set_name = p.sample_set.strip()
    if SampleSets(inv).get(set_name) is None:
        raise ValidationFailed(f"trial parameters: unknown sample set {set_name!r}")
    analyzers = list(p.analyzers or DEFAULT_ANALYZERS)
    known = available_analyzers()
    for text in analyzers:
        try:
            spec = AnalyzerSpec.parse(text)
        except ValueError as exc:
            raise ValidationFailed(f"trial parameters: {exc}") from None
        if spec.name not in known:
            raise ValidationFailed(f"trial parameters: unknown analyzer {spec.name!r}: one of {', '.join(known)}")
    name = p.name.strip() if p.name else None
    if name:
        with inv.session(write=False) as s:
            if s.scalar(select(trials.c.id).where(trials.c.name == name)) is not None:
                raise Conflict(f"a trial named {name!r} exists; choose another name")

    def run(inv: Inventory, reporter: Reporter) -> dict[str, Any]:
        report = run_trial(inv, set_name, analyzers, name, progress=reporter, actor=actor)
        return report.to_dict()

    return run


# --- running ----------------------------------------------------------------------------------------------


@dataclass
class Reporter:
    """An operation's progress callback ``(stage, done, total)``: records progress (at most every
    PROGRESS_EVERY_S) and raises :class:`Cancelled` once a cancel was asked."""

    manager: Operations
    op_id: int
    cancel: threading.Event = field(default_factory=threading.Event)
    partial: dict[str, Any] | None = None  # what a cancelled run leaves behind (its summary so far)
    stage: str | None = None
    done: int = 0
    total: int = 0
    _written: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.cancel.is_set():
            raise Cancelled
        self.quietly(stage, done, total)

    def quietly(self, stage: str, done: int, total: int) -> None:
        """Record progress without ever raising (for services whose progress calls must not fail)."""
        with self._lock:
            self.stage, self.done, self.total = stage[:32], max(0, int(done)), max(0, int(total))
            now = time.monotonic()
            if now - self._written < PROGRESS_EVERY_S and done < total:
                return
            self._written = now
        self.flush()

    def flush(self) -> None:
        try:
            with self.manager.inventory.session() as s:
                s.execute(
                    update(operations)
                    .where(operations.c.id == self.op_id)
                    .values(stage=self.stage, done=self.done, total=self.total, updated_at=utcnow())
                )
        except Exception as exc:  # a busy database must not stop the work; the next call writes again
            log.debug("operation %s: progress not recorded: %s", self.op_id, exc)


_LIVE_TOKENS: set[str] = set()  # the managers of this process (a runner of this pid with another token is gone)
_MANAGERS: weakref.WeakKeyDictionary[Inventory, Operations] = weakref.WeakKeyDictionary()
_MANAGERS_LOCK = threading.Lock()


def manager(inv: Inventory) -> Operations:
    """The operations of this process over ``inv`` (one per inventory), made on first use: stale rows of dead
    processes are marked failed then."""
    with _MANAGERS_LOCK:
        found = _MANAGERS.get(inv)
        if found is None:
            found = _MANAGERS[inv] = Operations(inv)
            found.recover()
        return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Operations:
    """Start, follow and cancel operations in this process (see the module's notes)."""

    def __init__(self, inventory: Inventory, *, max_running: int = MAX_RUNNING) -> None:
        self.inventory = inventory
        self.max_running = max(1, max_running)
        self.host = socket.gethostname()[:64]
        self.token = uuid.uuid4().hex[:12]
        self.runner = f"{self.host}:{os.getpid()}:{self.token}"
        _LIVE_TOKENS.add(self.token)
        self._lock = threading.Lock()
        self._queue: deque[tuple[int, Plan]] = deque()
        self._running: dict[int, Reporter] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._watcher: threading.Thread | None = None

    # --- start / cancel ---

    def start(self, kind: str, params: Mapping[str, Any] | None, *, actor: str, address: str | None = None) -> int:
        """Validate, record (queued) and audit an operation; it runs as soon as a slot is free. Returns its id."""
        chosen = plan(self.inventory, kind, params, actor=actor)
        with self.inventory.session() as s:
            op_id = int(
                s.connection().scalar(
                    operations.insert()
                    .values(
                        kind=chosen.kind, params=chosen.params, status="queued", done=0, total=0,
                        created_by=actor[:128], address=address[:255] if address else None, runner=self.runner,
                        created_at=utcnow(), updated_at=utcnow(), cancel_requested=False,
                    )
                    .returning(operations.c.id)
                )
            )
            repo.audit(
                s, actor=actor, action="operation.start", target=f"operation:{op_id}",
                details={"kind": chosen.kind, "params": chosen.params}, address=address,
            )
        with self._lock:
            self._queue.append((op_id, chosen))
        self._pump()
        return op_id

    def cancel(self, op_id: int, *, actor: str, address: str | None = None) -> dict[str, Any]:
        """Ask an operation to stop: a queued one ends ``cancelled`` at once, a running one at its next progress
        call. Conflict for an operation that has finished."""
        with self.inventory.session() as s:
            row = s.execute(select(operations.c.status).where(operations.c.id == op_id)).first()
            if row is None:
                raise NotFound(f"no operation {op_id}")
            if row.status in FINISHED:
                raise Conflict(f"operation {op_id} has finished ({row.status})")
            s.execute(update(operations).where(operations.c.id == op_id).values(cancel_requested=True))
            repo.audit(s, actor=actor, action="operation.cancel", target=f"operation:{op_id}", address=address)
        with self._lock:
            queued = next((item for item in self._queue if item[0] == op_id), None)
            if queued is not None:
                self._queue.remove(queued)
            reporter = self._running.get(op_id)
        if queued is not None:
            self._finish(op_id, "cancelled", None, None)
        elif reporter is not None:
            reporter.cancel.set()
        return self.get(op_id)

    # --- reading ---

    def get(self, op_id: int) -> dict[str, Any]:
        with self.inventory.session(write=False) as s:
            row = s.execute(select(operations).where(operations.c.id == op_id)).first()
        if row is None:
            raise NotFound(f"no operation {op_id}")
        return _public(row._mapping)

    def recent(self, *, status: str | None = None, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        stmt = select(operations).order_by(operations.c.id.desc()).limit(limit)
        if status:
            stmt = stmt.where(operations.c.status == status)
        if kind:
            stmt = stmt.where(operations.c.kind == kind)
        with self.inventory.session(write=False) as s:
            return [_public(r._mapping) for r in s.execute(stmt)]

    def wait(self, op_id: int, timeout: float) -> dict[str, Any]:
        """The operation once it has finished, or as it is after ``timeout`` seconds (tests, a CLI)."""
        end = time.monotonic() + timeout
        while True:
            found = self.get(op_id)
            if found["status"] in FINISHED or time.monotonic() >= end:
                return found
            time.sleep(0.05)

    def shutdown(self, timeout: float = 10.0) -> None:
        """The API process stops: queued operations end cancelled, running ones are asked to stop and waited for
        up to ``timeout`` seconds (one that does not stop in time is marked failed by the next start)."""
        with _MANAGERS_LOCK:
            if _MANAGERS.get(self.inventory) is self:
                del _MANAGERS[self.inventory]
        with self._lock:
            queued = [op_id for op_id, _ in self._queue]
            self._queue.clear()
            running = dict(self._running)
            threads = list(self._threads.values())
        for op_id in queued:
            self._finish(op_id, "cancelled", None, "the API process stopped")
        for reporter in running.values():
            reporter.cancel.set()
        end = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        if not any(t.is_alive() for t in threads):
            _LIVE_TOKENS.discard(self.token)

    # --- stale rows ---

    def recover(self) -> int:
        """Mark failed the active rows whose process is gone; returns how many."""
        now = utcnow()
        stale: list[tuple[int, str]] = []
        with self.inventory.session(write=False) as s:
            rows = s.execute(
                select(operations.c.id, operations.c.runner, operations.c.updated_at).where(
                    operations.c.status.in_(ACTIVE)
                )
            ).all()
        for op_id, runner, updated_at in rows:
            host, _, rest = str(runner or "").partition(":")
            pid_text, _, token = rest.partition(":")
            seen = updated_at if updated_at is None or updated_at.tzinfo else updated_at.replace(tzinfo=now.tzinfo)
            quiet = seen is None or now - seen > timedelta(seconds=STALE_S)
            gone = quiet
            if host == self.host and pid_text.isdigit():
                pid = int(pid_text)
                gone = gone or not _pid_alive(pid) or (pid == os.getpid() and token not in _LIVE_TOKENS)
            if gone:
                stale.append((int(op_id), str(runner or "?")))
        for op_id, runner in stale:
            host, _, rest = runner.partition(":")
            self._finish(op_id, "failed", None, f"its API process ({host} pid {rest.partition(':')[0]}) stopped")
            log.warning("operation %s: its process %s stopped; marked failed", op_id, runner)
        return len(stale)

    # --- inside ---

    def _pump(self) -> None:
        """Start queued operations while fewer than max_running run."""
        while True:
            with self._lock:
                if len(self._running) >= self.max_running or not self._queue:
                    return
                op_id, chosen = self._queue.popleft()
                reporter = Reporter(self, op_id)
                self._running[op_id] = reporter
                thread = threading.Thread(
                    target=self._run, args=(chosen, reporter), name=f"operation-{op_id}", daemon=True
                )
                self._threads[op_id] = thread
                if self._watcher is None or not self._watcher.is_alive():
                    self._watcher = threading.Thread(target=self._watch, name="operations-watch", daemon=True)
                    self._watcher.start()
            thread.start()

    def _run(self, chosen: Plan, reporter: Reporter) -> None:
        op_id = reporter.op_id
        status, result, error = "failed", None, None
        try:
            with self.inventory.session() as s:
                asked = s.scalar(select(operations.c.cancel_requested).where(operations.c.id == op_id))
                s.execute(
                    update(operations)
                    .where(operations.c.id == op_id)
                    .values(status="running", started_at=utcnow(), updated_at=utcnow(), runner=self.runner)
                )
            if asked:
                reporter.cancel.set()
                raise Cancelled
            result = chosen.run(self.inventory, reporter)
            status = "done"
        except Cancelled:
            status, result = "cancelled", reporter.partial
        except BaseException as exc:
            if reporter.cancelled:  # stopped by the cancel, whatever the service made of it
                status, result = "cancelled", reporter.partial
            else:
                error = (str(exc) or type(exc).__name__)[:2000]
                log.warning("operation %s (%s) failed: %s", op_id, chosen.kind, error, exc_info=True)
        finally:
            try:
                self._finish(op_id, status, result, error, progress=reporter)
            finally:
                with self._lock:
                    self._running.pop(op_id, None)
                    self._threads.pop(op_id, None)
                self._pump()

    def _finish(
        self, op_id: int, status: str, result: dict[str, Any] | None, error: str | None,
        *, progress: Reporter | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "updated_at": utcnow(), "error": error}
        if result is not None:
            values["result"] = _jsonable(result)
        if progress is not None and progress.stage is not None:
            values.update(stage=progress.stage, done=progress.done, total=progress.total)
        for attempt in range(20):  # the final state must land, even past a long write of someone else
            try:
                with self.inventory.session() as s:
                    s.execute(
                        update(operations)
                        .where(operations.c.id == op_id, operations.c.status.in_(ACTIVE))
                        .values(**values)
                    )
                return
            except Exception as exc:
                log.warning("operation %s: final state not recorded yet (%s)", op_id, exc)
                time.sleep(min(5.0, 0.2 * (attempt + 1)))

    def _watch(self) -> None:
        """While operations run here: cancels asked through another process, and a sign of life every
        HEARTBEAT_S (a row of this runner that stops showing one is stale after STALE_S)."""
        beat = 0.0
        while True:
            with self._lock:
                mine = dict(self._running)
                if not mine and not self._queue:
                    self._watcher = None
                    return
            try:
                with self.inventory.session(write=False) as s:
                    asked = set(
                        s.scalars(
                            select(operations.c.id).where(
                                operations.c.id.in_(list(mine)), operations.c.cancel_requested.is_(True)
                            )
                        )
                    ) if mine else set()
                for op_id in asked:
                    mine[op_id].cancel.set()
                if time.monotonic() - beat >= HEARTBEAT_S:
                    beat = time.monotonic()
                    with self.inventory.session() as s:
                        s.execute(
                            update(operations)
                            .where(operations.c.runner == self.runner, operations.c.status.in_(ACTIVE))
                            .values(updated_at=utcnow())
                        )
            except Exception as exc:
                log.debug("operations watch: %s", exc)
            time.sleep(WATCH_EVERY_S)


def _jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold (dates, sets, tuples) made plain."""
    import json

    return json.loads(json.dumps(value, default=str))


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return str(value.isoformat())


def _public(row: Any) -> dict[str, Any]:
    """An operation as the API shows it (not the runner's address or process)."""
    return {
        "id": int(row["id"]),
        "kind": row["kind"],
        "params": row["params"],
        "status": row["status"],
        "progress": {"stage": row["stage"], "done": int(row["done"] or 0), "total": int(row["total"] or 0)},
        "result": row["result"],
        "error": row["error"],
        "created_by": row["created_by"],
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "cancel_requested": bool(row["cancel_requested"]),
    }
