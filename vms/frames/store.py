"""Storage of frame samples: the JPEG files (addressed by content), their rows, sample sets, each camera's reference
frame, retention, and the intact rate.

A sample's JPEG is ``<data_dir>/samples/<sha256[:2]>/<sha256>.jpg``: written once (a temporary file renamed into
place, so a reader never sees half a file), shared by every sample with the same bytes (a frozen camera's samples,
a snapshot served twice), removed by ``prune`` once no row refers to it. Thumbnails (for the freeze check) and
reference maps (for the occlusion check) are small numpy arrays kept in the rows in the ``.npy`` format (``pack``,
``unpack``: shape and dtype included, never pickled objects).

The intact rate (DOMAIN.md section 4) is the share of registered cameras that are online (health status ON) and
whose latest sample has no video-quality fault; a camera never sampled is not intact (nothing shows its video).
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import importlib
import io
import json
import math
import os
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import ARRAY, Connection, Integer, any_, bindparam, delete, func, insert, or_, select
from sqlalchemy.exc import IntegrityError

from vms.errors import Conflict, NotFound, ValidationFailed
from vms.inventory.service import Inventory
from vms.store import repository as repo
from vms.store.db import private_dir
from vms.store.models import Region, camera_references, cameras, frame_samples, health_latest, sample_sets, utcnow

__all__ = [
    "DuplicateSampleSet",
    "IntactCounts",
    "IntactRate",
    "PruneReport",
    "SampleRow",
    "SampleSet",
    "SampleSets",
    "SampleStore",
    "intact_rate",
    "pack",
    "unpack",
]

CHUNK = 5000  # ids per IN list (SQLite allows 32,766 variables)
FILE_GRACE_S = 600.0  # prune leaves a file written or reused this recently: a sweep may be about to add its row
SOURCES = ("rtsp", "snapshot")
_SHA = re.compile(r"[0-9a-f]{64}")
_SET_NAME_MAX = 128
_FAULTS_MAX = 255
_NPY_MAGIC = b"\x93NUMPY"

Array = npt.NDArray[Any]


class DuplicateSampleSet(Conflict, ValueError):
    """A sample set of that name exists (names are unique: a trial names its set)."""


class InvalidSampleSet(ValidationFailed, ValueError):
    pass


def utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes (stored as UTC); a naive time given to us is taken as UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def pack(array: Array) -> builtins.bytes:
    """A numpy array as bytes (``.npy``: shape and dtype with the data), for a thumbnail or a reference map."""
    array = np.asarray(array)
    if array.dtype == object:
        raise ValueError("only numeric arrays are stored")
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


_HEADERS: dict[builtins.bytes, tuple[np.dtype[Any], tuple[int, ...], bool]] = {}


def unpack(data: builtins.bytes) -> Array:
    """The array ``pack`` made. The few distinct headers (shape and dtype) are parsed once: np.load parses each
    anew (85 us, most of reading the history of 500 cameras)."""
    data = builtins.bytes(data)
    if data[:6] != _NPY_MAGIC or len(data) < 10:
        raise ValueError("not a packed array")
    start = 10 if data[6] == 1 else 12
    end = start + int.from_bytes(data[8:start], "little")
    header = data[:end]
    info = _HEADERS.get(header)
    if info is None:
        array: Array = np.load(io.BytesIO(data), allow_pickle=False)
        if len(_HEADERS) < 256:
            _HEADERS[header] = (array.dtype, array.shape, bool(np.isfortran(array)))
        return array
    dtype, shape, fortran = info
    count = math.prod(shape)
    return np.frombuffer(data, dtype, count=count, offset=end).reshape(shape, order="F" if fortran else "C").copy()


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _ids_in(conn: Connection, column: Any, ids: Sequence[int]) -> Any:
    """``column IN ids``; on PostgreSQL ``= ANY(one array)`` (one parameter, not thousands to plan)."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam("ids", builtins.list(ids), type_=ARRAY(Integer)))
    return column.in_(ids)


