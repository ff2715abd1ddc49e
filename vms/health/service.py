"""Health of known cameras: record check results, keep status with hysteresis and its events, daily figures,
the time-weighted online rate for any period, and each camera's clock drift.

History at city scale (100,000 cameras every 5 minutes is 28.8 million checks a day): the latest result per camera,
every status change, and daily figures per camera are kept; raw results only for VMS_HEALTH_RAW_DAYS (``prune``).

The online rate of a period [a, b) is the time with status ON over the time with a known status, from the status
intervals the events make (a status holds from its event to the next), never from counting checks. Whole days
come from the daily figures (the closed intervals that fell in each day) plus each camera's open interval; the
edges of the period (less than a day each) from the events themselves.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import delete, func, select

from probes.health.results import CheckResult
from vms.catalog.fields import FIELDS
from vms.health import store
from vms.health.rollup import midnight
from vms.health.status import State, Status, step
from vms.inventory.service import Inventory
from vms.store.models import (
    Region,
    cameras,
    health_daily,
    health_events,
    health_latest,
    health_results,
    health_sweeps,
    utcnow,
)

__all__ = ["DriftDay", "Health", "OnlineRate", "RecordSummary"]

DAY = dt.timedelta(days=1)
_DETAIL_CAP = 300
_VALID_STATUS = frozenset(next(f.values for f in FIELDS if f.name == "status") or ())
_OUTCOME: dict[str, str] = {"ON": "ok", "OFF": "off", "DEFECT": "defect"}  # the result a signalled status stands for


@dataclass(frozen=True, slots=True)
class RecordSummary:
    written: int  # results stored and counted now
    duplicate: int  # (sweep, camera) already stored: a re-delivered shard; nothing counted twice
    unknown_camera: int  # no such camera (removed from the inventory meanwhile): skipped
    events: int  # status changes
    late: int = 0  # older than the camera's latest result: stored and counted in its day, status untouched


@dataclass(frozen=True, slots=True)
class OnlineRate:
    online_s: float
    known_s: float
    cameras: int  # cameras with some known time in the period

    @property
    def rate(self) -> float | None:
        return self.online_s / self.known_s if self.known_s > 0 else None


@dataclass(frozen=True, slots=True)
class DriftDay:
    day: dt.date
    samples: int
    min_s: float
    max_s: float
    mean_s: float


def _day(at: dt.datetime) -> dt.date:
    return at.astimezone(dt.UTC).date()


def split_by_day(start: dt.datetime, end: dt.datetime) -> Iterable[tuple[dt.date, float]]:
    """Seconds of [start, end) in each UTC day."""
    while start < end:
        day = _day(start)
        cut = min(end, midnight(day) + DAY)
        yield day, (cut - start).total_seconds()
        start = cut


def _stages_json(result: CheckResult) -> str:
    return json.dumps(
        [[s.stage, s.ok, round(s.ms, 1), s.cause, s.detail[:_DETAIL_CAP]] for s in result.stages],
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _details_json(result: CheckResult) -> str | None:
    details = dict(result.details)
    if result.stream_uri:
        details.setdefault("stream_uri", result.stream_uri)
    return json.dumps(details, separators=(",", ":"), ensure_ascii=False, default=str) if details else None


class _Daily:
    """Increments of health_daily for one batch, by (camera, day)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, dt.date], dict[str, Any]] = {}

    def _row(self, camera_id: int, day: dt.date) -> dict[str, Any]:
        row = self.rows.get((camera_id, day))
        if row is None:
            row = self.rows[(camera_id, day)] = {
                "camera_id": camera_id,
                "day": day,
                "checks": 0,
                "ok": 0,
                "online_s": 0.0,
                "known_s": 0.0,
                "drift_n": 0,
                "drift_min": None,
                "drift_max": None,
                "drift_sum": None,
            }
        return row

    def check(self, result: CheckResult) -> None:
        row = self._row(result.camera_id, _day(result.at))
        row["checks"] += 1
        row["ok"] += result.outcome == "ok"
        offset = result.clock_offset_s
        if offset is not None and math.isfinite(offset):
            row["drift_n"] += 1
            row["drift_min"] = offset if row["drift_min"] is None else min(row["drift_min"], offset)
            row["drift_max"] = offset if row["drift_max"] is None else max(row["drift_max"], offset)
            row["drift_sum"] = offset + (row["drift_sum"] or 0.0)

    def interval(self, camera_id: int, status: str, start: dt.datetime, end: dt.datetime) -> None:
        for day, seconds in split_by_day(start, end):
            row = self._row(camera_id, day)
            row["known_s"] += seconds
            if status == "ON":
                row["online_s"] += seconds


