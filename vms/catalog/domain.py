"""Plain domain objects shared by importers, merge, quality and storage (no SQL, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class SourceKind(StrEnum):
    LEDGER = "ledger"  # a department's spreadsheet / CSV / JSON
    CATALOG = "catalog"  # a GB/T 28181 Catalog export from a platform
    ONVIF = "onvif"  # discovery and interrogation
    API = "api"  # edits made through the API or CLI (also allocated IDs)


# Default priority when sources disagree: a human edit beats what a device says about itself, which beats a
# platform catalog, which beats a hand-kept ledger. Configurable (Settings.source_priority).
DEFAULT_PRIORITY: tuple[str, ...] = (
    SourceKind.API.value,
    SourceKind.ONVIF.value,
    SourceKind.CATALOG.value,
    SourceKind.LEDGER.value,
)


@dataclass(frozen=True, slots=True)
class RowIssue:
    """A problem with one input row. ``fatal`` rows are rejected, the others land with the fix noted."""

    line: int
    code: str
    reason: str
    fatal: bool = True
    field: str | None = None


@dataclass(slots=True)
class ParsedRow:
    """One input record mapped onto canonical fields (see vms.catalog.fields), values already typed."""

    line: int
    fields: dict[str, Any]
    extra: dict[str, str] = field(default_factory=dict)
    issues: list[RowIssue] = field(default_factory=list)
    # Set by readers that digest raw cells (CSV): the row's raw digest, the stable hash of its name and position
    # and its (non-fatal) issues packed; stored on the observation so an unchanged row is recognised next time
    # without parsing it, and reported again as it was.
    raw_digest: int | None = None
    raw_spot: int | None = None
    raw_issues: str | None = None
    # (username, password) from the row's login columns (vms.catalog.columns.login_role): never a field or an
    # extra column; the import moves it to the encrypted credential store and drops it.
    login: tuple[str, str] | None = None

    @property
    def rejected(self) -> bool:
        return any(i.fatal for i in self.issues)


@dataclass(frozen=True, slots=True)
class Observation:
    """What one source says about one camera."""

    source: str
    kind: SourceKind
    key: str  # stable key of the record inside its source
    fields: Mapping[str, Any]
    extra: Mapping[str, str] = field(default_factory=dict)
    line: int | None = None
    raw_digest: int | None = None  # ParsedRow.raw_digest / raw_spot / raw_issues of the row it was read from
    raw_spot: int | None = None
    raw_issues: str | None = None


def normalize_mac(value: str | None) -> str | None:
    """``00-1A-2b-3c-4d-5e`` / ``001a2b3c4d5e`` -> ``00:1a:2b:3c:4d:5e``; None when not a MAC."""
    if not value:
        return None
    hexdigits = "".join(c for c in value.lower() if c in "0123456789abcdef")
    stripped = "".join(c for c in value.lower() if c not in ":-. ")
    if len(hexdigits) != 12 or len(stripped) != 12 or hexdigits == "000000000000":
        return None
    return ":".join(hexdigits[i : i + 2] for i in range(0, 12, 2))


def identity_keys(fields: Mapping[str, Any]) -> dict[str, str]:
    """The identity keys a record carries, by kind, strongest first (see fields.IDENTITY_ORDER)."""
    keys: dict[str, str] = {}
    device_id = fields.get("device_id")
    if device_id:
        keys["device_id"] = str(device_id)
    mac = normalize_mac(fields.get("mac"))
    if mac:
        keys["mac"] = mac
    serial = fields.get("serial_number")
    if serial:
        # A serial number is only unique within one maker.
        keys["serial"] = f"{str(fields.get('manufacturer') or '').strip().lower()}|{str(serial).strip()}"
    endpoint = fields.get("endpoint_ref")
    if endpoint:
        keys["endpoint_ref"] = str(endpoint).strip().lower()
    host = fields.get("ip_address")
    if host:
        port = fields.get("port") or 80
        keys["host_port"] = f"{str(host).strip().lower()}:{port}"
    return keys


URI_FIELDS = ("stream_uri", "snapshot_uri", "device_service_url")


def without_url_credentials(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields with user:password@ and login query parameters removed from their URLs: credentials live
    encrypted in the credential store only (vms.inventory.credentials.url_logins keeps them first)."""
    from probes.onvif.addresses import strip_credentials  # the one stripper the probes use too

    out = dict(fields)
    for name in URI_FIELDS:
        value = out.get(name)
        if isinstance(value, str):
            out[name] = strip_credentials(value)
    return out
