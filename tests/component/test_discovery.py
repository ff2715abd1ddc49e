"""Discovery, interrogation and registration against a simulated fleet of 500 devices over real sockets.

Multicast WS-Discovery goes out with IP_MULTICAST_IF 127.0.0.1 only; the range scan covers the fleet's own
127.x addresses only. Every wait is bounded by the probes' timeouts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Iterator

import pytest

from probes.sim import SimFleet, covering_fault_layout
from probes.sim.devices import FAULTS
from tests.fleets import fleet_in_thread
from vms.discovery.demo import covering_cidr
from vms.discovery.service import Discovery, DiscoveryRequest
from vms.inventory.credentials import Cipher, add_credential
from vms.store import repository as repo

COUNT = 500
UNREACHABLE = {"hang", "offline"}
LOGIN_IMPOSSIBLE = {"wrong_password"}


def _base_host() -> str:
    pid = os.getpid()  # per process: parallel runs on one machine never share addresses
    # third octet a multiple of 4: the 500 devices (about two octets' worth) then sit inside one /22
    return f"127.{150 + pid % 40}.{4 * ((pid // 40) % 60)}.1"


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    layout = covering_fault_layout(healthy=0)  # one device of each fault first, then the default mix
    sim = SimFleet(
        COUNT,
        seed=3,
        faults_by_index=layout,
        base_host=_base_host(),
        port=0,
        rtsp=False,
        slow_delay_s=(0.2, 0.5),
        lock_period_s=600.0,
    )
    with fleet_in_thread(sim) as running:
        yield running


def fleet_cidr(sim: SimFleet) -> str:
    net = ipaddress.ip_network(covering_cidr(d.host for d in sim.devices))
    assert net.subnet_of(ipaddress.ip_network("127.0.0.0/8")) and net.num_addresses <= 1024
    return str(net)


def with_credentials(inventory, sim: SimFleet) -> None:
    cipher = Cipher(inventory.settings.fernet_key())
    with inventory.session() as s:
        add_credential(
            s,
            cipher,
            name="estate",
            username=sim.credentials.default_username,
            password=sim.credentials.default_password,
            default=True,
            actor="test",
        )


def expected_hosts(sim: SimFleet, *, reachable_by_scan: bool) -> set[str]:
    skip = UNREACHABLE | LOGIN_IMPOSSIBLE
    return {d.host for d in sim.devices if not (d.faults & skip)}


def test_fleet_covers_every_fault(fleet):
    seen = set().union(*(d.faults for d in fleet.devices))
    assert seen == set(FAULTS)


def test_scan_and_ws_discovery_register_exactly_the_usable_devices(inventory, fleet):
    with_credentials(inventory, fleet)
    req = DiscoveryRequest(
        ranges=[fleet_cidr(fleet)],
        ports=[fleet.port],
        interfaces=["127.0.0.1"],
        call_timeout=2.0,
        device_deadline=15.0,
        probe_timeout=2.0,
    )
    outcome = asyncio.run(Discovery(inventory).run(req))

    _, rows = inventory.list_cameras(repo.CameraFilter(), limit=None)
    registered = {r["ip_address"] for r in rows}
    assert registered == expected_hosts(fleet, reachable_by_scan=True)
    assert outcome.registered == len(registered) == outcome.new

    by_host = {d.host: d for d in fleet.devices}
    for row in rows:
        spec = by_host[row["ip_address"]]
        assert row["mac"] == spec.mac.lower()
        assert row["serial_number"] == spec.serial
        assert row["port"] == fleet.port
        assert row["endpoint_ref"] in (None, spec.endpoint_ref)
        if not spec.faults & {"malformed_xml", "invalid_utf8"}:
            assert (row["manufacturer"], row["model"]) == (spec.manufacturer, spec.model)
        # private, NAT and 0.0.0.0 addresses are rewritten to the address that answered
        assert row["stream_uri"] and f"//{spec.host}:" in row["stream_uri"]
        assert row["device_service_url"].startswith(f"http://{spec.host}:{fleet.port}/")
        assert row["auth_method"] in ("wsse", "digest")
        assert abs(row["clock_offset_s"] - spec.clock_offset_s) < 3  # clock_skew devices: hours
        assert row["probed_at"] is not None
        assert row["credential_id"] is not None
        assert row["status"] == "ON"

    causes = {(f["host"], f["cause"]) for f in outcome.failures}
    for d in fleet.devices:
        if "wrong_password" in d.faults:
            assert (d.host, "auth") in causes
        if "hang" in d.faults:  # found by WS-Discovery (it still answers UDP), then times out
            assert (d.host, "timeout") in causes
    assert all(f["host"] not in registered for f in outcome.failures)


def test_repeated_sweeps_never_lock_an_account_and_change_nothing(inventory, fleet):
    with_credentials(inventory, fleet)
    targets = [f"{d.host}:{fleet.port}" for d in fleet.devices if d.faults & {"lockout", "wrong_password", "offline"}]
    req = DiscoveryRequest(targets=targets, call_timeout=2.0, device_deadline=10.0)
    before = {i: fleet.failed_logins(i) for i in range(len(fleet.devices))}
    outcomes = [asyncio.run(Discovery(inventory).run(req)) for _ in range(3)]
    for i, d in enumerate(fleet.devices):
        assert not fleet.is_locked(i), d.host
        if "wrong_password" in d.faults:  # the persisted budget allows 2 failed logins per device and window
            assert fleet.failed_logins(i) - before[i] <= 2
    first, *later = outcomes
    assert first.new > 0, first
    assert [(o.new, o.updated, o.unchanged) for o in later] == [(0, 0, first.registered)] * 2
    offline = {d.host for d in fleet.devices if "offline" in d.faults}
    assert {f["host"] for f in first.failures if f["cause"] == "refused"} == offline
    runs = inventory_runs(inventory)
    assert len(runs) == 3 and runs[0]["counts"]["unchanged"] == first.registered


def inventory_runs(inventory):
    from vms.discovery.service import discovery_runs

    return discovery_runs(inventory)
