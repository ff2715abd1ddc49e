"""Coordinates and region geometry: GCJ-02 <-> WGS-84 and point-in-region lookup.

Boundary files from Chinese map services are GCJ-02 while GB/T 28181 and ONVIF coordinates are WGS-84
(DOMAIN.md section 3), so boundaries are converted to WGS-84 once and all tests run in WGS-84.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

__all__ = [
    "RegionIndex",
    "gcj02_to_wgs84",
    "gcj02_to_wgs84_arrays",
    "out_of_china",
    "valid_lon_lat",
    "wgs84_to_gcj02",
    "wgs84_to_gcj02_arrays",
]

FloatArray = npt.NDArray[np.float64]

# Krasovsky 1940 ellipsoid, as used by every public implementation of the GCJ-02 offset.
_A = 6378245.0
_EE = 0.00669342162296594323

# Inverse iteration stops when the forward transform reproduces the input to this many degrees
# (about 1 mm); convergence takes 3-5 steps because the offset varies slowly.
_INVERSE_TOLERANCE = 1e-10
_INVERSE_MAX_STEPS = 30


def out_of_china(lon: float, lat: float) -> bool:
    """The standard rough box outside which GCJ-02 equals WGS-84."""
    return not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _out_of_china_arrays(lons: FloatArray, lats: FloatArray) -> npt.NDArray[np.bool_]:
    inside = (lons >= 72.004) & (lons <= 137.8347) & (lats >= 0.8293) & (lats <= 55.8271)
    return ~inside


def _offset(lon: Any, lat: Any, sin: Any, cos: Any, sqrt: Any, fabs: Any) -> tuple[Any, Any]:
    """GCJ-02 minus WGS-84 (degrees) at WGS-84 positions, without the out-of-China test.

    Written once for numpy arrays and for plain floats (numpy on one point costs ~50x more): the callers pass
    numpy's or math's functions.
    """
    x = lon - 105.0
    y = lat - 35.0
    pi = math.pi
    sqrt_abs_x = sqrt(fabs(x))
    common = (20.0 * sin(6.0 * x * pi) + 20.0 * sin(2.0 * x * pi)) * 2.0 / 3.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x + common
    dlat += (20.0 * sin(y * pi) + 40.0 * sin(y / 3.0 * pi)) * 2.0 / 3.0
    dlat += (160.0 * sin(y / 12.0 * pi) + 320.0 * sin(y * pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x + common
    dlon += (20.0 * sin(x * pi) + 40.0 * sin(x / 3.0 * pi)) * 2.0 / 3.0
    dlon += (150.0 * sin(x / 12.0 * pi) + 300.0 * sin(x / 30.0 * pi)) * 2.0 / 3.0
    radlat = lat / 180.0 * pi
    magic = 1.0 - _EE * sin(radlat) ** 2
    sqrt_magic = sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * cos(radlat) * pi)
    return dlon, dlat


def _offset_arrays(lons: FloatArray, lats: FloatArray) -> tuple[FloatArray, FloatArray]:
    dlon, dlat = _offset(lons, lats, np.sin, np.cos, np.sqrt, np.abs)
    return dlon, dlat


def _offset_scalar(lon: float, lat: float) -> tuple[float, float]:
    dlon, dlat = _offset(lon, lat, math.sin, math.cos, math.sqrt, abs)
    return float(dlon), float(dlat)


def _as_float_array(values: Sequence[float | None] | FloatArray) -> FloatArray:
    # dtype=float turns None into NaN, which then flows through as "no coordinate".
    return np.asarray(values, dtype=np.float64)


def wgs84_to_gcj02_arrays(lons: FloatArray, lats: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Vectorised WGS-84 -> GCJ-02; points outside China (and NaN) are returned unchanged."""
    lon = _as_float_array(lons)
    lat = _as_float_array(lats)
    if lon.shape != lat.shape:
        raise ValueError(f"lons and lats differ in shape: {lon.shape} vs {lat.shape}")
    dlon, dlat = _offset_arrays(lon, lat)
    keep = _out_of_china_arrays(lon, lat)  # NaN compares False, so NaN counts as outside: unchanged
    return np.where(keep, lon, lon + dlon), np.where(keep, lat, lat + dlat)


