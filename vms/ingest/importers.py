"""Readers that turn a camera ledger or a platform catalog file into :class:`vms.catalog.domain.ParsedRow` records.

Formats: CSV/TSV (UTF-8, UTF-8 with BOM, GBK/GB18030), XLSX, JSON, GeoJSON and GB/T 28181 Catalog XML.
Every format goes through the same column map, value parsers and row checks, and every issue carries the
line a person sees when opening the file (CSV line, sheet row, XML element line, JSON record number).
"""

from __future__ import annotations

import csv
import gc
import io
import json
import logging
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

from lxml import etree

from vms.catalog.columns import (
    COORD_GARBAGE,
    CRS,
    EASTING,
    ID_MALFORMED,
    LONLAT,
    NORTHING,
    PSEUDO_FIELDS,
    VALUE_DROPPED,
    ColumnMap,
    HeaderPlan,
    cell_text,
    parser_for,
)
from vms.catalog.domain import ParsedRow, RowIssue
from vms.catalog.fields import FIELD_NAMES, FIELDS, Kind
from vms.geo.projection import CrsError, parse_crs, project_point
from vms.ingest import osm
from vms.ingest.catalog_ext import EXT_TAG, read_ext

__all__ = [
    "FORMATS",
    "ReadError",
    "ReadResult",
    "detect_format",
    "read_records",
    "safe_xml_parser",
]

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "xlsx", "json", "geojson", "xml", "osm")
_SUFFIXES = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".json": "json",
    ".geojson": "geojson",
    ".xml": "xml",
    ".osm": "xml",  # OpenStreetMap XML (read as OSM by its <osm> root)
}
_FORMAT_ALIASES = {"excel": "xlsx", "tsv": "csv", "catalog": "xml", "txt": "csv"}

HEADER_SEARCH_ROWS = 10  # title and note lines above the header in real ledgers
MIN_HEADER_FIELDS = 2

# Fields that let the inventory recognise a camera at all (see domain.identity_keys, plus the ledger key).
_IDENTITY_SET = frozenset(("device_id", "name", "ip_address", "mac", "serial_number", "local_id", "endpoint_ref"))

# Row issue codes (stable: reports and tests key on them).
ID_DUPLICATE = "ID-DUPLICATE"
DUPLICATE_NAME_POSITION = "DUPLICATE-NAME-POSITION"
ENCODING = "ENCODING"
NO_IDENTITY = "NO-IDENTITY"
COORD_SWAPPED = "COORD-SWAPPED"
COORD_MISSING = "COORD-MISSING"
COORD_PROJECTED = "COORD-PROJECTED"  # easting/northing that could not be converted (no or a wrong CRS)
EXTRA_CELLS = "EXTRA-CELLS"
COLUMN_DUPLICATE = "COLUMN-DUPLICATE"
RECORD_INVALID = "RECORD-INVALID"
CATALOG_INCOMPLETE = "CATALOG-INCOMPLETE"
CATALOG_REGION = "CATALOG-REGION"
GEOMETRY_IGNORED = "GEOMETRY-IGNORED"
ID_AS_LOCAL = "ID-AS-LOCAL-ID"  # file note: a bare `id` column taken as the department number
VALUE_TOO_LONG = "VALUE-TOO-LONG"
CONTROL_CHARACTERS = "CONTROL-CHARACTERS"

# Notes whose value was not kept: the row lands without it and the text as written goes to the record's extra
# (under its own header), so nothing the file said is lost and an export carries it again.
_DROPPING_CODES = frozenset({COORD_GARBAGE, ID_MALFORMED, VALUE_DROPPED})
_MAX_LEN = {f.name: f.max_len for f in FIELDS if f.kind is Kind.TEXT}
_COORDINATE_NAMES = frozenset({"longitude", "latitude", LONLAT})


class ReadError(ValueError):
    """The file as a whole cannot be read (unknown format, no header row, not well-formed)."""


@dataclass(slots=True)
class ReadResult:
    format: str
    encoding: str | None
    rows: list[ParsedRow]  # every record, rejected ones included (ParsedRow.rejected)
    issues: list[RowIssue]  # all issues: the rows' and the file's, in file order
    total_rows: int
    columns: dict[str, str] = field(default_factory=dict)  # source header / element -> canonical field
    unmapped: list[str] = field(default_factory=list)  # headers whose values went to ParsedRow.extra

    @property
    def accepted(self) -> list[ParsedRow]:
        return [r for r in self.rows if not r.rejected]

    @property
    def rejected(self) -> list[ParsedRow]:
        return [r for r in self.rows if r.rejected]


# --------------------------------------------------------------------------------------------------------
# Row checks shared by every format
# --------------------------------------------------------------------------------------------------------

_PARSERS = {name: parser_for(name) for name in (*FIELD_NAMES, *PSEUDO_FIELDS)}

# The coordinate system stated for the file being read (read_records(crs=...), `vms import --crs`): what its
# easting/northing columns are in. Set for the duration of one read_records call.
_FILE_CRS: ContextVar[str | None] = ContextVar("file_crs", default=None)


