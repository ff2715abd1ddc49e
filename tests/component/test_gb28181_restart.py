"""A restart of vms (a new GbService on the same database) takes back the registrations its registry kept: a device
that registered before keeps alive afterwards without registering again and is heard (200, last_seen moves, still
online), over UDP and TCP (a new connection); a device that unregistered is not (403). Raw SIP devices on
127.0.0.1, port 0. SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tests.gb28181 import PASSWORD, RawDevice, wait_for
from vms.gb28181.devices import device
from vms.gb28181.service import GbService
from vms.inventory.service import Inventory

KEPT = "37131100001320000051"
GONE = "37131100001320000052"


def _service(inventory: Inventory) -> GbService:
    settings = inventory.settings.model_copy(
        update={"gb28181_password": SecretStr(PASSWORD), "gb28181_allow": ["3713110000"],
                "gb28181_catalog_interval_s": 0.0}
    )
    service = GbService(Inventory(settings, engine=inventory.engine), host="127.0.0.1", udp_port=0, tcp_port=0,
                        subscribe=False)
    service.server.query_catalog_on_register = False
    return service


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_registrations_survive_a_restart(inventory, transport: str) -> None:
    first = _service(inventory)
    first.start()
    try:
        port = (first.udp_port if transport == "udp" else first.tcp_port) or 0
        for device_id, expires in ((KEPT, 3600), (GONE, 3600), (GONE, 0)):
            dev = RawDevice(transport, port, device_id)
            try:
                assert dev.register(expires=expires).status == 200
            finally:
                dev.close()
    finally:
        first.stop()  # the registry rows are written on the way out
    inv = first.inventory
    before = device(inv, KEPT)
    assert before["online"] and not device(inv, GONE)["online"]

    second = _service(inventory)
    second.start()
    try:
        assert second.restored == 1
        port = (second.udp_port if transport == "udp" else second.tcp_port) or 0
        kept = RawDevice(transport, port, KEPT)
        gone = RawDevice(transport, port, GONE)
        try:
            kept.send(kept.keepalive(9))
            assert kept.recv().status == 200
            gone.send(gone.keepalive(9))
            assert gone.recv().status == 403
        finally:
            kept.close()
            gone.close()
        assert wait_for(lambda: device(inv, KEPT)["last_seen"] > before["last_seen"], timeout=10)
        after = device(inv, KEPT)
        assert after["online"] and (after["transport"], after["port"]) == (transport, kept.port)
    finally:
        second.stop()
