"""Health sweeps: which cameras a sweep covers, its shards, and running them (here, or on Celery workers).

A sweep is planned once (:func:`plan_sweep`: a ``health_sweeps`` row and the shards of camera ids, the cameras
of one device kept in one shard so that the per-host limit and an NVR's shared round hold), then each shard runs
(:func:`run_shard`) in this process or on a worker, and the sweep is finished from what was stored
(:func:`run_sweep`). A shard reads its cameras from the inventory, decrypts their logins as discovery does,
loads the persisted failed-login budget of their devices before and saves it after (wrong credentials never lock
an account across sweeps), checks them (:func:`probes.health.check.check_many`) and records the results in batches
(:meth:`vms.health.service.Health.record`, idempotent per (sweep, camera): a re-delivered shard changes nothing).
A stream URI the device now reports differently is an observation of the ``onvif`` source, merged as discovery's.

Cameras without an ONVIF device address (ledger-only records) cannot be checked at the ONVIF stages: they get no
result and are counted as ``not_checkable`` in the summary, never as OFF. A sweep without ONVIF stages (``rtsp``,
``snapshot``, ``frame``) checks them when they have the URIs its stages need.

The ``frame`` stage (``vms sample`` is a sweep of that stage alone) samples each camera's picture through
:class:`vms.frames.stage.FrameStageRunner`: the samples join the request's sample set (created, or reused by
name, when the sweep is planned), their rows are written in the same batches as the results, and a picture that
fails its quality checks makes the camera DEFECT (VLOST for signal loss) through the same status rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal

from sqlalchemy import func, select

from probes.health.check import ONVIF_STAGES, CheckTarget, DeviceMemory, StageTimeouts, check_many, select_stages
from probes.health.results import CheckResult
from probes.onvif.addresses import format_hostport, parse_target, strip_credentials
from probes.onvif.auth import Credential, LoginBudget
from probes.policy import AddressPolicy
from vms.catalog.domain import Observation, SourceKind
from vms.discovery.service import SOURCE, Discovery, auth_hint
from vms.health.service import Health
from vms.inventory.ingest import observation_key
from vms.store import repository as repo
from vms.store.models import cameras, health_events, health_latest, health_results, health_sweeps

if TYPE_CHECKING:
    from vms.frames.stage import FrameStageRunner
    from vms.inventory.service import Inventory

__all__ = [
    "GROUP_KINDS",
    "Group",
    "SweepRequest",
    "camera_ids",
    "plan_sweep",
    "register_executor",
    "run_shard",
    "run_sweep",
]

GroupKind = Literal["all", "region", "source", "tag"]
GROUP_KINDS: Final = ("all", "region", "source", "tag")
RECORD_BATCH: Final = 250  # results per Health.record transaction
RECORD_AHEAD: Final = 8  # batches that may wait for a write in flight before the checks wait for it
LOCAL_PARALLEL_SHARDS: Final = 4  # shards a local sweep runs at once (the global concurrency split between them)
# A local sweep of at least this many cameras runs its shards in worker processes, one per core (below it, one
# process keeps up: starting the workers, about a second each, costs more than it saves).
WORKER_MIN_CAMERAS: Final = 2000
MAX_PROCESSES: Final = 64
MAX_FRAMES: Final = 100  # frame stage: pictures per camera and sweep
FRAME_SOURCES: Final = ("rtsp", "snapshot")
_ONVIF: Final = frozenset(ONVIF_STAGES)

Progress = Callable[[str, int, int], None]


def _quiet(_stage: str, _done: int, _total: int) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Group:
    """The cameras a sweep covers: every current camera, a region (with its sub-regions), those a source lists,
    or those carrying a tag. Written ``all``, ``region:371311``, ``source:onvif``, ``tag:school``."""

    kind: GroupKind = "all"
    value: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in GROUP_KINDS:
            raise ValueError(f"unknown camera group {self.kind!r}: choose from {', '.join(GROUP_KINDS)}")
        if self.kind == "all" and self.value:
            raise ValueError("the group 'all' takes no value")
        if self.kind != "all" and not (self.value and self.value.strip()):
            raise ValueError(f"the group {self.kind!r} needs a value ({self.kind}:VALUE)")

    def __str__(self) -> str:
        return "all" if self.kind == "all" else f"{self.kind}:{self.value}"

    @classmethod
    def parse(cls, text: str) -> Group:
        kind, sep, value = text.strip().partition(":")
        if kind == "all" and not sep:
            return cls()
        if kind not in GROUP_KINDS or kind == "all":
            raise ValueError(f"camera group {text!r}: want all, region:CODE, source:NAME or tag:TAG")
        return cls(kind, value.strip())  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SweepRequest:
    stages: tuple[str, ...] = ONVIF_STAGES
    group: Group = field(default_factory=Group)
    deadline_s: float | None = None  # seconds from the sweep's start; cameras not finished then: "deadline"
    concurrency: int = 200  # cameras checked at once, over the whole sweep (a local sweep's shards share it)
    per_host: int = 2  # cameras of one device (host:port) checked at once
    timeouts: StageTimeouts = field(default_factory=StageTimeouts)
    shard_size: int = 500
    # Processes of a local sweep: 0 = one per core for sweeps of at least WORKER_MIN_CAMERAS cameras, 1 = this
    # process only, n = n worker processes (each runs whole shards with its own database connection).
    processes: int = 0
    # Set when the sweep starts (epoch seconds), so that every shard, on whatever worker, keeps one deadline.
    deadline_at: float | None = None
    # The frame stage: the sample set its samples join (created, or reused by name, when the sweep is planned),
    # pictures per camera (further keyframes at least spacing_s apart on one session: freeze checks), and the
    # source preferred: "rtsp" (the snapshot URI only for a camera without a stream URI) or "snapshot".
    sample_set: str | None = None
    frames: int = 1
    spacing_s: float = 0.0
    source: str = "rtsp"

    def validate(self) -> None:
        """ValueError with one line for a request no sweep can run."""
        stages = select_stages(self.stages, frame=True)
        if "frame" not in stages and (self.sample_set is not None or self.frames != 1 or self.spacing_s):
            raise ValueError("a sample set, frames and spacing need the frame stage")
        if self.sample_set is not None and not (self.sample_set.strip() and len(self.sample_set.strip()) <= 128):
            raise ValueError("the sample set name must be 1 to 128 characters")
        if not 1 <= self.frames <= MAX_FRAMES:
            raise ValueError(f"frames must be 1 to {MAX_FRAMES}")
        if not (math.isfinite(self.spacing_s) and 0 <= self.spacing_s <= 3600):
            raise ValueError("the spacing must be 0 to 3600 seconds")
        if self.source not in FRAME_SOURCES:
            raise ValueError(f"unknown frame source {self.source!r}: choose rtsp or snapshot")
        if self.concurrency < 1 or self.per_host < 1 or self.shard_size < 1:
            raise ValueError("concurrency, per-host limit and shard size must be at least 1")
        if not 0 <= self.processes <= MAX_PROCESSES:
            raise ValueError(f"processes must be 0 (one per core) to {MAX_PROCESSES}")
        if self.deadline_s is not None and not (math.isfinite(self.deadline_s) and self.deadline_s > 0):
            raise ValueError("the sweep deadline must be a positive number of seconds")
        for name, value in asdict(self.timeouts).items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"the {name} stage timeout must be a positive number of seconds")

    def to_json(self) -> dict[str, Any]:
        return {
            "stages": list(self.stages),
            "group": str(self.group),
            "deadline_s": self.deadline_s,
            "concurrency": self.concurrency,
            "per_host": self.per_host,
            "timeouts": asdict(self.timeouts),
            "shard_size": self.shard_size,
            "processes": self.processes,
            "deadline_at": self.deadline_at,
            "sample_set": self.sample_set,
            "frames": self.frames,
            "spacing_s": self.spacing_s,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SweepRequest:
        return cls(
            stages=tuple(str(s) for s in data["stages"]),
            group=Group.parse(str(data.get("group") or "all")),
            deadline_s=_opt_float(data.get("deadline_s")),
            concurrency=int(data.get("concurrency", 200)),
            per_host=int(data.get("per_host", 2)),
            timeouts=StageTimeouts(**{k: float(v) for k, v in (data.get("timeouts") or {}).items()}),
            shard_size=int(data.get("shard_size", 500)),
            processes=int(data.get("processes", 0)),
            deadline_at=_opt_float(data.get("deadline_at")),
            sample_set=None if data.get("sample_set") is None else str(data["sample_set"]),
            frames=int(data.get("frames", 1)),
            spacing_s=float(data.get("spacing_s", 0.0)),
            source=str(data.get("source") or "rtsp"),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


# --- which cameras --------------------------------------------------------------------------------------


def camera_ids(inv: Inventory, group: Group) -> list[int]:
    """The current (not removed) cameras of ``group``, ordered by id."""
    if group.kind == "tag":
        wanted = str(group.value)
        with inv.session(write=False) as s:
            rows = s.execute(
                select(cameras.c.id, cameras.c.tags)
                .where(cameras.c.removed_at.is_(None), cameras.c.tags.is_not(None))
                .order_by(cameras.c.id)
            )
            return [int(cid) for cid, tags in rows if wanted in _tags(tags)]
    flt = repo.CameraFilter(
        region=group.value if group.kind == "region" else None,
        source=group.value if group.kind == "source" else None,
    )
    with inv.session(write=False) as s:
        return [int(r["id"]) for r in repo.list_cameras(s, flt, columns=["id"])]


def _tags(value: Any) -> list[str]:
    if isinstance(value, str):
        value = json.loads(value)
    return [str(t) for t in value] if isinstance(value, list) else []


def _host_key(row: Mapping[str, Any]) -> str:
    """The device a camera's checks talk to (its ONVIF host:port), for grouping cameras into shards."""
    xaddr = row.get("device_service_url")
    if xaddr:
        try:
            t = parse_target(str(xaddr))
            return format_hostport(t.host, t.port)
        except ValueError:
            pass
    return str(row.get("ip_address") or f"camera {row['id']}")