class _Assembler:
    """Parses mapped values, checks each row and remembers earlier rows for the duplicate checks."""

    def __init__(self, unit: str) -> None:
        self.unit = unit  # "line", "row" or "record": how a person finds the record
        self.crs = _FILE_CRS.get()  # of easting/northing columns, unless a row names its own
        self.rows: list[ParsedRow] = []
        self.issues: list[RowIssue] = []
        self.columns: dict[str, str] = {}
        self.unmapped: dict[str, None] = {}
        self._plans_seen: dict[int, HeaderPlan] = {}  # holding the plan keeps its id unique
        self._id_notes: set[str] = set()
        self._header_of: dict[str, str] = {}  # canonical field -> the header it was first read from
        self._ids: dict[str, int] = {}
        self._name_pos: dict[tuple[str, float, float], int] = {}

    def where(self, line: int) -> str:
        return f"{self.unit} {line}"

    def file_issue(self, line: int, code: str, reason: str, *, fatal: bool = False) -> None:
        self.issues.append(RowIssue(line, code, f"{self.where(line)}: {reason}", fatal))

    def note_plan(self, headers: Sequence[str], plan: HeaderPlan) -> None:
        if id(plan) in self._plans_seen:
            return
        self._plans_seen[id(plan)] = plan
        if plan.id_as_local is not None and plan.id_as_local not in self._id_notes:
            self._id_notes.add(plan.id_as_local)
            self.issues.append(
                RowIssue(
                    0,
                    ID_AS_LOCAL,
                    f"column {plan.id_as_local!r} is the only thing identifying the cameras: its values are kept as "
                    f"the department number (local_id); --map '{plan.id_as_local}=FIELD' reads it otherwise",
                    fatal=False,
                    field="local_id",
                )
            )
        for idx, name in plan.fields.items():
            self.columns.setdefault(headers[idx], name)
            self._header_of.setdefault(name, headers[idx])
        for key in plan.extra.values():
            self.unmapped.setdefault(key)

    def reject(self, line: int, code: str, reason: str) -> None:
        """A record that is not a record at all (e.g. a JSON string where an object belongs)."""
        issue = RowIssue(line, code, f"{self.where(line)}: {reason}")
        self.rows.append(ParsedRow(line=line, fields={}, issues=[issue]))
        self.issues.append(issue)

    def add(
        self,
        line: int,
        values: Sequence[tuple[str, object]],
        extra: dict[str, str],
        pre: Sequence[RowIssue] = (),
    ) -> ParsedRow:
        # Hot path (100,000-row ledgers): no per-row strings or generator expressions unless something is wrong.
        issues: list[RowIssue] = list(pre)
        fields: dict[str, Any] = {}
        id_given = False
        parsers = _PARSERS
        limits = _MAX_LEN
        for name, raw in values:
            value, notes = parsers[name](raw)
            if notes:
                # A value that cannot be read never rejects the row (only a missing identity or a duplicate
                # does): the camera lands without it, the text is kept in extra, and the row is reported.
                where = self.where(line)
                dropped = False
                for note in notes:
                    issues.append(RowIssue(line, note.code, f"{where}: {name}: {note.message}", False, name))
                    if note.code == ID_MALFORMED:
                        id_given = True
                    dropped = dropped or note.code in _DROPPING_CODES
                if dropped and value is None:
                    self._keep_raw(name, raw, extra)
            elif type(value) is str and len(value) > limits.get(name, 1 << 30):
                issues.append(
                    RowIssue(
                        line,
                        VALUE_TOO_LONG,
                        f"{self.where(line)}: {name}: {len(value):,} characters, more than the {limits[name]} "
                        "the field holds: kept in extra",
                        False,
                        name,
                    )
                )
                self._keep_raw(name, raw, extra)
                continue
            if value is not None:
                fields[name] = value
        if LONLAT in fields:  # a combined coordinate column; separate columns win when both exist
            pair = fields.pop(LONLAT)
            fields.setdefault("longitude", pair[0])
            fields.setdefault("latitude", pair[1])
        if EASTING in fields or NORTHING in fields or CRS in fields:
            self._project(line, fields, extra, issues)
        lon = fields.get("longitude")
        lat = fields.get("latitude")
        if (
            issues
            or lon is None
            or lat is None
            or not -90 <= lat <= 90
            or not -180 <= lon <= 180
            or (3 <= lon <= 54 and lat >= 73)
        ):
            self._check_coordinates(line, self.where(line), fields, issues, extra, values)
        if _IDENTITY_SET.isdisjoint(fields):
            if id_given:  # the malformed ID was all there was: the row cannot name a camera
                issues = [
                    replace(i, fatal=True, reason=i.reason + "; nothing else identifies the camera")
                    if i.code == ID_MALFORMED
                    else i
                    for i in issues
                ]
            else:
                issues.append(
                    RowIssue(
                        line,
                        NO_IDENTITY,
                        f"{self.where(line)}: nothing identifies the camera "
                        "(no device ID, name, IP, MAC, serial or local ID)",
                    )
                )
        if not issues or not any(i.fatal for i in issues):
            self._check_duplicates(line, fields, issues)
        row = ParsedRow(line=line, fields=fields, extra=extra, issues=issues)
        self.rows.append(row)
        if issues:
            self.issues.extend(issues)
        return row

    def _keep_raw(self, name: str, raw: object, extra: dict[str, str]) -> None:
        """The text of a value that was not kept, in extra under the header it came from."""
        text = cell_text(raw)
        if not text:
            return
        key = self._header_of.get(name, name)
        if key in extra and extra[key] != text:
            key = f"{key} ({name})"
        extra[key] = text

    def _drop_position(
        self, fields: dict[str, Any], extra: dict[str, str], values: Sequence[tuple[str, object]]
    ) -> None:
        """Land the row without a position; the coordinates as written go to extra (a position needs both)."""
        fields.pop("longitude", None)
        fields.pop("latitude", None)
        for name, raw in values:
            if name in _COORDINATE_NAMES:
                self._keep_raw(name, raw, extra)

    def _project(self, line: int, fields: dict[str, Any], extra: dict[str, str], issues: list[RowIssue]) -> None:
        """Easting/northing in the row's or the file's CRS -> WGS-84 longitude/latitude (vms.geo.projection).

        The values as written stay in extra (as "easting", "northing", "crs"). Longitude/latitude columns, when
        the row has both, win: they need no conversion. A row that cannot be converted lands without a position
        and is reported.
        """
        easting, northing, crs = fields.pop(EASTING, None), fields.pop(NORTHING, None), fields.pop(CRS, None)
        for name, raw in ((EASTING, easting), (NORTHING, northing), (CRS, crs)):
            if raw is not None:
                extra.setdefault(name, raw)
        if easting is None or northing is None or ("longitude" in fields and "latitude" in fields):
            return
        crs = crs or self.crs
        if crs is None:
            reason = "easting/northing without a coordinate system: give --crs (e.g. EPSG:2326) or a crs column"
        else:
            try:
                fields["longitude"], fields["latitude"] = project_point(easting, northing, crs)
                return
            except CrsError as exc:
                reason = str(exc)
        issues.append(RowIssue(line, COORD_PROJECTED, f"{self.where(line)}: {reason}", False, "longitude"))

    def _check_coordinates(
        self,
        line: int,
        where: str,
        fields: dict[str, Any],
        issues: list[RowIssue],
        extra: dict[str, str],
        values: Sequence[tuple[str, object]],
    ) -> None:
        if any(i.code == COORD_GARBAGE for i in issues):
            self._drop_position(fields, extra, values)
            return
        lon: float | None = fields.get("longitude")
        lat: float | None = fields.get("latitude")
        # Ledgers often fill the columns the wrong way round; in China (lon 73..136, lat 3..54) the two
        # ranges do not overlap, elsewhere only a latitude beyond 90 proves the swap.
        if (
            lon is not None
            and lat is not None
            and ((abs(lat) > 90 and abs(lon) <= 90 and abs(lat) <= 180) or (3 <= lon <= 54 and 73 <= lat <= 136))
        ):
            lon, lat = lat, lon
            fields["longitude"], fields["latitude"] = lon, lat
            issues.append(
                RowIssue(
                    line,
                    COORD_SWAPPED,
                    f"{where}: longitude and latitude were swapped ({lat}, {lon}): fixed",
                    fatal=False,
                )
            )
        bad = []
        if lon is not None and not -180 <= lon <= 180:
            bad.append(f"longitude {lon}")
        if lat is not None and not -90 <= lat <= 90:
            bad.append(f"latitude {lat}")
        if bad:
            issues.append(
                RowIssue(
                    line,
                    COORD_GARBAGE,
                    f"{where}: {' and '.join(bad)} out of range: landed without a position, the values kept in extra",
                    False,
                    "longitude",
                )
            )
            self._drop_position(fields, extra, values)
            return
        if lon is None or lat is None:
            missing = [n for n, v in (("longitude", lon), ("latitude", lat)) if v is None]
            issues.append(
                RowIssue(
                    line,
                    COORD_MISSING,
                    f"{where}: {' and '.join(missing)} missing or 0 (not reported)",
                    fatal=False,
                    field=missing[0] if len(missing) == 1 else None,
                )
            )

    def _check_duplicates(self, line: int, fields: dict[str, Any], issues: list[RowIssue]) -> None:
        device_id = fields.get("device_id")
        if device_id is not None:
            first = self._ids.get(device_id)
            if first is not None:
                issues.append(
                    RowIssue(
                        line,
                        ID_DUPLICATE,
                        f"{self.where(line)}: device ID {device_id} already appears on {self.unit} {first}",
                        field="device_id",
                    )
                )
                return
        name, lon, lat = fields.get("name"), fields.get("longitude"), fields.get("latitude")
        # Same text gives the same float, so exact comparison finds copied rows.
        key = (name, lon, lat) if name and lon is not None and lat is not None else None
        if key is not None:
            first = self._name_pos.get(key)
            if first is not None:
                issues.append(
                    RowIssue(
                        line,
                        DUPLICATE_NAME_POSITION,
                        f"{self.where(line)}: same name {name!r} and position as {self.unit} {first}",
                        field="name",
                    )
                )
                return
            self._name_pos[key] = line
        if device_id is not None:
            self._ids[device_id] = line

    def result(self, fmt: str, encoding: str | None) -> ReadResult:
        self.issues.sort(key=lambda i: i.line)  # stable: file issues before the row issues of their line
        return ReadResult(
            format=fmt,
            encoding=encoding,
            rows=self.rows,
            issues=self.issues,
            total_rows=len(self.rows),
            columns=self.columns,
            unmapped=list(self.unmapped),
        )


