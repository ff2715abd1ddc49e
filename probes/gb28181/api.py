"""The fixed interface between the GB/T 28181 SIP server (probes.gb28181.server) and the application (vms).

The server reports what devices do (register, unregister, keep alive, answer Catalog queries, notify catalog
changes) as the events below, and asks the application only for passwords (:class:`Directory`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "CatalogAnswer",
    "CatalogNotice",
    "Directory",
    "Keepalive",
    "Peer",
    "Registration",
    "Transport",
    "Unregistration",
]

Transport = Literal["udp", "tcp"]


@dataclass(frozen=True, slots=True)
class Peer:
    transport: Transport
    host: str  # where the request really came from (Via received / socket peer), never what the body says
    port: int  # rport / socket peer port


@dataclass(frozen=True, slots=True)
class Registration:
    device_id: str  # 20-digit ID from the From/To user part
    domain: str  # the From URI host (e.g. 3402000000), kept as text
    peer: Peer
    expires: int  # seconds granted (0 never appears here: that is an Unregistration)
    at: dt.datetime  # UTC
    contact: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class Unregistration:
    device_id: str
    peer: Peer
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class Keepalive:
    device_id: str
    peer: Peer
    at: dt.datetime
    sn: int | None = None
    status: str | None = None  # the body's <Status> (OK / ERROR...)


@dataclass(frozen=True, slots=True)
class CatalogAnswer:
    """One Catalog query's answer, all its MESSAGEs grouped by SN."""

    device_id: str
    sn: int
    sum_num: int | None  # SumNum announced (None when absent)
    documents: tuple[bytes, ...]  # each MESSAGE body as received (bytes: encoding decided by the reader)
    items: int  # <Item>s counted over all documents
    complete: bool  # False when closed by the quiet period or a timeout before SumNum items
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class CatalogNotice:
    """A NOTIFY (catalog subscription) or an unsolicited Catalog MESSAGE with <Event> per item."""

    device_id: str
    document: bytes  # the body as received
    events: tuple[tuple[str, str], ...]  # (channel DeviceID, Event upper-case: ON OFF VLOST DEFECT ADD DEL UPDATE)
    at: dt.datetime


class Directory(Protocol):
    """What the server asks the application (vms implements it). Called on the server's event loop: must not block
    for long (Part V keeps an in-memory view and writes to the database in a worker thread)."""

    def password_for(self, device_id: str) -> str | None: ...  # None: unknown / not allowed -> 403
    def registered(self, event: Registration) -> None: ...
    def unregistered(self, event: Unregistration) -> None: ...
    def keepalive(self, event: Keepalive) -> None: ...
    def catalog(self, answer: CatalogAnswer) -> None: ...
    def notice(self, notice: CatalogNotice) -> None: ...
