"""Header and value normalisation for imported camera ledgers and catalogs.

Department ledgers name the same column a dozen ways (设备编码, 国标ID, DeviceID, gbid ...) and write values
the way a spreadsheet left them (full-width digits, "90天", "1-球机", 3.7131100001326e+19). This module maps
headers onto the canonical fields of :mod:`vms.catalog.fields` and turns raw cell values into typed values, reporting
every silent fix as a :class:`ValueNote` so the importer can show it to the operator.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import tomllib
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from vms.catalog.domain import normalize_mac
from vms.catalog.fields import BY_NAME, FIELDS, Field, Kind

__all__ = [
    "CRS",
    "EASTING",
    "IGNORE",
    "LOGIN_PASSWORD",
    "LOGIN_USERNAME",
    "LONLAT",
    "NORTHING",
    "PSEUDO_FIELDS",
    "ColumnMap",
    "ColumnMapError",
    "HeaderPlan",
    "ValueNote",
    "cell_text",
    "default_aliases",
    "load_column_map",
    "login_free",
    "login_role",
    "normalize_header",
    "parse_value",
    "parser_for",
]

# Target of a user override that drops a column entirely (neither a field nor an extra column).
IGNORE = ""
_IGNORE_TARGETS = frozenset({"", "-"})

# Longest text read as a number: real cells are far shorter, and the bound keeps hostile cells (thousands of
# digits, long runs of separators) from costing quadratic time or exceeding int conversion limits.
MAX_NUMBER_TEXT = 64
# Integer fields are 32-bit columns (PostgreSQL INTEGER): a larger value would abort the whole import there.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1

# Issue codes shared with the importer.
NUMBER_FORMAT = "NUMBER-FORMAT"
VALUE_DROPPED = "VALUE-DROPPED"
COORD_GARBAGE = "COORD-GARBAGE"
ID_MALFORMED = "ID-MALFORMED"


class ColumnMapError(ValueError):
    """A user column map is unreadable or names an unknown field."""


@dataclass(frozen=True, slots=True)
class ValueNote:
    """What happened to one value while parsing it (the importer adds the line and field)."""

    code: str
    message: str
    fatal: bool = False


Notes = tuple[ValueNote, ...]
Parser = Callable[[object], tuple[Any, Notes]]
_NO_NOTES: Notes = ()

# --------------------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------------------

# Real header spellings seen in ledgers, platform exports and open-data files, by canonical field.
# The field's own name, its catalog XML name and its Chinese label are added automatically.
LONLAT = "lonlat"  # pseudo-field of a combined coordinate column
# Pseudo-fields of projected coordinates and their coordinate system (EPSG code or WKT); the importer converts
# them to longitude/latitude with vms.geo.projection and keeps the raw values as extra columns.
EASTING = "easting"
NORTHING = "northing"
CRS = "crs"
PSEUDO_FIELDS = (LONLAT, EASTING, NORTHING, CRS)

_ALIASES: dict[str, tuple[str, ...]] = {
    "device_id": (
        "设备编码",
        "国标编码",
        "国标ID",
        "国标编号",
        "设备国标编码",
        "国标设备编码",
        "摄像机编码",
        "设备ID",
        "通道编码",
        "通道国标编码",
        "通道ID",
        "DeviceID",
        "device_id",
        "gb_id",
        "gbid",
        "gb28181_id",
        "GB28181编码",
        "GB28181编号",
        "国标",
        "channel_id",
    ),
    "name": (
        "设备名称",
        "点位名称",
        "摄像机名称",
        "名称",
        "通道名称",
        "监控点名称",
        "监控点位名称",
        "监控点位",
        "点位名",
        "设备名",
        "Name",
        "description",
        "camera_name",
    ),
    "manufacturer": (
        "厂商",
        "设备厂商",
        "品牌",
        "厂家",
        "生产厂商",
        "Manufacturer",
        "vendor",
        "brand",
        "make",
    ),
    "model": ("型号", "设备型号", "规格型号", "Model"),
    "owner": ("设备归属", "归属", "建设单位", "权属单位", "Owner"),
    "civil_code": (
        "行政区划",
        "行政区域",
        "行政区划代码",
        "行政区划编码",
        "区划代码",
        "区划编码",
        "所属区划",
        "CivilCode",
    ),
    "block": ("警区", "所属辖区", "辖区", "所属派出所", "派出所", "Block"),
    "address": ("安装地址", "地址", "安装位置", "点位地址", "详细地址", "位置", "Address"),
    "parental": ("是否有子设备", "Parental"),
    "parent_id": ("父设备编码", "父设备ID", "父节点", "上级编码", "ParentID", "parent"),
    "register_way": ("注册方式", "RegisterWay"),
    "secrecy": ("保密属性", "是否涉密", "涉密属性", "Secrecy"),
    "ip_address": ("IP地址", "IP", "IPAddress", "ip_addr", "设备IP", "IPv4", "IPv4地址", "host"),
    "port": ("端口", "端口号", "设备端口", "Port"),
    "status": ("设备状态", "状态", "在线状态", "Status"),
    "longitude": ("经度", "GPS经度", "经度坐标", "X坐标", "Longitude", "lon", "lng", "long", "x"),
    "latitude": ("纬度", "GPS纬度", "纬度坐标", "Y坐标", "Latitude", "lat", "y"),
    "ptz_type": ("摄像机类型", "相机类型", "摄像机形态", "云台类型", "PTZType"),
    "room_type": ("室内外", "室内外属性", "RoomType"),
    "supply_light_type": ("补光属性", "补光类型", "补光方式", "SupplyLightType"),
    "direction_type": ("监视方位", "监控方位", "方位", "朝向", "监控方向", "拍摄方向", "DirectionType"),
    "position_type": ("位置类型", "位置属性", "点位位置类型", "摄像机位置类型", "PositionType"),
    "use_type": ("用途", "用途属性", "用途类型", "摄像机用途", "UseType"),
    "resolution": ("分辨率", "摄像机分辨率", "Resolution"),
    "point_type": ("点位类型", "点位类别", "点位等级", "PointType"),
    "point_common_name": ("点位俗称", "俗称", "PointCommonName"),
    "mac": ("MAC", "MAC地址", "mac_address", "物理地址"),
    "function_type": ("功能类型", "摄像机功能类型", "FunctionType"),
    "horizontal_field_angle": ("水平视场角", "HorizontalFieldAngle"),
    "vertical_field_angle": ("垂直视场角", "VerticalFieldAngle"),
    "max_view_distance": ("最大可视距离", "可视距离", "MaxViewDistance"),
    "install_time": ("安装时间", "安装日期", "建设时间", "建设日期", "InstallTime"),
    "management_unit": ("管理单位", "管理部门", "所属单位", "ManagementUnit"),
    "contact_info": ("联系方式", "联系电话", "联系人电话", "ContactInfo"),
    "record_save_days": ("录像保存天数", "存储天数", "录像天数", "录像保存时间", "RecordSaveDays"),
    "photoelectric_imaging_type": ("光电成像类型", "PhotoelectricImagingType"),
    "local_id": ("编号", "点位编号", "key", "local_id"),
    "serial_number": ("序列号", "设备序列号", "SerialNumber", "serial", "sn"),
    "firmware_version": ("固件版本", "软件版本", "FirmwareVersion", "firmware"),
    "hardware_id": ("硬件标识", "HardwareId"),
    "endpoint_ref": ("端点引用", "EndpointReference", "endpoint"),
    "device_service_url": ("XAddrs", "xaddr", "ONVIF地址", "device_service"),
    "services": ("ONVIF服务",),
    "media_profiles": ("profiles",),
    "stream_uri": ("视频流地址", "取流地址", "RTSP地址", "rtsp", "stream_uri", "StreamUri", "stream_url"),
    # Not a field: one cell holding both coordinates ("118.2841,34.9972"), split by the importer.
    LONLAT: ("经纬度", "经纬度坐标", "坐标", "GPS坐标", "位置坐标", "lnglat", "lonlat", "coordinates"),
    EASTING: ("easting", "东坐标", "东向坐标", "东距"),
    NORTHING: ("northing", "北坐标", "北向坐标", "北距"),
    CRS: ("crs", "epsg", "srid", "坐标系", "坐标系统", "空间参考"),
    "snapshot_uri": (
        "url",
        "snapshot",
        "抓图地址",
        "截图地址",
        "snapshot_uri",
        "SnapshotUri",
        "snapshot_url",
    ),
}

# "经度(°)", "Longitude (WGS84)", "IP地址【必填】": the bracketed part is a unit or a hint, never the name.
_BRACKETED = re.compile(r"[(\[{【《<〔].*?[)\]}】》>〕]")
_HEADER_NOISE = re.compile(r"[\s_\-.*:#'\"/\\]+")


def normalize_header(header: str) -> str:
    """Matching key of a header: NFKC (full-width -> ASCII), case-folded, units and noise removed."""
    text = unicodedata.normalize("NFKC", header).casefold().strip()
    stripped = _BRACKETED.sub("", text)
    key = _HEADER_NOISE.sub("", stripped)
    if not key:  # the whole header was in brackets: use what is inside
        key = _HEADER_NOISE.sub("", re.sub(r"[()\[\]{}【】《》<>〔〕]", "", text))
    return key


def default_aliases() -> dict[str, tuple[str, int]]:
    """Normalised header -> (canonical field, rank); rank 0 for the field's own names, 1 for aliases."""
    table: dict[str, tuple[str, int]] = {}
    for f in FIELDS:
        for spelling in (f.name, f.xml or "", f.label_zh):
            if spelling:
                table[normalize_header(spelling)] = (f.name, 0)
    for name, spellings in _ALIASES.items():
        for spelling in spellings:
            key = normalize_header(spelling)
            if key in table and table[key][0] != name:
                raise AssertionError(f"header alias {spelling!r} maps to both {table[key][0]} and {name}")
            table.setdefault(key, (name, 1))
    return table


