"""The simulated camera fleet as one object: ONVIF HTTP server, WS-Discovery responder and RTSP child.

`SimFleet` is what tests and the `vms sim` demo use; `run_fleet` is the blocking entry point for the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from probes.sim.devices import (
    DEFAULT_BASE_HOST,
    DEFAULT_PASSWORD,
    DEFAULT_PORT,
    DEFAULT_RTSP_MOUNTS,
    DEFAULT_USERNAME,
    AuthMode,
    DeviceSpec,
    FleetCredentials,
    build_fleet,
    fleet_credentials,
    with_rtsp,
)
from probes.sim.discovery import FD_RESERVE, DiscoveryResponder
from probes.sim.onvif_server import OnvifServer, raise_fd_limit
from probes.sim.rtsp import RtspServer, start_rtsp_server

logger = logging.getLogger(__name__)


class SimFleet:
    """A running simulated fleet. Build from a count (and fault options) or from explicit `devices`.

    After `start()`: `devices` carry the bound port and RTSP URLs, `credentials` is the operator's sheet
    (wrong for `wrong_password` devices, by design), `device_urls` are the real (reachable) service addresses.
    """

    def __init__(
        self,
        count: int | None = None,
        *,
        devices: Sequence[DeviceSpec] | None = None,
        seed: int = 0,
        fault_mix: Mapping[str, float] | None = None,
        faults_by_index: Mapping[int, Iterable[str]] | None = None,
        auth_by_index: Mapping[int, AuthMode] | None = None,
        media2_by_index: Mapping[int, bool] | None = None,
        base_host: str = DEFAULT_BASE_HOST,
        port: int = DEFAULT_PORT,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        rtsp: bool = True,
        rtsp_port: int | None = None,
        rtsp_mounts: int = DEFAULT_RTSP_MOUNTS,
        rtsp_on_device_hosts: bool = True,
        rtsp_shared: bool = True,
        video: str | Path | None = None,
        discovery: bool = True,
        discovery_multicast: bool = True,
        discovery_unicast_limit: int | None = None,
        discovery_max_delay_s: float = 0.1,
        lock_period_s: float = 1800.0,
        slow_delay_s: tuple[float, float] = (1.0, 2.0),
        credentials_path: Path | None = None,
    ) -> None:
        if devices is None:
            if count is None:
                raise ValueError("give a device count or explicit devices")
            devices = build_fleet(
                count,
                seed=seed,
                fault_mix=fault_mix,
                faults_by_index=faults_by_index,
                auth_by_index=auth_by_index,
                media2_by_index=media2_by_index,
                base_host=base_host,
                port=port,
                rtsp_mounts=rtsp_mounts,
                username=username,
                password=password,
            )
        self._initial = list(devices)
        self._username = username
        self._password = password
        self._rtsp_enabled = rtsp
        self._rtsp_port = rtsp_port
        self._rtsp_mounts = rtsp_mounts
        self._rtsp_on_device_hosts = rtsp_on_device_hosts
        self._rtsp_shared = rtsp_shared
        self._video = video
        self._discovery_enabled = discovery
        self._discovery_multicast = discovery_multicast
        self._discovery_unicast_limit = discovery_unicast_limit
        self._discovery_max_delay_s = discovery_max_delay_s
        self._seed = seed
        self.credentials_path = credentials_path
        self.server = OnvifServer(self._initial, lock_period_s=lock_period_s, slow_delay_s=slow_delay_s)
        self.discovery: DiscoveryResponder | None = None
        self.rtsp: RtspServer | None = None
        self._rtsp_watch: asyncio.Task[None] | None = None
        self.devices: list[DeviceSpec] = list(self._initial)
        self.credentials: FleetCredentials = fleet_credentials(self.devices, username=username, password=password)
        self.start_seconds = 0.0

    # --- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        t0 = time.perf_counter()
        raise_fd_limit()
        try:
            await self.server.start()
            self.devices = self.server.devices
            if self._rtsp_enabled:
                online_hosts = [d.host for d in self.devices if "offline" not in d.faults]
                hosts = online_hosts if self._rtsp_on_device_hosts else []
                mounts = sorted({d.rtsp_mount for d in self.devices}, key=lambda m: (len(m), m))
                self.rtsp = await asyncio.to_thread(
                    start_rtsp_server, mounts, self._rtsp_port, self._video, device_hosts=hosts,
                    shared=self._rtsp_shared,
                )
                self.devices = with_rtsp(
                    self.devices, self.rtsp.port, on_device_hosts=self._rtsp_on_device_hosts and bool(hosts)
                )
                # Offline devices have no stream listener: their URL would point nowhere anyway.
                self.server.update_devices(self.devices)
                self._rtsp_watch = asyncio.create_task(self._watch_rtsp(mounts, hosts), name="sim-rtsp-watch")
            if self._discovery_enabled:
                self.discovery = DiscoveryResponder(
                    self.devices,
                    multicast=self._discovery_multicast,
                    unicast_limit=self._discovery_unicast_limit,
                    max_delay_s=self._discovery_max_delay_s,
                    seed=self._seed,
                )
                await self.discovery.start()
            self.credentials = fleet_credentials(self.devices, username=self._username, password=self._password)
            if self.credentials_path is not None:
                self.credentials.write(self.credentials_path)
        except BaseException:
            await self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0

    async def _watch_rtsp(self, mounts: list[str], hosts: list[str], period_s: float = 1.0) -> None:
        """Start the RTSP child again, on the same port and addresses, if it dies: gst-rtsp-server 1.22 can abort on
        a shared media that viewers join and leave at once, and a demo must not lose every stream for that."""
        while True:
            await asyncio.sleep(period_s)
            server = self.rtsp
            if server is None or server.running:
                continue
            logger.warning("the simulator's RTSP server exited (code %s); starting it again on port %d",
                        server.exit_code, server.port)
            try:
                self.rtsp = await asyncio.to_thread(
                    start_rtsp_server, mounts, server.port, self._video, device_hosts=hosts,
                    shared=self._rtsp_shared,
                )
            except Exception as exc:  # the port may still be held for a moment: try again next period
                logger.warning("the simulator's RTSP server did not start again: %s", exc)

    async def stop(self) -> None:
        if self._rtsp_watch is not None:
            self._rtsp_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rtsp_watch
            self._rtsp_watch = None
        if self.discovery is not None:
            await self.discovery.stop()
            self.discovery = None
        await self.server.stop()
        if self.rtsp is not None:
            await asyncio.to_thread(self.rtsp.stop)
            self.rtsp = None

    async def __aenter__(self) -> SimFleet:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- views -------------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.devices[0].port if self.devices else 0

    @property
    def device_urls(self) -> list[str]:
        """Reachable device-service URLs of the devices that listen (offline ones excluded)."""
        return [d.url for d in self.devices if "offline" not in d.faults]

    def device(self, index: int) -> DeviceSpec:
        return self.devices[index]

    def with_fault(self, fault: str) -> list[DeviceSpec]:
        return [d for d in self.devices if fault in d.faults]

    def healthy(self) -> list[DeviceSpec]:
        return [d for d in self.devices if not d.faults]

    def is_locked(self, index: int) -> bool:
        """Whether a `lockout` device's account is locked now (lets client tests prove they never lock one)."""
        return self.server.runtime(index).account.locked(time.time())

    def failed_logins(self, index: int) -> int:
        """Consecutive failed logins the device has counted since its last success or lock."""
        return self.server.runtime(index).account.failed

    def summary(self) -> str:
        """Human summary without passwords (credentials never printed)."""
        faults = Counter(f for d in self.devices for f in d.faults)
        auth = Counter(d.auth for d in self.devices)
        first = self.devices[0].host if self.devices else "-"
        last = self.devices[-1].host if self.devices else "-"
        lines = [
            f"{len(self.devices)} simulated ONVIF devices on {first} .. {last}, port {self.port} "
            f"({self.server.listener_count} listening) - started in {self.start_seconds:.2f} s",
            f"  device service: http://<device address>:{self.port}/onvif/device_service",
            "  auth: " + ", ".join(f"{k} {v}" for k, v in sorted(auth.items())),
            f"  media2 (H.265 via ver20/media): {sum(d.media2 for d in self.devices)}",
            "  faults: " + (", ".join(f"{k} {v}" for k, v in sorted(faults.items())) or "none"),
            f"  healthy: {len(self.healthy())}",
        ]
        if self.rtsp is not None:
            lines.append(
                f"  RTSP: {self.rtsp.url_base} and rtsp://<device address>:{self.rtsp.port} "
                f"({len(self.rtsp.mounts)} shared mounts, {self.rtsp.device_hosts} device addresses)"
            )
        if self.discovery is not None:
            lines.append(
                "  WS-Discovery: multicast 239.255.255.250:3702 on 127.0.0.1, unicast on "
                f"{len(self.discovery.unicast_hosts)} device addresses"
            )
        if self.credentials_path is not None:
            lines.append(f"  credential list: {self.credentials_path}")
        return "\n".join(lines)


