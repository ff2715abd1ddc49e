"""The online seconds of closed UTC days by region (health_region_daily), for the indicators of many cameras.

health_daily holds a row per camera and day: 3,000,000 rows for 100,000 cameras over 30 days, too many to sum on
every read. Once a day is closed (an hour past its end: a writer that took that day as "today" just before midnight
has committed by then), its figures are summed by the cameras' region (at that time; "" for none; removed
cameras count, as they do in the health figures) into health_region_daily: a row per region and day.

A day still gets writes after it closed: a status interval that began on it closes later, and its seconds go to
every day it spanned (``vms.health.service._Daily.interval``). Every write to health_daily goes through
``store.add_daily``, which calls ``note_writes`` in the same transaction: for each day before the writer's "today"
it counts the write in health_daily_marks (writes + 1) and, where that day's roll-up stood (rolled == writes), adds
the write's seconds to the day's region rows (the cameras' region now) and counts it as rolled too, so the roll-up
keeps standing: a status change of a camera that was ON for a month touches 30 rows, it does not make 30 days be
summed again. A roll-up stands while its mark has rolled == writes; a day whose roll-up does not stand (never
rolled, or a write came while it was being made) is rolled again by the next read that needs it.

Region attribution: a rolled day counts each camera's seconds in the region the camera had when the day was rolled
up (or, for a later write, when that write was made), not in the region it has now: the historical attribution.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    Date,
    Float,
    Integer,
    Time,
    any_,
    bindparam,
    case,
    cast,
    delete,
    extract,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from vms.errors import VmsError
from vms.inventory.service import Inventory
from vms.store.db import upsert_insert
from vms.store.models import cameras, health_daily, health_daily_marks, health_latest, health_region_daily

log = logging.getLogger(__name__)

__all__ = [
    "SETTLE",
    "WRITE_WAIT_S",
    "OpenIntervals",
    "as_date",
    "day_seconds",
    "midnight",
    "note_writes",
    "open_intervals",
    "roll_up",
    "settled",
    "wait_at_most",
]

DAY = dt.timedelta(days=1)
SETTLE = dt.timedelta(hours=1)  # how long after a day's end its roll-up waits: no writer still takes it as today
WRITE_WAIT_S = 0.2  # a read's best-effort roll-up waits this long for another writer, then goes on without storing
_CHUNK = 5000

DaySums = dict[dt.date, dict[str | None, tuple[float, float]]]  # day -> region code -> (online, known) seconds
_Rolled = dict[dt.date, dict[str | None, tuple[float, float, int]]]  # the same and the cameras counted


def midnight(day: dt.date) -> dt.datetime:
    """The UTC midnight that starts ``day``."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def as_date(value: Any) -> dt.date:
    """A day as the database hands it back (SQLite: text)."""
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def settled(day: dt.date, now: dt.datetime) -> bool:
    """Whether ``day`` may be rolled up at ``now``: an hour past its end."""
    return now >= midnight(day + DAY) + SETTLE


# --- the writers' side ---------------------------------------------------------------------------------------


