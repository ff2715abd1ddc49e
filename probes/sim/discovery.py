"""WS-Discovery responder for the simulated fleet, on loopback only.

Multicast: one socket bound to 239.255.255.250:3702, joined on interface 127.0.0.1 only, replies sent with
IP_MULTICAST_IF 127.0.0.1. Each matching device answers unicast to the requester *from its own address*
(IP_PKTINFO source selection), after a bounded random delay, like real cameras (WS-Discovery APP_MAX_DELAY).

Unicast: a UDP socket on each device's address, port 3702. That costs one descriptor per device on top of the HTTP
listener, so with a 20,000-descriptor limit only the first `unicast_limit` devices get one (default: what the
budget leaves after the HTTP listeners and a reserve); the rest answer multicast only, like cameras whose unicast
discovery is off.
"""

from __future__ import annotations

import asyncio
import logging
import random
import resource
import socket
import struct
import uuid
from collections.abc import Sequence
from xml.sax.saxutils import escape

from lxml import etree

from probes.sim.devices import DeviceSpec, offline_note

logger = logging.getLogger(__name__)

WSD_GROUP = "239.255.255.250"
WSD_PORT = 3702
LOOPBACK_IF = "127.0.0.1"
IP_PKTINFO = 8  # Linux value; socket.IP_PKTINFO only exists from Python 3.13
FD_RESERVE = 512  # descriptors kept free for client connections, pipes, the RTSP child's pipes
MAX_DATAGRAM = 65535

NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_DN = "http://www.onvif.org/ver10/network/wsdl"
NS_TDS = "http://www.onvif.org/ver10/device/wsdl"
ACTION_PROBE = f"{NS_WSD}/Probe"
ACTION_PROBE_MATCHES = f"{NS_WSD}/ProbeMatches"

_NVT = (NS_DN, "NetworkVideoTransmitter")
_DEVICE = (NS_TDS, "Device")
_DEVICE_TYPES = frozenset({_NVT, _DEVICE})
_DEVICE_LOCAL_NAMES = frozenset({_NVT[1], _DEVICE[1]})

_SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def default_unicast_limit(device_count: int) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = (hard if hard != resource.RLIM_INFINITY else 1 << 20) - device_count - FD_RESERVE
    return max(0, min(device_count, budget))


class Probe:
    """The parts of a WS-Discovery Probe that decide who answers."""

    __slots__ = ("message_id", "scopes", "types")

    def __init__(self, message_id: str, types: frozenset[tuple[str, str]] | None, scopes: tuple[str, ...]) -> None:
        self.message_id = message_id
        self.types = types  # None: no Types element (or empty) -> every device matches
        self.scopes = scopes


def parse_probe(data: bytes) -> Probe | None:
    """None for anything that is not a well-formed Probe (ignored silently, as devices do)."""
    try:
        root = etree.fromstring(data, _SAFE_PARSER)
    except etree.XMLSyntaxError:
        return None
    ns = etree.QName(root).namespace
    if etree.QName(root).localname != "Envelope":
        return None
    body = root.find(f"{{{ns}}}Body")
    probe = None if body is None else body.find(f"{{{NS_WSD}}}Probe")
    if probe is None:
        return None
    message_id = (root.findtext(f"{{{ns}}}Header/{{{NS_WSA}}}MessageID") or "").strip()
    types_el = probe.find(f"{{{NS_WSD}}}Types")
    types: frozenset[tuple[str, str]] | None = None
    if types_el is not None and (types_el.text or "").strip():
        resolved = set()
        for qname in (types_el.text or "").split():
            prefix, _, local = qname.rpartition(":")
            # prefixes resolve against the Types element's in-scope namespaces (7.6: placement varies)
            resolved.add((types_el.nsmap.get(prefix or None, "") or "", local))
        types = frozenset(resolved)
    scopes_el = probe.find(f"{{{NS_WSD}}}Scopes")
    scopes = tuple((scopes_el.text or "").split()) if scopes_el is not None else ()
    return Probe(message_id, types, scopes)