def plan_sweep(inv: Inventory, req: SweepRequest) -> tuple[int, list[list[int]]]:
    """Start a sweep (its ``health_sweeps`` row) and cut its cameras into shards of about ``shard_size``; the
    cameras of one device are never split between shards (an NVR's channels share one round and one per-host
    limit). ValueError for a request no sweep can run (nothing recorded then)."""
    sweep_id, shards, _hosts = _plan(inv, req)
    return sweep_id, shards


def _plan(inv: Inventory, req: SweepRequest) -> tuple[int, list[list[int]], list[list[str]]]:
    """:func:`plan_sweep`, and the devices (host:port) of each shard."""
    req.validate()
    ids = camera_ids(inv, req.group)
    with inv.session(write=False) as s:
        rows = repo.camera_rows(s, ids) if ids else {}
    by_host: dict[str, list[int]] = {}
    for cid in ids:
        row = rows.get(cid)
        if row is not None:
            by_host.setdefault(_host_key(row), []).append(cid)
    shards: list[list[int]] = []
    hosts: list[list[str]] = []
    current: list[int] = []
    current_hosts: list[str] = []
    for key, members in sorted(by_host.items(), key=lambda item: item[1][0]):
        if current and len(current) + len(members) > req.shard_size:
            shards.append(current)
            hosts.append(current_hosts)
            current, current_hosts = [], []
        current.extend(members)
        current_hosts.append(key)
    if current:
        shards.append(current)
        hosts.append(current_hosts)
    stages = select_stages(req.stages, frame=True)
    if "frame" in stages and req.sample_set is not None:
        _sample_set(inv, req, ids)
    health = Health(inv)
    sweep_id = health.start_sweep(stages, str(req.group))
    with inv.session() as s:
        s.execute(
            health_sweeps.update()
            .where(health_sweeps.c.id == sweep_id)
            .values(counts={"planned": len(ids), "shards": len(shards)})
        )
    return sweep_id, shards, hosts


