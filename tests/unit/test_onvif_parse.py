"""Pure tests of the ONVIF/WS-Discovery device library: reply parsing, fault sorting, auth maths, budget.

Replies are written by hand from the ONVIF specifications in the shapes real firmwares send: Hikvision-like
(env/tt/tds/trt), Dahua-like (SOAP-ENV, default namespaces), Axis-like (SOAP-ENV + tds/trt/tt), Media2 (tr2),
gSOAP SOAP 1.1 faults. No sockets here.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest

from probes.discovery.scan import count_addresses, iter_addresses, scan_range
from probes.discovery.wsdiscovery import DEFAULT_VARIANTS, ProbeVariant, build_probe, parse_probe_matches
from probes.errors import LOGIN_BUDGET_EXHAUSTED, Cause, Failure, scrub
from probes.onvif.addresses import parse_target, rewrite_uri, strip_credentials
from probes.onvif.auth import (
    Credential,
    LoginBudget,
    digest_authorization,
    digest_response,
    parse_digest_challenges,
    wsse_header,
    wsse_password_digest,
)
from probes.onvif.parse import (
    MEDIA2_NS,
    MEDIA_NS,
    normalise_mac,
    parse_capabilities,
    parse_device_information,
    parse_hostname,
    parse_media2_profiles,
    parse_media_profiles,
    parse_network_interfaces,
    parse_scopes,
    parse_services,
    parse_system_date_and_time,
    parse_uri,
    scope_fields,
)
from probes.onvif.soap import (
    NS,
    MalformedReply,
    Ops,
    build_envelope,
    fault_cause,
    parse_reply,
    parse_xml,
    request_headers,
    status_cause,
)
from probes.results import DeviceReport, DiscoveredDevice, MediaProfile, as_dict

S12 = "http://www.w3.org/2003/05/soap-envelope"
S11 = "http://schemas.xmlsoap.org/soap/envelope/"


def hik(body: str) -> bytes:
    """Hikvision-style envelope: env prefix, every namespace declared on the root."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<env:Envelope xmlns:env="{S12}" xmlns:tt="http://www.onvif.org/ver10/schema" '
        'xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:trt="http://www.onvif.org/ver10/media/wsdl" '
        'xmlns:tr2="http://www.onvif.org/ver20/media/wsdl" xmlns:ter="http://www.onvif.org/ver10/error">'
        f"<env:Body>{body}</env:Body></env:Envelope>"
    ).encode()


