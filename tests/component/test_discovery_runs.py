"""What a discovery run records: facts one method cannot see are kept, repeats are unchanged, failed optional
steps are counted by step and cause. A small simulated fleet over real sockets on 127.x, unicast WS-Discovery
only (no multicast, so fleets of other processes on this machine never answer)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from probes.sim import SimFleet, build_fleet
from vms.discovery.service import Discovery, DiscoveryRequest, discovery_runs
from vms.inventory.credentials import Cipher, add_credential
from vms.store import repository as repo

FAULTS = {1: {"clock_skew"}, 2: {"private_addrs"}, 3: {"clock_skew"}, 5: {"malformed_xml"}}
COUNT = 10
HANGS, HUGE = 8, 9  # these two name their services at a stub elsewhere: one never answers, one answers 3 MB


def _base_host() -> str:
    pid = os.getpid()  # per process: parallel runs never share addresses
    return f"127.{20 + pid % 40}.{(pid // 40) % 250}.1"


def _stub_network() -> str:
    first = _base_host().rsplit(".", 2)
    return f"{first[0]}.{int(first[1]) + 1}.0/24"  # the next /24: outside the fleet's ranges


async def _stub(host: str, huge: bool) -> tuple[asyncio.Server, int]:
    """A service address elsewhere: it reads the request, then never answers, or announces a 3 MB reply."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65_536)
        if huge:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\nContent-Type: application/soap+xml\r\n\r\n")
            await writer.drain()
        else:
            await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(serve, host, 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    devices = build_fleet(COUNT, fault_mix={}, faults_by_index=FAULTS, base_host=_base_host(), port=0, seed=5)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stubs: list[asyncio.Server] = []
    holder: list[SimFleet] = []

    async def start() -> None:
        stub_ip = _stub_network().replace("0/24", "10")
        for index, huge in ((HANGS, False), (HUGE, True)):
            server, port = await _stub(stub_ip, huge)
            stubs.append(server)
            devices[index] = replace(devices[index], advertise_as=f"{stub_ip}:{port}")
        sim = SimFleet(devices=devices, rtsp=False, discovery=True, discovery_multicast=False)
        await sim.start()
        holder.append(sim)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(60) and holder, "fleet did not start"
    sim = holder[0]
    try:
        yield sim
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(30)
        for server in stubs:
            server.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _with_login(inventory, fleet: SimFleet) -> None:
    with inventory.session() as s:
        add_credential(
            s,
            Cipher(inventory.settings.fernet_key()),
            name="estate",
            username=fleet.credentials.default_username,
            password=fleet.credentials.default_password,
            default=True,
            actor="test",
        )


def _endpoint_refs(inventory) -> dict[str, str | None]:
    _, rows = inventory.list_cameras(repo.CameraFilter(), limit=None)
    return {r["ip_address"]: r["endpoint_ref"] for r in rows}


def test_switching_methods_keeps_what_each_saw_and_changes_nothing(inventory, fleet):
    _with_login(inventory, fleet)
    plain = [d for d in fleet.devices if d.index not in (HANGS, HUGE)]
    hosts = [d.host for d in plain]
    by_ws_discovery = DiscoveryRequest(unicast=hosts, probe_timeout=2.0, call_timeout=5.0)
    by_range = DiscoveryRequest(ranges=[f"{h}/32" for h in hosts], ports=[fleet.port], call_timeout=5.0)
    n = len(plain)

    first = asyncio.run(Discovery(inventory).run(by_ws_discovery))
    assert (first.registered, first.new) == (n, n), first
    expected = {d.host: d.endpoint_ref for d in plain}
    assert _endpoint_refs(inventory) == expected

    second = asyncio.run(Discovery(inventory).run(by_range))  # a range scan cannot see endpoint references
    assert (second.registered, second.new, second.updated, second.unchanged) == (n, 0, 0, n), second
    assert _endpoint_refs(inventory) == expected

    third = asyncio.run(Discovery(inventory).run(by_ws_discovery))
    assert (third.registered, third.new, third.updated, third.unchanged) == (n, 0, 0, n), third
    assert _endpoint_refs(inventory) == expected
    counts = [r["counts"] for r in discovery_runs(inventory)]
    assert [c["updated"] for c in counts] == [0, 0, 0]


def test_failed_optional_steps_are_counted_by_step_and_cause(inventory, fleet):
    _with_login(inventory, fleet)
    inventory.settings.allowed_networks = [_stub_network()]  # VMS_ALLOWED_NETWORKS: the stubs may be called
    outcome = asyncio.run(
        Discovery(inventory).run(
            DiscoveryRequest(targets=[d.url for d in fleet.devices], call_timeout=1.5, device_deadline=20.0)
        )
    )
    assert (outcome.registered, outcome.failed, outcome.answered) == (COUNT, 0, COUNT)
    skewed = [d.host for d in fleet.devices if "clock_skew" in d.faults]
    # Registered anyway, and not "failed 0": each failed step is on record, counted per device.
    assert outcome.step_failures == {
        "GetProfiles": {"timeout": 1, "protocol": 1},  # a reply that never came, one over the size cap
        "GetSystemDateAndTime": {"clock_skew": len(skewed)},
    }
    (run,) = discovery_runs(inventory)
    assert run["counts"]["step_failures"] == outcome.step_failures
    items = {(f["host"], f["step"], f["cause"]) for f in run["step_failures"]}
    assert items == {
        (fleet.devices[HANGS].host, "GetProfiles", "timeout"),
        (fleet.devices[HUGE].host, "GetProfiles", "protocol"),
        *((h, "GetSystemDateAndTime", "clock_skew") for h in skewed),
    }
    huge = next(f for f in run["step_failures"] if f["host"] == fleet.devices[HUGE].host)
    assert "exceeds" in huge["detail"]


def test_answered_counts_only_devices_that_replied(inventory, fleet):
    _with_login(inventory, fleet)
    live = fleet.devices[4]
    nobody = f"{fleet.devices[-1].host.rsplit('.', 1)[0]}.250:{fleet.port}"  # nothing listens there
    outcome = asyncio.run(
        Discovery(inventory).run(DiscoveryRequest(targets=[live.url, nobody], call_timeout=5.0))
    )
    assert (outcome.found, outcome.answered, outcome.registered, outcome.failed) == (2, 1, 1, 1)
    assert outcome.by_cause == {"refused": 1}