def _scope_matches(wanted: str, have: tuple[str, ...]) -> bool:
    # RFC 3986 matching rule (the WS-Discovery default), by path segments, case-insensitive
    w = wanted.rstrip("/").lower()
    return any(h.lower() == w or h.lower().startswith(w + "/") for h in have)


def device_answers(device: DeviceSpec, probe: Probe) -> bool:
    if "offline" in device.faults:
        return False
    if "picky_probe" in device.faults:
        # Some firmware answers only `dn:NetworkVideoTransmitter` probes (DOMAIN.md 7.6).
        if probe.types is None or _NVT not in probe.types:
            return False
    elif probe.types is not None and not (probe.types & _DEVICE_TYPES) and not any(
        ns == "" and local in _DEVICE_LOCAL_NAMES for ns, local in probe.types
    ):
        # Most firmware is lenient: an undeclared prefix still matches by local name.
        return False
    return all(_scope_matches(s, device.scopes) for s in probe.scopes)


def probe_matches(device: DeviceSpec, relates_to: str, message_number: int) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{NS_SOAP12}" xmlns:wsa="{NS_WSA}" xmlns:wsd="{NS_WSD}" '
        f'xmlns:dn="{NS_DN}" xmlns:tds="{NS_TDS}"><SOAP-ENV:Header>'
        f"<wsa:MessageID>urn:uuid:{uuid.uuid4()}</wsa:MessageID>"
        f"<wsa:RelatesTo>{escape(relates_to)}</wsa:RelatesTo>"
        "<wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>"
        f"<wsa:Action>{ACTION_PROBE_MATCHES}</wsa:Action>"
        f'<wsd:AppSequence InstanceId="{1000 + device.index}" MessageNumber="{message_number}"/>'
        "</SOAP-ENV:Header><SOAP-ENV:Body><wsd:ProbeMatches><wsd:ProbeMatch>"
        f"<wsa:EndpointReference><wsa:Address>{device.endpoint_ref}</wsa:Address></wsa:EndpointReference>"
        "<wsd:Types>dn:NetworkVideoTransmitter tds:Device</wsd:Types>"
        f"<wsd:Scopes>{escape(' '.join(device.scopes))}</wsd:Scopes>"
        f"<wsd:XAddrs>{escape(device.xaddr)}</wsd:XAddrs>"
        "<wsd:MetadataVersion>1</wsd:MetadataVersion>"
        "</wsd:ProbeMatch></wsd:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def _pktinfo(source: str) -> bytes:
    return struct.pack("@i4s4s", 0, socket.inet_aton(source), socket.inet_aton("0.0.0.0"))  # noqa: S104


