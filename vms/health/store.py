"""Queries of the health tables, in bulk: a batch of 100,000 results is a few statements per 5,000 cameras."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import ARRAY, Connection, Integer, Table, any_, bindparam, func, or_, select, text, true, update
from sqlalchemy.sql import Select

from vms.health.rollup import note_writes
from vms.store.db import upsert_insert
from vms.store.models import cameras, health_daily, health_events, health_latest, health_results, health_sweeps

CHUNK = 5000  # ids per IN list (SQLite allows 32,766 variables)

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes (stored as UTC): make every datetime aware, in UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _ids_in(conn: Connection, column: Any, ids: Sequence[int]) -> Any:
    """``column IN ids``; on PostgreSQL ``= ANY(one array)``: 5,000 bind parameters in a statement psycopg prepares
    cost seconds of planning per batch (measured), one array costs nothing."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam("ids", list(ids), type_=ARRAY(Integer)))
    return column.in_(ids)


def lock_for_write(conn: Connection, sweep_id: int) -> None:
    """SQLite: take the write lock before reading the state a batch updates (PostgreSQL locks the rows it reads,
    ``latest_rows``). The driver begins a transaction at the first write; without this the reads would come before
    it and another writer could change that state between them."""
    if conn.dialect.name == "sqlite":
        conn.execute(update(health_sweeps).where(health_sweeps.c.id == sweep_id).values(id=health_sweeps.c.id))


def lock_latest(conn: Connection, ids: Sequence[int]) -> None:
    """SQLite: take the write lock before reading the state a status signal updates (as ``lock_for_write`` does
    for a sweep's batch; an UPDATE takes it even when it matches no row)."""
    if conn.dialect.name == "sqlite" and ids:
        h = health_latest.c
        conn.execute(update(health_latest).where(h.camera_id == ids[0]).values(camera_id=h.camera_id))


