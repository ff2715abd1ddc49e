"""The device library against the simulated camera fleet (probes.sim) over real loopback sockets.

Network safety: every device lives on 127.1.x.y; multicast goes out of 127.0.0.1 only; the range scan covers
the fleet's own /24 on loopback. Each run picks its own /24 and a free common port, so parallel runs of other
suites do not collide.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from ipaddress import IPv4Address
from typing import Any

import pytest_asyncio
from aiohttp import web

from probes.discovery.scan import scan_range
from probes.discovery.wsdiscovery import ProbeVariant, probe_multicast, probe_unicast
from probes.errors import LOGIN_BUDGET_EXHAUSTED, Cause
from probes.onvif.auth import Credential, LoginBudget
from probes.onvif.client import interrogate, interrogate_many, interrogate_stream, make_session
from probes.onvif.http import HttpClient
from probes.onvif.parse import MEDIA2_NS, MEDIA_NS
from probes.results import DeviceReport, as_dict
from probes.sim import SimFleet, build_fleet, covering_fault_layout
from probes.sim.devices import AuthMode, DeviceSpec

TIMEOUT = 1.5  # per call; the slow profile answers after 0.3-0.4 s here
DEADLINE = 20.0


def _base_host() -> str:
    # A /24 of our own inside 127.1.0.0/16 (never .0/.255 hosts; never 127.0.0.1).
    return f"127.1.{100 + os.getpid() % 150}.1"


def _network(fleet: SimFleet) -> str:
    host = IPv4Address(fleet.devices[0].host)
    return f"{IPv4Address(int(host) & ~0xFF)}/24"


def _layout() -> tuple[dict[int, frozenset[str]], dict[int, AuthMode], dict[int, bool]]:
    faults = covering_fault_layout(healthy=6)
    by_fault = {next(iter(f)): i for i, f in faults.items() if f}
    healthy = [i for i, f in faults.items() if not f]
    auth: dict[int, AuthMode] = {
        by_fault["clock_skew"]: "wsse",  # the skew only bites WS-UsernameToken (DOMAIN 7.1)
        by_fault["auth_http_400"]: "digest",
        by_fault["lockout"]: "both",
        by_fault["wrong_password"]: "both",
        healthy[0]: "wsse",
        healthy[1]: "digest",
        healthy[2]: "both",
        healthy[3]: "wsse",
        healthy[4]: "digest",
        healthy[5]: "both",
    }
    media2 = {i: False for i in faults}
    media2.update({healthy[3]: True, healthy[4]: True, healthy[5]: True, by_fault["private_addrs"]: True})
    return faults, auth, media2


@pytest_asyncio.fixture
async def fleet() -> AsyncIterator[SimFleet]:
    faults, auth, media2 = _layout()
    devices = build_fleet(
        len(faults),
        fault_mix={},
        faults_by_index=faults,
        auth_by_index=auth,
        media2_by_index=media2,
        base_host=_base_host(),
        port=0,
    )
    sim = SimFleet(devices=devices, rtsp=False, discovery=True, slow_delay_s=(0.3, 0.4))
    async with sim:
        yield sim


def _creds(fleet: SimFleet) -> list[Credential]:
    return [Credential(fleet.credentials.default_username, fleet.credentials.default_password)]


def _one(fleet: SimFleet, fault: str) -> DeviceSpec:
    (device,) = fleet.with_fault(fault)
    return device


async def _sweep(
    fleet: SimFleet,
    budget: LoginBudget,
    creds: list[Credential] | None = None,
    *,
    quick: bool = False,
    timeout: float = TIMEOUT,
    **options: Any,
) -> list[DeviceReport]:
    """One sweep of the fleet; ``quick`` leaves out the hang and slow devices, which only add waiting."""
    devices = [d for d in fleet.devices if not (quick and d.faults & {"hang", "slow"})]
    return await interrogate_many(
        [d.url for d in devices],
        credentials_for=lambda _t: creds if creds is not None else _creds(fleet),
        budget=budget,
        concurrency=32,
        timeout=timeout,
        deadline=DEADLINE,
        **options,
    )


def _check_identity(report: DeviceReport, device: DeviceSpec, *, hostname: bool = False) -> None:
    assert report.ok, report.fatal
    assert (report.manufacturer, report.model, report.firmware) == (device.manufacturer, device.model, device.firmware)
    assert (report.serial, report.hardware_id) == (device.serial, device.hardware_id)
    assert report.mac == device.mac.lower()
    assert report.hostname == (f"cam-{device.index:05d}" if hostname else None)  # GetHostname is opt-in
    assert (report.name, report.location, report.hardware) == (device.name, device.location, device.hardware)
    assert report.clock_offset_s is not None and abs(report.clock_offset_s - device.clock_offset_s) < 1.5
    assert report.address == device.host and report.port == device.port


def _check_profiles(report: DeviceReport, device: DeviceSpec, *, snapshots: str = "main") -> None:
    by_token = {p.token: p for p in report.profiles}
    assert set(by_token) == {p.token for p in device.profiles}
    # The main profile: largest picture, H.265 over H.264 at the same size.
    main = max(device.profiles, key=lambda p: (p.width * p.height, p.encoding == "H265"))
    for spec in device.profiles:
        got = by_token[spec.token]
        assert (got.encoding, got.width, got.height, got.fps, got.bitrate) == (
            spec.encoding,
            spec.width,
            spec.height,
            float(spec.fps),
            spec.bitrate_kbps,
        )
        # H.265 only through Media2 (DOMAIN 7.7)
        assert got.source == ("media2" if spec.encoding == "H265" else "media")
        assert got.stream_uri is not None and f"//{device.host}:" in got.stream_uri
        snapshot = f"http://{device.host}:{device.port}/onvif/snapshot?profile={spec.token}"
        if snapshots == "all" or (snapshots == "main" and spec is main):
            assert got.snapshot_uri == snapshot
        else:
            assert got.snapshot_uri is None


async def test_healthy_devices_are_read_completely(fleet: SimFleet) -> None:
    reports = await _sweep(fleet, LoginBudget(), quick=True)
    healthy = {d.index for d in fleet.healthy()}
    assert len(healthy) == 6
    by_host = {r.address: r for r in reports}
    for device in fleet.devices:
        if device.index not in healthy:
            continue
        report = by_host[device.host]
        _check_identity(report, device)
        _check_profiles(report, device)
        assert report.failures == () and report.fatal is None
        # WS-UsernameToken wherever GetServices advertises it (no anonymous try); digest where only it is spoken.
        assert report.auth_method == ("digest" if device.auth == "digest" else "wsse")
        assert report.services[MEDIA_NS] == f"http://{device.host}:{device.port}/onvif/media_service"
        assert (MEDIA2_NS in report.services) is device.media2
        assert all(step.ok for step in report.steps)
        assert "GetHostname" not in {step.step for step in report.steps}


async def test_hostname_and_every_snapshot_on_request(fleet: SimFleet) -> None:
    reports = {r.address: r for r in await _sweep(fleet, LoginBudget(), quick=True, hostname=True, snapshots="all")}
    for device in fleet.healthy():
        report = reports[device.host]
        _check_identity(report, device, hostname=True)
        _check_profiles(report, device, snapshots="all")
        assert report.failures == ()
    reports = {r.address: r for r in await _sweep(fleet, LoginBudget(), quick=True, snapshots="none")}
    for device in fleet.healthy():
        _check_profiles(reports[device.host], device, snapshots="none")


async def test_fault_profiles_end_in_the_right_cause_or_are_recovered(fleet: SimFleet) -> None:
    budget = LoginBudget()
    reports = {r.address: r for r in await _sweep(fleet, budget)}

    def report(fault: str) -> tuple[DeviceReport, DeviceSpec]:
        device = _one(fleet, fault)
        return reports[device.host], device

    r, d = report("offline")
    assert not r.ok and r.fatal is not None and r.fatal.cause is Cause.REFUSED
    r, d = report("hang")
    assert not r.ok and r.fatal is not None and r.fatal.cause is Cause.TIMEOUT
    assert r.elapsed_ms < 3 * TIMEOUT * 1000  # two silent calls, then the device is left alone (DOMAIN 7.8)
    r, d = report("wrong_password")
    assert not r.ok and r.fatal is not None and r.fatal.cause is Cause.AUTH
    assert r.fatal.step == "GetDeviceInformation" and d.password not in str(r.fatal)
    assert r.clock_offset_s is not None  # GetSystemDateAndTime needs no login
    r, d = report("slow")
    _check_identity(r, d)
    _check_profiles(r, d)
    r, d = report("clock_skew")
    _check_identity(r, d)  # signed with the device's clock, WS-UsernameToken works 3-8 h off (DOMAIN 7.1)
    assert r.auth_method == "wsse" and abs(r.clock_offset_s or 0) > 3000
    assert [f.cause for f in r.failures] == [Cause.CLOCK_SKEW]
    for fault in ("malformed_xml", "invalid_utf8"):
        r, d = report(fault)
        assert r.ok and r.fatal is None and r.failures == ()
        assert r.mac == d.mac.lower() and len(r.profiles) == len(d.media1_profiles)
        step = next(s for s in r.steps if s.step == "GetDeviceInformation")
        assert step.ok and "recovered" in step.detail
    r, d = report("malformed_xml")
    assert r.manufacturer == d.manufacturer and r.model == f"{d.model} & Co" and r.serial == d.serial
    r, d = report("invalid_utf8")
    assert r.manufacturer is not None and r.manufacturer.startswith(f"{d.manufacturer} 海康威视")
    assert r.model == f"{d.model} 球机" and r.serial == d.serial
    for fault in ("private_addrs", "zero_addrs"):
        r, d = report(fault)
        _check_identity(r, d)
        _check_profiles(r, d)  # stream and snapshot URIs rewritten to the answering host (DOMAIN 7.4)
        advertised = d.advertised_host
        assert advertised != d.host
        assert r.services[MEDIA_NS] == f"http://{d.host}:{d.port}/onvif/media_service"
        assert r.services_original[MEDIA_NS] == f"http://{advertised}:{d.port}/onvif/media_service"
        assert all(p.stream_uri_original and f"//{advertised}:" in p.stream_uri_original for p in r.profiles)
        snapshots = [p.snapshot_uri_original for p in r.profiles if p.snapshot_uri]
        assert len(snapshots) == 1 and f"//{advertised}:" in (snapshots[0] or "")  # the main profile's
    r, d = report("no_get_services")
    _check_identity(r, d)
    assert [s.step for s in r.steps if not s.ok] == ["GetServices"]
    assert r.services[MEDIA_NS].endswith("/onvif/media_service")  # from GetCapabilities (DOMAIN 7.7)
    assert len(r.profiles) == len(d.media1_profiles) and r.failures == ()
    for fault in ("soap_content_type_mismatch", "auth_http_400", "lockout", "picky_probe"):
        r, d = report(fault)
        _check_identity(r, d)
        _check_profiles(r, d)
        assert r.failures == ()


async def test_auth_failure_as_http_400_is_auth(fleet: SimFleet) -> None:
    device = _one(fleet, "auth_http_400")
    async with make_session() as session:
        report = await interrogate(
            device.url,
            credentials=[Credential(device.username, "not-the-password")],
            session=session,
            budget=LoginBudget(),
            timeout=TIMEOUT,
        )
    assert not report.ok and report.fatal is not None and report.fatal.cause is Cause.AUTH
    assert "HTTP 400" in report.fatal.detail
    assert "not-the-password" not in repr(as_dict(report))


async def test_lockout_accounts_never_lock_over_three_sweeps(fleet: SimFleet) -> None:
    lockout = _one(fleet, "lockout")
    wrong = [Credential(lockout.username, "wrong-1"), Credential(lockout.username, "wrong-2")]
    budget = LoginBudget()  # the service keeps one budget across sweeps
    causes = []
    # Every device here answers at once: a generous call timeout means a loaded machine still gets a verdict
    # for each login, never a timeout (tests/component/test_lockout.py covers late replies and new nonces).
    for _sweep_no in range(3):
        reports = await _sweep(fleet, budget, wrong, quick=True, timeout=15.0)
        report = next(r for r in reports if r.address == lockout.host)
        assert report.fatal is not None
        causes.append(report.fatal.cause)
        assert report.fatal.detail == LOGIN_BUDGET_EXHAUSTED
        assert not fleet.is_locked(lockout.index)
        assert fleet.failed_logins(lockout.index) == 2  # the camera locks at 3
    # Sweep 1 spends the two attempts (wrong-1 and wrong-2), then our budget says stop.
    assert causes == [Cause.LOCKED_OUT] * 3

    # A service restart with the persisted snapshot keeps the promise.
    restored = LoginBudget()
    restored.restore(budget.snapshot())
    reports = await _sweep(fleet, restored, wrong, quick=True, timeout=15.0)
    assert next(r for r in reports if r.address == lockout.host).fatal.cause is Cause.LOCKED_OUT  # type: ignore[union-attr]
    assert not fleet.is_locked(lockout.index)


async def test_wrong_then_right_credential_gets_in_without_locking(fleet: SimFleet) -> None:
    lockout = _one(fleet, "lockout")
    creds = [Credential(lockout.username, "wrong-1"), *_creds(fleet)]
    budget = LoginBudget()
    for _sweep_no in range(3):
        reports = await _sweep(fleet, budget, creds, quick=True)
        report = next(r for r in reports if r.address == lockout.host)
        assert report.ok, report.fatal
        assert not fleet.is_locked(lockout.index)
    # The working credential is remembered: later sweeps spend no failed attempt at all.
    assert budget.remaining(f"{lockout.host}:{lockout.port}") == 1


async def test_auth_hint_skips_the_anonymous_probe(fleet: SimFleet) -> None:
    device = next(d for d in fleet.healthy() if d.auth == "wsse")
    async with make_session() as session:
        kwargs = {"credentials": _creds(fleet), "session": session, "budget": LoginBudget(), "timeout": TIMEOUT}
        served = fleet.server.requests_served
        first = await interrogate(device.url, **kwargs)  # type: ignore[arg-type]
        first_requests = fleet.server.requests_served - served
        served = fleet.server.requests_served
        hinted = await interrogate(device.url, auth_hint=first.auth_method, **kwargs)  # type: ignore[arg-type]
        hinted_requests = fleet.server.requests_served - served
    assert first.auth_method == hinted.auth_method == "wsse"
    assert first.ok and hinted.ok and len(first.profiles) == len(hinted.profiles)
    # No anonymous GetDeviceInformation to learn the scheme, either time: the hint says it, and without the hint
    # GetServices' capabilities do (tests/component/test_discovery_requests.py counts every request).
    assert hinted_requests == first_requests


async def test_interrogate_stream_yields_every_device(fleet: SimFleet) -> None:
    seen: list[str] = []
    async for report in interrogate_stream(
        [d.url for d in fleet.healthy()],
        credentials_for=lambda _t: _creds(fleet),
        budget=LoginBudget(),
        concurrency=4,
        timeout=TIMEOUT,
    ):
        seen.append(report.address)
    assert sorted(seen) == sorted(d.host for d in fleet.healthy())


async def test_progress_and_secrets(fleet: SimFleet) -> None:
    progress: list[tuple[int, int]] = []
    reports = await interrogate_many(
        [d.url for d in fleet.devices],
        credentials_for=lambda _t: _creds(fleet),
        budget=LoginBudget(),
        progress=lambda done, total: progress.append((done, total)),
        timeout=TIMEOUT,
    )
    assert progress[-1] == (len(fleet.devices), len(fleet.devices))
    text = repr([as_dict(r) for r in reports])
    assert fleet.credentials.default_password not in text


async def test_ws_discovery_multicast_on_loopback(fleet: SimFleet) -> None:
    found = await probe_multicast("127.0.0.1", timeout=1.0)
    by_ref = {d.endpoint_ref: d for d in found}  # other suites' fleets on this host may answer too
    for device in fleet.devices:
        if "offline" in device.faults:
            assert device.endpoint_ref not in by_ref
            continue
        got = by_ref[device.endpoint_ref]  # picky_probe answers only the dn:NetworkVideoTransmitter variant
        assert got.answered_from == device.host
        assert got.xaddrs == (device.xaddr,)
        assert got.best_xaddr == f"http://{device.host}:{device.port}/onvif/device_service"
        assert "{http://www.onvif.org/ver10/network/wsdl}NetworkVideoTransmitter" in got.types


async def test_ws_discovery_unicast_and_picky_probe(fleet: SimFleet) -> None:
    hosts = [d.host for d in fleet.devices]
    found = await probe_unicast(hosts, timeout=1.0, bind_ip="127.0.0.1")
    assert {d.endpoint_ref for d in found} == {d.endpoint_ref for d in fleet.devices if "offline" not in d.faults}
    assert all(d.answered_from in hosts for d in found)
    # With only the tds:Device variant the picky camera stays silent: why several variants go out (DOMAIN 7.6).
    picky = _one(fleet, "picky_probe")
    only_device = await probe_unicast(
        [picky.host], timeout=0.5, bind_ip="127.0.0.1", variants=[ProbeVariant.DEVICE_ON_TYPES]
    )
    assert only_device == []


async def test_range_scan_finds_exactly_the_answering_devices(fleet: SimFleet) -> None:
    progress: list[tuple[int, int]] = []
    started = time.perf_counter()
    hits = await scan_range(
        [_network(fleet)],
        ports=[fleet.port],
        concurrency=128,
        timeout=1.0,
        progress=lambda done, total: progress.append((done, total)),
    )
    expected = {d.host for d in fleet.devices if not d.faults & {"offline", "hang"}}
    assert {h.host for h in hits} == expected
    assert progress[-1] == (254, 254)
    for hit in hits:
        device = next(d for d in fleet.devices if d.host == hit.host)
        assert hit.port == fleet.port and hit.xaddr == device.url
        assert hit.clock_offset_s is not None and abs(hit.clock_offset_s - device.clock_offset_s) < 1.5
    assert time.perf_counter() - started < 10


# --- quirks the simulator does not model, on a small scripted device (127.0.0.1, a real HTTP server) --------------


class QuirkyDevice:
    """A minimal ONVIF device with switchable firmware quirks; HTTP Digest (MD5, qop=auth) on every call but
    GetSystemDateAndTime, checked here independently of the client's own digest code."""

    REALM = "IP Camera(QX1)"

    def __init__(
        self,
        *,
        soap11_only: bool = False,
        single_use_nonce: bool = False,
        huge_op: str = "",
        empty_ops: frozenset[str] = frozenset(),
        fault_200_ops: frozenset[str] = frozenset(),
    ) -> None:
        self.soap11_only = soap11_only
        self.single_use_nonce = single_use_nonce
        self.huge_op = huge_op
        self.empty_ops = empty_ops
        self.fault_200_ops = fault_200_ops
        self.password = "Quirk-Pass-1"
        self.nonces: dict[str, int] = {}  # nonce -> uses
        self.failed_logins = 0
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/onvif/device_service", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/onvif/device_service"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _challenge(self) -> str:
        nonce = os.urandom(12).hex()
        self.nonces[nonce] = 0
        return f'Digest realm="{self.REALM}", qop="auth", nonce="{nonce}", algorithm=MD5'

    def _authorized(self, header: str) -> bool | None:
        """True ok, False wrong password, None no usable credentials (challenge again, not a failed login)."""
        if not header.startswith("Digest "):
            return None
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', header[7:]))
        nonce = params.get("nonce", "")
        if nonce not in self.nonces or (self.single_use_nonce and self.nonces[nonce] > 0):
            return None
        self.nonces[nonce] += 1

        def md5(text: str) -> str:
            return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

        ha1 = md5(f"{params.get('username')}:{self.REALM}:{self.password}")
        ha2 = md5(f"POST:{params.get('uri')}")
        expected = md5(f"{ha1}:{nonce}:{params.get('nc')}:{params.get('cnonce')}:{params.get('qop')}:{ha2}")
        return params.get("response") == expected

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        soap11 = b"http://schemas.xmlsoap.org/soap/envelope/" in body
        if self.soap11_only and not soap11:
            return web.Response(status=415, text="Unsupported Media Type")
        match = re.search(rb"<(?:\w+:)?(\w+) xmlns=\"http://www\.onvif\.org/ver10/(?:device|media)/wsdl\"", body)
        op = match.group(1).decode() if match else ""
        soap_ns = "http://schemas.xmlsoap.org/soap/envelope/" if soap11 else "http://www.w3.org/2003/05/soap-envelope"

        def wrap(content: str) -> bytes:
            return (
                f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{soap_ns}"><SOAP-ENV:Body>{content}</SOAP-ENV:Body>'
                "</SOAP-ENV:Envelope>"
            ).encode()

        ctype = "text/xml" if soap11 else "application/soap+xml"
        if op != "GetSystemDateAndTime":
            verdict = self._authorized(request.headers.get("Authorization", ""))
            if verdict is not True:
                if verdict is False:
                    self.failed_logins += 1
                return web.Response(status=401, text="Unauthorized", headers={"WWW-Authenticate": self._challenge()})
        if op == self.huge_op:
            return web.Response(body=b"<x>" + b"A" * (3 << 20) + b"</x>", content_type="text/xml")
        if op in self.empty_ops:
            return web.Response(body=b"", content_type=ctype)
        if op in self.fault_200_ops:
            fault = (
                (
                    "<SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:Receiver</SOAP-ENV:Value>"
                    "<SOAP-ENV:Subcode><SOAP-ENV:Value>ter:ActionNotSupported</SOAP-ENV:Value></SOAP-ENV:Subcode>"
                    "</SOAP-ENV:Code><SOAP-ENV:Reason><SOAP-ENV:Text>Not implemented</SOAP-ENV:Text>"
                    "</SOAP-ENV:Reason></SOAP-ENV:Fault>"
                )
                if not soap11
                else (
                    "<SOAP-ENV:Fault><faultcode>SOAP-ENV:Client</faultcode><faultstring>Method not implemented"
                    "</faultstring></SOAP-ENV:Fault>"
                )
            )
            return web.Response(body=wrap(fault), content_type=ctype)
        return web.Response(body=wrap(QUIRKY_REPLIES.get(op, "")), content_type=ctype)


