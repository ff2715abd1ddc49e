"""Quality problems kept up to date as records change, so that the summary is a few counters and one camera's
problems a lookup, whatever the size of the inventory.

Every write of the service layer calls ``refresh`` in its own transaction with the cameras it changed. A refresh
  1. writes what each changed camera holds now (device ID, ParentID, duplicate-rule keys) and marks stale the
     camera itself and every camera that shared a key or named it as parent, before and after the change;
  2. checks the stale cameras again, chunk by chunk (memory does not grow with the inventory), subtracting from
     the counters what each contributed before and adding what it contributes now.
What the problems depend on besides the records (rules, governed region, regions) is kept as a fingerprint; when
it changes, everything is checked again. The result equals a from-scratch ``check_all`` (tests compare them).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from vms.catalog.fields import FIELDS, Kind
from vms.inventory.quality import COLUMNS, DUPLICATE_KEYS, RULES, QualityContext, QualityReport, Tally, check_camera
from vms.store import problems as store
from vms.store import repository as repo

log = logging.getLogger(__name__)

KEY_COLUMN = {"DUP-ID": "k_id", "DUP-NAME-POSITION": "k_name_position", "DUP-MAC": "k_mac", "DUP-SERIAL": "k_serial"}
IDENTITY_SOURCE_COLUMNS = (
    "device_id",
    "parent_id",
    "name",
    "longitude",
    "latitude",
    "mac",
    "manufacturer",
    "serial_number",
)
CHUNK = 2000  # cameras checked per round: bounds memory
FULL_CHUNK = 5000  # the same when checking every camera (no old state to read)
FULL_SHARE = 0.3  # a write that changes more than this share of the cameras checks all of them at once


def key_digest(key: Hashable | None) -> str | None:
    """The stored form of a duplicate-rule key: equal keys, equal forms (-0.0 is 0.0; NaN equals nothing).

    Short text (a GB ID, a MAC) is kept as it is; anything else becomes a SHA-1 (40 characters, never short).
    """
    if key is None:
        return None
    if type(key) is str and len(key) <= 32:
        return key
    parts = key if isinstance(key, tuple) else (key,)
    canon: list[Any] = []
    for p in parts:
        if isinstance(p, float):
            if p != p:
                return None
            p += 0.0
        canon.append(p)
    return hashlib.sha1(repr(tuple(canon)).encode(), usedforsecurity=False).hexdigest()


@lru_cache(maxsize=1)
def rules_version() -> str:
    """Digest of the code the rules are made of: new or changed rules make every stored problem stale."""
    root = Path(__file__).resolve().parents[1]
    own = (root / "inventory" / "quality.py", root / "geo" / "placement.py", Path(__file__).resolve())
    files = sorted([*(root / "catalog").glob("*.py"), *own])
    h = hashlib.sha1(usedforsecurity=False)
    for path in files:
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(path.name.encode())
    h.update(" ".join(sorted(RULES)).encode())
    return h.hexdigest()


def base_context(session: Session, governed: str | None) -> QualityContext:
    """What the rules need besides the record, except the parents (looked up per chunk)."""
    names = repo.region_codes_and_names(session)
    numeric = {c for c in names if c.isdigit()}
    polygons = set(repo.polygon_codes(session))
    return QualityContext(
        governed=governed or None,
        known_civil_codes=numeric or None,
        has_polygons=bool(polygons),
        governed_has_polygon=bool(governed and governed in polygons),
    )


def fingerprint(session: Session, governed: str | None) -> str:
    count, latest = store.regions_signature(session)
    return f"{rules_version()[:16]}|{governed or ''}|{count}|{latest}"


def is_current(session: Session, governed: str | None) -> bool:
    return store.get_state(session, "fingerprint") == fingerprint(session, governed)


def refresh(
    session: Session,
    camera_ids: Iterable[int],
    *,
    governed: str | None,
    parents: Collection[str] = (),
    full: bool = False,
) -> None:
    """Bring the stored problems up to date after a write that changed ``camera_ids`` (and catalog nodes or
    regions named ``parents``), inside the caller's transaction."""
    store.lock(session)
    current = fingerprint(session, governed)
    ids = sorted(set(camera_ids))
    stored = store.get_state(session, "fingerprint")
    if not full and stored == current and len(ids) > CHUNK:
        full = len(ids) > FULL_SHARE * max(1, _camera_count(session))
    if full or stored != current:
        rebuild(session, governed=governed)
        store.set_state(session, "fingerprint", current)
        return
    for part in repo.chunks(ids, CHUNK):
        _write_identities(session, part)
    if parents:
        store.mark_children_stale(session, parents)
    _check_stale(session, base_context(session, governed))