def note_writes(conn: Connection, rows: Sequence[Mapping[str, Any]], today: dt.date | None = None) -> None:
    """Called by ``store.add_daily`` in its transaction, after the rows are written: count the writes to closed days
    (before the writer's UTC ``today``) and keep their standing roll-ups current (see the module's text)."""
    today = today or dt.datetime.now(dt.UTC).date()
    # only the seconds count here: a late check result's counts change no roll-up
    closed = [r for r in rows if as_date(r["day"]) < today and (r.get("online_s") or r.get("known_s"))]
    closed_days = sorted({as_date(r["day"]) for r in closed})
    if not closed_days:
        return
    m = health_daily_marks
    ins = upsert_insert(conn, m)
    # days in order: two writers lock the marks in the same order (no deadlock); the roll-up locks a mark first too
    stmt = (
        ins.values([{"day": d, "writes": 1, "rolled": None} for d in closed_days])
        .on_conflict_do_update(
            index_elements=[m.c.day],
            set_={
                "writes": m.c.writes + 1,
                "rolled": case((m.c.rolled == m.c.writes, m.c.rolled + 1), else_=m.c.rolled),
            },
        )
        .returning(m.c.day, m.c.writes, m.c.rolled)
    )
    standing = {as_date(day) for day, writes, rolled in conn.execute(stmt) if rolled is not None and rolled == writes}
    closed = [r for r in closed if as_date(r["day"]) in standing]
    if not closed:
        return
    ids = sorted({int(r["camera_id"]) for r in closed})
    region: dict[int, str] = {}
    pg = conn.dialect.name == "postgresql"
    for i in range(0, len(ids), _CHUNK):
        part = list(ids[i : i + _CHUNK])
        # PostgreSQL: one array, not 5,000 parameters to plan (as vms.health.store does)
        match = cameras.c.id == any_(bindparam("ids", part, type_=ARRAY(Integer))) if pg else cameras.c.id.in_(part)
        found = conn.execute(select(cameras.c.id, cameras.c.region_code).where(match))
        region.update((int(cid), code or "") for cid, code in found)
    sums: dict[tuple[dt.date, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for r in closed:
        s = sums[(as_date(r["day"]), region.get(int(r["camera_id"]), ""))]
        s[0] += float(r.get("online_s") or 0.0)
        s[1] += float(r.get("known_s") or 0.0)
        s[2] += 1
    r_ = health_region_daily
    ins = upsert_insert(conn, r_)
    up = ins.on_conflict_do_update(
        index_elements=[r_.c.day, r_.c.region],
        set_={"online_s": r_.c.online_s + ins.excluded.online_s, "known_s": r_.c.known_s + ins.excluded.known_s},
    )
    conn.execute(
        up,
        [
            {"day": d, "region": code, "online_s": on, "known_s": known, "cameras": int(n)}
            for (d, code), (on, known, n) in sorted(sums.items())
        ],
    )


# --- rolling up --------------------------------------------------------------------------------------------


def _sum_days(conn: Connection, days: Collection[dt.date]) -> _Rolled:
    """health_daily of these days summed by (day, the cameras' region now): a row per region, not per camera."""
    d, c = health_daily, cameras.c
    out: _Rolled = {day: {} for day in days}
    if not days:
        return out
    stmt = (
        select(d.c.day, c.region_code, func.sum(d.c.online_s), func.sum(d.c.known_s), func.count())
        .select_from(d.outerjoin(cameras, c.id == d.c.camera_id))
        .where(d.c.day.in_(sorted(days)))
        .group_by(d.c.day, c.region_code)
    )
    for day, code, on, known, n in conn.execute(stmt):
        out[as_date(day)][code or None] = (float(on or 0), float(known or 0), int(n))
    return out


def _marks(conn: Connection, days: Collection[dt.date]) -> dict[dt.date, tuple[int, int | None]]:
    m = health_daily_marks.c
    if not days:
        return {}
    rows = conn.execute(select(m.day, m.writes, m.rolled).where(m.day.in_(sorted(days))))
    return {as_date(day): (int(w), None if r is None else int(r)) for day, w, r in rows}


def _store(inv: Inventory, sums: _Rolled, read_at: Mapping[dt.date, int], now: dt.datetime, wait_s: float) -> int:
    """Keep the roll-ups just made: a day whose mark still counts the writes it was read at (nothing was written to
    it since) gets its rows and rolled = writes. Best effort: waits ``wait_s`` for another writer at most; a
    database that cannot be written now keeps nothing (the sums serve the read that made them). Returns days kept."""
    if not sums:
        return 0
    m, r = health_daily_marks, health_region_daily
    kept = 0
    try:
        with inv.session() as s:
            conn = s.connection()
            restore = wait_at_most(conn, wait_s)
            try:
                ins = upsert_insert(conn, m)
                for day in sorted(sums):
                    # the mark first (as the writers do): a writer of this day waits for this transaction, or
                    # this one for it and then sees its count
                    conn.execute(
                        ins.values(day=day, writes=0, rolled=None).on_conflict_do_nothing(index_elements=[m.c.day])
                    )
                    lock = select(m.c.writes).where(m.c.day == day)
                    if conn.dialect.name == "postgresql":
                        lock = lock.with_for_update()
                    if int(conn.execute(lock).scalar_one()) != read_at.get(day, 0):
                        continue  # written meanwhile: the next read rolls it again
                    conn.execute(delete(r).where(r.c.day == day))
                    rows = [
                        {"day": day, "region": code or "", "online_s": v[0], "known_s": v[1], "cameras": v[2]}
                        for code, v in sorted(sums[day].items(), key=lambda kv: kv[0] or "")
                    ]
                    if rows:
                        conn.execute(r.insert(), rows)
                    conn.execute(update(m).where(m.c.day == day).values(rolled=m.c.writes, rolled_at=now))
                    kept += 1
            finally:
                restore()
    except (VmsError, SQLAlchemyError) as exc:
        log.info("health: days rolled up but not kept now (%s)", str(exc).splitlines()[0][:200])
        return 0
    return kept


def wait_at_most(conn: Connection, wait_s: float) -> Callable[[], Any]:
    """Make this transaction wait at most ``wait_s`` for another writer's lock; returns what puts it back."""
    ms = max(1, int(wait_s * 1000))
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SET LOCAL lock_timeout = {ms}"))  # the transaction's end puts it back
        return lambda: None
    if conn.dialect.name == "sqlite":
        before = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {ms}")
        return lambda: conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(before or 0)}")
    return lambda: None


def _stale(conn: Connection, days: Iterable[dt.date]) -> tuple[list[dt.date], dict[dt.date, int]]:
    """Of these days, those whose roll-up does not stand, with the write count they are read at."""
    days = sorted(set(days))
    marks = _marks(conn, days)
    stale = [d for d in days if d not in marks or marks[d][1] != marks[d][0]]
    return stale, {d: marks[d][0] for d in stale if d in marks}


def roll_up(
    inv: Inventory,
    *,
    days: Iterable[dt.date] | None = None,
    now: dt.datetime | None = None,
    wait_s: float | None = None,
) -> dict[str, Any]:
    """Roll up every closed day (``days``: these) whose roll-up does not stand: for a scheduler or a warm-up (a
    read rolls up the days it needs by itself). Days not settled yet (``settled``) are left. Returns what it did."""
    now = now or dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    with inv.session(write=False) as s:
        conn = s.connection()
        if days is None:
            found = conn.execute(select(health_daily.c.day).distinct()).scalars()
            days = [as_date(d) for d in found]
        wanted = [d for d in days if settled(d, now)]
        stale, read_at = _stale(conn, wanted)
    kept = 0
    for i in range(0, len(stale), 7):  # a week at a time: a summing pass per few days, short write transactions
        part = stale[i : i + 7]
        with inv.session(write=False) as s:
            sums = _sum_days(s.connection(), part)
        kept += _store(inv, sums, read_at, now, inv.settings.db_lock_timeout if wait_s is None else wait_s)
    return {"days": len(wanted), "rolled": len(stale), "kept": kept, "seconds": round(time.perf_counter() - started, 3)}


def day_seconds(inv: Inventory, days: Iterable[dt.date], now: dt.datetime) -> DaySums:
    """The closed-interval (online, known) seconds of each day by region code (None: no region), from the roll-up
    where it stands (rolled up here first where it does not and the day is settled: kept best effort), else summed
    now from health_daily (the days not settled: today and, in the first hour of a day, yesterday)."""
    days = sorted(set(days))
    out: DaySums = {d: {} for d in days}
    closed = [d for d in days if settled(d, now)]
    live = [d for d in days if not settled(d, now)]
    m, r = health_daily_marks.c, health_region_daily.c
    with inv.session(write=False) as s:
        conn = s.connection()
        standing: set[dt.date] = set()
        if closed:
            # one statement: the marks and their rows as one snapshot
            stmt = (
                select(m.day, r.region, r.online_s, r.known_s)
                .select_from(health_daily_marks.outerjoin(health_region_daily, r.day == m.day))
                .where(m.day.in_(closed), m.rolled == m.writes)
            )
            for day, code, on, known in conn.execute(stmt):
                day = as_date(day)
                standing.add(day)
                if code is not None:
                    out[day][code or None] = (float(on), float(known))
        stale, read_at = _stale(conn, [d for d in closed if d not in standing])
        fresh = _sum_days(conn, stale + live)
    if stale:
        _store(inv, {d: fresh[d] for d in stale}, read_at, now, WRITE_WAIT_S)
    for d in stale + live:
        out[d] = {code: (v[0], v[1]) for code, v in fresh[d].items()}
    return out


# --- the intervals still open --------------------------------------------------------------------------------


@dataclass
class OpenIntervals:
    """The status intervals still open (health_latest), grouped: (region code, status) -> count for those open
    since before ``base``; (region code, status, UTC day of their start) -> (count, sum of the seconds from that
    day's midnight to their start) for the others. No camera's row reaches Python."""

    base: dt.date
    now: dt.datetime
    before: dict[tuple[str | None, str], int] = field(default_factory=dict)
    since: dict[tuple[str | None, str, dt.date], tuple[int, float]] = field(default_factory=dict)

    def only(self, keep: Callable[[str | None], bool]) -> OpenIntervals:
        """The groups of the region codes ``keep`` takes, merged over the codes (code None)."""
        out = OpenIntervals(self.base, self.now)
        for (code, status), n in self.before.items():
            if keep(code):
                out.before[(None, status)] = out.before.get((None, status), 0) + n
        for (code, status, day), (n, into) in self.since.items():
            if keep(code):
                m, s = out.since.get((None, status, day), (0, 0.0))
                out.since[(None, status, day)] = (m + n, s + into)
        return out

    def seconds(self, lo: dt.datetime, hi: dt.datetime) -> dict[tuple[str | None, str], float]:
        """Each group's seconds within [lo, hi) (lo at a UTC midnight, not before ``base``; hi at most ``now``)."""
        out: dict[tuple[str | None, str], float] = defaultdict(float)
        if hi <= lo:
            return out
        whole = (hi - lo).total_seconds()
        for key, n in self.before.items():
            out[key] += n * whole
        for (code, status, day), (n, into) in self.since.items():
            start = midnight(day)
            if start < lo:
                out[(code, status)] += n * whole
            elif start < hi:  # every start on that day is before hi: hi is a midnight after it, or now
                out[(code, status)] += n * (hi - start).total_seconds() - into
        return out


def _day_and_offset(conn: Connection, col: Any) -> tuple[Any, Any]:
    """SQL for a timestamp's UTC day and its seconds since that day's midnight, exact to the microsecond."""
    if conn.dialect.name == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), col)  # the UTC wall time: a date and a time of day
        return cast(utc, Date), extract("epoch", cast(utc, Time))
    # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC): the day is its first ten characters, the rest is arithmetic
    n = literal_column
    hms = (
        cast(func.substr(col, n("12"), n("2")), Float) * n("3600")
        + cast(func.substr(col, n("15"), n("2")), Float) * n("60")
        + cast(func.substr(col, n("18")), Float)
    )
    return func.substr(col, n("1"), n("10")), hms


