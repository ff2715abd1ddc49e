"""Where the probes may connect: one address policy for every outbound connection.

A device hands us addresses (WS-Discovery XAddrs, service addresses, stream and snapshot URIs). A hostile or
broken one can name another host, and the login that follows would go there. So every address is parsed here
once, canonically, and decided before anything is sent; the caller then connects to the IP decided here, never
to the text it was given (a second parser or resolver could read the same text differently).

Parsing: IPv4 in every form a resolver accepts (``2131296259``, ``127.9.3``, ``0x7f090003``, ``0177.0.0.1``:
inet_aton's decimal, hexadecimal, octal and short forms), IPv6 with brackets and zone ids, IPv4-mapped IPv6
(``::ffff:127.0.0.1`` is 127.0.0.1), trailing dots (``localhost.``), local names (``localhost``) without DNS,
and DNS names resolved once, every result checked.

Decision, for the device that answered from ``device``:

* the device's own address: allowed, on any port;
* an address that cannot name another host we reach, so a device must mean itself (DOMAIN 7.4): the unspecified
  address, a private or shared (NAT) address outside the allowed networks, a loopback or link-local address
  while the device is elsewhere: *rewritten* to the device's own address;
* never, unless the device itself is there: link-local and cloud metadata addresses, the unspecified address,
  multicast, broadcast, and the service's own endpoints (its API);
* an address inside the networks the operator allowed (discovery ranges, credential scopes, an explicit list):
  allowed;
* anything else (another loopback address while the device is on loopback, public addresses and DNS names
  outside the allowed networks, a name that does not resolve, a host that does not parse): refused.

Pure apart from the default resolver (``socket.getaddrinfo``); async callers use :func:`check_async`, which
resolves a name once without blocking the event loop and passes the results in.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "AddressPolicy",
    "Admitted",
    "HostName",
    "Refusal",
    "check_async",
    "parse_host",
    "parse_network",
    "resolve",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS: Final = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtspt": 554}
LOCAL_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_LOOPBACK_V4: Final = ipaddress.IPv4Address("127.0.0.1")

# Never a destination unless the device itself answered from there.
NEVER: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this host": connecting to 0.x reaches the local machine on Linux
        "169.254.0.0/16",  # link-local, 169.254.169.254 = cloud metadata
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, 255.255.255.255 = broadcast
        "::/128",
        "fe80::/10",
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "ff00::/8",
    )
)
# Addresses a device uses for itself when it sits behind NAT or has no configured address (DOMAIN 7.4).
_NAT: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_LABEL: Final = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME: Final = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_HEX: Final = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class HostName:
    """A DNS name (lower case, without a trailing dot): resolved once, every address checked."""

    name: str


@dataclass(frozen=True, slots=True)
class Admitted:
    """Connect to ``ip``:``port``. ``rewritten``: the address named the device itself (DOMAIN 7.4) and ``ip`` is
    the device's own; ``own``: the device's own address as given."""

    ip: str
    port: int
    rewritten: bool = False
    own: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    """Not a destination. ``host`` is the host as written (never credentials); ``reason`` says why."""

    host: str
    reason: str

    def __str__(self) -> str:
        return f"{self.host}: {self.reason}"


Verdict = Admitted | Refusal


# --- parsing ---------------------------------------------------------------------------------------------------


def _legacy_ipv4_part(part: str) -> int | None:
    if part[:2] in ("0x", "0X"):
        digits = part[2:].lower()
        if not digits:
            return 0  # inet_aton reads a bare "0x" as 0
        return int(digits, 16) if set(digits) <= _HEX else None
    if len(part) > 1 and part[0] == "0":
        return int(part[1:], 8) if part[1:].isdigit() and not set(part[1:]) & {"8", "9"} else None
    return int(part) if part.isdigit() and part.isascii() else None


def _legacy_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """inet_aton's reading of ``text``: 1 to 4 parts, each decimal, 0x hexadecimal or 0 octal; the last part
    fills the remaining bytes. None when it is not an address in any of these forms."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or any(not p for p in parts):
        return None
    values = []
    for part in parts:
        value = _legacy_ipv4_part(part)
        if value is None:
            return None
        values.append(value)
    *head, last = values
    if any(v > 255 for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = 0
    for v in head:
        number = (number << 8) | v
    number = (number << (8 * (4 - len(head)))) | last
    return ipaddress.IPv4Address(number)


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped  # ::ffff:a.b.c.d is reached as a.b.c.d
        if ip.scope_id:
            return ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    return ip


@functools.lru_cache(maxsize=16_384)  # pure; a sweep asks about the same few thousand hosts again and again
def parse_host(text: str) -> IPAddress | HostName | None:
    """The canonical meaning of a URL host: an address, a name to resolve, or None for an empty host.

    Raises ValueError for a host that is neither (bad characters, an unterminated bracket, a zone on IPv4)."""
    host = text.strip().lower()
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("unterminated IPv6 bracket")
        host = host[1:-1]
    if not host:
        return None
    if "%" in host:  # an IPv6 zone id, "%25" in a URL
        addr, _, _zone = host.replace("%25", "%", 1).partition("%")
        try:
            ip6 = ipaddress.IPv6Address(addr)
        except ValueError:
            raise ValueError("a zone id needs an IPv6 address") from None
        return _unmapped(ip6)
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]  # the root label: "localhost." is "localhost"
    try:
        return _unmapped(ipaddress.ip_address(host))
    except ValueError:
        pass
    legacy = _legacy_ipv4(host)
    if legacy is not None:
        return legacy
    if host in LOCAL_NAMES:
        return ipaddress.IPv6Address("::1") if host.startswith("ip6") else _LOOPBACK_V4
    if not host.isascii() or not _NAME.match(host):
        raise ValueError("not a host name or address")
    if host.rsplit(".", 1)[-1].isdigit():
        raise ValueError("numeric name that is not an address")  # e.g. 1.2.3.4.5, 999.1.1.1
    return HostName(host)


