"""Coverage statistics: counts, the four indicators, density, covered area and gaps (issue 10 point 3).

Fast at 100,000 cameras because the expensive parts are kept between requests, per process:
- one grouped query (region, status, use type, owner: count, latest update, sum of ids) gives every count and a
  fingerprint of each region code's cameras; when the change feed exists (vms.inventory.changes) and its head has
  not moved, not even that query runs;
- each region's field-of-view union (and its GeoJSON) is kept with the fingerprint of the cameras it was built from,
  and rebuilt only when that changes (an import in one district rebuilds that district and its parents);
- the unions are also kept in the database (table coverage_areas, with a digest of the views' fingerprint, the view
  defaults and the region's polygon), so a new process (a `vms serve` worker) reads them instead of building them
  (seconds of CPU at 100,000 cameras); `vms coverage refresh` builds and keeps them ahead;
- region polygons, their local projections and areas are kept until the regions table changes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import io
import json
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely import wkb
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from vms.catalog.domain import SourceKind
from vms.coverage.fov import FovDefaults, local_crs, sector_polygons, views
from vms.errors import ValidationFailed, VmsError
from vms.health import rollup
from vms.inventory.service import Inventory
from vms.store import repository as repo
from vms.store.db import upsert_insert
from vms.store.models import Observation as ObservationRow
from vms.store.models import (
    Region,
    Source,
    cameras,
    coverage_areas,
    coverage_daily,
    health_events,
    health_latest,
)

log = logging.getLogger(__name__)

__all__ = ["MAX_PLACES", "Coverage", "Place"]

MAX_PLACES = 10_000
MAX_SERIES_DAYS = 366
_EARLIEST = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)
EARTH_RADIUS_M = 6_371_008.8
_CHUNK = 500
# Sources that mean a camera is connected to the platform: a GB/T 28181 catalog or ONVIF discovery.
AGGREGATING_KINDS = (SourceKind.CATALOG.value, SourceKind.ONVIF.value)
# How a covered area is built (sectors, their union, the clip): part of the digest a kept area is matched by, so a
# change to the build (count it up) builds every kept area again.
AREA_BUILD = 1
_VIEW_ARRAYS = ("x", "y", "azimuth", "angle", "distance")


@dataclass(frozen=True, slots=True)
class Place:
    name: str
    lon: float
    lat: float


@dataclass
class _RegionInfo:
    code: str
    name: str | None
    parent_code: str | None
    level: str | None
    geom: BaseGeometry | None  # WGS-84
    local: BaseGeometry | None = None  # in its own projection
    area_km2: float | None = None
    centre: tuple[float, float] | None = None
    digest: str = ""  # of its polygon's WKB: a changed polygon builds its covered area again


@dataclass
class _Area:
    fingerprint: Any  # of its cameras, status included
    geometry_fp: Any  # of its cameras, status left out: a status change rebuilds only the working cameras' union
    ids: npt.NDArray[np.int64] | None  # the cameras with a position, and their views (local metres), for that
    views: tuple[npt.NDArray[np.float64], ...] | None  # rebuild: x, y, azimuth, angle, distance (None: not read yet)
    cameras: int  # with a position
    working: int  # of those, status ON
    covered_km2: float
    working_km2: float
    covered: BaseGeometry | None  # local projection, clipped to the region
    working_geom: BaseGeometry | None
    seconds: float  # time it took to build
    geojson: dict[str, Any] | None = None
    working_geojson: dict[str, Any] | None = None
    working_fp: Any = None  # the fingerprint the working figures were built at (built when asked)
    built_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))  # the covered union's build
    digest: str = ""  # of geometry_fp, as kept in coverage_areas
    geoms: bool = True  # covered and working_geom are here (False: read from coverage_areas, figures only)


@dataclass
class _Snapshot:
    token: Any  # what the counts were read at: the change feed's head, else the groups themselves
    groups: list[tuple[str | None, str | None, str | None, str | None, int]]  # region, status, use, owner, n
    code_fp: dict[str | None, tuple[Any, ...]]  # region code -> fingerprint of its cameras


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)  # the counts: short holds only
    # The covered areas' build (seconds of CPU at 100,000 cameras) and the indicators' each hold their own lock, not
    # ``lock``: a summary or an ETag never waits behind them.
    area_lock: threading.Lock = field(default_factory=threading.Lock)
    indicators_lock: threading.Lock = field(default_factory=threading.Lock)
    regions_token: Any = None
    regions: dict[str, _RegionInfo] = field(default_factory=dict)
    snapshot: _Snapshot | None = None
    summary: tuple[Any, dict[str, Any]] | None = None
    areas: dict[str, _Area] = field(default_factory=dict)
    working_points: tuple[Any, npt.NDArray[np.float64], npt.NDArray[np.int64]] | None = None
    indicators: dict[Any, tuple[float, dict[str, Any]]] = field(default_factory=dict)


_STATES: dict[str, _State] = {}
_STATES_LOCK = threading.Lock()


def _state_of(inv: Inventory) -> _State:
    key = f"{inv.settings.url}#{id(inv.engine)}"
    with _STATES_LOCK:
        if key not in _STATES:
            _STATES[key] = _State()
        return _STATES[key]


def _feed_head(inv: Inventory) -> int | None:
    """The change feed's head (vms.inventory.changes.head) where the feed exists, else None."""
    try:
        changes: Any = importlib.import_module("vms.inventory.changes")
    except ImportError:
        return None
    try:
        return int(changes.head(inv))
    except Exception:
        return None


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _rate(num: float, den: float) -> float | None:
    return round(num / den, 6) if den else None


def _round_coords(geom: BaseGeometry) -> BaseGeometry:
    return shapely.set_precision(geom, 1e-7)