@dataclass(frozen=True, slots=True)
class SampleRow:
    """One sampled frame: its JPEG (by content address) and what was measured on it."""

    camera_id: int
    taken_at: dt.datetime
    source: str  # "rtsp" | "snapshot"
    width: int
    height: int
    codec: str | None
    latency_ms: float | None
    bytes: int  # the JPEG's size
    sha256: str  # the JPEG's content address (SampleStore.write_jpeg)
    thumb: builtins.bytes | Array | None  # the thumbnail: packed (pack) or the array itself
    faults: tuple[str, ...] = ()  # video-quality faults; empty = passes
    metrics: Mapping[str, Any] = field(default_factory=dict)
    set_id: int | None = None
    sweep_id: int | None = None
    id: int | None = None

    @property
    def thumbnail(self) -> Array | None:
        if self.thumb is None or isinstance(self.thumb, np.ndarray):
            return self.thumb
        return unpack(self.thumb)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the thumbnail, JSON-ready."""
        return {
            "id": self.id,
            "camera_id": self.camera_id,
            "taken_at": self.taken_at.isoformat(),
            "source": self.source,
            "width": self.width,
            "height": self.height,
            "codec": self.codec,
            "latency_ms": self.latency_ms,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "faults": builtins.list(self.faults),
            "metrics": dict(self.metrics),
            "set_id": self.set_id,
            "sweep_id": self.sweep_id,
        }


def _row_values(row: SampleRow) -> dict[str, Any]:
    if row.source not in SOURCES:
        raise ValueError(f"sample source {row.source!r}: expected one of {', '.join(SOURCES)}")
    if not _SHA.fullmatch(row.sha256):
        raise ValueError(f"sample sha256 {row.sha256!r}: expected 64 lower-case hex digits")
    faults = ",".join(row.faults)
    if len(faults) > _FAULTS_MAX or any("," in f for f in row.faults):
        raise ValueError(f"sample faults {row.faults!r}: codes without commas, {_FAULTS_MAX} characters in all")
    thumb = row.thumb
    if thumb is not None and not isinstance(thumb, np.ndarray) and builtins.bytes(thumb[:6]) != _NPY_MAGIC:
        raise ValueError("sample thumb: give the array or pack(array), not raw bytes (they lose the shape)")
    return {
        "camera_id": row.camera_id,
        "set_id": row.set_id,
        "sweep_id": row.sweep_id,
        "taken_at": utc(row.taken_at),
        "source": row.source,
        "width": int(row.width),
        "height": int(row.height),
        "codec": row.codec,
        "latency_ms": None if row.latency_ms is None else float(row.latency_ms),
        "bytes": int(row.bytes),
        "sha256": row.sha256,
        "thumb": pack(thumb) if isinstance(thumb, np.ndarray) else thumb,
        "faults": faults,
        "metrics": json.loads(json.dumps(dict(row.metrics), default=float)) if row.metrics else None,
    }


def _sample(r: Any) -> SampleRow:
    return SampleRow(
        id=r.id,
        camera_id=r.camera_id,
        set_id=r.set_id,
        sweep_id=r.sweep_id,
        taken_at=utc(r.taken_at),
        source=r.source,
        width=r.width,
        height=r.height,
        codec=r.codec,
        latency_ms=r.latency_ms,
        bytes=r.bytes,
        sha256=r.sha256,
        thumb=r.thumb,
        faults=tuple(f for f in (r.faults or "").split(",") if f),
        metrics=r.metrics or {},
    )


def _newest_first() -> tuple[Any, Any]:
    return frame_samples.c.taken_at.desc(), frame_samples.c.id.desc()


def _ranked(conn: Connection, camera_ids: Sequence[int] | None, *columns: Any, where: Any = None) -> Any:
    """frame_samples (optionally of some cameras, those matching ``where``) with ``rn``: 1 for each camera's newest
    sample, 2, ..."""
    fs = frame_samples
    rn = func.row_number().over(partition_by=fs.c.camera_id, order_by=_newest_first()).label("rn")
    stmt = select(*(columns or (fs,)), rn)
    if camera_ids is not None:
        stmt = stmt.where(_ids_in(conn, fs.c.camera_id, camera_ids))
    if where is not None:
        stmt = stmt.where(where)
    return stmt.subquery()


@dataclass(frozen=True, slots=True)
class PruneReport:
    rows: int  # sample rows deleted
    files: int  # JPEG files deleted (no row refers to them any more)
    bytes_freed: int
    shared: int  # files of deleted rows kept: another row still refers to them
    recent: int  # unreferenced files kept because they were written or reused within the grace period
    cameras: int  # cameras that lost samples
    missing: int = 0  # files already gone
    orphans: int = 0  # files no row referred to, found by walking the folder (prune(orphans=True))

    def to_dict(self) -> dict[str, int]:
        return {
            "orphans": self.orphans,
            "rows": self.rows,
            "files": self.files,
            "bytes_freed": self.bytes_freed,
            "shared": self.shared,
            "recent": self.recent,
            "cameras": self.cameras,
            "missing": self.missing,
        }


class SampleStore:
    """Sample files and rows of one inventory's database and data directory."""

    def __init__(self, inv: Inventory) -> None:
        self.inventory = inv
        self.settings = inv.settings
        self.root = inv.settings.data_dir / "samples"

    # --- files -----------------------------------------------------------------------------------------

    def path_of(self, sha256: str) -> Path:
        if not _SHA.fullmatch(sha256):
            raise ValueError(f"not a sample address: {sha256!r}")
        return self.root / sha256[:2] / f"{sha256}.jpg"

    def write_jpeg(self, jpeg: builtins.bytes) -> str:
        """Store a JPEG under its SHA-256 (hex, returned); the same bytes again reuse the file (its time is renewed,
        so a prune running meanwhile leaves it for the row about to be added)."""
        if len(jpeg) < 4 or builtins.bytes(jpeg[:2]) != b"\xff\xd8":
            raise ValueError("not a JPEG (no start-of-image marker)")
        sha = hashlib.sha256(jpeg).hexdigest()
        path = self.path_of(sha)
        try:
            os.utime(path)
            return sha
        except FileNotFoundError:
            pass
        if not path.parent.is_dir():
            if not self.root.is_dir():
                private_dir(self.settings.data_dir)
                private_dir(self.root)
            path.parent.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")  # 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(jpeg)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def read_jpeg(self, sha256: str) -> builtins.bytes:
        try:
            return self.path_of(sha256).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"sample file {sha256[:12]}... is gone (pruned?)") from None

    def read_image(self, sha256: str) -> Array:
        """The sample decoded: BGR uint8 (H, W, 3)."""
        import cv2

        image = cv2.imdecode(np.frombuffer(self.read_jpeg(sha256), np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"sample file {sha256[:12]}... does not decode")
        return np.asarray(image)

    # --- rows ------------------------------------------------------------------------------------------

    def add(self, rows: Sequence[SampleRow]) -> builtins.list[int]:
        """Store a batch of samples in one transaction; their ids, in the order given. A camera that does not exist
        fails the batch (NotFound) before anything is written."""
        if not rows:
            return []
        values = [_row_values(r) for r in rows]
        wanted = sorted({v["camera_id"] for v in values})
        with self.inventory.session() as s:
            conn = s.connection()
            known: set[int] = set()
            for part in _chunks(wanted):
                known.update(conn.scalars(select(cameras.c.id).where(_ids_in(conn, cameras.c.id, part))))
            unknown = [cid for cid in wanted if cid not in known]
            if unknown:
                raise NotFound(f"no camera with id {', '.join(map(str, unknown[:5]))}")
            ids: builtins.list[int] = []
            stmt = insert(frame_samples).returning(frame_samples.c.id, sort_by_parameter_order=True)
            for part in _chunks(values, 1000):
                ids.extend(int(i) for i in conn.scalars(stmt, builtins.list(part)))
        return ids

    def get(self, sample_id: int) -> SampleRow | None:
        with self.inventory.session(write=False) as s:
            r = s.execute(select(frame_samples).where(frame_samples.c.id == sample_id)).first()
        return _sample(r) if r is not None else None

    def history(self, camera_ids: Sequence[int], n: int) -> dict[int, builtins.list[Array]]:
        """The thumbnails of each camera's newest ``n`` samples that have one, newest first (for the freeze check;
        cameras without any are left out). One query (per 5,000 cameras)."""
        out: dict[int, builtins.list[Array]] = {}
        if n <= 0 or not camera_ids:
            return out
        fs = frame_samples
        with self.inventory.session(write=False) as s:
            conn = s.connection()
            for part in _chunks(sorted(set(camera_ids))):
                ranked = _ranked(conn, part, fs.c.camera_id, fs.c.thumb, where=fs.c.thumb.is_not(None))
                rows = conn.execute(
                    select(ranked.c.camera_id, ranked.c.thumb)
                    .where(ranked.c.rn <= n)
                    .order_by(ranked.c.camera_id, ranked.c.rn)
                )
                for cid, thumb in rows:
                    out.setdefault(cid, []).append(unpack(thumb))
        return out

    def latest(self, camera_ids: Sequence[int]) -> dict[int, SampleRow]:
        """Each camera's newest sample."""
        out: dict[int, SampleRow] = {}
        with self.inventory.session(write=False) as s:
            conn = s.connection()
            for part in _chunks(sorted(set(camera_ids))):
                ranked = _ranked(conn, part)
                for r in conn.execute(select(ranked).where(ranked.c.rn == 1)):
                    out[r.camera_id] = _sample(r)
        return out

    # --- references ------------------------------------------------------------------------------------

    def references(self, camera_ids: Sequence[int]) -> dict[int, Array]:
        """Each camera's reference map (for the occlusion check), for the cameras that have one."""
        ref = camera_references
        out: dict[int, Array] = {}
        with self.inventory.session(write=False) as s:
            conn = s.connection()
            for part in _chunks(sorted(set(camera_ids))):
                for cid, data in conn.execute(
                    select(ref.c.camera_id, ref.c.ref).where(_ids_in(conn, ref.c.camera_id, part))
                ):
                    out[cid] = unpack(data)
        return out

    def reference_info(self, camera_id: int) -> dict[str, Any] | None:
        ref = camera_references
        with self.inventory.session(write=False) as s:
            r = s.execute(
                select(ref.c.sample_id, ref.c.set_at, ref.c.width, ref.c.height).where(ref.c.camera_id == camera_id)
            ).first()
        if r is None:
            return None
        return {"sample_id": r.sample_id, "set_at": utc(r.set_at), "width": r.width, "height": r.height}

    def set_reference(
        self,
        camera_id: int,
        sample_id: int | None = None,
        *,
        ref: Array | None = None,
        actor: str | None = None,
    ) -> int:
        """Make a sample the camera's reference frame: ``sample_id``, else its latest fault-free sample. ``ref`` is
        the reference map; without it it is made from the sample's JPEG (vms.frames.vqd.reference_of). Returns the
        sample's id. Audited when an ``actor`` is given (an operator's choice, ``vms vqd --set-reference``); a
        sweep setting a camera's first reference passes none."""
        fs = frame_samples
        with self.inventory.session(write=False) as s:
            stmt = select(fs).where(fs.c.camera_id == camera_id)
            if sample_id is not None:
                stmt = stmt.where(fs.c.id == sample_id)
            else:
                stmt = stmt.where(fs.c.faults == "").order_by(*_newest_first()).limit(1)
            r = s.execute(stmt).first()
        if r is None:
            if sample_id is not None:
                raise NotFound(f"camera {camera_id} has no sample {sample_id}")
            raise NotFound(f"camera {camera_id} has no fault-free sample to take as its reference")
        sample = _sample(r)
        if ref is None:
            vqd = importlib.import_module("vms.frames.vqd")
            ref = np.asarray(vqd.reference_of(self.read_image(sample.sha256)))
        data = pack(ref)
        with self.inventory.session() as s:
            conn = s.connection()
            conn.execute(delete(camera_references).where(camera_references.c.camera_id == camera_id))
            conn.execute(
                insert(camera_references).values(
                    camera_id=camera_id,
                    sample_id=sample.id,
                    set_at=utcnow(),
                    ref=data,
                    width=sample.width,
                    height=sample.height,
                )
            )
            if actor is not None:
                repo.audit(
                    s, actor=actor, action="sample.reference", target=str(camera_id), details={"sample_id": sample.id}
                )
        assert sample.id is not None
        return sample.id

    # --- retention -------------------------------------------------------------------------------------

    def prune(
        self,
        *,
        keep_per_camera: int | None = None,
        max_age_days: float | None = None,
        now: dt.datetime | None = None,
        file_grace_s: float = FILE_GRACE_S,
        orphans: bool = False,
        actor: str | None = "cli",
    ) -> PruneReport:
        """Delete the samples beyond each camera's newest ``keep_per_camera`` and those older than ``max_age_days``
        (defaults: VMS_SAMPLES_KEEP_PER_CAMERA, VMS_SAMPLES_MAX_AGE_DAYS), except a camera's reference sample; then
        the files no row refers to any more (a file another row shares stays). A file written or reused within
        ``file_grace_s`` stays (a sweep may be about to add its row). With ``orphans``, also every other file of the
        samples folder no row refers to (left by a sweep that stopped between writing a JPEG and adding its row),
        and stray temporary files: a walk of the whole folder."""
        keep = self.settings.samples_keep_per_camera if keep_per_camera is None else keep_per_camera
        age = self.settings.samples_max_age_days if max_age_days is None else max_age_days
        if keep < 0 or age < 0:
            raise ValueError("keep_per_camera and max_age_days must not be negative")
        cutoff = utc(now or utcnow()) - dt.timedelta(days=age)
        fs, refs = frame_samples, camera_references
        gone_shas: dict[str, int] = {}
        still_used: set[str] = set()
        with self.inventory.session() as s:
            conn = s.connection()
            ranked = _ranked(conn, None, fs.c.id, fs.c.camera_id, fs.c.sha256, fs.c.taken_at)
            victims = conn.execute(
                select(ranked.c.id, ranked.c.camera_id, ranked.c.sha256).where(
                    or_(ranked.c.rn > keep, ranked.c.taken_at < cutoff),
                    ranked.c.id.not_in(select(refs.c.sample_id).where(refs.c.sample_id.is_not(None))),
                )
            ).all()
            ids = [v.id for v in victims]
            for part in _chunks(ids):
                conn.execute(delete(fs).where(fs.c.id.in_(part)))
            for v in victims:
                gone_shas[v.sha256] = gone_shas.get(v.sha256, 0) + 1
            shas = sorted(gone_shas)
            for part in _chunks(shas):
                still_used.update(conn.scalars(select(fs.c.sha256).where(fs.c.sha256.in_(part)).distinct()))
            camera_n = len({v.camera_id for v in victims})
            if actor is not None and ids:
                repo.audit(
                    s,
                    actor=actor,
                    action="samples.prune",
                    details={"rows": len(ids), "keep_per_camera": keep, "max_age_days": age},
                )
        limit = time.time() - file_grace_s
        files, freed, recent, missing = self._remove([sha for sha in shas if sha not in still_used], limit)
        orphan_n = 0
        if orphans:
            orphan_n, orphan_bytes, orphan_recent = self._remove_orphans(limit)
            freed += orphan_bytes
            recent += orphan_recent
        return PruneReport(
            rows=len(ids),
            files=files,
            bytes_freed=freed,
            shared=len(still_used),
            recent=recent,
            cameras=camera_n,
            missing=missing,
            orphans=orphan_n,
        )

    def _remove(self, shas: Sequence[str], limit: float) -> tuple[int, int, int, int]:
        """Unlink these files unless touched after ``limit`` (epoch s): (removed, bytes, kept as recent, missing)."""
        files = freed = recent = missing = 0
        for sha in shas:
            path = self.path_of(sha)
            try:
                st = path.stat()
                if st.st_mtime > limit:
                    recent += 1
                    continue
                path.unlink()
            except FileNotFoundError:
                missing += 1
                continue
            files += 1
            freed += st.st_size
        return files, freed, recent, missing

    def _remove_orphans(self, limit: float) -> tuple[int, int, int]:
        """Files of the samples folder no row refers to, one sub-folder at a time: (removed, bytes, kept as recent)."""
        removed = freed = recent = 0
        if not self.root.is_dir():
            return 0, 0, 0
        fs = frame_samples
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and len(p.name) == 2):
            shas: builtins.list[str] = []
            for path in folder.iterdir():
                if path.suffix == ".jpg" and _SHA.fullmatch(path.stem):
                    shas.append(path.stem)
                elif path.name.startswith(".") and path.name.endswith(".tmp"):  # a write that never finished
                    try:
                        if path.stat().st_mtime <= limit:
                            path.unlink()
                    except FileNotFoundError:
                        pass
            used: set[str] = set()
            with self.inventory.session(write=False) as s:
                for part in _chunks(shas):
                    used.update(s.scalars(select(fs.c.sha256).where(fs.c.sha256.in_(part)).distinct()))
            n, b, r, _ = self._remove([sha for sha in shas if sha not in used], limit)
            removed, freed, recent = removed + n, freed + b, recent + r
        return removed, freed, recent

    def list(
        self, camera_id: int | None = None, set_name: str | None = None, limit: int = 50
    ) -> builtins.list[SampleRow]:
        """Samples newest first, of one camera and/or one sample set."""
        fs = frame_samples
        stmt = select(fs).order_by(*_newest_first()).limit(max(0, limit))
        if camera_id is not None:
            stmt = stmt.where(fs.c.camera_id == camera_id)
        with self.inventory.session(write=False) as s:
            if set_name is not None:
                set_id = s.scalar(select(sample_sets.c.id).where(sample_sets.c.name == set_name))
                if set_id is None:
                    raise NotFound(f"no sample set named {set_name!r}")
                stmt = stmt.where(fs.c.set_id == set_id)
            return [_sample(r) for r in s.execute(stmt)]


