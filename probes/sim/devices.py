"""Simulated ONVIF camera fleet: deterministic device descriptions and the operator's credential list.

Every fault here mirrors a quirk from DOMAIN.md section 7 that the real prober must survive. A fleet is a pure
function of its arguments (same seed, same devices), so tests and demos are reproducible.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import random
import socket
import tomllib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import quote

AuthMode = Literal["wsse", "digest", "both"]
AUTH_MODES: tuple[AuthMode, ...] = ("wsse", "digest", "both")

FAULTS: frozenset[str] = frozenset(
    {
        "slow",  # answers every HTTP request after 1-2 s (overloaded NVRs, section 7.8)
        "hang",  # accepts TCP, never answers (snapshot endpoints that never finish, 7.8)
        "offline",  # no listener at all, no discovery answer
        "wrong_password",  # the real password differs from the credential list
        "clock_skew",  # clock off by hours: WS-UsernameToken only works signed with the device's clock (7.1)
        "malformed_xml",  # GetDeviceInformation reply is not well-formed XML (7.9)
        "invalid_utf8",  # GetDeviceInformation reply carries GBK bytes in a UTF-8 document (7.9)
        "private_addrs",  # XAddrs and URIs name a LAN address instead of the one that answers (7.4)
        "zero_addrs",  # XAddrs and URIs name 0.0.0.0 (7.4)
        "no_get_services",  # GetServices -> ActionNotSupported; use GetCapabilities (7.7)
        "auth_http_400",  # failed HTTP digest answered by HTTP 400 + SOAP fault, not a 401 challenge (7.9)
        "soap_content_type_mismatch",  # SOAP 1.2 body labelled text/xml and the reverse (7.9)
        "lockout",  # account locks after 3 failed logins, even the right password fails then (7.3)
        "picky_probe",  # answers only a WS-Discovery Probe whose Types name dn:NetworkVideoTransmitter (7.6)
        "snapshot_hang",  # the snapshot URI accepts the request and never answers (7.8)
        "snapshot_html",  # the snapshot URI answers 200 with an HTML login page instead of a JPEG
        "snapshot_small",  # the snapshot is a valid JPEG of another size than the profile's (176x144)
    }
)

# Faults that replace the device's advertised host; they cannot combine.
_ADDRESS_FAULTS = ("private_addrs", "zero_addrs")

# About a quarter of a default fleet misbehaves, each fault on a small share, like a district's mixed estate.
DEFAULT_FAULT_MIX: Mapping[str, float] = {
    "slow": 0.02,
    "hang": 0.01,
    "offline": 0.03,
    "wrong_password": 0.02,
    "clock_skew": 0.03,
    "malformed_xml": 0.01,
    "invalid_utf8": 0.01,
    "private_addrs": 0.03,
    "zero_addrs": 0.01,
    "no_get_services": 0.03,
    "auth_http_400": 0.01,
    "soap_content_type_mismatch": 0.01,
    "lockout": 0.02,
    "picky_probe": 0.03,
}

DEFAULT_USERNAME = "admin"
# A simulator credential, written to the fleet's credential file like an operator's password sheet.
DEFAULT_PASSWORD = "Sim-Cam-2024"  # noqa: S105
DEFAULT_PORT = 8080
DEFAULT_BASE_HOST = "127.1.0.1"
DEFAULT_RTSP_MOUNTS = 8
LOCKOUT_THRESHOLD = 3

DEVICE_SERVICE_PATH = "/onvif/device_service"
MEDIA_SERVICE_PATH = "/onvif/media_service"
MEDIA2_SERVICE_PATH = "/onvif/media2_service"
SNAPSHOT_PATH = "/onvif/snapshot"


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """One media profile; H.265 profiles are only listed by Media2 (ONVIF Media1 has no H265 encoding)."""

    token: str
    name: str
    encoding: Literal["H264", "H265"]
    width: int
    height: int
    fps: int
    bitrate_kbps: int
    gov_length: int


@dataclass(frozen=True, slots=True)
class _Vendor:
    manufacturer: str
    models: tuple[str, ...]
    firmware: str
    ouis: tuple[str, ...]
    serial_prefix: str
    default_name: str


_VENDORS: tuple[_Vendor, ...] = (
    _Vendor("HIKVISION", ("DS-2CD2143G2-I", "DS-2CD2T47G2-L", "DS-2DE4425IW-DE"), "V5.7.3 build 220112",
            ("44:19:B6", "C0:56:E3", "BC:AD:28"), "DS", "IPCamera"),
    _Vendor("Dahua", ("IPC-HFW2431S-S-S2", "IPC-HDW3441TM-AS", "SD49425XB-HNR"), "2.800.0000000.29.R",
            ("3C:EF:8C", "E0:50:8B"), "7H0", "IPC"),
    _Vendor("Uniview", ("IPC322LB-SF28-A", "IPC2124SR3-APF40"), "IPC_G6103-B0001P65D1912",
            ("48:EA:63",), "210235", "IPC"),
    _Vendor("Tiandy", ("TC-C32GN", "TC-H326S"), "V2.3.1.20210706", ("00:0E:C6",), "TD", "Camera 01"),
    _Vendor("AXIS", ("P3245-LV", "Q6135-LE"), "10.12.153", ("AC:CC:8E", "00:40:8C"), "ACCC8E", "AXIS"),
)

# Road and place names of Luozhuang District (pinyin) for realistic scope names.
_PLACES: tuple[str, ...] = (
    "Hubei-Rd", "Shuanglingzhen", "Luoxi-St", "Gaodu-St", "Fuzhuang-St", "Huangshan-Town", "Shengzhuang-St",
    "Luozhuang-Rd", "Yishui-Rd", "Wuhan-Rd", "Xian-Rd", "Jinan-Rd", "Tongda-Rd", "Qiyang-Rd",
)
_AREAS: tuple[str, ...] = ("Luozhuang", "Luoxi", "Gaodu", "Fuzhuang", "Huangshan", "Shengzhuang")


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One simulated camera. `password` is the device's real password; the credential list may disagree."""

    index: int
    host: str
    port: int
    username: str
    password: str = field(repr=False)  # never in logs or reprs
    auth: AuthMode
    media2: bool
    clock_offset_s: float
    faults: frozenset[str]
    manufacturer: str
    model: str
    firmware: str
    serial: str
    hardware_id: str
    mac: str
    endpoint_ref: str
    name: str
    location: str
    hardware: str
    profiles: tuple[ProfileSpec, ...]
    rtsp_url_base: str = ""
    rtsp_mount: str = ""
    # "host:port" a hostile device writes into its XAddrs, service and snapshot addresses instead of its own,
    # in any spelling ("2131296259:8080", "[::ffff:127.9.0.3]:80"); tests of the address policy set it.
    advertise_as: str = ""

    @property
    def advertised_host(self) -> str:
        """The host the device writes into XAddrs and URIs (a LAN or 0.0.0.0 address for the address faults)."""
        if "zero_addrs" in self.faults:
            return "0.0.0.0"  # noqa: S104 - text inside replies only; nothing binds or connects to it
        if "private_addrs" in self.faults:
            return _private_address(self.index)
        return self.host

    @property
    def url(self) -> str:
        """Where the device really answers."""
        return f"http://{self.host}:{self.port}{DEVICE_SERVICE_PATH}"

    @property
    def advertised_netloc(self) -> str:
        return self.advertise_as or f"{self.advertised_host}:{self.port}"

    @property
    def xaddr(self) -> str:
        """What the device advertises (discovery XAddrs, GetServices): may be unreachable by design."""
        return f"http://{self.advertised_netloc}{DEVICE_SERVICE_PATH}"

    def service_xaddr(self, path: str) -> str:
        return f"http://{self.advertised_netloc}{path}"

    def stream_uri(self, profile: ProfileSpec) -> str:
        """Advertised RTSP URI; every profile of a device shares its mount (the simulator serves one stream)."""
        del profile  # one mount per device: the test pattern is the same whatever profile was asked for
        if not self.rtsp_url_base:
            return f"rtsp://{self.advertised_host}:554/cam{self.index}"
        return self.rtsp_url_base.replace(f"//{self.host}:", f"//{self.advertised_host}:", 1)

    def snapshot_uri(self, profile: ProfileSpec) -> str:
        return f"http://{self.advertised_netloc}{SNAPSHOT_PATH}?profile={profile.token}"

    @property
    def scopes(self) -> tuple[str, ...]:
        return (
            "onvif://www.onvif.org/type/video_encoder",
            "onvif://www.onvif.org/type/Network_Video_Transmitter",
            "onvif://www.onvif.org/Profile/Streaming",
            "onvif://www.onvif.org/Profile/T" if self.media2 else "onvif://www.onvif.org/Profile/S",
            f"onvif://www.onvif.org/name/{quote(self.name, safe='')}",
            f"onvif://www.onvif.org/location/{quote(self.location, safe='/')}",
            f"onvif://www.onvif.org/hardware/{quote(self.hardware, safe='')}",
            f"onvif://www.onvif.org/MAC/{self.mac.lower()}",
        )

    @property
    def media1_profiles(self) -> tuple[ProfileSpec, ...]:
        return tuple(p for p in self.profiles if p.encoding != "H265")