QUIRKY_REPLIES = {
    "GetSystemDateAndTime": (
        '<GetSystemDateAndTimeResponse xmlns="http://www.onvif.org/ver10/device/wsdl"><SystemDateAndTime>'
        '<UTCDateTime xmlns="http://www.onvif.org/ver10/schema"><Time><Hour>1</Hour><Minute>2</Minute>'
        "<Second>3</Second></Time><Date><Year>2021</Year><Month>6</Month><Day>1</Day></Date></UTCDateTime>"
        "</SystemDateAndTime></GetSystemDateAndTimeResponse>"
    ),
    "GetDeviceInformation": (
        '<GetDeviceInformationResponse xmlns="http://www.onvif.org/ver10/device/wsdl"><Manufacturer>Quirk'
        "</Manufacturer><Model>Q-1</Model><FirmwareVersion>1.0</FirmwareVersion><SerialNumber>QX1</SerialNumber>"
        "<HardwareId>1</HardwareId></GetDeviceInformationResponse>"
    ),
    "GetCapabilities": (
        '<GetCapabilitiesResponse xmlns="http://www.onvif.org/ver10/device/wsdl"><Capabilities>'
        '<Media xmlns="http://www.onvif.org/ver10/schema"><XAddr>http://192.168.0.5/onvif/device_service</XAddr>'
        "</Media></Capabilities></GetCapabilitiesResponse>"
    ),
    "GetProfiles": (
        '<GetProfilesResponse xmlns="http://www.onvif.org/ver10/media/wsdl"><Profiles token="P1"><Name>main</Name>'
        "</Profiles></GetProfilesResponse>"
    ),
    "GetStreamUri": (
        '<GetStreamUriResponse xmlns="http://www.onvif.org/ver10/media/wsdl"><MediaUri><Uri>'
        "rtsp://admin:Quirk-Pass-1@192.168.0.5:554/live</Uri></MediaUri></GetStreamUriResponse>"
    ),
    "GetSnapshotUri": (
        '<GetSnapshotUriResponse xmlns="http://www.onvif.org/ver10/media/wsdl"><MediaUri><Uri>'
        "http://192.168.0.5/snap.jpg?user=admin&amp;pwd=Quirk-Pass-1</Uri></MediaUri></GetSnapshotUriResponse>"
    ),
}


