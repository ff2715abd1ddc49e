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
import json
import logging
import multiprocessing
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from probes.onvif.addresses import format_hostport
from probes.onvif.auth import Credential, LoginBudget
from probes.onvif.http import HttpClient
from probes.policy import AddressPolicy
from probes.results import AuthMethod, DeviceReport, MediaProfile
from vms.catalog.domain import Observation, SourceKind
from vms.discovery.sweep import (
    DEFAULT_PORTS,
    MAX_FORCED_ADDRESSES,
    MAX_SCAN_ADDRESSES,
    MAX_WORKERS,
    WORKER_MIN_ADDRESSES,
    DiscoveryRequest,
    Progress,
    ShardJob,
    ShardLogins,
    _quiet,
    device_key,
    find_devices,
    sweep,
    sweep_shard,
)
from vms.inventory.credentials import Cipher, CredentialResolver
from vms.inventory.ingest import IngestResult, ingest, observation_key
from vms.store import repository as repo
from vms.store.models import Credential as CredentialRow
from vms.store.models import DeviceLogin, DiscoveryRun, Source, cameras, utcnow
from vms.store.models import Observation as ObservationRow

if TYPE_CHECKING:
    from vms.inventory.service import Inventory

__all__ = [
    "DEFAULT_PORTS",
    "MAX_FORCED_ADDRESSES",
    "MAX_SCAN_ADDRESSES",
    "MAX_WORKERS",
    "SOURCE",
    "WORKER_MIN_ADDRESSES",
    "Discovery",
    "DiscoveryOutcome",
    "DiscoveryRequest",
    "auth_hint",
    "device_key",
    "discovery_runs",
    "find_devices",
    "main_profile",
    "report_fields",
    "step_failure_counts",
    "sweep",
]

log = logging.getLogger(__name__)

SOURCE = "onvif"
MAX_STORED_FAILURES = 5000
# A discovery method that cannot see a field (a range scan has no WS-Discovery endpoint reference) keeps what
# another method saw: such a field missing from an observation is not a change.
UNSEEN_BY_SCAN = ("endpoint_ref",)

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


def auth_hint(method: object) -> AuthMethod | None:
    """A camera's stored auth_method as a hint for the prober's first login (None: unknown, try as usual)."""
    if method == "wsse" or method == "digest" or method == "none":
        return method
    return None


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


# --- the service ---------------------------------------------------------------------------------------


class Discovery:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.cipher = Cipher(inventory.settings.fernet_key())
        # Fingerprints of rejected logins must survive restarts; derive their HMAC key from the credential key.
        self.budget_secret = hashlib.sha256(b"vms login budget\x00" + inventory.settings.fernet_key()).digest()

    # persistence of the login budget (so repeated sweeps never lock an account)

    def load_budget(
        self,
        session: Session,
        addresses: Collection[str] | None = None,
        *,
        on_change: Callable[[str], None] | None = None,
    ) -> LoginBudget:
        """The persisted budget: of every device, or of ``addresses`` (host:port) only (a health sweep's shard).
        ``on_change`` hears each device whose state changes afterwards (what a sweep must save)."""
        budget = LoginBudget(secret=self.budget_secret, on_change=on_change)
        stmt = select(DeviceLogin.address, DeviceLogin.state)  # rows, not ORM objects: a shard reads 500 each time
        devices: dict[str, Any] = {}
        if addresses is None:
            devices = dict(session.execute(stmt).all())
        else:
            wanted = sorted(set(addresses))
            for i in range(0, len(wanted), 500):
                part = wanted[i : i + 500]
                devices.update(session.execute(stmt.where(DeviceLogin.address.in_(part))).all())
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
            elif row.state != json.loads(json.dumps(state)):  # as stored (tuples become lists): unchanged, no write
                row.state = state
                row.updated_at = utcnow()

    def resolver(self, session: Session) -> CredentialResolver:
        return CredentialResolver.load(session, self.cipher)

    def address_policy(self, session: Session, req: DiscoveryRequest | None = None) -> AddressPolicy:
        """Where devices may point the prober: VMS_ALLOWED_NETWORKS, the run's ranges (without a run: the
        scheduled sweep's VMS_DISCOVERY_RANGES) and the credential scopes (plus each device's own address); never
        the API's own endpoint."""
        settings = self.inventory.settings
        ranges = req.ranges if req is not None else settings.discovery_ranges
        scopes = [scope for scope in session.scalars(select(CredentialRow.scope)) if scope]
        return AddressPolicy.build(
            [*settings.allowed_networks, *ranges, *scopes], service=[(settings.api_host, settings.api_port)]
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
            hint = auth_hint(method)
            if hint is not None:
                hints[format_hostport(host, port or 80)] = hint
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
                req, workers, policy, budget, hints, progress
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
        budget: LoginBudget,
        hints: dict[str, AuthMethod],
        progress: Progress,
    ) -> tuple[list[DeviceReport], dict[str, str], dict[str, str], list[dict[str, Any]]]:
        """A range scan and its interrogations shared by ``workers`` processes, each with its own event loop over
        every n-th address (:func:`vms.discovery.sweep.sweep_shard`). Each device is probed by exactly one worker,
        under the login budget and address policy of this run; the budget of the devices they touched comes back
        and is merged here, where the devices are registered. The workers import probes only (start in a fraction
        of a second) and take the logins as :class:`~vms.discovery.sweep.ShardLogins`."""
        with self.inventory.session(write=False) as s:
            rows = s.scalars(select(CredentialRow))
            logins = ShardLogins.build(
                [(r.scope, r.is_default, r.username, self.cipher.decrypt(r.secret)) for r in rows]
            )
        state = budget.snapshot()["devices"]
        jobs = [
            ShardJob(req, (i, workers), policy, logins, hints, self.budget_secret, state)
            for i in range(workers)
        ]
        loop = asyncio.get_running_loop()
        reports: list[DeviceReport] = []
        targets: dict[str, str] = {}
        # spawn: a fresh interpreter per worker (forking a process with a running event loop and threads is unsafe)
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [loop.run_in_executor(pool, sweep_shard, job) for job in jobs]
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