def _private_address(index: int) -> str:
    # Half a NAT'd site's factory default (192.168.1.64 is Hikvision's), half a 10/8 plan; never reachable here.
    if index % 2 == 0:
        return "192.168.1.64"
    return f"10.{(index >> 16) & 0xFF}.{(index >> 8) & 0xFF}.{index & 0xFF or 1}"


def device_host(base_host: str, index: int) -> str:
    """The loopback address of device `index`: base + index, skipping .0 and .255 so /24 range scans find all.

    Refuses 127.0.0.1 and anything off 127.0.0.0/8 (network safety: the fleet lives on loopback only).
    """
    base = ipaddress.IPv4Address(base_host)
    if base not in ipaddress.IPv4Network("127.0.0.0/8"):
        raise ValueError(f"base_host {base_host} is not a loopback address")
    b = int(base)
    low = b & 0xFF
    if low in (0, 255):
        raise ValueError(f"base_host {base_host} must not end in .0 or .255")
    # walk the usable slots .1-.254 of consecutive /24s, starting at the base's slot
    net24 = b & ~0xFF
    total = (low - 1) + index
    addr = ipaddress.IPv4Address(net24 + (total // 254) * 256 + (total % 254) + 1)
    if addr not in ipaddress.IPv4Network("127.0.0.0/8") or addr == ipaddress.IPv4Address("127.0.0.1"):
        raise ValueError(f"device {index} would get address {addr}: choose another base_host")
    return str(addr)


def _digest(seed: int, index: int, what: str) -> bytes:
    return hashlib.sha256(f"vms-sim:{seed}:{index}:{what}".encode()).digest()


def _profiles(rnd: random.Random, media2: bool) -> tuple[ProfileSpec, ...]:
    main_w, main_h = rnd.choice(((1920, 1080), (2560, 1440), (2688, 1520), (1280, 720)))
    fps = rnd.choice((25, 25, 20, 15))
    profiles = [
        ProfileSpec("Profile_1", "mainStream", "H264", main_w, main_h, fps, rnd.choice((2048, 4096)), fps * 2),
        ProfileSpec("Profile_2", "subStream", "H264", rnd.choice((640, 704)), rnd.choice((360, 480, 576)),
                    15, 512, 30),
    ]
    if media2:
        # The H.265 main stream exists only through Media2 (DOMAIN.md 7.7).
        profiles.append(ProfileSpec("Profile_H265", "mainStreamH265", "H265", 3840, 2160, fps, 6144, fps * 2))
    return tuple(profiles)


def _draw_fault(rnd: random.Random, mix: Mapping[str, float]) -> frozenset[str]:
    x = rnd.random()
    acc = 0.0
    for name in sorted(mix):
        acc += mix[name]
        if x < acc:
            return frozenset({name})
    return frozenset()


def _check_faults(faults: Iterable[str]) -> frozenset[str]:
    fs = frozenset(faults)
    unknown = fs - FAULTS
    if unknown:
        raise ValueError(f"unknown faults: {sorted(unknown)} (known: {sorted(FAULTS)})")
    if all(f in fs for f in _ADDRESS_FAULTS):
        raise ValueError("private_addrs and zero_addrs cannot combine")
    return fs


def build_fleet(
    count: int,
    *,
    seed: int = 0,
    fault_mix: Mapping[str, float] | None = None,
    faults_by_index: Mapping[int, Iterable[str]] | None = None,
    auth_by_index: Mapping[int, AuthMode] | None = None,
    media2_by_index: Mapping[int, bool] | None = None,
    base_host: str = DEFAULT_BASE_HOST,
    port: int = DEFAULT_PORT,
    rtsp_port: int | None = None,
    rtsp_mounts: int = DEFAULT_RTSP_MOUNTS,
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
) -> list[DeviceSpec]:
    """Deterministic fleet of `count` devices on consecutive loopback addresses sharing `port`.

    `fault_mix` maps fault -> share of devices (one drawn fault per device; shares must sum to at most 1).
    `faults_by_index` pins exact faults (replacing the draw) for tests; likewise `auth_by_index`, `media2_by_index`.
    `port=0` means one common free port chosen when the server binds (the fleet rewrites the specs then).
    `rtsp_port=None` leaves `rtsp_url_base` empty until an RTSP server is started (SimFleet fills it in).
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    mix = dict(DEFAULT_FAULT_MIX if fault_mix is None else fault_mix)
    if set(mix) - FAULTS:
        raise ValueError(f"unknown faults in fault_mix: {sorted(set(mix) - FAULTS)}")
    if sum(mix.values()) > 1.0 + 1e-9 or any(v < 0 for v in mix.values()):
        raise ValueError("fault_mix shares must be >= 0 and sum to at most 1")
    pinned = {i: _check_faults(f) for i, f in (faults_by_index or {}).items()}
    auth_pins = dict(auth_by_index or {})
    media2_pins = dict(media2_by_index or {})
    for pins in (pinned, auth_pins, media2_pins):
        bad = [i for i in pins if not 0 <= i < count]
        if bad:
            raise ValueError(f"pinned indexes outside the fleet: {bad}")

    devices: list[DeviceSpec] = []
    for index in range(count):
        rnd = random.Random(_digest(seed, index, "draw"))
        vendor = _VENDORS[rnd.randrange(len(_VENDORS))]
        model = rnd.choice(vendor.models)
        faults = pinned[index] if index in pinned else _draw_fault(rnd, mix)
        auth: AuthMode = auth_pins.get(index, rnd.choices(AUTH_MODES, weights=(15, 15, 70))[0])
        if "auth_http_400" in faults and auth == "wsse" and index not in auth_pins:
            # The quirk shows on the HTTP-digest path (WS-Security failures are HTTP 400 on every device).
            auth = "both"
        media2 = media2_pins.get(index, rnd.random() < 0.3)
        if "clock_skew" in faults:
            # Local time labelled UTC (China, +8 h) is the most common field case; the others are plain drift.
            offset = rnd.choice((8 * 3600.0, -3 * 3600.0, 5.5 * 3600.0 + 17.0))
        else:
            offset = round(rnd.uniform(-2.0, 2.0), 3)
        real_password = password
        if "wrong_password" in faults:
            real_password = "Changed-" + _digest(seed, index, "pw").hex()[:8]
        host = device_host(base_host, index)
        # Identity (MAC, serial, endpoint reference) also hangs on the address, so two fleets running side by side
        # on different address ranges never share identities; the same arguments still give the same fleet.
        mac_tail = _digest(seed, index, "mac@" + host)[:3]
        mac = rnd.choice(vendor.ouis) + "".join(f":{b:02X}" for b in mac_tail)
        serial = vendor.serial_prefix + _digest(seed, index, "serial@" + host).hex()[:12].upper()
        place = rnd.choice(_PLACES)
        # A tenth of the estate still carries the vendor's default name (data-quality rule 6 material).
        name = vendor.default_name if rnd.random() < 0.1 else f"{place}-{index:05d}"
        location = f"Linyi/Luozhuang/{rnd.choice(_AREAS)}"
        mount = f"/cam{index % rtsp_mounts}" if rtsp_mounts > 0 else f"/cam{index}"
        devices.append(
            DeviceSpec(
                index=index,
                host=host,
                port=port,
                username=username,
                password=real_password,
                auth=auth,
                media2=media2,
                clock_offset_s=offset,
                faults=faults,
                manufacturer=vendor.manufacturer,
                model=model,
                firmware=vendor.firmware,
                serial=serial,
                hardware_id=model.split("-")[0] + "-" + str(rnd.randrange(80, 99)),
                mac=mac,
                endpoint_ref="urn:uuid:" + str(uuid.UUID(bytes=_digest(seed, index, "epr@" + host)[:16], version=4)),
                name=name,
                location=location,
                hardware=model,
                profiles=_profiles(rnd, media2),
                rtsp_url_base=f"rtsp://{host}:{rtsp_port}{mount}" if rtsp_port else "",
                rtsp_mount=mount,
            )
        )
    return devices


def covering_fault_layout(*, healthy: int = 6) -> dict[int, frozenset[str]]:
    """Exact faults per index: one device per fault (sorted by name), then `healthy` fault-free devices.

    Use with `build_fleet(len(layout), fault_mix={}, faults_by_index=layout)`.
    """
    layout = {i: frozenset({f}) for i, f in enumerate(sorted(FAULTS))}
    for k in range(healthy):
        layout[len(FAULTS) + k] = frozenset()
    return layout


FaultPlan = tuple[dict[str, float], dict[int, frozenset[str]]]


def fault_plan(spec: str, count: int, *, seed: int = 0) -> FaultPlan:
    """The fault mix `vms sim --faults` asks for: ``(fault_mix, faults_by_index)`` for :func:`build_fleet`.

    ``spec`` is "none" (a healthy fleet), "default" (:data:`DEFAULT_FAULT_MIX`) or the path of a JSON or TOML file
    mapping fault -> count (an integer: exactly that many devices, spread over the fleet by ``seed``) or share (a
    number between 0 and 1: each device drawn with that probability). Raises ValueError with one line.
    """
    if spec == "none":
        return {}, {}
    if spec == "default":
        return dict(DEFAULT_FAULT_MIX), {}
    data = _load_fault_file(Path(spec))
    mix: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name, value in data.items():
        if name not in FAULTS:
            raise ValueError(f"{spec}: unknown fault {name!r} (known: {', '.join(sorted(FAULTS))})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{spec}: {name} must be a count (integer) or a share (0-1), not {value!r}")
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"{spec}: {name} count must be >= 0, not {value}")
            counts[name] = value
        else:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{spec}: {name} share must be between 0 and 1, not {value}")
            mix[name] = value
    if sum(mix.values()) > 1.0 + 1e-9:
        raise ValueError(f"{spec}: the shares sum to {sum(mix.values()):g}, more than 1")
    pinned_total = sum(counts.values())
    if pinned_total > count:
        raise ValueError(f"{spec}: the counts ask for {pinned_total} faulty devices in a fleet of {count}")
    spots = random.Random(_digest(seed, 0, "fault-plan")).sample(range(count), pinned_total)
    pinned: dict[int, frozenset[str]] = {}
    for name in sorted(counts):
        for _ in range(counts[name]):
            pinned[spots.pop()] = frozenset({name})
    return mix, pinned


def _load_fault_file(path: Path) -> dict[str, object]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"--faults: give none, default or a JSON/TOML file; cannot read {path}: {reason}") from None
    data: object
    if path.suffix.lower() == ".toml" or not text.lstrip().startswith(("{", "[")):
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML ({str(exc).splitlines()[0]})") from None
    else:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of fault -> count or share")
    return data


def offline_note(devices: Iterable[DeviceSpec], *, shown: int = 5) -> str:
    """'; 2 deliberately offline (fault 'offline', never answer): 127.1.0.9, 127.1.0.40' or '' (for log lines)."""
    hosts = [d.host for d in devices if "offline" in d.faults]
    if not hosts:
        return ""
    listed = ", ".join(hosts[:shown]) + (f" and {len(hosts) - shown} more" if len(hosts) > shown else "")
    return f"; {len(hosts)} deliberately offline (fault 'offline', never answer): {listed}"


def with_rtsp(devices: Sequence[DeviceSpec], rtsp_port: int, *, on_device_hosts: bool) -> list[DeviceSpec]:
    """Point each device's stream at the RTSP server: on its own address when the server listens there."""
    out = []
    for d in devices:
        host = d.host if on_device_hosts else "127.0.0.1"
        out.append(replace(d, rtsp_url_base=f"rtsp://{host}:{rtsp_port}{d.rtsp_mount}"))
    return out


@dataclass(frozen=True, slots=True)
class Credential:
    host: str
    port: int
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class FleetCredentials:
    """What an operator knows: one default login for the estate (the list is wrong for `wrong_password` devices)."""

    default_username: str
    default_password: str
    devices: tuple[Credential, ...]

    def for_host(self, host: str) -> Credential | None:
        for c in self.devices:
            if c.host == host:
                return c
        return None

    def to_json(self) -> str:
        return json.dumps(
            {
                "default": {"username": self.default_username, "password": self.default_password},
                "devices": [
                    {"host": c.host, "port": c.port, "username": c.username, "password": c.password}
                    for c in self.devices
                ],
            },
            indent=1,
        )

    def write(self, path: Path) -> Path:
        """Write the list as JSON readable only by the owner (it holds passwords)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        path.chmod(0o600)
        return path

    @classmethod
    def read(cls, path: Path) -> FleetCredentials:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            default_username=str(raw["default"]["username"]),
            default_password=str(raw["default"]["password"]),
            devices=tuple(
                Credential(str(d["host"]), int(d["port"]), str(d["username"]), str(d["password"]))
                for d in raw["devices"]
            ),
        )


def fleet_credentials(
    devices: Sequence[DeviceSpec], *, username: str = DEFAULT_USERNAME, password: str = DEFAULT_PASSWORD
) -> FleetCredentials:
    """The credential sheet: the estate-wide login for every device, whatever the device really has."""
    return FleetCredentials(
        default_username=username,
        default_password=password,
        devices=tuple(Credential(d.host, d.port, username, password) for d in devices),
    )


def listen_on_all(hosts: Sequence[str], wanted: int, *, attempts: int, backlog: int, what: str) -> list[socket.socket]:
    """A listening (non-blocking) socket per address on one common port; port 0 picks one free for all, retrying
    clashes up to ``attempts`` times (EADDRINUSE naming ``what`` when none is found)."""
    for _attempt in range(attempts if wanted == 0 else 1):
        socks: list[socket.socket] = []
        port = wanted
        try:
            for host in hosts:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(backlog)
                sock.setblocking(False)
                port = sock.getsockname()[1]
            return socks
        except OSError as exc:
            for sock in socks:
                sock.close()
            if wanted != 0 or exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no common free port for {what}")