class DiscoveryResponder:
    """Answers WS-Discovery Probes for every device: multicast on loopback and unicast per device address."""

    def __init__(
        self,
        devices: Sequence[DeviceSpec],
        *,
        multicast: bool = True,
        unicast_limit: int | None = None,
        max_delay_s: float = 0.1,
        seed: int = 0,
        port: int = WSD_PORT,
    ) -> None:
        if max_delay_s < 0 or max_delay_s > 5:
            raise ValueError("max_delay_s must be within 0..5 s")
        self._devices = [d for d in devices if "offline" not in d.faults]
        self._offline_note = offline_note(devices)
        self._multicast = multicast
        self._unicast_limit = default_unicast_limit(len(devices)) if unicast_limit is None else unicast_limit
        self.max_delay_s = max_delay_s
        self._rnd = random.Random(seed)
        self._port = port
        self._mc_sock: socket.socket | None = None
        self._uc_socks: dict[int, tuple[socket.socket, DeviceSpec]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.TimerHandle] = set()
        self._message_number = 0
        self.probes_seen = 0
        self.replies_sent = 0

    @property
    def unicast_hosts(self) -> list[str]:
        return [d.host for _s, d in self._uc_socks.values()]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            if self._multicast:
                self._mc_sock = self._open_multicast()
                self._loop.add_reader(self._mc_sock.fileno(), self._on_multicast)
            for d in self._devices[: self._unicast_limit]:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((d.host, self._port))
                    sock.setblocking(False)
                except OSError:
                    sock.close()
                    raise
                self._uc_socks[sock.fileno()] = (sock, d)
                self._loop.add_reader(sock.fileno(), self._on_unicast, sock.fileno())
        except BaseException:
            await self.stop()
            raise
        multicast = f"multicast {WSD_GROUP}:{self._port} on {LOOPBACK_IF}" if self._multicast else "no multicast"
        capped = f" (the first {len(self._uc_socks)})" if len(self._uc_socks) < len(self._devices) else ""
        logger.info("WS-Discovery: %d devices answer: %s, unicast on %d device addresses%s%s", len(self._devices),
                    multicast, len(self._uc_socks), capped, self._offline_note)

    def _open_multicast(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Bound to the group address (never 0.0.0.0) and joined on loopback only: nothing leaves the host.
            sock.bind((WSD_GROUP, self._port))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                            socket.inet_aton(WSD_GROUP) + socket.inet_aton(LOOPBACK_IF))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LOOPBACK_IF))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def stop(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        loop = self._loop
        if self._mc_sock is not None:
            if loop is not None:
                loop.remove_reader(self._mc_sock.fileno())
            self._mc_sock.close()
            self._mc_sock = None
        for fd, (sock, _d) in self._uc_socks.items():
            if loop is not None:
                loop.remove_reader(fd)
            sock.close()
        self._uc_socks.clear()

    def _recv(self, sock: socket.socket) -> tuple[bytes, tuple[str, int]] | None:
        try:
            data, addr = sock.recvfrom(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            logger.debug("discovery receive failed: %s", exc)
            return None
        if not addr[0].startswith("127."):
            return None  # only loopback requesters are served
        return data, addr

    def _on_multicast(self) -> None:
        assert self._mc_sock is not None
        got = self._recv(self._mc_sock)
        if got is None:
            return
        data, addr = got
        probe = parse_probe(data)
        if probe is None:
            return
        self.probes_seen += 1
        for d in self._devices:
            if device_answers(d, probe):
                self._schedule(d, probe, addr, None)

    def _on_unicast(self, fd: int) -> None:
        sock, d = self._uc_socks[fd]
        got = self._recv(sock)
        if got is None:
            return
        data, addr = got
        probe = parse_probe(data)
        if probe is None:
            return
        self.probes_seen += 1
        if device_answers(d, probe):
            self._schedule(d, probe, addr, sock)

    def _schedule(self, d: DeviceSpec, probe: Probe, addr: tuple[str, int], sock: socket.socket | None) -> None:
        assert self._loop is not None
        delay = self._rnd.uniform(0.0, self.max_delay_s)
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._pending.discard(handle)
            self._send(d, probe, addr, sock)

        handle = self._loop.call_later(delay, fire)
        self._pending.add(handle)

    def _send(self, d: DeviceSpec, probe: Probe, addr: tuple[str, int], sock: socket.socket | None) -> None:
        self._message_number += 1
        payload = probe_matches(d, probe.message_id, self._message_number)
        try:
            if sock is not None:
                sock.sendto(payload, addr)
            elif self._mc_sock is not None:
                # From the device's own address, so the requester sees who answered (as on a real LAN).
                self._mc_sock.sendmsg([payload], [(socket.IPPROTO_IP, IP_PKTINFO, _pktinfo(d.host))], 0, addr)
            self.replies_sent += 1
        except OSError as exc:  # UDP: a full buffer loses the reply, as on a real network (7.5)
            logger.debug("discovery reply from %s lost: %s", d.host, exc)