# --- one shard ------------------------------------------------------------------------------------------


_MEMORY = DeviceMemory()  # what checks learnt (media service addresses, auth method): kept across sweeps


@dataclass(slots=True)
class _Shard:
    targets: list[CheckTarget]
    not_checkable: list[int]
    observed: dict[int, dict[str, Any]]  # camera -> its live onvif observation (key, fields, extra) or {}, read
    # after the checks for the cameras whose stream URI changed
    expect: dict[int, tuple[int, int]]


def _expected_size(details: Any) -> tuple[int, int] | None:
    """The snapshot size a camera is expected to serve: the size of its last good snapshot (carried along in the
    latest result's details as ``snapshot_expect`` while later checks do not fetch one)."""
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except ValueError:
            return None
    if not isinstance(details, Mapping):
        return None
    w, h = details.get("snapshot_width"), details.get("snapshot_height")
    if isinstance(w, int) and isinstance(h, int):
        return w, h
    pair = details.get("snapshot_expect")
    if isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) for v in pair):
        return pair[0], pair[1]
    return None


def _load_shard(inv: Inventory, discovery: Discovery, ids: Sequence[int], stages: Sequence[str]) -> _Shard:
    onvif_stages = any(s in _ONVIF for s in stages)
    with inv.session(write=False) as s:
        rows = repo.camera_rows(s, ids)
        resolver = discovery.resolver(s)
        latest = dict(
            s.execute(select(health_latest.c.camera_id, health_latest.c.details).where(
                health_latest.c.camera_id.in_(list(rows))
            )).all()
        ) if rows else {}
    targets: list[CheckTarget] = []
    not_checkable: list[int] = []
    expect: dict[int, tuple[int, int]] = {}
    for cid in sorted(rows):
        row = rows[cid]
        if row["removed_at"] is not None:
            continue  # removed since the sweep was planned: no longer in the inventory's current cameras
        target = _target(row, resolver, onvif_stages, stages)
        if target is None:
            not_checkable.append(cid)
            continue
        size = _expected_size(latest.get(cid))
        if size is not None:
            expect[cid] = size
            target = replace(target, expect_size=size)
        targets.append(target)
    return _Shard(targets, not_checkable, {}, expect)