# --------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------


def detect_format(path: Path, head: bytes = b"") -> str:
    """Format from the suffix, or from the first bytes when the suffix says nothing."""
    by_suffix = _SUFFIXES.get(path.suffix.lower())
    if by_suffix and path.suffix.lower() not in {".txt", ".json"}:
        return by_suffix
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if path.suffix.lower() == ".pbf":
        raise ReadError(f"{path.name}: OpenStreetMap PBF is binary: convert it to .osm XML (osmium cat) first")
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise ReadError(f"{path.name}: legacy binary .xls workbook: save it as .xlsx or CSV first")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        return "xml"
    if text.startswith((b"{", b"[")):
        return "json"  # GeoJSON is recognised after parsing
    return by_suffix or "csv"


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Reading 100,000 rows allocates millions of small acyclic containers; the cyclic collector would scan
    # them again and again for nothing (about a quarter of the read time, measured).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_records(
    path: Path,
    *,
    fmt: str | None = None,
    column_map: ColumnMap | None = None,
    encoding: str | None = None,
    crs: str | None = None,
) -> ReadResult:
    """Read one ledger or catalog file; rows that fail a fatal check are returned with their issues.

    ``crs`` (``EPSG:2326``, WKT): what the file's easting/northing columns are in; they are converted to WGS-84
    longitude/latitude. A ``crs`` column, where filled, wins for its row.
    """
    if crs is not None:
        try:
            parse_crs(crs)
        except CrsError as exc:
            raise ReadError(f"--crs: {exc}") from exc
    token = _FILE_CRS.set(crs)
    try:
        with _gc_paused():
            result = _read_records(Path(path), fmt=fmt, column_map=column_map, encoding=encoding)
    finally:
        _FILE_CRS.reset(token)
    if crs is not None and not {EASTING, NORTHING} <= set(result.columns.values()):
        raise ReadError(
            f"--crs {crs}: the file has no easting and northing columns to convert "
            "(name them with --map HEADER=easting --map HEADER=northing)"
        )
    return result


