"""Address-range scan for ONVIF devices that multicast discovery cannot reach (DOMAIN 7.5).

Each address:port gets an unauthenticated GetSystemDateAndTime; a parseable reply (or an ONVIF auth fault from
a firmware that wrongly protects that call) makes a hit. A fixed pool of workers pulls from a lazy iterator
over the address space, so a /16 never becomes 65,536 tasks or sockets at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Final

from probes.errors import Cause
from probes.onvif.addresses import format_hostport
from probes.onvif.clocks import RECENT_CLOCKS, ClockReading
from probes.onvif.gcpause import sweep_gc
from probes.onvif.http import HttpClient, HttpError, host_header, parking_capacity
from probes.onvif.parse import parse_system_date_and_time
from probes.onvif.soap import (
    MalformedReply,
    Ops,
    SoapVersion,
    fault_cause,
    local,
    parse_reply,
    plain_envelope,
    request_header_lines,
)
from probes.results import ScanHit

__all__ = ["DEFAULT_PORTS", "count_addresses", "iter_addresses", "scan_range"]

log = logging.getLogger(__name__)

DEFAULT_PORTS: Final = (80, 8080, 8000, 8899)
_MAX_REPLY_BYTES: Final = 256 * 1024  # a GetSystemDateAndTime reply is under 2 KiB
_KEEP_S: Final = 5.0  # how long a hit's connection waits for the interrogation
_PROGRESS_EVERY_S: Final = 0.2

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(cidrs: Sequence[str]) -> list[_Network]:
    networks: list[_Network] = []
    for cidr in dict.fromkeys(c.strip() for c in cidrs):
        networks.append(ipaddress.ip_network(cidr, strict=False))
    return networks


def _skips_ends(network: _Network) -> bool:
    # Network and broadcast addresses are not hosts on IPv4 subnets; /31 (RFC 3021) and /32 have none.
    return network.version == 4 and network.prefixlen < 31


def count_addresses(cidrs: Sequence[str]) -> int:
    return sum(n.num_addresses - (2 if _skips_ends(n) else 0) for n in _networks(cidrs))


def iter_addresses(cidrs: Sequence[str]) -> Iterator[str]:
    """Host addresses of the ranges, lazily, network and broadcast addresses left out for IPv4 < /31."""
    for network in _networks(cidrs):
        if _skips_ends(network):
            yield from (str(a) for a in network.hosts())
        else:
            yield from (str(a) for a in network)


async def _probe(
    http: HttpClient, host: str, port: int, path: str, timeout: float, remember: bool
) -> ScanHit | None:
    """One address:port:path. None for anything that is not clearly an ONVIF device service."""
    url = f"http://{format_hostport(host, port)}{path}"
    host_line = host_header(host, port)
    target = path.encode("latin-1")
    soap: SoapVersion = "1.2"
    op = Ops.GET_SYSTEM_DATE_AND_TIME
    for _ in range(2):
        data = http.build(b"POST", host_line, target, request_header_lines(op.action, soap), plain_envelope(op, soap))
        sent = time.time()
        started = time.perf_counter()
        resp = await http.request(host, port, "http", data, timeout=timeout, max_bytes=_MAX_REPLY_BYTES)
        rtt_ms = round((time.perf_counter() - started) * 1000, 2)
        received = time.time()
        status = resp.status
        try:
            reply = parse_reply(resp.body)
        except MalformedReply:
            return None
        if reply.fault is not None:
            if reply.fault.code == "VersionMismatch" and soap == "1.2":
                soap = "1.1"
                continue
            if fault_cause(reply.fault) is Cause.AUTH:
                # Some firmwares wrongly demand auth for GetSystemDateAndTime: still clearly ONVIF.
                return ScanHit(host, port, url, None, None, rtt_ms)
            return None
        if status == 415 and soap == "1.2":
            soap = "1.1"
            continue
        if not (200 <= status < 300) or reply.payload is None:
            return None
        if local(reply.payload.tag) != "GetSystemDateAndTimeResponse":
            return None
        try:
            device_time = parse_system_date_and_time(reply.payload)
        except ValueError:
            return ScanHit(host, port, url, None, None, rtt_ms)
        midpoint = dt.datetime.fromtimestamp((sent + received) / 2, dt.UTC)
        offset = round((device_time.utc - midpoint).total_seconds(), 3)
        if remember:  # the interrogation that usually follows need not ask again (probes.onvif.clocks)
            reading = ClockReading(offset, device_time.utc, device_time.from_local, soap, time.monotonic())
            RECENT_CLOCKS.remember(format_hostport(host, port), reading)
        return ScanHit(host, port, url, device_time.utc, offset, rtt_ms)
    return None


async def scan_range(
    cidrs: Sequence[str],
    ports: Sequence[int] = DEFAULT_PORTS,
    *,
    concurrency: int = 512,
    timeout: float = 1.5,
    paths: Sequence[str] = ("/onvif/device_service",),
    max_addresses: int = 65_536,
    progress: Callable[[int, int], None] | None = None,
    session: HttpClient | None = None,
    remember_clocks: bool = True,
    on_hit: Callable[[ScanHit], Awaitable[None]] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> list[ScanHit]:
    """Find ONVIF device services in ``cidrs`` on ``ports``. Refuses more than ``max_addresses`` addresses
    (default: one /16). ``progress(done, total)`` counts address:port pairs, at most every 0.2 s and at the end.
    Hits come back sorted by address and port. With ``remember_clocks`` each device's clock reading is kept
    for a while (:mod:`probes.onvif.clocks`), so an interrogation right after skips its GetSystemDateAndTime.
    ``await on_hit(hit)`` hears of each hit as it is found, so that its interrogation need not wait for the scan's
    end (the timeouts of addresses that never answer); a slow ``on_hit`` holds the scan back (its hits' connections
    then wait less for their interrogation). ``shard=(i, n)`` scans every n-th address from the i-th only: n
    processes with i = 0 .. n-1 share a range, each address scanned by exactly one of them."""
    total_addresses = count_addresses(cidrs)
    if total_addresses > max_addresses:
        raise ValueError(f"{total_addresses} addresses exceed the scan limit of {max_addresses}")
    port_list = list(dict.fromkeys(int(p) for p in ports))
    if any(not 0 < p < 65_536 for p in port_list):
        raise ValueError("ports must be 1-65535")
    index, shards = shard
    if not 0 <= index < shards:
        raise ValueError(f"bad shard {index} of {shards}")
    mine = max(0, -(-(total_addresses - index) // shards))  # addresses index, index + shards, ...
    total = mine * len(port_list)
    if total == 0:
        return []
    addresses = iter_addresses(cidrs) if shards == 1 else itertools.islice(iter_addresses(cidrs), index, None, shards)
    jobs = itertools.product(addresses, port_list)
    hits: list[ScanHit] = []
    done = 0
    last_report = time.monotonic()
    own_session = session is None
    # Keep-alive: a device's connection is handed on to the interrogation that usually follows (HttpClient
    # park_on_close); what is not a device is closed at once, and the rest after a few seconds unused.
    http = session or HttpClient(
        limit=concurrency, limit_per_host=1, keepalive_s=_KEEP_S, max_idle=parking_capacity(), park_on_close=True
    )

    def report(force: bool = False) -> None:
        nonlocal last_report
        if progress is None:
            return
        now = time.monotonic()
        if force or now - last_report >= _PROGRESS_EVERY_S:
            last_report = now
            try:
                progress(done, total)
            except Exception:  # a broken progress bar must not stop a scan
                log.exception("scan progress callback failed")

    async def worker() -> None:
        nonlocal done
        for host, port in jobs:  # shared iterator: the pool streams over the address space
            for path in paths:
                try:
                    hit = await _probe(http, host, port, path, timeout, remember_clocks)
                except (TimeoutError, HttpError, OSError, ValueError):
                    break  # nothing listening (or not HTTP): no point trying other paths on this port
                if hit is not None:
                    hits.append(hit)
                    if on_hit is not None:
                        await on_hit(hit)
                    break
                http.forget(host, port)  # answered, but not an ONVIF device service: no reason to keep it
            done += 1
            report()

    try:
        with sweep_gc():
            await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, total)))))
    finally:
        if own_session:
            await http.close()
    report(force=True)
    hits.sort(key=lambda h: (ipaddress.ip_address(h.host), h.port))
    return hits
