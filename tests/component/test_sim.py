"""Component tests of the simulated ONVIF fleet over real loopback sockets (HTTP, UDP multicast, RTSP).

Every wait is bounded; multicast is sent with IP_MULTICAST_IF 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from lxml import etree

from probes.sim import FAULTS, FleetCredentials, SimFleet, build_fleet, covering_fault_layout, run_fleet
from probes.sim.devices import DEFAULT_PASSWORD, DeviceSpec, device_host

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = {
    "s12": "http://www.w3.org/2003/05/soap-envelope",
    "s11": "http://schemas.xmlsoap.org/soap/envelope/",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tr2": "http://www.onvif.org/ver20/media/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsd": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
}
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
TIMEOUT = aiohttp.ClientTimeout(total=5)
LAYOUT = covering_fault_layout(healthy=6)
HEALTHY = range(len(FAULTS), len(LAYOUT))
# healthy devices cover every auth mode and both media versions
AUTH = {
    HEALTHY[0]: "wsse",
    HEALTHY[1]: "digest",
    HEALTHY[2]: "both",
    HEALTHY[3]: "both",
    HEALTHY[4]: "wsse",
    HEALTHY[5]: "digest",
}
MEDIA2 = {HEALTHY[0]: True, HEALTHY[1]: False, HEALTHY[2]: True, HEALTHY[3]: False, HEALTHY[4]: False, HEALTHY[5]: True}


def _test_base_host() -> str:
    # per-process addresses so parallel runs on one machine never clash on port 3702 or the HTTP port
    pid = os.getpid()
    return f"127.{200 + pid % 50}.{(pid // 50) % 250}.1"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fleet() -> AsyncIterator[SimFleet]:
    auth = {i: a for i, a in AUTH.items()}
    # faulty devices whose quirk shows on one auth path get that path
    by_fault = {next(iter(f)): i for i, f in LAYOUT.items() if f}
    auth[by_fault["auth_http_400"]] = "digest"
    auth[by_fault["lockout"]] = "wsse"
    auth[by_fault["wrong_password"]] = "both"
    auth[by_fault["clock_skew"]] = "wsse"
    sim = SimFleet(
        len(LAYOUT),
        fault_mix={},
        faults_by_index=LAYOUT,
        auth_by_index=auth,  # type: ignore[arg-type]
        media2_by_index=MEDIA2,
        base_host=_test_base_host(),
        port=0,
        lock_period_s=600.0,
        slow_delay_s=(1.0, 1.2),
        discovery_max_delay_s=0.05,
    )
    async with sim:
        yield sim


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield session


def dev(fleet: SimFleet, fault: str) -> DeviceSpec:
    return fleet.with_fault(fault)[0]


def healthy(fleet: SimFleet, auth: str, *, media2: bool | None = None) -> DeviceSpec:
    for d in fleet.healthy():
        if d.auth == auth and (media2 is None or d.media2 == media2):
            return d
    raise AssertionError(f"no healthy {auth} device")


# --- a tiny test-only SOAP client ------------------------------------------------------------------------------


def wsse_header(user: str, password: str, created: datetime) -> str:
    nonce = os.urandom(16)
    stamp = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    sha1 = hashlib.sha1(nonce + stamp.encode() + password.encode(), usedforsecurity=False)  # as ONVIF mandates
    digest = base64.b64encode(sha1.digest()).decode()
    return (
        f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
        f"<wsse:Username>{user}</wsse:Username>"
        '<wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0'
        f'#PasswordDigest">{digest}</wsse:Password>'
        '<wsse:Nonce EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0'
        f'#Base64Binary">{base64.b64encode(nonce).decode()}</wsse:Nonce>'
        f"<wsu:Created>{stamp}</wsu:Created></wsse:UsernameToken></wsse:Security>"
    )


def envelope(op_xml: str, *, header: str = "", soap12: bool = True) -> bytes:
    env = NS["s12"] if soap12 else NS["s11"]
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{env}"><s:Header>{header}</s:Header>'
        f"<s:Body>{op_xml}</s:Body></s:Envelope>"
    ).encode()


def op(name: str, ns: str = "tds", inner: str = "") -> str:
    return f'<{name} xmlns="{NS[ns]}">{inner}</{name}>'


async def post(
    session: aiohttp.ClientSession,
    d: DeviceSpec,
    body: bytes,
    *,
    path: str = "/onvif/device_service",
    soap12: bool = True,
    action: str = "",
) -> tuple[int, dict[str, str], bytes]:
    headers = (
        {"Content-Type": "application/soap+xml; charset=utf-8"}
        if soap12
        else {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"'}
    )
    async with session.post(f"http://{d.host}:{d.port}{path}", data=body, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def parse(raw: bytes) -> etree._Element:
    return etree.fromstring(raw, etree.XMLParser(resolve_entities=False, no_network=True))


def fault_subcodes(root: etree._Element) -> list[str]:
    return [v.text or "" for v in root.iter(f"{{{NS['s12']}}}Value")]


async def device_clock(session: aiohttp.ClientSession, d: DeviceSpec) -> datetime:
    status, _h, raw = await post(session, d, envelope(op("GetSystemDateAndTime")))
    assert status == 200
    utc = parse(raw).find(".//tt:UTCDateTime", NS)
    assert utc is not None

    def num(path: str) -> int:
        return int(utc.findtext(path, namespaces=NS) or "0")

    return datetime(
        num("tt:Date/tt:Year"),
        num("tt:Date/tt:Month"),
        num("tt:Date/tt:Day"),
        num("tt:Time/tt:Hour"),
        num("tt:Time/tt:Minute"),
        num("tt:Time/tt:Second"),
        tzinfo=UTC,
    )


# --- fleet layout ----------------------------------------------------------------------------------------------


async def test_build_fleet_is_deterministic_and_on_loopback() -> None:
    a = build_fleet(300, seed=7)
    assert a == build_fleet(300, seed=7)
    assert a != build_fleet(300, seed=8)
    hosts = [d.host for d in a]
    assert len(set(hosts)) == 300 and "127.0.0.1" not in hosts
    assert all(h.startswith("127.1.") and not h.endswith((".0", ".255")) for h in hosts)
    assert hosts[0] == "127.1.0.1" and hosts[254] == "127.1.1.1"
    assert len({d.endpoint_ref for d in a}) == 300 and all(d.endpoint_ref.startswith("urn:uuid:") for d in a)
    assert len({d.mac for d in a}) == 300
    drawn = {f for d in a for f in d.faults}
    assert drawn <= FAULTS and len(drawn) >= 8  # the default mix spreads faults over a small share
    assert 0.1 < sum(1 for d in a if d.faults) / 300 < 0.5
    with pytest.raises(ValueError):
        device_host("10.0.0.1", 0)


async def test_fleet_covers_every_fault(fleet: SimFleet) -> None:
    assert {f for d in fleet.devices for f in d.faults} == FAULTS
    assert len(fleet.healthy()) == 6
    assert fleet.port > 0 and all(d.port == fleet.port for d in fleet.devices)
    wrong = dev(fleet, "wrong_password")
    listed = fleet.credentials.for_host(wrong.host)
    assert listed is not None and listed.password != wrong.password  # the operator's sheet is wrong for it
    assert fleet.device_urls and all(u.startswith("http://127.") for u in fleet.device_urls)


# --- device service --------------------------------------------------------------------------------------------


async def test_system_date_and_time_needs_no_auth_and_shows_the_device_clock(
    fleet: SimFleet, http: aiohttp.ClientSession
) -> None:
    d = healthy(fleet, "wsse")
    clock = await device_clock(http, d)
    assert abs((clock - datetime.now(UTC)).total_seconds()) < 5
    skewed = dev(fleet, "clock_skew")
    clock = await device_clock(http, skewed)
    assert abs((clock - datetime.now(UTC)).total_seconds() - skewed.clock_offset_s) < 5
    assert abs(skewed.clock_offset_s) >= 3600


async def test_keep_alive_serves_many_requests_on_one_connection(fleet: SimFleet) -> None:
    d = healthy(fleet, "both")
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
        for _ in range(20):
            status, headers, _raw = await post(session, d, envelope(op("GetSystemDateAndTime")))
            assert status == 200 and headers["Connection"] == "keep-alive"


async def test_device_information_with_ws_username_token(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    for d in (healthy(fleet, "wsse"), healthy(fleet, "both")):
        header = wsse_header(d.username, d.password, datetime.now(UTC))
        status, headers, raw = await post(http, d, envelope(op("GetDeviceInformation"), header=header))
        assert status == 200, raw
        assert headers["Content-Type"].startswith("application/soap+xml")
        info = parse(raw).find(".//tds:GetDeviceInformationResponse", NS)
        assert info is not None
        assert info.findtext("tds:Manufacturer", namespaces=NS) == d.manufacturer
        assert info.findtext("tds:Model", namespaces=NS) == d.model
        assert info.findtext("tds:SerialNumber", namespaces=NS) == d.serial
        assert info.findtext("tds:FirmwareVersion", namespaces=NS) == d.firmware
        assert info.findtext("tds:HardwareId", namespaces=NS) == d.hardware_id


async def test_device_information_with_http_digest(fleet: SimFleet) -> None:
    for d in (healthy(fleet, "digest"), healthy(fleet, "both")):
        async with aiohttp.ClientSession(timeout=TIMEOUT) as anonymous:
            status, headers, _raw = await post(anonymous, d, envelope(op("GetDeviceInformation")))
            assert status == 401 and 'qop="auth"' in headers["WWW-Authenticate"]
        middleware = aiohttp.DigestAuthMiddleware(d.username, d.password)
        async with aiohttp.ClientSession(timeout=TIMEOUT, middlewares=(middleware,)) as session:
            status, _headers, raw = await post(session, d, envelope(op("GetDeviceInformation")))
            assert status == 200, raw
            assert parse(raw).findtext(".//tds:SerialNumber", namespaces=NS) == d.serial


async def test_wsse_only_device_refuses_digest_and_digest_only_refuses_wsse(
    fleet: SimFleet, http: aiohttp.ClientSession
) -> None:
    d = healthy(fleet, "wsse")
    middleware = aiohttp.DigestAuthMiddleware(d.username, d.password)
    async with aiohttp.ClientSession(timeout=TIMEOUT, middlewares=(middleware,)) as session:
        status, _h, raw = await post(session, d, envelope(op("GetDeviceInformation")))
    assert status == 400 and "ter:NotAuthorized" in fault_subcodes(parse(raw))
    d = healthy(fleet, "digest")
    header = wsse_header(d.username, d.password, datetime.now(UTC))
    status, _h, _raw = await post(http, d, envelope(op("GetDeviceInformation"), header=header))
    assert status == 401


async def test_wrong_password_fails_both_ways(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    d = dev(fleet, "wrong_password")
    listed = fleet.credentials.for_host(d.host)
    assert listed is not None
    header = wsse_header(listed.username, listed.password, datetime.now(UTC))
    status, _h, raw = await post(http, d, envelope(op("GetDeviceInformation"), header=header))
    assert status == 400 and "ter:NotAuthorized" in fault_subcodes(parse(raw))
    middleware = aiohttp.DigestAuthMiddleware(listed.username, listed.password)
    async with aiohttp.ClientSession(timeout=TIMEOUT, middlewares=(middleware,)) as session:
        status, _h, _raw = await post(session, d, envelope(op("GetDeviceInformation")))
    assert status == 401
    # and the device's real password works
    header = wsse_header(d.username, d.password, datetime.now(UTC))
    status, _h, _raw = await post(http, d, envelope(op("GetDeviceInformation"), header=header))
    assert status == 200


async def test_lockout_after_three_failed_logins(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    d = dev(fleet, "lockout")
    good = envelope(op("GetScopes"), header=wsse_header(d.username, d.password, datetime.now(UTC)))
    assert (await post(http, d, good))[0] == 200
    assert not fleet.is_locked(d.index)
    for attempt in range(3):
        bad = envelope(op("GetScopes"), header=wsse_header(d.username, "guess", datetime.now(UTC)))
        assert (await post(http, d, bad))[0] == 400
        assert fleet.is_locked(d.index) == (attempt == 2)
    good = envelope(op("GetScopes"), header=wsse_header(d.username, d.password, datetime.now(UTC)))
    status, _h, raw = await post(http, d, good)
    assert status == 400 and b"locked" in raw
    assert (await post(http, d, envelope(op("GetSystemDateAndTime"))))[0] == 200  # pre-auth still answers
    # a device without the quirk never locks
    h = healthy(fleet, "wsse")
    for _ in range(4):
        bad = envelope(op("GetScopes"), header=wsse_header(h.username, "guess", datetime.now(UTC)))
        assert (await post(http, h, bad))[0] == 400
    assert not fleet.is_locked(h.index)
    assert (
        await post(http, h, envelope(op("GetScopes"), header=wsse_header(h.username, h.password, datetime.now(UTC))))
    )[0] == 200


async def test_clock_skew_needs_the_device_clock(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    d = dev(fleet, "clock_skew")
    signed_locally = envelope(op("GetDeviceInformation"), header=wsse_header(d.username, d.password, datetime.now(UTC)))
    status, _h, raw = await post(http, d, signed_locally)
    assert status == 400 and "ter:NotAuthorized" in fault_subcodes(parse(raw))
    offset = (await device_clock(http, d)) - datetime.now(UTC)
    signed = envelope(
        op("GetDeviceInformation"), header=wsse_header(d.username, d.password, datetime.now(UTC) + offset)
    )
    status, _h, raw = await post(http, d, signed)
    assert status == 200, raw


async def test_malformed_and_invalid_utf8_replies_are_really_broken(
    fleet: SimFleet, http: aiohttp.ClientSession
) -> None:
    for fault in ("malformed_xml", "invalid_utf8"):
        d = dev(fleet, fault)
        header = wsse_header(d.username, d.password, datetime.now(UTC) + timedelta(seconds=d.clock_offset_s))
        middleware = aiohttp.DigestAuthMiddleware(d.username, d.password)
        async with aiohttp.ClientSession(timeout=TIMEOUT, middlewares=(middleware,)) as session:
            status, _h, raw = await post(session, d, envelope(op("GetDeviceInformation"), header=header))
        assert status == 200
        with pytest.raises(etree.XMLSyntaxError):
            etree.fromstring(raw, etree.XMLParser(resolve_entities=False, no_network=True))
        if fault == "invalid_utf8":
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
            assert d.manufacturer.encode() in raw
        # other operations of the same device are fine
        status, _h, raw = await post(http, d, envelope(op("GetSystemDateAndTime")))
        assert status == 200 and parse(raw) is not None


async def test_hang_never_answers(fleet: SimFleet) -> None:
    d = dev(fleet, "hang")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(d.host, d.port), 2)
    try:
        body = envelope(op("GetSystemDateAndTime"))
        writer.write(b"POST /onvif/device_service HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 1.0)
    finally:
        writer.close()


async def test_offline_refuses_connections(fleet: SimFleet) -> None:
    d = dev(fleet, "offline")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(asyncio.open_connection(d.host, d.port), 2)


async def test_slow_answers_after_a_second(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    d = dev(fleet, "slow")
    t0 = time.perf_counter()
    status, _h, _raw = await post(http, d, envelope(op("GetSystemDateAndTime")))
    elapsed = time.perf_counter() - t0
    assert status == 200 and 0.9 < elapsed < 4


async def test_private_and_zero_addresses_appear_only_in_text(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    for fault, pattern in (("private_addrs", r"^(192\.168\.|10\.)"), ("zero_addrs", r"^0\.0\.0\.0$")):
        d = dev(fleet, fault)
        status, _h, raw = await post(http, d, envelope(op("GetCapabilities", inner="<Category>All</Category>")))
        assert status == 200
        xaddrs = [x.text or "" for x in parse(raw).iter(f"{{{NS['tt']}}}XAddr")]
        assert xaddrs
        for x in xaddrs:
            host = re.match(r"http://([^:/]+)", x)
            assert host is not None and re.match(pattern, host.group(1)), x  # never connected to
        assert re.match(pattern, d.advertised_host)
        assert d.advertised_host in d.stream_uri(d.profiles[0]) or not d.rtsp_url_base


async def test_no_get_services_falls_back_to_get_capabilities(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    d = dev(fleet, "no_get_services")
    status, _h, raw = await post(
        http, d, envelope(op("GetServices", inner="<IncludeCapability>false</IncludeCapability>"))
    )
    assert status == 500 and "ter:ActionNotSupported" in fault_subcodes(parse(raw))
    status, _h, raw = await post(http, d, envelope(op("GetCapabilities", inner="<Category>All</Category>")))
    assert status == 200 and parse(raw).find(".//tt:Media/tt:XAddr", NS) is not None
    h = healthy(fleet, "wsse", media2=True)
    status, _h, raw = await post(
        http, h, envelope(op("GetServices", inner="<IncludeCapability>true</IncludeCapability>"))
    )
    assert status == 200
    namespaces = {n.text for n in parse(raw).iter(f"{{{NS['tds']}}}Namespace")}
    assert namespaces == {NS["tds"], NS["trt"], NS["tr2"]}
    assert parse(raw).find(".//tds:Service/tds:Capabilities", NS) is not None


async def test_auth_http_400_answers_failed_digest_with_400(fleet: SimFleet) -> None:
    d = dev(fleet, "auth_http_400")
    middleware = aiohttp.DigestAuthMiddleware(d.username, "wrong")
    async with aiohttp.ClientSession(timeout=TIMEOUT, middlewares=(middleware,)) as session:
        status, _h, raw = await post(session, d, envelope(op("GetDeviceInformation")))
    assert status == 400 and "ter:NotAuthorized" in fault_subcodes(parse(raw))
    normal = healthy(fleet, "digest")
    middleware = aiohttp.DigestAuthMiddleware(normal.username, "wrong")
    async with aiohttp.ClientSession(timeout=TIMEOUT, middlewares=(middleware,)) as session:
        status, _h, _raw = await post(session, normal, envelope(op("GetDeviceInformation")))
    assert status == 401


async def test_soap_versions_and_content_type_mismatch(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    d = healthy(fleet, "both")
    action = "http://www.onvif.org/ver10/device/wsdl/GetSystemDateAndTime"
    status, h, raw = await post(
        http, d, envelope(op("GetSystemDateAndTime"), soap12=False), soap12=False, action=action
    )
    assert status == 200 and h["Content-Type"].startswith("text/xml")
    assert parse(raw).tag == f"{{{NS['s11']}}}Envelope"
    m = dev(fleet, "soap_content_type_mismatch")
    status, h, raw = await post(http, m, envelope(op("GetSystemDateAndTime")))
    assert status == 200 and h["Content-Type"].startswith("text/xml") and parse(raw).tag == f"{{{NS['s12']}}}Envelope"
    status, h, raw = await post(
        http, m, envelope(op("GetSystemDateAndTime"), soap12=False), soap12=False, action=action
    )
    assert h["Content-Type"].startswith("application/soap+xml") and parse(raw).tag == f"{{{NS['s11']}}}Envelope"


async def test_unknown_operation_and_bad_requests(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    d = healthy(fleet, "wsse")
    header = wsse_header(d.username, d.password, datetime.now(UTC))
    status, _h, raw = await post(http, d, envelope(op("SystemReboot"), header=header))
    assert status == 500 and "ter:ActionNotSupported" in fault_subcodes(parse(raw))
    status, _h, _raw = await post(http, d, b"<not-xml")
    assert status == 400
    status, _h, _raw = await post(http, d, b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>")
    assert status == 400
    async with http.post(d.url, data=b"x" * ((1 << 20) + 10)) as resp:
        assert resp.status == 413


async def test_media_profiles_stream_and_snapshot(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    d = healthy(fleet, "both", media2=True)
    hdr = wsse_header(d.username, d.password, datetime.now(UTC))
    status, _h, raw = await post(http, d, envelope(op("GetProfiles", "trt"), header=hdr), path="/onvif/media_service")
    assert status == 200
    encodings = [e.text for e in parse(raw).iter(f"{{{NS['tt']}}}Encoding")]
    assert encodings and "H265" not in encodings  # H.265 is invisible through Media1
    assert parse(raw).find(".//tt:VideoEncoderConfiguration/tt:RateControl/tt:FrameRateLimit", NS) is not None
    status, _h, raw = await post(
        http, d, envelope(op("GetProfiles", "tr2", "<Type>All</Type>"), header=hdr), path="/onvif/media2_service"
    )
    assert status == 200 and "H265" in [e.text for e in parse(raw).iter(f"{{{NS['tt']}}}Encoding")]
    status, _h, raw = await post(
        http,
        d,
        envelope(
            op(
                "GetStreamUri",
                "trt",
                '<StreamSetup><Stream xmlns="http://www.onvif.org/ver10/schema">RTP-Unicast</Stream>'
                '<Transport xmlns="http://www.onvif.org/ver10/schema"><Protocol>RTSP</Protocol></Transport></StreamSetup>'
                "<ProfileToken>Profile_1</ProfileToken>",
            ),
            header=hdr,
        ),
        path="/onvif/media_service",
    )
    assert status == 200
    assert parse(raw).findtext(".//tt:Uri", namespaces=NS) == d.rtsp_url_base
    assert d.rtsp_url_base.startswith(f"rtsp://{d.host}:")
    status, _h, raw = await post(
        http,
        d,
        envelope(
            op("GetStreamUri", "tr2", "<Protocol>RtspUnicast</Protocol><ProfileToken>Profile_H265</ProfileToken>"),
            header=hdr,
        ),
        path="/onvif/media2_service",
    )
    assert status == 200 and parse(raw).findtext(".//tr2:Uri", namespaces=NS) == d.rtsp_url_base
    snapshot_op = op("GetSnapshotUri", "trt", "<ProfileToken>Profile_1</ProfileToken>")
    status, _h, raw = await post(http, d, envelope(snapshot_op, header=hdr), path="/onvif/media_service")
    snapshot_url = parse(raw).findtext(".//tt:Uri", namespaces=NS)
    assert status == 200 and snapshot_url and snapshot_url.startswith(f"http://{d.host}:")
    no_media2 = healthy(fleet, "both", media2=False)
    status, _h, _raw = await post(
        http, no_media2, envelope(op("GetProfiles", "tr2"), header=hdr), path="/onvif/media2_service"
    )
    assert status == 404
    middleware = aiohttp.DigestAuthMiddleware(d.username, d.password)
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT, middlewares=(middleware,)) as session,
        session.get(snapshot_url) as resp,
    ):
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
        jpeg = await resp.read()
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[2] == 3


async def test_scopes_interfaces_and_hostname(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    d = healthy(fleet, "wsse")
    hdr = wsse_header(d.username, d.password, datetime.now(UTC))
    status, _h, raw = await post(http, d, envelope(op("GetScopes"), header=hdr))
    items = [i.text for i in parse(raw).iter(f"{{{NS['tt']}}}ScopeItem")]
    assert status == 200 and "onvif://www.onvif.org/Profile/Streaming" in items
    assert any(i and i.startswith("onvif://www.onvif.org/name/") for i in items)
    status, _h, raw = await post(
        http, d, envelope(op("GetNetworkInterfaces"), header=wsse_header(d.username, d.password, datetime.now(UTC)))
    )
    assert status == 200 and parse(raw).findtext(".//tt:HwAddress", namespaces=NS) == d.mac
    status, _h, raw = await post(http, d, envelope(op("GetHostname")))
    assert status == 200 and parse(raw).findtext(".//tt:Name", namespaces=NS) == f"cam-{d.index:05d}"


# --- WS-Discovery ----------------------------------------------------------------------------------------------


def probe_message(message_id: str, types: str | None) -> bytes:
    types_el = f"<d:Types>{types}</d:Types>" if types is not None else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><e:Envelope xmlns:e="{NS["s12"]}" xmlns:w="{NS["wsa"]}" '
        f'xmlns:d="{NS["wsd"]}" xmlns:dn="http://www.onvif.org/ver10/network/wsdl" xmlns:tds="{NS["tds"]}">'
        f"<e:Header><w:MessageID>{message_id}</w:MessageID><w:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery"
        "</w:To><w:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</w:Action></e:Header>"
        f"<e:Body><d:Probe>{types_el}</d:Probe></e:Body></e:Envelope>"
    ).encode()


def probe(dest: tuple[str, int], types: str | None, *, window_s: float = 1.0) -> dict[str, tuple[str, bytes]]:
    """Send one Probe and collect answers for `window_s` (bounded): endpoint ref -> (source address, payload)."""
    message_id = f"urn:uuid:{uuid.uuid4()}"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", 0))
        sock.sendto(probe_message(message_id, types), dest)
        answers: dict[str, tuple[str, bytes]] = {}
        deadline = time.monotonic() + window_s
        for _ in range(10_000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                break
            root = parse(data)
            if root.findtext(".//wsa:RelatesTo", namespaces=NS) != message_id:
                continue
            epr = root.findtext(".//wsd:ProbeMatch/wsa:EndpointReference/wsa:Address", namespaces=NS)
            assert epr
            answers[epr] = (addr[0], data)
        return answers
    finally:
        sock.close()


async def test_multicast_probe_on_loopback(fleet: SimFleet) -> None:
    ours = {d.endpoint_ref: d for d in fleet.devices}
    answering = {d.endpoint_ref for d in fleet.devices if not d.faults & {"offline", "picky_probe"}}
    got = await asyncio.to_thread(probe, ("239.255.255.250", 3702), None)
    mine = {epr: v for epr, v in got.items() if epr in ours}
    assert set(mine) == answering
    for epr, (source, data) in mine.items():
        d = ours[epr]
        assert source == d.host  # answered unicast from the device's own address
        root = parse(data)
        assert root.findtext(".//wsd:XAddrs", namespaces=NS) == d.xaddr
        assert "dn:NetworkVideoTransmitter" in (root.findtext(".//wsd:Types", namespaces=NS) or "")
        assert root.findtext(".//wsd:MetadataVersion", namespaces=NS) == "1"
    picky = dev(fleet, "picky_probe")
    assert picky.endpoint_ref not in mine
    got = await asyncio.to_thread(probe, ("239.255.255.250", 3702), "dn:NetworkVideoTransmitter")
    assert picky.endpoint_ref in got and dev(fleet, "offline").endpoint_ref not in got
    got = await asyncio.to_thread(probe, ("239.255.255.250", 3702), "dn:Printer", window_s=0.4)
    assert not set(got) & set(ours)


async def test_unicast_probe_to_one_device(fleet: SimFleet) -> None:
    d = healthy(fleet, "digest")
    got = await asyncio.to_thread(probe, (d.host, 3702), "tds:Device", window_s=0.5)
    assert set(got) == {d.endpoint_ref} and got[d.endpoint_ref][0] == d.host
    private = dev(fleet, "private_addrs")
    got = await asyncio.to_thread(probe, (private.host, 3702), None, window_s=0.5)
    xaddrs = parse(got[private.endpoint_ref][1]).findtext(".//wsd:XAddrs", namespaces=NS)
    assert xaddrs == private.xaddr and private.host not in (xaddrs or "")


# --- RTSP and a real third-party ONVIF client ------------------------------------------------------------------


def read_one_frame(url: str) -> tuple[bool, tuple[int, ...]]:
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp|analyzeduration;0|probesize;32768"
    import cv2

    cap = cv2.VideoCapture(
        url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 8000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 8000]
    )
    try:
        for _ in range(50):
            ok, frame = cap.read()
            if ok and frame is not None:
                return True, tuple(frame.shape)
        return False, ()
    finally:
        cap.release()


async def test_rtsp_serves_a_stream_on_the_device_address(fleet: SimFleet) -> None:
    assert fleet.rtsp is not None and fleet.rtsp.running
    d = healthy(fleet, "wsse")
    ok, shape = await asyncio.wait_for(asyncio.to_thread(read_one_frame, d.rtsp_url_base), 30)
    assert ok and shape == (240, 320, 3)


async def test_onvif_zeep_async_client_works(fleet: SimFleet) -> None:
    from onvif import ONVIFCamera

    for d in (healthy(fleet, "both"), dev(fleet, "clock_skew"), dev(fleet, "no_get_services")):
        cam = ONVIFCamera(d.host, d.port, d.username, d.password, adjust_time=True)
        try:
            await asyncio.wait_for(cam.update_xaddrs(), 15)
            mgmt = await cam.create_devicemgmt_service()
            info = await asyncio.wait_for(mgmt.GetDeviceInformation(), 10)
            assert info.SerialNumber == d.serial and info.Manufacturer == d.manufacturer
            media = await cam.create_media_service()
            profiles = await asyncio.wait_for(media.GetProfiles(), 10)
            assert [p.token for p in profiles] == [p.token for p in d.media1_profiles]
            assert profiles[0].VideoEncoderConfiguration.Resolution.Width == d.profiles[0].width
        finally:
            await cam.close()


async def test_rtsp_serves_a_video_file(test_data: Path) -> None:
    from probes.sim.rtsp import start_rtsp_server

    # H.264 MP4: decodable by the base GStreamer plugins (the MPEG-4 Part 2 AVI needs gstreamer1.0-libav)
    server = await asyncio.to_thread(start_rtsp_server, 1, None, test_data / "video" / "pedestrians_480x360_8s.mp4")
    try:
        ok, shape = await asyncio.wait_for(asyncio.to_thread(read_one_frame, server.url("/cam0")), 30)
        assert ok and shape == (240, 320, 3)
    finally:
        await asyncio.to_thread(server.stop)
    assert not server.running


async def test_a_dead_rtsp_server_is_started_again_on_the_same_port() -> None:
    import signal

    base = _test_base_host().rsplit(".", 2)[0] + ".252.1"  # beside the module fleet's addresses
    async with SimFleet(2, fault_mix={}, base_host=base, port=0, discovery=False) as sim:
        first = sim.rtsp
        assert first is not None and first.running
        os.kill(first._proc.pid, signal.SIGKILL)  # as gst-rtsp-server's own abort would end it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (sim.rtsp is first or sim.rtsp is None or not sim.rtsp.running):
            await asyncio.sleep(0.2)
        again = sim.rtsp
        assert again is not None and again is not first and again.running and again.port == first.port
        ok, shape = await asyncio.wait_for(asyncio.to_thread(read_one_frame, sim.device(1).rtsp_url_base), 30)
        assert ok and shape == (240, 320, 3)


async def test_credentials_file_round_trip(fleet: SimFleet, tmp_path: Path) -> None:
    path = fleet.credentials.write(tmp_path / "fleet-credentials.json")
    assert path.stat().st_mode & 0o077 == 0
    again = FleetCredentials.read(path)
    assert again == fleet.credentials
    assert {c.host for c in again.devices} == {d.host for d in fleet.devices}


async def test_run_fleet_prints_a_summary_without_passwords(capsys: pytest.CaptureFixture[str]) -> None:
    base = _test_base_host().rsplit(".", 2)[0] + ".251.1"  # beside the module fleet's addresses
    rc = await asyncio.wait_for(
        asyncio.to_thread(run_fleet, 30, port=0, base_host=base, rtsp=False, discovery=False, duration_s=0.3), 30
    )
    out = capsys.readouterr().out
    assert rc == 0 and "30 simulated ONVIF devices" in out and DEFAULT_PASSWORD not in out