def _observed(s: Any, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The live onvif observation (key, fields, extra) of each camera, or {}: read only for the few cameras whose
    stream URI changed, not for every camera of every shard."""
    observed: dict[int, dict[str, Any]] = {}
    for cid, obs in repo.live_observations(s, list(ids)).items():
        ob = next((o for o in obs if o.source == SOURCE), None)
        observed[cid] = {"key": ob.key, "fields": ob.fields, "extra": ob.extra} if ob is not None else {}
    return observed


def _target(row: Mapping[str, Any], resolver: Any, onvif_stages: bool, stages: Sequence[str]) -> CheckTarget | None:
    xaddr = row.get("device_service_url")
    host: str | None = None
    port = 80
    if xaddr:
        try:
            t = parse_target(str(xaddr))
            host, port = t.host, t.port
        except ValueError:
            xaddr = None
    if xaddr is None:
        if onvif_stages:
            return None  # no ONVIF device address: a ledger-only record
        needs = {"rtsp": row.get("stream_uri"), "snapshot": row.get("snapshot_uri"),
                 "frame": row.get("stream_uri") or row.get("snapshot_uri")}
        if not all(needs[s] for s in stages if s in needs):
            return None
        host = row.get("ip_address") or _uri_host(row.get("stream_uri") or row.get("snapshot_uri"))
        port = int(row.get("port") or 80)
    if not host:
        return None
    logins = resolver.logins(host)
    known = [lg for lg in logins if lg.credential_id == row.get("credential_id")]
    ordered = known + [lg for lg in logins if lg not in known]  # the login that worked last first
    credentials = tuple(dict.fromkeys(Credential(lg.username, lg.password) for lg in ordered))
    return CheckTarget(
        camera_id=int(row["id"]),
        host=host,
        port=port,
        xaddr=str(xaddr) if xaddr else None,
        credentials=credentials,
        auth_hint=auth_hint(row.get("auth_method")),
        stream_uri=row.get("stream_uri"),
        snapshot_uri=row.get("snapshot_uri"),
    )


def _uri_host(uri: Any) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(str(uri)).hostname if uri else None
    except ValueError:
        return None


def _with_sample(result: CheckResult, sample_id: int | None) -> CheckResult:
    return result if sample_id is None else replace(result, details={**result.details, "sample_id": sample_id})


def _recorded(inv: Inventory, sweep_id: int, ids: Sequence[int]) -> set[int]:
    """The cameras of ``ids`` with a result of this sweep already (a shard run again)."""
    if not ids:
        return set()
    with inv.session(write=False) as s:
        return {int(c) for c in s.scalars(select(health_results.c.camera_id).where(
            health_results.c.sweep_id == sweep_id, health_results.c.camera_id.in_(list(ids))
        ))}


def _sample_set(inv: Inventory, req: SweepRequest, ids: Sequence[int] | None) -> int | None:
    """The request's sample set: reused by name, else (``ids`` given: the planner) created with the request's
    settings and cameras."""
    from vms.frames.store import DuplicateSampleSet, SampleSets

    if req.sample_set is None:
        return None
    sets = SampleSets(inv)
    name = req.sample_set.strip()
    known = sets.get(name)
    if known is None and ids is not None:
        settings = {"stages": list(req.stages), "group": str(req.group), "frames": req.frames,
                    "spacing_s": req.spacing_s, "source": req.source}
        try:
            known = sets.create(name, settings, list(ids), actor="sweep")
        except DuplicateSampleSet:  # made by another sweep meanwhile
            known = sets.get(name)
    return int(known.id) if known is not None else None


def _frame_runner(inv: Inventory, sweep_id: int, req: SweepRequest, policy: Any, concurrency: int,
                  timeout: float) -> FrameStageRunner:
    from vms.frames.stage import FrameStageRunner

    set_id = _sample_set(inv, req, None)
    return FrameStageRunner(
        inv, sample_set_id=set_id, sweep_id=sweep_id, frames=req.frames, spacing_s=req.spacing_s, prefer=req.source,
        policy=policy, concurrency=concurrency, per_host=req.per_host, timeout=timeout,
    )


def _with_expectation(result: CheckResult, size: tuple[int, int] | None) -> CheckResult:
    if size is None or "snapshot_width" in result.details:
        return result
    return replace(result, details={**result.details, "snapshot_expect": list(size)})


def _stream_observations(shard: _Shard, changed: Mapping[int, str], hosts: Mapping[int, CheckTarget]
                         ) -> tuple[list[Observation], dict[str, int]]:
    """The onvif observations of cameras whose device now reports another stream URI: their live onvif
    observation with the new URI (as discovery would register it), or a new one pinned to the camera."""
    observations: list[Observation] = []
    pinned: dict[str, int] = {}
    for cid, uri in sorted(changed.items()):
        current = shard.observed.get(cid) or {}
        if current:
            fields = {**current["fields"], "stream_uri": uri}
            key = str(current["key"])
            extra: Mapping[str, str] = current.get("extra") or {}
        else:
            t = hosts[cid]
            fields = {"ip_address": t.host, "port": t.port, "stream_uri": uri}
            if t.xaddr:
                fields["device_service_url"] = t.xaddr
            key = observation_key(fields)
            extra = {}
        if key in pinned:
            continue  # two cameras behind one observation key: the first keeps it
        pinned[key] = cid
        observations.append(Observation(SOURCE, SourceKind.ONVIF, key, fields, extra))
    return observations, pinned


async def run_shard(
    inv: Inventory,
    sweep_id: int,
    ids: Sequence[int],
    req: SweepRequest,
    *,
    concurrency: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Check one shard's cameras and record the results. Safe to run again for the same shard (a re-delivered
    Celery task): the same rows, nothing counted twice. Returns {"checked", "written", "duplicate",
    "not_checkable", "events", "observations"} (counts of this run, for progress; the sweep's summary comes from
    the stored rows)."""
    stages = select_stages(req.stages, frame=True)
    discovery = Discovery(inv)
    # The database work of a shard runs in threads: other lanes' checks go on meanwhile on this event loop.
    shard = await asyncio.to_thread(_load_shard, inv, discovery, ids, stages)
    counts = {"checked": 0, "written": 0, "duplicate": 0, "not_checkable": len(shard.not_checkable), "events": 0,
              "observations": 0}
    timeouts = req.timeouts
    frames: FrameStageRunner | None = None
    if "frame" in stages:
        # A re-delivered shard samples no camera twice: those with a result of this sweep are done.
        done = _recorded(inv, sweep_id, [t.camera_id for t in shard.targets])
        if done:
            shard.targets = [t for t in shard.targets if t.camera_id not in done]
            counts["duplicate"] += len(done)
        timeouts = replace(timeouts, frame=timeouts.frame + (req.frames - 1) * req.spacing_s)
    keys = sorted({t.key for t in shard.targets})

    touched: set[str] = set()  # devices whose login state changed: only those are saved

    def prepare() -> tuple[LoginBudget, AddressPolicy]:
        with inv.session(write=False) as s:
            return discovery.load_budget(s, keys, on_change=touched.add), discovery.address_policy(s)

    def save(snap: dict[str, Any]) -> None:
        with inv.session() as s:
            discovery.save_budget(s, snap)

    budget, policy = await asyncio.to_thread(prepare)
    before = budget.snapshot(keys)["devices"]  # a login charges the budget, then refunds it: no change to save
    if "frame" in stages:
        frames = _frame_runner(inv, sweep_id, req, policy, concurrency or req.concurrency, timeouts.frame)
        await frames.preload([t.camera_id for t in shard.targets])
    deadline_s = req.deadline_s
    if req.deadline_at is not None:
        deadline_s = max(0.0, req.deadline_at - time.time())
    health = Health(inv)
    by_id = {t.camera_id: t for t in shard.targets}
    changed: dict[int, str] = {}
    batch: list[CheckResult] = []
    sample_ids: dict[int, int] = {}

    writing: asyncio.Task[None] | None = None

    def record(results: list[CheckResult]) -> None:
        summary = health.record(results, sweep_id)
        counts["written"] += summary.written
        counts["duplicate"] += summary.duplicate
        counts["events"] += summary.events

    async def flush(*, final: bool = False) -> None:
        """Record what came so far. ONVIF results are written in a thread while the checks go on (the database's
        round trips and its own CPU no longer stall every check in flight), one write at a time: a write still
        running lets the batch grow, up to a bound. A frame sweep writes in line (its samples come first)."""
        nonlocal writing
        if frames is not None:
            sample_ids.update(frames.flush())  # the samples first: their ids go into the results' details
            batch[:] = [_with_sample(r, sample_ids.pop(r.camera_id, None)) for r in batch]
            if batch:
                record(list(batch))
                batch.clear()
            return
        if writing is not None:
            if not (final or writing.done() or len(batch) >= RECORD_BATCH * RECORD_AHEAD):
                return
            task, writing = writing, None
            await task  # a failed write fails the shard here
        if batch:
            results = list(batch)
            batch.clear()
            writing = asyncio.create_task(asyncio.to_thread(record, results))
        if final and writing is not None:
            task, writing = writing, None
            await task

    try:
        async for result in check_many(
            shard.targets,
            stages=stages,
            budget=budget,
            concurrency=concurrency or req.concurrency,
            per_host=req.per_host,
            timeouts=timeouts,
            deadline_s=deadline_s,
            policy=policy,
            memory=_MEMORY,
            frame_stage=frames,
            fast_path=bool(getattr(inv.settings, "health_fast_path", True)),
        ):
            counts["checked"] += 1
            if result.details.get("stream_uri_changed") and result.stream_uri:
                changed[result.camera_id] = result.stream_uri
            batch.append(_with_expectation(result, shard.expect.get(result.camera_id)))
            if len(batch) >= RECORD_BATCH:
                await flush()
            if progress is not None:
                progress(1)
        await flush(final=True)
    finally:
        if writing is not None:  # the shard failed meanwhile: let the write in flight end before anything else
            with contextlib.suppress(Exception):
                await writing
        if frames is not None:
            await frames.aclose()
        # The budget of these devices is saved whatever happened: a login refused now counts in the next sweep.
        snap = {k: v for k, v in budget.snapshot(sorted(touched))["devices"].items() if before.get(k) != v}
        if snap:
            await asyncio.to_thread(save, snap)
    if changed:
        # only where the inventory still has the old URI (a re-run after the merge finds nothing to change)
        with inv.session(write=False) as s:
            now = {cid: row["stream_uri"] for cid, row in repo.camera_rows(s, list(changed)).items()}
            changed = {
                cid: uri for cid, uri in changed.items()
                if cid in now and (strip_credentials(now[cid].strip()) if now[cid] else None) != uri
            }
            shard.observed = _observed(s, list(changed)) if changed else {}
        observations, pinned = _stream_observations(shard, changed, by_id)
        if observations:
            inv.ingest_observations(
                observations, source=SOURCE, kind=SourceKind.ONVIF, snapshot=False, actor="health", pinned=pinned
            )
            counts["observations"] = len(observations)
    return counts


# --- the sweep ------------------------------------------------------------------------------------------


def run_sweep(
    inv: Inventory,
    req: SweepRequest,
    *,
    executor: str = "local",
    progress: Progress | None = None,
    planned: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Plan, run and finish one sweep; returns its summary (also stored with the sweep): cameras planned, by
    outcome, not checkable, failures by stage and cause, status changes, duration. ``executor``: "local" (this
    process) or "celery" (:func:`vms.jobs.celery_app.run_sweep_distributed`). ``planned(sweep_id)`` hears the
    sweep's id once it is recorded (an operation that stops the sweep closes it with what was stored)."""
    if executor not in ("local", "celery"):
        raise ValueError(f"unknown executor {executor!r}: choose local or celery")
    if executor == "celery":
        _distributed()  # before anything is recorded
    started = time.monotonic()
    req = replace(req, deadline_at=time.time() + req.deadline_s if req.deadline_s is not None else None)
    sweep_id, shards, hosts = _plan(inv, req)
    if planned is not None:
        planned(sweep_id)
    report = progress or _quiet
    total = sum(len(s) for s in shards)
    report("sweep", 0, total)
    if executor == "celery":
        _distributed()(inv, sweep_id, shards, req, progress=report)
    elif (processes := process_count(inv, req, total, len(shards))) > 1:
        asyncio.run(_run_processes(inv, sweep_id, shards, hosts, req, report, total, processes))
    else:
        asyncio.run(_run_local(inv, sweep_id, shards, req, report, total))
    return finish(inv, sweep_id, duration_s=time.monotonic() - started)


Distribute = Callable[..., Any]
_EXECUTORS: dict[str, Distribute] = {}
CELERY_MODULE: Final = "vms.jobs.celery_app"


def register_executor(name: str, run: Distribute) -> None:
    """Make ``run(inv, sweep_id, shards, req, progress=...)`` the executor ``name`` (it runs every shard with
    :func:`run_shard` somewhere and returns when all are done or the sweep's deadline passed)."""
    _EXECUTORS[name] = run


def _distributed() -> Distribute:
    """The Celery executor: :func:`vms.jobs.celery_app.run_sweep_distributed`, once that module is loaded (the
    jobs layer sits above this one: the CLI and the scheduler load it; nothing here imports it)."""
    run = _EXECUTORS.get("celery") or getattr(sys.modules.get(CELERY_MODULE), "run_sweep_distributed", None)
    if run is None:
        raise ValueError(f"the celery executor is not loaded (import {CELERY_MODULE} first)")
    return run


async def _run_local(
    inv: Inventory, sweep_id: int, shards: list[list[int]], req: SweepRequest, report: Progress, total: int
) -> None:
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        report("sweep", done, total)

    await _run_lanes(inv, sweep_id, shards, req, tick, req.concurrency)


async def _run_lanes(inv: Inventory, sweep_id: int, shards: Sequence[list[int]], req: SweepRequest,
                     tick: Callable[[int], None], concurrency: int) -> None:
    """The shards in this event loop, a few at a time, ``concurrency`` cameras at once over all of them."""
    parallel = max(1, min(LOCAL_PARALLEL_SHARDS, len(shards), concurrency))
    share = max(1, concurrency // parallel)  # the limit split between the shards running at once
    pending = iter(shards)

    async def lane() -> None:
        while (ids := next(pending, None)) is not None:
            counts = await run_shard(inv, sweep_id, ids, req, concurrency=share, progress=tick)
            tick(len(ids) - counts["checked"])  # not checkable, or removed since the plan

    await asyncio.gather(*(lane() for _ in range(parallel)))


# --- a local sweep on every core ------------------------------------------------------------------------


def process_count(inv: Inventory, req: SweepRequest, cameras: int, shards: int) -> int:
    """How many processes a local sweep of ``cameras`` in ``shards`` uses (1: all in this process). Never more
    than shards (a shard is the unit a process takes: its devices, logins and budget are its own), never for an
    in-memory database (other processes cannot see it)."""
    url = str(inv.engine.url)
    if shards < 2 or (url.startswith("sqlite") and (inv.engine.url.database or ":memory:") == ":memory:"):
        return 1
    wanted = req.processes
    if wanted == 0:
        if cameras < WORKER_MIN_CAMERAS:
            return 1
        wanted = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(wanted, shards, MAX_PROCESSES))


_POOL: dict[int, tuple[ProcessPoolExecutor, Any]] = {}  # processes -> (pool, progress queue): kept for later sweeps
_POOL_LOCK = threading.Lock()  # a scheduler may start two sweeps at once, from two threads


def _pool(processes: int) -> tuple[ProcessPoolExecutor, Any]:
    """Worker processes for local sweeps, started once and kept (each takes about a second to import the
    inventory): a scheduler's next sweep finds them ready. Spawned: forking a process with threads and an event
    loop is unsafe."""
    with _POOL_LOCK:
        known = _POOL.get(processes)
        if known is not None:
            return known
        for pool, _queue in _POOL.values():
            pool.shutdown(wait=False, cancel_futures=True)
        _POOL.clear()
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.SimpleQueue()
        pool = ProcessPoolExecutor(max_workers=processes, mp_context=ctx, initializer=_worker_init, initargs=(queue,))
        _POOL[processes] = (pool, queue)
        return pool, queue


def worker_pids() -> list[int]:
    """The process ids of the local sweep's worker processes (for a benchmark's CPU accounting)."""
    return [pid for pool, _queue in _POOL.values() for pid in getattr(pool, "_processes", None) or {}]


async def _run_processes(
    inv: Inventory,
    sweep_id: int,
    shards: list[list[int]],
    hosts: list[list[str]],
    req: SweepRequest,
    report: Progress,
    total: int,
    processes: int,
) -> None:
    """The shards shared by ``processes`` worker processes: process k runs every k-th shard (like a local sweep
    does, a few at a time in its own event loop), with its own database connection, loading and saving the login
    budget of its shards' devices (a device is never split between shards, so no two processes touch one
    device's budget). What the checks learnt of each device (:class:`DeviceMemory`) goes with its shard and comes
    back, so the next sweep, whichever process runs it, skips asking again."""
    pool, queue = _pool(processes)
    loop = asyncio.get_running_loop()
    share = max(1, req.concurrency // processes)
    payload = req.to_json()
    futures = []
    for k in range(processes):
        mine, keys = shards[k::processes], [key for h in hosts[k::processes] for key in h]
        if mine:
            futures.append(loop.run_in_executor(
                pool, _process_lane, inv.settings, sweep_id, mine, payload, share, _MEMORY.export(keys), keys
            ))
    done = 0

    def drain() -> None:
        nonlocal done
        while not queue.empty():
            done += int(queue.get())
            report("sweep", min(done, total), total)

    try:
        pending = set(futures)
        while pending:
            _finished, pending = await asyncio.wait(pending, timeout=0.2)
            drain()
        for future in futures:
            state, keys = future.result()  # raises what a worker raised
            _MEMORY.load(state, keys)
    except BrokenProcessPool:
        _POOL.pop(processes, None)  # a worker died: the next sweep starts new ones
        raise
    drain()


_WORKER: dict[str, Any] = {}  # in a worker process: the progress queue, the inventory of the last settings


def _worker_init(queue: Any) -> None:
    _WORKER["queue"] = queue


def _worker_inventory(settings: Any) -> Inventory:
    from vms.inventory.service import Inventory

    known = _WORKER.get("inventory")
    if known is not None and known.settings == settings:
        return known  # type: ignore[no-any-return]
    if known is not None:
        known.engine.dispose()
    inv = _WORKER["inventory"] = Inventory(settings)
    return inv


def _process_lane(
    settings: Any,
    sweep_id: int,
    shards: list[list[int]],
    payload: dict[str, Any],
    concurrency: int,
    memory: dict[str, tuple[str | None, str | None, bool, str | None]],
    keys: list[str],
) -> tuple[dict[str, tuple[str | None, str | None, bool, str | None]], list[str]]:
    """One worker process's share of a local sweep (see :func:`_run_processes`)."""
    inv = _worker_inventory(settings)
    req = SweepRequest.from_json(payload)
    _MEMORY.devices.clear()  # the parent's knowledge is the truth: this process may have run other devices
    _MEMORY.load(memory, keys)
    queue = _WORKER.get("queue")
    unreported = 0

    def tick(n: int) -> None:
        nonlocal unreported
        unreported += n
        if unreported >= 100 and queue is not None:
            queue.put(unreported)
            unreported = 0

    try:
        asyncio.run(_run_lanes(inv, sweep_id, shards, req, tick, concurrency))
    finally:
        if unreported and queue is not None:
            queue.put(unreported)
    return _MEMORY.export(keys), keys


def finish(inv: Inventory, sweep_id: int, *, duration_s: float | None = None) -> dict[str, Any]:
    """Close a sweep from its stored rows (whichever executor ran it, however often a shard was re-run) and store
    its summary with it."""
    health = Health(inv)
    with inv.session(write=False) as s:
        row = s.execute(select(health_sweeps).where(health_sweeps.c.id == sweep_id)).one()
        planned = int((row.counts or {}).get("planned", 0))
        results = int(s.scalar(select(func.count()).where(health_results.c.sweep_id == sweep_id)) or 0)
        events: dict[str, int] = dict(
            s.execute(
                select(health_events.c.event, func.count())
                .where(health_events.c.sweep_id == sweep_id)
                .group_by(health_events.c.event)
            ).all()
        )
    counts = health.finish_sweep(sweep_id)
    started = row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=dt.UTC)
    summary = {
        "sweep_id": sweep_id,
        "group": row.camera_group,
        "stages": list(row.stages or []),
        "planned": planned,
        "checked": results,
        "not_checkable": max(0, planned - results),  # no ONVIF address (or removed meanwhile): never OFF
        "outcome": counts["outcome"],
        "cause": counts["cause"],
        "status_changed": sum(events.values()),
        "events": {str(k): int(v) for k, v in sorted(events.items())},
        "duration_s": round(
            duration_s if duration_s is not None else (dt.datetime.now(dt.UTC) - started).total_seconds(), 3
        ),
    }
    with inv.session() as s:
        s.execute(health_sweeps.update().where(health_sweeps.c.id == sweep_id).values(counts=summary))
    return summary
