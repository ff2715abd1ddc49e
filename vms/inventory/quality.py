"""Data-quality rules of video-resource governance (DOMAIN.md section 3), as pure functions.

Each problem has a stable code so reports, dashboards and exports can be compared across runs.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Container, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vms.catalog.domain import normalize_mac
from vms.catalog.fields import ENUM_FIELDS, Field
from vms.catalog.gbid import check_gb_id
from vms.catalog.mojibake import damage
from vms.geo.placement import related

# code -> (rule number in DOMAIN.md section 3, description)
RULES: dict[str, tuple[int, str]] = {
    "ID-MISSING": (1, "no GB/T 28181 device ID"),
    "ID-FORMAT": (1, "device ID is not 20 digits"),
    "ID-CIVIL-CODE": (1, "device ID does not start with a valid civil code"),
    "ID-OUTSIDE-REGION": (1, "device ID's civil code is outside the governed region"),
    "ID-INDUSTRY": (1, "device ID's industry digits are not in the value set"),
    "ID-TYPE": (1, "device ID's type is not 131/132 (camera)"),
    "ID-NETWORK": (1, "device ID's network digit is not in the value set"),
    "CIVIL-CODE-MISSING": (2, "no civil code"),
    "CIVIL-CODE-INVALID": (2, "civil code is not a known administrative division"),
    "CIVIL-CODE-OUTSIDE": (2, "civil code is outside the governed region"),
    "COORD-MISSING": (3, "coordinates missing"),
    "COORD-ZERO": (3, "coordinates are zero"),
    "COORD-RANGE": (3, "coordinates out of range"),
    "COORD-OUTSIDE-REGIONS": (3, "position lies outside every region polygon"),
    "COORD-OUTSIDE-GOVERNED": (3, "position lies outside the governed region's polygon"),
    "REGION-MISMATCH": (3, "region by civil code and region by position disagree"),
    **{f"ENUM-{f.xml.upper()}": (4, f"{f.xml} holds a value outside its set") for f in ENUM_FIELDS if f.xml},
    "DUP-ID": (5, "another camera has the same device ID"),
    "DUP-NAME-POSITION": (5, "another camera has the same name and coordinates"),
    "DUP-MAC": (5, "another camera has the same MAC address"),
    "DUP-SERIAL": (5, "another camera has the same maker and serial number"),
    "NAME-MISSING": (6, "no name"),
    "NAME-DEFAULT": (6, "name is a vendor default, not a place"),
    "NAME-NUMERIC": (6, "name is a bare number"),
    "NAME-IP": (6, "name is an IP address"),
    "TEXT-DAMAGED": (6, "name, maker, model or address is damaged by a wrong encoding (U+FFFD, mojibake)"),
    "PARENT-UNRESOLVED": (7, "ParentID names no known device, organisation or region"),
    "POINT-INFO-MISSING": (8, "class-1/2 point lacks InstallTime, ContactInfo or RecordSaveDays"),
}

_DEFAULT_NAME = re.compile(
    r"^\s*(ip\s*camera|ipc|ip\s*dome|network\s*camera|camera|cam|channel|ch|video|dome|hikvision|dahua|uniview|"
    r"ds-[\w-]+|摄像机|摄像头|通道|监控点|未命名|新建|测试|test|default|unnamed)[\s_\-#]*\d*\s*$",
    re.IGNORECASE,
)
_NUMERIC_NAME = re.compile(r"^[\s\d_\-.#/]+$")


@dataclass(frozen=True)
class QualityContext:
    governed: str | None = None  # civil code of the governed region
    known_civil_codes: Container[str] | None = None  # None: codes not imported, format checks only
    has_polygons: bool = False
    governed_has_polygon: bool = False
    known_parents: Container[str] = frozenset()


def name_problem(name: str | None) -> str | None:
    if not name or not name.strip():
        return "NAME-MISSING"
    text = name.strip()
    if _NUMERIC_NAME.match(text):
        try:
            ipaddress.ip_address(text)
            return "NAME-IP"
        except ValueError:
            return "NAME-NUMERIC"
    if ":" in text:  # only an IPv6 address is left (IPv4 is numeric): spare every other name the exception
        try:
            ipaddress.ip_address(text)
            return "NAME-IP"
        except ValueError:
            pass
    if _DEFAULT_NAME.match(text):
        return "NAME-DEFAULT"
    return None


# Free-text fields a wrong encoding damages visibly (TEXT-DAMAGED).
TEXT_FIELDS = ("name", "manufacturer", "model", "address")

# (field name, problem code, allowed values, multi) for the enumeration rule; built once.
_ENUM_CHECKS = tuple((f.name, f"ENUM-{f.xml.upper()}", f.values, f.multi) for f in ENUM_FIELDS if f.xml and f.values)

# Columns the rules read (the quality report loads only these for 100,000 cameras).
COLUMNS = (
    "device_id",
    "name",
    "model",
    "address",
    "civil_code",
    "longitude",
    "latitude",
    "mac",
    "serial_number",
    "manufacturer",
    "parent_id",
    "point_type",
    "install_time",
    "contact_info",
    "record_save_days",
    *(name for name, _, _, _ in _ENUM_CHECKS),
    "region_code",
    "region_by_position",
    "region_by_code",
    "conflicts",
)


def enum_problem(f: Field, value: Any) -> bool:
    if value is None or value == "" or f.values is None:
        return False
    parts = str(value).split("/") if f.multi else [str(value)]
    return any(p.strip() not in f.values for p in parts)


def coordinate_problems(lon: Any, lat: Any) -> list[str]:
    if lon is None or lat is None:
        return ["COORD-MISSING"]
    try:
        x, y = float(lon), float(lat)
    except (TypeError, ValueError):
        return ["COORD-RANGE"]
    if x == 0 or y == 0:
        return ["COORD-ZERO"]
    if not (math.isfinite(x) and math.isfinite(y) and -180 <= x <= 180 and -90 <= y <= 90):
        return ["COORD-RANGE"]
    return []


def civil_code_problems(code: str | None, ctx: QualityContext) -> list[str]:
    if not code:
        return ["CIVIL-CODE-MISSING"]
    text = str(code).strip()
    if not text.isdigit() or len(text) not in (2, 4, 6, 8, 9):
        return ["CIVIL-CODE-INVALID"]
    base = text[:6] if len(text) == 8 else text
    if ctx.known_civil_codes is not None and base not in ctx.known_civil_codes:
        return ["CIVIL-CODE-INVALID"]
    if ctx.governed and not text.startswith(ctx.governed):
        return ["CIVIL-CODE-OUTSIDE"]
    return []


def _id_problems(device_id: str, ctx: QualityContext, cache: dict[str, list[str]]) -> list[str]:
    # Every ID rule but the format depends on the first 14 digits only: a district has few distinct prefixes.
    key = device_id[:14] if len(device_id) == 20 and device_id.isdigit() else device_id
    found = cache.get(key)
    if found is None:
        found = cache[key] = check_gb_id(device_id, governed=ctx.governed, known_civil_codes=ctx.known_civil_codes)
    return found


def check_camera(cam: Mapping[str, Any], ctx: QualityContext, _cache: dict[str, list[str]] | None = None) -> list[str]:
    """Problems of one camera that need no other record (duplicates are found by check_all)."""
    problems: list[str] = []
    device_id = cam.get("device_id")
    if not device_id:
        problems.append("ID-MISSING")
    else:
        problems.extend(_id_problems(str(device_id), ctx, {} if _cache is None else _cache))
    problems.extend(civil_code_problems(cam.get("civil_code"), ctx))
    coord = coordinate_problems(cam.get("longitude"), cam.get("latitude"))
    problems.extend(coord)
    if not coord:
        by_pos, by_code = cam.get("region_by_position"), cam.get("region_by_code")
        if ctx.has_polygons and by_pos is None:
            problems.append("COORD-OUTSIDE-REGIONS")
        # Outside every polygon is reported once, as COORD-OUTSIDE-REGIONS.
        if ctx.governed_has_polygon and ctx.governed and by_pos is not None and not by_pos.startswith(ctx.governed):
            problems.append("COORD-OUTSIDE-GOVERNED")
        if by_pos and by_code and not related(by_pos, by_code):
            problems.append("REGION-MISMATCH")
    for field_name, code, values, multi in _ENUM_CHECKS:
        value = cam.get(field_name)
        if value is None or value == "" or value in values:
            continue
        if not multi or any(p.strip() not in values for p in str(value).split("/")):
            problems.append(code)
    naming = name_problem(cam.get("name"))
    if naming:
        problems.append(naming)
    for name in TEXT_FIELDS:
        text = cam.get(name)
        if text and damage(text) is not None:
            problems.append("TEXT-DAMAGED")
            break
    parent = cam.get("parent_id")
    if parent and str(parent) not in ctx.known_parents:
        problems.append("PARENT-UNRESOLVED")
    if str(cam.get("point_type") or "") in ("1", "2") and not (
        cam.get("install_time") and cam.get("contact_info") and cam.get("record_save_days")
    ):
        problems.append("POINT-INFO-MISSING")
    return problems


def duplicate_problems(cams: Sequence[Mapping[str, Any]]) -> dict[int, list[str]]:
    """Index in ``cams`` -> duplicate codes, for every record sharing a key with another."""
    out: dict[int, list[str]] = defaultdict(list)
    for code, keyer in DUPLICATE_KEYS:
        keys = [keyer(c) for c in cams]
        counts = Counter(k for k in keys if k is not None)
        for i, k in enumerate(keys):
            if k is not None and counts[k] > 1:
                out[i].append(code)
    return out


def _name_position(cam: Mapping[str, Any]) -> tuple[str, float, float] | None:
    name, lon, lat = cam.get("name"), cam.get("longitude"), cam.get("latitude")
    if not name or lon is None or lat is None:
        return None
    return (str(name).strip(), round(float(lon), 6), round(float(lat), 6))


# The duplicate rules in report order: code, and the key two cameras share when they are duplicates (None: no key).
# The stored problems (vms.inventory.problems) index the same keys.
DUPLICATE_KEYS: tuple[tuple[str, Callable[[Mapping[str, Any]], Hashable | None]], ...] = (
    ("DUP-ID", lambda c: c.get("device_id") or None),
    ("DUP-NAME-POSITION", _name_position),
    ("DUP-MAC", lambda c: normalize_mac(c.get("mac"))),
    ("DUP-SERIAL", lambda c: (c.get("manufacturer") or "", c["serial_number"]) if c.get("serial_number") else None),
)


@dataclass
class Tally:
    total: int = 0
    passed: int = 0

    @property
    def rate(self) -> float:
        return self.passed / self.total if self.total else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "passed": self.passed,
            "failed": self.total - self.passed,
            "pass_rate": round(self.rate, 4),
        }


@dataclass
class QualityReport:
    target: float
    overall: Tally = field(default_factory=Tally)
    by_rule: Counter[str] = field(default_factory=Counter)
    by_region: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    by_source: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    problems: dict[int, list[str]] = field(default_factory=dict)  # camera id -> codes (failing only)
    with_conflicts: int = 0

    @property
    def meets_target(self) -> bool:
        return self.overall.rate >= self.target

    def as_dict(
        self, *, region_names: Mapping[str, str] | None = None, include_cameras: bool = False
    ) -> dict[str, Any]:
        names = region_names or {}
        out: dict[str, Any] = {
            "target": self.target,
            "meets_target": self.meets_target,
            **self.overall.as_dict(),
            "cameras_with_source_conflicts": self.with_conflicts,
            "by_rule": [
                {"code": code, "rule": RULES[code][0], "description": RULES[code][1], "cameras": n}
                for code, n in sorted(self.by_rule.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            "by_region": [
                {"region": code, "name": names.get(code or "", None), **t.as_dict()}
                for code, t in sorted(self.by_region.items(), key=lambda kv: kv[0] or "")
            ],
            "by_source": [{"source": s, **t.as_dict()} for s, t in sorted(self.by_source.items())],
        }
        if include_cameras:
            out["cameras"] = [{"id": cid, "problems": codes} for cid, codes in sorted(self.problems.items())]
        return out


def check_all(
    cams: Sequence[Mapping[str, Any]],
    ctx: QualityContext,
    *,
    sources: Mapping[int, Iterable[str]] | None = None,
    target: float = 0.95,
) -> QualityReport:
    """Check every camera (each a mapping with ``id`` and the record's fields and region columns)."""
    report = QualityReport(target=target)
    dups = duplicate_problems(cams)
    cache: dict[str, list[str]] = {}
    for i, cam in enumerate(cams):
        problems = check_camera(cam, ctx, cache)
        problems.extend(dups.get(i, ()))
        ok = not problems
        report.overall.total += 1
        report.overall.passed += ok
        region = report.by_region[cam.get("region_code") or ""]
        region.total += 1
        region.passed += ok
        for src in dict.fromkeys((sources or {}).get(cam["id"], ())):  # once per source, however many rows
            t = report.by_source[src]
            t.total += 1
            t.passed += ok
        if problems:
            report.problems[cam["id"]] = problems
            report.by_rule.update(set(problems))
        if cam.get("conflicts"):
            report.with_conflicts += 1
    return report
