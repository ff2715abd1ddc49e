"""Use cases of the unified inventory: ingest observations from a source, edit, allocate IDs, place.

Every function takes an open Session and leaves commit or rollback to the caller (a dry run rolls back).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from vms.catalog.domain import URI_FIELDS, Observation, SourceKind, identity_keys, without_url_credentials
from vms.catalog.fields import FIELD_NAMES, IDENTITY_ORDER
from vms.errors import Conflict
from vms.geo.placement import RegionContext
from vms.ingest.importers import KnownRows
from vms.ingest.keyset import HashIndex
from vms.inventory.merge import Merged, Rank, SourcedRecord, merge_observations
from vms.store import repository as repo
from vms.store.models import utcnow

log = logging.getLogger(__name__)

Int64s = np.ndarray[Any, np.dtype[np.int64]]

MAX_REPORTED_CONFLICTS = 200


class RemovalRefused(Conflict):
    """A snapshot import would remove more of its source's cameras than allowed: nothing was changed."""

    def __init__(self, source: str, removing: int, listed: int, share: float) -> None:
        self.source, self.removing, self.listed, self.share = source, removing, listed, share
        super().__init__(
            f"refused: this import would remove {removing:,} of the {listed:,} cameras source {source!r} lists "
            f"({removing / listed:.0%}), more than the {share:.0%} allowed (VMS_MAX_REMOVAL_SHARE); nothing was "
            "changed. If the file is the whole list now, import it again with --allow-removals; if it is only "
            "part of the list, use --partial"
        )


def check_removals(source: str, removing: int, listed: int, share: float | None) -> None:
    """Raise RemovalRefused when ``removing`` of ``listed`` live observations is more than ``share``."""
    if share is not None and removing and removing > share * listed:
        raise RemovalRefused(source, removing, listed, share)


def observation_key(fields: Mapping[str, Any], line: int | None = None) -> str:
    """A record's stable key inside its source: the strongest identifier it carries."""
    keys = identity_keys(fields)
    if "device_id" in keys:
        return "id:" + keys["device_id"]
    if fields.get("local_id"):
        return "local:" + str(fields["local_id"]).strip()
    for kind in IDENTITY_ORDER[1:]:
        if kind in keys:
            return f"{kind}:{keys[kind]}"
    if fields.get("name"):
        return f"name:{fields['name']}@{fields.get('longitude')},{fields.get('latitude')}"
    return f"line:{line}"


# One encoder for every record: json.dumps with these options builds a new one per call.
_ENCODE = json.JSONEncoder(sort_keys=True, default=str, ensure_ascii=False).encode


def to_json(value: Mapping[str, Any] | None) -> str | None:
    if not value:
        return None
    return _ENCODE(value)


def digest(fields_json: str | None, extra_json: str | None) -> str:
    blob = f"{fields_json or ''}\x00{extra_json or ''}"
    return hashlib.sha1(blob.encode(), usedforsecurity=False).hexdigest()


@dataclass
class IngestResult:
    source: str
    observations_new: int = 0
    observations_changed: int = 0
    observations_unchanged: int = 0
    observations_removed: int = 0
    cameras_created: int = 0
    cameras_updated: int = 0
    cameras_removed: int = 0
    cameras_restored: int = 0
    identity_conflicts: list[str] = field(default_factory=list)
    # Rows recognised by their raw digest as the ones the last import stored: not parsed, merged or compared
    # (counted in observations_unchanged too).
    unparsed: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds, for operators and benchmarks
    # Cameras this ingest created or touched (record, sources or removal): their quality problems are refreshed.
    camera_ids: set[int] = field(default_factory=set, repr=False)

    @property
    def changed(self) -> bool:
        return bool(
            self.observations_new
            or self.observations_changed
            or self.observations_removed
            or self.cameras_created
            or self.cameras_updated
            or self.cameras_removed
        )

    def counts(self) -> dict[str, int]:
        return {
            "observations_new": self.observations_new,
            "observations_changed": self.observations_changed,
            "observations_unchanged": self.observations_unchanged,
            "observations_removed": self.observations_removed,
            "cameras_created": self.cameras_created,
            "cameras_updated": self.cameras_updated,
            "cameras_removed": self.cameras_removed,
            "cameras_restored": self.cameras_restored,
            "identity_conflicts": len(self.identity_conflicts),
        }