class Health:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.settings = inventory.settings

    # --- sweeps ----------------------------------------------------------------------------------------

    def start_sweep(self, stages: Sequence[str], group: str | None = None, *, at: dt.datetime | None = None) -> int:
        with self.inventory.session() as s:
            row = s.execute(
                health_sweeps.insert()
                .values(started_at=at or utcnow(), stages=list(stages), camera_group=group)
                .returning(health_sweeps.c.id)
            )
            return int(row.scalar_one())

    def sweep_counts(self, sweep_id: int) -> dict[str, Any]:
        """{"outcome": {outcome: n}, "cause": {stage: {cause: n}}} from the stored results (re-deliveries once)."""
        r = health_results
        with self.inventory.session(write=False) as s:
            outcomes = s.execute(
                select(r.c.outcome, func.count()).where(r.c.sweep_id == sweep_id).group_by(r.c.outcome)
            )
            by_outcome = {outcome: int(n) for outcome, n in outcomes}
            causes: dict[str, dict[str, int]] = defaultdict(dict)
            failed = s.execute(
                select(r.c.stage, r.c.cause, func.count())
                .where(r.c.sweep_id == sweep_id, r.c.outcome != "ok")
                .group_by(r.c.stage, r.c.cause)
            )
            for stage, cause, n in failed:
                causes[stage][cause or "unknown"] = int(n)
        return {"outcome": by_outcome, "cause": {k: dict(sorted(v.items())) for k, v in sorted(causes.items())}}

    def finish_sweep(self, sweep_id: int, *, at: dt.datetime | None = None) -> dict[str, Any]:
        counts = self.sweep_counts(sweep_id)
        with self.inventory.session() as s:
            s.execute(
                health_sweeps.update()
                .where(health_sweeps.c.id == sweep_id)
                .values(finished_at=at or utcnow(), counts=counts)
            )
        return counts

    # --- recording -------------------------------------------------------------------------------------

    def record(self, results: Sequence[CheckResult], sweep_id: int) -> RecordSummary:
        """Store a batch of results of one sweep in one transaction: raw rows, latest result and status per camera,
        status events (and cameras.status), daily figures. Idempotent per (sweep, camera)."""
        by_camera: dict[int, CheckResult] = {}
        for result in results:
            if result.camera_id not in by_camera:
                # stored and compared in UTC (SQLite keeps no zone); a naive time is taken as UTC
                utc_at = result.at if result.at.tzinfo is dt.UTC else store.utc(result.at)
                by_camera[result.camera_id] = result if utc_at is result.at else replace(result, at=utc_at)
        ids = sorted(by_camera)
        fail_n, recover_n = self.settings.health_fail_count, self.settings.health_recover_count
        with self.inventory.session() as s:
            conn = s.connection()
            store.lock_for_write(conn, sweep_id)
            latest = store.latest_rows(conn, ids)  # first: the lock orders concurrent writers of one camera
            statuses = store.camera_statuses(conn, ids)
            known = [cid for cid in ids if cid in statuses]
            # serialised once: the raw row and the latest row carry the same text
            texts = {cid: (_stages_json(by_camera[cid]), _details_json(by_camera[cid])) for cid in known}
            claimed = store.claim_results(
                conn,
                [
                    {
                        "sweep_id": sweep_id,
                        "camera_id": cid,
                        "at": by_camera[cid].at,
                        "outcome": by_camera[cid].outcome,
                        "stage": by_camera[cid].stage,
                        "cause": by_camera[cid].cause,
                        "clock_offset_s": by_camera[cid].clock_offset_s,
                        "stages": texts[cid][0],
                        "details": texts[cid][1],
                    }
                    for cid in known
                ],
            )
            daily = _Daily()
            latest_rows: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            late = 0
            wanted: dict[int, str | None] = {}  # the status cameras.status must show
            for cid in known:
                prev = latest.get(cid)
                if cid not in claimed:
                    if prev is not None:
                        wanted[cid] = prev["status"]
                    continue
                result = by_camera[cid]
                if result.outcome != "deadline":
                    daily.check(result)
                if prev is not None and store.utc(prev["at"]) > result.at:
                    late += 1
                    wanted[cid] = prev["status"]
                    continue
                state = State(prev["status"], prev["pending"], prev["streak"]) if prev else State()
                since = store.utc(prev["since"]) if prev and prev["since"] is not None else None
                new, change = step(
                    state,
                    result.outcome,
                    stage=result.stage,
                    cause=result.cause,
                    fail_count=fail_n,
                    recover_count=recover_n,
                )
                if change is not None:
                    if change.previous is not None and since is not None:
                        daily.interval(cid, change.previous, since, result.at)
                    since = result.at
                    events.append(
                        {
                            "camera_id": cid,
                            "at": result.at,
                            "event": change.event,
                            "previous": change.previous,
                            "status": change.status,
                            "stage": result.stage,
                            "cause": result.cause,
                            "sweep_id": sweep_id,
                        }
                    )
                wanted[cid] = new.status
                latest_rows.append(
                    {
                        "camera_id": cid,
                        "sweep_id": sweep_id,
                        "at": result.at,
                        "outcome": result.outcome,
                        "stage": result.stage,
                        "cause": result.cause,
                        "clock_offset_s": result.clock_offset_s,
                        "stages": texts[cid][0],
                        "details": texts[cid][1],
                        "status": new.status,
                        "since": since,
                        "pending": new.pending,
                        "streak": new.streak,
                    }
                )
            store.upsert_latest(conn, latest_rows)
            store.insert_events(conn, events)
            store.add_daily(conn, list(daily.rows.values()))
            # cameras.status follows the health status (and is put back if an import overwrote it meanwhile)
            changed: dict[str | None, list[int]] = defaultdict(list)
            for cid, status in wanted.items():
                if status is not None and statuses[cid] != status:
                    changed[status].append(cid)
            store.set_camera_status(conn, changed)
            # A status outside the field's values was a quality problem; the new one is not: recheck those.
            recheck = [cid for ids_ in changed.values() for cid in ids_ if statuses[cid] not in _VALID_STATUS]
            recheck = [cid for cid in recheck if statuses[cid] is not None]
            if recheck:
                self.inventory.refresh_problems(s, recheck)
        return RecordSummary(
            written=len(claimed),
            duplicate=len(known) - len(claimed),
            unknown_camera=len(ids) - len(known),
            events=len(events),
            late=late,
        )

    def signal(
        self,
        camera_ids: Iterable[int],
        status: Status,
        at: dt.datetime,
        *,
        stage: str,
        cause: str | None = None,
        event: str | None = None,
    ) -> int:
        """Set these cameras' status from a signal (a GB/T 28181 keepalive missed or resumed, a registration, a
        catalog's per-channel Status or a notified event) at once, without hysteresis: the signal's own deadline is
        the hysteresis. A camera whose status changes gets an event (``event``: the GB/T 28181 name, default the
        status; VLOST for a DEFECT of lost video) and cameras.status; health_latest keeps the new status, so the next
        sweep continues from it (its last check result, if any, is left as it was). Returns the events written."""
        utc_at = store.utc(at)
        ids = sorted(set(camera_ids))
        if not ids:
            return 0
        name = event or status
        with self.inventory.session() as s:
            conn = s.connection()
            store.lock_latest(conn, ids)  # SQLite: the write lock before reading the state this updates
            latest = store.latest_rows(conn, ids)
            statuses = store.camera_statuses(conn, ids)
            daily = _Daily()
            events: list[dict[str, Any]] = []
            rows: list[dict[str, Any]] = []
            new_rows: list[dict[str, Any]] = []
            for cid in ids:
                if cid not in statuses:
                    continue  # removed from the inventory meanwhile
                prev = latest.get(cid)
                previous = prev["status"] if prev else None
                since = store.utc(prev["since"]) if prev and prev["since"] is not None else None
                if previous == status and (prev is None or prev["pending"] is None):
                    continue
                if previous != status:
                    if previous is not None and since is not None and since < utc_at:
                        daily.interval(cid, previous, since, utc_at)
                    since = utc_at
                    events.append(
                        {
                            "camera_id": cid,
                            "at": utc_at,
                            "event": name,
                            "previous": previous,
                            "status": status,
                            "stage": stage,
                            "cause": cause,
                            "sweep_id": None,
                        }
                    )
                if prev is None:
                    new_rows.append(
                        {
                            "camera_id": cid,
                            "sweep_id": None,
                            "at": utc_at,
                            "outcome": _OUTCOME[status],
                            "stage": stage,
                            "cause": cause,
                            "clock_offset_s": None,
                            "stages": "[]",
                            "details": None,
                            "status": status,
                            "since": since,
                            "pending": None,
                            "streak": 0,
                        }
                    )
                else:
                    rows.append({"camera_id": cid, "status": status, "since": since})
            store.upsert_latest(conn, new_rows)
            store.set_latest_status(conn, rows)
            store.insert_events(conn, events)
            store.add_daily(conn, list(daily.rows.values()))
            changed = [cid for cid in ids if cid in statuses and statuses[cid] != status]
            store.set_camera_status(conn, {status: changed})
            recheck = [cid for cid in changed if statuses[cid] is not None and statuses[cid] not in _VALID_STATUS]
            if recheck:
                self.inventory.refresh_problems(s, recheck)
        return len(events)

    def prune(self, *, now: dt.datetime | None = None) -> int:
        """Delete raw results older than VMS_HEALTH_RAW_DAYS; the rest of the history stays. Returns rows deleted."""
        cutoff = (now or utcnow()) - dt.timedelta(days=self.settings.health_raw_days)
        r = health_results.c
        with self.inventory.session(write=False) as s:
            sweeps = list(s.scalars(select(r.sweep_id).where(r.at < cutoff).distinct().order_by(r.sweep_id)))
        deleted = 0
        for sweep_id in sweeps:  # a transaction per sweep: a day of a city's checks is millions of rows
            with self.inventory.session() as s:
                stmt = delete(health_results).where(r.sweep_id == sweep_id, r.at < cutoff)
                deleted += int(s.connection().execute(stmt).rowcount or 0)
        return deleted

    # --- reading ---------------------------------------------------------------------------------------

    def latest(self, camera_id: int) -> dict[str, Any] | None:
        with self.inventory.session(write=False) as s:
            row = s.execute(select(health_latest).where(health_latest.c.camera_id == camera_id)).first()
        if row is None:
            return None
        out = dict(row._mapping)
        out["stages"] = json.loads(out["stages"])
        out["details"] = json.loads(out["details"]) if out["details"] else {}
        return out

    def events(
        self, *, camera_id: int | None = None, since: dt.datetime | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Status changes, newest first."""
        e = health_events
        stmt = select(e).order_by(e.c.at.desc(), e.c.id.desc()).limit(limit)
        if camera_id is not None:
            stmt = stmt.where(e.c.camera_id == camera_id)
        if since is not None:
            stmt = stmt.where(e.c.at >= since)
        with self.inventory.session(write=False) as s:
            return [{**r._mapping, "at": store.utc(r.at)} for r in s.execute(stmt)]

    def online_by_camera(
        self,
        start: dt.datetime,
        end: dt.datetime,
        *,
        region: str | None = None,
        camera_id: int | None = None,
        now: dt.datetime | None = None,
    ) -> dict[int, OnlineRate]:
        """Time-weighted online rate of each camera over [start, end) (only time with a known status counts;
        nothing after ``now``)."""
        start, end = store.utc(start), min(store.utc(end), store.utc(now or utcnow()))
        totals: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
        if end <= start:
            return {}
        scope = store.camera_ids_in(region, camera_id)
        first = _day(start) if start == midnight(_day(start)) else _day(start) + DAY
        stop = _day(end)
        with self.inventory.session(write=False) as s:
            conn = s.connection()
            if first >= stop:  # no whole day inside: the events alone
                self._from_events(conn, start, end, scope, totals)
            else:
                lo, hi = midnight(first), midnight(stop)
                self._from_events(conn, start, lo, scope, totals)
                self._from_events(conn, hi, end, scope, totals)
                for cid, (online, known) in store.daily_seconds(conn, first, stop, scope).items():
                    totals[cid][0] += online
                    totals[cid][1] += known
                for cid, status, since in store.open_intervals(conn, scope):
                    a = max(since, lo)
                    if a < hi:
                        seconds = (hi - a).total_seconds()
                        totals[cid][1] += seconds
                        if status == "ON":
                            totals[cid][0] += seconds
        return {cid: OnlineRate(on, known, 1) for cid, (on, known) in sorted(totals.items()) if known > 0}

    @staticmethod
    def _from_events(conn: Any, lo: dt.datetime, hi: dt.datetime, scope: Any, totals: dict[int, list[float]]) -> None:
        if hi <= lo:
            return
        current: dict[int, tuple[str, dt.datetime]] = {
            cid: (status, lo) for cid, status in store.statuses_before(conn, lo, scope).items()
        }

        def add(cid: int, status: str, a: dt.datetime, b: dt.datetime) -> None:
            seconds = (b - a).total_seconds()
            totals[cid][1] += seconds
            if status == "ON":
                totals[cid][0] += seconds

        for cid, at, status in store.events_between(conn, lo, hi, scope):
            if cid in current:
                add(cid, *current[cid], at)
            current[cid] = (status, at)
        for cid, (status, at) in current.items():
            add(cid, status, at, hi)

    def online_rate(
        self,
        start: dt.datetime,
        end: dt.datetime,
        *,
        region: str | None = None,
        camera_id: int | None = None,
        now: dt.datetime | None = None,
    ) -> OnlineRate:
        """The online rate over [start, end) of one camera, a region (with its sub-regions) or every camera."""
        per = self.online_by_camera(start, end, region=region, camera_id=camera_id, now=now)
        return OnlineRate(sum(r.online_s for r in per.values()), sum(r.known_s for r in per.values()), len(per))

    def online_by_region(
        self, start: dt.datetime, end: dt.datetime, *, now: dt.datetime | None = None
    ) -> dict[str, OnlineRate]:
        """The online rate of every region (the regions table's and the cameras' codes), each with its
        sub-regions, over [start, end): one pass over the cameras, not one per region."""
        per = self.online_by_camera(start, end, now=now)
        with self.inventory.session(write=False) as s:
            codes = dict(
                s.execute(select(cameras.c.id, cameras.c.region_code).where(cameras.c.region_code.is_not(None))).all()
            )
            known_regions = set(s.scalars(select(Region.code)))
        regions = known_regions | set(codes.values())
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        ancestors: dict[str, list[str]] = {}
        for cid, rate in per.items():
            code = codes.get(cid)
            if code is None:
                continue
            if code not in ancestors:
                ancestors[code] = [r for r in regions if code == r or code.startswith(r)]
            for r in ancestors[code]:
                sums[r][0] += rate.online_s
                sums[r][1] += rate.known_s
                sums[r][2] += 1
        return {r: OnlineRate(on, known, int(n)) for r, (on, known, n) in sorted(sums.items())}

    def drift(self, camera_id: int, start: dt.date | None = None, end: dt.date | None = None) -> list[DriftDay]:
        """Clock offset (device minus ours, seconds) per day: the figures of every check that read the clock."""
        d = health_daily
        stmt = (
            select(d.c.day, d.c.drift_n, d.c.drift_min, d.c.drift_max, d.c.drift_sum)
            .where(d.c.camera_id == camera_id, d.c.drift_n > 0)
            .order_by(d.c.day)
        )
        if start is not None:
            stmt = stmt.where(d.c.day >= start)
        if end is not None:
            stmt = stmt.where(d.c.day < end)
        with self.inventory.session(write=False) as s:
            return [DriftDay(day, n, lo, hi, total / n) for day, n, lo, hi, total in s.execute(stmt)]

    def drift_samples(self, camera_id: int, since: dt.datetime | None = None) -> list[tuple[dt.datetime, float]]:
        """Each clock reading still in the raw window: (time, offset seconds), oldest first."""
        r = health_results
        stmt = (
            select(r.c.at, r.c.clock_offset_s)
            .where(r.c.camera_id == camera_id, r.c.clock_offset_s.is_not(None))
            .order_by(r.c.at)
        )
        if since is not None:
            stmt = stmt.where(r.c.at >= since)
        with self.inventory.session(write=False) as s:
            return [(store.utc(at), float(off)) for at, off in s.execute(stmt)]

    @staticmethod
    def drift_rate(days: Sequence[DriftDay]) -> float | None:
        """Seconds gained per day (least squares over the daily means); None with fewer than two days."""
        if len(days) < 2:
            return None
        xs = [float((d.day - days[0].day).days) for d in days]
        ys = [d.mean_s for d in days]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mx) ** 2 for x in xs)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else None