_DEFAULTS = default_aliases()

# Login columns of department ledgers (account and password of the camera's web/ONVIF login). Their values are
# never stored with the record: the importer moves them to the encrypted credential store (per host, like logins
# found in URLs), and what an older import left in ``extra`` under such a header is never shown (login_free).
# Exact header names after normalize_header: "pass rate", "通过率" or "passage" are not logins.
LOGIN_USERNAME = "username"
LOGIN_PASSWORD = "password"  # noqa: S105 (a column role, not a password)
_LOGIN_SPELLINGS: dict[str, tuple[str, ...]] = {
    LOGIN_USERNAME: (
        "用户名", "登录名", "登陆名", "账号", "帐号", "登录账号", "登录帐号", "登陆账号", "登录用户名", "用户账号",
        "user", "username", "login", "loginname", "loginuser", "user_name", "login_name",
    ),
    LOGIN_PASSWORD: (
        "密码", "口令", "登录密码", "登陆密码", "设备密码", "用户密码", "登录口令",
        "password", "passwd", "pwd", "pass", "passcode", "loginpassword", "login_password", "user_password",
    ),
}  # fmt: skip
_LOGIN_HEADERS: dict[str, str] = {
    normalize_header(spelling): role for role, spellings in _LOGIN_SPELLINGS.items() for spelling in spellings
}


