"""The keepalive timeout under SIPp, over UDP and TCP, against vms itself (GbService: the SIP server with vms's
registry; keepalive interval 1 s, count 2): an NVR played by SIPp (tests/data/sipp/register_keepalives.xml)
registers with digest, answers the Catalog query in two GB2312 MESSAGEs and keeps alive for a while, then stops;
within a bounded time the device and its channels are OFF with health events of stage ``keepalive``, cause
``keepalive_timeout``. A keepalive from another SIPp run (another source port, a new TCP connection) brings them back
ON. sipp missing: skipped locally, failed on CI. SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from tests.gb28181 import PASSWORD, device_csv, run_sipp, sipp_binary, until
from vms.gb28181.devices import list_devices
from vms.gb28181.service import GbService
from vms.inventory.service import Inventory
from vms.store.models import cameras, health_events

DEVICE = "37131100001180000001"
CHANNELS = ("37131100001320000001", "37131100001320000002", "37131100001320000003")  # catalog_answer.xml's


def _until(check: Callable[[], object], timeout: float = 10.0) -> object:
    return until(check, timeout)


def _events(inv: Inventory, cause: str) -> list[tuple[str, str, str | None]]:
    e, c = health_events.c, cameras.c
    with inv.engine.connect() as conn:
        rows = conn.execute(
            select(c.device_id, e.event, e.stage).join(cameras, c.id == e.camera_id).where(e.cause == cause)
        )
        return sorted((d, ev, stage) for d, ev, stage in rows)


def _device(inv: Inventory) -> dict:
    [row] = [d for d in list_devices(inv) if d["device_id"] == DEVICE]
    return row


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_device_stops_keeping_alive_goes_off_and_comes_back(inventory, transport: str, tmp_path: Path):
    sipp_binary()  # skip (or fail on CI) before starting anything
    settings = inventory.settings.model_copy(
        update={
            "gb28181_password": SecretStr(PASSWORD),
            "gb28181_allow": ["3713110000"],
            "gb28181_keepalive_interval_s": 1.0,
            "gb28181_keepalive_count": 2,  # offline 2 s after the last keepalive
            "gb28181_catalog_interval_s": 0.0,
        }
    )
    inv = Inventory(settings, engine=inventory.engine)
    service = GbService(inv, host="127.0.0.1", udp_port=0, tcp_port=0, catalog_quiet_s=1.0, subscribe=False)
    service.start()
    try:
        port = (service.udp_port if transport == "udp" else service.tcp_port) or 0
        csv = device_csv(tmp_path / "d.csv", [DEVICE])
        run = run_sipp(port, "register_keepalives.xml", csv, transport, ooc="catalog_answer.xml", cwd=tmp_path)
        assert run.returncode == 0, run.output
        stopped = time.monotonic()  # the last keepalive was at most 0.6 s before

        # its catalog came back while it kept alive: three channels, ON
        on = [(c, "ON", "catalog") for c in CHANNELS]
        assert _until(lambda: _events(inv, "catalog_status") == on), _events(inv, "catalog_status")
        row = _device(inv)
        assert (row["transport"], row["channels"], row["catalog_items"]) == (transport, 3, 3)
        assert row["last_seen"] > row["registered_at"]  # the keepalives reached the registry

        # silence: 2 x 1 s after the last keepalive the device and its channels go OFF
        off = [(c, "OFF", "keepalive") for c in CHANNELS]
        assert _until(lambda: _events(inv, "keepalive_timeout") == off), _events(inv, "keepalive_timeout")
        took = time.monotonic() - stopped
        assert _until(lambda: not _device(inv)["online"])
        with inv.engine.connect() as conn:
            statuses = dict(conn.execute(select(cameras.c.device_id, cameras.c.status)).all())
        assert {c: statuses[c] for c in CHANNELS} == dict.fromkeys(CHANNELS, "OFF")
        print(f"{transport}: OFF {took:.1f} s after SIPp stopped keeping alive (deadline 2 s after the last one)")

        # a keepalive from another SIPp run (another port; over TCP a new connection) brings them back
        run = run_sipp(port, "keepalive.xml", csv, transport, cwd=tmp_path)
        assert run.returncode == 0, run.output
        back = [(c, "ON", "keepalive") for c in CHANNELS]
        assert _until(lambda: _events(inv, "keepalive") == back), _events(inv, "keepalive")
        # (no status read here: 2 s after this keepalive they go OFF again)
    finally:
        service.stop()