def gcj02_to_wgs84_arrays(lons: FloatArray, lats: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Vectorised GCJ-02 -> WGS-84 by fixed-point iteration (error well below 1e-6 degrees)."""
    glon = _as_float_array(lons)
    glat = _as_float_array(lats)
    if glon.shape != glat.shape:
        raise ValueError(f"lons and lats differ in shape: {glon.shape} vs {glat.shape}")
    out_lon = glon.copy()
    out_lat = glat.copy()
    active = ~_out_of_china_arrays(glon, glat)  # NaN counts as outside: returned unchanged
    if not active.any():
        return out_lon, out_lat
    target_lon = glon[active]
    target_lat = glat[active]
    wlon = target_lon.copy()
    wlat = target_lat.copy()
    for _ in range(_INVERSE_MAX_STEPS):
        dlon, dlat = _offset_arrays(wlon, wlat)
        err_lon = wlon + dlon - target_lon
        err_lat = wlat + dlat - target_lat
        wlon -= err_lon
        wlat -= err_lat
        if max(float(np.max(np.abs(err_lon))), float(np.max(np.abs(err_lat)))) < _INVERSE_TOLERANCE:
            break
    out_lon[active] = wlon
    out_lat[active] = wlat
    return out_lon, out_lat


def wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """WGS-84 -> GCJ-02 for one point; unchanged outside China."""
    if not (math.isfinite(lon) and math.isfinite(lat)) or out_of_china(lon, lat):
        return lon, lat
    dlon, dlat = _offset_scalar(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84(lon: float, lat: float) -> tuple[float, float]:
    """GCJ-02 -> WGS-84 for one point (iterative inverse); unchanged outside China."""
    if not (math.isfinite(lon) and math.isfinite(lat)) or out_of_china(lon, lat):
        return lon, lat
    wlon, wlat = lon, lat
    for _ in range(_INVERSE_MAX_STEPS):
        dlon, dlat = _offset_scalar(wlon, wlat)
        err_lon = wlon + dlon - lon
        err_lat = wlat + dlat - lat
        wlon -= err_lon
        wlat -= err_lat
        if max(abs(err_lon), abs(err_lat)) < _INVERSE_TOLERANCE:
            break
    return wlon, wlat


def valid_lon_lat(lon: float | None, lat: float | None) -> bool:
    """Finite, in range and not (0, 0) (the usual "not reported" placeholder)."""
    if lon is None or lat is None:
        return False
    try:
        x = float(lon)
        y = float(lat)
    except (TypeError, ValueError):
        return False
    if not (math.isfinite(x) and math.isfinite(y)):
        return False
    if not (-180.0 <= x <= 180.0 and -90.0 <= y <= 90.0):
        return False
    return not (x == 0.0 and y == 0.0)


class RegionIndex:
    """Which region contains each point (WGS-84). Points on a boundary count as inside.

    Nested regions are allowed (a district inside its city): the smallest containing region wins, ties
    going to the region added first. Empty geometries are skipped; invalid ones are repaired.
    """

    __slots__ = ("_areas", "_codes", "_geoms", "_tree")

    def __init__(self, regions: Iterable[tuple[str, BaseGeometry]]) -> None:
        codes: list[str] = []
        geoms: list[BaseGeometry] = []
        for code, geom in regions:
            if geom is None or geom.is_empty:
                continue
            if not geom.is_valid:
                geom = shapely.make_valid(geom)
            codes.append(code)
            geoms.append(geom)
        self._codes: list[str] = codes
        self._geoms: npt.NDArray[np.object_] = np.array(geoms, dtype=object)
        self._areas: FloatArray = (
            shapely.area(self._geoms).astype(np.float64) if geoms else np.zeros(0, dtype=np.float64)
        )
        # Prepared regions make each point test O(log n) instead of a scan of every vertex.
        shapely.prepare(self._geoms)
        self._tree = shapely.STRtree(self._geoms)

    def __len__(self) -> int:
        return len(self._codes)

    @property
    def codes(self) -> list[str]:
        return list(self._codes)

    def locate(
        self, lons: Sequence[float | None] | FloatArray, lats: Sequence[float | None] | FloatArray
    ) -> list[str | None]:
        """Region code per point, None where no region contains it or the coordinate is missing."""
        lon = _as_float_array(lons)
        lat = _as_float_array(lats)
        if lon.shape != lat.shape or lon.ndim != 1:
            raise ValueError(f"lons and lats must be 1-d and of equal length: {lon.shape} vs {lat.shape}")
        result: list[str | None] = [None] * lon.shape[0]
        if not self._codes or lon.shape[0] == 0:
            return result
        ok = np.flatnonzero(np.isfinite(lon) & np.isfinite(lat))
        if ok.size == 0:
            return result
        points = shapely.points(lon[ok], lat[ok])
        # Bulk bounding-box query, then the exact test with the *region* prepared. (STRtree's own predicate
        # query prepares the input point instead, which is some 30x slower against detailed boundaries.)
        # "intersects" on a point is "covered by": a point on the boundary counts as inside.
        candidates = self._tree.query(points)
        hit = shapely.intersects(self._geoms[candidates[1]], points[candidates[0]])
        point_idx, region_idx = candidates[0][hit], candidates[1][hit]
        if point_idx.size == 0:
            return result
        # Sort by point, then area, then insertion order; the first row per point is the answer.
        order = np.lexsort((region_idx, self._areas[region_idx], point_idx))
        point_sorted = point_idx[order]
        first = np.ones(point_sorted.shape[0], dtype=bool)
        first[1:] = point_sorted[1:] != point_sorted[:-1]
        codes = self._codes
        for p, r in zip(point_sorted[first].tolist(), region_idx[order][first].tolist(), strict=True):
            result[int(ok[p])] = codes[r]
        return result

    def locate_one(self, lon: float | None, lat: float | None) -> str | None:
        return self.locate([lon], [lat])[0]
