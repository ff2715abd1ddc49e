"""Writers for canonical camera records: CSV (for Excel), GeoJSON (for GIS) and GB/T 28181 Catalog XML.

Each writer streams record by record (the ``*_chunks`` generators give the same text a piece at a time, for an
HTTP response that never holds the whole list), and what it writes reads back through
:mod:`vms.ingest.importers` with the same fields (round trip without loss for the fields each format carries).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lxml import etree

from vms.catalog.columns import ColumnMap, login_free
from vms.catalog.fields import CATALOG_FIELDS, FIELD_NAMES, FIELDS, Kind
from vms.ingest.catalog_ext import ext_element

__all__ = [
    "INFO_FIELDS",
    "catalog_item_text",
    "catalog_xml_chunks",
    "csv_chunks",
    "csv_extra_keys",
    "geojson_chunks",
    "write_catalog_xml",
    "write_csv",
    "write_geojson",
]

# Records per piece a generator yields (a piece is one write to the file or the HTTP response).
BATCH = 200

# GB/T 28181-2022 nests PTZType .. Resolution and the fields the 2022 edition added in an <Info> block.
_FIRST_INFO = FIELD_NAMES.index("ptz_type")
INFO_FIELDS: frozenset[str] = frozenset(f.name for f in FIELDS[_FIRST_INFO:] if f.xml)
_CORE_XML = tuple(f for f in CATALOG_FIELDS if f.name not in INFO_FIELDS)
_INFO_XML = tuple(f for f in CATALOG_FIELDS if f.name in INFO_FIELDS)

_JSON_FIELDS = frozenset(f.name for f in FIELDS if f.kind is Kind.JSON)
# XML 1.0 forbids most control characters; ledgers pasted from other systems do contain them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# Excel runs a cell starting with one of these as a formula (CSV injection); "'" makes it plain text.
_FORMULA_START = ("=", "+", "-", "@")

_DEFAULT_MAP = ColumnMap()


def _as_list(records: Iterable[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    return records if isinstance(records, Sequence) else list(records)


def _extra(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The record's extra columns, never one named like a login (an import before logins were recognised)."""
    extra = record.get("extra")
    return login_free(extra) if isinstance(extra, Mapping) else {}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _csv_cell(name: str | None, value: Any) -> str:
    if name in _JSON_FIELDS and value is not None:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = _text(value)
    if isinstance(value, str) and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def csv_extra_keys(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The extra columns a CSV of ``records`` carries (after the canonical ones), in order."""
    return sorted({str(k) for r in records for k in _extra(r)})


def csv_chunks(records: Iterable[Mapping[str, Any]], extra_keys: Sequence[str]) -> Iterator[str]:
    """The CSV text (without the BOM) a piece at a time: the header, then :data:`BATCH` records a piece."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([*FIELD_NAMES, *extra_keys])
    for n, record in enumerate(records, start=1):
        extra = _extra(record)
        writer.writerow(
            [_csv_cell(name, record.get(name)) for name in FIELD_NAMES]
            + [_csv_cell(None, extra.get(key)) for key in extra_keys]
        )
        if n % BATCH == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def write_csv(records: Iterable[Mapping[str, Any]], path: Path) -> int:
    """UTF-8 with BOM (so Excel detects the encoding); canonical columns in registry order, then extras."""
    rows = _as_list(records)
    with Path(path).open("w", encoding="utf-8-sig", newline="") as fh:
        for piece in csv_chunks(rows, csv_extra_keys(rows)):
            fh.write(piece)
    return len(rows)


def _feature(record: Mapping[str, Any]) -> dict[str, Any]:
    lon, lat = record.get("longitude"), record.get("latitude")
    has_point = lon is not None and lat is not None
    props: dict[str, Any] = {}
    for name in FIELD_NAMES:
        value = record.get(name)
        if value is None or (has_point and name in {"longitude", "latitude"}):
            continue
        props[name] = value
    for key, value in _extra(record).items():
        if value is None or value == "":
            continue
        key = str(key)
        # An extra column whose name is also a header spelling ("地址") would read back as that field:
        # write the field as null first, so the canonical key claims the field and the extra stays extra.
        target = _DEFAULT_MAP.field_for(key)
        if target and target not in props and target != key:
            props[target] = None
        props.setdefault(key, value)
    geometry = {"type": "Point", "coordinates": [lon, lat]} if has_point else None
    return {"type": "Feature", "geometry": geometry, "properties": props}


def geojson_chunks(records: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The GeoJSON text a piece at a time (:data:`BATCH` features a piece)."""
    parts = ['{"type": "FeatureCollection", "features": [\n']
    for n, record in enumerate(records):
        if n:
            parts.append(",\n")
        parts.append(json.dumps(_feature(record), ensure_ascii=False))
        if len(parts) >= 2 * BATCH:
            yield "".join(parts)
            parts = []
    parts.append("\n]}\n")
    yield "".join(parts)


def write_geojson(records: Iterable[Mapping[str, Any]], path: Path) -> int:
    """FeatureCollection of Points ([lon, lat], WGS-84); null geometry for a record without coordinates."""
    count = 0

    def counted() -> Iterator[Mapping[str, Any]]:
        nonlocal count
        for record in records:
            count += 1
            yield record

    with Path(path).open("w", encoding="utf-8", newline="\n") as fh:
        for piece in geojson_chunks(counted()):
            fh.write(piece)
    return count


def _xml_text(value: Any) -> str:
    return _XML_INVALID.sub("", _text(value))


def _item(record: Mapping[str, Any], *, ext: bool = True) -> Any:
    item = etree.Element("Item")
    for f in _CORE_XML:
        value = record.get(f.name)
        if value is not None and value != "":
            etree.SubElement(item, f.xml or f.name).text = _xml_text(value)
    info_values = [(f, record.get(f.name)) for f in _INFO_XML]
    info_values = [(f, v) for f, v in info_values if v is not None and v != ""]
    if info_values:
        info = etree.SubElement(item, "Info")
        for f, value in info_values:
            etree.SubElement(info, f.xml or f.name).text = _xml_text(value)
    extension = ext_element(record, _extra(record), _xml_text) if ext else None
    if extension is not None:
        item.append(extension)
    return item


def catalog_item_text(record: Mapping[str, Any]) -> str:
    """One record as a GB/T 28181 Catalog ``<Item>`` (text, no declaration) with the standard's fields only: no
    ``vms:Ext`` (what goes to another platform carries neither our extra columns nor anything like a login)."""
    text: str = etree.tostring(_item(record, ext=False), encoding="unicode")
    return text


def write_catalog_xml(
    records: Iterable[Mapping[str, Any]],
    path: Path,
    *,
    platform_id: str = "00000000000000000000",
    sn: int = 1,
    encoding: str = "UTF-8",
) -> int:
    """One GB/T 28181 Catalog ``<Response>`` holding every record: the catalog fields as the standard writes them,
    the other fields and the extra columns in each Item's namespaced ``<vms:Ext>`` (see catalog_ext)."""
    rows = _as_list(records)  # SumNum comes before the items
    with Path(path).open("wb") as raw:
        for piece in catalog_xml_chunks(rows, len(rows), platform_id=platform_id, sn=sn, encoding=encoding):
            raw.write(piece)
    return len(rows)


class _Pieces:
    """What xmlfile writes, kept until taken (the file-like object a generator drains)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def catalog_xml_chunks(
    records: Iterable[Mapping[str, Any]],
    count: int,
    *,
    platform_id: str = "00000000000000000000",
    sn: int = 1,
    encoding: str = "UTF-8",
) -> Iterator[bytes]:
    """The Catalog ``<Response>`` of :func:`write_catalog_xml` a piece at a time. ``count``: the SumNum and Num
    announced before the items (the number of ``records``, counted beforehand)."""
    # Declaration written by hand: xmlfile refuses text outside the root, and the newline keeps each
    # element on its own line for people reading the file.
    yield f'<?xml version="1.0" encoding="{encoding}"?>\n'.encode("ascii")
    sink = _Pieces()
    with etree.xmlfile(sink, encoding=encoding) as xf, xf.element("Response"):
        xf.write("\n")
        for tag, text in (("CmdType", "Catalog"), ("SN", str(sn)), ("DeviceID", platform_id)):
            el = etree.Element(tag)
            el.text = text
            xf.write(el, "\n")
        el = etree.Element("SumNum")
        el.text = str(count)
        xf.write(el, "\n")
        with xf.element("DeviceList", Num=str(count)):
            xf.write("\n")
            for n, record in enumerate(records, start=1):
                xf.write(_item(record), pretty_print=True)
                if n % BATCH == 0:
                    xf.flush()
                    yield sink.take()
        xf.write("\n")
    yield sink.take() + b"\n"
