"""Finding and interrogating devices, the part of a discovery run that may go to worker processes.

Light on purpose: probes and the standard library only (no database, no ORM), so that a worker process for a
share of a range scan starts in a fraction of a second. :mod:`vms.discovery.service` registers what comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from probes.discovery.scan import count_addresses, scan_range
from probes.discovery.wsdiscovery import device_service, probe_multicast, probe_unicast
from probes.errors import Cause
from probes.onvif.addresses import format_hostport, parse_target
from probes.onvif.auth import Credential, LoginBudget
from probes.onvif.client import interrogate_stream
from probes.onvif.http import HttpClient, parking_capacity
from probes.policy import AddressPolicy, HostName, Refusal, parse_host
from probes.results import AuthMethod, DeviceReport, DiscoveredDevice, ScanHit

log = logging.getLogger(__name__)

DEFAULT_PORTS = (80, 8080, 8000, 8899)

MAX_SCAN_ADDRESSES = 65_536  # one /16 per run unless forced
MAX_FORCED_ADDRESSES = 1 << 24  # a /8: even forced, a scan must end
# Below this many addresses one process keeps up (starting workers costs more than it saves).
WORKER_MIN_ADDRESSES = 4000  # about a /20
MAX_WORKERS = 64

Progress = Callable[[str, int, int], None]


def _quiet(_stage: str, _done: int, _total: int) -> None:
    return None


@dataclass
class DiscoveryRequest:
    ranges: list[str] = field(default_factory=list)  # CIDRs to scan
    ports: list[int] = field(default_factory=lambda: list(DEFAULT_PORTS))
    interfaces: list[str] = field(default_factory=list)  # IPv4 addresses of interfaces for multicast probes
    unicast: list[str] = field(default_factory=list)  # hosts to send a directed WS-Discovery probe to
    targets: list[str] = field(default_factory=list)  # device services to interrogate directly
    probe_timeout: float = 3.0
    call_timeout: float = 3.0
    device_deadline: float = 20.0
    concurrency: int = 200
    scan_concurrency: int = 512
    actor: str = "cli"
    force: bool = False  # allow ranges over MAX_SCAN_ADDRESSES (up to MAX_FORCED_ADDRESSES)
    # Worker processes sharing a range scan and its interrogations: 0 = one per core for ranges of at least
    # WORKER_MIN_ADDRESSES addresses (when ranges are the only method), 1 = this process only.
    workers: int = 0

    def worker_count(self) -> int:
        """How many processes this run's probing uses (1: all in this process)."""
        if self.workers == 1 or not self.ranges or self.interfaces or self.unicast or self.targets:
            return 1  # WS-Discovery and explicit targets are found and interrogated here, with the ranges
        if self.workers > 1:
            return self.workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores) if count_addresses(self.ranges) >= WORKER_MIN_ADDRESSES else 1

    def validate(self) -> None:
        """Raise ValueError with one line for input a run cannot use; nothing is recorded then."""
        if not (self.ranges or self.interfaces or self.unicast or self.targets):
            raise ValueError("give at least one range, interface, unicast host or target")
        for cidr in self.ranges:
            try:
                net = ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"bad range {cidr!r}: {exc}") from None
            if net.num_addresses > MAX_FORCED_ADDRESSES:
                raise ValueError(f"range {cidr} has {net.num_addresses:,} addresses: too many to scan even forced")
        if self.ranges:
            total = count_addresses(self.ranges)
            limit = MAX_FORCED_ADDRESSES if self.force else MAX_SCAN_ADDRESSES
            if total > limit:
                hint = "" if self.force else "; narrow the ranges or force it"
                raise ValueError(f"the ranges cover {total:,} addresses, more than {limit:,}{hint}")
        for port in self.ports:
            if not 0 < port < 65_536:
                raise ValueError(f"bad port {port}: ports are 1-65535")
        for ip in self.interfaces:
            try:
                ipaddress.IPv4Address(ip.strip())
            except ValueError:
                raise ValueError(f"bad interface {ip!r}: give the interface's IPv4 address") from None
        for host in self.unicast:
            try:
                parsed = parse_host(host)
            except ValueError as exc:
                raise ValueError(f"bad unicast host {host!r}: {exc}") from None
            if parsed is None or isinstance(parsed, HostName):
                raise ValueError(f"bad unicast host {host!r}: give an IP address")
        for target in self.targets:
            try:
                parsed_target = parse_target(target)
                parse_host(parsed_target.host)
            except ValueError as exc:
                raise ValueError(f"bad target {target!r}: {exc}") from None
        for name, value in (("timeout", self.call_timeout), ("probe timeout", self.probe_timeout)):
            if not 0 < value <= 300:
                raise ValueError(f"bad {name} {value}: give seconds between 0 and 300")
        if self.concurrency < 1 or self.scan_concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"bad workers {self.workers}: give 0 (one per core) to {MAX_WORKERS}")
        if not 0 < self.device_deadline <= 3600:
            raise ValueError(f"bad device budget {self.device_deadline}: give seconds between 0 and 3600")

    def as_dict(self) -> dict[str, Any]:
        return {
            "ranges": self.ranges,
            "ports": self.ports,
            "interfaces": self.interfaces,
            "unicast": self.unicast,
            "targets": self.targets,
        }