def max_fleet_size() -> int:
    """Largest fleet one process can hold: one listener per device plus a reserve under the fd hard limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(hard) - FD_RESERVE if hard != resource.RLIM_INFINITY else 1 << 16


def run_fleet(
    count: int,
    *,
    seed: int = 0,
    port: int = DEFAULT_PORT,
    base_host: str = DEFAULT_BASE_HOST,
    fault_mix: Mapping[str, float] | None = None,
    faults_by_index: Mapping[int, Iterable[str]] | None = None,
    rtsp: bool = True,
    rtsp_port: int | None = None,
    video: str | Path | None = None,
    discovery: bool = True,
    credentials_path: Path | None = None,
    password: str = DEFAULT_PASSWORD,
    duration_s: float | None = None,
) -> int:
    """Blocking entry point for `vms sim`: start, print a summary, serve until Ctrl-C/SIGTERM (or `duration_s`)."""
    if count > max_fleet_size():
        raise ValueError(f"at most {max_fleet_size()} devices fit this process's file-descriptor limit")

    async def main() -> None:
        fleet = SimFleet(
            count,
            seed=seed,
            port=port,
            base_host=base_host,
            fault_mix=fault_mix,
            faults_by_index=faults_by_index,
            rtsp=rtsp,
            rtsp_port=rtsp_port,
            video=video,
            discovery=discovery,
            credentials_path=credentials_path,
            password=password,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        async with fleet:
            print(fleet.summary(), flush=True)
            print("Ctrl-C to stop.", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=duration_s)
        print(f"stopped after {fleet.server.requests_served} ONVIF requests", flush=True)

    asyncio.run(main())
    return 0
