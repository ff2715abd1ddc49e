"""WS-Discovery (2005/04, the version ONVIF uses) Probe client, multicast and unicast.

Multicast stops at the subnet or a container bridge and UDP gets lost (DOMAIN 7.5), so probes are repeated and
can also be sent unicast to each address. Cameras are picky about the Probe (with or without Types,
``tds:Device`` vs ``dn:NetworkVideoTransmitter``, where the namespace is declared, DOMAIN 7.6), so several
variants go out, each with its own MessageID, and answers are deduplicated by endpoint reference.

Multicast leaves only through the interface the caller names (``IP_MULTICAST_IF``), with TTL 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from probes.onvif.addresses import parse_target, rewrite_uri, strip_credentials
from probes.onvif.soap import child, children, descendant, local, parse_xml, text_of
from probes.policy import AddressPolicy, HostName, Refusal, check_async, parse_host
from probes.results import DiscoveredDevice

__all__ = [
    "DEFAULT_VARIANTS",
    "WSD_MULTICAST_GROUP",
    "WSD_PORT",
    "ProbeVariant",
    "build_probe",
    "device_service",
    "parse_probe_matches",
    "probe_multicast",
    "probe_unicast",
]

log = logging.getLogger(__name__)

WSD_MULTICAST_GROUP: Final = "239.255.255.250"
WSD_PORT: Final = 3702
NS_WSD: Final = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_WSA: Final = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_SOAP12: Final = "http://www.w3.org/2003/05/soap-envelope"
NS_DN: Final = "http://www.onvif.org/ver10/network/wsdl"
NS_TDS: Final = "http://www.onvif.org/ver10/device/wsdl"
_PROBE_ACTION: Final = f"{NS_WSD}/Probe"
_ANONYMOUS: Final = f"{NS_WSA}/role/anonymous"
_MAX_DATAGRAM: Final = 65_535
_MAX_PACKETS: Final = 200_000  # stop parsing after this many datagrams (a flood cannot keep us busy)


class ProbeVariant(enum.Enum):
    """The Probe shapes cameras were seen to insist on (DOMAIN 7.6)."""

    NO_TYPES = "no-types"
    NVT_ON_TYPES = "nvt-ns-on-types"  # dn:NetworkVideoTransmitter, xmlns:dn on the Types element
    NVT_ON_ENVELOPE = "nvt-ns-on-envelope"
    DEVICE_ON_TYPES = "device-ns-on-types"  # tds:Device
    DEVICE_ON_ENVELOPE = "device-ns-on-envelope"


DEFAULT_VARIANTS: Final = tuple(ProbeVariant)


def build_probe(variant: ProbeVariant, message_id: str) -> bytes:
    """One Probe envelope; ``message_id`` like ``uuid:...`` (answers carry it back in RelatesTo)."""
    prefix, namespace = {
        ProbeVariant.NO_TYPES: ("", ""),
        ProbeVariant.NVT_ON_TYPES: ("dn", NS_DN),
        ProbeVariant.NVT_ON_ENVELOPE: ("dn", NS_DN),
        ProbeVariant.DEVICE_ON_TYPES: ("tds", NS_TDS),
        ProbeVariant.DEVICE_ON_ENVELOPE: ("tds", NS_TDS),
    }[variant]
    type_name = "NetworkVideoTransmitter" if prefix == "dn" else "Device"
    on_envelope = variant in (ProbeVariant.NVT_ON_ENVELOPE, ProbeVariant.DEVICE_ON_ENVELOPE)
    envelope_ns = f' xmlns:{prefix}="{namespace}"' if on_envelope else ""
    if not prefix:
        probe = "<d:Probe/>"
    elif on_envelope:
        probe = f"<d:Probe><d:Types>{prefix}:{type_name}</d:Types></d:Probe>"
    else:
        probe = f'<d:Probe><d:Types xmlns:{prefix}="{namespace}">{prefix}:{type_name}</d:Types></d:Probe>'
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS_SOAP12}" xmlns:a="{NS_WSA}" xmlns:d="{NS_WSD}"{envelope_ns}>'
        f'<s:Header><a:Action s:mustUnderstand="1">{_PROBE_ACTION}</a:Action>'
        f"<a:MessageID>{message_id}</a:MessageID>"
        f"<a:ReplyTo><a:Address>{_ANONYMOUS}</a:Address></a:ReplyTo>"
        f'<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To></s:Header>'
        f"<s:Body>{probe}</s:Body></s:Envelope>"
    ).encode()


def _expand_qnames(el: Any, value: str | None) -> tuple[str, ...]:
    """``dn:NetworkVideoTransmitter`` -> ``{http://www.onvif.org/ver10/network/wsdl}NetworkVideoTransmitter``."""
    if not value:
        return ()
    nsmap: dict[str | None, str] = dict(el.nsmap) if hasattr(el, "nsmap") else {}
    out: list[str] = []
    for token in value.split()[:64]:
        prefix, sep, name = token.rpartition(":")
        namespace = nsmap.get(prefix if sep else None)
        out.append(f"{{{namespace}}}{name}" if namespace and "/" in namespace else token)
    return tuple(out)


def parse_probe_matches(
    data: bytes, source: str, our_ids: set[str] | frozenset[str] | None = None
) -> list[DiscoveredDevice]:
    """Devices named in one ProbeMatches datagram. Garbage, foreign answers and other messages give []."""
    try:
        root, _recovered = parse_xml(data)
    except ValueError:
        return []
    if root is None or local(root.tag) != "Envelope":
        return []
    header, body = child(root, "Header"), child(root, "Body")
    relates_to = text_of(child(header, "RelatesTo"))
    # Old firmwares omit RelatesTo; an answer naming somebody else's probe is not ours.
    if our_ids is not None and relates_to is not None and relates_to not in our_ids:
        return []
    matches = child(body, "ProbeMatches")
    if matches is None:
        return []
    devices: list[DiscoveredDevice] = []
    for match in children(matches, "ProbeMatch")[:256]:
        address = text_of(descendant(child(match, "EndpointReference"), "Address"))
        xaddrs = tuple(strip_credentials(x) for x in (text_of(child(match, "XAddrs")) or "").split()[:16])
        if not address and not xaddrs:
            continue
        version_text = text_of(child(match, "MetadataVersion"))
        try:
            version = int(version_text) if version_text else None
        except ValueError:
            version = None
        types_el = child(match, "Types")
        devices.append(
            DiscoveredDevice(
                endpoint_ref=address or xaddrs[0],
                xaddrs=xaddrs,
                types=_expand_qnames(types_el, text_of(types_el)),
                scopes=tuple((text_of(child(match, "Scopes")) or "").split()[:128]),
                metadata_version=version,
                answered_from=source,
            )
        )
    return devices


@dataclass
class _Merged:
    first: DiscoveredDevice
    xaddrs: dict[str, None] = field(default_factory=dict)
    types: dict[str, None] = field(default_factory=dict)
    scopes: dict[str, None] = field(default_factory=dict)
    metadata_version: int | None = None

    def add(self, device: DiscoveredDevice) -> None:
        self.xaddrs.update(dict.fromkeys(device.xaddrs))
        self.types.update(dict.fromkeys(device.types))
        self.scopes.update(dict.fromkeys(device.scopes))
        if device.metadata_version is not None:
            self.metadata_version = max(self.metadata_version or 0, device.metadata_version)

    def result(self) -> DiscoveredDevice:
        return DiscoveredDevice(
            endpoint_ref=self.first.endpoint_ref,
            xaddrs=tuple(self.xaddrs),
            types=tuple(self.types),
            scopes=tuple(self.scopes),
            metadata_version=self.metadata_version,
            answered_from=self.first.answered_from,
        )


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, max_devices: int, expected_sources: Iterable[str] = ()) -> None:
        self.our_ids: set[str] = set()
        self.devices: dict[str, _Merged] = {}
        self.max_devices = max_devices
        self.packets = 0
        # Unicast: once every probed host has answered there is nothing left to wait for.
        self.waiting_for = set(expected_sources)
        self.all_answered = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.packets += 1
        if self.packets > _MAX_PACKETS:
            return
        for device in parse_probe_matches(data, str(addr[0]), self.our_ids):
            merged = self.devices.get(device.endpoint_ref)
            if merged is None:
                if len(self.devices) >= self.max_devices:
                    continue
                merged = self.devices[device.endpoint_ref] = _Merged(device)
            merged.add(device)
            if self.waiting_for:
                self.waiting_for.discard(device.answered_from)
                if not self.waiting_for:
                    self.all_answered.set()

    def error_received(self, exc: Exception) -> None:
        # ICMP port-unreachable from a unicast target without a listener: expected, not an error.
        log.debug("WS-Discovery socket error: %s", exc)

    def results(self) -> list[DiscoveredDevice]:
        return [m.result() for m in self.devices.values()]