def parse_network(text: str) -> IPNetwork:
    """A CIDR or a single address, canonically (host bits allowed: ``10.1.2.3/24`` is 10.1.2.0/24)."""
    value = text.strip()
    if "/" not in value:
        parsed = parse_host(value)
        if not isinstance(parsed, ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise ValueError(f"not a network: {text!r}")
        return ipaddress.ip_network(parsed)
    return ipaddress.ip_network(value, strict=False)


@functools.lru_cache(maxsize=16_384)
def _split(target: str, default_port: int | None) -> tuple[str, str, int | None]:
    """(scheme, host text, port) of a URL, ``host``, ``host:port`` or ``[v6]:port``."""
    text = target.strip()
    url = text if "://" in text else f"//{text}"
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]  # credentials never take part in the decision
    scheme = parts.scheme.lower()
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise ValueError("unterminated IPv6 bracket")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
    elif netloc.count(":") > 1:
        host, rest = netloc, ""  # a bare IPv6 address
    else:
        host, colon, port_text = netloc.partition(":")
        rest = colon + port_text
    port: int | None = default_port if default_port is not None else DEFAULT_PORTS.get(scheme)
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or not rest[1:].isascii():
            raise ValueError("bad port")
        if rest[1:]:
            port = int(rest[1:])
            if not 0 < port < 65_536:
                raise ValueError("port out of range")
    return scheme, host, port


def _system_resolver(name: str) -> list[str]:
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# --- the policy ------------------------------------------------------------------------------------------------


def _device_ip(device: str | None) -> IPAddress | None:
    if not device:
        return None
    try:
        parsed = parse_host(device)
    except ValueError:
        return None
    return parsed if isinstance(parsed, ipaddress.IPv4Address | ipaddress.IPv6Address) else None