def open_intervals(inv: Inventory, base: dt.date, now: dt.datetime) -> OpenIntervals:
    """Every camera's interval still open (a known status since a known time before ``now``), grouped by the
    camera's region code and status, and by the UTC day it began on when that is ``base`` or later: one pass."""
    h, c = health_latest.c, cameras.c
    lo = midnight(base)
    out = OpenIntervals(base, now)
    # an inner join (health_latest's rows belong to cameras): SQLite then walks the cameras' region index and
    # finds each health row by its key, where the outer join looks each camera's whole row up (twice the time)
    joined = health_latest.join(cameras, c.id == h.camera_id)
    with inv.session(write=False) as s:
        conn = s.connection()
        day, into = _day_and_offset(conn, h.since)
        early = h.since < lo
        stmt = (
            select(
                c.region_code,
                h.status,
                case((early, None), else_=day),
                func.count(),
                func.sum(case((early, 0), else_=into)),
            )
            .select_from(joined)
            .where(h.status.is_not(None), h.since.is_not(None), h.since < now)
            .group_by(*(literal_column(str(i)) for i in (1, 2, 3)))  # by position: the day's CASE binds lo
        )
        for code, status, d, n, total in conn.execute(stmt):
            if d is None:
                out.before[(code, status)] = int(n)
            else:
                out.since[(code, status, as_date(d))] = (int(n), float(total or 0))
    return out
