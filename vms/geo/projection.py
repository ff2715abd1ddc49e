"""Projected and other stated coordinate systems -> WGS-84, with pyproj.

Official boundary data comes as projected Shapefiles (CGCS2000 Gauss-Kruger zones such as EPSG:4527/4549, UTM
such as EPSG:32650, national grids such as the Hong Kong 1980 Grid EPSG:2326) and some camera registers give
easting/northing instead of longitude/latitude. Everything the inventory stores is WGS-84 (DOMAIN.md section 3);
this module converts once, at the file boundary. GCJ-02 is not a pyproj datum and stays in vms.geo.coords.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError as _PyprojCRSError

__all__ = [
    "CrsError",
    "check_area_of_use",
    "crs_label",
    "is_wgs84",
    "parse_crs",
    "project_point",
    "to_wgs84_arrays",
]

FloatArray = npt.NDArray[np.float64]

_WGS84 = CRS.from_epsg(4326)
# Names a person types for plain WGS-84 longitude/latitude.
_WGS84_NAMES = frozenset({"wgs84", "wgs-84", "wgs 84", "epsg:4326", "4326", "crs84", "ogc:crs84"})
_AREA_MARGIN_DEGREES = 2.0
_MAX_CRS_TEXT = 20_000  # a WKT definition is a few kB; anything far longer is not one


class CrsError(ValueError):
    """A coordinate system cannot be understood, or coordinates cannot be converted from it."""


def parse_crs(text: str) -> CRS:
    """A CRS from ``EPSG:2326``, a bare EPSG number, ``urn:ogc:def:crs:EPSG::2326``, WKT (a ``.prj``) or PROJ text."""
    value = text.strip().lstrip("\ufeff")
    if not value:
        raise CrsError("empty coordinate system")
    if len(value) > _MAX_CRS_TEXT:
        raise CrsError(f"coordinate system definition of {len(value)} characters is too long")
    if value.casefold() in _WGS84_NAMES or value.casefold().endswith(("crs84", "epsg::4326")):
        return _WGS84
    if value.isascii() and value.isdigit():
        value = f"EPSG:{value}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyproj warns about PROJ strings; the error path says enough
            return CRS.from_user_input(value)
    except _PyprojCRSError as exc:
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise CrsError(
            f"unknown coordinate system {shown!r}: give an EPSG code (e.g. EPSG:4549, EPSG:32650, EPSG:2326) or WKT"
        ) from exc


def is_wgs84(crs: CRS) -> bool:
    """Longitude/latitude on WGS-84 already: nothing to convert."""
    return bool(crs == _WGS84 or crs.to_epsg(min_confidence=90) == 4326)


def crs_label(crs: CRS) -> str:
    """``EPSG:2326 Hong Kong 1980 Grid System`` (or just the name when no EPSG code matches)."""
    code = crs.to_epsg(min_confidence=70)
    return f"EPSG:{code} {crs.name}" if code else crs.name


@lru_cache(maxsize=32)
def _transformer(crs: CRS) -> Transformer:
    if not (crs.is_projected or crs.is_geographic):
        raise CrsError(f"{crs_label(crs)} is neither a projected nor a geographic 2-D coordinate system")
    # always_xy: easting/longitude first whatever the axis order the EPSG definition declares.
    return Transformer.from_crs(crs, _WGS84, always_xy=True)


def to_wgs84_arrays(crs: CRS, xs: FloatArray, ys: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Easting/northing (or lon/lat of another datum) -> WGS-84 lon/lat; NaN in, NaN out.

    Points the transformation cannot handle come back as NaN (pyproj returns inf for them).
    """
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    if is_wgs84(crs):
        return x.copy(), y.copy()
    lon, lat = _transformer(crs).transform(x, y, errcheck=False)
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    bad = ~(np.isfinite(lon) & np.isfinite(lat)) | (np.abs(lon) > 180.0) | (np.abs(lat) > 90.0)
    lon[bad] = np.nan
    lat[bad] = np.nan
    return lon, lat


def project_point(easting: str | float, northing: str | float, crs: str | CRS) -> tuple[float, float]:
    """One point in ``crs`` -> WGS-84 (lon, lat). Raises CrsError with a one-line reason when it cannot.

    The importer calls this for camera rows with easting/northing columns and a stated CRS.
    """
    target = crs if isinstance(crs, CRS) else _cached_crs(crs)
    values: list[float] = []
    for label, raw in (("easting", easting), ("northing", northing)):
        try:
            number = float(raw.strip()) if isinstance(raw, str) else float(raw)
        except ValueError:
            raise CrsError(f"{label} {str(raw)[:40]!r} is not a number") from None
        if not math.isfinite(number):
            raise CrsError(f"{label} {str(raw)[:40]!r} is not a finite number")
        values.append(number)
    lon, lat = to_wgs84_arrays(target, np.array(values[:1]), np.array(values[1:]))
    if not (math.isfinite(lon[0]) and math.isfinite(lat[0])):
        raise CrsError(f"easting {values[0]:g}, northing {values[1]:g} lie outside what {crs_label(target)} covers")
    check_area_of_use(target, float(lon[0]), float(lat[0]), float(lon[0]), float(lat[0]))
    return float(lon[0]), float(lat[0])


def check_area_of_use(crs: CRS, west: float, south: float, east: float, north: float) -> None:
    """Raise CrsError when converted coordinates lie far from where ``crs`` is used: a wrong CRS or swapped axes.

    The margin is generous because real boundary files are often delivered in a neighbouring Gauss-Kruger zone.
    """
    area = crs.area_of_use
    if area is None or is_wgs84(crs):
        return
    m = _AREA_MARGIN_DEGREES
    if east < area.west - m or west > area.east + m or north < area.south - m or south > area.north + m:
        raise CrsError(
            f"coordinates converted from {crs_label(crs)} land at lon {west:.4f}..{east:.4f}, "
            f"lat {south:.4f}..{north:.4f}, far from where that system is used ({area.name}): "
            "wrong coordinate system, or easting and northing swapped?"
        )


@lru_cache(maxsize=64)
def _cached_crs(text: str) -> CRS:
    return parse_crs(text)