@lru_cache(maxsize=4096)
def login_role(header: str) -> str | None:
    """:data:`LOGIN_USERNAME` or :data:`LOGIN_PASSWORD` when ``header`` names a login column, else None. Also
    for extra keys an import made unique ("密码 (2)": the bracketed part is dropped like a unit)."""
    return _LOGIN_HEADERS.get(normalize_header(header))


def login_free(extra: Mapping[str, Any]) -> Mapping[str, Any]:
    """``extra`` without keys that name a login column (``extra`` itself when it has none: no copy)."""
    for key in extra:
        if login_role(str(key)) is not None:
            return {k: v for k, v in extra.items() if login_role(str(k)) is None}
    return extra


@dataclass(frozen=True, slots=True)
class HeaderPlan:
    """How the columns of one header row are used."""

    fields: dict[int, str]  # column index -> canonical field
    extra: dict[int, str]  # column index -> key in ParsedRow.extra (the original header)
    ignored: tuple[int, ...]  # columns a user override told us to drop
    shadowed: dict[int, str]  # columns that also named a field another column already holds (-> extra)
    id_as_local: str | None = None  # header of a bare `id` column taken as the department number (local_id)
    # Login columns (column index -> LOGIN_USERNAME / LOGIN_PASSWORD): neither fields nor extra; the importer
    # hands their values on as ParsedRow.login only.
    logins: dict[int, str] = field(default_factory=dict)


# A bare `id` column is the record's number in its source: the department number when nothing else identifies
# the camera (no GB ID, 编号, MAC, serial, endpoint or IP column). The importer says so in its report.
_BARE_ID_HEADERS = frozenset({"id", "@id"})
_IDENTIFYING = frozenset({"device_id", "local_id", "mac", "serial_number", "endpoint_ref", "ip_address"})


class ColumnMap:
    """Header -> canonical field mapping: built-in spellings plus user overrides (which win)."""

    def __init__(self, overrides: Mapping[str, str] | None = None, *, use_defaults: bool = True) -> None:
        self._table: dict[str, tuple[str, int]] = {}
        if use_defaults:
            self._table.update(_DEFAULTS)
        self.overrides: dict[str, str] = {}
        for header, target in (overrides or {}).items():
            target = target.strip()
            if target in _IGNORE_TARGETS:
                target = IGNORE
            elif target not in BY_NAME and target not in PSEUDO_FIELDS:
                raise ColumnMapError(_unknown_target_message(header, target))
            self.overrides[header] = target
            # Rank -1: an operator's explicit choice beats any built-in spelling in the same file.
            self._table[normalize_header(header)] = (target, -1)
        self._plans: dict[tuple[str, ...], HeaderPlan] = {}

    def field_for(self, header: str) -> str | None:
        """Canonical field for a header, :data:`IGNORE` for a dropped column, None when unknown."""
        hit = self._table.get(normalize_header(header))
        return hit[0] if hit else None

    def plan(self, headers: Sequence[str]) -> HeaderPlan:
        """Assign columns to fields; when two columns name one field the better-ranked (then first) wins."""
        key = tuple(headers)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        best: dict[str, tuple[int, int]] = {}  # field -> (rank, index)
        candidates: dict[int, str] = {}
        ignored: list[int] = []
        logins: dict[int, str] = {}
        for idx, header in enumerate(headers):
            hit = self._table.get(normalize_header(header)) if header.strip() else None
            if hit is None or hit[1] >= 0:  # an operator's own mapping (rank -1) of the header wins
                role = login_role(header)
                if role is not None:
                    if role not in logins.values():  # the first column of each kind; later ones are dropped
                        logins[idx] = role
                    else:
                        ignored.append(idx)
                    continue
            if hit is None:
                continue
            target, rank = hit
            if target == IGNORE:
                ignored.append(idx)
                continue
            candidates[idx] = target
            if target not in best or rank < best[target][0]:
                best[target] = (rank, idx)
        fields = {idx: f for idx, f in candidates.items() if best[f][1] == idx}
        shadowed = {idx: f for idx, f in candidates.items() if idx not in fields}
        id_as_local = None
        if _IDENTIFYING.isdisjoint(fields.values()):
            for idx, header in enumerate(headers):
                free = idx not in fields and idx not in ignored and idx not in shadowed
                if free and normalize_header(header) in _BARE_ID_HEADERS:
                    fields[idx] = "local_id"
                    id_as_local = header.strip()
                    break
        extra: dict[int, str] = {}
        used: set[str] = set()
        for idx, header in enumerate(headers):
            if idx in fields or idx in ignored or idx in logins:
                continue
            name = header.strip() or f"column {idx + 1}"
            # Two unmapped columns with one header ("备注", "备注") must not overwrite each other.
            unique, n = name, 2
            while unique in used:
                unique, n = f"{name} ({n})", n + 1
            used.add(unique)
            extra[idx] = unique
        plan = HeaderPlan(
            fields=fields,
            extra=extra,
            ignored=tuple(ignored),
            shadowed=shadowed,
            id_as_local=id_as_local,
            logins=logins,
        )
        if len(self._plans) < 1024:  # JSON records may each carry their own key set
            self._plans[key] = plan
        return plan

    def resolve(self, headers: Sequence[str]) -> tuple[dict[int, str], list[str]]:
        """Column index -> canonical field, and the unmapped headers (their values go to ``extra``)."""
        plan = self.plan(headers)
        return dict(plan.fields), list(plan.extra.values())


def _unknown_target_message(header: str, target: str) -> str:
    hint = _DEFAULTS.get(normalize_header(target)) if target else None
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return (
        f"column map: {header!r} -> {target!r}: {target!r} is not a known field{suggestion}; "
        f'use one of the field names in vms.catalog.fields, or "" / "-" to ignore the column'
    )