@pytest_asyncio.fixture
async def quirky() -> AsyncIterator[Callable[..., Awaitable[QuirkyDevice]]]:
    started: list[QuirkyDevice] = []

    async def start(**quirks: Any) -> QuirkyDevice:
        device = QuirkyDevice(**quirks)
        await device.start()
        started.append(device)
        return device

    yield start
    for device in started:
        await device.stop()


async def _interrogate_quirky(device: QuirkyDevice, budget: LoginBudget | None = None) -> DeviceReport:
    async with make_session() as session:
        return await interrogate(
            device.url,
            credentials=[Credential("admin", device.password)],
            session=session,
            budget=budget or LoginBudget(),
            timeout=TIMEOUT,
        )


async def test_soap11_only_device_and_200_faults_and_empty_bodies(quirky) -> None:
    device = await quirky(
        soap11_only=True, fault_200_ops=frozenset({"GetServices"}), empty_ops=frozenset({"GetScopes", "GetHostname"})
    )
    report = await _interrogate_quirky(device)
    assert report.ok and report.auth_method == "digest", report.fatal
    assert (report.manufacturer, report.serial) == ("Quirk", "QX1")
    assert report.clock_offset_s is not None and report.clock_offset_s < -1e7  # a 2021 clock
    assert [f.cause for f in report.failures] == [Cause.CLOCK_SKEW]  # empty bodies and faults recovered
    assert report.scopes == () and report.hostname is None
    assert report.services[MEDIA_NS] == device.url  # from GetCapabilities, 192.168.0.5 rewritten (DOMAIN 7.4)
    (profile,) = report.profiles
    port = device.url.split(":")[2].split("/")[0]
    assert profile.stream_uri == "rtsp://127.0.0.1:554/live"
    assert profile.stream_uri_original == "rtsp://192.168.0.5:554/live"  # credentials gone from both
    assert profile.snapshot_uri == f"http://127.0.0.1:{port}/snap.jpg"
    assert device.password not in repr(as_dict(report))


