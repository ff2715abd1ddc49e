"""Discovery and registration: find ONVIF devices, interrogate them, merge them into the inventory.

Devices are found by WS-Discovery (multicast on chosen interfaces, directed unicast) and by address-range
scans; each answering device service is interrogated once, with the logins of the credential sets that cover
its address, under a failed-login budget that is persisted so that no sweep, however often it runs, locks an
account. Healthy and recoverable devices become observations of the ``onvif`` source.

Every address a device hands out goes through one address policy (:mod:`probes.policy`) built here from the
settings (``VMS_ALLOWED_NETWORKS``, the API's own endpoint), the run's ranges and the credential scopes: the
prober connects (and sends logins) only to the device itself and to networks the operator allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import multiprocessing
import os
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from probes.discovery.scan import count_addresses, scan_range
from probes.discovery.wsdiscovery import device_service, probe_multicast, probe_unicast
from probes.errors import Cause
from probes.onvif.addresses import format_hostport, parse_target
from probes.onvif.auth import Credential, LoginBudget
from probes.onvif.client import interrogate_stream
from probes.onvif.http import HttpClient, parking_capacity
from probes.policy import AddressPolicy, HostName, Refusal, parse_host
from probes.results import AuthMethod, DeviceReport, DiscoveredDevice, MediaProfile, ScanHit
from vms.catalog.domain import Observation, SourceKind
from vms.inventory.credentials import Cipher, CredentialResolver
from vms.inventory.ingest import IngestResult, ingest, observation_key
from vms.store import repository as repo
from vms.store.models import Credential as CredentialRow
from vms.store.models import DeviceLogin, DiscoveryRun, Source, cameras, utcnow
from vms.store.models import Observation as ObservationRow

if TYPE_CHECKING:
    from vms.inventory.service import Inventory

log = logging.getLogger(__name__)

SOURCE = "onvif"
DEFAULT_PORTS = (80, 8080, 8000, 8899)
MAX_STORED_FAILURES = 5000
MAX_SCAN_ADDRESSES = 65_536  # one /16 per run unless forced
MAX_FORCED_ADDRESSES = 1 << 24  # a /8: even forced, a scan must end
# Below this many addresses one process keeps up (starting workers costs more than it saves).
WORKER_MIN_ADDRESSES = 4000  # about a /20
MAX_WORKERS = 64
# A discovery method that cannot see a field (a range scan has no WS-Discovery endpoint reference) keeps what
# another method saw: such a field missing from an observation is not a change.
UNSEEN_BY_SCAN = ("endpoint_ref",)

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


@dataclass
class DiscoveryOutcome:
    run_id: int
    found: int  # devices found (interrogated, or refused by the address policy)
    registered: int
    new: int
    updated: int
    unchanged: int
    failed: int  # devices not registered
    failures: list[dict[str, Any]]
    by_cause: dict[str, int]
    answered: int = 0  # devices that spoke to us (a refused connection or a timeout is no answer)
    # Optional steps that failed on devices that were registered anyway: {step: {cause: count}}, and the items.
    step_failures: dict[str, dict[str, int]] = field(default_factory=dict)
    step_failure_items: list[dict[str, Any]] = field(repr=False, default_factory=list)
    reports: list[DeviceReport] = field(repr=False, default_factory=list)
    ingest: IngestResult | None = field(repr=False, default=None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "found": self.found,
            "answered": self.answered,
            "registered": self.registered,
            "new": self.new,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "by_cause": self.by_cause,
            "step_failures": self.step_failures,
            "failures": self.failures,
            "step_failure_items": self.step_failure_items,
        }


# --- pure helpers --------------------------------------------------------------------------------------


def device_key(xaddr: str) -> str:
    """host:port of a device service URL: one device per answering address (the probes' own key)."""
    return parse_target(xaddr).key


def step_failure_counts(reports: Sequence[DeviceReport]) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
    """{step: {cause: devices}} of the failed optional steps of registered devices (a device counts once per step
    and cause), and one item per failure."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    items: list[dict[str, Any]] = []
    for report in reports:
        if not report.ok:
            continue  # a failed device is counted once, by its fatal cause
        for step, cause in dict.fromkeys((f.step, f.cause.value) for f in report.failures):
            counts[step][cause] += 1
        for failure in report.failures:
            items.append(
                {
                    "host": report.address,
                    "port": report.port,
                    "step": failure.step,
                    "cause": failure.cause.value,
                    "detail": failure.detail,
                }
            )
    return {step: dict(by_cause) for step, by_cause in sorted(counts.items())}, items


def main_profile(profiles: Sequence[MediaProfile]) -> MediaProfile | None:
    """The main stream: the largest picture, H.265 over H.264 at the same size (Media2 profiles included)."""
    usable = [p for p in profiles if p.stream_uri]
    if not usable:
        return None
    return max(usable, key=lambda p: ((p.width or 0) * (p.height or 0), p.encoding == "H265"))


def report_fields(report: DeviceReport, endpoint_ref: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Camera fields and extras from an interrogation (names from ONVIF scopes are usually vendor defaults,
    so they go to extra, not to the catalog Name)."""
    profile = main_profile(report.profiles)
    snapshot = next((p.snapshot_uri for p in report.profiles if p.snapshot_uri), None)
    fields: dict[str, Any] = {
        "ip_address": report.address,
        "port": report.port,
        "manufacturer": report.manufacturer,
        "model": report.model,
        "firmware_version": report.firmware,
        "serial_number": report.serial,
        "hardware_id": report.hardware_id,
        "mac": report.mac,
        "endpoint_ref": endpoint_ref,
        "device_service_url": report.xaddr,
        "services": dict(report.services) or None,
        "media_profiles": [_profile_dict(p) for p in report.profiles] or None,
        "stream_uri": profile.stream_uri if profile else None,
        "snapshot_uri": snapshot,
        "auth_method": report.auth_method,
        "status": "ON",
    }
    extra = {
        "onvif_name": report.name,
        "onvif_location": report.location,
        "onvif_hardware": report.hardware,
        "onvif_hostname": report.hostname,
    }
    originals = {k: v for k, v in report.services_original.items() if report.services.get(k) != v}
    if originals:
        extra["onvif_services_original"] = "; ".join(f"{k}={v}" for k, v in sorted(originals.items()))
    return {k: v for k, v in fields.items() if v is not None}, {k: v for k, v in extra.items() if v}


def _profile_dict(p: MediaProfile) -> dict[str, Any]:
    out: dict[str, Any] = {
        "token": p.token,
        "name": p.name,
        "encoding": p.encoding,
        "width": p.width,
        "height": p.height,
        "fps": p.fps,
        "bitrate": p.bitrate,
        "stream_uri": p.stream_uri,
        "snapshot_uri": p.snapshot_uri,
        "source": p.source,
    }
    if p.stream_uri_original and p.stream_uri_original != p.stream_uri:
        out["stream_uri_original"] = p.stream_uri_original
    if p.snapshot_uri_original and p.snapshot_uri_original != p.snapshot_uri:
        out["snapshot_uri_original"] = p.snapshot_uri_original
    return {k: v for k, v in out.items() if v is not None}


def _report_order(report: DeviceReport) -> str:
    try:
        return device_key(report.xaddr)
    except ValueError:
        return report.xaddr


async def find_devices(
    req: DiscoveryRequest,
    policy: AddressPolicy,
    progress: Progress = _quiet,
    on_target: Callable[[str, str], Awaitable[None]] | None = None,
    session: HttpClient | None = None,
    shard: tuple[int, int] = (0, 1),
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
    results = await asyncio.gather(*probes, *scans, return_exceptions=True)
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
            found = await find_devices(req, policy, progress, offer, session, shard)
        except asyncio.CancelledError:
            raise  # the interrogations are over already: nobody waits for the end mark
        except BaseException:
            await feed.put(None)
            raise
        await feed.put(None)  # no more devices: the interrogation ends with the last one found
        return found

    async def arrivals() -> AsyncIterator[str]:
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


def _sweep_shard(job: _ShardJob) -> tuple[list[DeviceReport], dict[str, str], dict[str, Any]]:
    """One worker process's share of a range scan (see :meth:`Discovery._sweep_in_workers`): its own event loop,
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
class _ShardJob:
    req: DiscoveryRequest
    shard: tuple[int, int]
    policy: AddressPolicy
    credentials_for: Callable[[str], Sequence[Credential]]
    hints: dict[str, AuthMethod]
    budget_secret: bytes
    budget_state: dict[str, Any]


# --- the service ---------------------------------------------------------------------------------------


class Discovery:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.cipher = Cipher(inventory.settings.fernet_key())
        # Fingerprints of rejected logins must survive restarts; derive their HMAC key from the credential key.
        self.budget_secret = hashlib.sha256(b"vms login budget\x00" + inventory.settings.fernet_key()).digest()

    # persistence of the login budget (so repeated sweeps never lock an account)

    def load_budget(self, session: Session) -> LoginBudget:
        budget = LoginBudget(secret=self.budget_secret)
        devices = {row.address: row.state for row in session.scalars(select(DeviceLogin))}
        if devices:
            budget.restore({"version": 1, "devices": devices})
        return budget

    def save_budget(self, session: Session, snap: dict[str, Any]) -> None:
        """``snap``: the budget's snapshot()["devices"] for the devices of this sweep."""
        existing = {
            r.address: r for r in session.scalars(select(DeviceLogin).where(DeviceLogin.address.in_(list(snap))))
        }
        for address, state in snap.items():
            row = existing.get(address)
            if row is None:
                session.add(DeviceLogin(address=address, state=state))
            else:
                row.state = state
                row.updated_at = utcnow()

    def resolver(self, session: Session) -> CredentialResolver:
        return CredentialResolver.load(session, self.cipher)

    def address_policy(self, session: Session, req: DiscoveryRequest) -> AddressPolicy:
        """Where devices may point the prober: VMS_ALLOWED_NETWORKS, the run's ranges and the credential scopes
        (plus each device's own address); never the API's own endpoint."""
        settings = self.inventory.settings
        scopes = [scope for scope in session.scalars(select(CredentialRow.scope)) if scope]
        return AddressPolicy.build(
            [*settings.allowed_networks, *req.ranges, *scopes], service=[(settings.api_host, settings.api_port)]
        )

    def previous_endpoint_refs(self, session: Session) -> tuple[dict[str, str], dict[str, str]]:
        """Endpoint references WS-Discovery saw in earlier runs, by observation key and by host:port."""
        stmt = (
            select(ObservationRow.key, ObservationRow.k_host_port, ObservationRow.fields)
            .join(Source, Source.id == ObservationRow.source_id)
            .where(Source.name == SOURCE, ObservationRow.k_endpoint_ref.is_not(None))
        )
        by_key: dict[str, str] = {}
        by_host: dict[str, str] = {}
        for key, host_port, fields_json in session.execute(stmt):
            ref = (json.loads(fields_json) or {}).get("endpoint_ref")
            if ref:
                by_key[key] = ref
                if host_port:
                    by_host[host_port] = ref
        return by_key, by_host

    def auth_hints(self, session: Session) -> dict[str, AuthMethod]:
        stmt = select(cameras.c.ip_address, cameras.c.port, cameras.c.auth_method).where(
            cameras.c.auth_method.is_not(None), cameras.c.ip_address.is_not(None)
        )
        hints: dict[str, AuthMethod] = {}
        for host, port, method in session.execute(stmt):
            if method in ("wsse", "digest", "none"):
                hints[format_hostport(host, port or 80)] = method
        return hints

    async def find(
        self,
        req: DiscoveryRequest,
        policy: AddressPolicy,
        progress: Progress = _quiet,
        on_target: Callable[[str, str], Awaitable[None]] | None = None,
        session: HttpClient | None = None,
    ) -> tuple[dict[str, str], dict[str, str], list[dict[str, Any]]]:
        """See :func:`find_devices`."""
        return await find_devices(req, policy, progress, on_target, session)

    async def run(self, req: DiscoveryRequest, progress: Progress = _quiet) -> DiscoveryOutcome:
        """One sweep. Raises ValueError (one line, nothing recorded) for a request it cannot use.

        Finding and interrogating overlap: a device is interrogated as soon as it is found, so addresses that never
        answer (their scan timeouts) and slow devices (their per-device deadline) wait side by side, not one stage
        after the other."""
        req.validate()
        inv = self.inventory
        with inv.session(write=False) as s:
            budget = self.load_budget(s)
            resolver = self.resolver(s)
            hints = self.auth_hints(s)
            policy = self.address_policy(s, req)
        started = utcnow()
        progress("find", 0, 1)
        workers = req.worker_count()
        if workers > 1:
            reports, targets, endpoints, refused = await self._sweep_in_workers(
                req, workers, policy, resolver, budget, hints, progress
            )
        else:
            reports, (targets, endpoints, refused) = await sweep(
                req, policy, resolver.credentials, budget, hints, progress
            )
        progress("find", 1, 1)
        order = sorted(targets)
        reports.sort(key=_report_order)  # as found would vary from run to run; registration order should not
        return self.register(req, reports, endpoints, budget, resolver, order, started, refused=refused)

    async def _sweep_in_workers(
        self,
        req: DiscoveryRequest,
        workers: int,
        policy: AddressPolicy,
        resolver: CredentialResolver,
        budget: LoginBudget,
        hints: dict[str, AuthMethod],
        progress: Progress,
    ) -> tuple[list[DeviceReport], dict[str, str], dict[str, str], list[dict[str, Any]]]:
        """A range scan and its interrogations shared by ``workers`` processes, each with its own event loop over
        every n-th address (:func:`_sweep_shard`). Each device is probed by exactly one worker, under the login
        budget and address policy of this run; the budget of the devices they touched comes back and is merged
        here, where the devices are registered."""
        state = budget.snapshot()["devices"]
        jobs = [
            _ShardJob(req, (i, workers), policy, resolver.credentials, hints, self.budget_secret, state)
            for i in range(workers)
        ]
        loop = asyncio.get_running_loop()
        reports: list[DeviceReport] = []
        targets: dict[str, str] = {}
        # spawn: a fresh interpreter per worker (forking a process with a running event loop and threads is unsafe)
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [loop.run_in_executor(pool, _sweep_shard, job) for job in jobs]
            for future in asyncio.as_completed(futures):
                shard_reports, shard_targets, shard_budget = await future
                reports.extend(shard_reports)
                targets.update(shard_targets)
                budget.replace({"version": 1, "devices": shard_budget})
                with contextlib.suppress(Exception):
                    progress("interrogate", len(reports), len(reports))
        return reports, targets, {}, []

    def register(
        self,
        req: DiscoveryRequest,
        reports: Sequence[DeviceReport],
        endpoints: dict[str, str],
        budget: LoginBudget,
        resolver: CredentialResolver,
        addresses: Sequence[str],
        started: Any,
        *,
        refused: Sequence[dict[str, Any]] = (),
    ) -> DiscoveryOutcome:
        inv = self.inventory
        observations: list[Observation] = []
        failures: list[dict[str, Any]] = list(refused)
        good_login: dict[str, int] = {}
        offsets: list[float | None] = []
        probed = utcnow()
        snap = budget.snapshot(addresses)["devices"]
        with inv.session(write=False) as s:
            seen_by_key, seen_by_host = self.previous_endpoint_refs(s)
        for report in reports:
            key = format_hostport(report.address, report.port)
            if not report.ok:
                cause = report.fatal.cause.value if report.fatal else "protocol"
                failures.append(
                    {
                        "host": report.address,
                        "port": report.port,
                        "cause": cause,
                        "step": report.fatal.step if report.fatal else None,
                        "detail": report.fatal.detail if report.fatal else "",
                    }
                )
                continue
            fields, extra = report_fields(report, endpoints.get(key))
            if "endpoint_ref" not in fields:
                # Not seen this time (a range scan cannot see it): keep what WS-Discovery saw, so that switching
                # methods is no change. By the observation's own key first (MAC, serial), else by host:port.
                host_port = f"{report.address.lower()}:{report.port}"
                previous = seen_by_key.get(observation_key(fields)) or seen_by_host.get(host_port)
                if previous:
                    fields["endpoint_ref"] = previous
            ob_key = observation_key(fields)
            observations.append(Observation(SOURCE, SourceKind.ONVIF, ob_key, fields, extra))
            offsets.append(round(report.clock_offset_s, 3) if report.clock_offset_s is not None else None)
            good = (snap.get(key) or {}).get("good")
            if good:
                for login in resolver.logins(report.address):
                    if budget.fingerprint(Credential(login.username, login.password)) == good[0]:
                        good_login[ob_key] = login.credential_id
                        break
        by_cause = dict(Counter(f["cause"] for f in failures))
        step_failures, step_items = step_failure_counts(reports)
        answered = sum(1 for r in reports if r.answered)
        # One transaction: the cameras, their logins and measurements, the budget and the run land together.
        with inv.session() as s:
            result = ingest(
                s,
                source=SOURCE,
                kind=SourceKind.ONVIF,
                observations=observations,
                rank=inv.rank,
                regions=inv.region_context(s),
                snapshot=False,
            )
            inv.refresh_problems(s, result.camera_ids)
            camera_of = repo.camera_ids_for_keys(s, SOURCE, [ob.key for ob in observations])
            repo.update_cameras(
                s,
                [
                    {"_id": camera_of[ob.key], "clock_offset_s": offset, "probed_at": probed}
                    for ob, offset in zip(observations, offsets, strict=True)
                    if ob.key in camera_of
                ],
            )
            repo.update_cameras(
                s, [{"_id": camera_of[k], "credential_id": cid} for k, cid in good_login.items() if k in camera_of]
            )
            self.save_budget(s, snap)
            new = result.cameras_created
            updated = result.observations_new - new + result.observations_changed
            run = DiscoveryRun(
                started_at=started,
                finished_at=utcnow(),
                params=req.as_dict(),
                counts={
                    "found": len(reports) + len(refused),
                    "answered": answered,
                    "registered": len(observations),
                    "new": new,
                    "updated": updated,
                    "unchanged": result.observations_unchanged,
                    "failed": len(failures),
                    "by_cause": by_cause,
                    "step_failures": step_failures,
                },
                failures={
                    "items": failures[:MAX_STORED_FAILURES],
                    "truncated": max(0, len(failures) - MAX_STORED_FAILURES),
                    "steps": step_items[:MAX_STORED_FAILURES],
                    "steps_truncated": max(0, len(step_items) - MAX_STORED_FAILURES),
                },
            )
            s.add(run)
            s.flush()
            repo.audit(s, actor=req.actor, action="discover", target=f"run {run.id}", details=run.counts)
            run_id = run.id
        return DiscoveryOutcome(
            run_id=run_id,
            found=len(reports) + len(refused),
            answered=answered,
            step_failures=step_failures,
            step_failure_items=step_items,
            registered=len(observations),
            new=new,
            updated=updated,
            unchanged=result.observations_unchanged,
            failed=len(failures),
            failures=failures,
            by_cause=by_cause,
            reports=list(reports),
            ingest=result,
        )


def discovery_runs(inv: Inventory, limit: int = 20) -> list[dict[str, Any]]:
    with inv.session(write=False) as s:
        rows = s.scalars(select(DiscoveryRun).order_by(DiscoveryRun.id.desc()).limit(limit))
        return [
            {
                "id": r.id,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "params": r.params,
                "counts": r.counts,
                "failures": (r.failures or {}).get("items", []),
                "step_failures": (r.failures or {}).get("steps", []),
            }
            for r in rows
        ]
