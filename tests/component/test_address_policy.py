"""Hostile devices cannot send the prober (and its logins) anywhere: the address policy over real sockets.

Each simulated device advertises its XAddrs (WS-Discovery, GetServices, GetCapabilities) at another loopback
address where a recorder listens, written in one of the spellings a resolver accepts but a naive check does not
recognise. Nothing may arrive at a recorder, least of all an Authorization header or a UsernameToken, and each
refusal is the cause ``address_refused``, in the probe report and in the discovery run. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest

from probes.errors import Cause
from probes.onvif.auth import Credential, LoginBudget
from probes.onvif.client import interrogate_many
from probes.policy import AddressPolicy
from probes.sim import SimFleet, build_fleet
from vms.discovery.demo import covering_cidr
from vms.discovery.service import Discovery, DiscoveryRequest, discovery_runs
from vms.inventory.credentials import Cipher, add_credential


@dataclass
class Recorder:
    """A listening socket that records every connection and what was sent on it."""

    host: str
    port: int = 0
    seen: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        with contextlib.suppress(TimeoutError, OSError):
            data = await asyncio.wait_for(reader.read(65_536), 2.0)
        self.seen.append(data or b"(connected)")
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def _addresses() -> tuple[str, str]:
    """(first device address, recorder address): per process, the recorder outside the fleet's /24."""
    pid = os.getpid()
    a, b = 60 + pid % 40, (pid // 40) % 250
    return f"127.{a}.{b}.1", f"127.{a}.{b + 1}.200"


def hostile_forms(ip: str, port: int, local_port: int) -> list[str]:
    """host:port spellings of the recorders: ``ip`` (another loopback address) and 127.0.0.1."""
    addr = ipaddress.IPv4Address(ip)
    a, b, c, d = addr.packed
    n = int(addr)
    return [
        f"{n}:{port}",  # 2131296259-style: one decimal number
        f"{a}.{b}.{c * 256 + d}:{port}",  # 127.9.3-style: three parts
        f"{a}.{(b << 16) | (c << 8) | d}:{port}",  # two parts
        f"0x{n:08x}:{port}",  # hexadecimal
        f"0{a:o}.{b}.{c}.{d}:{port}",  # octal first part
        f"{ip}.:{port}",  # trailing dot
        f"[::ffff:{ip}]:{port}",  # IPv4-mapped IPv6
        f"[::ffff:{n >> 16:x}:{n & 0xFFFF:x}]:{port}",
        f"{ip}:{port}",  # plainly: still another loopback address, not the device
        f"0177.0.0.1:{local_port}",
        f"localhost.:{local_port}",
        f"localhost:{local_port}",
        f"127.1:{local_port}",
    ]


class Bed:
    def __init__(self) -> None:
        base, recorder_ip = _addresses()
        self.loop = asyncio.new_event_loop()
        self.recorders = [Recorder(recorder_ip), Recorder("127.0.0.1")]
        self.base = base
        self.fleet: SimFleet | None = None

    async def start(self) -> None:
        for r in self.recorders:
            await r.start()
        forms = hostile_forms(self.recorders[0].host, self.recorders[0].port, self.recorders[1].port)
        devices = build_fleet(
            len(forms),
            fault_mix={},
            faults_by_index={0: {"no_get_services"}},  # GetCapabilities names the services instead
            auth_by_index={i: ("wsse", "digest", "both")[i % 3] for i in range(len(forms))},
            base_host=self.base,
            port=0,
        )
        devices = [replace(d, advertise_as=form) for d, form in zip(devices, forms, strict=True)]
        self.fleet = SimFleet(devices=devices, rtsp=False, discovery=True, discovery_multicast=False)
        await self.fleet.start()

    async def stop(self) -> None:
        if self.fleet is not None:
            await self.fleet.stop()
        for r in self.recorders:
            await r.stop()

    def seen(self) -> list[bytes]:
        return [data for r in self.recorders for data in r.seen]


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    test_bed = Bed()
    ready = threading.Event()
    failed: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(test_bed.loop)
        try:
            test_bed.loop.run_until_complete(test_bed.start())
        except BaseException as exc:
            failed.append(exc)
        ready.set()
        test_bed.loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(60) and not failed, failed
    try:
        yield test_bed
    finally:
        asyncio.run_coroutine_threadsafe(test_bed.stop(), test_bed.loop).result(30)
        test_bed.loop.call_soon_threadsafe(test_bed.loop.stop)
        thread.join(10)


def _fleet(bed: Bed) -> SimFleet:
    assert bed.fleet is not None
    return bed.fleet


def test_the_recorders_are_reachable_by_every_form(bed):
    """The forms really lead to the recorders (so silence below means refusal, not a typo)."""
    import socket

    for form in hostile_forms(bed.recorders[0].host, bed.recorders[0].port, bed.recorders[1].port):
        host, _, port = form.rpartition(":")
        if host.endswith("."):
            continue  # this machine's resolver (no DNS) does not read a trailing dot; one with DNS does
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
        reached = {ipaddress.ip_address(i[4][0]) for i in infos}
        mapped = {a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a for a in reached}
        targets = {ipaddress.ip_address(r.host) for r in bed.recorders}
        assert mapped & targets, (form, reached)


def test_probes_send_nothing_to_refused_service_addresses(bed):
    fleet = _fleet(bed)
    creds = [Credential(fleet.credentials.default_username, fleet.credentials.default_password)]
    policy = AddressPolicy.build([covering_cidr(d.host for d in fleet.devices)])
    for rules in (policy, None):  # the sweep's policy, and the default (the device's own address only)
        reports = asyncio.run(
            interrogate_many(
                [d.url for d in fleet.devices],
                credentials_for=lambda _t: creds,
                budget=LoginBudget(),
                timeout=5.0,
                deadline=30.0,
                policy=rules,
            )
        )
        for device, report in zip(fleet.devices, reports, strict=True):
            assert report.ok and report.answered, (device.advertise_as, report.fatal)
            step = "GetCapabilities" if "no_get_services" in device.faults else "GetServices"
            refused = [f for f in report.failures if f.cause is Cause.ADDRESS_REFUSED]
            assert refused and {f.step for f in refused} == {step}, (device.advertise_as, report.failures)
            assert report.services == {} and report.profiles == ()
            assert report.services_original  # what the device said is kept
    assert bed.seen() == []


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


def test_discovery_records_refusals_per_device_and_per_run(inventory, bed):
    fleet = _fleet(bed)
    _with_login(inventory, fleet)
    hosts = [d.host for d in fleet.devices]

    # WS-Discovery: every XAddr points at a recorder, so no device is interrogated at all.
    found = asyncio.run(Discovery(inventory).run(DiscoveryRequest(unicast=hosts, probe_timeout=2.0)))
    assert (found.found, found.answered, found.registered) == (len(hosts), 0, 0)
    assert found.by_cause == {"address_refused": len(hosts)}
    assert {f["host"] for f in found.failures} == set(hosts)
    assert all(f["step"] == "WS-Discovery" for f in found.failures)

    # Directly: the devices answer and are registered; each refused service address is on record.
    direct = asyncio.run(Discovery(inventory).run(DiscoveryRequest(targets=[d.url for d in fleet.devices])))
    assert (direct.registered, direct.answered, direct.failed) == (len(hosts), len(hosts), 0)
    assert direct.step_failures["GetServices"]["address_refused"] == len(hosts) - 1
    assert direct.step_failures["GetCapabilities"]["address_refused"] == 1

    first, second = discovery_runs(inventory)[1], discovery_runs(inventory)[0]
    assert first["counts"]["by_cause"] == {"address_refused": len(hosts)}
    assert second["counts"]["step_failures"]["GetServices"]["address_refused"] == len(hosts) - 1
    refused_hosts = {f["host"] for f in second["step_failures"] if f["cause"] == "address_refused"}
    assert refused_hosts == set(hosts)
    assert bed.seen() == []  # not one connection, so no Authorization header and no UsernameToken either
