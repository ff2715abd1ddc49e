"""Reading region files: administrative code lists (CSV) and boundaries (GeoJSON). Pure parsing, no database.

Codes use the short GB/T 2260 form of the admin code files: province 2 digits, city 4, district 6,
township 9. Six-digit province/city codes from GeoJSON files (``371300``) are shortened (``3713``) so
that boundaries and code lists join on the same code. Geometries are returned as WKB in WGS-84.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from vms.catalog.gbid import short_civil_code
from vms.geo.coords import gcj02_to_wgs84_arrays

__all__ = [
    "ADMIN_FILES",
    "RegionFileError",
    "RegionRecord",
    "read_admin_codes",
    "read_region_geojson",
    "read_regions",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

LEVELS = ("province", "city", "district", "township", "other")

# Files of an admin code directory (modood/Administrative-divisions-of-China layout), top level first
# so that parents precede children.
ADMIN_FILES = ("provinces.csv", "cities.csv", "areas.csv", "streets.csv")

# Parent column per file kind, most specific first: areas.csv carries cityCode and provinceCode, the
# parent is the city.
_PARENT_COLUMNS = ("areacode", "citycode", "provincecode")

_CODE_PROPERTIES = ("adcode", "code", "civil_code", "id")
_NAME_PROPERTIES = ("name", "name_zh", "name_en", "NAME")
# Without a code property a name becomes the code: prefer the English (ASCII, stable spelling) one.
_NAME_AS_CODE_PROPERTIES = ("name_en", "name", "NAME", "name_zh")

_DATAV_LEVELS = {
    "province": "province",
    "city": "city",
    "district": "district",
    "street": "township",
    "township": "township",
    "country": "other",
}

_CRS_CHOICES = ("auto", "wgs84", "gcj02")


class RegionFileError(ValueError):
    """A region file cannot be read or is not in a supported format."""


@dataclass(frozen=True, slots=True)
class RegionRecord:
    code: str
    name: str
    parent_code: str | None
    level: str  # one of LEVELS
    geometry_wkb: bytes | None  # WGS-84 Polygon/MultiPolygon, None for code lists
    source: str  # file name the record came from


def level_for_code(code: str) -> str:
    """Level from the short code form: 2 province, 4 city, 6 district, 9 township."""
    if not code.isascii() or not code.isdigit():
        return "other"
    return {2: "province", 4: "city", 6: "district", 9: "township"}.get(len(code), "other")


# --- administrative code CSV files --------------------------------------------------------------------


def read_admin_codes(path: PathLike) -> list[RegionRecord]:
    """Read an admin code directory (provinces/cities/areas/streets.csv) or one such CSV file."""
    p = Path(path)
    if p.is_dir():
        files = [p / name for name in ADMIN_FILES if (p / name).is_file()]
        if not files:
            raise RegionFileError(f"{p}: directory holds none of {', '.join(ADMIN_FILES)}")
        records: list[RegionRecord] = []
        for f in files:
            records.extend(_read_admin_csv(f))
        return records
    if not p.is_file():
        raise RegionFileError(f"{p}: no such file or directory")
    return _read_admin_csv(p)


def _read_admin_csv(path: Path) -> list[RegionRecord]:
    try:
        # utf-8-sig drops a BOM when present and reads plain UTF-8 otherwise.
        with path.open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise RegionFileError(f"{path}: cannot read as UTF-8 CSV: {exc}") from exc
    if not rows:
        raise RegionFileError(f"{path}: empty file")
    header = [h.strip().lower() for h in rows[0]]
    if "code" not in header or "name" not in header:
        raise RegionFileError(
            f"{path}: not an admin code file: header must have 'code' and 'name' columns, got {rows[0]!r}"
        )
    code_col = header.index("code")
    name_col = header.index("name")
    parent_col = next((header.index(c) for c in _PARENT_COLUMNS if c in header), None)
    records: list[RegionRecord] = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) < len(header):
            raise RegionFileError(f"{path}:{line_no}: expected {len(header)} columns, got {len(row)}")
        code = row[code_col].strip()
        if not code.isascii() or not code.isdigit():
            raise RegionFileError(f"{path}:{line_no}: code {code!r} is not a number")
        name = row[name_col].strip()
        parent = row[parent_col].strip() if parent_col is not None else ""
        records.append(
            RegionRecord(
                code=code,
                name=name or code,
                parent_code=parent or None,
                level=level_for_code(code),
                geometry_wkb=None,
                source=path.name,
            )
        )
    return records


# --- GeoJSON boundaries -------------------------------------------------------------------------------


def read_region_geojson(
    path: PathLike,
    *,
    crs: str = "auto",
    code_property: str | None = None,
    name_property: str | None = None,
) -> list[RegionRecord]:
    """Read Polygon/MultiPolygon features from a FeatureCollection, a JSON array of Features or one Feature.

    ``crs``: "wgs84", "gcj02" or "auto" (GCJ-02 when the file name contains "gcj" or a ``crs`` member
    names GCJ; WGS-84 otherwise). GCJ-02 geometries are converted to WGS-84. Features of other geometry
    types are skipped with a warning; a file without any polygon feature is an error.
    """
    if crs not in _CRS_CHOICES:
        raise ValueError(f"crs must be one of {', '.join(_CRS_CHOICES)}, got {crs!r}")
    p = Path(path)
    try:
        with p.open(encoding="utf-8-sig") as fh:
            doc = json.load(fh)
    except FileNotFoundError as exc:
        raise RegionFileError(f"{p}: no such file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegionFileError(f"{p}: not a readable JSON file: {exc}") from exc

    is_gcj = _decide_gcj(p, doc, crs)
    records: list[RegionRecord] = []
    skipped = 0
    for index, feature in enumerate(_features(p, doc)):
        geom = _feature_geometry(p, index, feature)
        if geom is None:
            skipped += 1
            continue
        if is_gcj:
            geom = shapely.transform(geom, _gcj_to_wgs_coords)
        geom = _repair(geom)
        if geom is None:
            skipped += 1
            continue
        props = feature.get("properties") or {}
        if not isinstance(props, Mapping):
            raise RegionFileError(f"{p}: feature {index}: properties is not an object")
        code, name = _code_and_name(p, index, props, code_property, name_property)
        records.append(
            RegionRecord(
                code=code,
                name=name,
                parent_code=_parent_code(props),
                level=_level(code, props),
                geometry_wkb=shapely.to_wkb(geom),
                source=p.name,
            )
        )
    if skipped:
        log.warning("%s: skipped %d feature(s) without a Polygon/MultiPolygon geometry", p, skipped)
    if not records:
        raise RegionFileError(f"{p}: no Polygon or MultiPolygon features")
    return records


def _decide_gcj(path: Path, doc: Any, crs: str) -> bool:
    if crs != "auto":
        return crs == "gcj02"
    crs_text = json.dumps(doc.get("crs"), ensure_ascii=False).lower() if isinstance(doc, dict) else ""
    if "bd09" in crs_text or "baidu" in crs_text:
        # Baidu's BD-09 is a second offset on top of GCJ-02; treating it as either datum would be wrong.
        raise RegionFileError(f"{path}: BD-09 (Baidu) coordinates are not supported; convert to WGS-84")
    return "gcj" in path.name.lower() or "gcj" in crs_text


def _features(path: Path, doc: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(doc, list):
        items: list[Any] = doc
    elif isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        items = doc.get("features") or []
        if not isinstance(items, list):
            raise RegionFileError(f"{path}: 'features' is not an array")
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        items = [doc]
    else:
        kind = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise RegionFileError(f"{path}: expected a FeatureCollection, a Feature or an array of Features, got {kind!r}")
    for index, item in enumerate(items):
        if not isinstance(item, dict) or item.get("type") != "Feature":
            raise RegionFileError(f"{path}: item {index} is not a GeoJSON Feature")
        yield item


def _feature_geometry(path: Path, index: int, feature: Mapping[str, Any]) -> BaseGeometry | None:
    raw = feature.get("geometry")
    if not isinstance(raw, dict) or raw.get("type") not in ("Polygon", "MultiPolygon"):
        return None
    try:
        geom: BaseGeometry = shape(raw)
    except (ValueError, TypeError, AttributeError, IndexError, shapely.errors.GEOSException) as exc:
        raise RegionFileError(f"{path}: feature {index}: bad {raw.get('type')} coordinates: {exc}") from exc
    return shapely.force_2d(geom)


def _gcj_to_wgs_coords(coords: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    lons, lats = gcj02_to_wgs84_arrays(coords[:, 0], coords[:, 1])
    return np.column_stack((lons, lats))


def _repair(geom: BaseGeometry) -> BaseGeometry | None:
    """Valid Polygon/MultiPolygon or None; make_valid can return collections with stray lines."""
    if geom.is_empty:
        return None
    if geom.is_valid:
        return geom
    fixed = shapely.make_valid(geom)
    if isinstance(fixed, Polygon | MultiPolygon):
        return fixed
    polygons: list[Polygon] = []
    for part in shapely.get_parts(fixed).tolist():
        if isinstance(part, Polygon):
            polygons.append(part)
        elif isinstance(part, MultiPolygon):
            polygons.extend(part.geoms)
    if not polygons:
        return None
    return polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)


def _text(value: Any) -> str | None:
    """Property value as text: numbers (adcode 371311) become digits, blanks become None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int | float | str):
        text = str(value).strip()
        return text or None
    return None