def _ipv4(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"{what} must be an IPv4 address, got {value!r}") from None


RECEIVE_BUFFER = 4 * 1024 * 1024


async def _run(
    sock: socket.socket,
    destinations: Sequence[tuple[str, int]],
    *,
    timeout: float,
    repeats: int,
    spacing: float,
    variants: Sequence[ProbeVariant],
    rate: float,
    max_devices: int,
    on_progress: Callable[[int, int], None] | None,
    multicast: bool,
) -> list[DiscoveredDevice]:
    loop = asyncio.get_running_loop()
    # Hundreds of devices answer one probe within APP_MAX_DELAY; the default ~200 KiB buffer drops most of
    # them (500 simulated devices: 310 heard). Ask for 4 MiB; the kernel caps it at net.core.rmem_max.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    collector = _Collector(max_devices, expected_sources=[] if multicast else [h for h, _ in destinations])
    transport, _ = await loop.create_datagram_endpoint(lambda: collector, sock=sock)
    try:
        total = len(destinations) * len(variants) * max(1, repeats)
        sent = 0
        burst = max(1, int(rate / 20))  # pace in 50 ms slices: a /16 of unicast probes must not flood the LAN
        for round_no in range(max(1, repeats)):
            if round_no:
                await asyncio.sleep(spacing)
            for destination in destinations:
                for variant in variants:
                    message_id = f"uuid:{uuid.uuid4()}"
                    collector.our_ids.add(message_id)
                    transport.sendto(build_probe(variant, message_id), destination)
                    sent += 1
                    if sent % burst == 0:
                        await asyncio.sleep(burst / rate)
                if on_progress is not None:
                    on_progress(sent, total)
        # Devices wait a random 0-500 ms (APP_MAX_DELAY) before answering; listen for `timeout` after the last send.
        # The repeats above already went out, so stopping once every unicast host answered loses nothing.
        if multicast:
            await asyncio.sleep(timeout)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(collector.all_answered.wait(), timeout)
    finally:
        transport.close()
    return collector.results()


