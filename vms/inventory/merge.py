"""Merging what several sources say about one camera into its record, keeping provenance and conflicts."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vms.catalog.domain import SourceKind, normalize_mac
from vms.catalog.fields import FIELD_NAMES


@dataclass(frozen=True, slots=True)
class SourcedRecord:
    """One live observation as merge sees it."""

    source: str
    kind: SourceKind
    fields: Mapping[str, Any]
    updated_at: datetime
    extra: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Provenance:
    source: str
    kind: SourceKind
    at: datetime


@dataclass(slots=True)
class Merged:
    fields: dict[str, Any]
    provenance: dict[str, Provenance]
    # field -> {source: value} for every source holding a value, when they do not all agree
    conflicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


Rank = Callable[[str, SourceKind], int]


def same_value(name: str, a: Any, b: Any) -> bool:
    """Equality as a person reading two ledgers would judge it."""
    if a == b:
        return True
    if isinstance(a, float | int) and isinstance(b, float | int):
        # 1e-6 degrees is about 0.1 m: closer than any ledger records a position.
        return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-6)
    if isinstance(a, str) and isinstance(b, str):
        if name == "mac":
            return normalize_mac(a) == normalize_mac(b) is not None
        return a.strip().casefold() == b.strip().casefold()
    return False


def _single(rec: SourcedRecord) -> Merged:
    # One source (a new camera): nothing to rank or compare.
    fields = {k: v for k, v in rec.fields.items() if k in _FIELD_SET and v is not None and v != ""}
    prov = Provenance(rec.source, rec.kind, rec.updated_at)
    return Merged(fields=fields, provenance=dict.fromkeys(fields, prov), extra=dict(rec.extra or {}))


_FIELD_SET = frozenset(FIELD_NAMES)


def merge_observations(records: Sequence[SourcedRecord], rank: Rank) -> Merged:
    """The strongest source with a value wins each field; disagreeing values are kept as conflicts.

    Order: configured priority (lower rank first), then the most recently updated, then source name so the
    result never depends on input order.
    """
    if len(records) == 1:
        return _single(records[0])
    ordered = sorted(records, key=lambda r: (rank(r.source, r.kind), -r.updated_at.timestamp(), r.source))
    merged = Merged(fields={}, provenance={})
    for name in FIELD_NAMES:
        winner: SourcedRecord | None = None
        disagree = False
        for rec in ordered:
            value = rec.fields.get(name)
            if value is None or value == "":
                continue
            if winner is None:
                winner = rec
                merged.fields[name] = value
                merged.provenance[name] = Provenance(rec.source, rec.kind, rec.updated_at)
            elif not same_value(name, merged.fields[name], value):
                disagree = True
        if disagree:
            merged.conflicts[name] = {
                rec.source: rec.fields[name]
                for rec in ordered
                if rec.fields.get(name) is not None and rec.fields.get(name) != ""
            }
    for rec in reversed(ordered):  # stronger sources overwrite weaker extras
        if rec.extra:
            merged.extra.update(rec.extra)
    return merged