async def test_single_use_digest_nonces_cost_no_login_budget(quirky) -> None:
    device = await quirky(single_use_nonce=True)
    budget = LoginBudget()
    report = await _interrogate_quirky(device, budget)
    assert report.ok and report.profiles, report.failures
    assert device.failed_logins == 0
    assert budget.remaining(report.xaddr.split("//")[1].split("/")[0]) == 2  # nonce refreshes are not failures


async def test_oversized_reply_is_cut_off(quirky) -> None:
    device = await quirky(huge_op="GetNetworkInterfaces")
    report = await _interrogate_quirky(device)
    assert report.ok and report.mac is None
    failure = report.failure_for("GetNetworkInterfaces")
    assert failure is not None and failure.cause is Cause.PROTOCOL and "exceeds" in failure.detail
    assert report.hostname is None and report.profiles  # the device is still read after the cut-off


# --- the HTTP client over real sockets, and what a scan hands on to the interrogation ----------------------------


class ScriptedServer:
    """A TCP server on 127.0.0.1 answering each request with the next scripted reply (bytes), or silence (None);
    ``close_after`` closes the connection after each reply without saying so."""

    def __init__(self, replies: list[bytes | None], *, close_after: bool = False) -> None:
        self.replies = list(replies)
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: Any = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: Any, writer: Any) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
                self.requests.append(head + await reader.readexactly(length))
                reply = self.replies.pop(0) if self.replies else None
                if reply is None:
                    await reader.read()  # hang: read until the client gives up
                    return
                writer.write(reply)
                await writer.drain()
                if self.close_after:
                    return
        except Exception:  # the client went away
            return
        finally:
            writer.close()

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()


