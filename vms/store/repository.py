"""All SQL of the inventory lives here. Bulk paths use Core statements: imports touch 100,000 rows."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from operator import is_not, itemgetter
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    Row,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from vms.catalog.domain import SourceKind
from vms.store.db import read_statements
from vms.store.models import (
    AuditEntry,
    CatalogNode,
    ImportRun,
    Region,
    Source,
    cameras,
    quality_state,
    quality_tallies,
    utcnow,
)
from vms.store.models import Observation as ObservationRow

# SQLite allows 32,766 bound parameters, PostgreSQL 65,535: chunk IN lists well below both.
CHUNK = 900

KEY_COLUMNS = {
    "device_id": ObservationRow.k_device_id,
    "mac": ObservationRow.k_mac,
    "serial": ObservationRow.k_serial,
    "endpoint_ref": ObservationRow.k_endpoint_ref,
    "host_port": ObservationRow.k_host_port,
}


def bulk_insert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Many new rows straight on the DBAPI cursor: COPY on PostgreSQL, executemany on SQLite.

    SQLAlchemy's own executemany builds and processes a parameter dict per row; on a 100,000-row import with
    60 columns that was most of the time. On PostgreSQL, COPY streams the rows in one statement (executemany
    sends and plans a statement per row: 5-10x slower). All rows must have the same keys.
    """
    if not rows:
        return
    # Only columns some row fills: a ledger fills 20 of the 60 camera columns, the rest stay NULL. A filled column
    # is told at its first value, an empty one by a scan in C.
    names = [n for n in rows[0] if next(filter(_filled, map(itemgetter(n), rows)), _NONE) is not _NONE]
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        quote = conn.dialect.identifier_preparer.quote
        sql = f"COPY {quote(table.name)} ({', '.join(quote(n) for n in names)}) FROM STDIN"
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(sql) as copy:
                for values in _bound(conn.dialect, table, names, rows):
                    copy.write_row(values)
        finally:
            cursor.close()
        return
    dbapi_executemany(
        session,
        table,
        names,
        lambda quote, mark: (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
            f"VALUES ({', '.join(mark for _ in names)})"
        ),
        rows,
    )


_NONE = object()
_filled = partial(is_not, None)


