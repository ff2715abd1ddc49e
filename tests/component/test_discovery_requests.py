"""Every request a discovery sends, counted per device and operation by the real simulator: a request that an
earlier answer of the device makes needless (an anonymous try that only earns a 401 from a device whose GetServices
said it takes WS-UsernameToken, GetCapabilities after GetServices answered, a second GetProfiles of the same
service, a snapshot URI nobody keeps...) fails the test.

Real sockets on 127.x only: a range scan and the interrogations of vms.discovery.sweep (no database); every wait is
bounded by the probes' timeouts.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from probes.onvif.auth import Credential, LoginBudget
from probes.onvif.parse import MEDIA2_NS, MEDIA_NS, parse_service_capabilities
from probes.onvif.soap import parse_reply
from probes.policy import AddressPolicy
from probes.sim import SimFleet, build_fleet
from probes.sim.devices import DeviceSpec
from tests.services import free_port
from vms.discovery.sweep import DiscoveryRequest, sweep

_OPERATION = re.compile(rb"<(?:[\w.-]+:)?Body[^>]*>\s*<(?:[\w.-]+:)?(\w+)")
_KINDS = [(auth, media2) for auth in ("both", "wsse", "digest") for media2 in (False, True)]

Key = tuple[str, str, str, int]  # service path's last part, operation, "signed" or "anonymous", HTTP status


def _base_host() -> str:
    pid = os.getpid()  # per process: parallel runs never share addresses
    return f"127.{200 + pid % 40}.{4 * ((pid // 40) % 60)}.1"


@pytest_asyncio.fixture
async def counted() -> AsyncIterator[tuple[SimFleet, dict[str, Counter[Key]]]]:
    """Two healthy devices of each login scheme, with and without Media2, all on one port (a range scan finds
    them); each device's requests counted by operation, login and status."""
    devices = build_fleet(
        len(_KINDS) * 2,
        fault_mix={},
        auth_by_index={i: _KINDS[i % len(_KINDS)][0] for i in range(len(_KINDS) * 2)},
        media2_by_index={i: _KINDS[i % len(_KINDS)][1] for i in range(len(_KINDS) * 2)},
        base_host=_base_host(),
        port=free_port(),
    )
    sim = SimFleet(devices=devices, rtsp=False, discovery=False)
    counts: dict[str, Counter[Key]] = {d.host: Counter() for d in devices}
    handle = sim.server.handle

    def counting(rt: Any, method: str, target: str, headers: dict[str, str], body: bytes) -> Any:
        response = handle(rt, method, target, headers, body)
        match = _OPERATION.search(body)
        operation = match.group(1).decode() if match else method
        signed = "signed" if b"UsernameToken" in body or "authorization" in headers else "anonymous"
        counts[rt.spec.host][(target.rsplit("/", 1)[-1], operation, signed, response.status)] += 1
        return response

    sim.server.handle = counting  # type: ignore[method-assign]
    async with sim:
        yield sim, counts


def _expected(device: DeviceSpec) -> Counter[Key]:
    """The requests a range scan plus an inventory's interrogation need, none more."""
    expected: Counter[Key] = Counter()
    expected["device_service", "GetSystemDateAndTime", "anonymous", 200] = 1  # the scan's; its reading is reused
    expected["device_service", "GetServices", "anonymous", 200] = 1  # no login needed; says which login to send
    if device.auth == "digest":
        # The only way to a digest nonce: an anonymous call answered by a 401 challenge.
        expected["device_service", "GetDeviceInformation", "anonymous", 401] = 1
    for operation in ("GetDeviceInformation", "GetScopes", "GetNetworkInterfaces"):
        expected["device_service", operation, "signed", 200] = 1
    expected["media_service", "GetProfiles", "signed", 200] = 1
    expected["media_service", "GetStreamUri", "signed", 200] = len(device.media1_profiles)
    if device.media2:  # H.265 only through Media2: its profiles, the new one's stream, the main snapshot
        expected["media2_service", "GetProfiles", "signed", 200] = 1
        new = [p for p in device.profiles if p not in device.media1_profiles]
        expected["media2_service", "GetStreamUri", "signed", 200] = len(new)
        expected["media2_service", "GetSnapshotUri", "signed", 200] = 1
    else:
        expected["media_service", "GetSnapshotUri", "signed", 200] = 1  # the main profile's only
    return expected


async def test_a_range_scan_sends_no_request_an_earlier_answer_makes_needless(
    counted: tuple[SimFleet, dict[str, Counter[Key]]],
) -> None:
    sim, counts = counted
    hosts = [d.host for d in sim.devices]
    first, last = hosts[0].rsplit(".", 1)[0], hosts[-1].rsplit(".", 1)[0]
    assert first == last  # one /24 holds them all
    req = DiscoveryRequest(ranges=[f"{first}.0/24"], ports=[sim.devices[0].port], workers=1)
    login = [Credential(sim.credentials.default_username, sim.credentials.default_password)]
    reports, _found = await asyncio.wait_for(
        sweep(req, AddressPolicy(), lambda _t: login, LoginBudget(), {}), timeout=60
    )
    assert sorted(r.address for r in reports) == sorted(hosts)
    assert all(r.ok and r.failures == () for r in reports), [r.failures for r in reports]
    by_host = {r.address: r for r in reports}
    for device in sim.devices:
        assert dict(counts[device.host]) == dict(_expected(device)), (device.auth, device.media2)
        assert by_host[device.host].auth_method == ("digest" if device.auth == "digest" else "wsse")
        assert sum(p.snapshot_uri is not None for p in by_host[device.host].profiles) == 1


def test_get_services_capabilities_say_which_login_and_whether_snapshots() -> None:
    reply = (
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        b'xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><s:Body><tds:GetServicesResponse>'
        b"<tds:Service><tds:Namespace>http://www.onvif.org/ver10/device/wsdl</tds:Namespace>"
        b"<tds:XAddr>http://192.0.2.7/onvif/device_service</tds:XAddr><tds:Capabilities><tds:Capabilities>"
        b'<tds:Security UsernameToken="false" HttpDigest="true"/></tds:Capabilities></tds:Capabilities>'
        b"</tds:Service>"
        b"<tds:Service><tds:Namespace>http://www.onvif.org/ver10/media/wsdl</tds:Namespace>"
        b"<tds:XAddr>http://192.0.2.7/onvif/media_service</tds:XAddr><tds:Capabilities>"
        b'<trt:Capabilities xmlns:trt="http://www.onvif.org/ver10/media/wsdl" SnapshotUri="false"/>'
        b"</tds:Capabilities></tds:Service>"
        b"<tds:Service><tds:Namespace>http://www.onvif.org/ver20/media/wsdl</tds:Namespace>"
        b"<tds:XAddr>http://192.0.2.7/onvif/media2_service</tds:XAddr></tds:Service>"
        b"</tds:GetServicesResponse></s:Body></s:Envelope>"
    )
    caps = parse_service_capabilities(parse_reply(reply).payload)
    assert caps.username_token is False and caps.http_digest is True
    assert caps.snapshot_uri == {MEDIA_NS: False}  # Media2 said nothing: asked as usual
    assert MEDIA2_NS not in caps.snapshot_uri