def rebuild(session: Session, *, governed: str | None) -> None:
    """Check every camera again (rules, governed region or regions changed; a first run; a large import).

    One pass over the cameras in id order, a chunk at a time, writes each camera's rows and counts; the cameras
    that share a duplicate key with another are then checked again with the duplicate rules."""
    store.clear(session)
    base = base_context(session, governed)
    deltas = _Deltas()
    cache: dict[str, list[str]] = {}
    after = 0
    while True:
        cams = store.camera_page(session, after, FULL_CHUNK, (*COLUMNS, *IDENTITY_SOURCE_COLUMNS))
        if not cams:
            break
        after = cams[-1]["id"]
        live = [c for c in cams if c["removed_at"] is None]
        ctx = _with_parents(session, base, live)
        sources = store.sources_between(session, cams[0]["id"], after)
        rows: list[dict[str, Any]] = []
        problem_rows: list[tuple[int, str]] = []
        for cam in cams:
            row = _identity(cam)
            if cam["removed_at"] is not None:
                row.update(_NOT_COUNTED)
            else:
                row.update(_assess(cam, ctx, cache, (), sources.get(cam["id"], ()), deltas, problem_rows))
            row["stale"] = False
            rows.append(row)
        store.insert_checked(session, rows)
        store.insert_problems(session, problem_rows)
    store.apply_tallies(session, deltas.as_dict())
    store.mark_duplicates_stale(session)
    _check_stale(session, base)


class FirstImportCheck:
    """Problems of the cameras an import into an empty inventory creates, checked as each chunk is written.

    The records are in memory already (merged and placed): checking them there spares the rebuild's second pass
    over 100,000 cameras. What one record cannot tell is left to the usual stale-check at the end: cameras naming a
    parent (a later chunk may add it), cameras a later chunk merged again, and every shared duplicate key. The
    result equals ``rebuild`` (tests compare them); ``start`` returns None when the inventory is not empty.
    """

    def __init__(self, session: Session, governed: str | None, source: str) -> None:
        self.session, self.governed = session, governed
        self.base = base_context(session, governed)
        self.sources = (source,)  # a camera this import creates is listed by this source only
        self.sources_json = _sources_json(self.sources)
        # What the counters gain, by (region, problems, conflicts): added once at the end, not once per camera.
        self.gained: Counter[tuple[str | None, tuple[str, ...], bool]] = Counter()
        self.cache: dict[str, list[str]] = {}

    @classmethod
    def start(cls, session: Session, *, governed: str | None, source: str) -> FirstImportCheck | None:
        if store.any_camera(session):
            return None  # the usual case: no lock taken before the import's end (writers in between go on)
        store.lock(session)  # held to commit, as refresh holds it; a first import running meanwhile has committed
        if store.any_camera(session):
            return None
        store.clear(session)
        return cls(session, governed, source)

    def created(self, ids: Sequence[int], records: Sequence[Mapping[str, Any]]) -> None:
        """New cameras (ids, and their rows as inserted): their identity, problems and contributions."""
        rows: list[dict[str, Any]] = []
        problem_rows: list[tuple[int, str]] = []
        base, cache, gained, sources = self.base, self.cache, self.gained, self.sources_json
        for cid, rec in zip(ids, records, strict=True):
            cam = stored_form(rec)
            cam["id"], cam["removed_at"] = cid, None
            row = _identity(cam)
            if cam.get("parent_id"):
                row.update(_NOT_COUNTED)
                row["stale"] = True
                rows.append(row)
                continue
            # What _assess gives a camera without duplicate codes, listed by one source.
            problems = check_camera(cam, base, cache)
            region, conflicts = cam.get("region_code"), bool(cam.get("conflicts"))
            gained[(region, tuple(problems), conflicts)] += 1
            if problems:
                problem_rows.extend((cid, code) for code in dict.fromkeys(problems))
            row["counted"], row["problems"], row["region_code"] = True, " ".join(problems) or None, region
            row["sources"], row["conflicts"], row["stale"] = sources, conflicts, False
            rows.append(row)
        store.insert_checked(self.session, rows)
        store.insert_problems(self.session, problem_rows)

    def finish(self, remerged: Iterable[int], *, parents: Collection[str] = ()) -> None:
        """After the import: cameras merged again, duplicates and parents checked; the state made current."""
        session = self.session
        deltas = _Deltas()
        for (region, problems, conflicts), n in self.gained.items():
            deltas.add(n, problems=problems, region=region, sources=self.sources, conflicts=conflicts)
        store.apply_tallies(session, deltas.as_dict())
        for part in repo.chunks(sorted(set(remerged)), CHUNK):
            _write_identities(session, part)
        if parents:
            store.mark_children_stale(session, parents)
        store.mark_duplicates_stale(session)
        _check_stale(session, self.base)
        store.set_state(session, "fingerprint", fingerprint(session, self.governed))


