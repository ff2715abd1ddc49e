"""SOAP reply bodies of the simulated cameras (ONVIF Device, Media and Media2 services).

Bodies are plain text templates filled from a DeviceSpec: static ones are cached per device, only the clock and
URIs vary. Element order follows the ONVIF schemas so strict clients (zeep) parse them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from xml.sax.saxutils import escape

from probes.sim.devices import (
    DEVICE_SERVICE_PATH,
    MEDIA2_SERVICE_PATH,
    MEDIA_SERVICE_PATH,
    DeviceSpec,
    ProfileSpec,
)

NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
NS_TDS = "http://www.onvif.org/ver10/device/wsdl"
NS_TRT = "http://www.onvif.org/ver10/media/wsdl"
NS_TR2 = "http://www.onvif.org/ver20/media/wsdl"
NS_TT = "http://www.onvif.org/ver10/schema"
NS_TER = "http://www.onvif.org/ver10/error"

_NAMESPACES = (
    f'xmlns:tds="{NS_TDS}" xmlns:trt="{NS_TRT}" xmlns:tr2="{NS_TR2}" xmlns:tt="{NS_TT}" xmlns:ter="{NS_TER}"'
)
_HEAD = {
    True: f'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope xmlns:env="{NS_SOAP12}" {_NAMESPACES}>'
    "<env:Header/><env:Body>",
    False: f'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope xmlns:env="{NS_SOAP11}" {_NAMESPACES}>'
    "<env:Header/><env:Body>",
}
_TAIL = "</env:Body></env:Envelope>"


def envelope(body: str, *, soap12: bool) -> bytes:
    return (_HEAD[soap12] + body + _TAIL).encode()


def envelope_bytes(body: bytes, *, soap12: bool) -> bytes:
    """For bodies that are deliberately not valid UTF-8 (the invalid_utf8 quirk)."""
    return _HEAD[soap12].encode() + body + _TAIL.encode()


def fault(code: str, subcodes: tuple[str, ...], reason: str, *, soap12: bool) -> bytes:
    """A SOAP fault: code is 'Sender' or 'Receiver', subcodes like ('ter:NotAuthorized',)."""
    if soap12:
        sub = ""
        for s in reversed(subcodes):
            sub = f"<env:Subcode><env:Value>{s}</env:Value>{sub}</env:Subcode>"
        return envelope(
            f"<env:Fault><env:Code><env:Value>env:{code}</env:Value>{sub}</env:Code>"
            f'<env:Reason><env:Text xml:lang="en">{escape(reason)}</env:Text></env:Reason></env:Fault>',
            soap12=True,
        )
    # SOAP 1.1 has no subcodes: cameras put the most specific ONVIF code in faultcode.
    faultcode = subcodes[0] if subcodes else ("env:Client" if code == "Sender" else "env:Server")
    return envelope(
        f"<env:Fault><faultcode>{faultcode}</faultcode><faultstring>{escape(reason)}</faultstring></env:Fault>",
        soap12=False,
    )


def _tt_datetime(t: time.struct_time) -> str:
    return (
        f"<tt:Time><tt:Hour>{t.tm_hour}</tt:Hour><tt:Minute>{t.tm_min}</tt:Minute><tt:Second>{t.tm_sec}</tt:Second>"
        f"</tt:Time><tt:Date><tt:Year>{t.tm_year}</tt:Year><tt:Month>{t.tm_mon}</tt:Month><tt:Day>{t.tm_mday}"
        "</tt:Day></tt:Date>"
    )


def get_system_date_and_time(device: DeviceSpec, *, now: float) -> str:
    """UTC fields shifted by the device's clock offset; local time is China Standard Time (TZ CST-8)."""
    device_now = now + device.clock_offset_s
    manual = "clock_skew" in device.faults  # a drifting clock is one nobody synchronises
    return (
        "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
        f"<tt:DateTimeType>{'Manual' if manual else 'NTP'}</tt:DateTimeType>"
        "<tt:DaylightSavings>false</tt:DaylightSavings><tt:TimeZone><tt:TZ>CST-8</tt:TZ></tt:TimeZone>"
        f"<tt:UTCDateTime>{_tt_datetime(time.gmtime(device_now))}</tt:UTCDateTime>"
        f"<tt:LocalDateTime>{_tt_datetime(time.gmtime(device_now + 8 * 3600))}</tt:LocalDateTime>"
        "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
    )


