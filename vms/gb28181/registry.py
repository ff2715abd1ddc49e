"""The GB/T 28181 registry: vms's side of the SIP server (probes.gb28181.GbServer calls it as its Directory).

The server calls it on its event loop, so every method returns at once: an in-memory view of the devices is
updated under a lock, and the database work (the registry rows, statuses through Health.signal, catalog merges)
is queued for one worker thread, which also checks the offline deadlines every second and writes the changed
registry rows in one batch per tick.

Status: a REGISTER or a Keepalive sets the device's offline deadline to min(registration expiry,
VMS_GB28181_KEEPALIVE_INTERVAL_S x VMS_GB28181_KEEPALIVE_COUNT) after it; a device past its deadline goes OFF, and
so do its channels (the cameras its catalog lists, and the device itself when it is a camera): health events of
stage ``keepalive``, cause ``keepalive_timeout`` (``registration_expired`` when the registration ran out first).
A REGISTER or a Keepalive after that brings them back ON (each channel to the status its last catalog or notice
gave); ``Expires: 0`` makes them OFF at once (stage ``register``, cause ``unregistered``). ``last_seen`` persists:
after a restart the deadlines are computed again from it, so only the devices really overdue go OFF.

Passwords: the credential set named ``gb28181:<device id>`` (its own), else the domain password
(VMS_GB28181_PASSWORD, or a credential set named ``gb28181:*``) for an allowed ID: a known camera's GB ID, an ID
with its own credential set, or one starting with a prefix of VMS_GB28181_ALLOW. Anything else gets no password
(the server answers 403).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select

from probes.gb28181.api import CatalogAnswer, CatalogNotice, Keepalive, Registration, Unregistration
from vms.gb28181 import catalog as gbcat
from vms.health.service import Health
from vms.health.status import Status
from vms.inventory.credentials import Cipher
from vms.inventory.service import Inventory
from vms.store import repository as repo
from vms.store.db import upsert_insert
from vms.store.models import CatalogNode, Credential, cameras, gb_devices, utcnow

__all__ = ["DeviceState", "GbDirectory"]

log = logging.getLogger(__name__)

CREDENTIAL_PREFIX = "gb28181:"
DOMAIN_CREDENTIAL = "gb28181:*"
REFRESH_S = 30.0
DESCRIBE_CHUNK = 5000  # how often the allowed IDs and passwords are read again
_NOTICE_STATUS: dict[str, tuple[Status, str]] = {
    "ON": ("ON", "ON"),
    "OFF": ("OFF", "OFF"),
    "VLOST": ("DEFECT", "VLOST"),
    "DEFECT": ("DEFECT", "DEFECT"),
}


@dataclass(slots=True)
class DeviceState:
    device_id: str
    name: str | None = None
    domain: str | None = None
    transport: str | None = None
    host: str | None = None
    port: int | None = None
    expires_at: dt.datetime | None = None
    registered_at: dt.datetime | None = None
    last_seen: dt.datetime | None = None
    offline_deadline: dt.datetime | None = None
    online: bool = False
    catalog_at: dt.datetime | None = None
    catalog_items: int | None = None
    catalog_complete: bool | None = None
    user_agent: str | None = None
    camera_id: int | None = None
    # the status each channel (by its DeviceID) last had from the catalog or a notice: restored when the device
    # comes back; not persisted (the next catalog answer gives it again)
    channels: dict[str, str] = field(default_factory=dict)

    def row(self, interval_s: float, count: int) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "name": self.name[:255] if self.name else None,
            "domain": self.domain,
            "transport": self.transport,
            "host": self.host,
            "port": self.port,
            "expires_at": self.expires_at,
            "registered_at": self.registered_at,
            "last_seen": self.last_seen,
            "keepalive_interval_s": interval_s,
            "keepalive_count": count,
            "offline_deadline": self.offline_deadline,
            "online": self.online,
            "catalog_at": self.catalog_at,
            "catalog_items": self.catalog_items,
            "catalog_complete": self.catalog_complete,
            "user_agent": self.user_agent[:255] if self.user_agent else None,
            "camera_id": self.camera_id,
        }


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class GbDirectory:
    """probes.gb28181.api.Directory over the inventory. ``start`` runs the worker thread; without it, ``process``
    does the same work in the caller's thread (tests)."""

    def __init__(self, inventory: Inventory, *, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.inventory = inventory
        self.settings = inventory.settings
        self.health = Health(inventory)
        self.clock = clock
        self.interval_s = float(self.settings.gb28181_keepalive_interval_s)
        self.count = int(self.settings.gb28181_keepalive_count)
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceState] = {}
        self._dirty: set[str] = set()
        self._changes: list[tuple[str, Status, dt.datetime, str, str]] = []  # device statuses to write, in order
        self._undescribed: set[str] = set()  # devices registered since: their names and camera records to read
        self._jobs: queue.Queue[Callable[[], object]] = queue.Queue()
        self._passwords: dict[str, str] = {}
        self._domain_password: str | None = None
        self._known_ids: frozenset[str] = frozenset()
        self._prefixes = tuple(self.settings.gb28181_allow)
        self._refreshed = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.errors = 0  # worker jobs that failed (logged)

    # --- life --------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the registry and the passwords; deadlines again from last_seen (devices overdue go OFF on the
        first tick, at their deadline)."""
        self.refresh()
        with self.inventory.session(write=False) as s:
            rows = [dict(r._mapping) for r in s.execute(select(gb_devices))]
        with self._lock:
            for r in rows:
                st = DeviceState(
                    device_id=r["device_id"],
                    name=r["name"],
                    domain=r["domain"],
                    transport=r["transport"],
                    host=r["host"],
                    port=r["port"],
                    expires_at=_utc(r["expires_at"]),
                    registered_at=_utc(r["registered_at"]),
                    last_seen=_utc(r["last_seen"]),
                    online=bool(r["online"]),
                    catalog_at=_utc(r["catalog_at"]),
                    catalog_items=r["catalog_items"],
                    catalog_complete=r["catalog_complete"],
                    user_agent=r["user_agent"],
                    camera_id=r["camera_id"],
                )
                if st.online and st.last_seen is not None:
                    st.offline_deadline = self._deadline(st.last_seen, st.expires_at)
                else:
                    st.offline_deadline = None
                self._devices[st.device_id] = st
                if st.offline_deadline != _utc(r["offline_deadline"]):
                    self._dirty.add(st.device_id)

    def start(self) -> None:
        self.load()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gb28181-registry", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.process(deadlines=False)  # what was queued meanwhile, and the last registry rows (a stop is no
        # evidence against a device: the next start computes its deadline again from last_seen)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._jobs.get(timeout=1.0)
            except queue.Empty:
                job = None
            if job is not None:
                self._do(job)
            self.process()

    def _do(self, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception:  # a failed write must not stop the registry; the next tick tries the rest
            self.errors += 1
            log.exception("gb28181: a registry job failed")

    def process(self, now: dt.datetime | None = None, *, deadlines: bool = True) -> None:
        """One tick: queued jobs, overdue devices OFF, changed registry rows written, passwords re-read now and
        then."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            self._do(job)
        self._do(self._pending)
        if deadlines:
            self._do(lambda: self.check_deadlines(now))
        while True:  # what the deadlines queued
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            self._do(job)
        self._do(self.flush)
        if time.monotonic() - self._refreshed > REFRESH_S:
            self._do(self.refresh)

    # --- passwords and allowed IDs -----------------------------------------------------------------------

    def refresh(self) -> None:
        cipher: Cipher | None = None
        passwords: dict[str, str] = {}
        domain = self.settings.gb28181_password.get_secret_value() if self.settings.gb28181_password else None
        with self.inventory.session(write=False) as s:
            for cred in s.scalars(select(Credential).where(Credential.name.startswith(CREDENTIAL_PREFIX))):
                cipher = cipher or Cipher(self.settings.fernet_key())
                secret = cipher.decrypt(cred.secret)
                if cred.name == DOMAIN_CREDENTIAL:
                    domain = domain or secret
                else:
                    passwords[cred.name[len(CREDENTIAL_PREFIX) :]] = secret
            known = frozenset(repo.all_device_ids(s))
        with self._lock:
            self._passwords, self._domain_password, self._known_ids = passwords, domain, known
        self._refreshed = time.monotonic()

    def allowed(self, device_id: str) -> bool:
        return (
            device_id in self._known_ids
            or device_id in self._passwords
            or any(device_id.startswith(p) for p in self._prefixes)
        )

    def password_for(self, device_id: str) -> str | None:
        with self._lock:
            own = self._passwords.get(device_id)
            if own is not None:
                return own
            return self._domain_password if self.allowed(device_id) else None

    # --- events from the server (its event loop: no I/O here) --------------------------------------------

    def _deadline(self, at: dt.datetime, expires_at: dt.datetime | None) -> dt.datetime:
        keep = at + dt.timedelta(seconds=self.interval_s * self.count)
        return min(keep, expires_at) if expires_at is not None else keep

    def _state(self, device_id: str) -> DeviceState:
        st = self._devices.get(device_id)
        if st is None:
            st = self._devices[device_id] = DeviceState(device_id)
        return st

    def registered(self, event: Registration) -> None:
        at = _utc(event.at) or self.clock()
        with self._lock:
            st = self._state(event.device_id)
            was_online = st.online
            st.domain, st.transport, st.host, st.port = (
                event.domain,
                event.peer.transport,
                event.peer.host,
                event.peer.port,
            )
            st.registered_at = st.last_seen = at
            st.expires_at = at + dt.timedelta(seconds=event.expires)
            st.offline_deadline = self._deadline(at, st.expires_at)
            st.online = True
            st.user_agent = event.user_agent
            self._dirty.add(st.device_id)
        log.info(
            "gb28181: %s registered from %s %s:%s for %ss",
            event.device_id,
            event.peer.transport,
            event.peer.host,
            event.peer.port,
            event.expires,
        )
        if not was_online:
            self._change(event.device_id, "ON", at, "register", "registered")
        with self._lock:
            self._undescribed.add(event.device_id)

    def unregistered(self, event: Unregistration) -> None:
        at = _utc(event.at) or self.clock()
        with self._lock:
            st = self._state(event.device_id)
            was_online = st.online
            st.online = False
            st.offline_deadline = None
            st.expires_at = at
            self._dirty.add(st.device_id)
        log.info("gb28181: %s unregistered", event.device_id)
        if was_online:
            self._change(event.device_id, "OFF", at, "register", "unregistered")

    def keepalive(self, event: Keepalive) -> None:
        at = _utc(event.at) or self.clock()
        with self._lock:
            st = self._devices.get(event.device_id)
            if st is None or st.expires_at is None or st.expires_at <= at:
                return  # not registered (or its registration ran out): it must REGISTER again
            was_online = st.online
            st.last_seen = at
            st.offline_deadline = self._deadline(at, st.expires_at)
            st.online = True
            st.host, st.port, st.transport = event.peer.host, event.peer.port, event.peer.transport
            self._dirty.add(st.device_id)
        if not was_online:
            log.info("gb28181: %s is back (keepalive)", event.device_id)
            self._change(event.device_id, "ON", at, "keepalive", "keepalive")

    def catalog(self, answer: CatalogAnswer) -> None:
        self._jobs.put(lambda: self.merge_catalog(answer))

    def notice(self, notice: CatalogNotice) -> None:
        self._jobs.put(lambda: self.apply_notice(notice))

    # --- the worker's side ---------------------------------------------------------------------------------

    def _pending(self) -> None:
        """The status changes and descriptions the events since the last tick asked for, in bulk."""
        with self._lock:
            changes, self._changes = self._changes, []
            undescribed, self._undescribed = self._undescribed, set()
        try:
            self._device_statuses(changes)
            if undescribed:
                self.describe(undescribed)
        except Exception:
            with self._lock:  # again next tick
                self._changes[:0] = changes
                self._undescribed |= undescribed
            raise

    def check_deadlines(self, now: dt.datetime | None = None) -> list[str]:
        """Devices past their offline deadline go OFF (with their channels), at their deadline. Returns their IDs."""
        now = now or self.clock()
        due: list[tuple[str, dt.datetime, str]] = []
        with self._lock:
            for st in self._devices.values():
                if st.online and st.offline_deadline is not None and st.offline_deadline <= now:
                    expired = st.expires_at is not None and st.expires_at <= st.offline_deadline
                    due.append(
                        (st.device_id, st.offline_deadline, "registration_expired" if expired else "keepalive_timeout")
                    )
                    st.online = False
                    st.offline_deadline = None
                    self._dirty.add(st.device_id)
        for device_id, at, cause in due:
            log.warning("gb28181: %s went offline (%s at %s)", device_id, cause, at.isoformat())
        self._device_statuses([(d, "OFF", at, "keepalive", cause) for d, at, cause in due])
        return [d for d, _, _ in due]

    def _change(self, device_id: str, status: Status, at: dt.datetime, stage: str, cause: str) -> None:
        with self._lock:
            self._changes.append((device_id, status, at, stage, cause))

    def _device_statuses(self, changes: list[tuple[str, Status, dt.datetime, str, str]]) -> None:
        """Devices and their channels to a status (one look-up of the channels for them all); coming back, each
        channel to what its catalog last said."""
        if not changes:
            return
        channels = gbcat.channel_cameras(self.inventory, sorted({c[0] for c in changes}))
        for device_id, status, at, stage, cause in changes:
            ids = channels.get(device_id, [])
            if not ids:
                continue  # no camera behind it (yet): nothing to change
            if status == "ON":
                with self._lock:
                    st = self._devices.get(device_id)
                    last = {ch: v for ch, v in (st.channels if st is not None else {}).items() if v != "ON"}
                if last:
                    with self.inventory.session(write=False) as s:
                        by_key = repo.camera_ids_for_keys(s, gbcat.source_name(device_id), [f"id:{c}" for c in last])
                    groups: dict[str, list[int]] = {}
                    for key, cid in by_key.items():
                        groups.setdefault(last[key[3:]], []).append(cid)
                    kept = {cid for group in groups.values() for cid in group}
                    ids = [cid for cid in ids if cid not in kept]
                    for channel_status, group in groups.items():
                        self.health.signal(group, channel_status, at, stage=stage, cause=cause)  # type: ignore[arg-type]
            self.health.signal(ids, status, at, stage=stage, cause=cause)

    def merge_catalog(self, answer: CatalogAnswer) -> gbcat.CatalogMerge:
        at = _utc(answer.at) or self.clock()
        merged = gbcat.merge_documents(
            self.inventory, answer.device_id, answer.documents, snapshot=answer.complete, at=at
        )
        self.describe([answer.device_id])
        with self._lock:
            st = self._state(answer.device_id)
            st.catalog_at, st.catalog_items, st.catalog_complete = at, answer.items, answer.complete
            by_camera = {cid: ch for ch, cid in merged.channels.items()}
            for status, ids in merged.statuses.items():
                for cid in ids:
                    st.channels[by_camera[cid]] = status
            online = st.online
            self._dirty.add(answer.device_id)
        log.info(
            "gb28181: catalog of %s: %d cameras, %d nodes, %s",
            answer.device_id,
            merged.cameras,
            merged.nodes,
            "complete" if answer.complete else "incomplete (nothing removed)",
        )
        if online:
            for status, ids in merged.statuses.items():
                self.health.signal(ids, status, at, stage="catalog", cause="catalog_status")  # type: ignore[arg-type]
        elif merged.channels:  # an offline device's channels stay OFF, whatever the merge took from its answer
            self.health.signal(merged.channels.values(), "OFF", at, stage="keepalive", cause="offline")
        return merged

    def describe(self, device_ids: Collection[str]) -> None:
        """The devices' names and camera records, where the inventory knows them: the camera with the device's ID (a
        camera that registers itself), else the catalog tree node (an NVR or platform a catalog lists)."""
        wanted = sorted(set(device_ids))
        found: dict[str, tuple[int | None, str | None]] = {}
        with self.inventory.session(write=False) as s:
            for i in range(0, len(wanted), DESCRIBE_CHUNK):
                part = wanted[i : i + DESCRIBE_CHUNK]
                for dev, name in s.execute(
                    select(CatalogNode.device_id, CatalogNode.name).where(CatalogNode.device_id.in_(part))
                ):
                    found[dev] = (None, name)
                for dev, cid, name in s.execute(
                    select(cameras.c.device_id, cameras.c.id, cameras.c.name).where(
                        cameras.c.device_id.in_(part), cameras.c.removed_at.is_(None)
                    )
                ):
                    found[dev] = (int(cid), name)
        with self._lock:
            for device_id in wanted:
                st = self._state(device_id)
                camera_id, name = found.get(device_id, (None, None))
                if (st.camera_id, st.name) != (camera_id, name):
                    st.camera_id, st.name = camera_id, name
                    self._dirty.add(device_id)

    def apply_notice(self, notice: CatalogNotice) -> None:
        at = _utc(notice.at) or self.clock()
        by_event: dict[str, list[str]] = {}
        for channel, event in notice.events:
            by_event.setdefault(event.upper(), []).append(channel)
        changes = sorted(set(by_event.get("ADD", []) + by_event.get("UPDATE", [])))
        if changes:
            gbcat.merge_documents(
                self.inventory, notice.device_id, [notice.document], snapshot=False, only=set(changes), at=at
            )
        if by_event.get("DEL"):
            gbcat.delete_channels(self.inventory, notice.device_id, by_event["DEL"], at=at)
        statuses = {e: chs for e, chs in by_event.items() if e in _NOTICE_STATUS}
        if not statuses:
            return
        source = gbcat.source_name(notice.device_id)
        with self.inventory.session(write=False) as s:
            by_key = repo.camera_ids_for_keys(s, source, [f"id:{c}" for chs in statuses.values() for c in chs])
        with self._lock:
            st = self._state(notice.device_id)
            for event, chs in statuses.items():
                for ch in chs:
                    st.channels[ch] = _NOTICE_STATUS[event][0]
        for event, chs in statuses.items():
            status, name = _NOTICE_STATUS[event]
            ids = [by_key[f"id:{c}"] for c in chs if f"id:{c}" in by_key]
            self.health.signal(ids, status, at, stage="catalog", cause="notify", event=name)

    def flush(self) -> int:
        """Write the changed registry rows (one statement)."""
        with self._lock:
            rows = [self._devices[d].row(self.interval_s, self.count) for d in sorted(self._dirty)]
            self._dirty.clear()
        if not rows:
            return 0
        try:
            with self.inventory.session() as s:
                conn = s.connection()
                ins = upsert_insert(conn, gb_devices)
                # only the columns the registry owns: an on-demand catalog request (catalog_requested_at,
                # catalog_error; vms.gb28181.devices) written by another process stays as it is
                keep = {name: ins.excluded[name] for name in rows[0] if name != "device_id"}
                conn.execute(ins.on_conflict_do_update(index_elements=[gb_devices.c.device_id], set_=keep), rows)
        except Exception:
            with self._lock:
                self._dirty.update(r["device_id"] for r in rows)  # again next tick
            raise
        return len(rows)

    # --- reading -------------------------------------------------------------------------------------------

    def snapshot(self) -> list[DeviceState]:
        with self._lock:
            return [replace(st, channels=dict(st.channels)) for st in self._devices.values()]

    def device(self, device_id: str) -> DeviceState | None:
        with self._lock:
            return self._devices.get(device_id)

    def pending(self) -> int:
        return self._jobs.qsize()

    def online_ids(self) -> Iterable[str]:
        with self._lock:
            return [d for d, st in self._devices.items() if st.online]