def _read_records(path: Path, *, fmt: str | None, column_map: ColumnMap | None, encoding: str | None) -> ReadResult:
    cmap = column_map or ColumnMap()
    if fmt is not None:
        fmt = _FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
        if fmt not in FORMATS:
            raise ReadError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "xlsx" or (fmt is None and path.suffix.lower() in {".xlsx", ".xlsm"}):
        return _read_xlsx(path, cmap)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReadError(f"{path}: cannot read: {exc.strerror}") from exc
    fmt = fmt or detect_format(path, data[:64])
    if fmt == "osm":  # Overpass JSON, OSM GeoJSON or .osm XML: each reader recognises OSM by its content
        fmt = "xml" if data[:64].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<") else "json"
    if fmt == "xlsx":
        return _read_xlsx(path, cmap)
    if fmt == "csv":
        return _read_csv(data, cmap, encoding, tab_first=path.suffix.lower() == ".tsv")
    if fmt in {"json", "geojson"}:
        return _read_json(data, cmap, encoding, geojson=fmt == "geojson")
    return _read_xml(data, cmap, encoding)


# --------------------------------------------------------------------------------------------------------
# Tabular formats (CSV, XLSX)
# --------------------------------------------------------------------------------------------------------


def _find_header(records: Sequence[Sequence[str]], cmap: ColumnMap) -> tuple[int, int]:
    """(index of the header among ``records``, mapped field count); (-1, 0) when none qualifies."""
    for idx, cells in enumerate(records[:HEADER_SEARCH_ROWS]):
        mapped = len(cmap.plan([c.strip() for c in cells]).fields)
        if mapped >= MIN_HEADER_FIELDS:
            return idx, mapped
    return -1, 0


def _no_header_error(what: str) -> ReadError:
    return ReadError(
        f"{what}: no header row in the first {HEADER_SEARCH_ROWS} lines names at least {MIN_HEADER_FIELDS} "
        "known columns (e.g. 设备编码, 设备名称, 经度, 纬度); pass a column map for unusual headers"
    )


def _header_plan(asm: _Assembler, headers: list[str], header_line: int, cmap: ColumnMap) -> HeaderPlan:
    plan = cmap.plan(headers)
    asm.note_plan(headers, plan)
    for idx, name in plan.shadowed.items():
        asm.file_issue(
            header_line,
            COLUMN_DUPLICATE,
            f"column {headers[idx]!r} also names field {name!r}, already read from another column: "
            "kept as an extra column",
        )
    return plan