def get_device_information(device: DeviceSpec) -> str:
    return (
        "<tds:GetDeviceInformationResponse>"
        f"<tds:Manufacturer>{escape(device.manufacturer)}</tds:Manufacturer>"
        f"<tds:Model>{escape(device.model)}</tds:Model>"
        f"<tds:FirmwareVersion>{escape(device.firmware)}</tds:FirmwareVersion>"
        f"<tds:SerialNumber>{escape(device.serial)}</tds:SerialNumber>"
        f"<tds:HardwareId>{escape(device.hardware_id)}</tds:HardwareId>"
        "</tds:GetDeviceInformationResponse>"
    )


def get_device_information_malformed(device: DeviceSpec) -> str:
    # Seen in the field: a raw '&' in the model and an element never closed (DOMAIN.md 7.9).
    return (
        "<tds:GetDeviceInformationResponse>"
        f"<tds:Manufacturer>{escape(device.manufacturer)}</tds:Manufacturer>"
        f"<tds:Model>{escape(device.model)} & Co</tds:Model>"
        f"<tds:FirmwareVersion>{escape(device.firmware)}"
        f"<tds:SerialNumber>{escape(device.serial)}</tds:SerialNumber>"
        "</tds:GetDeviceInformationResponse>"
    )


def get_device_information_invalid_utf8(device: DeviceSpec) -> bytes:
    # Chinese firmware writing GBK bytes (海康 / 球机) into a document declared UTF-8 (DOMAIN.md 7.9).
    gbk_vendor = "海康威视".encode("gbk")
    gbk_model = "球机".encode("gbk")
    return (
        b"<tds:GetDeviceInformationResponse>"
        b"<tds:Manufacturer>" + escape(device.manufacturer).encode() + b" " + gbk_vendor + b"\xff</tds:Manufacturer>"
        b"<tds:Model>" + escape(device.model).encode() + b" " + gbk_model + b"</tds:Model>"
        b"<tds:FirmwareVersion>" + escape(device.firmware).encode() + b"</tds:FirmwareVersion>"
        b"<tds:SerialNumber>" + escape(device.serial).encode() + b"</tds:SerialNumber>"
        b"<tds:HardwareId>" + escape(device.hardware_id).encode() + b"</tds:HardwareId>"
        b"</tds:GetDeviceInformationResponse>"
    )


def _device_capabilities_xml(device: DeviceSpec) -> str:
    return (
        f"<tt:Device><tt:XAddr>{device.service_xaddr(DEVICE_SERVICE_PATH)}</tt:XAddr>"
        "<tt:Network><tt:IPFilter>false</tt:IPFilter><tt:ZeroConfiguration>false</tt:ZeroConfiguration>"
        "<tt:IPVersion6>false</tt:IPVersion6><tt:DynDNS>false</tt:DynDNS></tt:Network>"
        "<tt:System><tt:DiscoveryResolve>false</tt:DiscoveryResolve><tt:DiscoveryBye>true</tt:DiscoveryBye>"
        "<tt:RemoteDiscovery>false</tt:RemoteDiscovery><tt:SystemBackup>false</tt:SystemBackup>"
        "<tt:SystemLogging>false</tt:SystemLogging><tt:FirmwareUpgrade>false</tt:FirmwareUpgrade>"
        "<tt:SupportedVersions><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tt:SupportedVersions>"
        "</tt:System>"
        "<tt:Security><tt:TLS1.1>false</tt:TLS1.1><tt:TLS1.2>false</tt:TLS1.2>"
        "<tt:OnboardKeyGeneration>false</tt:OnboardKeyGeneration><tt:AccessPolicyConfig>false"
        "</tt:AccessPolicyConfig><tt:X.509Token>false</tt:X.509Token><tt:SAMLToken>false</tt:SAMLToken>"
        "<tt:KerberosToken>false</tt:KerberosToken><tt:RELToken>false</tt:RELToken></tt:Security>"
        "</tt:Device>"
    )


def _media_capabilities_xml(device: DeviceSpec) -> str:
    return (
        f"<tt:Media><tt:XAddr>{device.service_xaddr(MEDIA_SERVICE_PATH)}</tt:XAddr>"
        "<tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>"
        "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
    )


def get_capabilities(device: DeviceSpec, categories: frozenset[str]) -> str | None:
    """None when the requested category is one the device lacks (caller answers ter:NoSuchService)."""
    want_all = not categories or "All" in categories
    parts = []
    if want_all or "Device" in categories:
        parts.append(_device_capabilities_xml(device))
    if want_all or "Media" in categories:
        parts.append(_media_capabilities_xml(device))
    if not parts:
        return None
    return f"<tds:GetCapabilitiesResponse><tds:Capabilities>{''.join(parts)}</tds:Capabilities>" \
        "</tds:GetCapabilitiesResponse>"


