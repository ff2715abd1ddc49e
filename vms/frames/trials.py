"""Structured-processing trials: run analyzers over a sample set, store what they find as GA/T 1400-shaped records
(trial_objects), and report per camera and overall (vms.frames.report): detections by kind, frames per second per
analyzer, and a suitability verdict with its reasons.

A trial reads the set's JPEG files (vms.frames.store) in camera and time order, so that stateful analyzers (motion)
see each camera's frames in sequence. Its analyzers, their versions and options are recorded with it: running the
same analyzers over the same set again is a repeatable comparison. The summary is stored when the trial ends, so
its figures outlive the samples (retention may prune them); the HTML page draws the samples still on disk.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from vms.errors import Conflict, NotFound, ValidationFailed
from vms.frames import report as rep
from vms.frames.analyzers import DEFAULT_ANALYZERS, Analyzer, AnalyzerSpec, Detection
from vms.frames.store import SampleSets, SampleStore, utc
from vms.frames.vqd import diagnose, thresholds_from
from vms.inventory.service import Inventory
from vms.store import repository as repo
from vms.store.models import cameras, frame_samples, sample_sets, trial_objects, trials, utcnow

FLUSH = 500  # object rows per insert batch
THUMBS_PER_CAMERA = 3  # thumbnails on the HTML page, the frames with most objects first
THUMB_CAMERAS = 300  # cameras with thumbnails on one page (a page of 2,000 cameras' frames would be ~200 MB)
_NAME_MAX = 128

Progress = Callable[[str, int, int], None]


class TrialInputError(ValidationFailed, ValueError):
    pass


class DuplicateTrial(Conflict, ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TrialReport:
    id: int
    name: str
    set_name: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    analyzers: list[dict[str, Any]]
    summary: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "set": self.set_name,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "analyzers": self.analyzers,
            "summary": self.summary,
        }


def _no_progress(_stage: str, _done: int, _total: int) -> None:
    return None


def _build(analyzers: Sequence[str | AnalyzerSpec | Analyzer]) -> list[tuple[Analyzer, dict[str, str]]]:
    out: list[tuple[Analyzer, dict[str, str]]] = []
    for a in analyzers:
        if isinstance(a, str):
            a = AnalyzerSpec.parse(a)
        if isinstance(a, AnalyzerSpec):
            out.append((a.build(), dict(a.options)))
        else:
            out.append((a, {}))
    names = [a.name for a, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TrialInputError(f"analyzer {dup[0]} given twice: a trial runs each analyzer once")
    return out


def run_trial(
    inv: Inventory,
    set_name: str,
    analyzers: Sequence[str | AnalyzerSpec | Analyzer] = DEFAULT_ANALYZERS,
    name: str | None = None,
    *,
    progress: Progress = _no_progress,
    actor: str = "cli",
) -> TrialReport:
    """Run ``analyzers`` (names with options, ``name:key=value,...``, or analyzer objects) over every sample of the
    set; returns the report. Bad input (unknown set or analyzer, empty set, taken name) raises before anything is
    stored; a failure during the run leaves the trial ``failed`` with the reason."""
    sset = SampleSets(inv).get(set_name)
    if sset is None:
        raise NotFound(f"no sample set named {set_name!r}")
    if not analyzers:
        raise TrialInputError("a trial needs at least one analyzer")
    try:
        built = _build(analyzers)
    except ValueError as exc:
        raise TrialInputError(str(exc)) from None
    fs = frame_samples
    with inv.session(write=False) as s:
        samples = s.execute(
            select(fs.c.id, fs.c.camera_id, fs.c.sha256, fs.c.width, fs.c.height, fs.c.faults)
            .where(fs.c.set_id == sset.id)
            .order_by(fs.c.camera_id, fs.c.taken_at, fs.c.id)
        ).all()
        cams = {
            r.id: {"device_id": r.device_id, "name": r.name}
            for r in s.execute(
                select(cameras.c.id, cameras.c.device_id, cameras.c.name).where(
                    cameras.c.id.in_(sorted({r.camera_id for r in samples}) or [-1])
                )
            )
        }
    if not samples:
        raise TrialInputError(f"sample set {set_name!r} holds no samples: run `vms sample --set {set_name}` first")
    started = utcnow()
    name = (name or f"{sset.name}@{started:%Y%m%dT%H%M%S.%fZ}").strip()
    if not name or len(name) > _NAME_MAX:
        raise TrialInputError(f"a trial needs a name of 1 to {_NAME_MAX} characters")
    described = [{"name": a.name, "version": a.version, "options": opts} for a, opts in built]
    dup = DuplicateTrial(f"a trial named {name!r} exists; choose another name")
    try:
        with inv.session() as s:
            if s.scalar(select(trials.c.id).where(trials.c.name == name)) is not None:
                raise dup
            trial_id = int(
                s.connection().scalar(
                    insert(trials)
                    .values(set_id=sset.id, name=name, started_at=started, analyzers=described, status="running")
                    .returning(trials.c.id)
                )
            )
            repo.audit(
                s, actor=actor, action="trial.run", target=name, details={"set": sset.name, "analyzers": described}
            )
    except IntegrityError:
        raise dup from None
    try:
        summary = _run(inv, trial_id, samples, built, cams, progress)
    except BaseException as exc:
        with inv.session() as s:
            s.execute(
                update(trials)
                .where(trials.c.id == trial_id)
                .values(status="failed", finished_at=utcnow(), error=(str(exc) or type(exc).__name__)[:1000])
            )
        raise
    with inv.session() as s:
        s.execute(
            update(trials).where(trials.c.id == trial_id).values(status="done", finished_at=utcnow(), summary=summary)
        )
    found = get_trial(inv, str(trial_id))
    return found


def _run(
    inv: Inventory,
    trial_id: int,
    samples: Sequence[Any],
    built: Sequence[tuple[Analyzer, Mapping[str, str]]],
    cams: Mapping[int, Mapping[str, Any]],
    progress: Progress,
) -> dict[str, Any]:
    store = SampleStore(inv)
    thresholds = thresholds_from(inv.settings)
    limits = rep.Limits(thresholds.dark_mean, thresholds.bright_mean, thresholds.blur_var)
    timings: dict[str, dict[str, Any]] = {
        a.name: {"version": a.version, "frames": 0, "seconds": 0.0, "cpu_seconds": 0.0, "detections": Counter()}
        for a, _ in built
    }
    results: list[rep.FrameResult] = []
    pending: list[dict[str, Any]] = []
    missing = 0

    def flush() -> None:
        if pending:
            with inv.session() as s:
                s.execute(insert(trial_objects), pending)
            pending.clear()

    total = len(samples)
    progress("analyze", 0, total)
    for done, row in enumerate(samples, 1):
        try:
            image = store.read_image(row.sha256)
        except (NotFound, ValueError):
            missing += 1
            progress("analyze", done, total)
            continue
        quality = diagnose(image, thresholds=thresholds).metrics
        result = rep.FrameResult(
            sample_id=row.id,
            camera_id=row.camera_id,
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            mean=float(quality.get("mean", float(np.mean(image)))),
            blur_var=float(quality.get("blur_var", 0.0)),
            faults=tuple(f for f in (row.faults or "").split(",") if f),
        )
        counts: Counter[str] = Counter()
        for analyzer, _ in built:
            t = timings[analyzer.name]
            wall, cpu = time.perf_counter(), time.process_time()
            found = analyzer.analyze(image, camera_id=row.camera_id)
            t["seconds"] += time.perf_counter() - wall
            t["cpu_seconds"] += time.process_time() - cpu
            t["frames"] += 1
            for d in found:
                t["detections"][d.kind] += 1
                counts[d.kind] += 1
                pending.append(_object_row(trial_id, row.id, row.camera_id, analyzer, d))
        result.counts = dict(counts)
        results.append(result)
        if len(pending) >= FLUSH:
            flush()
        progress("analyze", done, total)
    flush()
    return rep.summarise(results, timings, cams, limits, missing=missing)


def _object_row(trial_id: int, sample_id: int, camera_id: int, analyzer: Analyzer, d: Detection) -> dict[str, Any]:
    x1, y1, x2, y2 = d.box
    return {
        "trial_id": trial_id,
        "sample_id": sample_id,
        "camera_id": camera_id,
        "kind": d.kind,
        "left_top_x": int(x1),
        "left_top_y": int(y1),
        "right_btm_x": int(x2),
        "right_btm_y": int(y2),
        "score": float(d.score),
        "analyzer": analyzer.name,
        "analyzer_version": analyzer.version[:128],
        "plate_no": d.plate_no,
        "attributes": dict(d.attributes) or None,
    }


# --- reading trials ---------------------------------------------------------------------------------------------


def _select() -> Any:
    return select(trials, sample_sets.c.name.label("set_name")).join(sample_sets, sample_sets.c.id == trials.c.set_id)


def _report(r: Any) -> TrialReport:
    return TrialReport(
        id=r.id,
        name=r.name,
        set_name=r.set_name,
        status=r.status if r.status != "failed" or not r.error else f"failed: {r.error}",
        started_at=utc(r.started_at),
        finished_at=utc(r.finished_at) if r.finished_at else None,
        analyzers=list(r.analyzers or []),
        summary=dict(r.summary or {}),
    )


def get_trial(inv: Inventory, ref: str) -> TrialReport:
    """A trial by name, or by id when ``ref`` is a number no trial is named."""
    with inv.session(write=False) as s:
        r = s.execute(_select().where(trials.c.name == ref.strip())).first()
        if r is None and ref.strip().isdigit():
            r = s.execute(_select().where(trials.c.id == int(ref))).first()
    if r is None:
        raise NotFound(f"no trial {ref!r}")
    return _report(r)


def list_trials(inv: Inventory, *, limit: int = 50) -> list[TrialReport]:
    """The newest trials first."""
    with inv.session(write=False) as s:
        rows = s.execute(_select().order_by(trials.c.started_at.desc(), trials.c.id.desc()).limit(limit)).all()
    return [_report(r) for r in rows]


def trial_objects_of(inv: Inventory, trial_id: int, *, sample_id: int | None = None) -> list[dict[str, Any]]:
    """The stored records of a trial (of one sample), GA/T 1400 names for the box."""
    t = trial_objects
    stmt = select(t).where(t.c.trial_id == trial_id)
    if sample_id is not None:
        stmt = stmt.where(t.c.sample_id == sample_id)
    with inv.session(write=False) as s:
        rows = s.execute(stmt.order_by(t.c.sample_id, t.c.id)).all()
    return [
        {
            "id": r.id,
            "sample_id": r.sample_id,
            "camera_id": r.camera_id,
            "kind": r.kind,
            "LeftTopX": r.left_top_x,
            "LeftTopY": r.left_top_y,
            "RightBtmX": r.right_btm_x,
            "RightBtmY": r.right_btm_y,
            "score": r.score,
            "analyzer": r.analyzer,
            "analyzer_version": r.analyzer_version,
            "PlateNo": r.plate_no,
            "attributes": r.attributes or {},
        }
        for r in rows
    ]


def report_json(inv: Inventory, ref: str) -> dict[str, Any]:
    return get_trial(inv, ref).to_dict()


def report_html(inv: Inventory, ref: str, out_dir: Path) -> Path:
    """``out_dir/index.html``: one self-contained page (thumbnails inline) of the trial's report."""
    trial = get_trial(inv, ref)
    per_camera = trial.summary.get("per_camera", [])
    t = trial_objects
    boxes: dict[int, list[rep.Box]] = defaultdict(list)
    with inv.session(write=False) as s:
        for r in s.execute(
            select(t.c.sample_id, t.c.kind, t.c.left_top_x, t.c.left_top_y, t.c.right_btm_x, t.c.right_btm_y,
                   t.c.score, t.c.analyzer, t.c.plate_no).where(t.c.trial_id == trial.id)
        ):  # fmt: skip
            box = (r.left_top_x, r.left_top_y, r.right_btm_x, r.right_btm_y)
            boxes[r.sample_id].append(rep.Box(r.kind, box, r.score, r.analyzer, r.plate_no))
        wanted = [c["camera_id"] for c in per_camera[:THUMB_CAMERAS]]
        samples = s.execute(
            select(frame_samples.c.id, frame_samples.c.camera_id, frame_samples.c.sha256)
            .join(sample_sets, sample_sets.c.id == frame_samples.c.set_id)
            .where(sample_sets.c.name == trial.set_name, frame_samples.c.camera_id.in_(wanted or [-1]))
            .order_by(frame_samples.c.camera_id, frame_samples.c.taken_at, frame_samples.c.id)
        ).all()
    store = SampleStore(inv)
    by_camera: dict[int, list[Any]] = defaultdict(list)
    for sample in samples:
        by_camera[sample.camera_id].append(sample)
    thumbs: dict[int, list[tuple[int, bytes | None]]] = {}
    for cid, rows in by_camera.items():

        def objects(r: Any) -> int:
            return sum(1 for b in boxes.get(r.id, ()) if b.kind != "Motion")

        chosen = sorted(rows, key=lambda r: -objects(r))[:THUMBS_PER_CAMERA]
        out: list[tuple[int, bytes | None]] = []
        for r in chosen:
            try:
                image = store.read_image(r.sha256)
            except (NotFound, ValueError):
                out.append((r.id, None))
                continue
            out.append((r.id, rep.draw(image, boxes.get(r.id, []))))
        thumbs[cid] = out
    page = rep.render_html(trial.to_dict(), trial.summary, thumbs)
    return rep.write_html(Path(out_dir), page)
