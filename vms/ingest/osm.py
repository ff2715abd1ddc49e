"""OpenStreetMap surveillance cameras: Overpass JSON, ``.osm`` XML and GeoJSON exported from OSM.

OSM is the largest open source of public camera positions. A camera there is an element tagged
``man_made=surveillance`` (https://wiki.openstreetmap.org/wiki/Tag:man_made=surveillance); this module turns each
into the canonical fields the importer parses and checks like any ledger row:

| OSM tag | field |
|---|---|
| element id (``node/123``) | ``local_id`` ``osm:node/123`` (the department number) |
| ``name`` (else ``name:zh``) | ``name`` |
| ``operator`` / ``owner`` | ``management_unit`` (who runs the camera) / ``owner`` |
| ``manufacturer`` (else ``brand``), ``model`` | ``manufacturer``, ``model`` |
| ``camera:type`` fixed / dome / panning | ``ptz_type`` 3 / 2 / 1 |
| ``surveillance`` outdoor / public / indoor | ``room_type`` 1 / 1 / 2 (public areas are streets and squares) |
| ``surveillance:zone`` traffic / town | ``use_type`` 2 / 1 (others, e.g. shop, bank, parking, stay in extra) |
| ``camera:direction`` (else ``direction``): 135, NE, NNE | ``direction_type`` 1-8 (E, W, S, N, SE, NE, SW, NW) |
| ``start_date`` | ``install_time`` |
| ``surveillance:type=ALPR`` (a plate reader) | ``position_type`` 1 checkpoint, ``function_type`` 03, ``use_type`` 2 |

Every tag that is not copied verbatim into a text field stays with the record as an extra column under its
own key (``camera:direction`` keeps the degrees, ``camera:mount``, ``height``, ``surveillance:zone``, ...).
Only cameras count (a plate reader is a checkpoint camera): ``surveillance:type`` guard and elements with other
tags (roads, shops) are skipped with a note; untagged nodes are the geometry of ways and are skipped silently.
Positions are WGS-84, as OSM stores them; a way or relation is placed at its ``center`` (Overpass ``out center``),
else the mean of its nodes or geometry.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "OSM_FORMAT",
    "OsmCamera",
    "OsmNote",
    "declares_entities",
    "direction_code",
    "is_osm_geojson",
    "is_osm_json",
    "is_osm_xml",
    "items_from_geojson",
    "items_from_json",
    "items_from_xml",
]

OSM_FORMAT = "osm"

# Issue codes (stable).
OSM_ID = "OSM-ID"  # file note: element ids are the department numbers
OSM_NOT_CAMERA = "OSM-NOT-CAMERA"  # surveillance:type guard / ...: skipped
OSM_OTHER = "OSM-OTHER-ELEMENTS"  # file note: elements with other tags skipped
OSM_NO_POSITION = "OSM-NO-POSITION"
OSM_DIRECTION = "OSM-DIRECTION"

_ID = re.compile(r"^(node|way|relation)/(\d+)$")
_TYPES = frozenset({"node", "way", "relation"})

# Tags copied verbatim into a text field (not kept again as extra).
_VERBATIM = {
    "name": "name",
    "operator": "management_unit",
    "owner": "owner",
    "manufacturer": "manufacturer",
    "model": "model",
    "start_date": "install_time",
}
_ROOM = {"outdoor": "1", "public": "1", "indoor": "2"}
_ZONE_USE = {"traffic": "2", "town": "1"}
_CAMERA_TYPE = {"fixed": "fixed", "dome": "dome", "panning": "panning"}  # labels the ptz_type parser knows

# Compass points of camera:direction, in degrees.
_COMPASS = {
    name: i * 22.5
    for i, name in enumerate(
        ("N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW", "W", "WNW", "NW", "NNW")
    )
}
# GB/T 28181 DirectionType of the eight 45-degree sectors centred on N, NE, E, SE, S, SW, W, NW.
_SECTOR_CODES = ("4", "6", "1", "5", "3", "7", "2", "8")


@dataclass(slots=True)
class OsmCamera:
    """One camera element: raw values for the importer's field parsers, extra columns, and notes
    (code, reason, field) on what could not be mapped."""

    line: int
    values: list[tuple[str, object]]
    extra: dict[str, str]
    notes: list[tuple[str, str, str | None]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OsmNote:
    """An element that is not a camera, or a note about the whole file; ``line`` 0 = the file."""

    line: int
    code: str
    reason: str


OsmItem = OsmCamera | OsmNote


# --------------------------------------------------------------------------------------------------------
# Tags -> fields
# --------------------------------------------------------------------------------------------------------


def direction_code(raw: str) -> tuple[str | None, float | None]:
    """(DirectionType code, degrees) of a ``camera:direction`` value: ``135``, ``NE``, ``NNE``, ``90;270``
    (the first), ``0-90`` (the middle); (None, None) when neither degrees nor a compass point."""
    text = raw.strip().split(";")[0].strip().upper()
    degrees: float | None = _COMPASS.get(text)
    if degrees is None:
        span = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)", text)
        try:
            if span:
                lo, hi = float(span.group(1)), float(span.group(2))
                degrees = (lo + ((hi - lo) % 360) / 2) % 360
            else:
                degrees = float(text.rstrip("°"))
        except ValueError:
            return None, None
    if not math.isfinite(degrees):
        return None, None
    degrees %= 360
    return _SECTOR_CODES[int((degrees + 22.5) // 45) % 8], degrees


def _is_surveillance(tags: Mapping[str, str]) -> bool:
    return tags.get("man_made") == "surveillance" or "surveillance:type" in tags


def _kinds(tags: Mapping[str, str]) -> list[str]:
    value = tags.get("surveillance:type", "")
    return [v.strip().lower() for v in value.split(";") if v.strip()]


def _camera(
    kind: str, osm_id: str, tags: Mapping[str, str], position: tuple[float, float] | None, line: int
) -> OsmItem:
    ref = f"{kind}/{osm_id}"
    kinds = _kinds(tags)
    alpr = "alpr" in kinds
    if kinds and "camera" not in kinds and not alpr:
        what = tags.get("surveillance:type", "")
        return OsmNote(line, OSM_NOT_CAMERA, f"{ref}: surveillance:type={what} is not a camera: skipped")
    values: list[tuple[str, object]] = [("local_id", f"osm:{ref}")]
    notes: list[tuple[str, str, str | None]] = []
    for tag, name in _VERBATIM.items():
        if tags.get(tag):
            values.append((name, tags[tag]))
    if not tags.get("name") and tags.get("name:zh"):
        values.append(("name", tags["name:zh"]))
    if not tags.get("manufacturer") and tags.get("brand"):
        values.append(("manufacturer", tags["brand"]))
    if position is not None:
        values.append(("longitude", position[0]))
        values.append(("latitude", position[1]))
    else:
        notes.append((OSM_NO_POSITION, f"{ref}: no coordinates (a way without center or nodes)", "longitude"))
    camera_type = tags.get("camera:type", "").strip().lower()
    if camera_type:
        values.append(("ptz_type", _CAMERA_TYPE.get(camera_type, camera_type)))
    room = _ROOM.get(tags.get("surveillance", "").strip().lower())
    if room:
        values.append(("room_type", room))
    use = _ZONE_USE.get(tags.get("surveillance:zone", "").strip().lower())
    if alpr:
        # A plate reader is a checkpoint camera (卡口): position type 1, function 03 motor vehicle, traffic use.
        values += [("position_type", "1"), ("function_type", "03")]
        use = use or "2"
    if use:
        values.append(("use_type", use))
    direction = tags.get("camera:direction") or tags.get("direction")
    if direction:
        code, _ = direction_code(direction)
        if code:
            values.append(("direction_type", code))
        else:
            notes.append(
                (
                    OSM_DIRECTION,
                    f"{ref}: camera:direction {direction!r} is neither degrees nor a compass point: kept as extra",
                    "direction_type",
                )
            )
    extra = {str(k): str(v) for k, v in tags.items() if k not in _VERBATIM and str(v).strip()}
    return OsmCamera(line, values, extra, notes)


class _Sorter:
    """Turns elements into items, counting what is not surveillance for one note at the end."""

    def __init__(self) -> None:
        self.cameras = 0
        self.other = 0
        self.first_other = 0

    def element(
        self, kind: str, osm_id: str, tags: Mapping[str, str], position: tuple[float, float] | None, line: int
    ) -> OsmItem | None:
        if not tags:
            return None  # a way's vertex
        if not _is_surveillance(tags):
            self.other += 1
            self.first_other = self.first_other or line
            return None
        item = _camera(kind, osm_id, tags, position, line)
        self.cameras += isinstance(item, OsmCamera)
        return item

    def notes(self) -> Iterator[OsmNote]:
        if self.cameras:
            yield OsmNote(
                0,
                OSM_ID,
                "OpenStreetMap data: each element's id is kept as the department number (local_id osm:node/…)",
            )
        if self.other:
            yield OsmNote(
                self.first_other,
                OSM_OTHER,
                f"{self.other} elements with other tags (roads, buildings, shops, ...) are not surveillance "
                "devices: skipped (this is the first)",
            )


def _tags(obj: object) -> dict[str, str]:
    if not isinstance(obj, Mapping):
        return {}
    return {str(k): _scalar(v) for k, v in obj.items() if v is not None and _scalar(v)}


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).strip() if isinstance(value, str | int | float) else ""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _lonlat(lon: object, lat: object) -> tuple[float, float] | None:
    x, y = _number(lon), _number(lat)
    return (x, y) if x is not None and y is not None else None


def _mean(points: Iterable[tuple[float, float] | None]) -> tuple[float, float] | None:
    found = [p for p in points if p is not None]
    if not found:
        return None
    # 7 decimals: OSM's own precision (about 1 cm)
    return (round(sum(p[0] for p in found) / len(found), 7), round(sum(p[1] for p in found) / len(found), 7))


# --------------------------------------------------------------------------------------------------------
# Overpass JSON
# --------------------------------------------------------------------------------------------------------


def is_osm_json(obj: object) -> bool:
    """Overpass API JSON (``[out:json]``): an object with an ``elements`` list of typed OSM elements."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("elements"), list):
        return False
    elements = obj["elements"]
    sample = [e for e in elements[:50] if isinstance(e, Mapping)]
    return not elements or any(e.get("type") in _TYPES and "id" in e for e in sample)


