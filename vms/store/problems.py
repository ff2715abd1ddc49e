"""SQL of the stored quality problems (tables camera_quality, camera_problems, quality_tallies, quality_state).

The logic that keeps them current lives in vms.inventory.problems; this module only reads and writes rows.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Row, Table, bindparam, delete, func, insert, select, true, update
from sqlalchemy.orm import Session

from vms.store.models import (
    CatalogNode,
    Observation,
    Region,
    Source,
    camera_problems,
    camera_quality,
    cameras,
    quality_state,
    quality_tallies,
)
from vms.store.repository import bulk_insert, chunks, dbapi_executemany

cq = camera_quality
KEY_COLUMNS = ("k_id", "k_name_position", "k_mac", "k_serial")
# Written first (what the record holds now), then the problems (what the counters hold).
IDENTITY_COLUMNS = ("device_id", "parent_id", *KEY_COLUMNS)
CONTRIBUTION_COLUMNS = ("counted", "problems", "region_code", "sources", "conflicts")
# Any constant: one lock for everything that rewrites stored problems (PostgreSQL; SQLite has one writer).
ADVISORY_LOCK = 73_131_100_016


def lock(session: Session) -> None:
    """Serialise problem maintenance between concurrent writers on PostgreSQL, until the transaction ends.

    Taken after the records are written and held to commit, a second writer then sees the first one's records and
    problems (READ COMMITTED reads afresh per statement), so cross-camera rules never miss a change.
    """
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK})")


def bulk_update(session: Session, table: Table, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """UPDATE ... WHERE key = ? as one executemany on the DBAPI cursor (all rows the same columns)."""
    if not rows:
        return
    names = [n for n in rows[0] if n != key]
    dbapi_executemany(
        session,
        table,
        [*names, key],
        lambda quote, mark: (
            f"UPDATE {quote(table.name)} SET {', '.join(f'{quote(n)} = {mark}' for n in names)} "
            f"WHERE {quote(key)} = {mark}"
        ),
        rows,
    )


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Many new rows (all the same keys): COPY on PostgreSQL (several times faster than executemany there)."""
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        bulk_insert(session, table, rows)
        return
    names = list(rows[0])
    quote = conn.dialect.identifier_preparer.quote
    sql = f"COPY {quote(table.name)} ({', '.join(quote(n) for n in names)}) FROM STDIN"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row([row[n] for n in names])
    finally:
        cursor.close()


# --- state ---------------------------------------------------------------------------------------------


def get_state(session: Session, name: str) -> str | None:
    return session.scalar(select(quality_state.c.value).where(quality_state.c.name == name))


def set_state(session: Session, name: str, value: str) -> None:
    conn = session.connection()
    done = conn.execute(update(quality_state).where(quality_state.c.name == name).values(value=value))
    if not done.rowcount:
        conn.execute(insert(quality_state).values(name=name, value=value))


def regions_signature(session: Session) -> tuple[int, str]:
    """Changes whenever a region is added or rewritten (every regions import stamps updated_at)."""
    count, latest = session.execute(select(func.count(), func.max(Region.updated_at))).one()
    return int(count or 0), str(latest)


def clear(session: Session) -> None:
    conn = session.connection()
    for table in (camera_problems, cq, quality_tallies):
        conn.execute(delete(table))


# --- cameras -------------------------------------------------------------------------------------------


def any_camera(session: Session) -> bool:
    """Whether the inventory holds a camera (removed ones included)."""
    return session.connection().execute(select(cameras.c.id).limit(1)).first() is not None


def camera_page(session: Session, after: int, limit: int, columns: Sequence[str]) -> list[dict[str, Any]]:
    """The next ``limit`` cameras after id ``after`` (removed ones included): id, removed_at and ``columns``."""
    names = ["id", "removed_at", *(c for c in columns if c not in ("id", "removed_at"))]
    stmt = select(*(cameras.c[n] for n in names)).where(cameras.c.id > after).order_by(cameras.c.id).limit(limit)
    return [dict(zip(names, row, strict=True)) for row in session.connection().execute(stmt)]


def camera_records(session: Session, ids: Collection[int], columns: Sequence[str]) -> dict[int, dict[str, Any]]:
    """id -> {id, removed_at, *columns} for these cameras, removed ones included."""
    names = ["id", "removed_at", *(c for c in columns if c not in ("id", "removed_at"))]
    cols = [cameras.c[n] for n in names]
    out: dict[int, dict[str, Any]] = {}
    conn = session.connection()
    for part in chunks(sorted(ids)):
        for row in conn.execute(select(*cols).where(cameras.c.id.in_(part))):
            out[row[0]] = dict(zip(names, row, strict=True))
    return out