def get_services(device: DeviceSpec, *, include_capability: bool) -> str:
    def service(ns: str, path: str, caps: str, major: int, minor: int) -> str:
        cap = f"<tds:Capabilities>{caps}</tds:Capabilities>" if include_capability else ""
        return (
            f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{device.service_xaddr(path)}</tds:XAddr>"
            f"{cap}<tds:Version><tt:Major>{major}</tt:Major><tt:Minor>{minor}</tt:Minor></tds:Version>"
            "</tds:Service>"
        )

    out = [
        service(
            NS_TDS,
            DEVICE_SERVICE_PATH,
            '<tds:Capabilities><tds:Network IPFilter="false" ZeroConfiguration="false" IPVersion6="false" '
            f'DynDNS="false"/><tds:Security UsernameToken="{"true" if device.auth != "digest" else "false"}" '
            f'HttpDigest="{"true" if device.auth != "wsse" else "false"}"/><tds:System DiscoveryResolve="false" '
            'DiscoveryBye="true" RemoteDiscovery="false" SystemBackup="false" FirmwareUpgrade="false"/>'
            "</tds:Capabilities>",
            2,
            60,
        ),
        service(
            NS_TRT,
            MEDIA_SERVICE_PATH,
            '<trt:Capabilities SnapshotUri="true" Rotation="false"><trt:ProfileCapabilities '
            'MaximumNumberOfProfiles="4"/><trt:StreamingCapabilities RTPMulticast="false" RTP_TCP="true" '
            'RTP_RTSP_TCP="true"/></trt:Capabilities>',
            2,
            60,
        ),
    ]
    if device.media2:
        out.append(
            service(
                NS_TR2,
                MEDIA2_SERVICE_PATH,
                '<tr2:Capabilities SnapshotUri="true" Rotation="false" VideoSourceMode="false" OSD="false">'
                '<tr2:ProfileCapabilities MaximumNumberOfProfiles="4" ConfigurationsSupported="VideoSource '
                'VideoEncoder"/><tr2:StreamingCapabilities RTSPStreaming="true" RTPMulticast="false" '
                'RTP_RTSP_TCP="true"/></tr2:Capabilities>',
                2,
                0,
            )
        )
    return f"<tds:GetServicesResponse>{''.join(out)}</tds:GetServicesResponse>"


def get_scopes(device: DeviceSpec) -> str:
    items = "".join(
        f"<tds:Scopes><tt:ScopeDef>{'Configurable' if '/name/' in s or '/location/' in s else 'Fixed'}"
        f"</tt:ScopeDef><tt:ScopeItem>{escape(s)}</tt:ScopeItem></tds:Scopes>"
        for s in device.scopes
    )
    return f"<tds:GetScopesResponse>{items}</tds:GetScopesResponse>"


def get_network_interfaces(device: DeviceSpec) -> str:
    return (
        '<tds:GetNetworkInterfacesResponse><tds:NetworkInterfaces token="eth0"><tt:Enabled>true</tt:Enabled>'
        f"<tt:Info><tt:Name>eth0</tt:Name><tt:HwAddress>{device.mac}</tt:HwAddress><tt:MTU>1500</tt:MTU></tt:Info>"
        "<tt:IPv4><tt:Enabled>true</tt:Enabled><tt:Config><tt:Manual>"
        f"<tt:Address>{device.advertised_host}</tt:Address><tt:PrefixLength>24</tt:PrefixLength></tt:Manual>"
        "<tt:DHCP>false</tt:DHCP></tt:Config></tt:IPv4></tds:NetworkInterfaces></tds:GetNetworkInterfacesResponse>"
    )


def get_hostname(device: DeviceSpec) -> str:
    return (
        "<tds:GetHostnameResponse><tds:HostnameInformation><tt:FromDHCP>false</tt:FromDHCP>"
        f"<tt:Name>cam-{device.index:05d}</tt:Name></tds:HostnameInformation></tds:GetHostnameResponse>"
    )


def _multicast() -> str:
    # Unconfigured multicast, as cameras ship it; only text, nothing joins it.
    return (
        "<tt:Multicast><tt:Address><tt:Type>IPv4</tt:Type><tt:IPv4Address>0.0.0.0</tt:IPv4Address></tt:Address>"
        "<tt:Port>0</tt:Port><tt:TTL>0</tt:TTL><tt:AutoStart>false</tt:AutoStart></tt:Multicast>"
    )