def items_from_json(obj: Mapping[str, Any]) -> Iterator[OsmItem]:
    """Items of an Overpass JSON document; record numbers count its elements from 1."""
    elements: list[Any] = obj.get("elements") or []
    nodes: dict[str, tuple[float, float]] | None = None
    sorter = _Sorter()
    for number, element in enumerate(elements, start=1):
        if not isinstance(element, Mapping):
            yield OsmNote(number, "RECORD-INVALID", "not an OSM element: skipped")
            continue
        kind = str(element.get("type", "node"))
        tags = _tags(element.get("tags"))
        if not tags:
            continue
        position = _lonlat(element.get("lon"), element.get("lat"))
        if position is None:
            center = element.get("center")
            if isinstance(center, Mapping):
                position = _lonlat(center.get("lon"), center.get("lat"))
        if position is None and isinstance(element.get("bounds"), Mapping):
            b = element["bounds"]
            position = _mean([_lonlat(b.get("minlon"), b.get("minlat")), _lonlat(b.get("maxlon"), b.get("maxlat"))])
        if position is None and isinstance(element.get("geometry"), list):
            position = _mean(_lonlat(g.get("lon"), g.get("lat")) for g in element["geometry"] if isinstance(g, Mapping))
        if position is None and isinstance(element.get("nodes"), list) and _is_surveillance(tags):
            if nodes is None:
                nodes = {
                    str(e.get("id")): p
                    for e in elements
                    if isinstance(e, Mapping) and e.get("type") == "node"
                    if (p := _lonlat(e.get("lon"), e.get("lat"))) is not None
                }
            position = _mean(nodes.get(ref) for ref in dict.fromkeys(str(r) for r in element["nodes"]))
        item = sorter.element(kind, str(element.get("id", number)), tags, position, number)
        if item is not None:
            yield item
    yield from sorter.notes()