def sources_between(session: Session, first: int, last: int) -> dict[int, list[str]]:
    """camera id -> names of the sources that list it now, for cameras first..last (one range scan)."""
    o = Observation.__table__.c
    stmt = (
        select(o.camera_id, Source.name)
        .join(Source, Source.id == o.source_id)
        .where(o.camera_id.between(first, last), o.removed_at.is_(None))
    )
    out: dict[int, list[str]] = {}
    for cid, name in session.execute(stmt):
        out.setdefault(cid, []).append(name)
    return out


def known_parents(session: Session, parent_ids: Collection[str]) -> set[str]:
    """Those of ``parent_ids`` that name a camera (removed ones too), a catalog node or a region."""
    found: set[str] = set()
    nodes = CatalogNode.__table__.c
    regions = Region.__table__.c
    for part in chunks(sorted(parent_ids)):
        for column in (cameras.c.device_id, nodes.device_id, regions.code):
            found.update(str(v) for v in session.scalars(select(column).where(column.in_(part)).distinct()))
    return found


# --- camera_quality ------------------------------------------------------------------------------------


def existing_ids(session: Session, ids: Collection[int]) -> set[int]:
    out: set[int] = set()
    for part in chunks(sorted(ids)):
        out.update(session.scalars(select(cq.c.camera_id).where(cq.c.camera_id.in_(part))))
    return out


def mark_related_stale(session: Session, ids: Sequence[int]) -> None:
    """Mark stale every camera sharing a duplicate key with these, or naming one of them as its parent."""
    conn = session.connection()
    for part in chunks(ids):
        mine = cq.c.camera_id.in_(part)
        for name in KEY_COLUMNS:
            column = cq.c[name]
            sub = select(column).where(mine, column.is_not(None)).scalar_subquery()
            conn.execute(update(cq).where(column.in_(sub)).values(stale=True))
        sub = select(cq.c.device_id).where(mine, cq.c.device_id.is_not(None)).scalar_subquery()
        conn.execute(update(cq).where(cq.c.parent_id.in_(sub)).values(stale=True))


def mark_children_stale(session: Session, parent_ids: Collection[str]) -> None:
    conn = session.connection()
    for part in chunks(sorted(parent_ids)):
        conn.execute(update(cq).where(cq.c.parent_id.in_(part)).values(stale=True))


