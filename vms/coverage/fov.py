"""A camera's field of view as a polygon in a local metric projection.

The record gives (DOMAIN.md section 2): the position (WGS-84), the optical axis (DirectionType 1-8 = E, W, S, N,
SE, NE, SW, NW, or an azimuth in degrees from north where a source gives one), the horizontal field angle and the
maximum view distance. What it leaves out comes from the camera type (PTZType): a ball, dome, remote dome or
panorama camera (1, 2, 5, 6) turns or sees all round, so it covers a full circle; a bullet camera (3, 4, 7) covers
a sector. A bullet whose direction is unknown covers a disc of the sector's area centred on it (the expected
coverage when the axis could be anywhere), so an unknown direction neither inflates nor drops its area.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import Transformer

__all__ = [
    "AZIMUTH_OF_DIRECTION",
    "CIRCLE_TYPES",
    "FovDefaults",
    "azimuth_of",
    "local_crs",
    "sector_polygons",
    "view_of",
]

FloatArray = npt.NDArray[np.float64]

# DirectionType (GB/T 28181 2016/2022): the optical axis, as an azimuth (degrees clockwise from north).
AZIMUTH_OF_DIRECTION: dict[str, float] = {
    "1": 90.0,  # east
    "2": 270.0,  # west
    "3": 180.0,  # south
    "4": 0.0,  # north
    "5": 135.0,  # south-east
    "6": 45.0,  # north-east
    "7": 225.0,  # south-west
    "8": 315.0,  # north-west
}
CIRCLE_TYPES = frozenset({"1", "2", "5", "6"})  # ball, dome, remote dome, multi-lens panorama
# Keys of an azimuth a source may carry beside the catalog's fields (the record's ``extra``), case-insensitive.
AZIMUTH_KEYS = ("azimuth", "heading", "bearing", "方位角")
ARC_VERTICES = 20  # vertices of a disc; a sector has its apex and 19 on its arc (areas kept exact)


@dataclass(frozen=True, slots=True)
class FovDefaults:
    dome_radius_m: float = 50.0
    bullet_angle_deg: float = 60.0
    bullet_distance_m: float = 80.0
    default_ptz: str = "3"

    @classmethod
    def from_settings(cls, settings: Any) -> FovDefaults:
        return cls(
            dome_radius_m=float(settings.coverage_dome_radius_m),
            bullet_angle_deg=float(settings.coverage_bullet_angle_deg),
            bullet_distance_m=float(settings.coverage_bullet_distance_m),
            default_ptz=str(settings.coverage_default_ptz),
        )


def _positive(value: Any) -> float | None:
    """A positive finite number, else None ("0 or empty means not reported")."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def azimuth_of(direction_type: Any, extra: Any) -> float | None:
    """The optical axis in degrees from north: an azimuth a source gave (in ``extra``) wins over DirectionType."""
    if isinstance(extra, Mapping) and extra:
        for key, value in extra.items():
            if isinstance(key, str) and key.strip().casefold() in AZIMUTH_KEYS:
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(number):
                    return number % 360.0
    if direction_type is None:
        return None
    return AZIMUTH_OF_DIRECTION.get(str(direction_type).strip())


def view_of(cam: Mapping[str, Any], defaults: FovDefaults) -> tuple[float, float, float]:
    """(azimuth or NaN, horizontal angle in degrees, distance in metres) of one camera record."""
    ptz = str(cam.get("ptz_type") or defaults.default_ptz).strip()
    angle = _positive(cam.get("horizontal_field_angle"))
    distance = _positive(cam.get("max_view_distance"))
    if ptz in CIRCLE_TYPES:
        return math.nan, 360.0, distance or defaults.dome_radius_m
    azimuth = azimuth_of(cam.get("direction_type"), cam.get("extra"))
    angle = min(angle or defaults.bullet_angle_deg, 360.0)
    return (math.nan if azimuth is None else azimuth), angle, distance or defaults.bullet_distance_m


@lru_cache(maxsize=4096)
def local_crs(lon: float, lat: float) -> Transformer:
    """WGS-84 -> a Lambert azimuthal equal-area projection centred here (metres): areas exact, distances and
    angles true near the centre (a district or city: distortion well under 1 %). Kept: making one costs ~50 ms."""
    # A PROJ pipeline, not CRS.from_proj4 + Transformer.from_crs: the same numbers, ten times faster to make.
    return Transformer.from_pipeline(
        "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
        f"+step +proj=laea +lat_0={lat:.6f} +lon_0={lon:.6f} +x_0=0 +y_0=0 +ellps=WGS84"
    )


def sector_polygons(
    xs: FloatArray, ys: FloatArray, azimuths: FloatArray, angles: FloatArray, distances: FloatArray
) -> npt.NDArray[np.object_]:
    """One polygon per camera, built for all at once (numpy, shapely's vectorised constructor).

    A camera with angle 360 or no azimuth (NaN) gets a disc (a bullet without azimuth: of its sector's area);
    the others a sector: the apex, then the arc from azimuth - angle/2 to azimuth + angle/2.
    """
    n = len(xs)
    if n == 0:
        return np.empty(0, dtype=object)
    k = ARC_VERTICES
    full = (angles >= 360.0) | np.isnan(azimuths)
    radius = np.where(full & (angles < 360.0), distances * np.sqrt(np.clip(angles, 0, 360) / 360.0), distances)
    # Vertices on a circle cut its arcs short; the polygon's radius is widened so that its area is the view's.
    theta = np.radians(np.where(full, 360.0, angles))
    steps = np.where(full, k, k - 2)
    radius = radius * np.sqrt(theta / (steps * np.sin(theta / steps)))
    t = np.linspace(0.0, 1.0, k - 1)  # k-1 points along a sector's arc, both ends included
    circle_t = np.arange(k) / k * 2 * math.pi
    half = np.radians(np.where(full, 180.0, angles / 2.0))
    centre = np.radians(np.nan_to_num(azimuths))
    sector_a = (centre - half)[:, None] + (2 * half)[:, None] * t[None, :]
    coords = np.empty((n, k, 2))
    # sectors: apex then k-1 arc points
    coords[:, 0, 0] = xs
    coords[:, 0, 1] = ys
    coords[:, 1:, 0] = xs[:, None] + radius[:, None] * np.sin(sector_a)
    coords[:, 1:, 1] = ys[:, None] + radius[:, None] * np.cos(sector_a)
    # discs: k points around
    if full.any():
        idx = np.flatnonzero(full)
        coords[idx, :, 0] = xs[idx, None] + radius[idx, None] * np.sin(circle_t)[None, :]
        coords[idx, :, 1] = ys[idx, None] + radius[idx, None] * np.cos(circle_t)[None, :]
    polys: npt.NDArray[np.object_] = shapely.polygons(coords)
    return polys


def views(cams: Sequence[Mapping[str, Any]], defaults: FovDefaults) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Arrays of azimuth (NaN: none), angle and distance for these records."""
    out = np.array([view_of(c, defaults) for c in cams], dtype=np.float64).reshape(-1, 3)
    return out[:, 0].copy(), out[:, 1].copy(), out[:, 2].copy()