# --------------------------------------------------------------------------------------------------------
# GeoJSON exported from OSM (overpass-turbo, osmtogeojson, ogr2ogr / QGIS)
# --------------------------------------------------------------------------------------------------------


def _feature_ref(feature: Mapping[str, Any]) -> tuple[str, str] | None:
    props = feature.get("properties")
    props = props if isinstance(props, Mapping) else {}
    for candidate in (props.get("@id"), feature.get("id"), props.get("id")):
        if isinstance(candidate, str):
            m = _ID.match(candidate.strip())
            if m:
                return m.group(1), m.group(2)
    if isinstance(props.get("type"), str) and props["type"] in _TYPES and _number(props.get("id")) is not None:
        return str(props["type"]), str(props["id"])  # osmtogeojson before 3.0: type and id apart
    for key, kind in (("osm_id", "node"), ("osm_way_id", "way")):  # ogr2ogr's OSM driver
        value = props.get(key)
        if value is not None and str(value).strip().isdigit():
            return kind, str(value).strip()
    return None


def is_osm_geojson(obj: object) -> bool:
    """A FeatureCollection whose features carry OSM element ids (``node/123``) or ogr's ``osm_id``."""
    if not isinstance(obj, Mapping) or obj.get("type") != "FeatureCollection":
        return False
    features = obj.get("features")
    if not isinstance(features, list):
        return False
    return any(isinstance(f, Mapping) and _feature_ref(f) is not None for f in features[:50])