def _first(props: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        text = _text(props.get(key))
        if text is not None:
            return text
    return None


def _code_and_name(
    path: Path,
    index: int,
    props: Mapping[str, Any],
    code_property: str | None,
    name_property: str | None,
) -> tuple[str, str]:
    name_keys = (name_property,) if name_property else _NAME_PROPERTIES
    if code_property:
        code = _text(props.get(code_property))
        if code is None:
            raise RegionFileError(f"{path}: feature {index}: no value for code property {code_property!r}")
    else:
        code = _first(props, _CODE_PROPERTIES)
        if code is None:
            code = _first(props, _NAME_AS_CODE_PROPERTIES)
            if code is None:
                raise RegionFileError(
                    f"{path}: feature {index}: no code property ({', '.join(_CODE_PROPERTIES)}) and no name"
                )
            # The name used as the code is also the display name, unless one is asked for explicitly.
            name_keys = (name_property,) if name_property else _NAME_AS_CODE_PROPERTIES
    name = _first(props, name_keys)
    if name is None and name_property:
        raise RegionFileError(f"{path}: feature {index}: no value for name property {name_property!r}")
    code = short_civil_code(code)
    return code, name or code


def _parent_code(props: Mapping[str, Any]) -> str | None:
    parent = props.get("parent")
    if isinstance(parent, Mapping):
        code = _text(parent.get("adcode"))
        return short_civil_code(code) if code else None
    return None


def _level(code: str, props: Mapping[str, Any]) -> str:
    declared = props.get("level")
    if isinstance(declared, str) and declared.lower() in _DATAV_LEVELS:
        return _DATAV_LEVELS[declared.lower()]
    return level_for_code(code)


# --- dispatch -----------------------------------------------------------------------------------------


def read_regions(
    path: PathLike,
    *,
    crs: str = "auto",
    code_property: str | None = None,
    name_property: str | None = None,
) -> list[RegionRecord]:
    """Directory or .csv -> admin codes; .json / .geojson -> boundaries (keywords apply to those only)."""
    p = Path(path)
    if p.is_dir():
        return read_admin_codes(p)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return read_admin_codes(p)
    if suffix in (".json", ".geojson"):
        return read_region_geojson(p, crs=crs, code_property=code_property, name_property=name_property)
    raise RegionFileError(
        f"{p}: unsupported region file type {suffix or '(none)'}: use a directory, .csv, .json or .geojson"
    )
