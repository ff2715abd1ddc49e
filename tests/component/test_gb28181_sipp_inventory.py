"""SIPp devices (tests/data/sipp/) registering to vms itself (GbService: the SIP server with vms's registry) over
UDP and TCP: digest registration with the domain password from the settings, the Catalog answered in two GB2312
MESSAGEs merged into the inventory as the source gb28181:<device id>. sipp missing: skipped locally, failed on CI."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from tests.gb28181 import PASSWORD, device_csv, run_sipp, sipp_binary
from vms.gb28181.devices import list_devices
from vms.gb28181.service import GbService
from vms.inventory.service import Inventory
from vms.store.models import Observation, Source, cameras

DEVICE = "37131100001180000001"
NAMES = {
    "37131100001320000001": "罗庄区政府门口",
    "37131100001320000002": "通达路与沂河路交叉口",
    "37131100001320000003": "罗庄区公安分局东门",
}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_device_registers_and_its_catalog_lands_in_the_inventory(inventory, transport: str, tmp_path: Path):
    sipp_binary()  # skip (or fail on CI) before starting anything
    settings = inventory.settings.model_copy(
        update={"gb28181_password": SecretStr(PASSWORD), "gb28181_allow": ["3713110000"]}
    )
    inv = Inventory(settings, engine=inventory.engine)
    service = GbService(inv, host="127.0.0.1", udp_port=0, tcp_port=0, catalog_quiet_s=1.0, subscribe=False)
    service.start()
    try:
        port = service.udp_port if transport == "udp" else service.tcp_port
        csv = device_csv(tmp_path / "d.csv", [DEVICE])
        run = run_sipp(port or 0, "register_wait.xml", csv, transport, ooc="catalog_answer.xml", cwd=tmp_path)
        assert run.returncode == 0, run.output

        def merged() -> dict[str, str]:
            with inv.engine.connect() as conn:
                rows = conn.execute(
                    select(cameras.c.device_id, cameras.c.name)
                    .join(Observation, Observation.camera_id == cameras.c.id)
                    .join(Source, Source.id == Observation.source_id)
                    .where(Source.name == f"gb28181:{DEVICE}")
                )
                return dict(rows.all())

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(merged()) < 3:
            time.sleep(0.1)
        assert merged() == NAMES
    finally:
        service.stop()
    [device] = list_devices(inv)
    assert (device["device_id"], device["transport"], device["channels"]) == (DEVICE, transport, 3)
    assert device["catalog_complete"] and device["catalog_items"] == 3


def test_a_thousand_sipp_devices_register_and_keep_alive_into_the_registry(inventory, tmp_path: Path):
    """No loss through vms: every device's registration and keepalive reach the registry table, online."""
    sipp_binary()
    settings = inventory.settings.model_copy(
        update={"gb28181_password": SecretStr(PASSWORD), "gb28181_allow": ["3713110000"]}
    )
    inv = Inventory(settings, engine=inventory.engine)
    ids = [f"3713110000132{i:07d}" for i in range(1, 1001)]
    service = GbService(inv, host="127.0.0.1", udp_port=0, tcp_port=None, subscribe=False)
    service.server.query_catalog_on_register = False
    service.start()
    try:
        started = time.monotonic()
        run = run_sipp(
            service.udp_port or 0,
            "register_keepalive.xml",
            device_csv(tmp_path / "d.csv", ids),
            "udp",
            calls=1000,
            rate=500,
            limit=300,
            timeout_s=30,
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.output

        def stored() -> list[dict]:
            return [d for d in list_devices(inv, online=True) if d["last_seen"] != d["registered_at"]]

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(stored()) < 1000:
            time.sleep(0.2)
        print(f"1,000 devices registered and kept alive into the registry in {time.monotonic() - started:.1f} s")
    finally:
        service.stop()
    assert sorted(d["device_id"] for d in stored()) == ids