def _row_values(cells: Sequence[object], field_cols: list[tuple[int, str]]) -> list[tuple[str, object]]:
    n = len(cells)
    values: list[tuple[str, object]] = []
    for idx, name in field_cols:
        if idx < n:
            raw = cells[idx]
            if raw is not None and raw != "":
                values.append((name, raw))
    return values


# --- CSV ---

_UTF8_BOM = b"\xef\xbb\xbf"
_DELIMITERS = (",", "\t", ";", "|")


def _decode_csv(data: bytes, encoding: str | None) -> tuple[str | list[str], str, set[int]]:
    """Text (whole, or as physical lines when some lines are in another encoding), encoding, bad lines.

    UTF-8 is tried strictly first: GBK text is almost never valid UTF-8, while UTF-8 bytes often decode as
    GB18030 without error (as mojibake), so the reverse order would misread UTF-8 files. The encoding is
    chosen per file; lines pasted in from a file of the other encoding are flagged, not guessed.
    """
    bom = data.startswith(_UTF8_BOM)
    body = data[len(_UTF8_BOM) :] if bom else data
    utf8_lines: set[int] = set()  # non-ASCII lines that are valid UTF-8 with Chinese text
    if encoding:
        enc = encoding.lower().replace("_", "-")
        if enc in {"utf-8", "utf8", "utf-8-sig"}:
            enc = "utf-8"
        elif enc in {"gb2312", "gbk", "cp936"}:
            enc = "gb18030"  # a superset: files labelled GB2312 routinely hold GBK-only characters
    else:
        try:
            return body.decode("utf-8"), ("utf-8-sig" if bom else "utf-8"), set()
        except UnicodeDecodeError:
            pass
        # One C-level pass: bytes that are not UTF-8 become lone surrogates, so a line's validity is a search.
        not_utf8 = 0
        view = body.decode("utf-8", errors="surrogateescape")
        for number, line in enumerate(view.split("\n"), start=1):
            if line.isascii():
                continue
            if _SURROGATE.search(line):
                not_utf8 += 1
            elif _CJK.search(line):
                utf8_lines.add(number)
        enc = "utf-8" if bom or len(utf8_lines) > not_utf8 else "gb18030"
        if enc == "utf-8":
            utf8_lines = set()
    label = "utf-8-sig" if bom and enc == "utf-8" else enc
    if not utf8_lines:
        try:
            return body.decode(enc), label, set()
        except UnicodeDecodeError:
            pass
        except LookupError as exc:
            raise ReadError(f"unknown encoding {encoding!r}") from exc
    decoded: list[str] = []
    bad_lines: set[int] = set()
    raw_lines = body.split(b"\n")
    for number, raw in enumerate(raw_lines, start=1):
        end = "" if number == len(raw_lines) else "\n"
        if number in utf8_lines:
            decoded.append(raw.decode("utf-8") + end)
            bad_lines.add(number)
            continue
        try:
            decoded.append(raw.decode(enc) + end)
        except UnicodeDecodeError:
            decoded.append(raw.decode(enc, errors="replace") + end)
            bad_lines.add(number)
    return decoded, label, bad_lines


_CJK = re.compile("[\u4e00-\u9fff]")
_SURROGATE = re.compile("[\udc80-\udcff]")


def _csv_source(text: str | list[str]) -> Iterator[str]:
    return iter(text) if isinstance(text, list) else io.StringIO(text, newline="")


def _sniff_csv(text: str | list[str], cmap: ColumnMap, tab_first: bool) -> tuple[str, int]:
    """Delimiter and header record index: the delimiter under which a header maps the most fields."""
    sample = list(islice(_csv_source(text), 40))
    order = ("\t", ",", ";", "|") if tab_first else _DELIMITERS
    best: tuple[int, str, int] = (0, ",", -1)
    for delimiter in order:
        records = list(islice(csv.reader(sample, delimiter=delimiter), HEADER_SEARCH_ROWS))
        idx, mapped = _find_header(records, cmap)
        if mapped > best[0]:
            best = (mapped, delimiter, idx)
    if best[2] < 0:
        raise _no_header_error("CSV")
    return best[1], best[2]


def _unescape_formula(value: str) -> str:
    # Exported CSV prefixes text starting with = + - @ with "'" so Excel does not run it (see exporters).
    if value.startswith("'") and value[1:2] in {"=", "+", "-", "@"}:
        return value[1:]
    return value