def _coercer(kind: Kind) -> Callable[[Any], Any]:
    return int if kind is Kind.INT else float if kind is Kind.FLOAT else str


# Column -> the type the database hands back, for the columns the rules read.
_STORED_TYPES: dict[str, Callable[[Any], Any]] = {
    f.name: _coercer(f.kind)
    for f in FIELDS
    if f.kind is not Kind.JSON and f.name in {*COLUMNS, *IDENTITY_SOURCE_COLUMNS}
}


def stored_form(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A record as written, with the values the rules read in the type the database returns them in."""
    out = dict(rec)
    for name, coerce in _STORED_TYPES.items():
        value = out.get(name)
        if value is not None and type(value) is not coerce:
            out[name] = _coerced(coerce, value)
    return out


def _coerced(coerce: Callable[[Any], Any], value: Any) -> Any:
    """``value`` as the column's type; a value the type cannot hold exactly stays as it is (SQLite keeps it so)."""
    if coerce is int and isinstance(value, float) and not value.is_integer():
        return value
    try:
        return coerce(value)
    except (TypeError, ValueError, OverflowError):
        return value


# What a removed camera contributes: nothing.
_NOT_COUNTED: dict[str, Any] = {
    "counted": False,
    "problems": None,
    "region_code": None,
    "sources": None,
    "conflicts": False,
}


def _camera_count(session: Session) -> int:
    return repo.count_cameras(session, repo.CameraFilter(include_removed=True))


def _with_parents(session: Session, base: QualityContext, live: Iterable[Mapping[str, Any]]) -> QualityContext:
    parents = {str(c["parent_id"]) for c in live if c.get("parent_id")}
    return replace(base, known_parents=store.known_parents(session, parents) if parents else frozenset())


def _identity(rec: Mapping[str, Any]) -> dict[str, Any]:
    live = rec["removed_at"] is None
    parent = rec.get("parent_id")
    row: dict[str, Any] = {
        "camera_id": rec["id"],
        "device_id": str(rec["device_id"]) if rec.get("device_id") else None,
        "parent_id": str(parent) if live and parent else None,
    }
    for code, keyer in DUPLICATE_KEYS:
        row[KEY_COLUMN[code]] = key_digest(keyer(rec)) if live else None
    return row


def _write_identities(session: Session, ids: Sequence[int]) -> None:
    records = store.camera_records(session, ids, IDENTITY_SOURCE_COLUMNS)
    known = store.existing_ids(session, ids)
    # Before: cameras that shared a key with the old values, or named an old device ID as parent.
    store.mark_related_stale(session, sorted(known))
    rows = [_identity(records[i]) for i in ids if i in records]
    store.update_identities(session, [r for r in rows if r["camera_id"] in known])
    store.insert_identities(session, [r for r in rows if r["camera_id"] not in known])
    # After: the same for the new values (this also marks the changed cameras themselves).
    store.mark_related_stale(session, ids)


@dataclass
class _Deltas:
    counts: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    def add(
        self, sign: int, *, problems: Sequence[str], region: str | None, sources: Iterable[str], conflicts: bool
    ) -> None:
        ok = 0 if problems else 1
        for key in (("all", ""), ("region", region or ""), *(("source", s) for s in sources)):
            c = self.counts[key]
            c[0] += sign
            c[1] += sign * ok
        for code in set(problems):
            self.counts[("rule", code)][0] += sign
        if conflicts:
            self.counts[("conflicts", "")][0] += sign

    def as_dict(self) -> dict[tuple[str, str], tuple[int, int]]:
        return {k: (v[0], v[1]) for k, v in self.counts.items() if v[0] or v[1]}


def _assess(
    cam: Mapping[str, Any],
    ctx: QualityContext,
    cache: dict[str, list[str]],
    duplicates: Iterable[str],
    sources: Iterable[str],
    deltas: _Deltas,
    problem_rows: list[tuple[int, str]],
) -> dict[str, Any]:
    """A live camera's problems (the duplicate codes given) and what it adds to the counters."""
    problems = check_camera(cam, ctx, cache)
    problems.extend(duplicates)
    srcs = tuple(sorted(set(sources)))
    conflicts = bool(cam.get("conflicts"))
    region = cam.get("region_code")
    deltas.add(1, problems=problems, region=region, sources=srcs, conflicts=conflicts)
    problem_rows.extend((cam["id"], code) for code in dict.fromkeys(problems))
    return {
        "counted": True,
        "problems": " ".join(problems) or None,
        "region_code": region,
        "sources": _sources_json(srcs),
        "conflicts": conflicts,
    }


@lru_cache(maxsize=1024)
def _sources_json(sources: tuple[str, ...]) -> str:
    return json.dumps(list(sources), ensure_ascii=False)


def _check_stale(session: Session, base: QualityContext) -> None:
    """Check the stale cameras again, a chunk at a time: counters lose what each gave before, gain what it gives."""
    deltas = _Deltas()
    cache: dict[str, list[str]] = {}
    while True:
        ids = store.stale_ids(session, CHUNK)
        if not ids:
            break
        cams = store.camera_records(session, ids, COLUMNS)
        old = store.stored_rows(session, ids)
        live = [cams[i] for i in ids if i in cams and cams[i]["removed_at"] is None]
        ctx = _with_parents(session, base, live)
        duplicated = {
            code: store.duplicated_keys(session, column, {k for i in ids if (k := getattr(old[i], column))})
            for code, column in KEY_COLUMN.items()
        }
        sources = repo.camera_sources(session, [c["id"] for c in live])
        rows: list[dict[str, Any]] = []
        problem_rows: list[tuple[int, str]] = []
        for cid in ids:
            before = old[cid]
            if before.counted:
                deltas.add(
                    -1,
                    problems=(before.problems or "").split(),
                    region=before.region_code,
                    sources=json.loads(before.sources or "[]"),
                    conflicts=bool(before.conflicts),
                )
            cam = cams.get(cid)
            if cam is None or cam["removed_at"] is not None:
                rows.append({"camera_id": cid, **_NOT_COUNTED})
                continue
            dups = [code for code, column in KEY_COLUMN.items() if getattr(before, column) in duplicated[code]]
            rows.append(
                {"camera_id": cid, **_assess(cam, ctx, cache, dups, sources.get(cid, ()), deltas, problem_rows)}
            )
        store.write_contributions(session, rows)
        store.replace_problems(session, ids, problem_rows)
    store.apply_tallies(session, deltas.as_dict())


# --- reads ---------------------------------------------------------------------------------------------


def summary(session: Session, *, target: float) -> QualityReport:
    """The report's counters (no per-camera list): a read of a few hundred rows at most."""
    report = QualityReport(target=target)
    for dim, key, total, passed in store.tallies(session):
        if dim == "all":
            report.overall = Tally(total, passed)
        elif dim == "region":
            report.by_region[key] = Tally(total, passed)
        elif dim == "source":
            report.by_source[key] = Tally(total, passed)
        elif dim == "rule":
            report.by_rule[key] = total
        elif dim == "conflicts":
            report.with_conflicts = total
    return report