def _video_source_config(device: DeviceSpec, prefix: str) -> str:
    main = device.profiles[0]
    return (
        f'<{prefix} token="VideoSourceConfig_1"><tt:Name>VideoSourceConfig</tt:Name>'
        f"<tt:UseCount>{len(device.profiles)}</tt:UseCount><tt:SourceToken>VideoSource_1</tt:SourceToken>"
        f'<tt:Bounds x="0" y="0" width="{main.width}" height="{main.height}"/></{prefix}>'
    )


def get_profiles_media1(device: DeviceSpec) -> str:
    profiles = []
    for n, p in enumerate(device.media1_profiles, start=1):
        profiles.append(
            f'<trt:Profiles token="{p.token}" fixed="true"><tt:Name>{p.name}</tt:Name>'
            f"{_video_source_config(device, 'tt:VideoSourceConfiguration')}"
            f'<tt:VideoEncoderConfiguration token="VideoEncoder_{n}"><tt:Name>VideoEncoder_{n}</tt:Name>'
            f"<tt:UseCount>1</tt:UseCount><tt:Encoding>{p.encoding}</tt:Encoding>"
            f"<tt:Resolution><tt:Width>{p.width}</tt:Width><tt:Height>{p.height}</tt:Height></tt:Resolution>"
            "<tt:Quality>5</tt:Quality>"
            f"<tt:RateControl><tt:FrameRateLimit>{p.fps}</tt:FrameRateLimit><tt:EncodingInterval>1"
            f"</tt:EncodingInterval><tt:BitrateLimit>{p.bitrate_kbps}</tt:BitrateLimit></tt:RateControl>"
            f"<tt:H264><tt:GovLength>{p.gov_length}</tt:GovLength><tt:H264Profile>Main</tt:H264Profile></tt:H264>"
            f"{_multicast()}<tt:SessionTimeout>PT60S</tt:SessionTimeout></tt:VideoEncoderConfiguration>"
            "</trt:Profiles>"
        )
    return f"<trt:GetProfilesResponse>{''.join(profiles)}</trt:GetProfilesResponse>"


def get_profiles_media2(device: DeviceSpec) -> str:
    profiles = []
    for n, p in enumerate(device.profiles, start=1):
        profiles.append(
            f'<tr2:Profiles token="{p.token}" fixed="true"><tr2:Name>{p.name}</tr2:Name><tr2:Configurations>'
            f"{_video_source_config(device, 'tr2:VideoSource')}"
            f'<tr2:VideoEncoder token="VideoEncoder2_{n}" GovLength="{p.gov_length}" Profile="Main">'
            f"<tt:Name>VideoEncoder2_{n}</tt:Name><tt:UseCount>1</tt:UseCount><tt:Encoding>{p.encoding}"
            f"</tt:Encoding><tt:Resolution><tt:Width>{p.width}</tt:Width><tt:Height>{p.height}</tt:Height>"
            f'</tt:Resolution><tt:RateControl ConstantBitRate="false"><tt:FrameRateLimit>{p.fps}'
            f"</tt:FrameRateLimit><tt:BitrateLimit>{p.bitrate_kbps}</tt:BitrateLimit></tt:RateControl>"
            f"{_multicast()}<tt:Quality>5</tt:Quality></tr2:VideoEncoder></tr2:Configurations></tr2:Profiles>"
        )
    return f"<tr2:GetProfilesResponse>{''.join(profiles)}</tr2:GetProfilesResponse>"


def media_uri(uri: str, response: str) -> str:
    return (
        f"<trt:{response}><trt:MediaUri><tt:Uri>{escape(uri)}</tt:Uri>"
        "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
        f"<tt:Timeout>PT60S</tt:Timeout></trt:MediaUri></trt:{response}>"
    )


def media2_uri(uri: str, response: str) -> str:
    return f"<tr2:{response}><tr2:Uri>{escape(uri)}</tr2:Uri></tr2:{response}>"


def find_profile(device: DeviceSpec, token: str, *, media2: bool) -> ProfileSpec | None:
    for p in device.profiles if media2 else device.media1_profiles:
        if p.token == token:
            return p
    return None


class ReplyCache:
    """Bounded cache of static bodies per (device index, operation): 10,000 devices must not hold 10,000 copies."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self._max = max_entries
        self._entries: dict[tuple[int, str], str] = {}

    def get(self, device: DeviceSpec, op: str, build: Callable[[DeviceSpec], str]) -> str:
        key = (device.index, op)
        body = self._entries.get(key)
        if body is None:
            if len(self._entries) >= self._max:
                self._entries.clear()  # cheap reset; rebuilding a body costs microseconds
            body = build(device)
            self._entries[key] = body
        return body