def _bound(dialect: Any, table: Table, order: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Iterator[list[Any]]:
    """Each row's values in ``order``, through the bind processors their columns need.

    A processed value is reused while a column repeats the same object (an import stamps every row with one
    ``now``: one datetime conversion instead of one per row and column)."""
    procs = [(i, p) for i, n in enumerate(order) if (p := table.c[n].type._cached_bind_processor(dialect)) is not None]
    last_in: list[Any] = [None] * len(order)
    last_out: list[Any] = [None] * len(order)
    for row in rows:
        values = [row[n] for n in order]
        for i, proc in procs:
            v = values[i]
            if v is None:
                continue
            if v is last_in[i] and isinstance(v, datetime):
                values[i] = last_out[i]
            else:
                values[i] = last_out[i] = proc(v)
                last_in[i] = v
        yield values


def dbapi_executemany(
    session: Session,
    table: Table,
    order: Sequence[str],
    statement: Callable[[Callable[[str], str], str], str],
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Run ``statement(quote, mark)`` once per row, binding the columns in ``order`` through their processors."""
    conn = session.connection()
    dialect = conn.dialect
    sql = statement(dialect.identifier_preparer.quote, "?" if dialect.paramstyle == "qmark" else "%s")
    params = [tuple(values) for values in _bound(dialect, table, order, rows)]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for part in chunks(params, 10000):
            cursor.executemany(sql, part)
    finally:
        cursor.close()


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- sources -------------------------------------------------------------------------------------------


def get_or_create_source(session: Session, name: str, kind: SourceKind) -> Source:
    source = session.scalar(select(Source).where(Source.name == name))
    if source is None:
        source = Source(name=name, kind=kind.value)
        session.add(source)
        session.flush()
    return source


def source_names(session: Session) -> dict[int, tuple[str, SourceKind]]:
    return {s.id: (s.name, SourceKind(s.kind)) for s in session.scalars(select(Source))}


# --- observations --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredObservation:
    id: int
    camera_id: int
    digest: str
    removed: bool
    line: int | None = None
    raw_digest: int | None = None


def source_observations(session: Session, source_id: int) -> dict[str, StoredObservation]:
    o = ObservationRow
    rows = session.execute(select(o.key, o.id, o.camera_id, o.digest, o.removed_at).where(o.source_id == source_id))
    return {r.key: StoredObservation(r.id, r.camera_id, r.digest, r.removed_at is not None) for r in rows}


KEY_CHUNK = 5000  # fewer round trips for identity look-ups; far below both databases' parameter limits


def stored_observations(session: Session, source_id: int, keys: Collection[str]) -> dict[str, StoredObservation]:
    """The source's stored observations with these keys (an import looks them up a chunk at a time)."""
    # Plain SQL on the DBAPI cursor: compiling an IN list of 5,000 bound parameters cost more than the query.
    conn = session.connection()
    quote = conn.dialect.identifier_preparer.quote
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    table, key_column = quote(ObservationRow.__tablename__), quote("key")
    out: dict[str, StoredObservation] = {}
    select_sql = (
        f"SELECT {key_column}, id, camera_id, digest, removed_at, line, raw_digest FROM {table} "
        f"WHERE source_id = {mark} AND "
    )
    postgres = conn.dialect.name == "postgresql"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for part in chunks(sorted(set(keys)), KEY_CHUNK):
            if postgres:  # one array parameter: a statement of fixed text, no 5,000 placeholders to parse and plan
                cursor.execute(select_sql + f"{key_column} = ANY({mark})", (source_id, list(part)))
            else:
                cursor.execute(select_sql + f"{key_column} IN ({', '.join(mark for _ in part)})", (source_id, *part))
            for key, oid, camera_id, dg, removed_at, line, raw in cursor.fetchall():
                out[key] = StoredObservation(oid, camera_id, dg, removed_at is not None, line, raw)
    finally:
        cursor.close()
    return out


def raw_digest_rows(session: Session, source_id: int, size: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
    """(raw_digest or 0, id, line or -1, raw_spot or 0, whether raw_spot is set, whether the key is a device
    ID's, key, raw_issues, whether raw_digest is set) of the source's live observations, ``size`` at a time (plain
    DBAPI cursor: a re-import reads 100,000 of these before anything else)."""
    conn = session.connection()
    quote = conn.dialect.identifier_preparer.quote
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    key = quote("key")
    sql = (
        f"SELECT COALESCE(raw_digest, 0), id, COALESCE(line, -1), COALESCE(raw_spot, 0), "
        f"CASE WHEN raw_spot IS NULL THEN 0 ELSE 1 END, CASE WHEN substr({key}, 1, 3) = 'id:' THEN 1 ELSE 0 END, "
        f"{key}, raw_issues, CASE WHEN raw_digest IS NULL THEN 0 ELSE 1 END FROM {quote(ObservationRow.__tablename__)} "
        f"WHERE source_id = {mark} AND removed_at IS NULL"
    )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, (source_id,))
        while rows := cursor.fetchmany(size):
            yield rows
    finally:
        cursor.close()


def update_observation_lines(session: Session, lines: Sequence[tuple[int, int]]) -> None:
    """(id, line) pairs: where unchanged rows moved to in their file (provenance points at the right line)."""
    if not lines:
        return
    table = cast(Any, ObservationRow.__table__)
    session.execute(
        update(table).where(table.c.id == bindparam("oid")).values(line=bindparam("new_line")),
        [{"oid": i, "new_line": n} for i, n in lines],
    )


def count_live_observations(session: Session, source_id: int) -> int:
    o = ObservationRow
    stmt = select(func.count()).select_from(o).where(o.source_id == source_id, o.removed_at.is_(None))
    return int(session.execute(stmt).scalar_one())


def observation_state(session: Session, source_id: int) -> str:
    """A token of the source's stored observations that a write to them changes: how many (and how many
    removed), the highest id and update time, and the sum of their camera ids (a camera merged or deleted).
    One aggregate over the source's rows (about 0.1 s at 100,000 on SQLite)."""
    o = ObservationRow
    stmt = select(
        func.count(o.id), func.count(o.removed_at), func.max(o.id), func.max(o.updated_at), func.sum(o.camera_id)
    ).where(o.source_id == source_id)
    return "|".join("" if v is None else str(v) for v in session.execute(stmt).one())


def live_observation_keys(session: Session, source_id: int, size: int = 20_000) -> Iterator[Sequence[Any]]:
    """(id, camera_id, key) of the source's live observations, ``size`` at a time in id order (bounded memory
    however large the source)."""
    o = ObservationRow
    after = 0
    while True:
        rows = list(
            session.execute(
                select(o.id, o.camera_id, o.key)
                .where(o.source_id == source_id, o.removed_at.is_(None), o.id > after)
                .order_by(o.id)
                .limit(size)
            )
        )
        if not rows:
            return
        yield rows
        after = rows[-1].id


def cameras_by_key(session: Session, kind: str, keys: Collection[str]) -> dict[str, int]:
    """Identity key -> camera id, over every observation ever made (a removed camera can come back).

    Where one key sits on several cameras the oldest camera wins, so matching is stable.
    """
    column = KEY_COLUMNS[kind]
    found: dict[str, int] = {}
    ordered = sorted(set(keys))
    postgres = session.get_bind().dialect.name == "postgresql"
    for part in chunks(ordered, KEY_CHUNK):
        # PostgreSQL: one array parameter instead of an IN list of 5,000 (parsed and planned each time).
        match = column == any_(bindparam("keys", list(part), type_=ARRAY(String))) if postgres else column.in_(part)
        rows = session.execute(select(column, func.min(ObservationRow.camera_id)).where(match).group_by(column))
        for key, camera_id in rows:
            if key is not None:
                found[key] = camera_id
    return found


def insert_observations(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        bulk_insert(session, ObservationRow.__table__, rows)  # type: ignore[arg-type]


def update_observations(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows carry ``id`` plus the columns to set."""
    if rows:
        session.execute(update(ObservationRow), list(rows))


def mark_observations_removed(
    session: Session, ids: Sequence[int], now: datetime, *, last_listed: datetime | None = None
) -> None:
    """Mark these observations removed at ``now``; ``last_listed``: when their source last listed them (a
    snapshot import before this one), kept as their last-seen when later than their own."""
    o = ObservationRow
    values: dict[str, Any] = {"removed_at": now}
    if last_listed is not None:
        values["seen_at"] = case((o.seen_at < last_listed, last_listed), else_=o.seen_at)
    for part in chunks(ids):
        session.execute(update(o).where(o.id.in_(part)).values(values))


def last_seen(o: Any = ObservationRow) -> Any:
    """An observation's last-seen: its own ``seen_at`` (set when new or changed), or for a live one the time its
    source's last snapshot import listed it, whichever is later (needs ``Source`` joined)."""
    later = and_(o.removed_at.is_(None), Source.listed_at.is_not(None), Source.listed_at > o.seen_at)
    return case((later, Source.listed_at), else_=o.seen_at)


@dataclass(frozen=True, slots=True)
class LiveObservation:
    camera_id: int
    source: str
    kind: SourceKind
    key: str
    fields: dict[str, Any]
    extra: dict[str, Any] | None
    updated_at: datetime
    first_seen: datetime
    line: int | None


def live_observations(session: Session, camera_ids: Collection[int]) -> dict[int, list[LiveObservation]]:
    o = ObservationRow
    out: dict[int, list[LiveObservation]] = {}
    for part in chunks(sorted(camera_ids)):
        rows = session.execute(
            select(o.camera_id, Source.name, Source.kind, o.key, o.fields, o.extra, o.updated_at, o.first_seen, o.line)
            .join(Source, Source.id == o.source_id)
            .where(o.camera_id.in_(part), o.removed_at.is_(None))
        )
        for r in rows:
            out.setdefault(r.camera_id, []).append(
                LiveObservation(
                    r.camera_id,
                    r.name,
                    SourceKind(r.kind),
                    r.key,
                    json.loads(r.fields),
                    json.loads(r.extra) if r.extra else None,
                    _aware(r.updated_at),
                    _aware(r.first_seen),
                    r.line,
                )
            )
    return out


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- cameras -------------------------------------------------------------------------------------------


def allocate_camera_ids(session: Session, count: int) -> list[int]:
    """Reserve ``count`` new camera ids inside the current write transaction.

    Ids are assigned up front so cameras and their observations go in as plain executemany batches
    (RETURNING per row costs several times more on 100,000 rows).
    """
    if count <= 0:
        return []
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            text("SELECT nextval(pg_get_serial_sequence('cameras', 'id')) FROM generate_series(1, :n)"),
            {"n": count},
        )
        return [int(r[0]) for r in rows]
    # SQLite: the transaction already holds the write lock (ingest writes before it inserts), so no other
    # writer can take these ids before we commit.
    top = int(conn.execute(select(func.coalesce(func.max(cameras.c.id), 0))).scalar_one())
    return list(range(top + 1, top + 1 + count))


def insert_cameras(session: Session, rows: Sequence[MutableMapping[str, Any]]) -> list[int]:
    """Insert rows (without ids) and return their new ids in input order; each row is given its ``id``."""
    ids = allocate_camera_ids(session, len(rows))
    for row, i in zip(rows, ids, strict=True):
        row["id"] = i
    conn = session.connection()
    if conn.dialect.name != "sqlite" or len(rows) < 2:
        bulk_insert(session, cameras, rows)
        return ids
    # The search index (migration 0004_camera_search) takes these rows in one statement instead of one trigger call
    # each: FTS5 flushes at every statement, which made the index cost an import of 100,000 rows half as much again.
    conn.exec_driver_sql("INSERT INTO camera_search_deferred (writer) VALUES (1)")
    try:
        bulk_insert(session, cameras, rows)
    finally:
        conn.exec_driver_sql("DELETE FROM camera_search_deferred")
    names = ", ".join(SEARCH_COLUMNS)
    conn.exec_driver_sql(
        f"INSERT INTO camera_search (rowid, {names}) SELECT id, {names} FROM cameras "
        "WHERE id IN (SELECT value FROM json_each(?)) AND removed_at IS NULL",
        (json.dumps(ids),),
    )
    return ids


def update_cameras(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows carry ``_id`` plus every column to set (all rows the same columns)."""
    if not rows:
        return
    columns = [c for c in rows[0] if c != "_id"]
    stmt = update(cameras).where(cameras.c.id == bindparam("_id")).values({c: bindparam(c) for c in columns})
    session.connection().execute(stmt, list(rows))


def camera_rows(session: Session, ids: Collection[int]) -> dict[int, dict[str, Any]]:
    """Whole camera rows by id, straight from the driver (:func:`_driver_dicts`: the same values select(cameras)
    gives, at a third of the cost: a change feed page or a merge chunk reads hundreds)."""
    out: dict[int, dict[str, Any]] = {}
    dialect = _dialect(session)
    names = list(_CAMERA_KEYS)
    columns = ", ".join(names)
    for part in chunks(sorted(ids)):
        params: Any
        if dialect == "postgresql":
            sql, params = f"SELECT {columns} FROM cameras WHERE id = ANY(%(ids)s)", {"ids": list(part)}
        elif dialect == "sqlite":
            sql, params = f"SELECT {columns} FROM cameras WHERE id IN ({', '.join('?' * len(part))})", tuple(part)
        else:
            for r in session.execute(select(cameras).where(cameras.c.id.in_(part))):
                out[r.id] = dict(r._mapping)
            continue
        for row in _driver_dicts(session, sql, params, names):
            out[row["id"]] = row
    return out


def camera(session: Session, camera_id: int) -> dict[str, Any] | None:
    row = session.execute(select(cameras).where(cameras.c.id == camera_id)).first()
    return dict(row._mapping) if row else None


def camera_ids_by(session: Session, column: str, value: str) -> list[int]:
    """Cameras whose ``column`` equals ``value``, current ones first."""
    stmt = (
        select(cameras.c.id).where(cameras.c[column] == value).order_by(cameras.c.removed_at.is_not(None), cameras.c.id)
    )
    return list(session.scalars(stmt))


def all_device_ids(session: Session) -> list[str]:
    return [r for r in session.scalars(select(cameras.c.device_id).where(cameras.c.device_id.is_not(None)))]


@dataclass(frozen=True, slots=True)
class CameraFilter:
    region: str | None = None  # region code, including sub-regions
    status: str | None = None
    source: str | None = None
    search: str | None = None
    include_removed: bool = False
    use_type: str | None = None
    owner: str | None = None
    tags: tuple[str, ...] = ()  # every one of these (a camera's operator labels)
    bbox: tuple[float, float, float, float] | None = None  # min lon, min lat, max lon, max lat (WGS-84, as stored)


def escape_like(text: str) -> str:
    """``text`` for a LIKE pattern with ``ESCAPE '\\'``: its own %, _ and \\ match literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# What a search looks in (literal text, case-insensitive, anywhere in the value).
SEARCH_COLUMNS = ("name", "device_id", "local_id", "address", "ip_address", "mac")
# The searchable columns joined by U+001F, so that text without it matches the joined text only where it matches
# one column.
SEPARATOR = "\x1f"
SEARCH_DOCUMENT = " || E'\\x1f' || ".join(f"coalesce({c}, '')" for c in SEARCH_COLUMNS)
# What PostgreSQL's trigram index covers (migration 0008_camera_search_punctuation): the same expression, or it goes
# unused. pg_trgm splits words at punctuation, so that "10.0.23." gave the trigrams of "10", "0" and "23", found in
# most cameras; with '.', ':' and '-' read as letters (U+01C0-U+01C2) an IP, MAC or department number is one word
# and its trigrams are rare. A search for text without those six characters matches this text exactly where it
# matches SEARCH_DOCUMENT; other text is checked against SEARCH_DOCUMENT too.
PUNCTUATION, AS_LETTERS = ".:-", "\u01c0\u01c1\u01c2"
SEARCH_INDEXED = f"translate({SEARCH_DOCUMENT}, '{PUNCTUATION}', '{AS_LETTERS}')"
AS_LETTER = str.maketrans(PUNCTUATION, AS_LETTERS)
# A trigram index finds text of 3 characters or more; shorter text is a scan (a page stops at its last row).
TRIGRAM = 3


def fts_phrase(text: str) -> str:
    """``text`` as one FTS5 phrase: with the trigram tokenizer a substring search, every character literal."""
    return '"' + text.replace('"', '""') + '"'


def _fts_ids(search: str) -> Any:
    """The ids of the cameras (not removed) whose searchable columns contain ``search`` (SQLite FTS5)."""
    return (
        select(literal_column("rowid"))
        .select_from(text("camera_search"))
        .where(text("camera_search MATCH :fts_phrase").bindparams(fts_phrase=fts_phrase(search)))
    )


def _search(search: str, *, include_removed: bool, dialect: str) -> Any:
    like = "%" + escape_like(search) + "%"
    # SQLite's LIKE ignores ASCII case already (and its lower() folds ASCII only): no lower() on every row there.
    match = "like" if dialect == "sqlite" else "ilike"
    in_columns = or_(*(getattr(cameras.c[c], match)(like, escape="\\") for c in SEARCH_COLUMNS))
    if dialect == "postgresql":
        # The trigram index answers the test on the columns joined (one test per row, not one per column).
        indexed = literal_column(f"({SEARCH_INDEXED})").ilike(like.translate(AS_LETTER), escape="\\")
        if not any(c in search for c in PUNCTUATION + AS_LETTERS + SEPARATOR):
            return indexed
        joined = literal_column(f"({SEARCH_DOCUMENT})").ilike(like, escape="\\")
        return and_(indexed, joined) if SEPARATOR not in search else and_(indexed, joined, in_columns)
    if dialect != "sqlite" or len(search) < TRIGRAM:
        return in_columns
    if include_removed:  # the index holds the cameras not removed; the removed ones (few) are scanned besides
        # (a range, which SQLite reads from the removed_at index: for IS NOT NULL it would scan the table)
        removed = select(cameras.c.id).where(cameras.c.removed_at > literal_column("''"), in_columns)
        return cameras.c.id.in_(_fts_ids(search).union_all(removed))
    return cameras.c.id.in_(_fts_ids(search))


def _filtered(stmt: Any, flt: CameraFilter, dialect: str) -> Any:
    if not flt.include_removed:
        stmt = stmt.where(cameras.c.removed_at.is_(None))
    if flt.region:
        stmt = stmt.where(
            (cameras.c.region_code == flt.region) | cameras.c.region_code.startswith(flt.region, autoescape=True)
        )
    if flt.status:
        stmt = stmt.where(cameras.c.status == flt.status)
    if flt.search:
        # Literal text: % and _ match themselves (escaped), not "anything".
        stmt = stmt.where(_search(flt.search, include_removed=flt.include_removed, dialect=dialect))
    if flt.source:
        sub = (
            select(ObservationRow.camera_id)
            .join(Source, Source.id == ObservationRow.source_id)
            .where(Source.name == flt.source, ObservationRow.removed_at.is_(None))
        )
        stmt = stmt.where(cameras.c.id.in_(sub))
    if flt.use_type:
        stmt = stmt.where(cameras.c.use_type == flt.use_type)
    if flt.owner:
        stmt = stmt.where(cameras.c.owner == flt.owner)
    if flt.bbox:
        min_lon, min_lat, max_lon, max_lat = flt.bbox
        stmt = stmt.where(
            cameras.c.longitude.between(min_lon, max_lon), cameras.c.latitude.between(min_lat, max_lat)
        )
    for n, tag in enumerate(flt.tags):
        stmt = stmt.where(_has_tag(tag, n, dialect))
    return stmt


def _has_tag(tag: str, n: int, dialect: str) -> Any:
    """The camera's ``tags`` (a JSON list of strings) holds ``tag``."""
    name = f"tag_{n}"
    if dialect == "postgresql":
        return text(f"(cameras.tags::jsonb ? :{name})").bindparams(**{name: tag})
    return text(f"EXISTS (SELECT 1 FROM json_each(cameras.tags) WHERE json_each.value = :{name})").bindparams(
        **{name: tag}
    )


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _index_only(session: Session, flt: CameraFilter) -> bool:
    """A search alone on SQLite: the FTS index gives the page's ids in order and the count by itself."""
    return (
        flt.search is not None
        and len(flt.search) >= TRIGRAM
        and flt == CameraFilter(search=flt.search)
        and _dialect(session) == "sqlite"
    )


def list_cameras(
    session: Session,
    flt: CameraFilter,
    *,
    columns: Sequence[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    cols = [cameras.c[c] for c in columns] if columns else [cameras]
    if _index_only(session, flt):
        assert flt.search is not None
        ids = _fts_ids(flt.search).order_by(literal_column("rowid")).offset(offset)
        if limit is not None:
            ids = ids.limit(limit)
        page = list(session.scalars(ids))
        stmt = select(*cols).where(cameras.c.id.in_(page)).order_by(cameras.c.id)
    else:
        stmt = _filtered(select(*cols), flt, _dialect(session)).order_by(cameras.c.id).offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
    result = session.execute(stmt)
    # Plain str keys: SQLAlchemy's own (quoted_name, a str subclass) made every JSON encoder take its slow path.
    keys = list(map(str, result.keys()))
    return [dict(zip(keys, r, strict=True)) for r in result.all()]  # all(): one fetch, not one per row


def count_cameras(session: Session, flt: CameraFilter) -> int:
    if flt == CameraFilter():
        live = live_camera_count(session)
        if live is not None:
            return live
    if _index_only(session, flt):
        assert flt.search is not None
        return int(session.scalar(select(func.count()).select_from(_fts_ids(flt.search).subquery())) or 0)
    return int(session.scalar(_filtered(select(func.count()).select_from(cameras), flt, _dialect(session))) or 0)


# A filtered page counts its matches up to this many (an index can find them all, but counting 100,000 matches
# costs tens of milliseconds); past it the total says "more than COUNT_CAP".
COUNT_CAP = 1000


@dataclass(frozen=True, slots=True)
class CameraPage:
    total: int  # the cameras matching; when not ``exact``: more than this many match
    exact: bool
    rows: list[dict[str, Any]]


def _matching_ids(session: Session, flt: CameraFilter) -> Any:
    """The ids of the cameras matching ``flt``, in id order (SQLite's FTS index returns them in that order)."""
    if _index_only(session, flt):
        assert flt.search is not None
        return _fts_ids(flt.search).order_by(literal_column("rowid"))
    return _filtered(select(cameras.c.id), flt, _dialect(session)).order_by(cameras.c.id)


def camera_page(
    session: Session, flt: CameraFilter, *, limit: int, offset: int = 0, cap: int | None = None
) -> CameraPage:
    """A page of the cameras matching ``flt`` (id order) and their number, exact up to ``cap``.

    The unfiltered total is the counter the writes keep (exact). A filtered page within the first ``cap`` matches
    reads the first ``cap + 1`` matching ids in one pass over the index (which stops there when most cameras match),
    then the page's rows by id; a page beyond reads one row more than it shows, to know whether more follow.
    """
    cap = COUNT_CAP if cap is None else cap
    read_statements(session)
    postgresql = _dialect(session) == "postgresql"
    if flt == CameraFilter() and postgresql:  # the counter and the page in one round trip
        rows = _driver_dicts(session, _LIVE_PAGE, {"limit": limit, "offset": offset}, _LIVE_PAGE_KEYS)
        if rows[0]["_built"] is not None:
            total = int(rows[0]["_total"] or 0)
            return CameraPage(total, True, [_without_counter(r) for r in rows if r["id"] is not None])
    elif flt == CameraFilter():
        built, live = _driver_dicts(session, _LIVE_COUNT, (), ("_built", "_total"))[0].values()
        if built is not None:
            page = _driver_dicts(session, _SQLITE_PAGE, (limit, offset), _CAMERA_KEYS)
            return CameraPage(int(live or 0), True, page)
    if offset + limit <= cap:
        ids = session.scalars(_matching_ids(session, flt).limit(cap + 1)).all()  # one fetch, not one per id
        rows = _rows_by_id(session, ids[offset : offset + limit])
        return CameraPage(min(len(ids), cap), len(ids) <= cap, rows)
    rows = list_cameras(session, flt, limit=limit + 1, offset=offset)
    if len(rows) > limit:
        return CameraPage(offset + limit, False, rows[:limit])
    if rows:
        return CameraPage(offset + len(rows), True, rows)
    # past the last match: how many there are, up to the cap
    matches = _matching_ids(session, flt).limit(cap + 1).subquery()
    found = int(session.scalar(select(func.count()).select_from(matches)) or 0)
    return CameraPage(min(found, cap), found <= cap, [])


def keyset_statement(flt: CameraFilter, *, after: int, limit: int, columns: Sequence[str], dialect: str) -> Any:
    """The matching cameras with an id above ``after``, in id order, at most ``limit``: the primary key's index is
    entered at ``after`` (no OFFSET: a page deep in the list reads what the first page reads)."""
    stmt = _filtered(select(*(cameras.c[c] for c in columns)), flt, dialect)
    return stmt.where(cameras.c.id > after).order_by(cameras.c.id).limit(limit)


def keyset_sql(columns: Sequence[str], dialect: str) -> str:
    """The unfiltered keyset page as the driver reads it (parameters: after, limit)."""
    marks = ("%(after)s", "%(limit)s") if dialect == "postgresql" else ("?", "?")
    return (
        f"SELECT {', '.join(columns)} FROM cameras WHERE removed_at IS NULL AND id > {marks[0]} "
        f"ORDER BY id LIMIT {marks[1]}"
    )


def camera_keyset(
    session: Session, flt: CameraFilter, *, after: int, limit: int, columns: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """At most ``limit`` cameras matching ``flt`` with an id above ``after``, in id order (cursor pages and
    exports). ``columns``: those only (camera column names; ``id`` is always read)."""
    names = list(dict.fromkeys(["id", *(columns or _CAMERA_KEYS)]))
    unknown = [c for c in names if c not in cameras.c]
    if unknown:
        raise ValueError(f"no camera column {unknown[0]!r}")
    dialect = _dialect(session)
    read_statements(session)
    if flt == CameraFilter():  # the common page: straight from the driver (no statement to build)
        sql = keyset_sql(names, dialect)
        params: Any = {"after": after, "limit": limit} if dialect == "postgresql" else (after, limit)
        return _driver_dicts(session, sql, params, names)
    if _index_only(session, flt):  # SQLite, a search alone: the FTS index's ids after the cursor, in id order
        assert flt.search is not None
        rowid: Any = literal_column("rowid")
        ids = list(session.scalars(_fts_ids(flt.search).where(rowid > after).order_by(rowid).limit(limit)))
        stmt = select(*(cameras.c[c] for c in names)).where(cameras.c.id.in_(ids)).order_by(cameras.c.id)
    else:
        stmt = keyset_statement(flt, after=after, limit=limit, columns=names, dialect=dialect)
    result = session.execute(stmt)
    keys = list(map(str, result.keys()))
    return [dict(zip(keys, r, strict=True)) for r in result.all()]


def count_capped(session: Session, flt: CameraFilter, cap: int | None = None) -> tuple[int, bool]:
    """How many cameras match ``flt``: (n, True), or (cap, False) when more than ``cap`` do. Unfiltered: the
    counter the writes keep (exact)."""
    cap = COUNT_CAP if cap is None else cap
    if flt == CameraFilter():
        live = live_camera_count(session)
        if live is not None:
            return live, True
    matches = _matching_ids(session, flt).limit(cap + 1).subquery()
    found = int(session.scalar(select(func.count()).select_from(matches)) or 0)
    return min(found, cap), found <= cap


def _plain_where(flt: CameraFilter, dialect: str, *, bbox_index: bool = True) -> tuple[str, dict[str, Any]] | None:
    """``flt`` as the WHERE clause the driver runs, with its parameters (named: ``:name`` on SQLite,
    ``%(name)s`` for psycopg), the same conditions as :func:`_filtered` (tests/component/test_camera_filter_pages.py);
    None for a search or a source (those go through :func:`_filtered`). On SQLite the removed_at index never drives
    a list of the cameras not removed (nearly all of them: SQLite, without statistics, took it for a selective
    one and walked the whole table through it), nor, unless ``bbox_index``, the position's index (SQLite has no
    statistics of a range: a box holding most cameras would be read whole and sorted)."""
    if flt.search or flt.source:
        return None
    pg = dialect == "postgresql"
    no_index = "" if pg else "+"

    def mark(name: str) -> str:
        return f"%({name})s" if pg else f":{name}"

    where: list[str] = []
    params: dict[str, Any] = {}
    if not flt.include_removed:
        where.append(f"{no_index}removed_at IS NULL")
    if flt.region:
        # startswith(autoescape=True)'s: the code's own '%', '_' and '/' match literally
        escaped = flt.region.replace("/", "//").replace("%", "/%").replace("_", "/_")
        params.update(f_region=flt.region, f_region_like=escaped + "%")
        where.append(f"(region_code = {mark('f_region')} OR region_code LIKE {mark('f_region_like')} ESCAPE '/')")
    for column in ("status", "use_type", "owner"):
        value = getattr(flt, column)
        if value:
            params[f"f_{column}"] = value
            where.append(f"{column} = {mark('f_' + column)}")
    if flt.bbox:
        params.update(zip(("f_min_lon", "f_min_lat", "f_max_lon", "f_max_lat"), flt.bbox, strict=True))
        pos = "" if bbox_index else no_index
        where.append(f"{pos}longitude BETWEEN {mark('f_min_lon')} AND {mark('f_max_lon')}")
        where.append(f"{pos}latitude BETWEEN {mark('f_min_lat')} AND {mark('f_max_lat')}")
    for n, tag in enumerate(flt.tags):
        params[f"tag_{n}"] = tag
        if pg:
            where.append(f"(tags::jsonb ? {mark(f'tag_{n}')})")
        else:
            where.append(f"EXISTS (SELECT 1 FROM json_each(cameras.tags) WHERE json_each.value = {mark(f'tag_{n}')})")
    return " AND ".join(where) or "1 = 1", params


def _plain_count(session: Session, where: str, params: dict[str, Any], cap: int) -> tuple[int, bool]:
    """The matches of a plain filter up to ``cap`` (no order: any index may find them; stops at cap + 1)."""
    # The limits are written in (integers): SQLite plans a LIMIT given as a parameter as if there were none.
    sql = f"SELECT count(*) FROM (SELECT 1 FROM cameras WHERE {where} LIMIT {int(cap) + 1}) AS matches"
    found = int(_driver_dicts(session, sql, params, ("n",), custom_plan=True)[0]["n"] or 0)
    return min(found, cap), found <= cap


def cursor_page(
    session: Session,
    flt: CameraFilter,
    *,
    after: int,
    limit: int,
    columns: Sequence[str] | None = None,
    cap: int | None = None,
) -> tuple[CameraPage, bool]:
    """The page of cameras matching ``flt`` after id ``after`` (keyset, id order), whether more follow, and their
    number exact up to ``cap`` (COUNT_CAP). A filter on the camera's own columns is read straight from the driver
    (no statement to build, no result layer); a first page that holds every match is its own count (no second
    query); the count reads no order (any index may serve it). A bounding box on SQLite: counted first, and when
    few cameras match (up to ``cap``) the position's index finds them (sorted after), otherwise the page walks the
    ids (the status index, the table) and stops at the page's end."""
    cap = COUNT_CAP if cap is None else cap
    dialect = _dialect(session)
    plain = None if flt == CameraFilter() else _plain_where(flt, dialect)
    if plain is None:
        rows = camera_keyset(session, flt, after=after, limit=limit + 1, columns=columns)
        total, exact = count_capped(session, flt, cap)
        return CameraPage(total, exact, rows[:limit]), len(rows) > limit
    names = list(dict.fromkeys(["id", *(columns or _CAMERA_KEYS)]))
    unknown = [c for c in names if c not in cameras.c]
    if unknown:
        raise ValueError(f"no camera column {unknown[0]!r}")
    read_statements(session)
    counted: tuple[int, bool] | None = None
    where, params = plain
    if flt.bbox and dialect == "sqlite":
        counted = _plain_count(session, where, params, cap)
        if not counted[1]:  # many match: walk the ids
            where, params = _plain_where(flt, dialect, bbox_index=False) or plain
    mark = "%(f_after)s" if dialect == "postgresql" else ":f_after"
    # (a LIMIT as a parameter: SQLite walked every id for a box of 463 cameras, 40 ms, instead of their index)
    sql = f"SELECT {', '.join(names)} FROM cameras WHERE {where} AND id > {mark} ORDER BY id LIMIT {int(limit) + 1}"
    rows = _driver_dicts(session, sql, {**params, "f_after": after}, names, custom_plan=True)
    more = len(rows) > limit
    if counted is None and after <= 0 and not more:  # the first page holds every match
        counted = min(len(rows), cap), len(rows) <= cap
    if counted is None:
        counted = _plain_count(session, where, params, cap)
    return CameraPage(counted[0], counted[1], rows[:limit]), more


_CAMERA_KEYS = tuple(str(c.name) for c in cameras.c)
_CAMERA_COLUMNS = ", ".join(_CAMERA_KEYS)
_LIVE_PAGE_KEYS = ("_built", "_total", *_CAMERA_KEYS)
# live_camera_count's counter (on PostgreSQL beside the page: one row with no camera when the page is empty)
_LIVE_COUNT = (
    "SELECT (SELECT name FROM quality_state WHERE name = 'fingerprint') AS _built, "
    "(SELECT total FROM quality_tallies WHERE dim = 'all' AND key = '') AS _total"
)
_LIVE_PAGE = (
    f"SELECT n._built, n._total, c.* FROM ({_LIVE_COUNT}) AS n "
    f"LEFT JOIN LATERAL (SELECT {_CAMERA_COLUMNS} FROM cameras WHERE removed_at IS NULL ORDER BY id "
    "LIMIT %(limit)s OFFSET %(offset)s) AS c ON true ORDER BY c.id"
)


def _without_counter(row: dict[str, Any]) -> dict[str, Any]:
    del row["_built"], row["_total"]
    return row


_BY_IDS = f"SELECT {_CAMERA_COLUMNS} FROM cameras WHERE id = ANY(%(ids)s) ORDER BY id"
_SQLITE_PAGE = f"SELECT {_CAMERA_COLUMNS} FROM cameras WHERE removed_at IS NULL ORDER BY id LIMIT ? OFFSET ?"
_PROCESSORS: dict[str, list[tuple[str, Callable[[Any], Any]]]] = {}


def _driver_dicts(
    session: Session, sql: str, params: Any, keys: Sequence[str], *, custom_plan: bool = False
) -> list[dict[str, Any]]:
    """A page's rows straight from the driver, as dicts keyed by ``keys`` (the names of the columns ``sql``
    selects), with SQLAlchemy's own conversions for the columns that have one (on SQLite: JSON text, datetimes;
    psycopg converts every type itself); rows equal to select(cameras)'s (tests/component/test_listing_bounded.py).
    SQLAlchemy's result layer cost as much again as the query: 0.6 ms of a page of 100. ``custom_plan``: never
    prepared on PostgreSQL (psycopg prepares a statement run 5 times, and the server then plans it once for any
    parameters: a bounding box's generic plan read 46,000 cameras by position and sorted them, 140 ms, where the
    plan for the box at hand walks 1,100 ids, 0.6 ms)."""
    conn = session.connection()
    dbapi: Any = conn.connection.dbapi_connection
    cur = dbapi.cursor()
    try:
        if custom_plan and conn.dialect.name == "postgresql":
            cur.execute(sql, params, prepare=False)
        else:
            cur.execute(sql, params)
        rows = cur.fetchall()
    finally:
        cur.close()
    procs = _PROCESSORS.get(conn.dialect.name)
    if procs is None:  # psycopg: none needed (SQLAlchemy's Float one would ask for the column's type code)
        types = {str(c.name): c.type for c in cameras.c}
        procs = [
            (k, p)
            for k, t in types.items()
            if conn.dialect.name != "postgresql" and (p := t._cached_result_processor(conn.dialect, None))
        ]
        _PROCESSORS[conn.dialect.name] = procs
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    for key, process in procs:
        for row in out:
            if key in row and row[key] is not None:
                row[key] = process(row[key])
    return out


def _rows_by_id(session: Session, ids: Sequence[int]) -> list[dict[str, Any]]:
    if not ids:
        return []
    if _dialect(session) == "postgresql":
        return _driver_dicts(session, _BY_IDS, {"ids": list(ids)}, _CAMERA_KEYS)
    marks = ", ".join("?" * len(ids))
    sql = f"SELECT {_CAMERA_COLUMNS} FROM cameras WHERE id IN ({marks}) ORDER BY id"
    return _driver_dicts(session, sql, list(ids), _CAMERA_KEYS)


def refresh_search_index(session: Session) -> None:
    """After a large write on PostgreSQL: fresh planner statistics for the cameras (a table that grew from empty is
    otherwise planned as empty, and searched by a scan, until autovacuum comes by) and the trigram index's pending
    entries merged into it (GIN queues inserts; every search reads the queue until it is merged)."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        return
    conn.exec_driver_sql("ANALYZE cameras")
    conn.exec_driver_sql(
        "SELECT gin_clean_pending_list(ix) FROM (SELECT to_regclass('ix_cameras_search') AS ix) AS s "
        "WHERE ix IS NOT NULL"
    )


def live_camera_count(session: Session) -> int | None:
    """The cameras not removed, read from the quality counters that every write keeps current (the overall
    total, vms.inventory.problems) instead of counting 100,000 rows; None until those have been computed once."""
    t = quality_tallies
    built = select(quality_state.c.name).where(quality_state.c.name == "fingerprint").scalar_subquery()
    total = select(t.c.total).where(t.c.dim == "all", t.c.key == "").scalar_subquery()
    row = session.execute(select(built, total)).one()
    return None if row[0] is None else int(row[1] or 0)


def count_by(
    session: Session, column: str, *, include_removed: bool = False, limit: int | None = None, offset: int = 0
) -> list[tuple[str | None, int]]:
    col = cameras.c[column]
    stmt = select(col, func.count()).group_by(col).order_by(col).limit(limit).offset(offset)
    if not include_removed:
        stmt = stmt.where(cameras.c.removed_at.is_(None))
    return [(r[0], int(r[1])) for r in session.execute(stmt)]


def count_by_source(
    session: Session, *, region: str | None = None, limit: int | None = None, offset: int = 0
) -> list[tuple[str, str, int]]:
    """(source name, kind, cameras not removed it currently lists) by source name; of a region (with its
    sub-regions: region code prefix) or all."""
    o = ObservationRow
    stmt = (
        select(Source.name, Source.kind, func.count(func.distinct(o.camera_id)))
        .join(o, o.source_id == Source.id)
        .join(cameras, cameras.c.id == o.camera_id)
        .where(o.removed_at.is_(None), cameras.c.removed_at.is_(None))
        .group_by(Source.name, Source.kind)
        .order_by(Source.name)
        .limit(limit)
        .offset(offset)
    )
    if region:
        stmt = stmt.where(cameras.c.region_code.startswith(region, autoescape=True))
    return [(r[0], r[1], int(r[2])) for r in session.execute(stmt)]


def camera_sources(session: Session, camera_ids: Collection[int] | None = None) -> dict[int, list[str]]:
    """camera id -> names of the sources that currently list it."""
    o = ObservationRow
    stmt = select(o.camera_id, Source.name).join(Source, Source.id == o.source_id).where(o.removed_at.is_(None))
    out: dict[int, list[str]] = {}
    if camera_ids is None:
        for cid, name in session.execute(stmt):
            out.setdefault(cid, []).append(name)
        return out
    for part in chunks(sorted(camera_ids)):
        for cid, name in session.execute(stmt.where(o.camera_id.in_(part))):
            out.setdefault(cid, []).append(name)
    return out


def camera_dicts(session: Session, columns: Sequence[str], *, ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Current cameras (all, or these ids) as dicts of ``id`` plus the given columns (fast path for reports)."""
    names = ["id", *columns]
    stmt = select(*(cameras.c[c] for c in names)).where(cameras.c.removed_at.is_(None)).order_by(cameras.c.id)
    if ids is not None:
        stmt = stmt.where(cameras.c.id.in_(list(ids)))
    return [dict(zip(names, row, strict=True)) for row in session.execute(stmt)]


# --- catalog nodes -------------------------------------------------------------------------------------


def upsert_nodes(session: Session, nodes: Iterable[Mapping[str, Any]], source_id: int) -> int:
    count = 0
    for node in nodes:
        row = session.get(CatalogNode, node["device_id"])
        if row is None:
            row = CatalogNode(device_id=node["device_id"])
            session.add(row)
        row.name = node.get("name")
        row.parent_id = node.get("parent_id")
        row.civil_code = node.get("civil_code")
        row.source_id = source_id
        row.updated_at = utcnow()
        count += 1
    return count


def node_ids(session: Session) -> set[str]:
    return set(session.scalars(select(CatalogNode.device_id)))


# --- regions -------------------------------------------------------------------------------------------


def upsert_regions(session: Session, records: Iterable[Any]) -> tuple[int, int]:
    """Insert or update RegionRecord-like objects; a record without geometry keeps a stored one."""
    existing = {r.code: r for r in session.scalars(select(Region))}
    created = updated = 0
    for rec in records:
        row = existing.get(rec.code)
        if row is None:
            row = Region(code=rec.code, name=rec.name, level=rec.level, source=rec.source)
            session.add(row)
            existing[rec.code] = row
            created += 1
        else:
            updated += 1
        row.name = rec.name or row.name
        row.parent_code = rec.parent_code or row.parent_code
        row.level = rec.level or row.level
        if rec.geometry_wkb is not None:
            row.geometry = rec.geometry_wkb
        row.source = rec.source
        row.updated_at = utcnow()
    session.flush()
    return created, updated


def regions(session: Session, *, with_geometry: bool = False) -> list[Row[Any]]:
    cols: list[Any] = [Region.code, Region.name, Region.parent_code, Region.level, Region.source]
    if with_geometry:
        cols.append(Region.geometry)
    return list(session.execute(select(*cols).order_by(Region.code)))


def regions_page(session: Session, *, limit: int, offset: int) -> tuple[int, list[Row[Any]]]:
    total = int(session.scalar(select(func.count()).select_from(Region)) or 0)
    cols = [Region.code, Region.name, Region.parent_code, Region.level, Region.source]
    return total, list(session.execute(select(*cols).order_by(Region.code).limit(limit).offset(offset)))


def polygon_codes(session: Session) -> list[str]:
    return list(session.scalars(select(Region.code).where(Region.geometry.is_not(None))))


def parent_exists(session: Session, parent_id: str) -> bool:
    """A ParentID resolves to a camera, a catalog node or a region."""
    return any(
        session.scalar(select(func.count()).select_from(table).where(column == parent_id))
        for table, column in (
            (cameras, cameras.c.device_id),
            (CatalogNode.__table__, CatalogNode.__table__.c.device_id),
            (Region.__table__, Region.__table__.c.code),
        )
    )


def duplicate_codes(session: Session, cam: Mapping[str, Any]) -> list[str]:
    """The duplicate rules (quality rule 5) for one camera, by query instead of over every camera."""
    from vms.catalog.domain import normalize_mac

    others = select(func.count()).select_from(cameras).where(cameras.c.removed_at.is_(None), cameras.c.id != cam["id"])
    codes: list[str] = []
    if cam.get("device_id") and session.scalar(others.where(cameras.c.device_id == cam["device_id"])):
        codes.append("DUP-ID")
    lon, lat = cam.get("longitude"), cam.get("latitude")
    if cam.get("name") and lon is not None and lat is not None:
        near = others.where(
            func.trim(cameras.c.name) == str(cam["name"]).strip(),
            func.abs(cameras.c.longitude - lon) < 5e-7,
            func.abs(cameras.c.latitude - lat) < 5e-7,
        )
        if session.scalar(near):
            codes.append("DUP-NAME-POSITION")
    mac = normalize_mac(cam.get("mac"))
    # Importers and probes store a MAC normalised whenever it parses, so equality is the normalised comparison.
    if mac and session.scalar(others.where(cameras.c.mac == mac)):
        codes.append("DUP-MAC")
    if cam.get("serial_number"):
        same = others.where(
            cameras.c.serial_number == cam["serial_number"],
            func.coalesce(cameras.c.manufacturer, "") == (cam.get("manufacturer") or ""),
        )
        if session.scalar(same):
            codes.append("DUP-SERIAL")
    return codes


def polygon_regions(session: Session) -> list[tuple[str, bytes]]:
    rows = session.execute(select(Region.code, Region.geometry).where(Region.geometry.is_not(None)))
    return [(r[0], r[1]) for r in rows if r[1] is not None]


def region_codes_and_names(session: Session) -> dict[str, str]:
    return {r[0]: r[1] for r in session.execute(select(Region.code, Region.name))}


# --- runs and audit ------------------------------------------------------------------------------------


def record_import_run(
    session: Session,
    *,
    source_id: int | None,
    path: str,
    fmt: str,
    counts: dict[str, Any],
    issues: dict[str, Any] | None,
) -> int:
    run = ImportRun(source_id=source_id, path=path, format=fmt, counts=counts, issues=issues)
    session.add(run)
    session.flush()
    return run.id


# From where the current request or command came (the client's IP, "cli@<host>"): the API's access dependencies
# (api.deps) set it once per request, so every audit row a request writes says from where without each service
# passing it down. A context variable: each request (an asyncio task, copied into its worker thread) has its own.
AUDIT_ADDRESS: ContextVar[str | None] = ContextVar("audit_address", default=None)


@contextmanager
def audit_from(address: str | None) -> Iterator[None]:
    """Audit rows written inside the block record ``address`` (unless one is passed to :func:`audit`)."""
    token = AUDIT_ADDRESS.set(address)
    try:
        yield
    finally:
        AUDIT_ADDRESS.reset(token)


def audit(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    address: str | None = None,
) -> None:
    """Who (actor), what (action, target, details), when (now) and from where (``address``, else the context's)."""
    where = address if address is not None else AUDIT_ADDRESS.get()
    session.add(AuditEntry(actor=actor, action=action, target=target, details=details, address=where))


def audit_entries(session: Session, limit: int = 100, *, before: int | None = None) -> list[AuditEntry]:
    """The newest entries first; ``before``: only those older than that entry's id (the next page)."""
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(AuditEntry.id < before)
    return list(session.scalars(stmt))


def source_of_observation(session: Session, camera_id: int) -> list[Row[Any]]:
    o = ObservationRow
    stmt = (
        select(
            Source.name,
            Source.kind,
            o.key,
            o.line,
            o.first_seen,
            o.updated_at,
            last_seen(o).label("seen_at"),
            o.removed_at,
        )
        .join(Source, Source.id == o.source_id)
        .where(and_(o.camera_id == camera_id))
        .order_by(o.id)
    )
    return list(session.execute(stmt))


def camera_identity_keys(session: Session, camera_ids: Collection[int]) -> dict[int, dict[str, set[str]]]:
    """camera id -> identity kind -> keys, over all its observations."""
    o = ObservationRow
    cols = [o.camera_id, *KEY_COLUMNS.values()]
    out: dict[int, dict[str, set[str]]] = {}
    kinds = list(KEY_COLUMNS)
    for part in chunks(sorted(camera_ids)):
        for row in session.execute(select(*cols).where(o.camera_id.in_(part))):
            known = out.setdefault(cast(int, row[0]), {})
            for kind, key in zip(kinds, row[1:], strict=True):
                if key:
                    known.setdefault(kind, set()).add(str(key))
    return out


def link_credential(session: Session, host: str, credential_id: int) -> None:
    """Point cameras at this address to a credential set, unless they already have one."""
    session.execute(
        update(cameras)
        .where(cameras.c.ip_address == host, cameras.c.credential_id.is_(None))
        .values(credential_id=credential_id)
    )


def camera_ids_for_keys(session: Session, source: str, keys: Sequence[str]) -> dict[str, int]:
    """Observation key -> camera id, for one source's observations."""
    o = ObservationRow
    found: dict[str, int] = {}
    for part in chunks(sorted(set(keys)), KEY_CHUNK):
        rows = session.execute(
            select(o.key, o.camera_id)
            .join(Source, Source.id == o.source_id)
            .where(Source.name == source, o.key.in_(part))
        )
        found.update({key: camera_id for key, camera_id in rows})
    return found
