"""Readers that turn a camera ledger or a platform catalog file into :class:`vms.catalog.domain.ParsedRow` records.

Formats: CSV/TSV (UTF-8, UTF-8 with BOM, GBK/GB18030), XLSX, JSON, GeoJSON and GB/T 28181 Catalog XML.
Every format goes through the same column map, value parsers and row checks, and every issue carries the
line a person sees when opening the file (CSV line, sheet row, XML element line, JSON record number).
"""

from __future__ import annotations

import codecs
import csv
import gc
import hashlib
import io
import json
import logging
import os
import re
import stat
import sys
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from lxml import etree

from vms.catalog.columns import (
    COORD_GARBAGE,
    CRS,
    EASTING,
    ID_MALFORMED,
    LOGIN_USERNAME,
    LONLAT,
    NORTHING,
    PSEUDO_FIELDS,
    VALUE_DROPPED,
    ColumnMap,
    HeaderPlan,
    cell_text,
    login_free,
    parser_for,
)
from vms.catalog.domain import ParsedRow, RowIssue
from vms.catalog.fields import FIELD_NAMES, FIELDS, Kind
from vms.geo.projection import CrsError, parse_crs, project_point
from vms.ingest import osm
from vms.ingest.catalog_ext import EXT_TAG, read_ext
from vms.ingest.keyset import HashIndex

