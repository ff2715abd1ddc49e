"""The simulated fleet as a running demo: used by `vms run` when no camera is configured."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from typing import Any

from probes.sim import SimFleet

log = logging.getLogger(__name__)


class BackgroundFleet:
    """A SimFleet on its own event loop in a daemon thread, so the API and scheduler run beside it."""

    def __init__(self, **fleet_kwargs: Any) -> None:
        self.fleet = SimFleet(**fleet_kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="sim-fleet", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.fleet.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def start(self, timeout: float = 120.0) -> SimFleet:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the simulated fleet did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the simulated fleet failed to start: {self._error}") from self._error
        return self.fleet

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.fleet.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cidr(self) -> str:
        """The smallest range holding every device address (for the discovery scan)."""
        hosts = sorted(int(ipaddress.ip_address(d.host)) for d in self.fleet.devices)
        lo, hi = hosts[0], hosts[-1]
        prefix = 32
        while prefix > 8 and (lo >> (32 - prefix)) != (hi >> (32 - prefix)):
            prefix -= 1
        return str(ipaddress.ip_network(f"{ipaddress.ip_address(lo)}/{prefix}", strict=False))
