"""An operator's edit is checked as an imported row is: the same value parsers (vms.catalog.columns), the same
coordinate range, the field's length; and, being an explicit choice, nothing is silently dropped or fixed."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from vms.catalog.columns import parse_value
from vms.catalog.fields import BY_NAME, FIELDS, Kind
from vms.errors import ValidationFailed

MAX_JSON_CHARS = 16_384  # services, media profiles: a device reports a few kB
RANGES = {"longitude": (-180.0, 180.0), "latitude": (-90.0, 90.0)}


def _shown(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_edit(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical field -> typed value (None clears the field); ValidationFailed naming every bad field."""
    if not changes:
        raise ValidationFailed("no field to change")
    if len(changes) > len(FIELDS):
        raise ValidationFailed(f"{len(changes)} fields: a camera has {len(FIELDS)}")
    clean: dict[str, Any] = {}
    errors: list[str] = []
    for name, raw in changes.items():
        f = BY_NAME.get(name)
        if f is None:
            errors.append(f"unknown field {_shown(name)}")
            continue
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            clean[name] = None
            continue
        if f.kind is Kind.JSON:
            if not isinstance(raw, dict | list):
                errors.append(f"{name}: want a JSON object or list")
            elif len(json.dumps(raw, ensure_ascii=False)) > MAX_JSON_CHARS:
                errors.append(f"{name}: longer than {MAX_JSON_CHARS} characters")
            elif "\x00" in json.dumps(raw):
                errors.append(f"{name}: contains a NUL character")
            else:
                clean[name] = raw
            continue
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            errors.append(f"{name}: want text or a number, not {type(raw).__name__}")
            continue
        if isinstance(raw, int) and not -(2**63) <= raw < 2**63:
            errors.append(f"{name}: a number of {len(str(abs(raw))):,} digits is out of range")
            continue
        if isinstance(raw, str):
            # Checked before parsing: a value several times the column's size is not a typo to repair.
            if len(raw) > 4 * f.max_len:
                errors.append(f"{name}: {len(raw):,} characters, at most {f.max_len}")
                continue
            if "\x00" in raw:
                errors.append(f"{name}: contains a NUL character")
                continue
        value, notes = parse_value(f, raw)
        fatal = [n.message for n in notes if n.fatal]
        if fatal:
            errors.append(f"{name}: " + "; ".join(fatal))
            continue
        if value is None:
            dropped = [n.message for n in notes] or [f"{_shown(raw)} is not a valid {f.kind.value} value"]
            errors.append(f"{name}: " + "; ".join(dropped))
            continue
        if isinstance(value, str) and len(value) > f.max_len:
            errors.append(f"{name}: {len(value):,} characters, at most {f.max_len}")
            continue
        if isinstance(value, float) and not math.isfinite(value):
            errors.append(f"{name}: {_shown(raw)} is not a finite number")
            continue
        if name in RANGES:
            lo, hi = RANGES[name]
            if not lo <= float(value) <= hi:
                errors.append(f"{name}: {value} out of range ({lo:g} to {hi:g})")
                continue
        if f.kind is Kind.INT and not -(2**63) <= int(value) < 2**63:
            errors.append(f"{name}: {value} is out of range")
            continue
        clean[name] = value
    if errors:
        raise ValidationFailed("; ".join(errors))
    return clean