async def test_http_client_reuses_connections_and_copes_with_closes() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server = ScriptedServer([ok, ok, ok])
    await server.start()
    try:
        async with HttpClient() as http:
            data = http.build(b"POST", b"127.0.0.1", b"/onvif/device_service", b"", b"<x/>")
            for _ in range(3):
                response = await http.request("127.0.0.1", server.port, "http", data, timeout=2, max_bytes=1000)
                assert (response.status, response.body) == (200, b"ok")
        assert server.connections == 1 and len(server.requests) == 3  # keep-alive
        assert server.requests[0].startswith(b"POST /onvif/device_service HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    finally:
        await server.stop()
    server = ScriptedServer([ok, ok], close_after=True)  # closes without "Connection: close"
    await server.start()
    try:
        async with HttpClient() as http:
            data = http.build(b"POST", b"127.0.0.1", b"/", b"", b"")
            for _ in range(2):
                response = await http.request("127.0.0.1", server.port, "http", data, timeout=2, max_bytes=1000)
                assert response.body == b"ok"
                await asyncio.sleep(0.05)
        assert server.connections == 2
    finally:
        await server.stop()


def _time_wait_to(port: int) -> int:
    """TIME_WAIT sockets of this machine whose remote end is 127.0.0.1:port (/proc/net/tcp, state 06)."""
    remote = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        return sum(1 for line in table.readlines()[1:] if line.split()[2] == remote and line.split()[3] == "06")


async def test_http_client_forgets_a_device_without_leaving_time_wait() -> None:
    # A sweep closes each device's connection when its check is done; closed with a FIN, every device would hold
    # a TIME_WAIT port on our side for a minute (100,000 cameras every 5 minutes). A RST leaves none.
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server = ScriptedServer([ok] * 5)
    await server.start()
    try:
        async with HttpClient() as http:
            data = http.build(b"POST", b"127.0.0.1", b"/", b"", b"")
            for _ in range(5):
                response = await http.request("127.0.0.1", server.port, "http", data, timeout=2, max_bytes=1000)
                assert response.body == b"ok"
                http.forget("127.0.0.1", server.port)
                await asyncio.sleep(0.02)
        assert server.connections == 5
        await asyncio.sleep(0.1)
        assert _time_wait_to(server.port) == 0
    finally:
        await server.stop()


async def test_http_client_times_out_and_reports_refusals() -> None:
    server = ScriptedServer([None])  # accepts, reads, never answers (DOMAIN 7.8)
    await server.start()
    try:
        async with HttpClient() as http:
            data = http.build(b"POST", b"127.0.0.1", b"/", b"", b"")
            started = time.perf_counter()
            try:
                await http.request("127.0.0.1", server.port, "http", data, timeout=0.3, max_bytes=1000)
            except TimeoutError:
                pass
            else:
                raise AssertionError("no timeout")
            assert 0.25 < time.perf_counter() - started < 3.0  # the 0.3 s timeout, not a wait for the server
            port = server.port
    finally:
        await server.stop()
    async with HttpClient() as http:
        try:
            await http.request("127.0.0.1", port, "http", data, timeout=1, max_bytes=1000)
        except ConnectionRefusedError:
            pass
        else:
            raise AssertionError("not refused")


async def test_scan_hands_clock_and_connection_to_the_interrogation(fleet: SimFleet) -> None:
    healthy = fleet.healthy()
    hits = await scan_range([_network(fleet)], ports=[fleet.port], concurrency=64, timeout=1.0)
    assert {h.host for h in hits} >= {d.host for d in healthy}
    async with make_session() as session:
        served = fleet.server.requests_served
        reports = await interrogate_many(
            [d.url for d in healthy],
            credentials_for=lambda _t: _creds(fleet),
            budget=LoginBudget(),
            session=session,
            timeout=TIMEOUT,
        )
        handed_on = fleet.server.requests_served - served
        assert session.connections_opened == 0  # every device's scan connection was reused
    for report, device in zip(reports, healthy, strict=True):
        _check_identity(report, device)
        step = report.steps[0]
        assert step.step == "GetSystemDateAndTime" and step.ok and "range scan" in step.detail
    # Without the scan's reading the interrogation asks each device again: one request more per device.
    async with make_session() as session:
        served = fleet.server.requests_served
        reports = await interrogate_many(
            [d.url for d in healthy],
            credentials_for=lambda _t: _creds(fleet),
            budget=LoginBudget(),
            session=session,
            timeout=TIMEOUT,
            reuse_clock_s=0,
        )
        assert fleet.server.requests_served - served == handed_on + len(healthy)
        assert session.connections_opened == len(healthy)
    for report, device in zip(reports, healthy, strict=True):
        _check_identity(report, device)
        assert report.steps[0].detail == ""