__all__ = [
    "FORMATS",
    "KnownRows",
    "ReadError",
    "ReadResult",
    "detect_format",
    "device_hash",
    "peek_format",
    "read_catalog_documents",
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
LOGIN_COLUMNS = "LOGIN-COLUMNS"  # file note: login columns read into the credential store, not the records

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
    rows: list[ParsedRow]  # every record, rejected ones included (ParsedRow.rejected); empty when streamed
    issues: list[RowIssue]  # the issues (the first ISSUE_CAP when streamed): the rows' and the file's, by line
    total_rows: int
    columns: dict[str, str] = field(default_factory=dict)  # source header / element -> canonical field
    unmapped: list[str] = field(default_factory=list)  # headers whose values went to ParsedRow.extra
    issue_counts: dict[tuple[str, bool], int] = field(default_factory=dict)  # (code, rejecting) -> every issue
    rejected_rows: int = 0

    @property
    def issues_total(self) -> int:
        return sum(self.issue_counts.values())

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

# Rows go to the consumer (vms.inventory's chunked ingest) this many at a time when read_records is given a
# sink: memory then stays flat however long the file is.
CHUNK_ROWS = 10_000
# Issues kept in full when streaming; every issue is counted by code (ReadResult.issue_counts).
ISSUE_CAP = 1_000

RowSink = Callable[[list[ParsedRow]], None]
_SINK: ContextVar[RowSink | None] = ContextVar("row_sink", default=None)

# The coordinate system stated for the file being read (read_records(crs=...), `vms import --crs`): what its
# easting/northing columns are in. Set for the duration of one read_records call.
_FILE_CRS: ContextVar[str | None] = ContextVar("file_crs", default=None)
_KNOWN: ContextVar[KnownRows | None] = ContextVar("known_rows", default=None)

# Bump when any rule of reading a row changes (parsers, checks, cleaning): every stored raw digest is then stale
# and the next import of each source reads every row in full once.
RAW_FORMAT_VERSION = 1

Int64s = np.ndarray[Any, np.dtype[np.int64]]


def device_hash(device_id: str) -> int:
    """The duplicate check's hash of a device ID: the hash of the observation key it gives (``id:`` + ID), so
    the ingest can hand the hashes of rows it recognised by digest from their stored keys."""
    return hash("id:" + device_id)


def spot_hash(name: str, lon: float, lat: float) -> int:
    """The duplicate check's hash of a name and position, stable across processes (stored as raw_spot)."""
    return hash((zlib.crc32(name.encode("utf-8", "surrogatepass")), lon, lat))


class KnownRows:
    """The rows a source's last import stored, by raw digest (vms.inventory builds it from the database).

    A CSV row whose raw digest is here is not parsed: its cells, header, column map and reader version are those
    of a row that was read without any issue, so it reads the same again. Only the duplicate checks, which
    depend on the other rows of the file, see it (by its stored device-ID and name + position hashes); one found
    to repeat an earlier row is read in full and rejected as before. The rows recognised in each chunk go to the
    consumer of that chunk (``take``). About 40 bytes a stored row.
    """

    def __init__(
        self,
        digests: Int64s,
        dev: Int64s,
        has_dev: np.ndarray[Any, Any],
        spot: Int64s,
        has_spot: np.ndarray[Any, Any],
        issue_set: Int64s | None = None,
        issue_sets: Sequence[str] = (),
    ) -> None:
        self.digests = digests  # sorted; the other arrays in the same order
        self.dev, self.has_dev, self.spot, self.has_spot = dev, has_dev, spot, has_spot
        # The row's non-fatal issues: an index into issue_sets (distinct pack_issues texts), or -1 for none.
        self.issue_set = np.full(len(digests), -1, np.int64) if issue_set is None else issue_set
        self.issue_parts = [unpack_issues(text) for text in issue_sets]
        self.found = 0  # rows recognised so far
        self._ready: tuple[Int64s, Int64s] = (np.empty(0, np.int64), np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.digests)

    def find(self, digests: Int64s) -> Int64s:
        """The position of each digest, or -1."""
        if not len(self.digests) or not len(digests):
            return np.full(len(digests), -1, dtype=np.int64)
        pos = np.searchsorted(self.digests, digests)
        pos[pos == len(self.digests)] = 0
        return np.where(self.digests[pos] == digests, pos, -1).astype(np.int64)

    def take(self) -> tuple[Int64s, Int64s]:
        """(positions, lines) of the rows recognised in the chunk just handed on, in line order."""
        ready, self._ready = self._ready, (np.empty(0, np.int64), np.empty(0, np.int64))
        return ready

    def hand(self, positions: Int64s, lines: Int64s) -> None:
        self._ready = (positions, lines)
        self.found += len(positions)


def pack_issues(issues: Sequence[RowIssue], prefix: str) -> str | None:
    """A row's non-fatal issues as one text without their ``prefix`` (``line N: ``), so a row recognised by its raw
    digest on another line is reported as it was; None when they cannot be packed (the row is then read again)."""
    parts = []
    for i in issues:
        if i.fatal or not i.reason.startswith(prefix) or "\x1e" in i.reason or "\x1f" in i.reason:
            return None
        parts.append(f"{i.code}\x1f{i.field or ''}\x1f{i.reason[len(prefix) :]}")
    return "\x1e".join(parts)


def unpack_issues(text: str) -> list[tuple[str, str | None, str]]:
    """(code, field, reason without its prefix) of each issue packed by pack_issues."""
    out: list[tuple[str, str | None, str]] = []
    for part in text.split("\x1e"):
        code, fld, rest = part.split("\x1f", 2)
        out.append((code, fld or None, rest))
    return out


# The modules whose code decides how a row reads: any change to them (an upgrade) reads every row again once.
_READING_MODULES = ("vms.catalog.domain", "vms.catalog.fields", "vms.catalog.columns", "vms.geo.projection", __name__)


@cache
def _reading_code() -> str:
    h = hashlib.sha1(usedforsecurity=False)
    for name in _READING_MODULES:
        module = sys.modules.get(name)
        try:
            h.update(Path(str(getattr(module, "__file__", ""))).read_bytes())
        except OSError:  # no source at hand (a frozen build): RAW_FORMAT_VERSION alone
            h.update(name.encode())
    return h.hexdigest()


def raw_fingerprint(*parts: object) -> hashlib._Hash:
    """The hasher every row's cells are added to: what decides how the cells are read (the caller's ``parts``,
    the file's CRS), the reader version and the code that reads them."""
    text = repr((RAW_FORMAT_VERSION, _reading_code(), sys.version_info[:2], _FILE_CRS.get(), *parts))
    return hashlib.sha1(text.encode("utf-8", "surrogatepass"), usedforsecurity=False)


@cache
def _module_code(names: tuple[str, ...]) -> str:
    """A hash of these modules' source files and of the versions of the parsers the readers use."""
    from importlib import metadata

    h = hashlib.sha256()
    for name in names:
        module = sys.modules.get(name)
        try:
            h.update(Path(str(getattr(module, "__file__", ""))).read_bytes())
        except OSError:
            h.update(name.encode())
    for dist in ("lxml", "openpyxl"):
        with suppress(metadata.PackageNotFoundError):
            h.update(f"{dist} {metadata.version(dist)}".encode())
    return h.hexdigest()


# Readers of other formats than CSV, besides the modules of _READING_MODULES.
_FILE_MODULES = ("vms.ingest.osm", "vms.ingest.catalog_ext")


def file_digest(path: Path, *parts: object, modules: Sequence[str] = ()) -> str | None:
    """SHA-256 of the file's bytes (streamed) and of everything that decides how they are read: the caller's
    ``parts`` (format, encoding, column map, CRS, ...), the reader version and the code of the reading modules
    plus ``modules``. None when the file cannot be read (the import then reports why)."""
    h = hashlib.sha256(repr((RAW_FORMAT_VERSION, sys.version_info[:2], *parts)).encode("utf-8", "surrogatepass"))
    h.update(f"{_reading_code()} {_module_code((*_FILE_MODULES, *modules))}".encode())
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a pipe or device is read once, by the reader
        with open(path, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    except OSError:
        return None
    return h.hexdigest()


def _raw_ints(digests: list[bytes]) -> Int64s:
    """The first 8 bytes of each SHA-1 digest as int64."""
    buf = b"".join(digests)
    return np.ndarray((len(digests),), dtype="<i8", buffer=buf, strides=(20,)).astype(np.int64)


class _Assembler:
    """Parses mapped values, checks each row and remembers earlier rows for the duplicate checks."""

    def __init__(self, unit: str) -> None:
        self.unit = unit  # "line", "row" or "record": how a person finds the record
        self.crs = _FILE_CRS.get()  # of easting/northing columns, unless a row names its own
        self.rows: list[ParsedRow] = []  # every row when nobody consumes them as they come (no sink)
        self.issues: list[RowIssue] = []
        self.count = 0  # rows read so far
        self.rejected_rows = 0
        self.issue_counts: Counter[tuple[str, bool]] = Counter()
        self._sink = _SINK.get()
        self._pending: list[ParsedRow] = []  # rows not yet checked for duplicates and handed on
        self._counted = 0  # issues already counted in issue_counts
        self.columns: dict[str, str] = {}
        self.unmapped: dict[str, None] = {}
        self._plans_seen: dict[int, HeaderPlan] = {}  # holding the plan keeps its id unique
        self._id_notes: set[str] = set()
        self._login_notes: set[str] = set()
        self._header_of: dict[str, str] = {}  # canonical field -> the header it was first read from
        # Device IDs and name + position seen so far (for the duplicate checks): 16 bytes a row.
        self._ids = HashIndex()
        self._name_pos = HashIndex()
        # Rows recognised by raw digest (KnownRows; CSV), not parsed: their lines, positions in ``known`` and
        # cells (read in full only if the duplicate checks reject one).
        self.known = _KNOWN.get() if self._sink is not None else None
        self.reparse: Callable[[int, list[str]], ParsedRow] | None = None
        self._hit_lines: list[int] = []
        self._hit_pos: list[int] = []
        self._hit_cells: list[list[str]] = []
        self._full = False  # ISSUE_CAP issues kept (streaming): later rows' issues are only counted

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
        if plan.logins:
            names = [headers[idx] for idx in plan.logins if headers[idx] not in self._login_notes]
            if names:
                self._login_notes.update(names)
                self.issues.append(
                    RowIssue(
                        0,
                        LOGIN_COLUMNS,
                        f"login column(s) {', '.join(repr(n) for n in names)}: each row's login goes to the encrypted "
                        "credential store for its IP address, never into the camera records",
                        fatal=False,
                    )
                )

    def reject(self, line: int, code: str, reason: str) -> None:
        """A record that is not a record at all (e.g. a JSON string where an object belongs)."""
        issue = RowIssue(line, code, f"{self.where(line)}: {reason}")
        self._pending.append(ParsedRow(line=line, fields={}, issues=[issue]))
        self.issues.append(issue)
        if len(self._pending) >= CHUNK_ROWS:
            self.flush()

    def add(
        self,
        line: int,
        values: Sequence[tuple[str, object]],
        extra: dict[str, str],
        pre: Sequence[RowIssue] = (),
        login: tuple[str, str] | None = None,
    ) -> ParsedRow:
        row = self.build(line, values, extra, pre)
        if login is not None:
            row.login = login  # before the row can be handed on (enqueue may flush)
        return self.enqueue(row)

    def enqueue(self, row: ParsedRow) -> ParsedRow:
        self._pending.append(row)  # checked for duplicates a chunk at a time (flush)
        if row.issues:
            self.issues.extend(row.issues)
        if len(self._pending) + len(self._hit_lines) >= CHUNK_ROWS:
            self.flush()
        return row

    def hits(self, lines: list[int], positions: list[int], cells: list[list[str]]) -> None:
        """Rows recognised by their raw digest (KnownRows), in line order, after every row before them: not
        parsed, only checked for duplicates."""
        self._hit_lines.extend(lines)
        self._hit_pos.extend(positions)
        self._hit_cells.extend(cells)
        if len(self._pending) + len(self._hit_lines) >= CHUNK_ROWS:
            self.flush()

    def build(
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
        return ParsedRow(line=line, fields=fields, extra=extra, issues=issues)

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

    def flush(self) -> None:
        """Check the pending rows for duplicates of each other and of every earlier row, then hand them on."""
        rows, self._pending = self._pending, []
        hits = (self._hit_lines, self._hit_pos, self._hit_cells)
        self._hit_lines, self._hit_pos, self._hit_cells = [], [], []
        known: tuple[Int64s, Int64s] | None = None
        if rows or hits[0]:
            known, reread = self._check_duplicates([r for r in rows if not r.rejected], *hits)
            rows.extend(reread)
            self.count += len(rows) + len(known[0])
            self.rejected_rows += sum(1 for r in rows if r.rejected)
            if self.known is not None:
                self.known.hand(*known)
                self._hit_issues(*known)
        new = self.issues[self._counted :]
        if new:
            self.issue_counts.update((i.code, i.fatal) for i in new)
            if self._sink is not None and len(self.issues) > ISSUE_CAP:
                self.issues.sort(key=lambda i: i.line)
                del self.issues[ISSUE_CAP:]  # the first ones in full; every one is counted
            self._counted = len(self.issues)
        # Kept in full are the first ISSUE_CAP issues by line: once that many are kept, later chunks' only count.
        self._full = self._sink is not None and len(self.issues) >= ISSUE_CAP
        if not rows and (known is None or not len(known[0])):
            return
        if self._sink is None:
            self.rows.extend(rows)
            return
        self._sink(rows)
        # The consumer's reference cycles (database layers make some) go chunk by chunk; what was alive before
        # the import is frozen (read_records), so this looks at this chunk's leftovers only. Rows recognised by
        # raw digest leave none.
        if rows:
            gc.collect()

    def _hit_issues(self, positions: Int64s, lines: Int64s) -> None:
        """The issues of rows recognised by raw digest, as stored: in full while the report has room, else counted."""
        known = self.known
        assert known is not None
        sets = known.issue_set[positions]
        some = sets >= 0
        if not some.any():
            return
        if not self._full:
            for line, sid in zip(lines[some].tolist(), sets[some].tolist(), strict=True):
                where = self.where(line)
                for code, fld, rest in known.issue_parts[sid]:
                    self.issues.append(RowIssue(line, code, f"{where}: {rest}", False, fld))
            return
        ids, counts = np.unique(sets[some], return_counts=True)
        for sid, n in zip(ids.tolist(), counts.tolist(), strict=True):
            for code, _, _ in known.issue_parts[sid]:
                self.issue_counts[(code, False)] += n

    def _check_duplicates(
        self, rows: list[ParsedRow], hit_lines: list[int], hit_pos: list[int], hit_cells: list[list[str]]
    ) -> tuple[tuple[Int64s, Int64s], list[ParsedRow]]:
        """A repeated device ID, or a repeated name at the same position (same text gives the same float).

        Earlier chunks are looked up by hash in one call per chunk. When no hash of this chunk repeats another
        (the usual case) all are added at once; otherwise this chunk's rows are checked in line order, rows
        recognised by raw digest among them: such a row found to repeat an earlier one is read in full and
        rejected like any other. Returns the recognised rows that stay (positions, lines) and the rows read.
        """
        id_of: dict[int, int] = {}
        spot_of: dict[int, int] = {}
        for i, r in enumerate(rows):
            f = r.fields
            if "device_id" in f:
                id_of[i] = device_hash(str(f["device_id"]))
            if (
                (name := f.get("name"))
                and (lon := f.get("longitude")) is not None
                and (lat := f.get("latitude")) is not None
            ):
                r.raw_spot = spot_of[i] = spot_hash(name, lon, lat)
        pos = np.array(hit_pos, dtype=np.int64)
        lines = np.array(hit_lines, dtype=np.int64)
        known = self.known
        if known is None or not len(pos):
            has_dev = has_spot = np.zeros(0, dtype=bool)
            hit_dev = hit_spot = np.zeros(0, dtype=np.int64)
        else:
            has_dev, has_spot = known.has_dev[pos], known.has_spot[pos]
            hit_dev, hit_spot = known.dev[pos], known.spot[pos]
        all_ids = np.concatenate([np.fromiter(id_of.values(), np.int64, len(id_of)), hit_dev[has_dev]])
        all_spots = np.concatenate([np.fromiter(spot_of.values(), np.int64, len(spot_of)), hit_spot[has_spot]])
        if not _repeats(all_ids, self._ids) and not _repeats(all_spots, self._name_pos):
            self._ids.add(all_ids, [*(rows[i].line for i in id_of), *lines[has_dev].tolist()])
            self._name_pos.add(all_spots, [*(rows[i].line for i in spot_of), *lines[has_spot].tolist()])
            return (pos, lines), []
        earlier_id = _earlier(self._ids, all_ids.tolist())
        earlier_spot = _earlier(self._name_pos, all_spots.tolist())
        hit_ids = {j: int(hit_dev[j]) for j in np.flatnonzero(has_dev).tolist()}
        hit_spots = {j: int(hit_spot[j]) for j in np.flatnonzero(has_spot).tolist()}
        order = sorted(
            [(r.line, False, i) for i, r in enumerate(rows)] + [(n, True, j) for j, n in enumerate(hit_lines)]
        )
        new_ids: dict[int, int] = {}
        new_spots: dict[int, int] = {}
        kept: list[int] = []
        reread: list[ParsedRow] = []
        for line, is_hit, i in order:
            h = (hit_ids if is_hit else id_of).get(i)
            spot = (hit_spots if is_hit else spot_of).get(i)
            found: tuple[str, int] | None = None
            if h is not None and (first := earlier_id.get(h) or new_ids.get(h)) is not None:
                found = (ID_DUPLICATE, first)
            elif spot is not None and (first := earlier_spot.get(spot) or new_spots.get(spot)) is not None:
                found = (DUPLICATE_NAME_POSITION, first)
            if found is None:
                if spot is not None:
                    new_spots.setdefault(spot, line)
                if h is not None:
                    new_ids.setdefault(h, line)
                if is_hit:
                    kept.append(i)
                continue
            if is_hit:  # recognised by digest, but it repeats an earlier row now: read it and reject it
                assert self.reparse is not None
                row = self.reparse(line, hit_cells[i])
                row.raw_digest = None
                self.issues.extend(row.issues)
                reread.append(row)
            else:
                row = rows[i]
            code, first = found
            if code == ID_DUPLICATE:
                where = f"{self.where(line)}: device ID {row.fields.get('device_id')} already appears on"
                self._duplicate(row, ID_DUPLICATE, f"{where} {self.unit} {first}", "device_id")
            else:
                where = f"{self.where(line)}: same name {row.fields.get('name')!r} and position as"
                self._duplicate(row, DUPLICATE_NAME_POSITION, f"{where} {self.unit} {first}", "name")
        self._ids.add(list(new_ids), list(new_ids.values()))
        self._name_pos.add(list(new_spots), list(new_spots.values()))
        return (pos[kept], lines[kept]), reread

    def _duplicate(self, row: ParsedRow, code: str, reason: str, field_name: str) -> None:
        issue = RowIssue(row.line, code, reason, field=field_name)
        row.issues.append(issue)
        self.issues.append(issue)

    def result(self, fmt: str, encoding: str | None) -> ReadResult:
        self.flush()
        self.issues.sort(key=lambda i: i.line)  # stable: file issues before the row issues of their line
        return ReadResult(
            format=fmt,
            encoding=encoding,
            rows=self.rows,
            issues=self.issues,
            total_rows=self.count,
            columns=self.columns,
            unmapped=list(self.unmapped),
            issue_counts=dict(self.issue_counts),
            rejected_rows=self.rejected_rows,
        )


def _repeats(hashes: Int64s, index: HashIndex) -> bool:
    """Whether any of these hashes repeats another of them or one already in ``index``."""
    if not len(hashes):
        return False
    return len(np.unique(hashes)) < len(hashes) or bool(index.contains(hashes).any())


def _earlier(index: HashIndex, hashes: Iterable[int]) -> dict[int, int]:
    """Hash -> the line it was first seen on, for the hashes an earlier chunk had."""
    wanted = np.fromiter(hashes, dtype=np.int64)
    lines = index.lookup(wanted)
    hit = lines >= 0
    return dict(zip(wanted[hit].tolist(), lines[hit].tolist(), strict=True))


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


_ROOT_TAG = re.compile(rb"<([A-Za-z_][\w.:-]*)")


def peek_format(path: Path, fmt: str | None = None) -> str:
    """The format read_records will report, from the first bytes: csv, xlsx, json, geojson, xml (a GB/T 28181
    catalog) or osm (OpenStreetMap XML). Decides a file's default source kind before its rows are read."""
    path = Path(path)
    if fmt is not None:
        fmt = _FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
        if fmt != "xml":
            return fmt
    with _open_binary(path) as fh:
        head = fh.read(4096)
    found = fmt or detect_format(path, head[:64])
    if found != "xml":
        return found
    body = re.sub(rb"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>", b"", head, flags=re.S)
    root = _ROOT_TAG.search(body)
    return "osm" if root and root.group(1).split(b":")[-1] == b"osm" else "xml"


@contextmanager
def _gc_paused(*, frozen: bool = False) -> Iterator[None]:
    # Reading 100,000 rows allocates millions of small acyclic containers; the cyclic collector would scan
    # them again and again for nothing (about a quarter of the read time, measured). ``frozen``: rows stream
    # to a consumer, which collects after each chunk; the heap from before is left out of those collections.
    enabled = gc.isenabled()
    gc.disable()
    if frozen:
        gc.freeze()
    try:
        yield
    finally:
        if frozen:
            gc.unfreeze()
        if enabled:
            gc.enable()


def read_records(
    path: Path,
    *,
    fmt: str | None = None,
    column_map: ColumnMap | None = None,
    encoding: str | None = None,
    crs: str | None = None,
    sink: RowSink | None = None,
    known: KnownRows | None = None,
) -> ReadResult:
    """Read one ledger or catalog file; rows that fail a fatal check are returned with their issues.

    ``sink``: rows go to it a chunk (CHUNK_ROWS) at a time as they are read, instead of into the result, and
    the result keeps the first ISSUE_CAP issues in full and counts them all: memory stays flat.

    ``crs`` (``EPSG:2326``, WKT): what the file's easting/northing columns are in; they are converted to WGS-84
    longitude/latitude. A ``crs`` column, where filled, wins for its row.

    ``known`` (with a ``sink``): the rows the source's last import stored, by raw digest; a CSV row found there
    is not parsed again but handed to the sink's consumer by KnownRows.take. Every row read in full without
    any issue carries its raw digest (ParsedRow.raw_digest) for next time. Other formats are read in full.
    """
    if crs is not None:
        try:
            parse_crs(crs)
        except CrsError as exc:
            raise ReadError(f"--crs: {exc}") from exc
    token = _FILE_CRS.set(crs)
    sink_token = _SINK.set(sink)
    known_token = _KNOWN.set(known)
    try:
        with _gc_paused(frozen=sink is not None):
            result = _read_records(Path(path), fmt=fmt, column_map=column_map, encoding=encoding)
    except RecursionError as exc:  # a structure nested deeper than any reader expects
        raise ReadError(f"{Path(path).name}: nested too deeply to be a camera list") from exc
    finally:
        _KNOWN.reset(known_token)
        _SINK.reset(sink_token)
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
    with _open_binary(path) as fh:
        head = fh.read(64)
    fmt = fmt or detect_format(path, head)
    if fmt == "osm":  # Overpass JSON, OSM GeoJSON or .osm XML: each reader recognises OSM by its content
        fmt = "xml" if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<") else "json"
    if fmt == "xlsx":
        return _read_xlsx(path, cmap)
    if fmt == "csv":
        return _read_csv(path, cmap, encoding, tab_first=path.suffix.lower() == ".tsv")
    if fmt in {"json", "geojson"}:
        return _read_json(path, cmap, encoding, geojson=fmt == "geojson")
    try:
        data = path.read_bytes()  # an XML catalog is parsed as one tree
    except OSError as exc:
        raise ReadError(f"{path}: cannot read: {exc.strerror}") from exc
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


def _login_of(cells: Sequence[object], login_cols: Sequence[tuple[int, str]]) -> tuple[str, str] | None:
    """(username, password) from a row's login columns (HeaderPlan.logins); None when both are empty."""
    user = password = ""
    n = len(cells)
    for idx, role in login_cols:
        if idx < n and (text := cell_text(cells[idx])):
            if role == LOGIN_USERNAME:
                user = text
            else:
                password = text
    return (user, password) if user or password else None


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


_CJK = re.compile("[\u4e00-\u9fff]")
_SURROGATE = re.compile("[\udc80-\udcff]")
_BLOCK = 1 << 20
# Longest physical line read: a ledger line is a few hundred bytes; a line of 16 MB is not a camera ledger (and
# reading it whole is how a hostile file would take the memory).
MAX_LINE_BYTES = 16 << 20


def _detect_csv_encoding(path: Path, encoding: str | None) -> tuple[str, str, bool | None]:
    """(encoding, label, mixed): mixed is True when lines of valid UTF-8 must be told apart from the GB18030
    rest, False when some lines may not decode, None when every line is known to decode (the fast path).

    UTF-8 is tried strictly first: GBK text is almost never valid UTF-8, while UTF-8 bytes often decode as
    GB18030 without error (as mojibake), so the reverse order would misread UTF-8 files. The encoding is
    chosen per file; lines pasted in from a file of the other encoding are flagged, not guessed. One pass in
    blocks (the whole file is never in memory), a second line by line only for a file that is not all UTF-8.
    """
    with _open_binary(path) as fh:
        bom = fh.read(len(_UTF8_BOM)) == _UTF8_BOM
    if encoding:
        enc = encoding.lower().replace("_", "-")
        if enc in {"utf-8", "utf8", "utf-8-sig"}:
            enc = "utf-8"
        elif enc in {"gb2312", "gbk", "cp936"}:
            enc = "gb18030"  # a superset: files labelled GB2312 routinely hold GBK-only characters
        try:
            codecs.lookup(enc)
        except LookupError as exc:
            raise ReadError(f"unknown encoding {encoding!r}") from exc
        return enc, ("utf-8-sig" if bom and enc == "utf-8" else enc), False
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with _open_binary(path) as fh:
            while block := fh.read(_BLOCK):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        return "utf-8", ("utf-8-sig" if bom else "utf-8"), None
    except UnicodeDecodeError:
        pass
    not_utf8 = utf8_cjk = 0
    with _open_binary(path) as fh:
        for raw in _physical_lines(fh):
            if raw.isascii():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                not_utf8 += 1
                continue
            if _CJK.search(line):
                utf8_cjk += 1
    if bom or utf8_cjk > not_utf8:
        return "utf-8", ("utf-8-sig" if bom else "utf-8"), False
    return "gb18030", "gb18030", utf8_cjk > 0


def _open_binary(path: Path) -> io.BufferedReader:
    try:
        return path.open("rb")
    except OSError as exc:
        raise ReadError(f"{path}: cannot read: {exc.strerror}") from exc


def _physical_lines(fh: io.BufferedReader) -> Iterator[bytes]:
    """The file's lines, each with its end; a lone CR ends a line only in a file that has no LF at all."""
    head = fh.peek(1 << 16)[: 1 << 16]
    if b"\r" in head and b"\n" not in head:  # classic Mac line ends: rare, small files
        data = fh.read(MAX_LINE_BYTES * 4)
        if fh.read(1):
            raise ReadError("a file over 64 MB with classic Mac line ends (CR only): save it with LF or CRLF")
        yield from (line + b"\r" for line in data.split(b"\r") if line)
        return
    number = 0
    while raw := fh.readline(MAX_LINE_BYTES):
        number += 1
        if len(raw) >= MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise ReadError(f"line {number} is longer than {MAX_LINE_BYTES >> 20} MB: not a camera ledger")
        yield raw


def _csv_lines(path: Path, enc: str, mixed: bool | None, bad: set[int], stray: set[int]) -> Iterator[str]:
    """Decoded lines, numbered as physical lines. ``bad``: lines not in the file's encoding (decoded as UTF-8
    when they are, else with U+FFFD); ``stray``: lines where a carriage return inside a cell became a space."""
    with _open_binary(path) as fh:
        if fh.peek(3)[:3] == _UTF8_BOM:
            fh.read(3)
        head = fh.peek(1 << 16)[: 1 << 16]
        if mixed is None and not (b"\r" in head and b"\n" not in head):
            yield from _block_lines(fh, enc, stray)
            return
        number = 0
        for raw in _physical_lines(fh):
            number += 1
            if raw.isascii():
                line = raw.decode("ascii")
            else:
                if mixed:  # a GB18030 file with UTF-8 lines pasted in: those read as UTF-8, and flagged
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        pass
                    else:
                        if _CJK.search(line):
                            bad.add(number)
                            yield _no_stray_cr(line, number, stray)
                            continue
                try:
                    line = raw.decode(enc)
                except UnicodeDecodeError:
                    line = raw.decode(enc, errors="replace")
                    bad.add(number)
            yield _no_stray_cr(line, number, stray)


def _block_lines(fh: io.BufferedReader, enc: str, stray: set[int]) -> Iterator[str]:
    """Lines of a file known to decode: a block at a time, split in C (the common case, and the fast one)."""
    decoder = codecs.getincrementaldecoder(enc)()
    carry = ""
    number = 0
    while True:
        block = fh.read(_BLOCK)
        text = carry + decoder.decode(block, final=not block)
        carry = ""
        if block:
            cut = text.rfind("\n") + 1
            text, carry = text[:cut], text[cut:]
            if len(carry) > MAX_LINE_BYTES:
                raise ReadError(f"line {number + 1} is longer than {MAX_LINE_BYTES >> 20} MB: not a camera ledger")
        if "\r" in text and text.count("\r") != text.count("\r\n") + text.endswith("\r"):
            # A CR that does not end a line (CRLF line ends, Excel's and csv.writer's, need nothing)
            for line in io.StringIO(text, newline="\n"):
                number += 1
                yield _no_stray_cr(line, number, stray)
        else:
            number += text.count("\n")
            yield from io.StringIO(text, newline="\n")
        if not block:
            return


def _no_stray_cr(line: str, number: int, stray: set[int]) -> str:
    # A CR inside a line (pasted from another system) would end the record in the middle of a cell.
    if "\r" in line:
        body = line.rstrip("\r\n")
        if "\r" in body:
            stray.add(number)
            return body.replace("\r", " ") + line[len(body) :]
    return line


def _sniff_csv(lines: list[str], cmap: ColumnMap, tab_first: bool) -> tuple[str, int]:
    """Delimiter and header record index: the delimiter under which a header maps the most fields."""
    order = ("\t", ",", ";", "|") if tab_first else _DELIMITERS
    best: tuple[int, str, int] = (0, ",", -1)
    for delimiter in order:
        records: list[list[str]] = []
        reader = csv.reader(lines, delimiter=delimiter)
        # e.g. a field over the limit further down: the lines before it may hold the header
        with suppress(csv.Error):
            records.extend(islice(reader, HEADER_SEARCH_ROWS))
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


def _read_csv(path: Path, cmap: ColumnMap, encoding: str | None, *, tab_first: bool = False) -> ReadResult:
    enc, label, mixed = _detect_csv_encoding(path, encoding)
    bad_lines: set[int] = set()
    stray: set[int] = set()
    delimiter, header_idx = _sniff_csv(list(islice(_csv_lines(path, enc, mixed, set(), set()), 40)), cmap, tab_first)
    asm = _Assembler("line")
    reader = csv.reader(_csv_lines(path, enc, mixed, bad_lines, stray), delimiter=delimiter)
    prev = 0
    plan: HeaderPlan | None = None
    headers: list[str] = []
    field_cols: list[tuple[int, str]] = []
    extra_cols: list[tuple[int, str]] = []
    login_cols: list[tuple[int, str]] = []
    known = asm.known
    # Rows waiting for their raw digests' look-up: line, cells, digest; line-level issues by index.
    held_lines: list[int] = []
    held_cells: list[list[str]] = []
    held_digests: list[bytes] = []
    held_pre: dict[int, list[RowIssue]] = {}

    def finish(start: int, cells: list[str], pre: list[RowIssue]) -> ParsedRow:
        if "'" in "".join(cells):
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
                        f"line {start}: {n} cells but {len(headers)} headers: the surplus kept as {', '.join(surplus)}",
                        fatal=False,
                    )
                )
        row = asm.build(start, [(name, cells[idx]) for idx, name in field_cols if idx < n and cells[idx]], extra, pre)
        if login_cols:
            row.login = _login_of(cells, login_cols)
        return row

    def line_issues(start: int, prev: int, cells: list[str], joined: str) -> tuple[list[str], list[RowIssue]]:
        """NUL characters, stray carriage returns and lines in another encoding: cleaned and reported."""
        pre: list[RowIssue] = []
        if "\x00" in joined:  # PostgreSQL cannot store NUL: removed on every database alike
            cells = [c.replace("\x00", "") for c in cells]
            pre.append(RowIssue(start, CONTROL_CHARACTERS, f"line {start}: NUL characters removed", fatal=False))
        if stray and any(n in stray for n in range(start, prev + 1)):
            stray.difference_update(range(start, prev + 1))
            pre.append(
                RowIssue(
                    start,
                    CONTROL_CHARACTERS,
                    f"line {start}: a carriage return inside a cell (a line break from another system) read as a space",
                    fatal=False,
                )
            )
        if bad_lines and any(n in bad_lines for n in range(start, prev + 1)):
            bad_lines.difference_update(range(start, prev + 1))
            pre.append(
                RowIssue(
                    start,
                    ENCODING,
                    f"line {start}: wrong encoding: this line is not {label} like the rest of the file "
                    "(re-save the whole file in one encoding)",
                    fatal=False,
                )
            )
        return cells, pre

    def look_up() -> None:
        """Rows whose digest the source's last import stored are recognised, the others read in full."""
        digests = _raw_ints(held_digests)
        found = known.find(digests) if known is not None else np.full(len(digests), -1, np.int64)
        if not held_pre and bool((found >= 0).all()):
            asm.hits(held_lines, found.tolist(), held_cells)  # the usual re-import: nothing to read
        else:
            lines: list[int] = []
            positions: list[int] = []
            cells_of: list[list[str]] = []
            for i, (start, cells, position, dg) in enumerate(
                zip(held_lines, held_cells, found.tolist(), digests.tolist(), strict=True)
            ):
                pre = held_pre.get(i)
                if position >= 0 and pre is None:
                    lines.append(start)
                    positions.append(position)
                    cells_of.append(cells)
                    continue
                if lines:  # rows recognised before this one go first (the duplicate checks keep line order)
                    asm.hits(lines, positions, cells_of)
                    lines, positions, cells_of = [], [], []
                row = finish(start, cells, pre or [])
                if pre is not None:
                    pass  # a row with line-level issues (NUL, stray CR, encoding) is always read in full
                elif not row.issues:
                    row.raw_digest = dg
                elif (packed := pack_issues(row.issues, f"line {start}: ")) is not None:
                    row.raw_digest, row.raw_issues = dg, packed
                asm.enqueue(row)
            if lines:
                asm.hits(lines, positions, cells_of)
        held_lines.clear()
        held_cells.clear()
        held_digests.clear()
        held_pre.clear()

    asm.reparse = lambda start, cells: finish(start, cells, [])
    try:
        for rec_idx, cells in enumerate(reader):
            start, prev = prev + 1, reader.line_num
            if rec_idx < header_idx:
                continue
            headers = [c.replace("\x00", "").strip() for c in cells]
            plan = _header_plan(asm, headers, start, cmap)
            field_cols = list(plan.fields.items())
            extra_cols = list(plan.extra.items())
            login_cols = list(plan.logins.items())
            break
        # A file with login columns is read in full every time (no raw digest: none is derived from a password,
        # and a changed password is read again).
        if plan is not None and (known is None or login_cols):
            for cells in reader:
                start, prev = prev + 1, reader.line_num
                joined = "".join(cells)
                if not joined or joined.isspace():
                    continue  # blank separator rows
                if "\x00" in joined or stray or bad_lines:
                    cells, pre = line_issues(start, prev, cells, joined)
                    asm.enqueue(finish(start, cells, pre))
                else:
                    asm.enqueue(finish(start, cells, []))
        elif plan is not None:
            # The raw digest of a row: its cells as written (NUL, which separates them, is never in a row that
            # can be recognised) added to a hasher holding what decides how they are read.
            base = raw_fingerprint(
                "csv",
                delimiter,
                label,
                headers,
                sorted(plan.fields.items()),
                sorted(plan.extra.items()),
                plan.ignored,
                sorted(plan.shadowed.items()),
                plan.id_as_local,
            )
            copy = base.copy
            add_line, add_cells, add_digest = held_lines.append, held_cells.append, held_digests.append
            for cells in reader:
                start, prev = prev + 1, reader.line_num
                joined = "".join(cells)
                if not joined or joined.isspace():
                    continue  # blank separator rows
                if "\x00" in joined or stray or bad_lines:
                    cells, pre = line_issues(start, prev, cells, joined)
                    if pre:
                        held_pre[len(held_lines)] = pre
                h = copy()
                h.update("\x00".join(cells).encode("utf-8", "surrogatepass"))
                add_digest(h.digest())
                add_line(start)
                add_cells(cells)
                if len(held_lines) >= _HOLD_ROWS:
                    look_up()
            if held_lines:
                look_up()
    except csv.Error as exc:
        raise ReadError(f"CSV line {reader.line_num}: {exc}") from exc
    if plan is None:
        raise _no_header_error("CSV")
    return asm.result("csv", label)


_HOLD_ROWS = 2048  # rows whose raw digests are looked up at once


# --- XLSX ---


# A workbook is a zip of XML: these bound what a small hostile file can make us inflate (a zip bomb).
MAX_XLSX_BYTES = 4 << 30  # all members, uncompressed
MAX_XLSX_RATIO = 100  # uncompressed / compressed, for members over 32 MB (real sheets: 5-20)
MAX_XLSX_ROW = 1_048_576  # Excel's own limit


def _check_workbook(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ReadError(f"{path.name}: not a readable .xlsx workbook: {exc}") from exc
    total = sum(m.file_size for m in members)
    if total > MAX_XLSX_BYTES:
        raise ReadError(f"{path.name}: the workbook unpacks to {total >> 20:,} MB: save it as CSV to import it")
    for m in members:
        if m.file_size > 32 << 20 and m.file_size > MAX_XLSX_RATIO * max(m.compress_size, 1):
            raise ReadError(
                f"{path.name}: {m.filename} unpacks {m.file_size // max(m.compress_size, 1):,} times larger than "
                "it is stored: not a real workbook (a zip bomb?)"
            )


def _guarded(rows: Iterator[tuple[object, ...]], name: str) -> Iterator[tuple[object, ...]]:
    """Rows of a sheet; a damaged or truncated workbook is a ReadError, wherever the damage is found."""
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except ReadError:
            raise
        except Exception as exc:  # openpyxl, zipfile, zlib, XML parsers: any of them meets the damage first
            raise ReadError(f"{name}: damaged or truncated .xlsx workbook: {type(exc).__name__}: {exc}") from exc
        yield row


def _read_xlsx(path: Path, cmap: ColumnMap) -> ReadResult:
    import openpyxl  # heavy import, only when a workbook is read

    _check_workbook(path)
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # untrusted input to a third-party parser: every failure is the file's
        raise ReadError(f"{path.name}: not a readable .xlsx workbook: {type(exc).__name__}: {exc}") from exc
    try:
        for ws in wb.worksheets:
            # Some non-Excel writers store a wrong <dimension>, which makes read-only mode cut rows short.
            ws.reset_dimensions()
            rows = _guarded(ws.iter_rows(min_row=1, values_only=True), path.name)
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
    login_cols = list(plan.logins.items())
    all_rows = (*head[header_idx + 1 :],)
    number = header_idx + 1
    for cells in _chain(all_rows, rest):
        number += 1  # missing rows come back empty, so this is the sheet's row number
        if number > MAX_XLSX_ROW:
            raise ReadError(f"sheet {title}: a row numbered beyond Excel's {MAX_XLSX_ROW:,}: not a real workbook")
        if not cells or all(c is None or (isinstance(c, str) and not c.strip()) for c in cells):
            continue
        n = len(cells)
        extra = {key: text for idx, key in extra_cols if idx < n and (text := cell_text(cells[idx]))}
        login = _login_of(cells, login_cols) if login_cols else None
        asm.add(number, _row_values(cells, field_cols), extra, login=login)
    log.debug("read sheet %s: %d rows", title, asm.count + len(asm._pending))
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
            extra.update(login_free({str(k): text for k, v in value.items() if (text := cell_text(v))}))
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
    login = _login_of([flat[k] for k in keys], list(plan.logins.items())) if plan.logins else None
    asm.add(line, values, extra, pre, login=login)


def _read_json(path: Path, cmap: ColumnMap, encoding: str | None, *, geojson: bool) -> ReadResult:
    """Records stream out of the file's list one at a time (the document is never loaded whole); OpenStreetMap
    exports and single Features, which need the whole document, are loaded whole."""
    enc, label = _detect_json_encoding(path, encoding)
    with _open_text(path, enc) as fh:
        scan = _JsonScanner(fh)
        found = scan.find_list(geojson)
        if found is not None:
            kind, first = found
            if kind == "features":
                if not osm.is_osm_geojson({"type": "FeatureCollection", "features": first}):
                    return _geojson_records(_chain_any(first, scan.elements(len(first))), cmap, label)
            elif first and isinstance(first[0], dict) and first[0].get("type") == "Feature":
                return _geojson_records(_chain_any(first, scan.elements(len(first))), cmap, label)
            elif not geojson:
                return _json_records(_chain_any(first, scan.elements(len(first))), cmap, label)
    with _open_text(path, enc) as fh:
        try:
            obj = json.loads(fh.read(), parse_int=_json_int)
        except json.JSONDecodeError as exc:
            raise ReadError(f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
        except RecursionError as exc:
            raise ReadError("JSON nested too deeply to be a camera list") from exc
        except UnicodeDecodeError as exc:
            raise ReadError(f"neither UTF-8 nor GB18030 text: {exc}") from exc
    obj = _clean_json(obj)[0]
    if osm.is_osm_json(obj):
        return _osm_result(osm.items_from_json(obj), "record", label)
    if (geojson or _is_geojson(obj)) and osm.is_osm_geojson(obj):
        return _osm_result(osm.items_from_geojson(obj), "record", label)
    if geojson or _is_geojson(obj):
        return _geojson_records(_features(obj), cmap, label)
    records = _find_list(obj)
    if records is None:
        raise ReadError(
            "JSON: expected a list of camera objects, or an object holding one under " + "/".join(_LIST_KEYS)
        )
    return _json_records(((r, ()) for r in records), cmap, label)


JsonItem = tuple[Any, Sequence[RowIssue]]  # a decoded list element and what cleaning it took


def _json_records(records: Iterable[JsonItem], cmap: ColumnMap, label: str) -> ReadResult:
    asm = _Assembler("record")
    for number, (record, cleaned) in enumerate(records, start=1):
        if not isinstance(record, dict):
            asm.reject(number, RECORD_INVALID, "not an object")
            continue
        _add_mapping_record(asm, number, record, cmap, pre=_numbered(cleaned, number))
    return asm.result("json", label)


def _numbered(cleaned: Sequence[RowIssue], number: int) -> list[RowIssue]:
    return [RowIssue(number, i.code, f"record {number}: {i.reason}", False) for i in cleaned]


def _features(obj: object) -> Iterator[JsonItem]:
    if isinstance(obj, dict) and obj.get("type") == "FeatureCollection":
        features = obj.get("features")
    elif isinstance(obj, dict) and obj.get("type") == "Feature":
        features = [obj]
    else:
        features = obj
    if not isinstance(features, list):
        raise ReadError("GeoJSON: expected a FeatureCollection with a list of features")
    return ((f, ()) for f in features)


def _chain_any(first: list[Any], rest: Iterator[JsonItem]) -> Iterator[JsonItem]:
    for item in first:
        if isinstance(item, _CleanedMarker):
            yield item.value, (_CLEANED,)
        else:
            yield item, ()
    yield from rest


def _geojson_records(features: Iterable[JsonItem], cmap: ColumnMap, label: str) -> ReadResult:
    asm = _Assembler("record")
    for number, (feature, cleaned) in enumerate(features, start=1):
        if not isinstance(feature, dict):
            asm.reject(number, RECORD_INVALID, "not a Feature")
            continue
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            props = {}
        override: dict[str, object] | None = None
        pre: list[RowIssue] = _numbered(cleaned, number)
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


# --- streaming JSON ---

MAX_JSON_RECORD = 64 << 20  # one record of a camera list is a few hundred bytes
_PEEK = 50  # list elements looked at before choosing how to read the list (OpenStreetMap or not)
_JSON_WS = re.compile(r"[ \t\n\r]*")
_JSON_ESCAPE_WORTH_A_LOOK = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def _json_int(text: str) -> int | str:
    # An integer of thousands of digits would exceed Python's conversion limit (and is no camera value):
    # kept as text, which the value parsers then drop as garbage.
    return int(text) if len(text) <= 40 else text


_DECODER = json.JSONDecoder(parse_int=_json_int)


def _detect_json_encoding(path: Path, encoding: str | None) -> tuple[str, str]:
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise ReadError(f"unknown encoding {encoding!r}") from exc
        return encoding, encoding
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with _open_binary(path) as fh:
            while block := fh.read(_BLOCK):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "gb18030", "gb18030"
    return "utf-8-sig", "utf-8"


def _open_text(path: Path, enc: str) -> io.TextIOWrapper:
    try:
        return path.open("r", encoding=enc, errors="strict", newline="")
    except OSError as exc:
        raise ReadError(f"{path}: cannot read: {exc.strerror}") from exc


def _clean_json(value: Any) -> tuple[Any, bool]:
    """The value without NUL characters and lone surrogates (neither database stores them): (value, changed)."""
    if isinstance(value, str):
        if "\x00" in value or _LONE_SURROGATE.search(value):
            text = value.replace("\x00", "").encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return text, True
        return value, False
    if isinstance(value, list):
        items = [_clean_json(v) for v in value]
        return [v for v, _ in items], any(c for _, c in items)
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for k, v in value.items():
            key, c1 = _clean_json(k)
            val, c2 = _clean_json(v)
            out[key] = val
            changed = changed or c1 or c2
        return out, changed
    return value, False


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class _JsonScanner:
    """Walks a JSON document held in a file to the camera list, then decodes its elements one at a time."""

    def __init__(self, fh: io.TextIOWrapper) -> None:
        self.fh = fh
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.lines_before = 0  # newlines in the part of the document already dropped from the buffer
        self._done = False  # the list's closing bracket has been read

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.fh.read(_BLOCK)
        except UnicodeDecodeError as exc:
            raise ReadError(f"neither UTF-8 nor GB18030 text: {exc}") from exc
        if not data:
            self.eof = True
            return False
        self.lines_before += self.buf.count("\n", 0, self.pos)
        self.buf = self.buf[self.pos :] + data
        self.pos = 0
        if len(self.buf) > MAX_JSON_RECORD + _BLOCK:
            raise ReadError(f"JSON line {self._line()}: a single value larger than {MAX_JSON_RECORD >> 20} MB")
        return True

    def _line(self) -> int:
        return self.lines_before + self.buf.count("\n", 0, self.pos) + 1

    def _error(self, what: str) -> ReadError:
        return ReadError(f"not valid JSON: line {self._line()}: {what}")

    def peek(self) -> str:
        while True:
            m = _JSON_WS.match(self.buf, self.pos)
            self.pos = m.end() if m else self.pos
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def expect(self, chars: str) -> str:
        ch = self.peek()
        if not ch or ch not in chars:
            raise self._error(f"expected {' or '.join(repr(c) for c in chars)}, found {ch or 'the end'!r}")
        self.pos += 1
        return ch

    def value(self) -> tuple[Any, bool]:
        """The next value, decoded, and whether NUL characters or lone surrogates had to be removed from it."""
        self.peek()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self._fill():
                    continue  # the value runs past the buffer
                raise self._error(exc.msg) from exc
            except RecursionError as exc:
                raise ReadError(f"JSON line {self._line()}: a value nested too deeply") from exc
            if end >= len(self.buf) and self._fill():
                continue  # a number may go on in the next block
            start, self.pos = self.pos, end
            if self.buf.find("\\u", start, end) >= 0 and _JSON_ESCAPE_WORTH_A_LOOK.search(self.buf, start, end):
                return _clean_json(obj)
            return obj, False

    def skip_string_key(self) -> str:
        key, _ = self.value()
        if not isinstance(key, str):
            raise self._error("expected a key")
        self.expect(":")
        return key

    def find_list(self, geojson: bool, depth: int = 0) -> tuple[str, list[Any]] | None:
        """Walk to the camera list: ("features" | "list", its first elements); None when the document is of
        another shape (then it is loaded whole). Stops inside the list, ready for elements()."""
        if self.expect("[{") == "[":
            return "list", self._first_elements()
        if self.peek() == "}":
            self.pos += 1
            return None
        while True:
            key = self.skip_string_key()
            lowered = key.lower()
            nxt = self.peek()
            if depth == 0 and lowered == "features" and nxt == "[":
                self.expect("[")
                return "features", self._first_elements()
            if depth == 0 and lowered in {"elements", "geometry", "properties"}:
                return None  # OpenStreetMap (Overpass) or a single Feature: read whole
            if lowered in _LIST_KEYS and nxt in "[{" and depth < 2 and not geojson:
                found = self.find_list(geojson, depth + 1)
                if found is not None or nxt == "[":
                    return found
            else:
                self.value()
            if self.expect(",}") == "}":
                return None

    def _first_elements(self) -> list[Any]:
        first: list[Any] = []
        if self.peek() == "]":
            self.pos += 1
            self._done = True
            return first
        self._done = False
        while len(first) < _PEEK:
            obj, cleaned = self.value()
            first.append(obj if not cleaned else _CleanedMarker(obj))
            if self.expect(",]") == "]":
                self._done = True
                break
        return first

    def elements(self, already: int) -> Iterator[JsonItem]:
        """The list's remaining elements (after the ``already`` returned by find_list), with cleaning notes."""
        if self._done:
            return
        while True:
            obj, cleaned = self.value()
            yield obj, (_CLEANED,) if cleaned else ()
            if self.expect(",]") == "]":
                return


@dataclass(frozen=True, slots=True)
class _CleanedMarker:
    value: Any


_CLEANED = RowIssue(0, CONTROL_CHARACTERS, "NUL characters or broken surrogate escapes removed", False)


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
    asm.flush()
    items = asm.count + asm.issue_counts.get((CATALOG_REGION, False), 0)
    if sum_num > items:
        asm.file_issue(
            sum_line,
            CATALOG_INCOMPLETE,
            f"SumNum announces {sum_num} items but the file holds {items}: some catalog messages are missing",
        )
    return asm.result("xml", label)


def read_catalog_documents(
    documents: Sequence[bytes], column_map: ColumnMap | None = None, encoding: str | None = None
) -> ReadResult:
    """The records of GB/T 28181 Catalog response bodies received over SIP (one query's MESSAGEs), read as a
    catalog file is: each body decoded by its own XML declaration (GB2312/GBK/GB18030 as GB18030, UTF-8 first),
    the same element map, region nodes skipped, CATALOG-INCOMPLETE when SumNum announces more items."""
    texts = []
    label: str | None = None
    for data in documents:
        text, label = _decode_xml(data, encoding)
        texts.append(_XML_DECL.sub("", text))
    result = _read_xml("\n".join(texts).encode("utf-8"), column_map or ColumnMap(), "utf-8")
    result.encoding = label
    return result


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
        extra.update(login_free(ext[1]))
    login = _login_of(texts, list(plan.logins.items())) if plan.logins else None
    asm.add(line, values, extra, login=login)