def _read_csv(data: bytes, cmap: ColumnMap, encoding: str | None, *, tab_first: bool = False) -> ReadResult:
    text, label, bad_lines = _decode_csv(data, encoding)
    delimiter, header_idx = _sniff_csv(text, cmap, tab_first)
    asm = _Assembler("line")
    reader = csv.reader(_csv_source(text), delimiter=delimiter)
    prev = 0
    plan: HeaderPlan | None = None
    headers: list[str] = []
    field_cols: list[tuple[int, str]] = []
    extra_cols: list[tuple[int, str]] = []
    try:
        for rec_idx, cells in enumerate(reader):
            start, prev = prev + 1, reader.line_num
            if rec_idx < header_idx:
                continue
            if plan is None:
                headers = [c.strip() for c in cells]
                plan = _header_plan(asm, headers, start, cmap)
                field_cols = list(plan.fields.items())
                extra_cols = list(plan.extra.items())
                continue
            joined = "".join(cells)
            if not joined or joined.isspace():
                continue  # blank separator rows
            pre: list[RowIssue] = []
            if bad_lines and any(n in bad_lines for n in range(start, prev + 1)):
                pre.append(
                    RowIssue(
                        start,
                        ENCODING,
                        f"line {start}: wrong encoding: this line is not {label} like the rest of the file "
                        "(re-save the whole file in one encoding)",
                        fatal=False,
                    )
                )
            if "'" in joined:
                cells = [_unescape_formula(c.strip()) for c in cells]
            n = len(cells)
            extra = {key: text for idx, key in extra_cols if idx < n and (text := cells[idx].strip())}
            if n > len(headers):
                surplus = {f"column {i + 1}": v.strip() for i, v in enumerate(cells) if i >= len(headers) and v.strip()}
                if surplus:
                    extra.update(surplus)
                    pre.append(
                        RowIssue(
                            start,
                            EXTRA_CELLS,
                            f"line {start}: {n} cells but {len(headers)} headers: "
                            f"the surplus kept as {', '.join(surplus)}",
                            fatal=False,
                        )
                    )
            asm.add(start, [(name, cells[idx]) for idx, name in field_cols if idx < n and cells[idx]], extra, pre)
    except csv.Error as exc:
        raise ReadError(f"CSV line {reader.line_num}: {exc}") from exc
    return asm.result("csv", label)


# --- XLSX ---


def _read_xlsx(path: Path, cmap: ColumnMap) -> ReadResult:
    import openpyxl  # heavy import, only when a workbook is read

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ReadError(f"{path.name}: not a readable .xlsx workbook: {exc}") from exc
    try:
        for ws in wb.worksheets:
            # Some non-Excel writers store a wrong <dimension>, which makes read-only mode cut rows short.
            ws.reset_dimensions()
            rows = ws.iter_rows(min_row=1, values_only=True)
            head = [tuple(r) for r in islice(rows, HEADER_SEARCH_ROWS)]
            header_idx, _ = _find_header([[cell_text(c) for c in r] for r in head], cmap)
            if header_idx >= 0:
                return _xlsx_rows(ws.title, head, rows, header_idx, cmap)
    finally:
        wb.close()
    raise _no_header_error(f"{path.name} (no sheet qualifies)")


def _xlsx_rows(
    title: str,
    head: list[tuple[object, ...]],
    rest: Iterator[tuple[object, ...]],
    header_idx: int,
    cmap: ColumnMap,
) -> ReadResult:
    asm = _Assembler("row")
    headers = [cell_text(c) for c in head[header_idx]]
    plan = _header_plan(asm, headers, header_idx + 1, cmap)
    field_cols = list(plan.fields.items())
    extra_cols = list(plan.extra.items())
    all_rows = (*head[header_idx + 1 :],)
    number = header_idx + 1
    for cells in _chain(all_rows, rest):
        number += 1  # missing rows come back empty, so this is the sheet's row number
        if not cells or all(c is None or (isinstance(c, str) and not c.strip()) for c in cells):
            continue
        n = len(cells)
        extra = {key: text for idx, key in extra_cols if idx < n and (text := cell_text(cells[idx]))}
        asm.add(number, _row_values(cells, field_cols), extra)
    log.debug("read sheet %s: %d rows", title, len(asm.rows))
    return asm.result("xlsx", None)


def _chain(first: Iterable[tuple[object, ...]], rest: Iterator[tuple[object, ...]]) -> Iterator[tuple[object, ...]]:
    yield from first
    yield from rest


# --------------------------------------------------------------------------------------------------------
# JSON and GeoJSON
# --------------------------------------------------------------------------------------------------------

_LIST_KEYS = ("cameras", "items", "data", "devices", "devicelist", "records", "list", "rows", "result")


def _decode_text(data: bytes, encoding: str | None) -> tuple[str, str]:
    if encoding:
        try:
            return data.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError) as exc:
            raise ReadError(f"cannot decode as {encoding}: {exc}") from exc
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030"), "gb18030"
    except UnicodeDecodeError as exc:
        raise ReadError(f"neither UTF-8 nor GB18030 text: {exc}") from exc


def _find_list(obj: object, depth: int = 0) -> list[Any] | None:
    if isinstance(obj, list):
        return obj
    if not isinstance(obj, dict) or depth > 2:
        return None
    lowered = {str(k).lower(): v for k, v in obj.items()}
    for key in _LIST_KEYS:
        if key in lowered:
            found = _find_list(lowered[key], depth + 1)
            if found is not None:
                return found
    return None


def _is_geojson(obj: object) -> bool:
    if isinstance(obj, dict):
        return obj.get("type") in {"FeatureCollection", "Feature"}
    if isinstance(obj, list) and obj:
        return isinstance(obj[0], dict) and obj[0].get("type") == "Feature"
    return False


_NESTED_KEYS = frozenset({"Info", "info", "INFO", "extra", "Extra", "EXTRA"})