def load_column_map(path: Path | str, *, use_defaults: bool = True) -> ColumnMap:
    """Read a user map ``{"header": "field"}`` from JSON or TOML (top level or a ``columns`` table)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ColumnMapError(f"column map {path}: cannot read: {exc.strerror}") from exc
    text = raw.decode("utf-8-sig", errors="strict") if raw else ""
    data: object
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ColumnMapError(f"column map {path}: not valid JSON or TOML: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("columns"), dict):
        data = data["columns"]
    if not isinstance(data, dict):
        raise ColumnMapError(f"column map {path}: expected a table of header -> field name")
    overrides: dict[str, str] = {}
    for header, target in data.items():
        if not isinstance(target, str):
            raise ColumnMapError(f"column map {path}: {header!r} must map to a field name (a string)")
        overrides[str(header)] = target
    try:
        return ColumnMap(overrides, use_defaults=use_defaults)
    except ColumnMapError as exc:
        raise ColumnMapError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------------------

# Placeholders people type into a cell that means "nothing here".
_EMPTY = frozenset({"", "-", "--", "/", "无", "null", "none", "n/a", "na", "nan", "#n/a", "—", "－"})


_EMPTY_ANY_CASE = frozenset(v for e in _EMPTY for v in (e, e.upper(), e.title(), e.capitalize()))


def _empty(text: str) -> bool:
    return text in _EMPTY_ANY_CASE or (len(text) <= 4 and text.lower() in _EMPTY)


def _nfkc(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def _cell_text(raw: object) -> str:
    """A non-string cell (from XLSX or JSON) as the text a person would read in it."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "1" if raw else "0"
    if isinstance(raw, int):
        try:
            return str(raw)
        except ValueError:  # beyond Python's int-to-text limit: no ledger value, and no reason to hang on it
            return f"(an integer of {raw.bit_length():,} bits)"
    if isinstance(raw, float):
        if raw.is_integer() and abs(raw) < 1e15:
            return str(int(raw))
        return repr(raw)
    if isinstance(raw, datetime):
        return raw.date().isoformat() if raw.time() == time(0) else raw.isoformat()
    if isinstance(raw, date | time):
        return raw.isoformat()
    if isinstance(raw, dict | list):
        try:
            return json.dumps(raw, ensure_ascii=False)
        except (ValueError, RecursionError):
            return "(a value nested too deeply)"
    return str(raw)


# --- numbers ---

_NUMBER_UNIT = re.compile(r"([+-]?\d[\d.,' ]*)\s*(\D*)")
_UNIT_WORD = re.compile(r"[^\d\s]{1,8}")


def _parse_number(raw: object) -> tuple[float | None, str | None]:
    """(value, what was fixed) for a number written by hand; (None, None) when it is not a number."""
    if isinstance(raw, bool):
        return None, None
    if isinstance(raw, int | float):
        try:
            value = float(raw)
        except OverflowError:  # an integer of hundreds of digits
            return None, None
        return (value, None) if math.isfinite(value) else (None, None)
    text = str(raw)
    if len(text) > MAX_NUMBER_TEXT:  # no number is written this long; bounds the patterns below
        return None, None
    if "_" not in text and text.isascii():  # float() also takes "1_000" and full-width digits silently
        try:
            value = float(text)
        except ValueError:
            pass
        else:
            return (value, None) if math.isfinite(value) else (None, None)
    fixes: list[str] = []
    norm = _nfkc(text).strip()
    if norm != text.strip():
        fixes.append("full-width characters")
    m = _NUMBER_UNIT.fullmatch(norm)
    if not m:
        return None, None
    body, unit = m.group(1).strip(), m.group(2).strip()
    if unit:
        if not _UNIT_WORD.fullmatch(unit):
            return None, None
        fixes.append(f"unit {unit!r} removed")
    number = _strip_separators(body, fixes)
    if number is None:
        return None, None
    try:
        value = float(number)
    except ValueError:
        return None, None
    if not math.isfinite(value):
        return None, None
    return value, ", ".join(fixes) or None


def _strip_separators(body: str, fixes: list[str]) -> str | None:
    """Remove thousands separators; accept a decimal comma only where it cannot be a thousands separator."""
    if " " in body or "'" in body:
        if re.fullmatch(r"[+-]?\d{1,3}([ ']\d{3})+(\.\d+)?", body):
            fixes.append("thousands separators removed")
            return body.replace(" ", "").replace("'", "")
        return None
    has_comma, has_dot = "," in body, "." in body
    if has_comma and has_dot:
        if body.rfind(".") > body.rfind(","):
            if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+\.\d+", body):
                fixes.append("thousands separators removed")
                return body.replace(",", "")
        elif re.fullmatch(r"[+-]?\d{1,3}(\.\d{3})+,\d+", body):
            fixes.append("thousands separators removed, decimal comma")
            return body.replace(".", "").replace(",", ".")
        return None
    if has_comma:
        # "1,234" is a thousands separator (Chinese and English ledgers); "22,5" can only be a decimal comma.
        if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+", body):
            fixes.append("thousands separators removed")
            return body.replace(",", "")
        if re.fullmatch(r"[+-]?\d+,\d+", body):
            fixes.append("decimal comma")
            return body.replace(",", ".")
        return None
    return body


def _short(raw: object) -> str:
    """A cell's text for a message: a hostile cell of a megabyte is not repeated whole in the report."""
    text = _cell_text(raw)
    return text if len(text) <= 80 else f"{text[:60]}… ({len(text):,} characters)"