def _within(ip: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


@dataclass(frozen=True)
class AddressPolicy:
    """Immutable: build once per sweep (:meth:`build`) and share. ``allowed``: networks the operator allowed;
    ``service``: the service's own endpoints as (network, port), never a destination."""

    allowed: tuple[IPNetwork, ...] = ()
    service: tuple[tuple[IPNetwork, int], ...] = ()
    resolver: Callable[[str], Sequence[str]] = field(default=_system_resolver, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        networks: Iterable[str | IPNetwork] = (),
        *,
        service: Iterable[tuple[str, int]] = (),
        resolver: Callable[[str], Sequence[str]] | None = None,
    ) -> AddressPolicy:
        """From CIDRs or addresses (raises ValueError naming a bad one) and the service's own (host, port)
        endpoints; an unspecified bind address (0.0.0.0, ::) stands for every loopback address."""
        allowed: dict[IPNetwork, None] = {}
        for item in networks:
            try:
                net = item if not isinstance(item, str) else parse_network(item)
            except ValueError as exc:
                raise ValueError(f"bad network {item!r}: {exc}") from None
            allowed[net] = None
        own: dict[tuple[IPNetwork, int], None] = {}
        for host, port in service:
            ip = _device_ip(host)
            if ip is None:
                continue
            if ip.is_unspecified:
                own[(ipaddress.ip_network("127.0.0.0/8"), port)] = None
                own[(ipaddress.ip_network("::1/128"), port)] = None
            own[(ipaddress.ip_network(ip), port)] = None
        return cls(tuple(allowed), tuple(own), resolver or _system_resolver)

    def with_networks(self, networks: Iterable[str | IPNetwork]) -> AddressPolicy:
        """This policy with more allowed networks (e.g. a run's ranges)."""
        extra = AddressPolicy.build(networks).allowed
        merged = tuple(dict.fromkeys((*self.allowed, *extra)))
        return AddressPolicy(merged, self.service, self.resolver)

    # -- queries --------------------------------------------------------------------------------------------

    def lookup_name(self, target: str) -> str | None:
        """The DNS name :meth:`check` would have to resolve for ``target``, or None (an address, or unusable)."""
        try:
            _scheme, host, _port = _split(target, None)
            parsed = parse_host(host)
        except ValueError:
            return None
        return parsed.name if isinstance(parsed, HostName) else None

    def rewrites(self, host: str | None, device: str) -> bool:
        """Whether a URI naming ``host`` means the device at ``device`` itself (DOMAIN 7.4). No DNS: a name
        is never rewritten (local names such as ``localhost`` are addresses here)."""
        if not host:
            return True  # "http:///onvif/..." from devices with no address configured
        try:
            parsed = parse_host(host)
        except ValueError:
            return False
        if not isinstance(parsed, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        device_ip = _device_ip(device)
        return device_ip is not None and parsed != device_ip and self._means_device(parsed, device_ip)

    def check(
        self,
        target: str,
        device: str | None = None,
        *,
        default_port: int | None = None,
        resolved: Sequence[str] | None = None,
    ) -> Verdict:
        """Where to connect for ``target`` (URL, ``host``, ``host:port``) offered by the device that answered
        from ``device`` (its IP). ``resolved``: the addresses of the target's DNS name, when the caller looked
        it up (:meth:`lookup_name`); otherwise the policy's resolver is asked, once."""
        try:
            _scheme, host_text, port = _split(target, default_port)
            parsed = parse_host(host_text)
        except ValueError as exc:
            return Refusal(_shown(target), f"unusable address ({exc})")
        shown = host_text or "(empty)"
        if port is None:
            return Refusal(shown, "no port")
        device_ip = _device_ip(device)
        if parsed is None:  # an empty host: the device's own service (DOMAIN 7.4)
            if device_ip is None:
                return Refusal(shown, "empty host")
            return Admitted(str(device_ip), port, rewritten=True)
        if isinstance(parsed, HostName):
            return self._check_name(parsed, shown, port, device_ip, resolved)
        return self._check_ip(parsed, shown, port, device_ip, literal=True)

    # -- rules ----------------------------------------------------------------------------------------------

    def _check_name(
        self,
        name: HostName,
        shown: str,
        port: int,
        device_ip: IPAddress | None,
        resolved: Sequence[str] | None,
    ) -> Verdict:
        if resolved is None:
            try:
                resolved = self.resolver(name.name)
            except (OSError, UnicodeError) as exc:
                return Refusal(shown, f"does not resolve ({type(exc).__name__})")
        ips: list[IPAddress] = []
        for text in dict.fromkeys(resolved):
            try:
                ips.append(_unmapped(ipaddress.ip_address(text.split("%", 1)[0])))
            except ValueError:
                return Refusal(shown, f"resolves to an unusable address {text!r}")
        if not ips:
            return Refusal(shown, "does not resolve")
        verdicts = [self._check_ip(ip, shown, port, device_ip, literal=False) for ip in ips]
        for verdict in verdicts:
            if isinstance(verdict, Refusal):  # one bad answer refuses the name: no rebinding by round robin
                return Refusal(shown, f"resolves to {verdict.reason}")
        return verdicts[0]

    def _means_device(self, ip: IPAddress, device_ip: IPAddress) -> bool:
        if ip.is_unspecified:
            return True
        if ip.is_loopback:
            return not device_ip.is_loopback  # on a device elsewhere, "loopback" is the device itself
        if ip.is_link_local:
            return not device_ip.is_link_local
        return _within(ip, _NAT) and not _within(ip, self.allowed)

    def _check_ip(
        self, ip: IPAddress, shown: str, port: int, device_ip: IPAddress | None, *, literal: bool
    ) -> Verdict:
        if device_ip is not None and ip == device_ip:
            if self.service and self._is_service(ip, port):
                return Refusal(shown, f"{ip}:{port} is this service's own endpoint")
            return Admitted(str(ip), port, own=True)
        if literal and device_ip is not None and self._means_device(ip, device_ip):
            return Admitted(str(device_ip), port, rewritten=True)
        if self.service and self._is_service(ip, port):
            return Refusal(shown, f"{_described(ip, shown)}:{port} is this service's own endpoint")
        if _within(ip, NEVER) or ip.is_multicast:
            never = "is link-local, metadata, multicast or unspecified: never a target"
            return Refusal(shown, f"{_described(ip, shown)} {never}")
        if _within(ip, self.allowed):
            return Admitted(str(ip), port)
        where = "another loopback address" if ip.is_loopback else "outside the allowed networks"
        return Refusal(shown, f"{_described(ip, shown)} is {where}")

    def _is_service(self, ip: IPAddress, port: int) -> bool:
        return any(p == port and ip.version == net.version and ip in net for net, p in self.service)


def _described(ip: IPAddress, shown: str) -> str:
    text = str(ip)
    return text if shown == text else f"{text} (written {shown})"


def _shown(target: str) -> str:
    """A target for messages: its host part at most, never credentials or a long blob."""
    text = target.strip()
    try:
        netloc = urlsplit(text if "://" in text else f"//{text}").netloc.rsplit("@", 1)[-1]
    except ValueError:
        netloc = ""
    return (netloc or "(unparseable)")[:80]


async def resolve(name: str, timeout: float) -> list[str]:
    """Every address of a DNS name, looked up once without blocking the loop; [] when it does not resolve in
    ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


async def check_async(
    policy: AddressPolicy, target: str, device: str | None, *, timeout: float, default_port: int | None = None
) -> Verdict:
    """:meth:`AddressPolicy.check` for async callers: a DNS name is resolved here, once."""
    name = policy.lookup_name(target)
    resolved = await resolve(name, timeout) if name is not None else None
    return policy.check(target, device, default_port=default_port, resolved=resolved)
