"""Which region a camera belongs to: by its civil code and by its position (pure, no database)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vms.geo.coords import RegionIndex, valid_lon_lat


@dataclass(frozen=True, slots=True)
class Placement:
    by_position: str | None
    by_code: str | None
    # The region a camera is counted in: the finer of the two when they agree, the position when they
    # disagree (a camera is where it stands; the disagreement itself is a quality issue), else whichever exists.
    effective: str | None

    @property
    def disagree(self) -> bool:
        return self.by_position is not None and self.by_code is not None and not related(self.by_position, self.by_code)


def related(a: str, b: str) -> bool:
    """One region contains the other (codes are hierarchical prefixes: 37 > 3713 > 371311 > 371311001)."""
    return a.startswith(b) or b.startswith(a)


@dataclass
class RegionContext:
    """What placement needs to know about the imported regions."""

    codes: frozenset[str] = frozenset()
    names: Mapping[str, str] = field(default_factory=dict)
    index: RegionIndex | None = None  # polygons, WGS-84

    @property
    def has_polygons(self) -> bool:
        return self.index is not None

    def code_region(self, civil_code: str | None, device_id: str | None) -> str | None:
        """The deepest known region named by the civil code, else by the ID's centre code."""
        for candidate in (civil_code, device_id[:8] if device_id and len(device_id) == 20 else None):
            if not candidate or not candidate.isdigit():
                continue
            for length in (9, 8, 6, 4, 2):
                if len(candidate) >= length and candidate[:length] in self.codes:
                    return candidate[:length]
        return None

    def place_many(self, records: Sequence[Mapping[str, Any]]) -> list[Placement]:
        positions: list[str | None] = [None] * len(records)
        if self.index is not None:
            lons: list[float] = []
            lats: list[float] = []
            for rec in records:
                lon, lat = rec.get("longitude"), rec.get("latitude")
                ok = lon is not None and lat is not None and valid_lon_lat(lon, lat)
                lons.append(float(lon) if ok else float("nan"))  # type: ignore[arg-type]
                lats.append(float(lat) if ok else float("nan"))  # type: ignore[arg-type]
            positions = list(self.index.locate(lons, lats))
        out: list[Placement] = []
        for rec, by_pos in zip(records, positions, strict=True):
            by_code = self.code_region(rec.get("civil_code"), rec.get("device_id"))
            effective: str | None
            if by_pos is not None and by_code is not None:
                effective = (by_code if len(by_code) > len(by_pos) else by_pos) if related(by_pos, by_code) else by_pos
            else:
                effective = by_pos or by_code
            out.append(Placement(by_pos, by_code, effective))
        return out