async def probe_multicast(
    interface_ip: str,
    *,
    timeout: float = 3.0,
    repeats: int = 2,
    spacing: float = 0.2,
    variants: Sequence[ProbeVariant] = DEFAULT_VARIANTS,
    group: str = WSD_MULTICAST_GROUP,
    port: int = WSD_PORT,
    max_devices: int = 10_000,
) -> list[DiscoveredDevice]:
    """Multicast Probe out of the interface holding ``interface_ip`` only (TTL 1, so it never leaves the
    subnet). There is deliberately no default interface: tests pass 127.0.0.1."""
    interface = _ipv4(interface_ip, "interface_ip")
    if not ipaddress.IPv4Address(group).is_multicast:
        raise ValueError(f"{group} is not a multicast group")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)  # devices simulated on this host
        sock.bind((interface, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    started = time.monotonic()
    devices = await _run(
        sock,
        [(group, port)],
        timeout=timeout,
        repeats=repeats,
        spacing=spacing,
        variants=variants,
        rate=1000.0,
        max_devices=max_devices,
        on_progress=None,
        multicast=True,
    )
    log.debug("multicast probe on %s: %d devices in %.2f s", interface, len(devices), time.monotonic() - started)
    return devices


async def probe_unicast(
    hosts: Sequence[str],
    *,
    port: int = WSD_PORT,
    timeout: float = 2.0,
    repeats: int = 2,
    spacing: float = 0.2,
    variants: Sequence[ProbeVariant] = DEFAULT_VARIANTS,
    bind_ip: str = "0.0.0.0",  # noqa: S104 - the socket only receives answers to our own probes
    rate: float = 2000.0,
    max_hosts: int = 65_536,
    max_devices: int = 10_000,
    progress: Callable[[int, int], None] | None = None,
) -> list[DiscoveredDevice]:
    """Probe each host at ``host:port`` directly and read the answers on the same socket (the ``wsdiscovery``
    package's unicast mode never reads them). ``rate`` caps datagrams per second."""
    targets = list(dict.fromkeys(_ipv4(h, "host") for h in hosts))
    if len(targets) > max_hosts:
        raise ValueError(f"{len(targets)} hosts exceed the limit of {max_hosts}")
    if not targets:
        return []
    if rate <= 0:
        raise ValueError("rate must be positive")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.bind((_ipv4(bind_ip, "bind_ip"), 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return await _run(
        sock,
        [(h, port) for h in targets],
        timeout=timeout,
        repeats=repeats,
        spacing=spacing,
        variants=variants,
        rate=rate,
        max_devices=max_devices,
        on_progress=progress,
        multicast=False,
    )


async def device_service(
    device: DiscoveredDevice, policy: AddressPolicy, *, timeout: float = 3.0
) -> str | Refusal | None:
    """The device service URL to interrogate for a ProbeMatch, as the address policy admits it: the first HTTP(S)
    XAddr that names the answering host, means it (DOMAIN 7.4: rewritten), or lies in an allowed network; an
    address spelled in a legacy form comes back canonical. A :class:`~probes.policy.Refusal` when every XAddr was
    refused (nothing is sent there); None when the device listed no HTTP(S) XAddr."""
    refusal: Refusal | None = None
    for xaddr in device.xaddrs:
        if not xaddr.lower().startswith(("http://", "https://")):
            continue
        verdict = await check_async(policy, xaddr, device.answered_from, timeout=timeout)
        if isinstance(verdict, Refusal):
            refusal = refusal or verdict
            continue
        if verdict.rewritten:
            return rewrite_uri(xaddr, device.answered_from, None, policy=policy)
        try:
            target = parse_target(xaddr)
            literal = not isinstance(parse_host(target.host), HostName)
        except ValueError:
            continue
        return target._replace(host=verdict.ip).url if literal else strip_credentials(xaddr.strip())
    return refusal