_KEY_COLUMN_NAMES = tuple((kind, f"k_{kind}") for kind in IDENTITY_ORDER)


def _key_columns(fields: Mapping[str, Any], keys: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The observation's identity-key columns (``keys``: its identity_keys, when already known)."""
    if keys is None:
        keys = identity_keys(fields)
    return {column: keys.get(kind) for kind, column in _KEY_COLUMN_NAMES}


def camera_row(merged: Merged) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(FIELD_NAMES)
    row.update(merged.fields)  # a merge keeps catalog fields only
    row["extra"] = merged.extra or None
    row["conflicts"] = _jsonable(merged.conflicts) or None
    return row


def _jsonable(value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return json.loads(json.dumps(value, default=str)) if value else {}


class _Matcher:
    """Finds the camera an observation belongs to: strongest identity key first.

    A weaker key does not join two records whose stronger keys are both known and differ (two channels of one
    encoder share its IP address and MAC but have their own GB IDs).
    """

    def __init__(self, session: Session, keysets: Sequence[dict[str, str]]) -> None:
        self.by_key: dict[str, dict[str, int]] = {}
        for kind in IDENTITY_ORDER:
            wanted = {k[kind] for k in keysets if kind in k}
            self.by_key[kind] = repo.cameras_by_key(session, kind, wanted) if wanted else {}
        candidates = {cid for index in self.by_key.values() for cid in index.values()}
        self.known: dict[int, dict[str, set[str]]] = repo.camera_identity_keys(session, candidates)
        self.conflicts: list[str] = []

    def _compatible(self, camera_id: int, keys: Mapping[str, str], stronger_than: str) -> bool:
        known = self.known.get(camera_id, {})
        for kind in IDENTITY_ORDER[: IDENTITY_ORDER.index(stronger_than)]:
            mine = keys.get(kind)
            theirs = known.get(kind)
            if mine and theirs and mine not in theirs:
                return False
        return True

    def match(self, keys: Mapping[str, str], label: str) -> int | None:
        target: int | None = None
        for kind in IDENTITY_ORDER:
            key = keys.get(kind)
            if not key:
                continue
            cand = self.by_key[kind].get(key)
            if cand is None or not self._compatible(cand, keys, kind):
                continue
            if target is None:
                target = cand
            elif cand != target and len(self.conflicts) < MAX_REPORTED_CONFLICTS:
                self.conflicts.append(f"{label}: {kind} {key} also belongs to camera {cand}; kept camera {target}")
        return target

    def remember(self, camera_id: int, keys: Mapping[str, str]) -> None:
        known = self.known.setdefault(camera_id, {})
        for kind, key in keys.items():
            self.by_key[kind].setdefault(key, camera_id)
            known.setdefault(kind, set()).add(key)


def ingest(
    session: Session,
    *,
    source: str,
    kind: SourceKind,
    observations: Sequence[Observation],
    rank: Rank,
    regions: RegionContext,
    snapshot: bool,
    pinned: Mapping[str, int] | None = None,
    now: datetime | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    max_removal_share: float | None = None,
) -> IngestResult:
    """Merge one source's observations into the inventory (all at once; IngestRun takes them in chunks).

    ``snapshot``: the observations are everything the source lists now, so records it no longer lists are
    marked removed (never deleted). ``pinned`` maps observation keys to the camera they describe (API edits).
    ``max_removal_share``: a snapshot that would mark more than this share of the source's live observations
    removed raises RemovalRefused (the caller's transaction then changes nothing); None: no limit.
    """
    run = IngestRun(
        session,
        source=source,
        kind=kind,
        rank=rank,
        regions=regions,
        snapshot=snapshot,
        pinned=pinned,
        now=now,
        progress=progress,
        max_removal_share=max_removal_share,
    )
    run.add(observations)
    return run.finish()


REMERGE_CHUNK = 5000
MAX_ISSUE_SETS = 50_000  # distinct issue texts of rows recognised by raw digest, held during an import


class IngestRun:
    """One source's ingest inside the caller's transaction, fed a chunk of observations at a time.

    Memory does not grow with the source: per chunk, the stored observations with the chunk's keys are looked
    up, identities matched (earlier chunks are in the database already), new cameras inserted and changed
    observations updated. Across chunks only compact arrays remain: the hashes of the keys seen (duplicates,
    removals) and the ids of the cameras touched, which ``finish`` merges again once each.
    """

    def __init__(
        self,
        session: Session,
        *,
        source: str,
        kind: SourceKind,
        rank: Rank,
        regions: RegionContext,
        snapshot: bool,
        pinned: Mapping[str, int] | None = None,
        now: datetime | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        max_removal_share: float | None = None,
        on_created: Callable[[list[int], list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.session = session
        self.on_created = on_created  # called with the ids and rows of each chunk's new cameras, once inserted
        self.source, self.kind, self.rank, self.regions = source, kind, rank, regions
        self.snapshot, self.pinned, self.max_removal_share = snapshot, pinned or {}, max_removal_share
        self.now = now or utcnow()
        self.result = IngestResult(source=source)
        self.lap = _Lap(self.result.timings, progress)
        self.src = repo.get_or_create_source(session, source, kind)
        self.src.last_import_at = self.now
        # What the source listed before this import: the base of the removal share.
        # Counted before the first chunk changes anything (or by known_rows, which reads them all anyway).
        self._listed: int | None = None if snapshot else 0
        self.seen = HashIndex()  # hashes of the observation keys of this import
        self.still_listed = 0  # live stored observations this import lists again
        self.touched = array("q")  # existing cameras that gained or changed an observation
        self.created = array("q")
        self.conflicts: list[str] = []
        # The source's stored rows by raw digest (known_rows): observation id, line and key hash of each.
        self._known_ids: Int64s = np.empty(0, np.int64)
        self._known_lines: Int64s = np.empty(0, np.int64)
        self._known_keys: Int64s = np.empty(0, np.int64)

    def known_rows(self) -> KnownRows:
        """The source's live observations by raw digest, for the reader (importers.read_records(known=...)):
        rows found there are handed to ``add`` as ``unchanged``. About 60 bytes a stored row, read in one query
        (which also counts what the source listed before); the rows' issue texts once each (a row whose issues
        are not among the first MAX_ISSUE_SETS distinct ones is left out: it is read in full)."""
        started = time.perf_counter()
        parts: list[tuple[Any, ...]] = []
        sets = _IssueSets()

        # 100,000 result tuples at a time: the cyclic collector would scan the whole heap for nothing
        paused = gc.isenabled()
        gc.disable()
        try:
            for rows in repo.raw_digest_rows(self.session, self.src.id):
                parts.append(_known_columns(rows, sets.__getitem__))
        finally:
            if paused:
                gc.enable()
        if parts:
            cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
        else:
            cols = [np.empty(0, np.bool_ if i in (4, 6, 8) else np.int64) for i in range(9)]
        if self._listed is None:
            self._listed = len(cols[0])
        usable = (cols[7] != -2) & cols.pop()  # a row with a raw digest, its issues among those held
        if not usable.all():
            cols = [c[usable] for c in cols]
        order = np.argsort(cols[0], kind="stable")
        digests, ids, lines, keys, has_dev, spots, has_spot, issue_set = (c[order] for c in cols)
        self._known_ids, self._known_lines, self._known_keys = ids, lines, keys
        self.result.timings["known_rows"] = round(time.perf_counter() - started, 3)
        # A device ID's duplicate-check hash is its observation key's hash (importers.device_hash).
        return KnownRows(digests, keys, has_dev, spots, has_spot, issue_set, sets.texts)

    def add(self, observations: Iterable[Observation], unchanged: tuple[Int64s, Int64s] | None = None) -> None:
        """Merge a chunk of observations; ``unchanged``: (positions in known_rows, lines) of the rows the reader
        recognised by raw digest in the same chunk (their observations are listed again as they are)."""
        session, src, now, result, lap = self.session, self.src, self.now, self.result, self.lap
        _ = self.listed  # counted before this chunk changes anything
        lap.t = time.perf_counter()  # what happened between chunks (reading the file) is not this ingest's
        batch: list[Observation] = []
        hashes: list[int] = []
        for raw in observations:
            # URLs from ledgers and cameras carry user:password@; credentials belong in the encrypted store.
            if any(isinstance(raw.fields.get(name), str) for name in URI_FIELDS):
                raw = replace(raw, fields=without_url_credentials(raw.fields))
            batch.append(raw)
            hashes.append(hash(raw.key))
        kept: dict[int, Observation] = {}
        if unchanged is None or not len(unchanged[0]):
            earlier = self.seen.contains(np.array(hashes, dtype=np.int64)).tolist()
            for ob, h, dup in zip(batch, hashes, earlier, strict=True):
                if not dup and h not in kept:
                    kept[h] = ob  # duplicates inside one import are the reader's to report; the first one wins
            self.seen.add(list(kept))
        else:
            kept = self._listed_again(batch, hashes, *unchanged)
        stored = repo.stored_observations(session, src.id, [ob.key for ob in kept.values()])

        fresh: list[tuple[Observation, _Encoded]] = []
        changed: list[tuple[Observation, _Encoded, repo.StoredObservation]] = []
        refreshed: list[dict[str, Any]] = []  # unchanged, but read another way (raw digest) or moved
        for ob in kept.values():
            dg = _Encoded.of(ob)
            st = stored.get(ob.key)
            if st is None:
                fresh.append((ob, dg))
            elif st.digest != dg.digest or st.removed:
                changed.append((ob, dg, st))
            else:
                result.observations_unchanged += 1
                line = st.line if ob.line is None else ob.line
                if st.raw_digest != ob.raw_digest or st.line != line:
                    refreshed.append(
                        {
                            "id": st.id,
                            "raw_digest": ob.raw_digest,
                            "raw_spot": ob.raw_spot,
                            "raw_issues": ob.raw_issues,
                            "line": line,
                        }
                    )
            if st is not None and not st.removed:
                self.still_listed += 1
        repo.update_observations(session, refreshed)
        lap("compare")

        # Identity: which camera does each new observation describe?
        keysets = [identity_keys(ob.fields) for ob, _ in fresh]
        matcher = _Matcher(session, keysets)
        new_groups: dict[int, list[tuple[Observation, _Encoded]]] = {}  # negative placeholder id -> observations
        targets: list[int] = []
        for (ob, dg), keys in zip(fresh, keysets, strict=True):
            target = self.pinned.get(ob.key)
            if target is None:
                target = matcher.match(keys, f"{self.source} {ob.key}")
            if target is None:
                target = -(len(new_groups) + 1)
                new_groups[target] = []
            if target < 0:
                new_groups[target].append((ob, dg))
            matcher.remember(target, keys)
            targets.append(target)
        room = MAX_REPORTED_CONFLICTS - len(self.conflicts)
        self.conflicts.extend(matcher.conflicts[: max(0, room)])
        lap("identity")

        # New cameras: merge their observations (usually one) and insert.
        placeholder_ids = list(new_groups)
        merged_new = [
            merge_observations(
                [SourcedRecord(self.source, self.kind, ob.fields, now, ob.extra) for ob, _ in new_groups[p]],
                self.rank,
            )
            for p in placeholder_ids
        ]
        rows = [camera_row(m) for m in merged_new]
        lap("merge")
        _place(rows, self.regions)
        lap("place")
        for row in rows:
            row["created_at"] = row["updated_at"] = now
        real_ids = repo.insert_cameras(session, rows)
        lap("insert_cameras")
        if self.on_created is not None and real_ids:
            self.on_created(real_ids, rows)
            lap("check_quality")
        id_of = dict(zip(placeholder_ids, real_ids, strict=True))
        result.cameras_created += len(real_ids)
        self.created.extend(real_ids)

        # Observations.
        obs_rows = [
            {
                "camera_id": id_of.get(target, target),
                "source_id": src.id,
                "key": ob.key,
                "fields": dg.fields,
                "extra": dg.extra,
                "digest": dg.digest,
                "line": ob.line,
                "raw_digest": ob.raw_digest,
                "raw_spot": ob.raw_spot,
                "raw_issues": ob.raw_issues,
                **_key_columns(ob.fields, keys),
                "first_seen": now,
                "updated_at": now,
                "seen_at": now,
                "removed_at": None,
            }
            for (ob, dg), target, keys in zip(fresh, targets, keysets, strict=True)
        ]
        repo.insert_observations(session, obs_rows)
        lap("insert_observations")
        result.observations_new += len(obs_rows)
        repo.update_observations(
            session,
            [
                {
                    "id": st.id,
                    "fields": dg.fields,
                    "extra": dg.extra,
                    "digest": dg.digest,
                    "line": ob.line,
                    "raw_digest": ob.raw_digest,
                    "raw_spot": ob.raw_spot,
                    "raw_issues": ob.raw_issues,
                    **_key_columns(ob.fields),
                    "updated_at": now,
                    "seen_at": now,
                    "removed_at": None,
                }
                for ob, dg, st in changed
            ],
        )
        result.observations_changed += len(changed)
        self.touched.extend(t for t in targets if t > 0)
        self.touched.extend(st.camera_id for _, _, st in changed)

    def _listed_again(
        self, batch: list[Observation], hashes: list[int], positions: Int64s, lines: Int64s
    ) -> dict[int, Observation]:
        """The chunk's observations to merge (by key hash), after the rows recognised by raw digest: a key's first
        row in the file wins, whether read in full or recognised. Recognised rows that stay are counted unchanged
        and listed again (their line updated where they moved); they need nothing else."""
        known_keys = self._known_keys[positions]
        all_keys = np.concatenate([known_keys, np.array(hashes, dtype=np.int64)])
        all_lines = np.concatenate([lines, np.fromiter((ob.line or 0 for ob in batch), np.int64, len(batch))])
        order = np.argsort(all_lines, kind="stable")
        _, first_at = np.unique(all_keys[order], return_index=True)
        keep = np.zeros(len(all_keys), dtype=bool)
        keep[order[first_at]] = True
        keep &= ~self.seen.contains(all_keys)
        self.seen.add(all_keys[keep])
        n = len(positions)
        stay = keep[:n]
        count = int(stay.sum())
        self.result.observations_unchanged += count
        self.result.unparsed += count
        self.still_listed += count
        stored_lines = self._known_lines[positions]
        moved = stay & (stored_lines != lines)
        if moved.any():
            ids = self._known_ids[positions][moved]
            repo.update_observation_lines(self.session, list(zip(ids.tolist(), lines[moved].tolist(), strict=True)))
        return {h: ob for h, ob, k in zip(hashes, batch, keep[n:].tolist(), strict=True) if k}

    @property
    def listed(self) -> int:
        """What the source listed before this import (live observations): the base of the removal share."""
        if self._listed is None:
            self._listed = repo.count_live_observations(self.session, self.src.id)
        return self._listed

    def finish(self) -> IngestResult:
        """Removals (of a snapshot), then every touched camera merged again from its observations."""
        session, result = self.session, self.result
        self.lap.t = time.perf_counter()
        gone_cameras = array("q")
        if self.snapshot:
            gone_ids: list[int] = []
            # Every live stored observation listed again was counted once (keys are deduplicated): the rest go.
            check_removals(self.source, self.listed - self.still_listed, self.listed, self.max_removal_share)
            if self.still_listed < self.listed:
                for rows in repo.live_observation_keys(session, self.src.id):
                    hashes = np.fromiter((hash(r.key) for r in rows), dtype=np.int64, count=len(rows))
                    for r, seen in zip(rows, self.seen.contains(hashes).tolist(), strict=True):
                        if not seen:
                            gone_ids.append(r.id)
                            gone_cameras.append(r.camera_id)
            # Last-seen of what is listed again is the source's ``listed_at`` (one write, not one per camera);
            # what goes was last seen by the snapshot before this one.
            repo.mark_observations_removed(session, gone_ids, self.now, last_listed=self.src.listed_at)
            self.src.listed_at = self.now
            result.observations_removed = len(gone_ids)
        result.identity_conflicts = self.conflicts
        created = np.unique(_int64s(self.created))
        touched = np.unique(np.concatenate([_int64s(self.touched), _int64s(gone_cameras)]))
        fresh = np.isin(touched, created)
        # A camera created by this import that a later chunk added to is merged again, not counted as updated.
        for ids, counted in ((touched[~fresh], result), (touched[fresh], None)):
            for start in range(0, len(ids), REMERGE_CHUNK):
                part = set(ids[start : start + REMERGE_CHUNK].tolist())
                remerge(session, part, rank=self.rank, regions=self.regions, now=self.now, result=counted)
        result.camera_ids = set(touched.tolist()) | set(created.tolist())
        self.lap("remerge")
        return result


def _known_columns(rows: Sequence[tuple[Any, ...]], set_of: Callable[[str | None], int]) -> tuple[Any, ...]:
    """repo.raw_digest_rows' rows as the columns of KnownRows (plus observation id and line)."""
    raw, oid, line, spot, spot_set, dev_set, key, issues, has_raw = zip(*rows, strict=True)
    n = len(rows)
    return (
        np.array(raw, dtype=np.int64),
        np.array(oid, dtype=np.int64),
        np.array(line, dtype=np.int64),
        np.fromiter(map(hash, key), np.int64, n),
        np.array(dev_set, dtype=np.bool_),
        np.array(spot, dtype=np.int64),
        np.array(spot_set, dtype=np.bool_),
        np.fromiter(map(set_of, issues), np.int64, n),
        np.array(has_raw, dtype=np.bool_),
    )


class _IssueSets(dict[str | None, int]):
    """Issue text -> its number, numbered as first seen (None -> -1; -2 beyond MAX_ISSUE_SETS texts): looked up
    in C for every stored row, numbered in Python once per distinct text."""

    def __init__(self) -> None:
        super().__init__({None: -1})
        self.texts: list[str] = []

    def __missing__(self, text: str | None) -> int:
        if text is None or len(self.texts) >= MAX_ISSUE_SETS:
            return -2
        self[text] = number = len(self.texts)
        self.texts.append(text)
        return number


def _int64s(values: array[int]) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.array(values, dtype=np.int64)


STAGES = ("compare", "identity", "merge", "place", "insert_cameras", "check_quality", "insert_observations", "remerge")


class _Lap:
    """Times the stages of an ingest and reports them as progress (stage n of len(STAGES))."""

    def __init__(self, into: dict[str, float], progress: Callable[[str, int, int], None] | None = None) -> None:
        self.into = into
        self.progress = progress
        self.t = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.into[stage] = round(self.into.get(stage, 0.0) + now - self.t, 3)
        self.t = now
        if self.progress is not None:
            self.progress("merge", STAGES.index(stage) + 1, len(STAGES))


@dataclass(frozen=True, slots=True)
class _Encoded:
    """An observation serialised once: stored as is, and hashed to tell whether it changed."""

    fields: str
    extra: str | None
    digest: str

    @classmethod
    def of(cls, ob: Observation) -> _Encoded:
        fields = to_json({k: v for k, v in ob.fields.items() if v is not None}) or "{}"
        extra = to_json(ob.extra)
        return cls(fields, extra, digest(fields, extra))


def _place(rows: list[dict[str, Any]], regions: RegionContext) -> None:
    for row, placement in zip(rows, regions.place_many(rows), strict=True):
        row["region_by_position"] = placement.by_position
        row["region_by_code"] = placement.by_code
        row["region_code"] = placement.effective


COMPARED = (*FIELD_NAMES, "extra", "conflicts", "region_code", "region_by_position", "region_by_code", "removed_at")


def remerge(
    session: Session,
    camera_ids: set[int],
    *,
    rank: Rank,
    regions: RegionContext,
    now: datetime,
    result: IngestResult | None = None,
) -> list[int]:
    """Recompute the records of these cameras from their live observations; returns the ids that changed.

    A camera that no source lists any more keeps its last record and is marked removed.
    """
    if not camera_ids:
        return []
    current = repo.camera_rows(session, camera_ids)
    live = repo.live_observations(session, camera_ids)
    ids = sorted(c for c in camera_ids if c in current)
    updates: list[dict[str, Any]] = []
    for cid in ids:
        obs = live.get(cid, [])
        if obs:
            merged = merge_observations(
                [SourcedRecord(o.source, o.kind, o.fields, o.updated_at, o.extra) for o in obs], rank
            )
            row = camera_row(merged)
            row["removed_at"] = None
        else:
            old = current[cid]
            row = {name: old[name] for name in (*FIELD_NAMES, "extra", "conflicts")}
            row["removed_at"] = old["removed_at"] or now
        updates.append(row)
    _place(updates, regions)
    changed_rows = []
    for cid, row in zip(ids, updates, strict=True):
        old = current[cid]
        if all(_same(old.get(c), row.get(c)) for c in COMPARED):
            continue
        if result is not None:
            if row["removed_at"] is not None and old["removed_at"] is None:
                result.cameras_removed += 1
            elif row["removed_at"] is None and old["removed_at"] is not None:
                result.cameras_restored += 1
            else:
                result.cameras_updated += 1
        changed_rows.append({"_id": cid, **row, "updated_at": now})
    repo.update_cameras(session, changed_rows)
    return [r["_id"] for r in changed_rows]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, datetime) and isinstance(b, datetime):
        return True  # removal time: only its presence matters for change detection
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) < 1e-12
    return bool(a == b)


def load_region_context(session: Session) -> RegionContext:
    from shapely import wkb

    from vms.geo.coords import RegionIndex

    names = repo.region_codes_and_names(session)
    polygons = repo.polygon_regions(session)
    index = RegionIndex((code, wkb.loads(blob)) for code, blob in polygons) if polygons else None
    return RegionContext(codes=frozenset(names), names=names, index=index)


def reassign_regions(session: Session, regions: RegionContext, now: datetime | None = None) -> int:
    """Place every camera again (after regions change). Returns how many changed region."""
    now = now or utcnow()
    rows = repo.list_cameras(
        session,
        repo.CameraFilter(include_removed=True),
        columns=[
            "id",
            "longitude",
            "latitude",
            "civil_code",
            "device_id",
            "region_code",
            "region_by_position",
            "region_by_code",
        ],
    )
    placements = regions.place_many(rows)
    updates = []
    for row, p in zip(rows, placements, strict=True):
        new = (p.effective, p.by_position, p.by_code)
        if new != (row["region_code"], row["region_by_position"], row["region_by_code"]):
            updates.append(
                {
                    "_id": row["id"],
                    "region_code": p.effective,
                    "region_by_position": p.by_position,
                    "region_by_code": p.by_code,
                    "updated_at": now,
                }
            )
    repo.update_cameras(session, updates)
    return len(updates)
