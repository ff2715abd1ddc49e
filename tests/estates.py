"""A registered estate for health-sweep tests: the fleet's login, every answering device discovered, one offline
device as an earlier discovery left it, and a ledger-only camera (no ONVIF address: not checkable)."""

from __future__ import annotations

import asyncio
from typing import Any

from probes.sim import SimFleet
from vms.catalog.domain import Observation, SourceKind
from vms.discovery.service import Discovery, DiscoveryRequest
from vms.inventory.credentials import Cipher, add_credential
from vms.store import repository as repo


def register_estate(inv: Any, fleet: SimFleet, offline: int) -> dict[int, int]:
    """Returns device index -> camera id."""
    with inv.session() as s:
        add_credential(s, Cipher(inv.settings.fernet_key()), name="estate", username=fleet.credentials.default_username,
                       password=fleet.credentials.default_password, default=True, actor="test")
    online = [d for d in fleet.devices if "offline" not in d.faults]
    outcome = asyncio.run(Discovery(inv).run(DiscoveryRequest(targets=[d.url for d in online], call_timeout=3.0)))
    assert outcome.registered == len(online), outcome.failures
    off = fleet.device(offline)
    inv.ingest_observations(
        [Observation("onvif", SourceKind.ONVIF, f"host_port:{off.host}:{off.port}",
                     {"ip_address": off.host, "port": off.port, "device_service_url": off.url, "mac": off.mac,
                      "stream_uri": f"rtsp://{off.host}:554/cam{off.index}"})],
        source="onvif", kind=SourceKind.ONVIF, snapshot=False, actor="test",
    )
    inv.ingest_observations(
        [Observation("ledger:police", SourceKind.LEDGER, "local:L-1",
                     {"name": "Gate camera", "local_id": "L-1", "ip_address": "127.0.0.77"})],
        source="ledger:police", kind=SourceKind.LEDGER, snapshot=False, actor="test",
    )
    with inv.session(write=False) as s:
        return {d.index: repo.camera_ids_by(s, "ip_address", d.host)[0] for d in fleet.devices}