# --- sample sets -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SampleSet:
    id: int
    name: str
    created_at: dt.datetime
    created_by: str
    settings: Mapping[str, Any]
    camera_ids: tuple[int, ...]
    notes: str | None = None
    samples: int = 0  # samples stored in it now

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "settings": dict(self.settings),
            "camera_ids": builtins.list(self.camera_ids),
            "notes": self.notes,
            "samples": self.samples,
        }


class SampleSets:
    """Named records of which cameras were sampled, when and with which settings, so that a trial can be repeated."""

    def __init__(self, inv: Inventory) -> None:
        self.inventory = inv

    def create(
        self,
        name: str,
        settings: Mapping[str, Any],
        camera_ids: Sequence[int],
        *,
        notes: str | None = None,
        actor: str = "cli",
    ) -> SampleSet:
        name = name.strip()
        if not name or len(name) > _SET_NAME_MAX:
            raise InvalidSampleSet(f"a sample set needs a name of 1 to {_SET_NAME_MAX} characters")
        try:
            stored_settings = json.loads(json.dumps(dict(settings)))
        except (TypeError, ValueError) as exc:
            raise InvalidSampleSet(f"sample set settings must be JSON values: {exc}") from None
        ids = [int(c) for c in camera_ids]
        dup = DuplicateSampleSet(f"a sample set named {name!r} exists; choose another name")
        try:
            with self.inventory.session() as s:
                if s.scalar(select(sample_sets.c.id).where(sample_sets.c.name == name)) is not None:
                    raise dup
                conn = s.connection()
                new_id = conn.scalar(
                    insert(sample_sets)
                    .values(
                        name=name,
                        created_at=utcnow(),
                        created_by=actor,
                        settings=stored_settings,
                        camera_ids=ids,
                        notes=notes,
                    )
                    .returning(sample_sets.c.id)
                )
                repo.audit(
                    s,
                    actor=actor,
                    action="sampleset.create",
                    target=name,
                    details={"cameras": len(ids), "settings": stored_settings},
                )
        except IntegrityError:  # another writer took the name meanwhile
            raise dup from None
        found = self.get(name)
        assert found is not None and found.id == new_id
        return found

    def _select(self) -> Any:
        n = (
            select(func.count())
            .where(frame_samples.c.set_id == sample_sets.c.id)
            .correlate(sample_sets)
            .scalar_subquery()
            .label("samples")
        )
        return select(sample_sets, n)

    @staticmethod
    def _from(r: Any) -> SampleSet:
        return SampleSet(
            id=r.id,
            name=r.name,
            created_at=utc(r.created_at),
            created_by=r.created_by,
            settings=r.settings or {},
            camera_ids=tuple(r.camera_ids or ()),
            notes=r.notes,
            samples=int(r.samples or 0),
        )

    def get(self, name: str) -> SampleSet | None:
        with self.inventory.session(write=False) as s:
            r = s.execute(self._select().where(sample_sets.c.name == name.strip())).first()
        return self._from(r) if r is not None else None

    def list(self) -> builtins.list[SampleSet]:
        """Every sample set, newest first."""
        with self.inventory.session(write=False) as s:
            rows = s.execute(self._select().order_by(sample_sets.c.created_at.desc(), sample_sets.c.id.desc()))
            return [self._from(r) for r in rows]


