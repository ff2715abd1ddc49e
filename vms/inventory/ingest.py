"""Use cases of the unified inventory: ingest observations from a source, edit, allocate IDs, place.

Every function takes an open Session and leaves commit or rollback to the caller (a dry run rolls back).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from vms.catalog.domain import Observation, SourceKind, identity_keys, without_url_credentials
from vms.catalog.fields import FIELD_NAMES, IDENTITY_ORDER
from vms.errors import Conflict
from vms.geo.placement import RegionContext
from vms.inventory.merge import Merged, Rank, SourcedRecord, merge_observations
from vms.store import repository as repo
from vms.store.models import utcnow

log = logging.getLogger(__name__)

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


def to_json(value: Mapping[str, Any] | None) -> str | None:
    if not value:
        return None
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


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


def _key_columns(fields: Mapping[str, Any]) -> dict[str, str | None]:
    keys = identity_keys(fields)
    return {f"k_{kind}": keys.get(kind) for kind in IDENTITY_ORDER}


def camera_row(merged: Merged) -> dict[str, Any]:
    row: dict[str, Any] = {name: merged.fields.get(name) for name in FIELD_NAMES}
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
    """Merge one source's observations into the inventory.

    ``snapshot``: the observations are everything the source lists now, so records it no longer lists are
    marked removed (never deleted). ``pinned`` maps observation keys to the camera they describe (API edits).
    ``max_removal_share``: a snapshot that would mark more than this share of the source's live observations
    removed raises RemovalRefused (the caller's transaction then changes nothing); None: no limit.
    """
    now = now or utcnow()
    result = IngestResult(source=source)
    lap = _Lap(result.timings, progress)
    src = repo.get_or_create_source(session, source, kind)
    src.last_import_at = now
    stored = repo.source_observations(session, src.id)

    seen: set[str] = set()
    fresh: list[tuple[Observation, _Encoded]] = []
    changed: list[tuple[Observation, _Encoded, repo.StoredObservation]] = []
    for raw in observations:
        # URLs from ledgers and cameras carry user:password@; credentials belong in the encrypted store.
        ob = replace(raw, fields=without_url_credentials(raw.fields))
        if ob.key in seen:
            continue  # duplicates inside one batch are the reader's to report; first one wins
        seen.add(ob.key)
        dg = _Encoded.of(ob)
        st = stored.get(ob.key)
        if st is None:
            fresh.append((ob, dg))
        elif st.digest != dg.digest or st.removed:
            changed.append((ob, dg, st))
        else:
            result.observations_unchanged += 1
    if snapshot:
        listed = sum(1 for st in stored.values() if not st.removed)
        removing = sum(1 for k, st in stored.items() if not st.removed and k not in seen)
        check_removals(source, removing, listed, max_removal_share)
    repo.touch_observations(session, src.id, now)
    lap("compare")

    # Identity: which camera does each new observation describe?
    keysets = [identity_keys(ob.fields) for ob, _ in fresh]
    matcher = _Matcher(session, keysets)
    new_groups: dict[int, list[tuple[Observation, _Encoded]]] = {}  # negative placeholder id -> observations
    targets: list[int] = []
    for (ob, dg), keys in zip(fresh, keysets, strict=True):
        target = (pinned or {}).get(ob.key)
        if target is None:
            target = matcher.match(keys, f"{source} {ob.key}")
        if target is None:
            target = -(len(new_groups) + 1)
            new_groups[target] = []
        if target < 0:
            new_groups[target].append((ob, dg))
        matcher.remember(target, keys)
        targets.append(target)
    result.identity_conflicts = matcher.conflicts
    lap("identity")

    # New cameras: merge their observations (usually one) and insert.
    placeholder_ids = list(new_groups)
    merged_new = [
        merge_observations([SourcedRecord(source, kind, ob.fields, now, ob.extra) for ob, _ in new_groups[p]], rank)
        for p in placeholder_ids
    ]
    rows = [camera_row(m) for m in merged_new]
    lap("merge")
    _place(rows, regions)
    lap("place")
    for row in rows:
        row["created_at"] = row["updated_at"] = now
    real_ids = repo.insert_cameras(session, rows)
    lap("insert_cameras")
    id_of = dict(zip(placeholder_ids, real_ids, strict=True))
    result.cameras_created = len(real_ids)

    # Observations.
    obs_rows = []
    for (ob, dg), target in zip(fresh, targets, strict=True):
        obs_rows.append(
            {
                "camera_id": id_of.get(target, target),
                "source_id": src.id,
                "key": ob.key,
                "fields": dg.fields,
                "extra": dg.extra,
                "digest": dg.digest,
                "line": ob.line,
                **_key_columns(ob.fields),
                "first_seen": now,
                "updated_at": now,
                "seen_at": now,
                "removed_at": None,
            }
        )
    repo.insert_observations(session, obs_rows)
    lap("insert_observations")
    result.observations_new = len(obs_rows)
    repo.update_observations(
        session,
        [
            {
                "id": st.id,
                "fields": dg.fields,
                "extra": dg.extra,
                "digest": dg.digest,
                "line": ob.line,
                **_key_columns(ob.fields),
                "updated_at": now,
                "seen_at": now,
                "removed_at": None,
            }
            for ob, dg, st in changed
        ],
    )
    result.observations_changed = len(changed)

    touched = {t for t in targets if t > 0} | {st.camera_id for _, _, st in changed}
    if snapshot:
        gone = [(k, st) for k, st in stored.items() if k not in seen and not st.removed]
        repo.mark_observations_removed(session, [st.id for _, st in gone], now)
        result.observations_removed = len(gone)
        touched |= {st.camera_id for _, st in gone}

    remerge(session, touched, rank=rank, regions=regions, now=now, result=result)
    result.camera_ids = touched | set(real_ids)
    lap("remerge")
    return result


STAGES = ("compare", "identity", "merge", "place", "insert_cameras", "insert_observations", "remerge")


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