def _number_note(text: object, value: float | int, fixes: str) -> Notes:
    return (ValueNote(NUMBER_FORMAT, f"{_cell_text(text)!r} read as {value} ({fixes})"),)


def _make_int_parser(f: Field) -> Parser:
    zero_is_none = f.name == "port"  # GB/T 28181: 0 means "not reported"

    def parse(raw: object) -> tuple[Any, Notes]:
        if type(raw) is int and _INT_MIN <= raw <= _INT_MAX:
            return (None if zero_is_none and raw == 0 else raw), _NO_NOTES
        if type(raw) is str:
            text = raw.strip()
            if text.isdigit() and text.isascii() and len(text) < 10:
                value = int(text)
                return (None if zero_is_none and value == 0 else value), _NO_NOTES
            if _empty(text):
                return None, _NO_NOTES
        value_f, fixes = _parse_number(raw)
        if value_f is None or not value_f.is_integer() or not _INT_MIN <= value_f <= _INT_MAX:
            return None, (ValueNote(VALUE_DROPPED, f"{_short(raw)!r} is not a whole number: dropped"),)
        value_i = int(value_f)
        if zero_is_none and value_i == 0:
            return None, _NO_NOTES
        return value_i, (_number_note(raw, value_i, fixes) if fixes else _NO_NOTES)

    return parse


# 118°17'30.5"E, 东经118度17分30.5秒, N22°15′, 22.25N
_HEMISPHERE = re.compile(r"^(东经|西经|北纬|南纬|[NSEWnsew])|(东经|西经|北纬|南纬|[NSEWnsew])$")
_DEGREE_MARK = re.compile(r"[°度'′\"″分秒]")


def _parse_dms(text: str) -> float | None:
    norm = _nfkc(text).strip().replace("''", '"')
    hemi = ""
    m = _HEMISPHERE.search(norm)
    while m:
        hemi = (m.group(1) or m.group(2)).upper()
        norm = (norm[: m.start()] + norm[m.end() :]).strip()
        m = _HEMISPHERE.search(norm)
    if not hemi and not _DEGREE_MARK.search(norm):
        return None
    sign = -1.0 if norm.startswith("-") or hemi in {"S", "W", "西经", "南纬"} else 1.0
    parts = re.fullmatch(
        r"[+-]?(\d+(?:\.\d+)?)\s*(?:[°度]\s*)?(?:(\d+(?:\.\d+)?)\s*['′分]\s*)?(?:(\d+(?:\.\d+)?)\s*[\"″秒]?\s*)?",
        norm,
    )
    if not parts:
        return None
    deg, minutes, seconds = (float(p) if p else 0.0 for p in parts.groups())
    if minutes >= 60 or seconds >= 60 or ((minutes or seconds) and not deg.is_integer()):
        return None
    return sign * (deg + minutes / 60 + seconds / 3600)


_INF = float("inf")


def _plain_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _make_float_parser(f: Field) -> Parser:
    coordinate = f.name in {"longitude", "latitude"}

    def parse(raw: object) -> tuple[Any, Notes]:
        number: float | None = None
        if type(raw) is float or type(raw) is int:  # XLSX / JSON cells
            number = float(raw)
        elif type(raw) is str:
            if raw.isascii() and "_" not in raw:  # float() alone would also take "1_0" and full-width digits
                number = _plain_float(raw)
            if number is None and _empty(raw.strip()):
                return None, _NO_NOTES
        if number is not None:
            if number in (_INF, -_INF):  # 1e400, or a run of hundreds of digits: no value of any field
                code = COORD_GARBAGE if coordinate else VALUE_DROPPED
                return None, (ValueNote(code, f"{_short(raw)!r} is out of any range: dropped", fatal=coordinate),)
            if number != number or (coordinate and number == 0):
                return None, _NO_NOTES  # nan; coordinate 0 = "not reported" (GB/T 28181)
            return number, _NO_NOTES
        value, fixes = _parse_number(raw)
        if value is None and coordinate and isinstance(raw, str) and len(raw) <= MAX_NUMBER_TEXT:
            value = _parse_dms(raw)
            fixes = "degrees-minutes-seconds converted" if value is not None else None
        if value is None:
            if coordinate:
                message = f"{_short(raw)!r} is not a coordinate"
                return None, (ValueNote(COORD_GARBAGE, message, fatal=True),)
            return None, (ValueNote(VALUE_DROPPED, f"{_short(raw)!r} is not a number: dropped"),)
        if coordinate and value == 0:  # GB/T 28181: 0 means "not reported"
            return None, _NO_NOTES
        return value, (_number_note(raw, value, fixes) if fixes else _NO_NOTES)

    return parse


# --- enumerations ---