def dahua(body: str, soap_ns: str = S12) -> bytes:
    """Dahua-style: SOAP-ENV prefix, a header, namespaces declared where used."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{soap_ns}">'
        f"<SOAP-ENV:Header></SOAP-ENV:Header><SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data, usedforsecurity=False).digest()


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def payload(data: bytes):
    reply = parse_reply(data)
    assert reply.fault is None
    return reply.payload


# --- device service replies ---------------------------------------------------------------------------------


def test_system_date_and_time_utc_and_local_fallback():
    body = (
        "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType>"
        "<tt:DaylightSavings>false</tt:DaylightSavings><tt:TimeZone><tt:TZ>CST-8:00:00</tt:TZ></tt:TimeZone>"
        "<tt:UTCDateTime><tt:Time><tt:Hour>3</tt:Hour><tt:Minute>4</tt:Minute><tt:Second>5</tt:Second></tt:Time>"
        "<tt:Date><tt:Year>2024</tt:Year><tt:Month>2</tt:Month><tt:Day>29</tt:Day></tt:Date></tt:UTCDateTime>"
        "<tt:LocalDateTime><tt:Time><tt:Hour>11</tt:Hour><tt:Minute>4</tt:Minute><tt:Second>5</tt:Second>"
        "</tt:Time><tt:Date><tt:Year>2024</tt:Year><tt:Month>2</tt:Month><tt:Day>29</tt:Day></tt:Date>"
        "</tt:LocalDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
    )
    t = parse_system_date_and_time(payload(hik(body)))
    assert t.utc == dt.datetime(2024, 2, 29, 3, 4, 5, tzinfo=dt.UTC)
    assert t.ntp is True and t.from_local is False
    # A device sending only LocalDateTime: taken as its clock (what it checks WS-Security Created against).
    local_only = body.split("<tt:UTCDateTime>")[0] + "<tt:LocalDateTime>" + body.split("<tt:LocalDateTime>")[1]
    t = parse_system_date_and_time(payload(hik(local_only)))
    assert t.from_local and t.utc.hour == 11


def test_system_date_and_time_rolls_over_hour_24_and_rejects_garbage():
    time_24 = (
        '<GetSystemDateAndTimeResponse xmlns="http://www.onvif.org/ver10/device/wsdl"><SystemDateAndTime>'
        '<UTCDateTime xmlns="http://www.onvif.org/ver10/schema"><Time><Hour>24</Hour><Minute>0</Minute>'
        "<Second>0</Second></Time><Date><Year>2023</Year><Month>12</Month><Day>31</Day></Date></UTCDateTime>"
        "</SystemDateAndTime></GetSystemDateAndTimeResponse>"
    )
    assert parse_system_date_and_time(payload(dahua(time_24))).utc == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(ValueError):
        parse_system_date_and_time(payload(dahua(time_24.replace("<Month>12", "<Month>13"))))
    with pytest.raises(ValueError):
        parse_system_date_and_time(payload(dahua("<GetSystemDateAndTimeResponse/>")))


def test_device_information_hikvision_and_dahua_prefixes():
    hik_body = (
        "<tds:GetDeviceInformationResponse><tds:Manufacturer>HIKVISION</tds:Manufacturer>"
        "<tds:Model>DS-2CD2143G2-I</tds:Model><tds:FirmwareVersion>V5.7.3 build 220112</tds:FirmwareVersion>"
        "<tds:SerialNumber>DS-2CD2143G2-I20220101AAWRJ12345678</tds:SerialNumber>"
        "<tds:HardwareId>88</tds:HardwareId></tds:GetDeviceInformationResponse>"
    )
    info = parse_device_information(payload(hik(hik_body)))
    assert (info.manufacturer, info.model, info.firmware) == ("HIKVISION", "DS-2CD2143G2-I", "V5.7.3 build 220112")
    assert info.serial == "DS-2CD2143G2-I20220101AAWRJ12345678" and info.hardware_id == "88"
    dahua_body = (
        '<GetDeviceInformationResponse xmlns="http://www.onvif.org/ver10/device/wsdl">'
        "<Manufacturer>Dahua</Manufacturer><Model> IPC-HFW2431S </Model><FirmwareVersion>2.800.0000000.29.R"
        "</FirmwareVersion><SerialNumber>7H0ABC</SerialNumber><HardwareId></HardwareId>"
        "</GetDeviceInformationResponse>"
    )
    info = parse_device_information(payload(dahua(dahua_body)))
    assert info.model == "IPC-HFW2431S" and info.hardware_id is None


def test_services_and_capabilities_axis_style():
    services = dahua(
        '<tds:GetServicesResponse xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
        'xmlns:tt="http://www.onvif.org/ver10/schema">'
        "<tds:Service><tds:Namespace>http://www.onvif.org/ver10/device/wsdl</tds:Namespace>"
        "<tds:XAddr>http://192.168.0.90/onvif/services</tds:XAddr><tds:Version><tt:Major>2</tt:Major>"
        "<tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
        "<tds:Service><tds:Namespace>http://www.onvif.org/ver10/media/wsdl</tds:Namespace>"
        "<tds:XAddr>http://192.168.0.90/onvif/services</tds:XAddr></tds:Service>"
        "<tds:Service><tds:Namespace>http://www.onvif.org/ver20/media/wsdl</tds:Namespace>"
        "<tds:XAddr>http://192.168.0.90/onvif/services</tds:XAddr></tds:Service>"
        "</tds:GetServicesResponse>"
    )
    found = parse_services(payload(services))
    assert set(found) == {NS["tds"], MEDIA_NS, MEDIA2_NS}
    caps = hik(
        "<tds:GetCapabilitiesResponse><tds:Capabilities>"
        "<tt:Device><tt:XAddr>http://10.0.0.5/onvif/device_service</tt:XAddr></tt:Device>"
        "<tt:Events><tt:XAddr>http://10.0.0.5/onvif/Events</tt:XAddr><tt:WSPullPointSupport>true"
        "</tt:WSPullPointSupport></tt:Events>"
        "<tt:Media><tt:XAddr>http://10.0.0.5/onvif/Media</tt:XAddr><tt:StreamingCapabilities>"
        "<tt:RTP_TCP>true</tt:RTP_TCP></tt:StreamingCapabilities></tt:Media>"
        "<tt:Extension><tt:DeviceIO><tt:XAddr>http://10.0.0.5/onvif/DeviceIO</tt:XAddr></tt:DeviceIO>"
        "</tt:Extension></tds:Capabilities></tds:GetCapabilitiesResponse>"
    )
    found = parse_capabilities(payload(caps))
    assert found[MEDIA_NS] == "http://10.0.0.5/onvif/Media"
    assert found["http://www.onvif.org/ver10/deviceIO/wsdl"] == "http://10.0.0.5/onvif/DeviceIO"
    assert found["http://www.onvif.org/ver10/events/wsdl"].endswith("/Events")


def test_scopes_are_url_decoded():
    body = "".join(
        f"<tds:Scopes><tt:ScopeDef>Fixed</tt:ScopeDef><tt:ScopeItem>{item}</tt:ScopeItem></tds:Scopes>"
        for item in (
            "onvif://www.onvif.org/type/video_encoder",
            "onvif://www.onvif.org/Name/%E7%BD%97%E5%BA%84%E5%8C%BA%20Gate%201",
            "onvif://www.onvif.org/location/country/china",
            "onvif://www.onvif.org/location/city/linyi",
            "onvif://www.onvif.org/hardware/DS-2CD2143G2-I",
            "onvif://www.onvif.org/location/city/linyi",
        )
    )
    scopes = parse_scopes(payload(hik(f"<tds:GetScopesResponse>{body}</tds:GetScopesResponse>")))
    assert len(scopes) == 5  # duplicates dropped
    fields = scope_fields(scopes)
    assert fields.name == "罗庄区 Gate 1"
    assert fields.location == "country/china, city/linyi"
    assert fields.hardware == "DS-2CD2143G2-I"
    assert scope_fields(["http://example.com/name/x"]).name is None


def test_network_interfaces_mac_prefers_answering_address():
    body = (
        "<tds:GetNetworkInterfacesResponse>"
        '<tds:NetworkInterfaces token="eth1"><tt:Enabled>false</tt:Enabled><tt:Info><tt:Name>eth1</tt:Name>'
        "<tt:HwAddress>00-40-8C-AA-BB-01</tt:HwAddress></tt:Info></tds:NetworkInterfaces>"
        '<tds:NetworkInterfaces token="eth0"><tt:Enabled>true</tt:Enabled><tt:Info><tt:Name>eth0</tt:Name>'
        "<tt:HwAddress>44:19:B6:01:02:03</tt:HwAddress><tt:MTU>1500</tt:MTU></tt:Info><tt:IPv4>"
        "<tt:Enabled>true</tt:Enabled><tt:Config><tt:Manual><tt:Address>192.168.1.64</tt:Address>"
        "<tt:PrefixLength>24</tt:PrefixLength></tt:Manual><tt:DHCP>false</tt:DHCP></tt:Config></tt:IPv4>"
        "</tds:NetworkInterfaces>"
        '<tds:NetworkInterfaces token="wlan0"><tt:Enabled>true</tt:Enabled><tt:Info>'
        "<tt:HwAddress>44:19:b6:01:02:04</tt:HwAddress></tt:Info><tt:IPv4><tt:Config><tt:FromDHCP>"
        "<tt:Address>10.9.8.7</tt:Address></tt:FromDHCP></tt:Config></tt:IPv4></tds:NetworkInterfaces>"
        "</tds:GetNetworkInterfacesResponse>"
    )
    reply = payload(hik(body))
    assert parse_network_interfaces(reply) == "44:19:b6:01:02:03"  # first enabled
    assert parse_network_interfaces(reply, "10.9.8.7") == "44:19:b6:01:02:04"
    assert normalise_mac("001A2B3C4D5E") == "00:1a:2b:3c:4d:5e"
    assert normalise_mac("00:00:00:00:00:00") is None
    assert normalise_mac("not a mac") is None


def test_hostname():
    body = (
        "<tds:GetHostnameResponse><tds:HostnameInformation><tt:FromDHCP>false</tt:FromDHCP>"
        "<tt:Name>cam-gate-1</tt:Name></tds:HostnameInformation></tds:GetHostnameResponse>"
    )
    assert parse_hostname(payload(hik(body))) == "cam-gate-1"


# --- media -------------------------------------------------------------------------------------------------


MEDIA1_PROFILES = (
    '<trt:GetProfilesResponse><trt:Profiles token="Profile_1" fixed="true"><tt:Name>mainStream</tt:Name>'
    '<tt:VideoSourceConfiguration token="VideoSourceToken"><tt:Name>VideoSourceConfig</tt:Name>'
    '<tt:UseCount>2</tt:UseCount><tt:SourceToken>VideoSource_1</tt:SourceToken><tt:Bounds x="0" y="0" '
    'width="2688" height="1520"/></tt:VideoSourceConfiguration>'
    '<tt:VideoEncoderConfiguration token="VideoEncoderToken_1"><tt:Name>VideoEncoder_1</tt:Name>'
    "<tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>2688</tt:Width>"
    "<tt:Height>1520</tt:Height></tt:Resolution><tt:Quality>5.000000</tt:Quality><tt:RateControl>"
    "<tt:FrameRateLimit>25</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval>"
    "<tt:BitrateLimit>4096</tt:BitrateLimit></tt:RateControl><tt:H264><tt:GovLength>50</tt:GovLength>"
    "<tt:H264Profile>Main</tt:H264Profile></tt:H264></tt:VideoEncoderConfiguration></trt:Profiles>"
    '<trt:Profiles token="Profile_2" fixed="true"><tt:Name>subStream</tt:Name>'
    '<tt:VideoEncoderConfiguration token="VideoEncoderToken_2"><tt:Name>VideoEncoder_2</tt:Name>'
    "<tt:Encoding>JPEG</tt:Encoding><tt:Resolution><tt:Width>640</tt:Width><tt:Height>360</tt:Height>"
    "</tt:Resolution><tt:RateControl><tt:FrameRateLimit>0</tt:FrameRateLimit><tt:BitrateLimit>512"
    "</tt:BitrateLimit></tt:RateControl></tt:VideoEncoderConfiguration></trt:Profiles>"
    '<trt:Profiles token="Audio_Only"><tt:Name>audio</tt:Name></trt:Profiles>'
    "</trt:GetProfilesResponse>"
)

MEDIA2_PROFILES = (
    '<tr2:GetProfilesResponse xmlns:tr2="http://www.onvif.org/ver20/media/wsdl" '
    'xmlns:tt="http://www.onvif.org/ver10/schema"><tr2:Profiles token="Profile_1" fixed="true">'
    "<tr2:Name>mainStream</tr2:Name><tr2:Configurations>"
    '<tr2:VideoSource token="VideoSourceToken"><tt:Name>VideoSourceConfig</tt:Name>'
    "<tt:SourceToken>VideoSource_1</tt:SourceToken></tr2:VideoSource>"
    '<tr2:VideoEncoder token="VideoEncoderToken_1" GovLength="50" Profile="Main"><tt:Name>VideoEncoder_1</tt:Name>'
    "<tt:UseCount>1</tt:UseCount><tt:Encoding>H265</tt:Encoding><tt:Resolution><tt:Width>3840</tt:Width>"
    '<tt:Height>2160</tt:Height></tt:Resolution><tt:RateControl ConstantBitRate="false">'
    "<tt:FrameRateLimit>12.5</tt:FrameRateLimit><tt:BitrateLimit>6144</tt:BitrateLimit></tt:RateControl>"
    "<tt:Quality>5</tt:Quality></tr2:VideoEncoder></tr2:Configurations></tr2:Profiles>"
    '<tr2:Profiles token="Profile_3"><tr2:Name>third</tr2:Name><tr2:Configurations><tr2:VideoEncoder>'
    "<tt:Encoding>MPV4-ES</tt:Encoding></tr2:VideoEncoder></tr2:Configurations></tr2:Profiles>"
    "</tr2:GetProfilesResponse>"
)


def test_media1_profiles():
    profiles = parse_media_profiles(payload(hik(MEDIA1_PROFILES)))
    assert [p.token for p in profiles] == ["Profile_1", "Profile_2", "Audio_Only"]
    main, sub, audio = profiles
    assert (main.name, main.encoding, main.width, main.height, main.fps, main.bitrate) == (
        "mainStream", "H264", 2688, 1520, 25.0, 4096,
    )
    assert sub.encoding == "JPEG" and sub.fps is None  # 0 means "not reported"
    assert audio.encoding is None and audio.width is None


def test_media2_profiles_show_h265():
    profiles = parse_media2_profiles(payload(dahua(MEDIA2_PROFILES)))
    main, third = profiles
    assert (main.token, main.encoding, main.width, main.height, main.fps, main.bitrate) == (
        "Profile_1", "H265", 3840, 2160, 12.5, 6144,
    )
    assert third.encoding == "MPEG4" and third.name == "third"


def test_stream_and_snapshot_uri_media1_and_media2():
    media1 = hik(
        "<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>rtsp://192.168.1.64:554/Streaming/Channels/101?"
        "transportmode=unicast&amp;profile=Profile_1</tt:Uri><tt:InvalidAfterConnect>false"
        "</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT60S"
        "</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>"
    )
    uri = parse_uri(payload(media1))
    assert uri == "rtsp://192.168.1.64:554/Streaming/Channels/101?transportmode=unicast&profile=Profile_1"
    media2 = dahua(
        '<tr2:GetSnapshotUriResponse xmlns:tr2="http://www.onvif.org/ver20/media/wsdl"><tr2:Uri>'
        "http://0.0.0.0/onvif/snapshot?channel=1</tr2:Uri></tr2:GetSnapshotUriResponse>"
    )
    assert parse_uri(payload(media2)) == "http://0.0.0.0/onvif/snapshot?channel=1"


# --- address rewriting (DOMAIN 7.4) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        # private LAN address behind NAT: host rewritten, RTSP port kept
        ("rtsp://192.168.1.64:554/Streaming/Channels/101", "rtsp://127.1.0.5:554/Streaming/Channels/101"),
        ("rtsp://10.1.2.3:8554/live", "rtsp://127.1.0.5:8554/live"),
        # HTTP service and snapshot addresses take the port that answered too (one NAT forward)
        ("http://192.168.1.64/onvif/Media", "http://127.1.0.5:8080/onvif/Media"),
        ("http://0.0.0.0:80/onvif/snapshot?channel=1", "http://127.1.0.5:8080/onvif/snapshot?channel=1"),
        ("http:///onvif/device_service", "http://127.1.0.5:8080/onvif/device_service"),
        # a device on this machine's loopback naming another loopback address names another service here: kept,
        # and left to the address policy (probes.policy) to refuse; from a device elsewhere it means the device
        ("http://127.0.0.1/onvif/device_service", "http://127.0.0.1/onvif/device_service"),
        ("http://169.254.3.4/onvif/device_service", "http://127.1.0.5:8080/onvif/device_service"),
        ("http://100.64.0.9/onvif/device_service", "http://127.1.0.5:8080/onvif/device_service"),
        # already the answering host, a public address, a DNS name, multicast: untouched
        ("http://127.1.0.5:8080/onvif/Media", "http://127.1.0.5:8080/onvif/Media"),
        ("rtsp://58.56.10.9:554/live", "rtsp://58.56.10.9:554/live"),
        ("rtsp://cam7.example.org/live", "rtsp://cam7.example.org/live"),
        ("rtsp://239.1.1.1:5000/mc", "rtsp://239.1.1.1:5000/mc"),
        # credentials never survive, neither userinfo nor login query parameters
        ("rtsp://admin:12345@192.168.1.64/h264", "rtsp://127.1.0.5/h264"),
        ("rtsp://58.56.10.9/live?channel=1&user=admin&password=12345", "rtsp://58.56.10.9/live?channel=1"),
        # https service while we talked http: keep its port
        ("https://192.168.1.64:443/onvif/device_service", "https://127.1.0.5:443/onvif/device_service"),
    ],
)
def test_rewrite_uri(uri, expected):
    assert rewrite_uri(uri, "127.1.0.5", 8080, answered_scheme="http") == expected


def test_rewrite_ipv6_and_strip_credentials():
    assert rewrite_uri("http://[fe80::1]/onvif/device_service", "2001:db8::7", 80) == (
        "http://[2001:db8::7]/onvif/device_service"
    )
    assert strip_credentials("rtsp://u:p%40ss@cam/x") == "rtsp://cam/x"


def test_parse_target_forms():
    assert parse_target("10.0.0.1").url == "http://10.0.0.1:80/onvif/device_service"
    assert parse_target("10.0.0.1", port=8080).key == "10.0.0.1:8080"
    assert parse_target("10.0.0.1:8000").port == 8000
    assert parse_target("http://admin:pw@10.0.0.1/onvif/device_service").url == (
        "http://10.0.0.1:80/onvif/device_service"
    )
    assert parse_target("https://cam.example/onvif/services").port == 443
    assert parse_target("[fd00::5]:8080").key == "[fd00::5]:8080"
    with pytest.raises(ValueError):
        parse_target("rtsp://10.0.0.1/")


# --- faults and malformed replies (DOMAIN 7.9) ------------------------------------------------------------------


def fault12(code: str, subcodes: list[str], reason: str) -> bytes:
    sub = ""
    for value in reversed(subcodes):
        sub = f"<env:Subcode><env:Value>{value}</env:Value>{sub}</env:Subcode>"
    return hik(
        f"<env:Fault><env:Code><env:Value>env:{code}</env:Value>{sub}</env:Code>"
        f'<env:Reason><env:Text xml:lang="en">{reason}</env:Text></env:Reason></env:Fault>'
    )


def fault11(faultcode: str, faultstring: str, prefix_ns: str = "") -> bytes:
    return dahua(
        f"<SOAP-ENV:Fault{prefix_ns}><faultcode>{faultcode}</faultcode><faultstring>{faultstring}</faultstring>"
        "</SOAP-ENV:Fault>",
        soap_ns=S11,
    )


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (fault12("Sender", ["ter:NotAuthorized"], "Sender not Authorized"), Cause.AUTH),
        (fault12("Receiver", ["ter:ActionNotSupported"], "Optional Action Not Implemented"), Cause.NOT_SUPPORTED),
        (fault12("Sender", ["ter:InvalidArgVal", "ter:NoProfile"], "No such profile"), Cause.PROTOCOL),
        (fault12("Sender", ["wsse:FailedAuthentication"], "The security token could not be authenticated"),
         Cause.AUTH),
        (fault12("Sender", ["wsu:MessageExpired"], "The message has expired"), Cause.CLOCK_SKEW),
        (fault12("Receiver", [], "Method not implemented"), Cause.NOT_SUPPORTED),
        # gSOAP's classic reply to an unknown operation, SOAP 1.1
        (fault11("SOAP-ENV:Client", "Method 'tds:GetServices' not implemented: method name or namespace not "
                 "recognized"), Cause.NOT_SUPPORTED),
        (fault11("wsse:FailedAuthentication", "Authentication failed",
                 ' xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"'),
         Cause.AUTH),
        (fault11("SOAP-ENV:Server", "Sender not authorized"), Cause.AUTH),
    ],
)
def test_faults_are_classified(data, cause):
    reply = parse_reply(data)
    assert reply.fault is not None and reply.payload is None
    assert fault_cause(reply.fault) is cause


def test_fault_version_and_details():
    reply = parse_reply(fault12("Sender", ["ter:NotAuthorized"], "Sender not Authorized"))
    assert reply.soap == "1.2"
    assert reply.fault is not None and reply.fault.subcodes == ("NotAuthorized",)
    assert "NotAuthorized" in str(reply.fault)
    reply = parse_reply(fault11("SOAP-ENV:Client", "bad"))
    assert reply.soap == "1.1" and reply.fault is not None and reply.fault.code == "Client"


def test_http_status_causes():
    assert status_cause(401) is Cause.AUTH
    assert status_cause(403) is Cause.AUTH
    assert status_cause(404) is Cause.NOT_SUPPORTED
    assert status_cause(502) is Cause.HTTP_ERROR


def test_soap11_body_and_empty_success_body():
    # A SOAP 1.1 envelope (whatever content type it came with) parses the same way.
    body = '<GetScopesResponse xmlns="http://www.onvif.org/ver10/device/wsdl"/>'
    reply = parse_reply(dahua(body, soap_ns=S11))
    assert reply.soap == "1.1" and reply.payload is not None
    empty = parse_reply(b"  \r\n")
    assert empty.payload is None and empty.fault is None
    empty_body = parse_reply(hik(""))
    assert empty_body.payload is None and empty_body.fault is None
    assert parse_scopes(empty_body.payload) == ()


def test_invalid_utf8_device_information_is_recovered():
    # GBK bytes in a document declared UTF-8, plus a stray 0xFF (Chinese firmwares, DOMAIN 7.9).
    body = (
        b"<tds:GetDeviceInformationResponse><tds:Manufacturer>HIKVISION " + "海康威视".encode("gbk") + b"\xff"
        b"</tds:Manufacturer><tds:Model>DS-2DE4425IW-DE " + "球机".encode("gbk") + b"</tds:Model>"
        b"<tds:FirmwareVersion>V5.7.3</tds:FirmwareVersion><tds:SerialNumber>DS123\x01</tds:SerialNumber>"
        b"</tds:GetDeviceInformationResponse>"
    )
    data = hik("@@").replace(b"@@", body)
    reply = parse_reply(data)
    assert reply.recovered
    info = parse_device_information(reply.payload)
    assert info.manufacturer == "HIKVISION 海康威视\ufffd"
    assert info.model == "DS-2DE4425IW-DE 球机"
    assert info.firmware == "V5.7.3"
    assert info.serial is not None and info.serial.startswith("DS123")


def test_malformed_xml_keeps_what_is_readable():
    # A raw '&' and an element never closed: the recovering parse keeps the fields (DOMAIN 7.9).
    body = (
        "<tds:GetDeviceInformationResponse><tds:Manufacturer>Dahua</tds:Manufacturer>"
        "<tds:Model>IPC-HFW2431S & Co</tds:Model><tds:FirmwareVersion>2.800.0000000.29.R"
        "<tds:SerialNumber>7H0ABC</tds:SerialNumber></tds:GetDeviceInformationResponse>"
    )
    reply = parse_reply(hik(body))
    assert reply.recovered
    info = parse_device_information(reply.payload)
    assert info.model == "IPC-HFW2431S & Co"
    assert info.firmware == "2.800.0000000.29.R"  # not swallowing the serial that follows
    assert info.serial == "7H0ABC"


def test_unusable_replies_raise_malformed():
    with pytest.raises(MalformedReply):
        parse_reply(b"<html><body>404 Not Found</body></html>")
    with pytest.raises(MalformedReply):
        parse_reply(b"\x00\x01\x02 binary garbage")
    with pytest.raises(MalformedReply):
        parse_reply(f'<e:Envelope xmlns:e="{S12}"><e:Header/></e:Envelope>'.encode())


def test_entities_are_not_expanded():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><x>&lol2;</x>'
        b"</env:Body></env:Envelope>"
    )
    root, _ = parse_xml(bomb)
    assert "lollol" not in "".join(root.itertext())


# --- requests ----------------------------------------------------------------------------------------------


def test_envelopes_and_headers():
    data = build_envelope(Ops.media_stream_uri("Pro<file>&1"))
    reply = parse_reply(data)  # our own request is a well-formed SOAP 1.2 envelope
    assert reply.soap == "1.2"
    assert b"Pro&lt;file&gt;&amp;1" in data and b"RTP-Unicast" in data
    headers = request_headers(Ops.GET_DEVICE_INFORMATION)
    assert headers["Content-Type"] == (
        'application/soap+xml; charset=utf-8; action="http://www.onvif.org/ver10/device/wsdl/GetDeviceInformation"'
    )
    headers11 = request_headers(Ops.GET_DEVICE_INFORMATION, "1.1")
    assert headers11["Content-Type"].startswith("text/xml") and headers11["SOAPAction"].startswith('"http')
    assert parse_reply(build_envelope(Ops.GET_SCOPES, soap="1.1")).soap == "1.1"
    assert Ops.media2_stream_uri("t").action == "http://www.onvif.org/ver20/media/wsdl/GetStreamUri"


# --- auth maths ------------------------------------------------------------------------------------------------


def test_wsse_digest_known_vector():
    nonce = bytes(range(16))
    created = "2024-05-01T08:00:00Z"
    expected = base64.b64encode(_sha1(nonce + created.encode() + b"Sim-Cam-2024")).decode()
    assert wsse_password_digest(nonce, created, "Sim-Cam-2024") == expected


def test_wsse_header_signs_with_device_clock():
    now = dt.datetime(2024, 5, 1, 8, 0, 0, tzinfo=dt.UTC)
    nonce = b"\x01" * 16
    header = wsse_header(Credential("ad<min", "pw"), clock_offset_s=8 * 3600 + 0.4, now=now, nonce=nonce)
    # Created is the device's clock (ours + offset), so a camera on local-time-as-UTC accepts it (DOMAIN 7.1).
    assert "<wsu:Created>2024-05-01T16:00:00Z</wsu:Created>" in header
    digest = base64.b64encode(_sha1(nonce + b"2024-05-01T16:00:00Z" + b"pw")).decode()
    assert digest in header
    assert "ad&lt;min" in header and ">pw<" not in header
    assert base64.b64encode(nonce).decode() in header


def test_digest_rfc7616_examples():
    # RFC 7616 section 3.9.1: both the SHA-256 and the MD5 challenge of the example.
    header = (
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS", '
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    sha, md5 = parse_digest_challenges([header])
    assert sha.algorithm == "SHA-256" and md5.algorithm == "MD5"  # strongest first
    assert sha.qop == ("auth", "auth-int")
    cred = Credential("Mufasa", "Circle of Life")
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    uri = "/dir/index.html"
    assert digest_response(sha, cred, method="GET", uri=uri, nc=1, cnonce=cnonce) == (
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", "auth",
    )
    assert digest_response(md5, cred, method="GET", uri=uri, nc=1, cnonce=cnonce) == (
        "8ca523f5e9506fed4657c9700eebdbec", "auth",
    )
    authorization = digest_authorization(sha, cred, method="GET", uri=uri, nc=1, cnonce=cnonce)
    assert 'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"' in authorization
    assert "qop=auth" in authorization and "nc=00000001" in authorization
    assert 'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"' in authorization
    assert "Circle" not in authorization


def test_digest_rfc2617_example_and_other_schemes_ignored():
    header = (
        'Basic realm="cam", Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    (challenge,) = parse_digest_challenges([header, 'Bearer realm="x"', "Negotiate"])
    cred = Credential("Mufasa", "Circle Of Life")
    response, qop = digest_response(challenge, cred, method="GET", uri="/dir/index.html", nc=1, cnonce="0a4f113b")
    assert (response, qop) == ("6629fae49393a05397450978507c4ef1", "auth")
    # RFC 2069 style (no qop) as some old cameras still send
    (legacy,) = parse_digest_challenges(['Digest realm="r", nonce="n"'])
    ha1 = _md5(b"Mufasa:r:Circle Of Life")
    ha2 = _md5(b"POST:/onvif/device_service")
    expected = _md5(f"{ha1}:n:{ha2}".encode())
    assert digest_response(legacy, cred, method="POST", uri="/onvif/device_service", nc=1, cnonce="c") == (
        expected, None,
    )


def test_digest_sess_and_stale():
    (challenge,) = parse_digest_challenges(['Digest realm="r", nonce="n", algorithm=MD5-sess, qop=auth, stale=TRUE'])
    assert challenge.stale and challenge.algorithm == "MD5-sess"
    cred = Credential("u", "p")

    def h(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    ha1 = h(f"{h('u:r:p')}:n:c")
    expected = h(f"{ha1}:n:00000002:c:auth:{h('POST:/x')}")
    assert digest_response(challenge, cred, method="POST", uri="/x", nc=2, cnonce="c")[0] == expected


def test_credential_repr_hides_password():
    assert "s3cret" not in repr(Credential("admin", "s3cret"))
    assert scrub("fault echoing s3cret back", ("s3cret",)) == "fault echoing *** back"


# --- login budget (DOMAIN 7.3) -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_budget_caps_failures_per_window():
    clock = FakeClock()
    budget = LoginBudget(max_failures=2, window_s=1800, clock=clock)
    assert budget.try_charge("10.0.0.1:80") and budget.try_charge("10.0.0.1:80")
    assert not budget.try_charge("10.0.0.1:80")  # a third attempt would reach a 3-failure lockout
    assert budget.try_charge("10.0.0.2:80")  # per device
    clock.now += 1801
    assert budget.remaining("10.0.0.1:80") == 2


def test_budget_refund_bad_and_good_credentials():
    clock = FakeClock()
    budget = LoginBudget(clock=clock, secret=b"k" * 32)
    good, bad = Credential("admin", "right"), Credential("admin", "wrong")
    key = "10.0.0.1:80"
    assert budget.try_charge(key)
    budget.refund(key)
    assert budget.remaining(key) == 2
    budget.mark_bad(key, bad, "wsse")
    assert budget.is_bad(key, bad, "wsse") and not budget.is_bad(key, bad, "digest")
    budget.mark_good(key, good, "digest")
    assert budget.order(key, [bad, good, bad]) == [good, bad]
    assert budget.preferred_method(key, good) == "digest"
    clock.now += 7 * 3600
    assert not budget.is_bad(key, bad, "wsse")  # bad marks expire (bad_ttl_s)


def test_budget_snapshot_round_trip_without_secrets():
    clock = FakeClock()
    changed: list[str] = []
    budget = LoginBudget(clock=clock, secret=b"s" * 32, on_change=changed.append)
    cred = Credential("admin", "hunter22")
    budget.try_charge("cam:80")
    budget.mark_bad("cam:80", cred, "digest")
    snap = budget.snapshot()
    assert "hunter22" not in repr(snap) and "admin" not in repr(snap)
    assert changed and set(changed) == {"cam:80"}
    restored = LoginBudget(clock=clock, secret=b"s" * 32)
    restored.restore(snap)
    assert restored.remaining("cam:80") == 1
    assert restored.is_bad("cam:80", cred, "digest")
    other_secret = LoginBudget(clock=clock, secret=b"t" * 32)
    other_secret.restore(snap)
    assert other_secret.remaining("cam:80") == 1  # the count survives even when fingerprints cannot match
    restored.restore({"version": 99})  # unknown versions are ignored


# --- WS-Discovery messages -------------------------------------------------------------------------------------


def probe_matches(
    relates_to: str | None, *, epr: str = "urn:uuid:1", xaddrs: str = "http://192.168.1.64/onvif/device_service"
) -> bytes:
    relates = f"<wsa:RelatesTo>{relates_to}</wsa:RelatesTo>" if relates_to else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope '
        'xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
        'xmlns:dn="http://www.onvif.org/ver10/network/wsdl" xmlns:tds="http://www.onvif.org/ver10/device/wsdl">'
        f"<SOAP-ENV:Header><wsa:MessageID>uuid:x</wsa:MessageID>{relates}"
        "<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action></SOAP-ENV:Header>"
        "<SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch><wsa:EndpointReference>"
        f"<wsa:Address>{epr}</wsa:Address></wsa:EndpointReference>"
        "<d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>"
        "<d:Scopes>onvif://www.onvif.org/name/Gate onvif://www.onvif.org/type/video_encoder</d:Scopes>"
        f"<d:XAddrs>{xaddrs}</d:XAddrs><d:MetadataVersion>3</d:MetadataVersion>"
        "</d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def test_probe_variants_are_well_formed_and_distinct():
    bodies = {build_probe(v, f"uuid:{v.value}") for v in DEFAULT_VARIANTS}
    assert len(bodies) == len(ProbeVariant)
    for variant in ProbeVariant:
        root, recovered = parse_xml(build_probe(variant, "uuid:abc"))
        assert not recovered
        types = root.find(".//{http://schemas.xmlsoap.org/ws/2005/04/discovery}Types")
        if variant is ProbeVariant.NO_TYPES:
            assert types is None
            continue
        prefix, _, name = types.text.partition(":")
        assert types.nsmap[prefix] in ("http://www.onvif.org/ver10/network/wsdl", NS["tds"])
        assert name in ("NetworkVideoTransmitter", "Device")


def test_probe_matches_parsed_and_filtered():
    ours = {"uuid:ours"}
    (device,) = parse_probe_matches(probe_matches("uuid:ours"), "127.1.0.9", ours)
    assert device.endpoint_ref == "urn:uuid:1"
    assert device.xaddrs == ("http://192.168.1.64/onvif/device_service",)
    assert device.types == (
        "{http://www.onvif.org/ver10/network/wsdl}NetworkVideoTransmitter",
        "{http://www.onvif.org/ver10/device/wsdl}Device",
    )
    assert device.metadata_version == 3 and device.answered_from == "127.1.0.9"
    assert device.reachable_xaddrs == ("http://127.1.0.9/onvif/device_service",)
    assert device.best_xaddr == "http://127.1.0.9/onvif/device_service"
    assert parse_probe_matches(probe_matches("uuid:someone-else"), "127.1.0.9", ours) == []
    assert len(parse_probe_matches(probe_matches(None), "127.1.0.9", ours)) == 1  # old firmware, no RelatesTo
    assert parse_probe_matches(b"\x00garbage", "127.1.0.9", ours) == []
    assert parse_probe_matches(build_probe(ProbeVariant.NO_TYPES, "uuid:ours"), "127.0.0.1", ours) == []


# --- range scan helpers ----------------------------------------------------------------------------------------


def test_range_iteration_skips_network_and_broadcast():
    assert count_addresses(["127.1.0.0/24"]) == 254
    addresses = list(iter_addresses(["127.1.0.0/30", "127.1.0.8/31", "127.1.0.20/32"]))
    assert addresses == ["127.1.0.1", "127.1.0.2", "127.1.0.8", "127.1.0.9", "127.1.0.20"]


async def test_scan_refuses_ranges_over_the_limit():
    with pytest.raises(ValueError, match="exceed"):
        await scan_range(["127.0.0.0/15"])
    with pytest.raises(ValueError, match="exceed"):
        await scan_range(["127.1.0.0/24"], max_addresses=100)


# --- results -------------------------------------------------------------------------------------------------


def test_results_are_frozen_and_serialisable():
    profile = MediaProfile("t", "n", "H265", 1, 2, 3.0, 4, "rtsp://a", "rtsp://b", None, None, "media2")
    report = DeviceReport(
        address="127.1.0.1",
        port=80,
        xaddr="http://127.1.0.1:80/onvif/device_service",
        ok=False,
        profiles=(profile,),
        fatal=Failure(Cause.LOCKED_OUT, "GetDeviceInformation", LOGIN_BUDGET_EXHAUSTED),
        device_time_utc=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    )
    with pytest.raises(AttributeError):
        report.ok = True  # type: ignore[misc]
    plain = as_dict(report)
    assert plain["fatal"]["cause"] == "locked_out"
    assert plain["profiles"][0]["source"] == "media2"
    assert plain["device_time_utc"] == "2024-01-01T00:00:00+00:00"
    found = DiscoveredDevice("urn:uuid:1", ("http://0.0.0.0:8080/onvif/device_service",), (), (), None, "127.1.0.3")
    assert found.best_xaddr == "http://127.1.0.3:8080/onvif/device_service"


# --- HTTP reply parsing (probes.onvif.http), fed byte by byte or in odd pieces: no sockets ----------------------


class _FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _feed(chunks, *, max_bytes=1 << 20, head=False, close_after=False):
    """(Response or exception, connection) after feeding ``chunks`` to one HTTP connection."""
    import asyncio

    from probes.onvif.http import _Connection

    loop = asyncio.new_event_loop()
    try:
        conn = _Connection()
        conn.transport = _FakeTransport()  # type: ignore[assignment]
        waiter = loop.create_future()
        conn.send(b"POST / HTTP/1.1\r\n\r\n", waiter, max_bytes=max_bytes, head=head)
        for chunk in chunks:
            conn.data_received(chunk)
        if close_after:
            conn.connection_lost(None)
        if not waiter.done():
            return None, conn
        exc = waiter.exception()
        return (exc if exc is not None else waiter.result()), conn
    finally:
        loop.close()


def _bytewise(raw: bytes) -> list[bytes]:
    return [raw[i : i + 1] for i in range(len(raw))]


@pytest.mark.parametrize(
    ("raw", "body", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello", True),
        # lowercase names, odd spacing, bare LF line ends
        (b"HTTP/1.1 200 OK\ncontent-length:   5  \nCONNECTION:  Keep-Alive\n\nhello", b"hello", True),
        # chunked, with an extension and a trailer
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\nX-T: 1\r\n\r\n",
         b"hello", True),
        # HTTP/1.0 without keep-alive: not reusable even with a length
        (b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello", b"hello", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", b"hello", False),
        # interim 100 Continue before the real reply; a folded header line
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A: a\r\n  b\r\nContent-Length: 2\r\n\r\nok", b"ok", True),
        # a stray CRLF before the status line (seen on old embedded servers)
        (b"\r\nHTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", b"", True),
    ],
)
def test_http_replies_in_the_shapes_cameras_send(raw, body, reusable):
    for chunks in ([raw], _bytewise(raw)):
        response, conn = _feed(chunks)
        assert response is not None and not isinstance(response, Exception), response
        assert response.body == body
        assert conn.reusable() is reusable


def test_http_reply_headers_and_close_delimited_bodies():
    raw = (b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\n"
           b"www-authenticate: Digest realm=\"r\", nonce=\"n\"\r\nLocation:  /x \r\nContent-Length: 0\r\n\r\n")
    response, _ = _feed([raw])
    assert response.header("location") == "/x"
    assert response.header_all("www-authenticate") == ['Basic realm="x"', 'Digest realm="r", nonce="n"']
    # No length, no chunking: the body runs to the close (HTTP/1.0 style), and the connection is spent.
    response, conn = _feed([b"HTTP/1.0 200 OK\r\n\r\nhel", b"lo"], close_after=True)
    assert response.body == b"hello" and not conn.reusable()
    # HEAD and 204 replies have no body whatever the headers say.
    response, _ = _feed([b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"], head=True)
    assert response.body == b""


def test_http_reply_limits_and_broken_replies():
    from probes.onvif.http import Disconnected, HttpError, ReplyTooLarge

    error, conn = _feed([b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n"], max_bytes=1000)
    assert isinstance(error, ReplyTooLarge) and "exceeds" in str(error) and conn.closed
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    error, _ = _feed([chunked, b"400\r\n" + b"x" * 1024], max_bytes=1000)
    assert isinstance(error, ReplyTooLarge)
    error, _ = _feed([b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 2000], max_bytes=1000)
    assert isinstance(error, ReplyTooLarge)
    for raw in (b"SSH-2.0-dropbear\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n", chunked + b"zz\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"):
        error, _ = _feed([raw])
        assert isinstance(error, HttpError), raw
    error, _ = _feed([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"], close_after=True)
    assert isinstance(error, Disconnected) and not error.reused
    error, _ = _feed([], close_after=True)
    assert isinstance(error, Disconnected)
    # Bytes after a complete reply: never reuse that connection.
    response, conn = _feed([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE"])
    assert response.body == b"ok" and not conn.reusable()


def test_digest_signer_matches_the_one_shot_functions():
    from probes.onvif.auth import DigestChallenge, DigestSigner

    cred = Credential("admin", "pa\"ss")
    for challenge in (
        DigestChallenge("IP Camera(123)", "abc", "MD5", ("auth",), opaque="op"),
        DigestChallenge("r", "n", "SHA-256-sess", ("auth-int",), userhash=True),
        DigestChallenge("r", "n", "MD5"),
    ):
        signer = DigestSigner(challenge, cred)
        for nc in (1, 2):
            expected = digest_authorization(challenge, cred, method="POST", uri="/onvif/x", nc=nc, cnonce="c0",
                                            body=b"<b/>")
            assert signer.authorization(method="POST", uri="/onvif/x", nc=nc, cnonce="c0", body=b"<b/>") == expected


def test_recent_clocks_expire_and_stay_bounded(monkeypatch):
    import time as _time

    from probes.onvif.clocks import ClockReading, RecentClocks

    clocks = RecentClocks(max_entries=2, max_age_s=60)
    now = _time.monotonic()
    reading = ClockReading(1.5, dt.datetime(2024, 1, 1, tzinfo=dt.UTC), False, "1.1", now)
    clocks.remember("a:80", reading)
    assert clocks.get("a:80", 30) == reading
    assert clocks.get("a:80", 0) is None  # 0 = always ask the device
    monkeypatch.setattr(_time, "monotonic", lambda: now + 45)
    assert clocks.get("a:80", 30) is None and clocks.get("a:80", 50) == reading
    clocks.remember("b:80", reading)
    clocks.remember("c:80", reading)
    assert len(clocks) == 2 and clocks.get("a:80", 50) is None  # oldest dropped


def test_sweep_gc_restores_the_collector_settings():
    import gc

    from probes.onvif.gcpause import sweep_gc

    before = gc.get_threshold()
    with sweep_gc():
        with sweep_gc():  # nested sweeps
            assert gc.get_threshold()[0] >= before[0]
        assert gc.get_threshold() != before or before[0] >= 20_000
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
