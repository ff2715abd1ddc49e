"""Reading region files: administrative code lists (CSV) and boundaries (GeoJSON, Shapefile). Pure parsing, no database.

Codes use the short GB/T 2260 form of the admin code files: province 2 digits, city 4, district 6,
township 9. Six-digit province/city codes from boundary files (``371300``) are shortened (``3713``) so
that boundaries and code lists join on the same code. A boundary without a code gets a code generated from
its name (``N`` and 10 hex digits, the same for the same name on every import), never the name itself: codes
are hierarchical prefixes, and names are not. Geometries are returned as WKB in WGS-84: GCJ-02 files are
converted with vms.geo.coords, projected ones (a Shapefile's ``.prj``, or a stated EPSG code) with pyproj.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import os
import struct
import tempfile
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapefile
import shapely
from pyproj import CRS
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from vms.catalog.gbid import short_civil_code
from vms.geo.coords import gcj02_to_wgs84_arrays
from vms.geo.projection import CrsError, check_area_of_use, crs_label, is_wgs84, parse_crs, to_wgs84_arrays

__all__ = [
    "ADMIN_FILES",
    "RegionFileError",
    "RegionRecord",
    "generated_region_code",
    "read_admin_codes",
    "read_region_geojson",
    "read_region_shapefile",
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

# Property names are matched case-insensitively (DBF field names are usually upper case). PAC, XZQDM and QHDM
# (and XZQMC, QHMC) are the code (name) fields of Chinese official boundary data. "id" must be spelled so: the
# "Id" field ArcGIS adds to every new Shapefile holds 0, not a code.
_CODE_PROPERTIES = ("adcode", "code", "civil_code", "pac", "xzqdm", "qhdm")
_EXACT_CODE_PROPERTIES = ("id",)
_NAME_PROPERTIES = ("name", "name_zh", "name_en", "xzqmc", "qhmc")
# A generated code hashes one name, chosen in this order so that --name-property does not change it.
_CODE_NAME_PROPERTIES = ("name_en", "name", "name_zh", "xzqmc", "qhmc")
GENERATED_CODE_PREFIX = "N"

_MAX_CODE = 64  # regions.code column
_MAX_NAME = 255  # regions.name column

_DATAV_LEVELS = {
    "province": "province",
    "city": "city",
    "district": "district",
    "street": "township",
    "township": "township",
    "country": "other",
}

# Shapefile parts read; a .zip may hold several layers (each a .shp with its sidecars).
_SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
_MAX_ZIP_BYTES = 2 * 1024**3  # uncompressed bytes extracted from one .zip (a zip bomb stops here)
_POLYGON_TYPES = frozenset({shapefile.POLYGON, shapefile.POLYGONZ, shapefile.POLYGONM})
# .cpg spellings that name no encoding: the DBF text is then detected.
_CPG_UNKNOWN = frozenset({"", "SYSTEM", "ANSI", "OEM", "DEFAULT"})


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
    code_generated: bool = False  # the file had no code for it: generated from the name


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


# --- coordinate systems of boundary files -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Frame:
    """What a boundary file's coordinates are: WGS-84 or GCJ-02 longitude/latitude, or a pyproj CRS."""

    kind: str  # "wgs84", "gcj02" or "crs"
    crs: CRS | None = None

    @property
    def label(self) -> str:
        return crs_label(self.crs) if self.crs is not None else {"wgs84": "WGS-84", "gcj02": "GCJ-02"}[self.kind]

    def transform(self) -> Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]] | None:
        if self.kind == "gcj02":
            return _gcj_to_wgs_coords
        crs = self.crs
        if crs is None:
            return None

        def project(coords: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            lons, lats = to_wgs84_arrays(crs, coords[:, 0], coords[:, 1])
            return np.column_stack((lons, lats))

        return project


_WGS84_FRAME = _Frame("wgs84")
_GCJ02_FRAME = _Frame("gcj02")


def _crs_option(crs: str) -> _Frame | None:
    """The ``crs`` argument: None for "auto", else the frame it states (wgs84, gcj02, an EPSG code or WKT)."""
    text = crs.strip()
    low = text.casefold().replace("-", "")
    if low == "auto":
        return None
    if low in ("gcj02", "gcj"):
        return _GCJ02_FRAME
    try:
        parsed = parse_crs(text)
    except CrsError as exc:
        raise ValueError(f"crs must be auto, wgs84, gcj02 or a coordinate system such as EPSG:4549: {exc}") from exc
    return _WGS84_FRAME if is_wgs84(parsed) else _Frame("crs", parsed)


def _frame_from_crs_text(label: str, text: str, what: str) -> _Frame:
    """A frame from a stated coordinate system (a .prj file, a GeoJSON ``crs`` member)."""
    try:
        parsed = parse_crs(text)
    except CrsError as exc:
        raise RegionFileError(
            f"{label}: {what} not understood ({exc}); give the coordinate system with --crs, e.g. --crs EPSG:4549"
        ) from exc
    if is_wgs84(parsed):
        return _GCJ02_FRAME if "gcj" in label.lower() else _WGS84_FRAME
    if parsed.is_geographic and "gcj" in label.lower():
        return _GCJ02_FRAME  # "GCS_WGS_1984" on a file its maker named GCJ: the usual mislabelled export
    return _Frame("crs", parsed)


def _gcj_to_wgs_coords(coords: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    lons, lats = gcj02_to_wgs84_arrays(coords[:, 0], coords[:, 1])
    return np.column_stack((lons, lats))


# --- boundaries: shared by GeoJSON and Shapefile ------------------------------------------------------

_Item = tuple[int, BaseGeometry | None, Mapping[str, Any]]  # feature number, raw geometry (None: skip), properties


def _boundary_records(
    label: str,
    items: Iterator[_Item],
    frame: _Frame,
    *,
    code_property: str | None,
    name_property: str | None,
) -> list[RegionRecord]:
    """Convert to WGS-84, repair, name and code each feature; check the result really is longitude/latitude."""
    transform = frame.transform()
    records: list[RegionRecord] = []
    skipped = 0
    west = south = float("inf")
    east = north = float("-inf")
    for index, raw, props in items:
        geom = raw
        if geom is not None and transform is not None:
            geom = shapely.transform(geom, transform)
            if not np.isfinite(shapely.get_coordinates(geom)).all():
                raise RegionFileError(f"{label}: feature {index}: coordinates outside what {frame.label} covers")
        geom = _repair(geom) if geom is not None else None
        if geom is None:
            skipped += 1
            continue
        x0, y0, x1, y1 = geom.bounds
        west, south, east, north = min(west, x0), min(south, y0), max(east, x1), max(north, y1)
        code, name, generated = _code_and_name(label, index, props, code_property, name_property)
        records.append(
            RegionRecord(
                code=code,
                name=name,
                parent_code=_parent_code(props),
                level=_level(code, props),
                geometry_wkb=shapely.to_wkb(geom),
                source=label[:_MAX_NAME],
                code_generated=generated,
            )
        )
    if skipped:
        log.warning("%s: skipped %d feature(s) without a Polygon/MultiPolygon geometry", label, skipped)
    if not records:
        raise RegionFileError(f"{label}: no Polygon or MultiPolygon features")
    if not _lon_lat_box(west, south, east, north):
        raise RegionFileError(
            f"{label}: coordinates reach x {west:.6g}..{east:.6g}, y {south:.6g}..{north:.6g}: not longitude/latitude;"
            " give the file's coordinate system, e.g. --crs EPSG:4549"
        )
    if frame.crs is not None:
        try:
            check_area_of_use(frame.crs, west, south, east, north)
        except CrsError as exc:
            raise RegionFileError(f"{label}: {exc}") from exc
    return records


def _lon_lat_box(west: float, south: float, east: float, north: float) -> bool:
    return -180.0 <= west <= east <= 180.0 and -90.0 <= south <= north <= 90.0


def _merge_same_code(label: str, records: list[RegionRecord]) -> list[RegionRecord]:
    """Features sharing a code (an island drawn as its own record, or one name without a code) become one region."""
    by_code: dict[str, list[RegionRecord]] = {}
    for rec in records:
        by_code.setdefault(rec.code, []).append(rec)
    if len(by_code) == len(records):
        return records
    out: list[RegionRecord] = []
    for code, group in by_code.items():
        first = group[0]
        if len(group) > 1 and all(r.geometry_wkb is not None for r in group):
            merged = _repair(shapely.union_all([shapely.from_wkb(r.geometry_wkb) for r in group]))
            if merged is not None:
                first = replace(first, geometry_wkb=shapely.to_wkb(merged))
            log.warning(
                "%s: %d features share the code %s (%s): merged into one region", label, len(group), code, first.name
            )
        out.append(first)
    return out


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


def generated_region_code(name: str) -> str:
    """A code for a region its file gives no code: ``N`` + 10 hex digits of the normalised name.

    Stable (the same name gives the same code on every import), never a prefix of another code (fixed length,
    a letter first, so never taken for a GB/T 2260 code) and never the name itself.
    """
    key = " ".join(unicodedata.normalize("NFKC", name).casefold().split())
    return GENERATED_CODE_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:10].upper()


def _text(value: Any) -> str | None:
    """Property value as text: numbers (adcode 371311) become digits, blanks become None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int | float | str):
        text = str(value).replace("\x00", "").strip()
        return text or None
    return None


def _prop(props: Mapping[str, Any], key: str, *, exact: bool = False) -> Any:
    if key in props:
        return props[key]
    if exact:
        return None
    folded = key.casefold()
    for k, v in props.items():
        if isinstance(k, str) and k.casefold() == folded:
            return v
    return None


def _first(props: Mapping[str, Any], keys: tuple[str, ...], exact_keys: tuple[str, ...] = ()) -> str | None:
    for key in keys:
        text = _text(_prop(props, key))
        if text is not None:
            return text
    for key in exact_keys:
        text = _text(_prop(props, key, exact=True))
        if text is not None:
            return text
    return None


def _property_list(props: Mapping[str, Any]) -> str:
    keys = [str(k) for k in props][:12]
    return ", ".join(keys) + (", ..." if len(props) > 12 else "") if keys else "none"


def _code_and_name(
    label: str,
    index: int,
    props: Mapping[str, Any],
    code_property: str | None,
    name_property: str | None,
) -> tuple[str, str, bool]:
    """(code, name, code was generated)."""
    name = _first(props, (name_property,) if name_property else _NAME_PROPERTIES)
    if name is None and name_property:
        raise RegionFileError(
            f"{label}: feature {index}: no value for name property {name_property!r} "
            f"(properties: {_property_list(props)})"
        )
    generated = False
    if code_property:
        code = _text(_prop(props, code_property))
        if code is None:
            raise RegionFileError(
                f"{label}: feature {index}: no value for code property {code_property!r} "
                f"(properties: {_property_list(props)})"
            )
    else:
        code = _first(props, _CODE_PROPERTIES, _EXACT_CODE_PROPERTIES)
        if code is None:
            basis = _first(props, _CODE_NAME_PROPERTIES) or name
            if basis is None:
                raise RegionFileError(
                    f"{label}: feature {index}: no code property ({', '.join(_CODE_PROPERTIES)}) and no name: "
                    f"choose them with --code-property and --name-property (properties: {_property_list(props)})"
                )
            code = generated_region_code(basis)
            generated = True
    code = short_civil_code(code)
    if len(code) > _MAX_CODE:
        raise RegionFileError(f"{label}: feature {index}: code {code[:40]!r}... is longer than {_MAX_CODE} characters")
    return code, (name or code)[:_MAX_NAME], generated


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


# --- GeoJSON boundaries -------------------------------------------------------------------------------


def read_region_geojson(
    path: PathLike,
    *,
    crs: str = "auto",
    code_property: str | None = None,
    name_property: str | None = None,
) -> list[RegionRecord]:
    """Read Polygon/MultiPolygon features from a FeatureCollection, a JSON array of Features or one Feature.

    ``crs``: "auto", "wgs84", "gcj02" or a coordinate system (``EPSG:2326``, WKT). "auto": GCJ-02 when the file
    name contains "gcj" or a ``crs`` member names GCJ, the system a ``crs`` member names (legacy GeoJSON), else
    WGS-84. Features of other geometry types are skipped with a warning; a file without any polygon is an error.
    """
    stated = _crs_option(crs)
    p = Path(path)
    try:
        with p.open(encoding="utf-8-sig") as fh:
            doc = json.load(fh)
    except FileNotFoundError as exc:
        raise RegionFileError(f"{p}: no such file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RegionFileError(f"{p}: not a readable JSON file: {str(exc)[:200]}") from exc
    frame = stated or _geojson_frame(p, doc)
    items = (
        (index, _feature_geometry(p, index, f), _properties(p, index, f)) for index, f in enumerate(_features(p, doc))
    )
    records = _boundary_records(p.name, items, frame, code_property=code_property, name_property=name_property)
    return _merge_same_code(p.name, records)


def _geojson_frame(path: Path, doc: Any) -> _Frame:
    member = doc.get("crs") if isinstance(doc, dict) else None
    crs_text = json.dumps(member, ensure_ascii=False).lower() if member is not None else ""
    if "bd09" in crs_text or "baidu" in crs_text:
        # Baidu's BD-09 is a second offset on top of GCJ-02; treating it as either datum would be wrong.
        raise RegionFileError(f"{path}: BD-09 (Baidu) coordinates are not supported; convert to WGS-84")
    if "gcj" in path.name.lower() or "gcj" in crs_text:
        return _GCJ02_FRAME
    name = member.get("properties", {}).get("name") if isinstance(member, dict) else None
    if isinstance(name, str) and name.strip():
        return _frame_from_crs_text(path.name, name, f"crs member {name[:60]!r}")
    return _WGS84_FRAME


def _properties(path: Path, index: int, feature: Mapping[str, Any]) -> Mapping[str, Any]:
    props = feature.get("properties") or {}
    if not isinstance(props, Mapping):
        raise RegionFileError(f"{path}: feature {index}: properties is not an object")
    return props


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


# --- Shapefile boundaries -----------------------------------------------------------------------------


def read_region_shapefile(
    path: PathLike,
    *,
    crs: str = "auto",
    code_property: str | None = None,
    name_property: str | None = None,
) -> list[RegionRecord]:
    """Read the polygons of a ``.shp`` (with its ``.dbf``, ``.prj``, ``.cpg``, ``.shx`` beside it) or of every
    Shapefile in a ``.zip``.

    The DBF text encoding comes from the ``.cpg``; without one, UTF-8 is tried, then GBK/GB18030. The coordinate
    system comes from the ``.prj`` (projected systems are converted to WGS-84 with pyproj); ``crs`` overrides
    it. Without a ``.prj`` the coordinates must be longitude/latitude (WGS-84, or GCJ-02 by the "gcj" rule).
    """
    stated = _crs_option(crs)
    p = Path(path)
    if not p.is_file():
        raise RegionFileError(f"{p}: no such file")
    if p.suffix.lower() == ".zip":
        with tempfile.TemporaryDirectory(prefix="vms-shp-") as tmp:
            records: list[RegionRecord] = []
            for label, parts in _zip_layers(p, Path(tmp)):
                records.extend(_read_shapefile_layer(label, parts, stated, code_property, name_property))
        return _merge_same_code(p.name, records)
    parts = {".shp": p}
    for suffix in _SHAPEFILE_PARTS[1:]:
        for variant in (suffix, suffix.upper()):
            sibling = p.with_suffix(variant)
            if sibling.is_file():
                parts[suffix] = sibling
                break
    return _merge_same_code(p.name, _read_shapefile_layer(p.name, parts, stated, code_property, name_property))


def _zip_layers(path: Path, tmp: Path) -> list[tuple[str, dict[str, Path]]]:
    """Unpack each Shapefile of a .zip (its parts only, at most _MAX_ZIP_BYTES in all) into ``tmp``."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise RegionFileError(f"{path}: not a readable .zip: {exc}") from exc
    with archive:
        layers: dict[str, dict[str, zipfile.ZipInfo]] = {}
        for info in archive.infolist():
            member = info.filename.replace("\\", "/")
            base = member.rsplit("/", 1)[-1]
            if info.is_dir() or member.startswith("__MACOSX/") or base.startswith("._"):
                continue
            stem, dot, ext = base.rpartition(".")
            suffix = f"{dot}{ext}".lower()
            if not dot or suffix not in _SHAPEFILE_PARTS:
                continue
            folder = member[: len(member) - len(base)]
            layers.setdefault(folder + stem, {})[suffix] = info
        shapefiles = sorted((key, parts) for key, parts in layers.items() if ".shp" in parts)
        if not shapefiles:
            raise RegionFileError(f"{path}: the .zip holds no .shp file")
        budget = _MAX_ZIP_BYTES
        out: list[tuple[str, dict[str, Path]]] = []
        for n, (key, members) in enumerate(shapefiles):
            files: dict[str, Path] = {}
            for suffix, info in members.items():
                target = tmp / f"layer{n}{suffix}"
                budget = _unpack(path, archive, info, target, budget)
                files[suffix] = target
            out.append((f"{path.name}:{key}.shp", files))
        return out


def _unpack(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int) -> int:
    try:
        with archive.open(info) as src, target.open("wb") as dst:
            while chunk := src.read(1 << 20):
                budget -= len(chunk)
                if budget < 0:
                    raise RegionFileError(f"{path}: unpacks to more than {_MAX_ZIP_BYTES >> 20} MB: refused")
                dst.write(chunk)
    except RegionFileError:
        raise
    except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: an unsupported compression method.
        raise RegionFileError(f"{path}: cannot unpack {info.filename}: {exc}") from exc
    return budget


def _read_shapefile_layer(
    label: str,
    parts: Mapping[str, Path],
    stated: _Frame | None,
    code_property: str | None,
    name_property: str | None,
) -> list[RegionRecord]:
    dbf = parts.get(".dbf")
    if dbf is None:
        raise RegionFileError(f"{label}: no .dbf beside the .shp: the region names and codes are in it")
    encoding, errors = _dbf_encoding(label, dbf, parts.get(".cpg"))
    prj = parts.get(".prj")
    try:
        prj_text = prj.read_text(encoding="utf-8", errors="replace") if prj is not None else None
    except OSError as exc:
        raise RegionFileError(f"{label}: cannot read the .prj: {exc}") from exc
    with ExitStack() as files, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # pyshp warns about damaged headers: logged below, not printed
        handles = {k: files.enter_context(parts[k].open("rb")) for k in (".shp", ".shx", ".dbf") if k in parts}
        try:
            reader = shapefile.Reader(
                shp=handles[".shp"],
                shx=handles.get(".shx"),
                dbf=handles[".dbf"],
                encoding=encoding,
                encodingErrors=errors,
            )
            frame = stated or _shapefile_frame(label, prj_text, reader)
            records = _boundary_records(
                label,
                _shapefile_items(label, reader),
                frame,
                code_property=code_property,
                name_property=name_property,
            )
        except RegionFileError:
            raise
        except (shapefile.ShapefileException, OSError, ValueError, struct.error, IndexError, EOFError) as exc:
            raise RegionFileError(f"{label}: not a readable Shapefile: {str(exc)[:200]}") from exc
        finally:
            for w in caught:
                log.warning("%s: %s", label, w.message)
    log.info("%s: %d regions, DBF text %s, coordinates %s", label, len(records), encoding, frame.label)
    return records


def _shapefile_items(label: str, reader: shapefile.Reader) -> Iterator[_Item]:
    for index, item in enumerate(reader.iterShapeRecords()):
        shp = item.shape
        geom: BaseGeometry | None = None
        if shp.shapeType in _POLYGON_TYPES and shp.points:
            try:
                geom = shapely.force_2d(shape(shp.__geo_interface__))
            except (ValueError, TypeError, AttributeError, IndexError, shapely.errors.GEOSException) as exc:
                raise RegionFileError(f"{label}: record {index}: bad polygon: {exc}") from exc
        yield index, geom, item.record.as_dict()


def _shapefile_frame(label: str, prj_text: str | None, reader: shapefile.Reader) -> _Frame:
    if prj_text and prj_text.strip():
        return _frame_from_crs_text(label, prj_text, "the .prj")
    x0, y0, x1, y1 = (float(v) for v in reader.bbox)
    if _lon_lat_box(x0, y0, x1, y1):
        log.warning("%s: no .prj: coordinates taken as longitude/latitude", label)
        return _GCJ02_FRAME if "gcj" in label.lower() else _WGS84_FRAME
    raise RegionFileError(
        f"{label}: no .prj beside the .shp and the coordinates (x {x0:.6g}..{x1:.6g}) are not longitude/latitude: "
        "give the coordinate system with --crs, e.g. --crs EPSG:4549"
    )


def _cpg_encoding(label: str, text: str) -> str | None:
    """The encoding a .cpg names (``UTF-8``, ``GBK``, ``936``, ``ANSI 936``...), None when it names none."""
    key = text.strip().upper().replace("-", "").replace("_", "").replace(" ", "")
    if key.startswith("ANSI") and key[4:].isdigit():
        key = key[4:]
    if key in _CPG_UNKNOWN:
        return None
    # GBK and GB2312 text decodes the same with GB18030, which also covers the characters GBK lacks.
    if key in ("GBK", "GB2312", "GB18030", "936", "CP936", "54936"):
        return "gb18030"
    candidate = f"cp{key}" if key.isdigit() else text.strip()
    if key in ("65001", "UTF8"):
        candidate = "utf-8"
    try:
        return codecs.lookup(candidate).name
    except LookupError:
        log.warning("%s: the .cpg names an unknown encoding %r: detecting the DBF text encoding", label, text[:40])
        return None


def _dbf_decodes(dbf: Path, encoding: str) -> bool:
    try:
        with dbf.open("rb") as fh:
            reader = shapefile.Reader(dbf=fh, encoding=encoding, encodingErrors="strict")
            for _ in reader.iterRecords():
                pass
    except (UnicodeDecodeError, shapefile.ShapefileException):
        return False
    return True


def _dbf_encoding(label: str, dbf: Path, cpg: Path | None) -> tuple[str, str]:
    """(encoding, errors) for the DBF text: the .cpg's if its text decodes, else UTF-8, else GB18030 (GBK)."""
    declared = None
    if cpg is not None:
        try:
            declared = _cpg_encoding(label, cpg.read_bytes()[:100].decode("ascii", errors="replace"))
        except OSError as exc:
            raise RegionFileError(f"{label}: cannot read the .cpg: {exc}") from exc
    candidates = [declared] if declared else []
    candidates += [e for e in ("utf-8", "gb18030") if e not in candidates]
    for encoding in candidates:
        if _dbf_decodes(dbf, encoding):
            if declared and encoding != declared:
                log.warning(
                    "%s: the .cpg says %s but the DBF text is %s: read as %s", label, declared, encoding, encoding
                )
            return encoding, "strict"
    log.warning("%s: DBF text is neither UTF-8 nor GBK: undecodable bytes replaced", label)
    return "gb18030", "replace"


# --- dispatch -----------------------------------------------------------------------------------------


def read_regions(
    path: PathLike,
    *,
    crs: str = "auto",
    code_property: str | None = None,
    name_property: str | None = None,
) -> list[RegionRecord]:
    """Directory or .csv -> admin codes; .json / .geojson / .shp / .zip -> boundaries (keywords apply to those)."""
    p = Path(path)
    if p.is_dir():
        return read_admin_codes(p)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return read_admin_codes(p)
    if suffix in (".json", ".geojson"):
        return read_region_geojson(p, crs=crs, code_property=code_property, name_property=name_property)
    if suffix in (".shp", ".zip"):
        return read_region_shapefile(p, crs=crs, code_property=code_property, name_property=name_property)
    raise RegionFileError(
        f"{p}: unsupported region file type {suffix or '(none)'}: use a directory, .csv, .json, .geojson, .shp or"
        " a .zip of Shapefiles"
    )