def set_latest_status(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Set the status of existing health_latest rows ({camera_id, status, since}): no run pending any more."""
    if not rows:
        return
    h = health_latest.c
    stmt = (
        update(health_latest)
        .where(h.camera_id == bindparam("cid"))
        .values(status=bindparam("st"), since=bindparam("sn"), pending=None, streak=0)
    )
    conn.execute(stmt, [{"cid": r["camera_id"], "st": r["status"], "sn": r["since"]} for r in rows])


def camera_statuses(conn: Connection, ids: Sequence[int]) -> dict[int, str | None]:
    """cameras.status of the cameras that exist, by id."""
    out: dict[int, str | None] = {}
    for part in chunks(ids):
        out.update(conn.execute(select(cameras.c.id, cameras.c.status).where(_ids_in(conn, cameras.c.id, part))).all())
    return out


def latest_rows(conn: Connection, ids: Sequence[int]) -> dict[int, Mapping[str, Any]]:
    """health_latest rows of these cameras, locked until the end of the transaction on PostgreSQL (another
    sweep recording the same camera waits, then sees this one's state)."""
    cols = (
        health_latest.c.camera_id,
        health_latest.c.at,
        health_latest.c.status,
        health_latest.c.since,
        health_latest.c.pending,
        health_latest.c.streak,
    )
    out: dict[int, Mapping[str, Any]] = {}
    for part in chunks(ids):
        stmt = select(*cols).where(_ids_in(conn, health_latest.c.camera_id, part)).order_by(health_latest.c.camera_id)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        for r in conn.execute(stmt):
            out[int(r.camera_id)] = dict(r._mapping)
    return out


def claim_results(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> set[int]:
    """Insert raw results; a (sweep, camera) already stored is left as it was. Returns the cameras inserted now:
    only those count (a re-delivered shard counts nothing twice, even while the first delivery still runs)."""
    if not rows:
        return set()
    if conn.dialect.name == "postgresql":
        return set(_pg_insert_rows(conn, health_results, rows, "ON CONFLICT DO NOTHING RETURNING camera_id").scalars())
    stmt = upsert_insert(conn, health_results).on_conflict_do_nothing().returning(health_results.c.camera_id)
    return set(conn.execute(stmt, list(rows)).scalars().all())


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _pg_insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], suffix: str = "") -> Any:
    """One INSERT ... SELECT on PostgreSQL: a batch is one statement and one round trip, not a statement per row
    (every row has the same keys). The rows travel as one JSON text (json_populate_recordset): encoding it is one
    C call, where an array per column costs the driver a Python call per value (measured: half the batch's CPU)."""
    names = list(rows[0])
    quote = conn.dialect.identifier_preparer.quote
    try:
        doc = json.dumps(rows, default=_json_value, allow_nan=False, separators=(",", ":"))
    except ValueError:
        doc = None  # a NaN or infinity, which JSON cannot carry: arrays below
    if doc is not None:
        cols = ", ".join(quote(n) for n in names)
        sql = (
            f"INSERT INTO {table.name} ({cols}) SELECT {cols} "
            f"FROM json_populate_recordset(NULL::{table.name}, CAST(:doc AS json)) {suffix}"
        )
        return conn.execute(text(sql), {"doc": doc})
    casts = ", ".join(
        f"CAST(:a{i} AS {table.c[name].type.compile(dialect=conn.dialect)}[])" for i, name in enumerate(names)
    )
    sql = f"INSERT INTO {table.name} ({', '.join(quote(n) for n in names)}) SELECT * FROM unnest({casts}) {suffix}"
    return conn.execute(text(sql), {f"a{i}": [r[name] for r in rows] for i, name in enumerate(names)})


def upsert_latest(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        cols = [c.name for c in health_latest.c if c.name != "camera_id"]
        _pg_insert_rows(
            conn,
            health_latest,
            rows,
            "ON CONFLICT (camera_id) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in cols),
        )
        return
    ins = upsert_insert(conn, health_latest)
    keep = {c.name: ins.excluded[c.name] for c in health_latest.c if c.name != "camera_id"}
    conn.execute(ins.on_conflict_do_update(index_elements=[health_latest.c.camera_id], set_=keep), list(rows))


def insert_events(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows and conn.dialect.name == "postgresql":
        _pg_insert_rows(conn, health_events, rows)
    elif rows:
        conn.execute(health_events.insert(), list(rows))


def add_daily(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add to the daily figures (checks, ok, seconds, drift), creating the (camera, day) rows that are new. Every
    write to health_daily goes through here: the writes to closed days are counted, and their region roll-ups kept
    current, in the same transaction (vms.health.rollup.note_writes)."""
    if not rows:
        return
    _add_daily(conn, rows)
    note_writes(conn, rows)


def _add_daily(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    pg = conn.dialect.name == "postgresql"
    if pg:
        _pg_insert_rows(
            conn,
            health_daily,
            rows,
            "ON CONFLICT (camera_id, day) DO UPDATE SET "
            + ", ".join(f"{c} = health_daily.{c} + EXCLUDED.{c}" for c in ("checks", "ok", "online_s", "known_s"))
            + ", drift_n = health_daily.drift_n + EXCLUDED.drift_n"
            ", drift_min = LEAST(health_daily.drift_min, EXCLUDED.drift_min)"
            ", drift_max = GREATEST(health_daily.drift_max, EXCLUDED.drift_max)"
            ", drift_sum = COALESCE(health_daily.drift_sum + EXCLUDED.drift_sum, health_daily.drift_sum,"
            " EXCLUDED.drift_sum)",
        )
        return
    ins = upsert_insert(conn, health_daily)
    d, x = health_daily.c, ins.excluded

    def lowest(a: Any, b: Any) -> Any:  # NULL-ignoring, as LEAST is on PostgreSQL
        return func.least(a, b) if pg else func.min(func.coalesce(a, b), func.coalesce(b, a))

    def highest(a: Any, b: Any) -> Any:
        return func.greatest(a, b) if pg else func.max(func.coalesce(a, b), func.coalesce(b, a))

    set_ = {
        "checks": d.checks + x.checks,
        "ok": d.ok + x.ok,
        "online_s": d.online_s + x.online_s,
        "known_s": d.known_s + x.known_s,
        "drift_n": d.drift_n + x.drift_n,
        "drift_min": lowest(d.drift_min, x.drift_min),
        "drift_max": highest(d.drift_max, x.drift_max),
        "drift_sum": func.coalesce(d.drift_sum + x.drift_sum, d.drift_sum, x.drift_sum),
    }
    conn.execute(ins.on_conflict_do_update(index_elements=[d.camera_id, d.day], set_=set_), list(rows))


def set_camera_status(conn: Connection, by_status: Mapping[str | None, Sequence[int]]) -> None:
    for status, ids in by_status.items():
        for part in chunks(sorted(ids)):
            conn.execute(update(cameras).where(_ids_in(conn, cameras.c.id, part)).values(status=status))


def camera_ids_in(region: str | None, camera_id: int | None) -> Select[tuple[int]] | None:
    """The cameras a figure covers: one camera, a region with its sub-regions (as the camera list filters them;
    removed cameras included: their past counts), or None for all."""
    if camera_id is not None:
        return select(cameras.c.id).where(cameras.c.id == camera_id)
    if region:
        return select(cameras.c.id).where(
            or_(cameras.c.region_code == region, cameras.c.region_code.startswith(region, autoescape=True))
        )
    return None


def _within(column: Any, scope: Select[tuple[int]] | None) -> Any:
    return column.in_(scope) if scope is not None else true()


def statuses_before(conn: Connection, at: dt.datetime, scope: Select[tuple[int]] | None) -> dict[int, str]:
    """Each camera's status just before ``at``: that of its last event earlier than ``at``. Without a scan of the
    event history: a camera whose status was set before ``at`` (most) still has it (health_latest); for the others
    (changed since) the index on (camera_id, at) finds the event before ``at``, one probe each."""
    h, e = health_latest, health_events
    out: dict[int, str] = dict(
        conn.execute(select(h.c.camera_id, h.c.status).where(h.c.since < at, _within(h.c.camera_id, scope))).all()
    )
    before = (
        select(e.c.status)
        .where(e.c.camera_id == h.c.camera_id, e.c.at < at)
        .order_by(e.c.at.desc(), e.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    changed = select(h.c.camera_id, before).where(h.c.since >= at, _within(h.c.camera_id, scope))
    out.update((cid, status) for cid, status in conn.execute(changed).all() if status is not None)
    return out


def events_between(
    conn: Connection, lo: dt.datetime, hi: dt.datetime, scope: Select[tuple[int]] | None
) -> Iterable[tuple[int, dt.datetime, str]]:
    e = health_events
    stmt = (
        select(e.c.camera_id, e.c.at, e.c.status)
        .where(e.c.at >= lo, e.c.at < hi, _within(e.c.camera_id, scope))
        .order_by(e.c.camera_id, e.c.id)
    )
    return ((cid, utc(at), status) for cid, at, status in conn.execute(stmt))


def daily_seconds(
    conn: Connection, first: dt.date, stop: dt.date, scope: Select[tuple[int]] | None
) -> dict[int, tuple[float, float]]:
    """Closed-interval seconds per camera over the days [first, stop): (online, known)."""
    d = health_daily
    stmt = (
        select(d.c.camera_id, func.sum(d.c.online_s), func.sum(d.c.known_s))
        .where(d.c.day >= first, d.c.day < stop, _within(d.c.camera_id, scope))
        .group_by(d.c.camera_id)
    )
    return {cid: (float(on or 0), float(known or 0)) for cid, on, known in conn.execute(stmt)}


def open_intervals(conn: Connection, scope: Select[tuple[int]] | None) -> list[tuple[int, str, dt.datetime]]:
    """(camera, status, since) of every camera with a known status: the interval still open."""
    h = health_latest
    stmt = select(h.c.camera_id, h.c.status, h.c.since).where(
        h.c.status.is_not(None), h.c.since.is_not(None), _within(h.c.camera_id, scope)
    )
    return [(cid, status, utc(since)) for cid, status, since in conn.execute(stmt)]
