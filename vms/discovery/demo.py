"""The simulated fleet as a running demo: used by `vms run` when no camera is configured."""

from __future__ import annotations

import asyncio
import csv
import ipaddress
import logging
import random
import threading
from collections.abc import Iterable
from importlib.resources import as_file
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probes.sim import SimFleet

if TYPE_CHECKING:
    from vms.inventory.service import Inventory

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
        return covering_cidr(d.host for d in self.fleet.devices)


def covering_cidr(hosts: Iterable[str]) -> str:
    """The smallest IPv4 range holding every address (what a discovery scan of a fleet covers)."""
    values = sorted(int(ipaddress.IPv4Address(h)) for h in hosts)
    lo, hi = values[0], values[-1]
    prefix = 32
    while prefix > 0 and (lo >> (32 - prefix)) != (hi >> (32 - prefix)):
        prefix -= 1
    return str(ipaddress.ip_network(f"{ipaddress.IPv4Address(lo)}/{prefix}", strict=False))


DEMO_ROADS = ("沂河路", "通达路", "双月湖路", "罗七路", "湖北路", "银雀山路", "罗西街", "盛庄路", "傅庄路", "高都路")


def write_demo_ledger(fleet: SimFleet, path: Path, *, seed: int = 11) -> int:
    """A department ledger for the demo fleet: GB IDs, place names and positions inside Luozhuang, the devices'
    addresses (so discovery merges with it), and a few of the mistakes real ledgers have."""
    from importlib.resources import files

    from shapely import wkb
    from shapely.geometry import Point

    from vms.geo.regions import read_regions

    data = files("vms") / "data" / "luozhuang_gcj02.geojson"
    with as_file(data) as boundary_path:
        boundary = wkb.loads(read_regions(boundary_path)[0].geometry_wkb or b"")
    rnd = random.Random(seed)
    minx, miny, maxx, maxy = boundary.bounds
    rows = []
    for i, device in enumerate(fleet.devices, start=1):
        while True:
            lon, lat = rnd.uniform(minx, maxx), rnd.uniform(miny, maxy)
            if boundary.contains(Point(lon, lat)):
                break
        road = DEMO_ROADS[i % len(DEMO_ROADS)]
        name = f"罗庄区{road}{i}号路口"
        if i % 17 == 0:
            name = f"IPCamera {i:02d}"  # a vendor default left in the ledger
        coords = ("", "") if i % 23 == 0 else (f"{lon:.6f}", f"{lat:.6f}")
        rows.append(
            [
                f"37131100001326{i:06d}",
                name,
                *coords,
                "371311",
                rnd.choice(["球机", "枪机", "半球"]),
                device.host,
                str(device.port),
                rnd.choice(["1", "2", "3"]),
                "2024-05-01",
                "0539-8221234",
                rnd.choice(["30", "90"]),
            ]
        )
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "设备编码",
                "设备名称",
                "经度",
                "纬度",
                "行政区域",
                "摄像机类型",
                "IP地址",
                "端口",
                "点位类型",
                "安装时间",
                "联系方式",
                "录像保存天数",
            ]
        )
        w.writerows(rows)
    return len(rows)


def seed_demo(inventory: Inventory, fleet: SimFleet) -> None:
    """Regions of Luozhuang and the demo ledger, so the demo shows coverage, merge and quality."""
    from importlib.resources import files

    data = files("vms") / "data"
    for name in ("luozhuang_gcj02.geojson", "luozhuang_townships.csv"):
        with as_file(data / name) as path:
            inventory.import_regions(path, actor="vms run")
    ledger = inventory.settings.data_dir / "demo_ledger.csv"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    write_demo_ledger(fleet, ledger)
    inventory.import_file(ledger, source="ledger:demo-police", actor="vms run")
