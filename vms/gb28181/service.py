"""The GB/T 28181 SIP server (probes.gb28181.GbServer) with vms's registry, run in a thread of its own (its event
loop) beside the API: `vms gb28181 serve` runs it in the foreground, `vms run` in the background when
VMS_GB28181_ENABLED.

Besides the query the server makes after each registration, every registered device is asked for its Catalog
again every VMS_GB28181_CATALOG_INTERVAL_S, and subscribed to catalog changes once per registration (a device
that does not support subscriptions is asked on the schedule only). Catalog queries asked for on demand (stored in
the device's row by `vms gb28181 catalog` or the API, from any process: vms.gb28181.devices) are taken every
REQUEST_POLL_S.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from probes.gb28181.api import CatalogAnswer, Peer, Registration, Transport
from probes.gb28181.server import GbServer
from vms.gb28181.devices import catalog_failed, take_catalog_requests
from vms.gb28181.registry import GbDirectory
from vms.gb28181.upstream import Upstream
from vms.inventory.service import Inventory
from vms.store.models import utcnow

__all__ = ["GbService"]

log = logging.getLogger(__name__)
T = TypeVar("T")
SCHEDULE_TICK_S = 5.0
REQUEST_POLL_S = 1.0  # how often the catalog requests made on demand are looked for
MAX_IN_FLIGHT = 64  # scheduled subscriptions and catalog queries at once
FROM_SETTINGS = -1  # a port argument left out: VMS_GB28181_PORT


class GbService:
    """The registry (worker thread) and the SIP server (event loop thread). ``start`` raises OSError when the
    port is taken (nothing is left running then)."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        host: str | None = None,
        udp_port: int | None = FROM_SETTINGS,
        tcp_port: int | None = FROM_SETTINGS,
        catalog_quiet_s: float = 5.0,
        catalog_timeout_s: float = 30.0,
        subscribe: bool = True,
    ) -> None:
        settings = inventory.settings
        self.inventory = inventory
        self.directory = GbDirectory(inventory)
        port = settings.gb28181_port
        self.server = GbServer(
            self.directory,
            sip_id=settings.gb28181_id,
            realm=settings.gb28181_realm,
            host=host or settings.gb28181_host,
            udp_port=port if udp_port == FROM_SETTINGS else udp_port,  # None: no UDP
            tcp_port=port if tcp_port == FROM_SETTINGS else tcp_port,
            catalog_quiet_s=catalog_quiet_s,
            catalog_timeout_s=catalog_timeout_s,
        )
        self.upstream = Upstream.from_settings(inventory, local_host=host)  # None: VMS_GB28181_UPSTREAM_HOST unset
        self.catalog_interval_s = float(settings.gb28181_catalog_interval_s)
        self.subscribe = subscribe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._schedule: Future[None] | None = None
        self._on_demand_loop: Future[None] | None = None
        self.restored = 0  # registrations taken back from the registry at start
        self._subscribed: dict[str, dt.datetime] = {}  # device -> the registration it was subscribed for
        self._asked: dict[str, dt.datetime] = {}  # device -> when the schedule last asked for its catalog
        self._busy: set[str] = set()  # devices with a subscription or query in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    @property
    def udp_port(self) -> int | None:
        return self.server.udp_port

    @property
    def tcp_port(self) -> int | None:
        return self.server.tcp_port

    def start(self) -> None:
        self.directory.start()
        self.restored = self._restore()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="gb28181-sip", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._call(self.server.start(), timeout=10.0)
        except BaseException:
            self._stop_loop()
            self.directory.stop()
            raise
        self._schedule = asyncio.run_coroutine_threadsafe(self._scheduled(), loop)
        self._on_demand_loop = asyncio.run_coroutine_threadsafe(self._on_demand(), loop)
        if self.upstream is not None:
            self._call(self.upstream.start(), timeout=10.0)

    def _restore(self) -> int:
        """The registrations the registry kept and not yet expired, back into the server (a restart of vms): their
        devices' keepalives and answers are heard before they register again. Returns how many."""
        n = 0
        for st in self.directory.snapshot():
            if st.expires_at is None or st.registered_at is None or st.host is None or st.port is None:
                continue
            transport: Transport = "tcp" if st.transport == "tcp" else "udp"
            expires = int((st.expires_at - st.registered_at).total_seconds())
            peer = Peer(transport, st.host, int(st.port))
            n += self.server.restore(Registration(st.device_id, st.domain or "", peer, expires, st.registered_at))
        if n:
            log.info("gb28181: %d registrations restored from the registry", n)
        return n

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._schedule is not None:
            self._schedule.cancel()
        if self._on_demand_loop is not None:
            self._on_demand_loop.cancel()
        loop = self._loop
        loop.call_soon_threadsafe(lambda: [t.cancel() for t in list(self._tasks)])
        if self.upstream is not None:
            try:
                self._call(self.upstream.stop(), timeout=10.0)
            except Exception:
                log.exception("gb28181: stopping the upstream registration failed")
        try:
            self._call(self.server.stop(), timeout=10.0)
        except Exception:
            log.exception("gb28181: stopping the SIP server failed")
        self._stop_loop()
        self.directory.stop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10.0)
        if loop is not None and not loop.is_running():
            loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        assert self._loop is not None, "not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def query_catalog(self, device_id: str, timeout: float = 60.0) -> CatalogAnswer:
        """Ask a registered device for its catalog now (from another thread); the answer is merged as well."""
        return self._call(self.server.query_catalog(device_id), timeout)

    async def _scheduled(self) -> None:
        while True:
            await asyncio.sleep(min(SCHEDULE_TICK_S, max(0.2, self.catalog_interval_s / 4)))
            try:
                await self._tick(utcnow())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gb28181: scheduled catalog queries failed")

    async def _tick(self, now: dt.datetime) -> None:
        """Start the subscriptions and catalog queries now due, each a task of its own (a device that never answers
        holds up only itself), at most MAX_IN_FLIGHT at a time, one at a time per device."""
        for st in self.directory.snapshot():
            if not st.online or st.registered_at is None:
                self._subscribed.pop(st.device_id, None)
                continue
            if st.device_id in self._busy:
                continue
            if self.subscribe and self._subscribed.get(st.device_id) != st.registered_at:
                self._subscribed[st.device_id] = st.registered_at
                self._start(st.device_id, self._subscribe(st.device_id))
                continue
            last = max((t for t in (st.catalog_at, self._asked.get(st.device_id), st.registered_at) if t), default=None)
            due = self.catalog_interval_s > 0 and (
                last is None or (now - last).total_seconds() >= self.catalog_interval_s
            )
            if due:
                self._asked[st.device_id] = now
                self._start(st.device_id, self._query(st.device_id))

    def _start(self, device_id: str, coro: Coroutine[Any, Any, None]) -> None:
        self._busy.add(device_id)
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._busy.discard(device_id)

        task.add_done_callback(done)

    async def _subscribe(self, device_id: str) -> None:
        async with self._slots:
            try:
                await self.server.subscribe_catalog(device_id)
            except Exception as exc:  # no subscription support: the schedule still asks
                log.info("gb28181: %s: catalog subscription failed: %s", device_id, exc)

    async def _on_demand(self) -> None:
        """Take the catalog requests made on demand (a thread reads the database) and ask those devices now."""
        while True:
            await asyncio.sleep(REQUEST_POLL_S)
            try:
                taken = await asyncio.to_thread(take_catalog_requests, self.inventory, busy=set(self._busy))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gb28181: reading the catalog requests failed")
                continue
            for device_id in taken:
                self._start(device_id, self._query_on_demand(device_id))

    async def _query_on_demand(self, device_id: str) -> None:
        try:
            answer = await self.server.query_catalog(device_id)
            log.info("gb28181: %s: catalog on demand: %d items", device_id, answer.items)
        except Exception as exc:  # CatalogQueryError: not registered here, refused, no answer
            log.warning("gb28181: %s: catalog query on demand failed: %s", device_id, exc)
            try:
                await asyncio.to_thread(catalog_failed, self.inventory, device_id, str(exc))
            except Exception:
                log.exception("gb28181: %s: the catalog query's failure was not recorded", device_id)

    async def _query(self, device_id: str) -> None:
        async with self._slots:
            try:
                await self.server.query_catalog(device_id)
            except Exception as exc:
                log.warning("gb28181: %s: scheduled catalog query failed: %s", device_id, exc)