# Chinese and English labels people write instead of the code (GB/T 28181-2016/2022 appendix value sets).
_ENUM_LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "ptz_type": {
        # English: vendor catalogues and OpenStreetMap's camera:type (fixed, dome, panning).
        "1": ("球机", "球型", "球形", "球型摄像机", "高速球", "ptz", "speeddome", "ptzdome", "panning", "pantilt"),
        "2": ("半球", "半球型", "半球形", "半球机", "dome", "fixeddome", "minidome", "turret", "eyeball"),
        "3": ("固定枪机", "枪机", "枪型", "固定", "固定摄像机", "bullet", "box", "fixed", "fixedbullet"),
        "4": ("遥控枪机", "遥控枪", "电动枪机", "motorizedbullet", "motorisedbullet", "remotebullet"),
        "5": ("遥控半球", "遥控半球机", "motorizeddome", "motoriseddome", "remotedome"),
        "6": ("多目设备全景拼接通道", "多目全景", "全景拼接", "panoramic", "panorama", "multisensorpanoramic"),
        "7": ("多目设备分割通道", "多目分割", "multisensorsplit"),
    },
    "room_type": {"1": ("室外", "outdoor", "outside"), "2": ("室内", "indoor", "inside")},
    "supply_light_type": {
        "1": ("无补光", "none", "nolight"),
        "2": ("红外", "红外补光", "ir", "infrared", "irled", "infraredlight", "irlight"),
        "3": ("白光", "白光补光", "white", "whitelight"),
        "4": ("激光", "激光补光", "laser"),
        "9": ("其他", "其它", "other"),
    },
    "direction_type": {
        "1": ("东", "东向", "朝东", "正东", "e", "east"),
        "2": ("西", "西向", "朝西", "正西", "w", "west"),
        "3": ("南", "南向", "朝南", "正南", "s", "south"),
        "4": ("北", "北向", "朝北", "正北", "n", "north"),
        "5": ("东南", "东南向", "朝东南", "se", "southeast"),
        "6": ("东北", "东北向", "朝东北", "ne", "northeast"),
        "7": ("西南", "西南向", "朝西南", "sw", "southwest"),
        "8": ("西北", "西北向", "朝西北", "nw", "northwest"),
    },
    "position_type": {
        "1": ("省际检查站", "检查站"),
        "2": ("党政机关",),
        "3": ("车站码头",),
        "4": ("中心广场", "广场"),
        "5": ("体育场馆",),
        "6": ("商业中心",),
        "7": ("宗教场所",),
        "8": ("校园周边",),
        "9": ("治安复杂区域",),
        "10": ("交通干线",),
    },
    "use_type": {
        "1": ("治安", "社会治安", "publicorder", "publicsecurity", "security"),
        "2": ("交通", "traffic"),
        "3": ("重点", "重点区域", "keyarea", "key"),
    },
    "resolution": {
        "1": ("qcif",),
        "2": ("cif",),
        "3": ("4cif",),
        "4": ("d1", "704x576", "720x576"),
        "5": ("720p", "1280x720", "130万"),
        "6": ("1080p", "1920x1080", "200万", "fullhd", "fhd"),
    },
    "point_type": {
        "1": ("一类", "一类点", "一类点位", "一类视频监控点"),
        "2": ("二类", "二类点", "二类点位", "二类视频监控点"),
        "3": ("三类", "三类点", "三类点位", "三类视频监控点"),
        "9": ("其他", "其它", "其他点位"),
    },
    "function_type": {
        "01": ("人脸", "人脸卡口", "face"),
        "02": ("人员", "人体", "person", "body"),
        "03": ("机动车", "车辆", "车辆卡口", "vehicle"),
        "04": ("非机动车", "nonmotor"),
        "05": ("物品", "goods"),
        "99": ("其他", "其它", "other"),
    },
    "photoelectric_imaging_type": {
        "1": ("可见光", "visible"),
        "2": ("热成像", "红外热成像", "thermal"),
        "3": ("雷达", "radar"),
        "4": ("x光", "xray"),
        "5": ("光场", "lightfield"),
        "9": ("其他", "其它", "other"),
    },
    "status": {"ON": ("在线", "上线", "online", "on"), "OFF": ("离线", "下线", "不在线", "offline", "off")},
    "secrecy": {"1": ("涉密", "保密", "是"), "0": ("不涉密", "非涉密", "不保密", "否")},
    "parental": {"1": ("是", "有"), "0": ("否", "没有")},
    "register_way": {"1": ("rfc3261", "ietfrfc3261"), "2": ("口令双向认证",), "3": ("证书双向认证",)},
}

_MULTI_SPLIT = re.compile(r"\s*[/、,，;；|+]\s*")
# "1-球机", "3:固定枪机", "1（球机）": the code travels with its label in many templates.
_CODE_PREFIX = re.compile(r"(\d{1,2})\s*[-:：.、(（\s](?!\d)")


_KIND_SUFFIXES = ("camera", "cam", "摄像机", "摄像头")