def device_key(xaddr: str) -> str:
    """host:port of a device service URL: one device per answering address (the probes' own key)."""
    return parse_target(xaddr).key


async def find_devices(
    req: DiscoveryRequest,
    policy: AddressPolicy,
    progress: Progress = _quiet,
    on_target: Callable[[str, str], Awaitable[None]] | None = None,
    session: HttpClient | None = None,
    shard: tuple[int, int] = (0, 1),
    listened: asyncio.Event | None = None,
) -> tuple[dict[str, str], dict[str, str], list[dict[str, Any]]]:
    """Device services to interrogate (host:port -> URL), endpoint references by host:port, and the devices
    whose every XAddr the address policy refused (as failures: nothing was sent to those addresses).
    ``await on_target(host:port, url)`` hears of each device service as soon as it is known (a range scan's hits
    while the scan goes on), so that its interrogation can start at once. ``shard=(i, n)``: scan every n-th
    address of the ranges from the i-th (one worker process's share)."""
    targets: dict[str, str] = {}
    endpoints: dict[str, str] = {}
    refused: dict[str, dict[str, Any]] = {}

    async def found(key: str, url: str) -> None:
        if key not in targets:
            targets[key] = url
            if on_target is not None:
                await on_target(key, url)

    for target in req.targets:
        parsed = parse_target(target)
        await found(parsed.key, parsed.url)
    probes: list[Any] = [probe_multicast(ip, timeout=req.probe_timeout) for ip in req.interfaces]
    if req.unicast:
        probes.append(probe_unicast(req.unicast, timeout=req.probe_timeout))
    if listened is not None:
        if probes:
            probes = [_then_set(asyncio.gather(*probes, return_exceptions=True), listened)]
        else:
            listened.set()
    scans = []
    if req.ranges:

        def scan_progress(done: int, total: int) -> None:
            progress("scan", done, total)

        async def scan_hit(hit: ScanHit) -> None:
            await found(format_hostport(hit.host, hit.port), hit.xaddr)

        scans.append(
            scan_range(
                req.ranges,
                req.ports,
                concurrency=req.scan_concurrency,
                # An address that does not answer within a device's budget is not one to wait for.
                timeout=min(req.call_timeout, 3.0, req.device_deadline),
                progress=scan_progress,
                max_addresses=MAX_FORCED_ADDRESSES if req.force else MAX_SCAN_ADDRESSES,
                on_hit=scan_hit,
                session=session,
                shard=shard,
            )
        )
    gathered = await asyncio.gather(*probes, *scans, return_exceptions=True)
    results: list[Any] = list(gathered)
    if listened is not None and probes:  # the WS-Discovery probes came back as one list of their results
        first = gathered[0]
        results = [*(first if isinstance(first, list) else [first]), *gathered[1:]]
    for result in results:
        if isinstance(result, BaseException):
            log.warning("discovery step failed: %s", result)
            continue
        for item in result:
            if isinstance(item, DiscoveredDevice):
                xaddr = await device_service(item, policy, timeout=req.call_timeout)
                if isinstance(xaddr, Refusal):
                    refused.setdefault(
                        item.answered_from,
                        {
                            "host": item.answered_from,
                            "port": None,
                            "cause": Cause.ADDRESS_REFUSED.value,
                            "step": "WS-Discovery",
                            "detail": f"every XAddr refused: {xaddr}",
                            "endpoint_ref": item.endpoint_ref,
                        },
                    )
                elif xaddr:
                    key = device_key(xaddr)
                    await found(key, xaddr)
                    endpoints.setdefault(key, item.endpoint_ref)
            else:  # ScanHit (already handed on as it was found)
                await found(format_hostport(item.host, item.port), item.xaddr)
    answered = {parse_target(url).host for url in targets.values()}
    return targets, endpoints, [f for host, f in refused.items() if host not in answered]


async def _then_set(awaitable: Awaitable[Any], event: asyncio.Event) -> Any:
    try:
        return await awaitable
    finally:
        event.set()