_HSTORE = re.compile(r'"((?:[^"\\]|\\.)*)"\s*=>\s*"((?:[^"\\]|\\.)*)"')


def _feature_tags(props: Mapping[str, Any]) -> dict[str, str]:
    if isinstance(props.get("tags"), Mapping):  # osmtogeojson before 3.0
        return _tags(props["tags"])
    tags = _tags({k: v for k, v in props.items() if not str(k).startswith("@") and k not in _FEATURE_META})
    other = props.get("other_tags")  # ogr2ogr: the tags without a column of their own, as an hstore string
    if isinstance(other, str):
        for key, value in _HSTORE.findall(other):
            tags.setdefault(key.replace('\\"', '"'), value.replace('\\"', '"'))
    return tags


_FEATURE_META = frozenset({"id", "type", "osm_id", "osm_way_id", "other_tags", "meta", "relations", "tags"})


def _coords_mean(coords: object, depth: int = 0) -> tuple[float, float] | None:
    points: list[tuple[float, float]] = []

    def walk(c: object, d: int) -> None:
        if d > 4 or not isinstance(c, Sequence) or isinstance(c, str):
            return
        if len(c) >= 2 and _number(c[0]) is not None and _number(c[1]) is not None:
            points.append((float(c[0]), float(c[1])))
            return
        for sub in c:
            walk(sub, d + 1)

    walk(coords, depth)
    return _mean(dict.fromkeys(points))  # a closed ring repeats its first point


def items_from_geojson(obj: Mapping[str, Any]) -> Iterator[OsmItem]:
    features: list[Any] = obj.get("features") or []
    sorter = _Sorter()
    for number, feature in enumerate(features, start=1):
        if not isinstance(feature, Mapping):
            yield OsmNote(number, "RECORD-INVALID", "not a Feature: skipped")
            continue
        props = feature.get("properties")
        props = props if isinstance(props, Mapping) else {}
        ref = _feature_ref(feature)
        kind, osm_id = ref if ref else ("node", f"feature{number}")
        geometry = feature.get("geometry")
        position = None
        if isinstance(geometry, Mapping):
            coords = geometry.get("coordinates")
            if geometry.get("type") == "Point" and isinstance(coords, Sequence) and len(coords) >= 2:
                position = _lonlat(coords[0], coords[1])
            else:
                position = _coords_mean(coords)
        item = sorter.element(kind, osm_id, _feature_tags(props), position, number)
        if item is not None:
            yield item
    yield from sorter.notes()


# --------------------------------------------------------------------------------------------------------
# .osm XML (the OSM API, JOSM, Overpass [out:xml])
# --------------------------------------------------------------------------------------------------------


def is_osm_xml(root: Any) -> bool:
    return isinstance(root.tag, str) and root.tag == "osm"


def declares_entities(root: Any) -> bool:
    """OSM never uses a DTD; one declaring entities is an attack (libxml2 expands internal entities in
    attributes, where OSM keeps every value, even with entity resolution off)."""
    dtd = root.getroottree().docinfo.internalDTD
    return dtd is not None and any(True for _ in dtd.iterentities())


def items_from_xml(root: Any) -> Iterator[OsmItem]:
    """Items of a parsed ``<osm>`` document (parse it with the importer's safe parser); lines are the element
    lines."""
    nodes: dict[str, tuple[float, float]] | None = None
    sorter = _Sorter()
    for element in root:
        kind = element.tag
        if kind not in _TYPES:
            continue
        tags = {
            str(t.get("k")): str(t.get("v")).strip()
            for t in element
            if t.tag == "tag" and t.get("k") and (t.get("v") or "").strip()
        }
        if not tags:
            continue
        line = element.sourceline or 0
        position = _lonlat(element.get("lon"), element.get("lat"))
        if position is None:
            center = next((c for c in element if c.tag == "center"), None)
            if center is not None:
                position = _lonlat(center.get("lon"), center.get("lat"))
        if position is None and kind == "way" and _is_surveillance(tags):
            if nodes is None:
                nodes = {
                    str(n.get("id")): p
                    for n in root
                    if n.tag == "node"
                    if (p := _lonlat(n.get("lon"), n.get("lat"))) is not None
                }
            refs = dict.fromkeys(str(nd.get("ref")) for nd in element if nd.tag == "nd")  # closed: first = last
            position = _mean(nodes.get(r) for r in refs)
        item = sorter.element(kind, str(element.get("id", line)), tags, position, line)
        if item is not None:
            yield item
    yield from sorter.notes()