def _label_key(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", _nfkc(text).casefold())


def _make_enum_parser(f: Field) -> Parser:
    values = f.values or frozenset()
    labels = {_label_key(lbl): code for code, lbls in _ENUM_LABELS.get(f.name, {}).items() for lbl in lbls}
    for code in values:
        labels.setdefault(_label_key(code), code)
    zero_means_none = "0" not in values  # Secrecy/Parental 0 are real values; elsewhere 0 = not reported
    cache: dict[str, Any] = {}

    def code_of(token: str) -> str | None:
        key = _label_key(token)
        hit = labels.get(key)
        if hit is not None:
            return hit
        for suffix in _KIND_SUFFIXES:  # "Dome Camera", "PTZ cam", "半球摄像机": the label before the noun
            if key.endswith(suffix) and len(key) > len(suffix):
                hit = labels.get(key[: -len(suffix)])
                if hit is not None:
                    return hit
        if len(key) <= 8 and re.fullmatch(r"\d+(\.0+)?", key):  # "1", "01", "1.0" (Excel)
            n = int(float(key))
            for candidate in (str(n), f"{n:02d}"):
                if candidate in values:
                    return candidate
        return None

    def resolve(text: str) -> Any:
        key = _label_key(text)
        if _empty(key) or (zero_means_none and re.fullmatch(r"0+(\.0+)?", key)):
            return None
        code = code_of(text)
        if code is not None:
            return code
        if f.multi:
            tokens = [t for t in _MULTI_SPLIT.split(text.strip()) if t]
            codes = [code_of(t) for t in tokens]
            if tokens and all(codes):
                return "/".join(dict.fromkeys(c for c in codes if c))
        m = _CODE_PREFIX.match(_nfkc(text))
        if m:
            code = code_of(m.group(1))
            if code is not None:
                return code
        # Unknown value: keep what was written so the quality check can show it; never reject the row.
        return text.strip()

    def parse(raw: object) -> tuple[Any, Notes]:
        text = raw if type(raw) is str else _cell_text(raw)
        hit = cache.get(text)
        if hit is None and text not in cache:
            hit = resolve(text)
            if len(cache) < 4096:
                cache[text] = hit
        return hit, _NO_NOTES

    return parse


# --- text ---


def _parse_text(raw: object) -> tuple[Any, Notes]:
    text = raw.strip() if type(raw) is str else _cell_text(raw).strip()
    if text in _EMPTY_ANY_CASE or (len(text) <= 4 and text.lower() in _EMPTY):
        return None, _NO_NOTES
    return text, _NO_NOTES


_SCIENTIFIC = re.compile(r"[+-]?(\d+(?:\.\d*)?)[eE]\+?(\d+)")


def _parse_device_id(raw: object) -> tuple[Any, Notes]:
    if type(raw) is str:
        text = raw.strip()
        if len(text) == 20 and text.isdigit() and text.isascii():
            return text, _NO_NOTES
    if isinstance(raw, bool):
        return None, (ValueNote(ID_MALFORMED, f"{raw!r} is not a 20-digit ID", fatal=True),)
    if isinstance(raw, int):
        if not -(10**MAX_NUMBER_TEXT) < raw < 10**MAX_NUMBER_TEXT:
            return None, (ValueNote(ID_MALFORMED, "a number of more than 64 digits is not a 20-digit ID", fatal=True),)
        text = str(raw)  # an integer cell holds every digit: recoverable
    elif isinstance(raw, float):
        text = repr(raw)  # Excel kept only ~15 significant digits
    else:
        text = str(raw).strip()
    if _empty(text):
        return None, _NO_NOTES
    if len(text) == 20 and text.isascii() and text.isdigit():
        return text, _NO_NOTES
    if len(text) > MAX_NUMBER_TEXT:
        return None, (ValueNote(ID_MALFORMED, f"{_short(text)!r} is not a 20-digit ID", fatal=True),)
    # Full-width digits, spaces typed for readability, Excel's leading apostrophe that forces text.
    norm = re.sub(r"\s+", "", _nfkc(text)).lstrip("'")
    m = _SCIENTIFIC.fullmatch(norm)
    if m and len(m.group(2)) > 2:  # 1e999999999: no ID, and expanding it would take all memory
        return None, (ValueNote(ID_MALFORMED, f"{text!r} is not a 20-digit ID", fatal=True),)
    if m:
        significant = len(m.group(1).replace(".", "").lstrip("0"))
        try:
            exact = Decimal(norm)
        except InvalidOperation:
            exact = Decimal(0)
        if significant < 20 and not (exact == exact.to_integral_value() and len(str(int(exact))) < 20):
            return None, (
                ValueNote(
                    ID_MALFORMED,
                    f"{text!r} lost its last digits (the spreadsheet stored the ID as a number); "
                    "format the column as text and export again",
                    fatal=True,
                ),
            )
        norm = str(int(exact)) if exact == exact.to_integral_value() else norm
    elif re.fullmatch(r"\d{20}\.0+", norm):
        norm = norm.split(".")[0]
    if len(norm) == 20 and norm.isascii() and norm.isdigit():
        note = ValueNote(NUMBER_FORMAT, f"{text!r} read as {norm}") if norm != text else None
        return norm, ((note,) if note else _NO_NOTES)
    return None, (ValueNote(ID_MALFORMED, f"{text!r} is not a 20-digit ID", fatal=True),)


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")


def _parse_ip(raw: object) -> tuple[Any, Notes]:
    text = _cell_text(raw).strip()
    if _IPV4.fullmatch(text):  # the common case, without ipaddress' per-octet Python parsing
        return text, _NO_NOTES
    if _empty(text):
        return None, _NO_NOTES
    try:
        return str(ipaddress.ip_address(text)), _NO_NOTES
    except ValueError:
        pass
    # Full-width digits and the IME's "。" instead of "." are common in hand-typed ledgers.
    norm = _nfkc(text).replace("。", ".").strip("[] ")
    parts = norm.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3 for p in parts):
        # "192.168.001.010": Python refuses leading zeros; ledgers pad octets to line them up.
        norm = ".".join(str(int(p)) for p in parts)
    try:
        value = str(ipaddress.ip_address(norm))
    except ValueError:
        if _HOSTNAME.fullmatch(norm) and not all(p.isdigit() for p in parts):
            return norm.lower(), _NO_NOTES
        return None, (ValueNote(VALUE_DROPPED, f"{text!r} is not an IP address or host name: dropped"),)
    return value, (ValueNote(NUMBER_FORMAT, f"{text!r} read as {value}"),)


_MAC_PLAIN = re.compile(r"[0-9A-Fa-f]{2}([-:])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}")


def _parse_mac(raw: object) -> tuple[Any, Notes]:
    text = _cell_text(raw).strip()
    m = _MAC_PLAIN.fullmatch(text)
    if m and text[0:2] + text[3:5] + text[6:8] + text[9:11] + text[12:14] + text[15:17] != "000000000000":
        return text.lower().replace("-", ":"), _NO_NOTES  # same result as domain.normalize_mac, faster
    if _empty(text):
        return None, _NO_NOTES
    return normalize_mac(_nfkc(text)) or text, _NO_NOTES