# --- the intact rate ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntactCounts:
    registered: int  # cameras in the inventory (not removed)
    online: int  # of those, health status ON
    sampled: int  # of those, with a stored sample
    intact: int  # online, and the latest sample has no video-quality fault

    @property
    def rate(self) -> float | None:
        return self.intact / self.registered if self.registered else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "registered": self.registered,
            "online": self.online,
            "sampled": self.sampled,
            "intact": self.intact,
            "rate": self.rate,
        }


@dataclass(frozen=True, slots=True)
class IntactRate(IntactCounts):
    """The counts (and rate) of IntactCounts, with the fault tally and each region's counts."""

    faults: dict[str, int]  # cameras whose latest sample shows each fault
    by_region: dict[str, IntactCounts]  # each region (with its sub-regions) that has cameras

    def to_dict(self) -> dict[str, Any]:
        return {
            **IntactCounts.to_dict(self),
            "faults": dict(self.faults),
            "by_region": {code: c.to_dict() for code, c in self.by_region.items()},
        }


def intact_rate(inv: Inventory, *, region: str | None = None) -> IntactRate:
    """Cameras online (health status ON) whose latest sample has no fault, over the registered cameras; of a
    region with its sub-regions, or all. One query: cameras grouped by region code, status and latest faults (the
    latest sample found through the (camera_id, taken_at) index), rolled up into each region's ancestors here."""
    fs = frame_samples
    latest_faults = (
        select(fs.c.faults)
        .where(fs.c.camera_id == cameras.c.id)
        .order_by(*_newest_first())
        .limit(1)
        .correlate(cameras)
        .scalar_subquery()
    )
    inner = (
        select(
            cameras.c.region_code.label("region"),
            health_latest.c.status.label("status"),
            latest_faults.label("faults"),
        )
        .select_from(cameras.outerjoin(health_latest, health_latest.c.camera_id == cameras.c.id))
        .where(cameras.c.removed_at.is_(None))
    )
    if region:
        inner = inner.where(
            or_(cameras.c.region_code == region, cameras.c.region_code.startswith(region, autoescape=True))
        )
    sub = inner.subquery()
    stmt = select(sub.c.region, sub.c.status, sub.c.faults, func.count()).group_by(
        sub.c.region, sub.c.status, sub.c.faults
    )
    with inv.session(write=False) as s:
        groups = s.execute(stmt).all()
        known_regions = set(s.scalars(select(Region.code)))
    totals = [0, 0, 0, 0]
    per_code: dict[str, builtins.list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    faults: dict[str, int] = defaultdict(int)
    for code, status, fault_text, n in groups:
        n = int(n)
        online = status == "ON"
        sampled = fault_text is not None
        intact = online and fault_text == ""
        add = (n, n * online, n * sampled, n * intact)
        for i, v in enumerate(add):
            totals[i] += v
            if code is not None:
                per_code[code][i] += v
        for fault in (fault_text or "").split(","):
            if fault:
                faults[fault] += n
    codes = known_regions | set(per_code)
    if region:
        codes = {c for c in codes if c.startswith(region)}
    by_region: dict[str, builtins.list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for code, counts in per_code.items():
        for r in codes:
            if code.startswith(r):
                for i, v in enumerate(counts):
                    by_region[r][i] += v
    return IntactRate(
        registered=totals[0],
        online=totals[1],
        sampled=totals[2],
        intact=totals[3],
        faults=dict(sorted(faults.items())),
        by_region={r: IntactCounts(*c) for r, c in sorted(by_region.items())},
    )