class Coverage:
    """Coverage statistics of one inventory (cheap to make: the cache is per database, shared by instances)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inv = inventory
        self.defaults = FovDefaults.from_settings(inventory.settings)
        self._state = _state_of(inventory)
        self.last_build: dict[str, Any] = {}  # the covered areas' last build: regions, read, built, reworked, kept

    # --- what the counts are read at ---------------------------------------------------------------------

    def _regions(self) -> dict[str, _RegionInfo]:
        st = self._state
        with self.inv.session(write=False) as s:
            token = tuple(s.execute(select(func.count(), func.max(Region.updated_at))).one())
            if token == st.regions_token:
                return st.regions
            rows = s.execute(select(Region.code, Region.name, Region.parent_code, Region.level, Region.geometry)).all()
        regions: dict[str, _RegionInfo] = {}
        for code, name, parent, level, blob in rows:
            geom = wkb.loads(blob) if blob else None
            info = _RegionInfo(code, name, parent, level, geom, digest=_digest(bytes(blob)) if blob else "")
            if geom is not None and not geom.is_empty:
                c = geom.centroid
                info.centre = (c.x, c.y)
                info.local = shapely.transform(geom, _projector(info.centre), interleaved=False)
                info.area_km2 = info.local.area / 1e6
            regions[code] = info
        st.regions, st.regions_token = regions, token
        return regions

    def _snapshot(self) -> _Snapshot:
        st = self._state
        head = _feed_head(self.inv)
        if head is not None and st.snapshot is not None and st.snapshot.token == ("head", head):
            return st.snapshot
        c = cameras.c
        stmt = (
            select(c.region_code, c.status, c.use_type, c.owner, func.count(), func.max(c.updated_at), func.sum(c.id))
            .where(c.removed_at.is_(None))
            .group_by(c.region_code, c.status, c.use_type, c.owner)
        )
        with self.inv.session(write=False) as s:
            rows = s.execute(stmt).all()
        groups: list[tuple[str | None, str | None, str | None, str | None, int]] = []
        parts: dict[str | None, list[tuple[Any, ...]]] = defaultdict(list)
        for region, status, use, owner, n, latest, id_sum in rows:
            groups.append((region, status, use, owner, int(n)))
            parts[region].append((status or "", use or "", owner or "", int(n), _stamp(latest), int(id_sum or 0)))
        code_fp = {code: tuple(sorted(p)) for code, p in parts.items()}
        token: Any = ("head", head) if head is not None else ("groups", tuple(sorted(code_fp.items(), key=_key)))
        snap = _Snapshot(token, groups, code_fp)
        st.snapshot = snap
        return snap

    def version(self) -> tuple[int, bytes]:
        """What the counts and areas are read at: (the change feed's head or 0, a digest of the cameras' grouped
        figures, the regions, the sources' listings and the view defaults). Equal versions: equal answers."""
        with self._state.lock:
            self._regions()
            snap = self._snapshot()
            token = (snap.token, self._state.regions_token, self._sources_token(), self.defaults)
        head = snap.token[1] if snap.token[0] == "head" else 0
        return int(head), hashlib.blake2b(repr(token).encode(), digest_size=12).digest()

    @staticmethod
    def _ancestors(code: str, known: Iterable[str]) -> list[str]:
        return [r for r in known if code == r or code.startswith(r)]

    def _codes_under(self, region: str, snap: _Snapshot) -> list[str]:
        return sorted(c for c in snap.code_fp if c is not None and (c == region or c.startswith(region)))

    # --- counts ------------------------------------------------------------------------------------------

    def summary(self, *, region: str | None = None) -> dict[str, Any]:
        """Counts by region (sub-regions included), status, use type, owner and source; cameras per km2."""
        with self._state.lock:
            regions = self._regions()
            snap = self._snapshot()
            key = (snap.token, self._state.regions_token, self._sources_token(), region)
            if self._state.summary is not None and self._state.summary[0] == key:
                return self._state.summary[1]
            out = self._summary(regions, snap, region)
            self._state.summary = (key, out)
            return out

    def _sources_token(self) -> Any:
        o = ObservationRow
        with self.inv.session(write=False) as s:
            return tuple(s.execute(select(func.count(), func.max(o.updated_at), func.max(o.seen_at))).one())

    def _summary(self, regions: Mapping[str, _RegionInfo], snap: _Snapshot, region: str | None) -> dict[str, Any]:
        if region is not None and region not in regions and not self._codes_under(region, snap):
            raise ValidationFailed(f"no region {region!r}: see `vms regions list`")
        by_status: dict[str, int] = defaultdict(int)
        by_use: dict[str, int] = defaultdict(int)
        by_owner: dict[str, int] = defaultdict(int)
        per_code: dict[str | None, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        total = 0
        for code, status, use, owner, n in snap.groups:
            if region is not None and not (code and code.startswith(region)):
                continue
            total += n
            by_status[status or "unknown"] += n
            by_use[use or "unknown"] += n
            by_owner[owner or "unknown"] += n
            per_code[code][status or "unknown"] += n
        known = [r for r in regions if region is None or r.startswith(region)]
        codes = set(known) | {c for c in per_code if c is not None}
        rolled: dict[str, dict[str, int]] = {r: defaultdict(int) for r in codes}
        for code, counts in per_code.items():
            if code is None:
                continue
            for r in self._ancestors(code, codes):
                for k, v in counts.items():
                    rolled[r][k] += v
        rows = []
        for r in sorted(codes):
            info = regions.get(r)
            counts = rolled[r]
            n = sum(counts.values())
            area = info.area_km2 if info else None
            rows.append(
                {
                    "region": r,
                    "name": info.name if info else None,
                    "parent": info.parent_code if info else None,
                    "cameras": n,
                    "by_status": dict(sorted(counts.items())),
                    "area_km2": None if area is None else round(area, 4),
                    "per_km2": None if not area else round(n / area, 4),
                }
            )
        outside = sum(per_code.get(None, {}).values()) if region is None else 0
        return {
            "region": region,
            "cameras": total,
            "outside_regions": outside,
            "by_status": dict(sorted(by_status.items())),
            "by_use_type": dict(sorted(by_use.items())),
            "by_owner": dict(sorted(by_owner.items(), key=lambda kv: (-kv[1], kv[0]))),
            "by_source": self._by_source(region),
            "by_region": rows,
        }

    def _by_source(self, region: str | None) -> list[dict[str, Any]]:
        with self.inv.session(write=False) as s:
            return [{"source": n, "kind": k, "cameras": c} for n, k, c in repo.count_by_source(s, region=region)]

    # --- covered area ------------------------------------------------------------------------------------

    def _areas(
        self, region: str | None, working: bool, *, geometry: bool = False
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The regions and their built covered areas, built or rebuilt as needed; the caller holds the area lock."""
        with self._state.lock:
            regions = self._regions()
            snap = self._snapshot()
        return regions, self._build_areas(regions, snap, region, working=working, geometry=geometry)

    def area(self, *, region: str | None = None, working: bool = False) -> dict[str, Any]:
        """Per region: area, covered km2 and share of every registered camera's view; with ``working``, also of
        the working cameras' (status ON) views (built when first asked, then kept like the other)."""
        started = time.perf_counter()
        with self._state.area_lock:
            regions, built = self._areas(region, working)
        rows: list[dict[str, Any]] = []
        for code in sorted(built):
            a, info = built[code], regions[code]
            share = _rate(a.covered_km2, info.area_km2 or 0)
            rows.append(
                {
                    "region": code,
                    "name": info.name,
                    "parent": info.parent_code,
                    "area_km2": None if info.area_km2 is None else round(info.area_km2, 4),
                    "cameras": a.cameras,
                    "covered_km2": round(a.covered_km2, 6),
                    "covered_share": share,
                    "built_at": a.built_at.isoformat(),
                }
            )
            if working:
                rows[-1].update(
                    {
                        "working": a.working,
                        "working_km2": round(a.working_km2, 6),
                        "working_share": _rate(a.working_km2, info.area_km2 or 0),
                    }
                )
        top = [r for r in rows if not r["parent"] or r["parent"] not in regions]
        area_total = sum(r["area_km2"] or 0 for r in top)
        covered = sum(r["covered_km2"] for r in top)
        working_km2 = sum(r.get("working_km2", 0.0) for r in top)
        return {
            "region": region,
            "defaults": {
                "dome_radius_m": self.defaults.dome_radius_m,
                "bullet_angle_deg": self.defaults.bullet_angle_deg,
                "bullet_distance_m": self.defaults.bullet_distance_m,
                "default_ptz_type": self.defaults.default_ptz,
            },
            "area_km2": round(area_total, 4),
            "covered_km2": round(covered, 6),
            "covered_share": _rate(covered, area_total),
            **(
                {"working_km2": round(working_km2, 6), "working_share": _rate(working_km2, area_total)}
                if working
                else {}
            ),
            "by_region": rows,
            "seconds": round(time.perf_counter() - started, 4),
        }

    def area_geojson(self, *, region: str | None = None, working: bool = False) -> dict[str, Any]:
        """A FeatureCollection (WGS-84): per region the union of its cameras' fields of view, clipped to it."""
        with self._state.area_lock:
            regions, built = self._areas(region, working, geometry=True)
            features = []
            for code in sorted(built):
                a, info = built[code], regions[code]
                geo = a.working_geojson if working else a.geojson
                if geo is None:
                    geom = a.working_geom if working else a.covered
                    geo = self._to_geojson(geom, info)
                    if working:
                        a.working_geojson = geo
                    else:
                        a.geojson = geo
                features.append(
                    {
                        "type": "Feature",
                        "geometry": geo,
                        "properties": {
                            "region": code,
                            "name": info.name,
                            "cameras": a.working if working else a.cameras,
                            "covered_km2": round(a.working_km2 if working else a.covered_km2, 6),
                            "share": _rate(a.working_km2 if working else a.covered_km2, info.area_km2 or 0),
                            "status": "ON" if working else "all",
                        },
                    }
                )
        return {"type": "FeatureCollection", "features": features}

    @staticmethod
    def _to_geojson(geom: BaseGeometry | None, info: _RegionInfo) -> dict[str, Any]:
        if geom is None or geom.is_empty or info.centre is None:
            return {"type": "GeometryCollection", "geometries": []}
        back = shapely.transform(geom, _projector(info.centre, inverse=True), interleaved=False)
        out: dict[str, Any] = json.loads(json.dumps(mapping(_round_coords(back))))
        return out

    def _build_areas(
        self,
        regions: Mapping[str, _RegionInfo],
        snap: _Snapshot,
        region: str | None,
        *,
        working: bool = False,
        geometry: bool = False,
        force: bool = False,
    ) -> dict[str, _Area]:
        """Under ``area_lock``: the areas of the regions wanted. Each stands while the fingerprint of its cameras'
        views (status left out), the view defaults and its polygon stand: kept here, else read from coverage_areas
        (an earlier process built it), else built, and kept there for the next process. ``geometry``: the unions
        themselves are wanted (GeoJSON), not only their figures. ``force``: build every one again."""
        if region is not None and region not in regions:
            raise ValidationFailed(f"no region {region!r} with a polygon: see `vms regions list`")
        st = self._state
        for gone in [code for code in st.areas if code not in regions]:
            del st.areas[gone]
        wanted = [
            code
            for code, info in regions.items()
            if info.local is not None and (region is None or code == region or code.startswith(region))
        ]
        plans: dict[str, tuple[Any, Any, list[str]]] = {}  # code: fingerprint, geometry fingerprint, codes under it
        for code in wanted:
            codes = self._codes_under(code, snap)
            fp = (tuple((c, snap.code_fp[c]) for c in codes), self.defaults)
            geometry_fp = (
                tuple((c, _without_status(snap.code_fp[c])) for c in codes),
                self.defaults,
                regions[code].digest,
                AREA_BUILD,
            )
            plans[code] = (fp, geometry_fp, codes)
            if force:
                st.areas.pop(code, None)

        def stands(code: str) -> bool:
            have = st.areas.get(code)
            return have is not None and have.geometry_fp == plans[code][1]

        read = 0
        if not force and (missing := [code for code in wanted if not stands(code)]):
            read = self._read_kept(missing, plans)
        # areas read as figures only: their unions (GeoJSON) or their views (a status change's working union)
        partial = [
            code
            for code in wanted
            if stands(code)
            and (
                (geometry and not st.areas[code].geoms)
                or (working and st.areas[code].working_fp != plans[code][0] and st.areas[code].views is None)
            )
        ]
        if partial:
            self._read_kept_unions(partial, geoms=geometry)
        built = [code for code in wanted if not stands(code)]
        if built:
            needed = sorted({c for code in built for c in plans[code][2]})
            by_code = self._positions(needed)
            for code in built:
                fp, geometry_fp, codes = plans[code]
                rows = [row for c in codes for row in by_code.get(c, ())]
                st.areas[code] = self._union(regions[code], fp, geometry_fp, rows)
        for code in wanted:
            st.areas[code].fingerprint = plans[code][0]  # the same views: the union stands
        reworked = [code for code in wanted if working and st.areas[code].working_fp != plans[code][0]]
        if reworked:
            working_ids = self._working_ids(sorted({c for code in reworked for c in plans[code][2]}))
            for code in reworked:
                st.areas[code] = self._rework(regions[code], st.areas[code], plans[code][0], working_ids)
        kept = self._keep(built, [code for code in reworked if code not in built]) if built or reworked else None
        self.last_build = {"regions": len(wanted), "read": read, "built": len(built), "reworked": len(reworked)}
        self.last_build["kept"] = kept
        return {code: st.areas[code] for code in wanted}

    def _read_kept(self, missing: Sequence[str], plans: Mapping[str, tuple[Any, Any, list[str]]]) -> int:
        """The kept areas of these regions whose digest is the one of their views now, as figures (the unions and
        the views are read when wanted): one query (per 500 regions). Returns how many were read."""
        k = coverage_areas.c
        cols = [k.region, k.geometry_fp, k.cameras, k.covered_km2, k.working_fp, k.working, k.working_km2]
        cols += [k.seconds, k.built_at]
        try:
            with self.inv.session(write=False) as s:
                rows = [
                    row
                    for i in range(0, len(missing), _CHUNK)
                    for row in s.execute(select(*cols).where(k.region.in_(missing[i : i + _CHUNK])))
                ]
        except (VmsError, SQLAlchemyError) as exc:
            log.info("coverage: kept covered areas not read (%s)", str(exc).splitlines()[0][:200])
            return 0
        read = 0
        for row in rows:
            fp, geometry_fp, _codes = plans[row.region]
            digest = _digest(geometry_fp)
            if row.geometry_fp != digest:
                continue
            area = _Area(
                fingerprint=fp,
                geometry_fp=geometry_fp,
                ids=None,
                views=None,
                cameras=int(row.cameras),
                working=0,
                covered_km2=float(row.covered_km2),
                working_km2=0.0,
                covered=None,
                working_geom=None,
                seconds=float(row.seconds),
                built_at=_utc(row.built_at),
                digest=digest,
                geoms=False,
            )
            if row.working_fp is not None and row.working_fp == _digest((digest, fp)):  # _working_digest's
                area.working_fp = fp
                area.working = int(row.working or 0)
                area.working_km2 = float(row.working_km2 or 0.0)
            self._state.areas[row.region] = area
            read += 1
        return read

    def _read_kept_unions(self, codes: Sequence[str], *, geoms: bool) -> None:
        """The views (and with ``geoms`` the unions) of areas read as figures; an area whose row changed since (or
        went) is dropped, to be built again."""
        st = self._state
        k = coverage_areas.c
        cols = [k.region, k.geometry_fp, k.working_fp, k.views] + ([k.covered, k.working_geom] if geoms else [])
        found: set[str] = set()
        try:
            with self.inv.session(write=False) as s:
                for i in range(0, len(codes), _CHUNK):
                    for row in s.execute(select(*cols).where(k.region.in_(codes[i : i + _CHUNK]))):
                        area = st.areas[row.region]
                        if row.geometry_fp != area.digest:
                            continue
                        area.ids, area.views = _unpack_views(bytes(row.views))
                        if geoms:
                            area.covered = _geom_of(row.covered)
                            area.geojson = None
                            if area.working_fp is not None and row.working_fp == _working_digest(area):
                                area.working_geom = _geom_of(row.working_geom)
                            else:
                                area.working_fp = None  # the working union is built again when asked
                            area.working_geojson = None
                            area.geoms = True
                        found.add(row.region)
        except (VmsError, SQLAlchemyError, ValueError, OSError, shapely.errors.ShapelyError) as exc:
            log.info("coverage: kept covered areas not read (%s)", str(exc).splitlines()[0][:200])
        for code in codes:
            if code not in found:
                del st.areas[code]

    def _keep(self, built: Sequence[str], reworked: Sequence[str]) -> bool:
        """Keep the areas just built (whole) and the working unions just built again in coverage_areas, for the
        next process. Best effort: a database that cannot be written now (another writer holds it, read-only
        access) leaves them to be built again there; this process serves them as built. True: kept."""
        st = self._state
        k = coverage_areas.c

        def working(a: _Area) -> dict[str, Any]:
            done = a.working_fp is not None
            return {
                "working_fp": _working_digest(a) if done else None,
                "working": a.working if done else None,
                "working_km2": a.working_km2 if done else None,
                "working_geom": _wkb_of(a.working_geom) if done else None,
            }

        try:
            with self.inv.session() as s:
                conn = s.connection()
                ins = upsert_insert(conn, coverage_areas)
                for code in built:  # a row at a time: a district's union and views are megabytes
                    a = st.areas[code]
                    assert a.ids is not None and a.views is not None
                    row = {
                        "region": code,
                        "geometry_fp": a.digest,
                        "cameras": a.cameras,
                        "covered_km2": a.covered_km2,
                        "covered": _wkb_of(a.covered),
                        "views": _pack_views(a.ids, a.views),
                        **working(a),
                        "seconds": a.seconds,
                        "built_at": a.built_at,
                    }
                    keep = {name: ins.excluded[name] for name in row if name != "region"}
                    conn.execute(ins.on_conflict_do_update(index_elements=["region"], set_=keep), row)
                for code in reworked:
                    a = st.areas[code]
                    stmt = coverage_areas.update().where(k.region == code, k.geometry_fp == a.digest)
                    conn.execute(stmt.values(**working(a)))
        except (VmsError, SQLAlchemyError) as exc:
            log.info("coverage: covered areas not kept now, served as built (%s)", str(exc).splitlines()[0][:200])
            return False
        return True

    def refresh(self, *, force: bool = False) -> dict[str, Any]:
        """Build every region's covered areas (all cameras' and the working cameras') that the kept ones no longer
        match (``force``: all of them) and keep them in coverage_areas, so that a new process (a `vms serve`
        worker) reads them instead of building them. Returns counts: regions, read, built, reworked, kept."""
        started = time.perf_counter()
        with self._state.area_lock:
            with self._state.lock:
                regions = self._regions()
                snap = self._snapshot()
            self._build_areas(regions, snap, None, working=True, force=force)
            out = dict(self.last_build)
        out["seconds"] = round(time.perf_counter() - started, 3)
        return out

    def _working_ids(self, codes: Sequence[str]) -> npt.NDArray[np.int64]:
        c = cameras.c
        found: list[int] = []
        base = select(c.id).where(c.removed_at.is_(None), c.status == "ON")
        with self.inv.session(write=False) as s:
            for i in range(0, len(codes), _CHUNK):
                found.extend(s.scalars(base.where(c.region_code.in_(codes[i : i + _CHUNK]))))
        return np.array(sorted(found), dtype=np.int64)

    def _rework(self, info: _RegionInfo, area: _Area, fp: Any, working_ids: npt.NDArray[np.int64]) -> _Area:
        """The same cameras, other statuses: only the working cameras' union again."""
        started = time.perf_counter()
        assert info.local is not None and area.ids is not None and area.views is not None
        on = np.isin(area.ids, working_ids)
        polys = sector_polygons(*(v[on] for v in area.views))
        working = _clipped_union(polys, info.local) if on.any() else None
        area.working_fp = fp
        area.working = int(on.sum())
        area.working_geom = working
        area.working_km2 = (working.area / 1e6) if working is not None else 0.0
        area.working_geojson = None
        area.seconds = time.perf_counter() - started
        return area

    def _positions(self, codes: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        c = cameras.c
        cols = [
            c.region_code,
            c.id,
            c.longitude,
            c.latitude,
            c.status,
            c.ptz_type,
            c.direction_type,
            c.horizontal_field_angle,
            c.max_view_distance,
            c.extra,
        ]
        names = [col.name for col in cols]
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        base = select(*cols).where(c.removed_at.is_(None), c.longitude.is_not(None), c.latitude.is_not(None))
        with self.inv.session(write=False) as s:
            for i in range(0, len(codes), _CHUNK):
                for row in s.execute(base.where(c.region_code.in_(codes[i : i + _CHUNK]))):
                    out[row[0]].append(dict(zip(names, row, strict=True)))
        return out

    def _union(self, info: _RegionInfo, fp: Any, geometry_fp: Any, cams: list[dict[str, Any]]) -> _Area:
        started = time.perf_counter()
        assert info.centre is not None and info.local is not None
        lon = np.array([float(r["longitude"]) for r in cams], dtype=np.float64)
        lat = np.array([float(r["latitude"]) for r in cams], dtype=np.float64)
        ok = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90)
        cams = [r for r, good in zip(cams, ok, strict=True) if good]
        lon, lat = lon[ok], lat[ok]
        ids = np.array([int(r["id"]) for r in cams], dtype=np.int64)
        x, y = local_crs(*info.centre).transform(lon, lat)
        az, angle, dist = views(cams, self.defaults)
        arrays = (np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), az, angle, dist)
        polys = sector_polygons(*arrays)
        covered = _clipped_union(polys, info.local)
        return _Area(
            fingerprint=fp,
            geometry_fp=geometry_fp,
            digest=_digest(geometry_fp),
            ids=ids,
            views=arrays,
            cameras=len(cams),
            working=0,
            covered_km2=(covered.area / 1e6) if covered is not None else 0.0,
            working_km2=0.0,
            covered=covered,
            working_geom=None,
            seconds=time.perf_counter() - started,
        )

    # --- gaps --------------------------------------------------------------------------------------------

    def region_gaps(self) -> list[dict[str, Any]]:
        """Regions (sub-regions included) with no working camera (status ON), and how many cameras they have."""
        summary = self.summary()
        return [
            {"region": r["region"], "name": r["name"], "cameras": r["cameras"]}
            for r in summary["by_region"]
            if not r["by_status"].get("ON")
        ]

    def _working_points(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """(lon, lat) rows of the working cameras sorted by latitude, and their ids."""
        st = self._state
        snap = self._snapshot()
        if st.working_points is not None and st.working_points[0] == snap.token:
            return st.working_points[1], st.working_points[2]
        c = cameras.c
        stmt = select(c.id, c.longitude, c.latitude).where(
            c.removed_at.is_(None), c.status == "ON", c.longitude.is_not(None), c.latitude.is_not(None)
        )
        with self.inv.session(write=False) as s:
            rows = s.execute(stmt).all()
        pts = np.array([(float(r[1]), float(r[2])) for r in rows], dtype=np.float64).reshape(-1, 2)
        ids = np.array([int(r[0]) for r in rows], dtype=np.int64)
        order = np.argsort(pts[:, 1], kind="stable")
        pts, ids = pts[order], ids[order]
        st.working_points = (snap.token, pts, ids)
        return pts, ids

    def place_gaps(self, places: Sequence[Place], distance_m: float) -> dict[str, Any]:
        """Each place's nearest working camera within ``distance_m`` (great-circle), and the places with none."""
        if not 0 < distance_m <= 100_000:
            raise ValidationFailed("distance_m must be above 0 and at most 100000")
        if len(places) > MAX_PLACES:
            raise ValidationFailed(f"at most {MAX_PLACES} places per request")
        with self._state.lock:
            pts, ids = self._working_points()
        lats = pts[:, 1]
        dlat = math.degrees(distance_m / EARTH_RADIUS_M)
        out = []
        for p in places:
            if not (math.isfinite(p.lon) and math.isfinite(p.lat) and abs(p.lon) <= 180 and abs(p.lat) <= 90):
                raise ValidationFailed(f"place {p.name!r}: longitude/latitude out of range")
            lo, hi = np.searchsorted(lats, [p.lat - dlat, p.lat + dlat])
            near = None
            if hi > lo:
                band = pts[lo:hi]
                d = _haversine(p.lon, p.lat, band[:, 0], band[:, 1])
                i = int(np.argmin(d))
                if d[i] <= distance_m:
                    near = (int(ids[lo + i]), float(d[i]))
            out.append(
                {
                    "name": p.name,
                    "lon": p.lon,
                    "lat": p.lat,
                    "covered": near is not None,
                    "nearest_camera": near[0] if near else None,
                    "distance_m": round(near[1], 1) if near else None,
                }
            )
        return {
            "distance_m": distance_m,
            "places": out,
            "gaps": [p for p in out if not p["covered"]],
            "working_cameras": len(ids),
        }

    # --- indicators --------------------------------------------------------------------------------------

    def indicators(
        self,
        *,
        region: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        now: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """The four indicators of DOMAIN.md section 4, overall and by region, and a daily online-rate series.
        The default period is whole UTC days: the ``coverage_online_days`` days before the UTC day of ``end``
        (default now), and that day up to ``end``."""
        now = _utc(now or dt.datetime.now(dt.UTC))
        to_now = end is None
        try:
            end = _utc(end) if end else now
            if start is None:
                start = rollup.midnight(end.date()) - dt.timedelta(days=self.inv.settings.coverage_online_days)
            start = _utc(start)
        except OverflowError:
            raise ValidationFailed("'from' and 'to' must lie between the years 1900 and 9000") from None
        if not (start >= _EARLIEST and end <= _LATEST):
            raise ValidationFailed("'from' and 'to' must lie between the years 1900 and 9000")
        if end <= start:
            raise ValidationFailed("the period is empty: 'from' must be before 'to'")
        if (end - start).days > MAX_SERIES_DAYS:
            raise ValidationFailed(f"the period is longer than {MAX_SERIES_DAYS} days")
        ttl = self.inv.settings.coverage_indicator_ttl_s
        st = self._state
        given = (region, start, "now" if to_now else end)

        def cached() -> tuple[Any, Any, Any, dict[str, Any] | None]:
            with st.lock:
                snap = self._snapshot()
                regions = self._regions()
                hit = st.indicators.get((snap.token, given))
            fresh = hit is not None and time.monotonic() - hit[0] <= ttl
            return snap, regions, (snap.token, given), hit[1] if hit is not None and fresh else None

        # A computation that will not find its figures kept starts reading the online seconds and the intact rate
        # at once, each on its own connection: the database works on them while this thread reads the counts. Not
        # while another computation runs (requests arriving together wait for it, then find its figures).
        with st.lock:
            kept = any(k[1] == given and time.monotonic() - v[0] <= ttl for k, v in st.indicators.items())
        early = None if kept or st.indicators_lock.locked() else self._start_reads(region, start, end, now)
        snap, regions, key, out = cached()
        if out is not None:
            return out
        with st.indicators_lock:  # one computation at a time; the counts' lock is free meanwhile
            snap, regions, key, out = cached()  # another thread may have just computed it
            if out is not None:
                return out
            out = self._indicators(regions, snap, region, start, end, now, early)
            with st.lock:
                st.indicators = {k: v for k, v in st.indicators.items() if time.monotonic() - v[0] <= ttl}
                st.indicators[key] = (time.monotonic(), out)
            return out

    def _indicators(
        self,
        regions: Mapping[str, _RegionInfo],
        snap: _Snapshot,
        region: str | None,
        start: dt.datetime,
        end: dt.datetime,
        now: dt.datetime,
        early: _Reads | None = None,
    ) -> dict[str, Any]:

        if region is not None and region not in regions and not self._codes_under(region, snap):
            raise ValidationFailed(f"no region {region!r}: see `vms regions list`")
        codes = {r for r in regions if region is None or r.startswith(region)}
        codes |= {c for c in snap.code_fp if c and (region is None or c.startswith(region))}
        cache: dict[str, list[str]] = {}

        def ups(code: str | None) -> list[str]:
            if code is None:
                return []
            if code not in cache:
                cache[code] = self._ancestors(code, codes)
            return cache[code]

        fig: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        overall: dict[str, float] = defaultdict(float)

        def add(code: str | None, name: str, value: float) -> None:
            if region is None or (code and code.startswith(region)):
                overall[name] += value
            for r in ups(code):
                fig[r][name] += value

        # registered and online now (status ON), from the grouped counts
        for code, status, _use, _owner, n in snap.groups:
            add(code, "registered", n)
            add(code, "on", n if status == "ON" else 0)
        # time-weighted online rate (vms.health): read once for the figures and the series, beside what follows
        reads = early or self._start_reads(region, start, end, now)
        # intact rate (vms.frames.store): its regions roll sub-regions up the same way (code prefixes)
        intact = reads.intact.result()
        overall["intact"] = intact.intact
        for code, counts in intact.by_region.items():
            if code in codes:
                fig[code]["intact"] = counts.intact
        # aggregation rate
        for code, total, aggregated in self._aggregation(snap):
            add(code, "known", total)
            add(code, "aggregated", aggregated)
        # data-quality pass rate (the inventory's stored problems)
        report, _names = self.inv.quality(cameras=False)
        for code, tally in report.by_region.items():
            add(code or None, "checked", tally.total)
            add(code or None, "passed", tally.passed)
        data = reads.online.result()
        for code, (online_s, known_s) in self._online_by_code(start, end, now, data).items():
            add(code, "online_s", online_s)
            add(code, "known_s", known_s)
        rows = []
        for r in sorted(codes):
            info = regions.get(r)
            rows.append({"region": r, "name": info.name if info else None, **_figures(fig.get(r, {}))})
        if region is None:
            self._record_day(now, overall, {r: fig.get(r, {}) for r in codes})
        return {
            "region": region,
            "from": start.isoformat(),
            "to": end.isoformat(),
            **_figures(overall),
            "by_region": rows,
            "series": self.online_series(region=region, start=start, end=end, now=now, data=data),
        }

    def _record_day(
        self, now: dt.datetime, overall: Mapping[str, float], fig: Mapping[str, Mapping[str, float]]
    ) -> None:
        """Keep today's counts (every camera under "", each region) for the series: the day's last reading wins.
        Only the rows whose counts changed are written (and every row's reading time). Best effort: a read that
        cannot write now (another writer holds the database, waited for briefly; a read-only database) leaves it
        to the next."""
        day = now.date()
        rows = [
            {
                "day": day,
                "region": code,
                "registered": int(f.get("registered", 0)),
                "online_now": int(f.get("on", 0)),
                "intact": int(f.get("intact", 0)),
                "aggregated": int(f.get("aggregated", 0)),
                "known": int(f.get("known", 0)),
                "quality_passed": int(f.get("passed", 0)),
                "quality_checked": int(f.get("checked", 0)),
                "at": now,
            }
            for code, f in [("", overall), *sorted(fig.items())]
        ]
        try:
            with self.inv.session() as s:
                conn = s.connection()
                restore = rollup.wait_at_most(conn, rollup.WRITE_WAIT_S)
                try:
                    k = coverage_daily.c
                    counts = [name for name in rows[0] if name not in ("day", "region", "at")]
                    have = {
                        r[0]: tuple(r[1:])
                        for r in conn.execute(select(k.region, *(k[n] for n in counts)).where(k.day == day))
                    }
                    rows = [r for r in rows if have.get(r["region"]) != tuple(r[n] for n in counts)]
                    if have:
                        conn.execute(coverage_daily.update().where(k.day == day).values(at=now))
                    ins = upsert_insert(conn, coverage_daily)
                    keep = {n: ins.excluded[n] for n in [*counts, "at"]}
                    for i in range(0, len(rows), 1000):
                        conn.execute(
                            ins.on_conflict_do_update(index_elements=["day", "region"], set_=keep), rows[i : i + 1000]
                        )
                finally:
                    restore()
        except (VmsError, SQLAlchemyError) as exc:
            log.info("coverage: today's indicators not recorded now (%s)", str(exc).splitlines()[0][:200])

    def _day_readings(self, region: str | None, first: dt.date, last: dt.date) -> dict[dt.date, Any]:
        k = coverage_daily.c
        stmt = select(coverage_daily).where(k.region == (region or ""), k.day >= first, k.day <= last)
        with self.inv.session(write=False) as s:
            return {rollup.as_date(r.day): r for r in s.execute(stmt)}

    def _start_reads(self, region: str | None, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> _Reads:
        """The indicators' two long reads (the online seconds, the intact rate) on worker threads, each on its own
        connection; here, one after the other, when the database is in memory (another thread's connection would
        be another database)."""
        from vms.frames.store import intact_rate

        if self.inv.engine.url.database in (None, "", ":memory:"):
            online: Future[_OnlineData] = Future()
            online.set_result(self._online_data(start, end, now))
            intact: Future[Any] = Future()
            intact.set_result(intact_rate(self.inv, region=region))
            return _Reads(online, intact)
        pool = _read_pool()
        return _Reads(
            pool.submit(self._online_data, start, end, now), pool.submit(intact_rate, self.inv, region=region)
        )

    def _online_data(self, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> _OnlineData:
        """What the online figures over [start, end) read: each UTC day's seconds by region (the region roll-up of
        vms.health, or summed now for the days not closed yet) and the intervals still open, grouped."""
        end = min(_utc(end), now)
        days = _days(_utc(start), end)
        base = days[0] if days else end.date()
        return _OnlineData(
            rollup.day_seconds(self.inv, days, now), rollup.open_intervals(self.inv, base, now), frozenset(days)
        )

    def _online_by_code(
        self, start: dt.datetime, end: dt.datetime, now: dt.datetime, data: _OnlineData | None = None
    ) -> dict[str | None, tuple[float, float]]:
        """(online, known) seconds over [start, end) per camera region code (None: no region): the sums of
        Health.online_by_camera by region, without a pass over every camera in Python. Whole days (and, when the
        period runs to now, today so far) from the daily figures by region (vms.health.rollup) and the intervals
        still open grouped by region and status; only a part of a day at an end of the period (an explicit time
        that is not a UTC midnight) is read from the status events, camera by camera for those that changed."""
        start, end = _utc(start), min(_utc(end), now)
        totals: dict[str | None, list[float]] = defaultdict(lambda: [0.0, 0.0])
        if end <= start:
            return {}
        per_camera: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
        h, e, c = health_latest, health_events, cameras.c
        by_code = select(c.region_code, h.c.status, func.count()).select_from(
            h.outerjoin(cameras, c.id == h.c.camera_id)
        )

        def grouped(conn: Any, stmt: Any, seconds: float) -> None:
            for code, status, n in conn.execute(stmt.group_by(c.region_code, h.c.status)):
                totals[code][1] += seconds * n
                if status == "ON":
                    totals[code][0] += seconds * n

        def window(lo: dt.datetime, hi: dt.datetime) -> None:
            if hi <= lo:
                return
            from vms.health.service import Health  # here: the whole-day path needs none of it

            with self.inv.session(write=False) as s:
                conn = s.connection()
                changed = select(e.c.camera_id).where(e.c.at >= lo, e.c.at < hi)
                # unchanged over [lo, hi): the status health_latest holds since before lo, the whole window
                grouped(conn, by_code.where(h.c.since < lo, h.c.camera_id.not_in(changed)), (hi - lo).total_seconds())
                active = select(h.c.camera_id).where(h.c.since >= lo).union(changed)
                Health._from_events(conn, lo, hi, active, per_camera)

        first = start.date() if start == rollup.midnight(start.date()) else start.date() + dt.timedelta(days=1)
        stop = end.date()
        to_now = end >= now  # today so far: its daily figures and the open intervals, as a whole day's are
        days = [first + dt.timedelta(days=i) for i in range((stop - first).days)]
        if to_now and first <= stop and rollup.midnight(stop) < end:
            days.append(stop)
        if not days:
            window(start, end)
        else:
            lo = rollup.midnight(first)
            hi = end if to_now else rollup.midnight(stop)
            window(start, lo)
            if not to_now:
                window(hi, end)
            if data is None or not set(days) <= data.days:
                data = self._online_data(lo, hi, now)
            for day in days:
                for code, (online, known) in data.sums.get(day, {}).items():
                    totals[code][0] += online
                    totals[code][1] += known
            for (code, status), seconds in data.opens.seconds(lo, hi).items():
                totals[code][1] += seconds
                if status == "ON":
                    totals[code][0] += seconds
        if per_camera:
            region_of = self._region_of_ids()
            for cid, (online, known) in per_camera.items():
                code = region_of.get(cid)
                totals[code][0] += online
                totals[code][1] += known
        return {code: (on, known) for code, (on, known) in totals.items()}

    def _region_of_ids(self) -> dict[int, str]:
        with self.inv.session(write=False) as s:
            return {
                int(i): str(code)
                for i, code in s.execute(
                    select(cameras.c.id, cameras.c.region_code).where(cameras.c.region_code.is_not(None))
                )
            }

    def _aggregation(self, snap: _Snapshot) -> list[tuple[str | None, int, int]]:
        """(region code, live cameras, of those aggregated): a GB ID and listed by a catalog or ONVIF source. The
        live cameras from the grouped counts; the aggregated ones found from the catalog and ONVIF listings (a
        query that grows with those, not with every camera)."""
        o = ObservationRow
        kinds = select(Source.id).where(Source.kind.in_(AGGREGATING_KINDS))
        # the sources first: their listings through the (source_id, ...) key, not a pass over every listing
        connected = select(o.camera_id).where(o.removed_at.is_(None), o.source_id.in_(kinds))
        c = cameras.c
        stmt = (
            select(c.region_code, func.count())
            .where(c.removed_at.is_(None), c.device_id.is_not(None), c.device_id != "", c.id.in_(connected))
            .group_by(c.region_code)
        )
        with self.inv.session(write=False) as s:
            aggregated = {code: int(n) for code, n in s.execute(stmt)}
        live: dict[str | None, int] = defaultdict(int)
        for code, _status, _use, _owner, n in snap.groups:
            live[code] += n
        return [(code, n, aggregated.get(code, 0)) for code, n in live.items()]

    def online_series(
        self,
        *,
        region: str | None,
        start: dt.datetime,
        end: dt.datetime,
        now: dt.datetime | None = None,
        data: _OnlineData | None = None,
    ) -> list[dict[str, Any]]:
        """Per UTC day over [start, end): the time-weighted online rate (the daily figures of vms.health, closed
        status intervals, plus each camera's interval still open: a day's figure equals Health.online_rate over
        it), and the intact, aggregation and data-quality pass rates as last read that day (None: not read).
        Closed days come from vms.health's roll-up by region (each camera in its region when the day was rolled
        up), the others from the daily figures now; the open intervals grouped by status and day."""
        now = _utc(now or dt.datetime.now(dt.UTC))
        end = min(_utc(end), now)
        if end <= _utc(start):
            return []
        days = _days(_utc(start), end)
        if data is None or not set(days) <= data.days:
            data = self._online_data(start, end, now)

        def inside(code: str | None) -> bool:
            return region is None or (code is not None and (code == region or code.startswith(region)))

        opens = data.opens.only(inside)
        readings = self._day_readings(region, days[0], days[-1]) if days else {}
        series = []
        for day in days:
            lo, hi = rollup.midnight(day), min(rollup.midnight(day) + dt.timedelta(days=1), now)
            on = known = 0.0
            for code, (o, k) in data.sums.get(day, {}).items():
                if inside(code):
                    on += o
                    known += k
            for (_code, status), seconds in opens.seconds(lo, hi).items():
                known += seconds
                if status == "ON":
                    on += seconds
            series.append(
                {
                    "day": day.isoformat(),
                    "online_rate": _rate(on, known),
                    "online_h": round(on / 3600, 3),
                    "known_h": round(known / 3600, 3),
                    **_reading(readings.get(day)),
                }
            )
        return series


_POOL: ThreadPoolExecutor | None = None


def _read_pool() -> ThreadPoolExecutor:
    global _POOL
    with _STATES_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="coverage-reads")
        return _POOL


@dataclass
class _Reads:
    online: Future[_OnlineData]
    intact: Future[Any]  # vms.frames.store.IntactRate


@dataclass
class _OnlineData:
    sums: rollup.DaySums  # day -> region code -> closed-interval (online, known) seconds
    opens: rollup.OpenIntervals
    days: frozenset[dt.date]  # the days ``sums`` holds


def _days(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """The UTC days [start, end) touches."""
    first, last = start.date(), end.date()
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    if days and rollup.midnight(days[-1]) >= end:
        days.pop()
    return days


def _reading(row: Any) -> dict[str, Any]:
    """A day's recorded counts as rates (None: no reading that day)."""
    if row is None:
        return {"registered": None, "intact_rate": None, "aggregation_rate": None, "quality_pass_rate": None}
    return {
        "registered": row.registered,
        "intact_rate": _rate(row.intact, row.registered),
        "aggregation_rate": _rate(row.aggregated, row.known),
        "quality_pass_rate": _rate(row.quality_passed, row.quality_checked),
    }


def _figures(f: Mapping[str, float]) -> dict[str, Any]:
    registered = int(f.get("registered", 0))
    return {
        "registered": registered,
        "online_now": int(f.get("on", 0)),
        "online_rate_now": _rate(f.get("on", 0), registered),
        "online_rate": _rate(f.get("online_s", 0), f.get("known_s", 0)),
        "intact": int(f.get("intact", 0)),
        "intact_rate": _rate(f.get("intact", 0), registered),
        "aggregated": int(f.get("aggregated", 0)),
        "aggregation_rate": _rate(f.get("aggregated", 0), f.get("known", 0)),
        "quality_passed": int(f.get("passed", 0)),
        "quality_pass_rate": _rate(f.get("passed", 0), f.get("checked", 0)),
    }


def _digest(value: Any) -> str:
    """A digest that is the same in every process: blake2b of the value's repr (bytes as they are). The values
    are tuples of str, int, float and FovDefaults, whose reprs do not depend on the process (no set, no hash)."""
    data = value if isinstance(value, bytes) else repr(value).encode()
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def _working_digest(area: _Area) -> str:
    """What an area's working union was built at: its views' digest and the fingerprint with statuses."""
    return _digest((area.digest, area.working_fp))


def _stamp(value: Any) -> str:
    """A time as the same text whatever the connection's time zone (PostgreSQL answers in the session's)."""
    if isinstance(value, dt.datetime):
        return _utc(value).isoformat()
    return str(value)


def _pack_views(ids: npt.NDArray[np.int64], views: Sequence[npt.NDArray[np.float64]]) -> bytes:
    buf = io.BytesIO()
    x, y, azimuth, angle, distance = views
    np.savez(buf, ids=ids, x=x, y=y, azimuth=azimuth, angle=angle, distance=distance)
    return buf.getvalue()


def _unpack_views(blob: bytes) -> tuple[npt.NDArray[np.int64], tuple[npt.NDArray[np.float64], ...]]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return (
            np.asarray(z["ids"], dtype=np.int64),
            tuple(np.asarray(z[k], dtype=np.float64) for k in _VIEW_ARRAYS),
        )


def _geom_of(blob: Any) -> BaseGeometry | None:
    return wkb.loads(bytes(blob)) if blob else None


def _wkb_of(geom: BaseGeometry | None) -> bytes | None:
    return None if geom is None else bytes(shapely.to_wkb(geom))


def _without_status(parts: tuple[Any, ...]) -> tuple[Any, ...]:
    """A code's fingerprint (status, use, owner, count, latest update, id sum per group) with statuses merged."""
    merged: dict[tuple[Any, ...], list[Any]] = {}
    for _status, use, owner, n, latest, id_sum in parts:
        m = merged.setdefault((use, owner), [0, "", 0])
        m[0] += n
        m[1] = max(m[1], latest)
        m[2] += id_sum
    return tuple(sorted((k, tuple(v)) for k, v in merged.items()))


def _key(item: tuple[Any, Any]) -> str:
    return item[0] or ""


def _projector(centre: tuple[float, float], *, inverse: bool = False) -> Any:
    tr = local_crs(*centre)

    def forward(x: Any, y: Any) -> Any:
        return tr.transform(x, y, direction="INVERSE" if inverse else "FORWARD")

    return forward


def _clipped_union(polys: npt.NDArray[np.object_], region: BaseGeometry) -> BaseGeometry | None:
    """The union of the polygons within the region. Views overlap in clusters (a junction, a street) far apart from
    each other: each cluster (views connected by overlapping bounding boxes, found with an STR tree) is unioned alone
    and the clusters, disjoint, are only collected; a union of all at once spends its time merging parts that never
    touch. Only the parts crossing the region's boundary are intersected with it."""
    if len(polys) == 0:
        return None
    tree = shapely.STRtree(polys)
    a, b = tree.query(polys)  # envelopes that overlap: a cluster may hold views that only nearly touch
    labels = _components(len(polys), a[a < b], b[a < b])
    order = np.argsort(labels, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(labels[order])) + 1)
    parts = np.array(
        [polys[g[0]] if len(g) == 1 else shapely.union_all(polys[g]) for g in groups],
        dtype=object,
    )
    shapely.prepare(region)
    inside = shapely.contains(region, parts)
    if not inside.all():
        parts[~inside] = shapely.intersection(parts[~inside], region)
    pieces = shapely.get_parts(parts[~shapely.is_empty(parts)])
    pieces = pieces[shapely.get_type_id(pieces) == 3]  # polygons (a clip may leave lines or points on the edge)
    return shapely.multipolygons(pieces)


def _components(n: int, a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Connected components of n nodes with edges a-b: each node's smallest node of its component (label
    propagation, vectorised: a few passes for the chains of overlapping views real districts have)."""
    labels = np.arange(n, dtype=np.int64)
    if len(a) == 0:
        return labels
    while True:
        low = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        labels = labels[labels]  # pointer jumping
        if np.array_equal(labels, before):
            return labels


def _haversine(lon: float, lat: float, lons: npt.NDArray[np.float64], lats: npt.NDArray[np.float64]) -> Any:
    p1, p2 = math.radians(lat), np.radians(lats)
    dphi = p2 - p1
    dl = np.radians(lons - lon)
    a = np.sin(dphi / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