_DATE_PATTERNS = (
    re.compile(
        r"(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?"
        r"(?:[ T]+(\d{1,2})[:时](\d{1,2})(?:[:分](\d{1,2}))?秒?)?"
    ),
    re.compile(r"(\d{4})(\d{2})(\d{2})(?:[ T]?(\d{2}):?(\d{2}):?(\d{2})?)?"),
)
_EXCEL_EPOCH = datetime(1899, 12, 30)  # Excel serial dates are naive local dates


_TIME_CACHE: dict[str, tuple[Any, Notes]] = {}


def _parse_install_time(raw: object) -> tuple[Any, Notes]:
    if type(raw) is str:
        hit = _TIME_CACHE.get(raw)
        if hit is None:
            hit = _parse_install_time_uncached(raw)
            if len(_TIME_CACHE) < 8192:  # ledgers repeat the same few installation dates
                _TIME_CACHE[raw] = hit
        return hit
    return _parse_install_time_uncached(raw)


def _parse_install_time_uncached(raw: object) -> tuple[Any, Notes]:
    if isinstance(raw, datetime):
        if raw.time() == time(0):
            return raw.date().isoformat(), _NO_NOTES
        return raw.isoformat(timespec="seconds"), _NO_NOTES
    if isinstance(raw, date):
        return raw.isoformat(), _NO_NOTES
    if isinstance(raw, int | float) and not isinstance(raw, bool) and 20000 <= raw <= 80000:
        # A date cell whose number format was lost: Excel serial day number.
        moment = _EXCEL_EPOCH + timedelta(days=float(raw))
        return _parse_install_time_uncached(moment.replace(microsecond=0))
    text = _cell_text(raw).strip()
    if _empty(text):
        return None, _NO_NOTES
    norm = _nfkc(text)
    for pattern in _DATE_PATTERNS:
        m = pattern.fullmatch(norm)
        if not m:
            continue
        y, mo, d, hh, mi, ss = (int(g) if g else None for g in m.groups())
        try:
            if hh is None:
                return date(y or 0, mo or 0, d or 0).isoformat(), _NO_NOTES
            moment = datetime(y or 0, mo or 0, d or 0, hh, mi or 0, ss or 0)  # ledgers hold local wall time
        except ValueError:
            break
        return moment.isoformat(timespec="seconds"), _NO_NOTES
    m = re.fullmatch(r"(\d{4})[-/.年](\d{1,2})月?", norm)
    if m and 1 <= int(m.group(2)) <= 12:
        return f"{int(m.group(1)):04d}-{int(m.group(2)):02d}", _NO_NOTES
    return text, _NO_NOTES  # unrecognised: kept, the quality rules judge it


def _parse_json(raw: object) -> tuple[Any, Notes]:
    if isinstance(raw, dict | list):
        return raw, _NO_NOTES
    text = _cell_text(raw).strip()
    if _empty(text):
        return None, _NO_NOTES
    try:
        return json.loads(text), _NO_NOTES
    except (ValueError, RecursionError):  # not JSON, nested too deeply, or numbers beyond conversion limits
        return text, _NO_NOTES


def _build_parsers() -> dict[str, Parser]:
    parsers: dict[str, Parser] = {}
    for f in FIELDS:
        if f.kind is Kind.INT:
            parsers[f.name] = _make_int_parser(f)
        elif f.kind is Kind.FLOAT:
            parsers[f.name] = _make_float_parser(f)
        elif f.kind is Kind.ENUM:
            parsers[f.name] = _make_enum_parser(f)
        elif f.kind is Kind.JSON:
            parsers[f.name] = _parse_json
        else:
            parsers[f.name] = _parse_text
    parsers["device_id"] = _parse_device_id
    parsers["ip_address"] = _parse_ip
    parsers["mac"] = _parse_mac
    parsers["install_time"] = _parse_install_time
    parsers[LONLAT] = _make_lonlat_parser(parsers["longitude"], parsers["latitude"])
    for name in (EASTING, NORTHING, CRS):
        parsers[name] = _parse_raw_text  # converted (and checked) by the importer, which also keeps the raw text
    return parsers


def _parse_raw_text(raw: object) -> tuple[Any, Notes]:
    text = _cell_text(raw).strip()
    return (None if _empty(text) else text), _NO_NOTES


_LONLAT_SPLIT = re.compile(r"[\s,，;；/|]+")


def _make_lonlat_parser(lon_parser: Parser, lat_parser: Parser) -> Parser:
    def parse(raw: object) -> tuple[Any, Notes]:
        text = _cell_text(raw).strip().strip("()（）[]【】")
        if _empty(text):
            return None, _NO_NOTES
        parts = [p for p in _LONLAT_SPLIT.split(text) if p]
        if len(parts) != 2:
            return None, (ValueNote(COORD_GARBAGE, f"{text!r} is not 'longitude,latitude'", fatal=True),)
        lon, lon_notes = lon_parser(parts[0])
        lat, lat_notes = lat_parser(parts[1])
        notes = lon_notes + lat_notes
        if any(n.fatal for n in notes):
            return None, notes
        return ((lon, lat) if lon is not None and lat is not None else None), notes

    return parse


_PARSERS = _build_parsers()


def parser_for(field: str | Field) -> Parser:
    """The value parser of a canonical field (KeyError for an unknown field)."""
    return _PARSERS[field if isinstance(field, str) else field.name]


def parse_value(field: str | Field, raw: object) -> tuple[Any, Notes]:
    """Typed value of ``raw`` for ``field`` (None = no value) and notes on what was fixed or rejected."""
    if raw is None:
        return None, _NO_NOTES
    return parser_for(field)(raw)


def cell_text(raw: object) -> str:
    """Text of a cell for the ``extra`` columns (numbers without a spurious ".0", dates in ISO 8601)."""
    return "" if raw is None else _cell_text(raw).strip()
