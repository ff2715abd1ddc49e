"""Typed results of the device library: frozen dataclasses, never zeep objects or raw XML (STYLE habit 1)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from probes.errors import Cause, Failure

__all__ = [
    "AuthMethod",
    "DeviceReport",
    "DiscoveredDevice",
    "MediaProfile",
    "MediaSource",
    "ScanHit",
    "StepResult",
    "as_dict",
]

AuthMethod = Literal["wsse", "digest", "none"]
MediaSource = Literal["media", "media2"]


@dataclass(frozen=True, slots=True)
class StepResult:
    """Outcome and cost of one SOAP step of an interrogation (for diagnosis and benchmarks)."""

    step: str
    ok: bool
    elapsed_ms: float
    cause: Cause | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    """One device found by WS-Discovery, merged over every ProbeMatch that named its endpoint reference."""

    endpoint_ref: str
    xaddrs: tuple[str, ...]  # as the device sent them (may hold private or 0.0.0.0 addresses, DOMAIN 7.4)
    types: tuple[str, ...]  # Clark notation "{namespace}Local" where the prefix resolved, else as sent
    scopes: tuple[str, ...]
    metadata_version: int | None
    answered_from: str  # source IP of the first ProbeMatch

    @property
    def reachable_xaddrs(self) -> tuple[str, ...]:
        """XAddrs with private/NAT/0.0.0.0 hosts replaced by the address that answered (DOMAIN 7.4)."""
        from probes.onvif.addresses import rewrite_uri  # late: probes.onvif imports this module

        return tuple(dict.fromkeys(rewrite_uri(x, self.answered_from, None) for x in self.xaddrs))

    @property
    def best_xaddr(self) -> str | None:
        """The XAddr to interrogate: one naming the answering host, else the first reachable HTTP one."""
        candidates = [x for x in self.reachable_xaddrs if x.lower().startswith(("http://", "https://"))]
        for xaddr in candidates:
            if _host_of(xaddr) == self.answered_from:
                return xaddr
        return candidates[0] if candidates else None


@dataclass(frozen=True, slots=True)
class ScanHit:
    """An address:port that answered an unauthenticated GetSystemDateAndTime like an ONVIF device."""

    host: str
    port: int
    xaddr: str
    device_time: dt.datetime | None  # None when the device (wrongly) demanded auth for GetSystemDateAndTime
    clock_offset_s: float | None
    rtt_ms: float


@dataclass(frozen=True, slots=True)
class MediaProfile:
    token: str
    name: str | None
    encoding: str | None  # normalised: H264, H265, JPEG, MPEG4, or as sent
    width: int | None
    height: int | None
    fps: float | None
    bitrate: int | None  # kbit/s as the device reports it
    stream_uri: str | None  # rewritten to the answering host, credentials removed
    stream_uri_original: str | None  # as sent, credentials removed
    snapshot_uri: str | None
    snapshot_uri_original: str | None
    source: MediaSource


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """Everything one interrogation learnt. ``ok`` is False only when the device never answered or auth was
    impossible; failed optional steps are listed in ``failures``."""

    address: str
    port: int
    xaddr: str
    ok: bool
    clock_offset_s: float | None = None  # device clock minus ours; positive = device ahead
    device_time_utc: dt.datetime | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    serial: str | None = None
    hardware_id: str | None = None
    mac: str | None = None
    hostname: str | None = None
    scopes: tuple[str, ...] = ()
    name: str | None = None
    location: str | None = None
    hardware: str | None = None
    services: dict[str, str] = field(default_factory=dict)  # namespace -> XAddr rewritten to the answering host
    services_original: dict[str, str] = field(default_factory=dict)
    profiles: tuple[MediaProfile, ...] = ()
    auth_method: AuthMethod | None = None
    failures: tuple[Failure, ...] = ()
    fatal: Failure | None = None
    elapsed_ms: float = 0.0
    steps: tuple[StepResult, ...] = ()
    answered: bool = False  # the device replied at least once (a refused connection or a timeout is no answer)

    def failure_for(self, step: str) -> Failure | None:
        return next((f for f in self.failures if f.step == step), None)


def _host_of(uri: str) -> str | None:
    try:
        return urlsplit(uri).hostname
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def as_dict(result: Any) -> dict[str, Any]:
    """A JSON-ready dict of any result dataclass (datetimes as ISO 8601, causes as their codes)."""
    if not dataclasses.is_dataclass(result) or isinstance(result, type):
        raise TypeError(f"not a result dataclass: {type(result).__name__}")
    plain = _plain(dataclasses.asdict(result))
    assert isinstance(plain, dict)
    return plain