def insert_identities(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """New rows: identity columns, stale, counted in nothing yet."""
    full = [
        {**{c: r.get(c) for c in ("camera_id", *IDENTITY_COLUMNS)}, "stale": True, "counted": False, "conflicts": False}
        for r in rows
    ]
    insert_rows(session, cq, full)


def insert_checked(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows with every column: camera_id, identity, stale, and the contributions."""
    insert_rows(session, cq, rows)


def mark_duplicates_stale(session: Session) -> None:
    """Every camera holding a key another camera holds too."""
    conn = session.connection()
    for name in KEY_COLUMNS:
        column = cq.c[name]
        shared = select(column).where(column.is_not(None)).group_by(column).having(func.count() > 1)
        conn.execute(update(cq).where(column.in_(shared.scalar_subquery())).values(stale=True))


def update_identities(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows with camera_id and the identity columns: rewritten, and stale."""
    bulk_update(
        session,
        cq,
        "camera_id",
        [{"camera_id": r["camera_id"], **{c: r.get(c) for c in IDENTITY_COLUMNS}, "stale": True} for r in rows],
    )


def stale_ids(session: Session, limit: int) -> list[int]:
    stmt = select(cq.c.camera_id).where(cq.c.stale == true()).order_by(cq.c.camera_id).limit(limit)
    return list(session.scalars(stmt))


def stored_rows(session: Session, ids: Collection[int]) -> dict[int, Row[Any]]:
    cols = [cq.c.camera_id, *(cq.c[c] for c in (*KEY_COLUMNS, *CONTRIBUTION_COLUMNS))]
    out: dict[int, Row[Any]] = {}
    for part in chunks(sorted(ids)):
        for row in session.execute(select(*cols).where(cq.c.camera_id.in_(part))):
            out[row.camera_id] = row
    return out


def duplicated_keys(session: Session, column: str, keys: Collection[str]) -> set[str]:
    """Those of ``keys`` that more than one camera holds in ``column``."""
    col = cq.c[column]
    found: set[str] = set()
    for part in chunks(sorted(keys)):
        stmt = select(col).where(col.in_(part)).group_by(col).having(func.count() > 1)
        found.update(session.scalars(stmt))
    return found


def write_contributions(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows: camera_id plus every CONTRIBUTION_COLUMNS value; the camera stops being stale."""
    bulk_update(
        session,
        cq,
        "camera_id",
        [{"camera_id": r["camera_id"], **{c: r[c] for c in CONTRIBUTION_COLUMNS}, "stale": False} for r in rows],
    )


def replace_problems(session: Session, ids: Sequence[int], rows: Sequence[tuple[int, str]]) -> None:
    conn = session.connection()
    for part in chunks(ids):
        conn.execute(delete(camera_problems).where(camera_problems.c.camera_id.in_(part)))
    insert_problems(session, rows)


def insert_problems(session: Session, rows: Sequence[tuple[int, str]]) -> None:
    if rows:
        insert_rows(session, camera_problems, [{"camera_id": cid, "code": code} for cid, code in rows])


def apply_tallies(session: Session, deltas: Mapping[tuple[str, str], tuple[int, int]]) -> None:
    """Add (total, passed) to each counter, creating it when new; counters that reach zero are dropped."""
    conn = session.connection()
    t = quality_tallies.c
    stmt = (
        update(quality_tallies)
        .where(t.dim == bindparam("_dim"), t.key == bindparam("_key"))
        .values(total=t.total + bindparam("_dt"), passed=t.passed + bindparam("_dp"))
    )
    for (dim, key), (dt, dp) in sorted(deltas.items()):
        if not dt and not dp:
            continue
        done = conn.execute(stmt, {"_dim": dim, "_key": key, "_dt": dt, "_dp": dp})
        if not done.rowcount:
            conn.execute(insert(quality_tallies).values(dim=dim, key=key, total=dt, passed=dp))
    conn.execute(delete(quality_tallies).where(t.total == 0, t.passed == 0))


# --- reads ---------------------------------------------------------------------------------------------


def tallies(session: Session) -> list[tuple[str, str, int, int]]:
    t = quality_tallies.c
    return [(r[0], r[1], int(r[2]), int(r[3])) for r in session.execute(select(t.dim, t.key, t.total, t.passed))]


def problems_of(session: Session, camera_id: int) -> list[str]:
    text = session.scalar(select(cq.c.problems).where(cq.c.camera_id == camera_id))
    return text.split() if text else []


def failing(
    session: Session, *, code: str | None, region: str | None, limit: int, offset: int
) -> tuple[int, list[tuple[int, str | None, str | None, list[str]]]]:
    """Failing cameras (id, device ID, name, problems), by id; optionally those failing ``code`` or in ``region``.

    The total comes from the counters (a lookup) unless both filters are given; the page walks an index in id order.
    """
    cols = (cq.c.camera_id, cameras.c.device_id, cameras.c.name, cq.c.problems)
    if code:
        stmt = (
            select(*cols)
            .select_from(camera_problems)
            .join(cq, cq.c.camera_id == camera_problems.c.camera_id)
            .where(camera_problems.c.code == code)
            .order_by(camera_problems.c.camera_id)
        )
    else:
        stmt = select(*cols).where(cq.c.counted == true(), cq.c.problems.is_not(None)).order_by(cq.c.camera_id)
    stmt = stmt.join(cameras, cameras.c.id == cq.c.camera_id)
    if region is not None:
        stmt = stmt.where(cq.c.region_code == region)
    t = quality_tallies.c
    if code and region is not None:
        total = int(
            session.scalar(select(func.count()).select_from(stmt.with_only_columns(cq.c.camera_id).subquery())) or 0
        )
    elif code:
        total = int(session.scalar(select(t.total).where(t.dim == "rule", t.key == code)) or 0)
    else:
        dim, key = ("region", region) if region is not None else ("all", "")
        row = session.execute(select(t.total, t.passed).where(t.dim == dim, t.key == key)).first()
        total = int(row[0] - row[1]) if row else 0
    page = session.execute(stmt.limit(limit).offset(offset))
    return total, [(r[0], r[1], r[2], (r[3] or "").split()) for r in page]


def all_problems(session: Session) -> Iterable[tuple[int, list[str]]]:
    stmt = select(cq.c.camera_id, cq.c.problems).where(cq.c.counted == true(), cq.c.problems.is_not(None))
    for cid, text in session.execute(stmt.order_by(cq.c.camera_id)):
        yield cid, text.split()


def region_names(session: Session, codes: Collection[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in chunks(sorted(codes)):
        out.update({r[0]: r[1] for r in session.execute(select(Region.code, Region.name).where(Region.code.in_(part)))})
    return out