def _flatten(record: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Record keys with a nested ``Info`` block lifted up (the catalog's own nesting) and ``extra`` split off."""
    if not _NESTED_KEYS.intersection(record):
        return dict(record), {}  # the common flat record
    flat: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, value in record.items():
        lowered = str(key).lower()
        if lowered == "info" and isinstance(value, dict):
            for k, v in value.items():
                flat.setdefault(str(k), v)
        elif lowered == "extra" and isinstance(value, dict):
            extra.update({str(k): text for k, v in value.items() if (text := cell_text(v))})
        else:
            flat[str(key)] = value
    return flat, extra


def _add_mapping_record(
    asm: _Assembler,
    line: int,
    record: Mapping[str, Any],
    cmap: ColumnMap,
    override: Mapping[str, object] | None = None,
    pre: Sequence[RowIssue] = (),
) -> None:
    flat, extra = _flatten(record)
    keys = list(flat)
    plan = cmap.plan(keys)
    asm.note_plan(keys, plan)
    values = [
        (name, flat[keys[idx]])
        for idx, name in plan.fields.items()
        if flat[keys[idx]] is not None and not (override and name in override)
    ]
    if override:
        values.extend((k, v) for k, v in override.items() if v is not None)
    for idx, key in plan.extra.items():
        text = cell_text(flat[keys[idx]])
        if text:
            extra.setdefault(key, text)
    asm.add(line, values, extra, pre)


def _read_json(data: bytes, cmap: ColumnMap, encoding: str | None, *, geojson: bool) -> ReadResult:
    text, label = _decode_text(data, encoding)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReadError(f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if osm.is_osm_json(obj):
        return _osm_result(osm.items_from_json(obj), "record", label)
    if (geojson or _is_geojson(obj)) and osm.is_osm_geojson(obj):
        return _osm_result(osm.items_from_geojson(obj), "record", label)
    if geojson or _is_geojson(obj):
        return _geojson_records(obj, cmap, label)
    records = _find_list(obj)
    if records is None:
        raise ReadError(
            "JSON: expected a list of camera objects, or an object holding one under " + "/".join(_LIST_KEYS)
        )
    asm = _Assembler("record")
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            asm.reject(number, RECORD_INVALID, "not an object")
            continue
        _add_mapping_record(asm, number, record, cmap)
    return asm.result("json", label)


def _geojson_records(obj: object, cmap: ColumnMap, label: str) -> ReadResult:
    if isinstance(obj, dict) and obj.get("type") == "FeatureCollection":
        features = obj.get("features")
    elif isinstance(obj, dict) and obj.get("type") == "Feature":
        features = [obj]
    else:
        features = obj
    if not isinstance(features, list):
        raise ReadError("GeoJSON: expected a FeatureCollection with a list of features")
    asm = _Assembler("record")
    for number, feature in enumerate(features, start=1):
        if not isinstance(feature, dict):
            asm.reject(number, RECORD_INVALID, "not a Feature")
            continue
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            props = {}
        override: dict[str, object] | None = None
        pre: list[RowIssue] = []
        geometry = feature.get("geometry")
        if isinstance(geometry, dict):
            coords = geometry.get("coordinates")
            if (
                geometry.get("type") == "Point"
                and isinstance(coords, list)
                and len(coords) >= 2
                and all(isinstance(c, int | float) and not isinstance(c, bool) for c in coords[:2])
            ):
                override = {"longitude": coords[0], "latitude": coords[1]}  # GeoJSON order: lon, lat
            else:
                pre.append(
                    RowIssue(
                        number,
                        GEOMETRY_IGNORED,
                        f"record {number}: geometry {geometry.get('type')!r} is not a point: ignored",
                        fatal=False,
                    )
                )
        _add_mapping_record(asm, number, props, cmap, override, pre)
    return asm.result("geojson", label)


def _osm_result(items: Iterable[osm.OsmItem], unit: str, label: str | None) -> ReadResult:
    """OpenStreetMap cameras (vms.ingest.osm maps the tags) through the same row checks as every format."""
    asm = _Assembler(unit)
    for item in items:
        if isinstance(item, osm.OsmNote):
            if item.line:
                asm.file_issue(item.line, item.code, item.reason)
            else:
                asm.issues.append(RowIssue(0, item.code, item.reason, fatal=False))
        else:
            where = asm.where(item.line)
            notes = [RowIssue(item.line, code, f"{where}: {why}", False, name) for code, why, name in item.notes]
            asm.add(item.line, item.values, item.extra, notes)
    return asm.result(osm.OSM_FORMAT, label)


# --------------------------------------------------------------------------------------------------------
# GB/T 28181 Catalog XML
# --------------------------------------------------------------------------------------------------------

_XML_DECL = re.compile(r"<\?xml[^>]*\?>")
_DECL_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_GB_ALIASES = {"gb2312", "gbk", "gb-2312", "gb_2312-80", "cp936", "x-gbk", "gb18030"}
_ROOTS = {"Response", "Query", "Notify"}


def safe_xml_parser() -> etree.XMLParser:
    """Parser for untrusted XML: no entity expansion, no DTD loading, no network, bounded tree."""
    return etree.XMLParser(
        resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False, remove_comments=True
    )


def _decode_xml(data: bytes, encoding: str | None) -> tuple[str, str]:
    """Decode a catalog ourselves: devices declare GB2312 yet send GBK characters, or even UTF-8."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
    m = _DECL_ENCODING.match(data[:256])
    declared = (encoding or (m.group(1).decode("ascii") if m else "utf-8")).lower()
    candidates = ["utf-8"]  # valid UTF-8 with Chinese text is practically never GBK
    candidates.append("gb18030" if declared in _GB_ALIASES else declared)
    candidates.append("gb18030")
    for enc in dict.fromkeys(candidates):
        try:
            return data.decode(enc), enc
        except (UnicodeDecodeError, LookupError):
            continue
    raise ReadError(f"XML: bytes are neither UTF-8 nor {declared}")


def _local(tag: object) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _read_xml(data: bytes, cmap: ColumnMap, encoding: str | None) -> ReadResult:
    text, label = _decode_xml(data, encoding)
    # Drop declarations (lxml refuses a str that declares an encoding), keeping line numbers intact.
    if text.count("<?xml") == 1 and text.startswith("<?xml"):
        end = text.index("?>") + 2
        text = "\n" * text.count("\n", 0, end) + text[end:]
    else:
        text = _XML_DECL.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    parser = safe_xml_parser()
    try:
        documents = [etree.fromstring(text, parser)]
    except etree.XMLSyntaxError as first_error:
        # Platforms split a large catalog into many <Response> messages; a dump holds them one after another.
        try:
            wrapper = etree.fromstring(f"<documents>{text}</documents>", safe_xml_parser())
        except etree.XMLSyntaxError:
            raise ReadError(f"XML not well-formed: {first_error}") from first_error
        documents = [d for d in wrapper if isinstance(d.tag, str)]
    if len(documents) == 1 and osm.is_osm_xml(documents[0]):
        if osm.declares_entities(documents[0]):
            raise ReadError("OSM XML declares entities in a DOCTYPE: refused (OpenStreetMap files have none)")
        return _osm_result(osm.items_from_xml(documents[0]), "line", label)
    asm = _Assembler("line")
    found_list = False
    sum_num = 0
    sum_line = 1
    for doc in documents:
        if _local(doc.tag) not in _ROOTS:
            log.debug("XML root %s is not a MANSCDP message", _local(doc.tag))
        for child in doc:
            if _local(child.tag) == "SumNum" and child.text and child.text.strip().isdigit():
                if not sum_num:
                    sum_line = child.sourceline or 1
                # Every message of a split catalog repeats the total.
                sum_num = max(sum_num, int(child.text.strip()))
        for device_list in doc.iter("{*}DeviceList"):
            found_list = True
            for item in device_list:
                if _local(item.tag) == "Item":
                    _add_item(asm, item, cmap)
    if not found_list:
        raise ReadError("XML: no <DeviceList> found (expected a GB/T 28181 Catalog Response)")
    items = len(asm.rows) + sum(1 for i in asm.issues if i.code == CATALOG_REGION)
    if sum_num > items:
        asm.file_issue(
            sum_line,
            CATALOG_INCOMPLETE,
            f"SumNum announces {sum_num} items but the file holds {items}: some catalog messages are missing",
        )
    return asm.result("xml", label)


def _add_item(asm: _Assembler, item: Any, cmap: ColumnMap) -> None:
    tags: list[str] = []
    texts: list[str] = []
    ext: tuple[list[tuple[str, str]], dict[str, str]] | None = None
    for child in item:
        tag = child.tag
        if type(tag) is not str:
            continue  # comments, entity references, processing instructions
        if tag == EXT_TAG:  # our own extension: the fields the standard has no element for, extra columns
            ext = read_ext(child)
            continue
        if tag[0] == "{":
            tag = tag[tag.index("}") + 1 :]
        if (tag == "Info" or tag.lower() == "info") and len(child):
            for sub in child:
                sub_tag = sub.tag
                if type(sub_tag) is str:
                    tags.append(sub_tag[sub_tag.index("}") + 1 :] if sub_tag[0] == "{" else sub_tag)
                    texts.append((sub.text or "").strip())
        else:
            tags.append(tag)
            texts.append((child.text or "").strip())
    line = item.sourceline or 0
    plan = cmap.plan(tags)
    asm.note_plan(tags, plan)
    values = [(name, texts[idx]) for idx, name in plan.fields.items() if texts[idx]]
    device_id = next((v for n, v in values if n == "device_id"), "")
    if len(device_id) in {2, 4, 6, 8} and device_id.isdigit():
        # Administrative-region nodes of the catalog tree carry their civil code as DeviceID: not devices.
        name = next((str(v) for n, v in values if n == "name"), "")
        asm.file_issue(
            line, CATALOG_REGION, f"region node {device_id} {name} is not a device: skipped".replace("  ", " ")
        )
        return
    extra = {key: texts[idx] for idx, key in plan.extra.items() if texts[idx]}
    if ext is not None:
        given = {name for name, _ in values}
        values.extend(pair for pair in ext[0] if pair[0] not in given)
        extra.update(ext[1])
    asm.add(line, values, extra)