async def sweep(
    req: DiscoveryRequest,
    policy: AddressPolicy,
    credentials_for: Callable[[str], Sequence[Credential]],
    budget: LoginBudget,
    hints: dict[str, AuthMethod],
    progress: Progress = _quiet,
    shard: tuple[int, int] = (0, 1),
) -> tuple[list[DeviceReport], tuple[dict[str, str], dict[str, str], list[dict[str, Any]]]]:
    """Find devices and interrogate them, in one event loop: the reports (in no particular order) and what
    :func:`find_devices` returned. Finding and interrogating overlap: a device is interrogated as soon as it is
    found, so addresses that never answer (their scan timeouts) and slow devices (their per-device deadline) wait
    side by side, not one stage after the other."""
    # Bounded: the scan runs at most this far ahead of the interrogations, so a hit's connection is still open
    # (keep-alive) when its interrogation takes it.
    feed: asyncio.Queue[str | None] = asyncio.Queue(maxsize=max(1, req.concurrency))
    offered = 0

    async def offer(_key: str, url: str) -> None:
        nonlocal offered
        offered += 1
        await feed.put(url)

    async def finder(session: HttpClient) -> tuple[dict[str, str], dict[str, str], list[dict[str, Any]]]:
        try:
            found = await find_devices(req, policy, progress, offer, session, shard, listened)
        except asyncio.CancelledError:
            raise  # the interrogations are over already: nobody waits for the end mark
        except BaseException:
            await feed.put(None)
            raise
        await feed.put(None)  # no more devices: the interrogation ends with the last one found
        return found

    # Answers to a WS-Discovery probe arrive in a burst and are read by this event loop: no interrogation starts
    # while a probe listens, or a busy loop would read them too late (the scan's hits wait in the feed meanwhile).
    listened = asyncio.Event()

    async def arrivals() -> AsyncIterator[str]:
        await listened.wait()
        while (url := await feed.get()) is not None:
            yield url

    reports: list[DeviceReport] = []
    # One HTTP client for the scan and the interrogations: a hit's connection (and the scan's clock reading)
    # goes straight on to its interrogation, which starts while the scan still runs.
    session = HttpClient(
        limit=req.scan_concurrency + max(16, req.concurrency * 2),
        limit_per_host=2,
        keepalive_s=5.0,
        max_idle=parking_capacity(),
    )
    find_task = asyncio.create_task(finder(session))
    try:
        async for report in interrogate_stream(
            arrivals(),
            credentials_for=credentials_for,
            budget=budget,
            session=session,
            concurrency=req.concurrency,
            auth_hint_for=lambda url: hints.get(device_key(url)),
            timeout=req.call_timeout,
            deadline=req.device_deadline,
            policy=policy,
        ):
            reports.append(report)
            with contextlib.suppress(Exception):  # a broken progress bar must not stop a sweep
                progress("interrogate", len(reports), offered)
        found = await find_task
    finally:
        if not find_task.done():
            find_task.cancel()
            await asyncio.gather(find_task, return_exceptions=True)
        await session.close()
    return reports, found


def sweep_shard(job: ShardJob) -> tuple[list[DeviceReport], dict[str, str], dict[str, Any]]:
    """One worker process's share of a range scan (see ``Discovery._sweep_in_workers``): its own event loop,
    its own HTTP client; reports, found device services and the login budget of its devices come back to the
    parent, which registers them."""
    budget = LoginBudget(secret=job.budget_secret)
    if job.budget_state:
        budget.restore({"version": 1, "devices": job.budget_state})
    reports, (targets, _endpoints, _refused) = asyncio.run(
        sweep(job.req, job.policy, job.credentials_for, budget, job.hints, shard=job.shard)
    )
    touched = [format_hostport(r.address, r.port) for r in reports]
    return reports, targets, budget.snapshot(touched)["devices"]


@dataclass(frozen=True)
class ShardJob:
    req: DiscoveryRequest
    shard: tuple[int, int]
    policy: AddressPolicy
    credentials_for: Callable[[str], Sequence[Credential]]
    hints: dict[str, AuthMethod]
    budget_secret: bytes
    budget_state: dict[str, Any]


@dataclass(frozen=True)
class ShardLogins:
    """The logins for each address in a form a worker process takes without the database: the credential sets
    as :class:`vms.inventory.credentials.CredentialResolver` matches them (the most specific range that covers
    the address first, then the default sets)."""

    scoped: tuple[tuple[str, str, str], ...] = ()  # (CIDR, username, password), most specific first
    default: tuple[tuple[str, str], ...] = ()  # (username, password)

    @classmethod
    def build(cls, rows: Sequence[tuple[str | None, bool, str, str]]) -> ShardLogins:
        """From (scope, is_default, username, password) rows."""
        scoped = [(ipaddress.ip_network(scope, strict=False), user, pw) for scope, _d, user, pw in rows if scope]
        scoped.sort(key=lambda item: -item[0].prefixlen)
        default = tuple((user, pw) for scope, is_default, user, pw in rows if not scope and is_default)
        return cls(tuple((str(net), user, pw) for net, user, pw in scoped), default)

    def __call__(self, target: str) -> list[Credential]:
        host = parse_target(target).host
        try:
            addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            addr = None
        found: list[Credential] = []
        if addr is not None:
            for cidr, user, pw in self.scoped:
                net = ipaddress.ip_network(cidr)
                if addr.version == net.version and addr in net:
                    found.append(Credential(user, pw))
        return found + [Credential(user, pw) for user, pw in self.default]
