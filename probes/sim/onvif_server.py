"""One asyncio process serving every simulated camera: a listening socket per device address, common port.

A tiny HTTP/1.1 parser on `loop.create_server` (keep-alive, Content-Length bodies, 1 MiB cap) was chosen over
aiohttp's low-level server after measuring: it needs one protocol object per connection and no per-listener
server objects, so 10,000 listeners fit in one process and a keep-alive call costs tens of microseconds.
SOAP 1.2 and SOAP 1.1 requests are both accepted; the reply uses the request's SOAP version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, urlsplit

from lxml import etree

from probes.sim import replies
from probes.sim.device_auth import (
    DEFAULT_LOCK_PERIOD_S,
    AccountState,
    AuthOutcome,
    DigestAuthority,
    check_wsse,
)
from probes.sim.devices import (
    DEVICE_SERVICE_PATH,
    MEDIA2_SERVICE_PATH,
    MEDIA_SERVICE_PATH,
    SNAPSHOT_PATH,
    DeviceSpec,
    listen_on_all,
    offline_note,
)
from probes.sim.snapshot import snapshot_jpeg

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 20
MAX_HEADER_BYTES = 64 << 10
IDLE_TIMEOUT_S = 75.0  # keep-alive connections idle this long are closed, as camera web servers do
HANG_TIMEOUT_S = 900.0  # a hung device's connections are reaped eventually so the fd budget survives
SWEEP_INTERVAL_S = 5.0
LISTEN_BACKLOG = 64

# ONVIF "PRE_AUTH" operations (Core spec 5.9.4.3): answered without credentials; credentials are ignored.
_PRE_AUTH = frozenset(
    {"GetSystemDateAndTime", "GetCapabilities", "GetServices", "GetServiceCapabilities", "GetHostname",
     "GetWsdlUrl", "GetEndpointReference"}
)

_SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)

_CT_SOAP12 = b"application/soap+xml; charset=utf-8"
_CT_SOAP11 = b"text/xml; charset=utf-8"
_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 405: b"Method Not Allowed",
            411: b"Length Required", 413: b"Payload Too Large", 431: b"Request Header Fields Too Large",
            500: b"Internal Server Error"}
_LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Login</title></head><body><form>User <input></form></body></html>"
_SERVER_HEADER = {"HIKVISION": b"App-webs/", "Dahua": b"Webs", "Uniview": b"nginx", "Tiandy": b"Boa/0.94.14rc21",
                  "AXIS": b"Apache"}


def _split_tag(tag: object) -> tuple[str, str]:
    """'{ns}local' -> (ns, local); comments and PIs give ('', '')."""
    if not isinstance(tag, str):
        return "", ""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes
    content_type: bytes = _CT_SOAP12
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()
    close: bool = False
    hang: bool = False  # read the request, never answer (and nothing more on this connection)


class _DeviceRuntime:
    """Mutable per-device state: its spec plus login bookkeeping."""

    __slots__ = ("account", "server_header", "spec")

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.account = AccountState()
        self.server_header = _SERVER_HEADER.get(spec.manufacturer, b"Webs")


class OnvifServer:
    """HTTP/SOAP side of the fleet. `start()` binds every non-offline device; `devices` then carry the real port."""

    def __init__(
        self,
        devices: Sequence[DeviceSpec],
        *,
        lock_period_s: float = DEFAULT_LOCK_PERIOD_S,
        slow_delay_s: tuple[float, float] = (1.0, 2.0),
        port_attempts: int = 10,
    ) -> None:
        self._devices = list(devices)
        self._runtime: dict[int, _DeviceRuntime] = {}
        self.lock_period_s = lock_period_s
        self.slow_delay_s = slow_delay_s
        self._port_attempts = port_attempts
        self._listeners: list[asyncio.Server] = []
        self._connections: set[_HttpProtocol] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.digest = DigestAuthority()
        self.cache = replies.ReplyCache()
        self.requests_served = 0

    @property
    def devices(self) -> list[DeviceSpec]:
        return list(self._devices)

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    def runtime(self, index: int) -> _DeviceRuntime:
        return self._runtime[index]

    def update_devices(self, devices: Sequence[DeviceSpec]) -> None:
        """Swap in revised specs (same indexes), e.g. once the RTSP port is known; login state is kept."""
        self._devices = list(devices)
        for d in self._devices:
            rt = self._runtime.get(d.index)
            if rt is not None:
                rt.spec = d
        self.cache = replies.ReplyCache()

    def reset_accounts(self) -> None:
        """Unlock every account (tests)."""
        for rt in self._runtime.values():
            rt.account = AccountState()

    async def start(self) -> None:
        raise_fd_limit()
        online = [d for d in self._devices if "offline" not in d.faults]
        socks = self._bind_all(online)
        port = socks[0].getsockname()[1] if socks else (self._devices[0].port if self._devices else 0)
        if self._devices and self._devices[0].port != port:
            self._devices = [replace(d, port=port) for d in self._devices]
        self._runtime = {d.index: _DeviceRuntime(d) for d in self._devices}
        loop = asyncio.get_running_loop()
        by_host = {d.host: self._runtime[d.index] for d in self._devices}
        try:
            for sock in socks:
                rt = by_host[sock.getsockname()[0]]
                server = await loop.create_server(
                    lambda rt=rt: _HttpProtocol(self, rt),  # type: ignore[misc]
                    sock=sock,
                    backlog=LISTEN_BACKLOG,
                )
                self._listeners.append(server)
        except BaseException:
            for sock in socks:
                sock.close()
            await self.stop()
            raise
        self._sweeper = asyncio.create_task(self._sweep())
        logger.info(
            "ONVIF simulator: %d of %d devices listening on port %d%s",
            len(self._listeners),
            len(self._devices),
            port,
            offline_note(self._devices),
        )

    def _bind_all(self, devices: Sequence[DeviceSpec]) -> list[socket.socket]:
        """Bind every device address on one common port; port 0 picks one free port for all, retrying clashes."""
        if not devices:
            return []
        hosts = [d.host for d in devices]
        return listen_on_all(
            hosts, devices[0].port, attempts=self._port_attempts, backlog=LISTEN_BACKLOG, what="the fleet"
        )

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for server in self._listeners:
            server.close()
        for conn in list(self._connections):
            conn.abort()
        for server in self._listeners:
            await server.wait_closed()
        self._listeners.clear()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = loop.time()
            for conn in list(self._connections):
                limit = HANG_TIMEOUT_S if conn.hung else IDLE_TIMEOUT_S
                if not conn.busy and now - conn.last_active > limit:
                    conn.abort()

    # --- request handling -------------------------------------------------------------------------------------

    def handle(self, rt: _DeviceRuntime, method: str, target: str, headers: dict[str, str], body: bytes) -> _Response:
        self.requests_served += 1
        path = target.partition("?")[0]
        if path == SNAPSHOT_PATH:
            return self._snapshot(rt, method, target, headers)
        service = {DEVICE_SERVICE_PATH: "device", MEDIA_SERVICE_PATH: "media", MEDIA2_SERVICE_PATH: "media2"}.get(path)
        if service is None or (service == "media2" and not rt.spec.media2):
            return _Response(404, b"Not Found", b"text/plain")
        if method != "POST":
            return _Response(405, b"Method Not Allowed", b"text/plain", ((b"Allow", b"POST"),))
        try:
            root = etree.fromstring(body, _SAFE_PARSER)
        except etree.XMLSyntaxError:
            return self._fault(rt, "Sender", ("ter:WellFormed",), "Request is not well-formed XML", soap12=True)
        ns, local = _split_tag(root.tag)
        if local != "Envelope" or ns not in (replies.NS_SOAP12, replies.NS_SOAP11):
            return self._fault(rt, "Sender", ("ter:WellFormed",), "Not a SOAP envelope", soap12=True)
        soap12 = ns == replies.NS_SOAP12
        header = body_el = None
        header_tag, body_tag = f"{{{ns}}}Header", f"{{{ns}}}Body"
        for child in root:  # plain tag compares: find() and QName cost microseconds per request
            if child.tag == body_tag:
                body_el = child
            elif child.tag == header_tag:
                header = child
        op_el = None if body_el is None else next((c for c in body_el if isinstance(c.tag, str)), None)
        if op_el is None:
            return self._fault(rt, "Sender", ("ter:WellFormed",), "Empty SOAP body", soap12=soap12)
        op_ns, op = _split_tag(op_el.tag)
        expected_ns = {"device": replies.NS_TDS, "media": replies.NS_TRT, "media2": replies.NS_TR2}[service]
        if op_ns != expected_ns:
            return self._not_supported(rt, soap12)
        if op not in _PRE_AUTH:
            denied = self._authenticate(rt, header, headers, soap12)
            if denied is not None:
                return denied
        body_xml = self._operation(rt, service, op, op_el, soap12)
        if isinstance(body_xml, _Response):
            return body_xml
        return self._ok(rt, body_xml, soap12)

    def _operation(
        self, rt: _DeviceRuntime, service: str, op: str, op_el: etree._Element, soap12: bool
    ) -> bytes | _Response:
        d = rt.spec
        cache = self.cache
        if service == "device":
            if op == "GetSystemDateAndTime":
                return replies.envelope(replies.get_system_date_and_time(d, now=time.time()), soap12=soap12)
            if op == "GetDeviceInformation":
                if "invalid_utf8" in d.faults:
                    return replies.envelope_bytes(replies.get_device_information_invalid_utf8(d), soap12=soap12)
                if "malformed_xml" in d.faults:
                    return replies.envelope(replies.get_device_information_malformed(d), soap12=soap12)
                return replies.envelope(cache.get(d, op, replies.get_device_information), soap12=soap12)
            if op == "GetCapabilities":
                cats = frozenset(
                    (c.text or "").strip() for c in op_el if isinstance(c.tag, str) and etree.QName(c).localname
                    == "Category"
                )
                caps = (cache.get(d, op, lambda x: replies.get_capabilities(x, frozenset()) or "")
                        if not cats or "All" in cats else replies.get_capabilities(d, cats))
                if caps is None:
                    return self._fault(rt, "Receiver", ("ter:ActionNotSupported", "ter:NoSuchService"),
                                       "Capability category not supported", soap12=soap12)
                return replies.envelope(caps, soap12=soap12)
            if op == "GetServices":
                if "no_get_services" in d.faults:
                    return self._not_supported(rt, soap12)
                flag = (op_el.findtext(f"{{{replies.NS_TDS}}}IncludeCapability") or "false").strip().lower()
                include = flag in ("true", "1")
                key = "GetServices+caps" if include else "GetServices"
                return replies.envelope(
                    cache.get(d, key, lambda x: replies.get_services(x, include_capability=include)), soap12=soap12
                )
            if op == "GetScopes":
                return replies.envelope(cache.get(d, op, replies.get_scopes), soap12=soap12)
            if op == "GetNetworkInterfaces":
                return replies.envelope(cache.get(d, op, replies.get_network_interfaces), soap12=soap12)
            if op == "GetHostname":
                return replies.envelope(replies.get_hostname(d), soap12=soap12)
            return self._not_supported(rt, soap12)
        media2 = service == "media2"
        ns = replies.NS_TR2 if media2 else replies.NS_TRT
        if op == "GetProfiles":
            build = replies.get_profiles_media2 if media2 else replies.get_profiles_media1
            return replies.envelope(cache.get(d, service + op, build), soap12=soap12)
        if op in ("GetStreamUri", "GetSnapshotUri"):
            token = (op_el.findtext(f"{{{ns}}}ProfileToken") or "").strip()
            profile = replies.find_profile(d, token, media2=media2)
            if profile is None:
                return self._fault(rt, "Sender", ("ter:InvalidArgVal", "ter:NoProfile"),
                                   "The requested profile token does not exist", soap12=soap12)
            uri = d.stream_uri(profile) if op == "GetStreamUri" else d.snapshot_uri(profile)
            build_uri = replies.media2_uri if media2 else replies.media_uri
            return replies.envelope(build_uri(uri, op + "Response"), soap12=soap12)
        return self._not_supported(rt, soap12)

    def _authenticate(
        self, rt: _DeviceRuntime, header: etree._Element | None, headers: dict[str, str], soap12: bool
    ) -> _Response | None:
        """None when the caller may proceed; otherwise the device's auth-failure reply."""
        d = rt.spec
        now = time.time()
        lockable = "lockout" in d.faults
        outcome = AuthOutcome.MISSING
        via_digest = False
        if d.auth in ("wsse", "both"):
            outcome = check_wsse(header, d, now=now)
        if outcome is AuthOutcome.MISSING and d.auth in ("digest", "both"):
            outcome = self.digest.check(headers.get("authorization"), "POST", d, now=now)
            via_digest = True
        if lockable and rt.account.locked(now) and outcome is not AuthOutcome.MISSING:
            outcome = AuthOutcome.LOCKED
        rt.account.record(outcome, lockable=lockable, now=now, lock_period_s=self.lock_period_s)
        if outcome is AuthOutcome.OK:
            return None
        reason = {
            AuthOutcome.MISSING: "Sender not authorized",
            AuthOutcome.BAD_PASSWORD: "Sender not authorized",
            AuthOutcome.EXPIRED: "Sender not authorized: security token expired or not yet valid",
            AuthOutcome.LOCKED: "Sender not authorized: user locked",
        }[outcome]
        if via_digest:
            # A digest client needs a 401 challenge to start; the auth_http_400 quirk answers a failed digest
            # login with HTTP 400 + SOAP fault instead (DOMAIN.md 7.9).
            if outcome is not AuthOutcome.MISSING and "auth_http_400" in d.faults:
                return self._fault(rt, "Sender", ("ter:NotAuthorized",), reason, soap12=soap12)
            challenge = self.digest.challenge(d, now=now, stale=outcome is AuthOutcome.EXPIRED)
            resp = self._fault(rt, "Sender", ("ter:NotAuthorized",), reason, soap12=soap12, status=401)
            resp.extra_headers = ((b"WWW-Authenticate", challenge.encode()),)
            return resp
        # WS-Security failures: HTTP 400 with env:Sender / ter:NotAuthorized (ONVIF Core 5.12.2).
        return self._fault(rt, "Sender", ("ter:NotAuthorized",), reason, soap12=soap12)

    def _snapshot(self, rt: _DeviceRuntime, method: str, target: str, headers: dict[str, str]) -> _Response:
        if method not in ("GET", "HEAD"):
            return _Response(405, b"Method Not Allowed", b"text/plain", ((b"Allow", b"GET"),))
        d = rt.spec
        if d.auth != "wsse":
            # Snapshot URIs are plain HTTP GETs: cameras protect them with HTTP Digest even when SOAP uses WSSE;
            # WSSE-only devices here serve snapshots anonymously, as many do.
            now = time.time()
            outcome = self.digest.check(headers.get("authorization"), method, d, now=now)
            lockable = "lockout" in d.faults
            if lockable and rt.account.locked(now) and outcome is not AuthOutcome.MISSING:
                outcome = AuthOutcome.LOCKED
            rt.account.record(outcome, lockable=lockable, now=now, lock_period_s=self.lock_period_s)
            if outcome is not AuthOutcome.OK:
                challenge = self.digest.challenge(d, now=now, stale=outcome is AuthOutcome.EXPIRED)
                return _Response(401, b"Unauthorized", b"text/plain", ((b"WWW-Authenticate", challenge.encode()),))
        profile = parse_qs(urlsplit(target).query).get("profile", [""])[0]
        if profile and replies.find_profile(d, profile, media2=True) is None:
            return _Response(404, b"Not Found", b"text/plain")
        if "snapshot_hang" in d.faults:
            return _Response(200, b"", b"image/jpeg", hang=True)
        if "snapshot_html" in d.faults:
            return _Response(200, _LOGIN_PAGE, b"text/html; charset=utf-8")
        if "snapshot_small" in d.faults:
            return _Response(200, snapshot_jpeg(d.index, size=(176, 144)), b"image/jpeg")
        return _Response(200, snapshot_jpeg(d.index), b"image/jpeg")

    def _content_type(self, rt: _DeviceRuntime, soap12: bool) -> bytes:
        if "soap_content_type_mismatch" in rt.spec.faults:
            soap12 = not soap12  # SOAP 1.2 envelope labelled text/xml, and the reverse (DOMAIN.md 7.9)
        return _CT_SOAP12 if soap12 else _CT_SOAP11

    def _ok(self, rt: _DeviceRuntime, body: bytes, soap12: bool) -> _Response:
        return _Response(200, body, self._content_type(rt, soap12))

    def _fault(
        self,
        rt: _DeviceRuntime,
        code: str,
        subcodes: tuple[str, ...],
        reason: str,
        *,
        soap12: bool,
        status: int | None = None,
    ) -> _Response:
        if status is None:
            # SOAP 1.2 HTTP binding: Sender -> 400, Receiver -> 500; SOAP 1.1 faults are 500 except auth (ONVIF 400).
            sender = code == "Sender" if soap12 else "ter:NotAuthorized" in subcodes
            status = 400 if sender else 500
        body = replies.fault(code, subcodes, reason, soap12=soap12)
        return _Response(status, body, self._content_type(rt, soap12))

    def _not_supported(self, rt: _DeviceRuntime, soap12: bool) -> _Response:
        return self._fault(rt, "Receiver", ("ter:ActionNotSupported",), "Optional Action Not Implemented",
                           soap12=soap12)

    def slow_delay(self, rt: _DeviceRuntime) -> float:
        lo, hi = self.slow_delay_s
        return lo + (hi - lo) * ((rt.spec.index * 37) % 100) / 100.0


class _HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 server side for one connection to one device; requests are answered strictly in order."""

    __slots__ = ("_buf", "_loop", "_rt", "_server", "_transport", "busy", "hung", "last_active")

    def __init__(self, server: OnvifServer, rt: _DeviceRuntime) -> None:
        self._server = server
        self._rt = rt
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.busy = False
        self.hung = "hang" in rt.spec.faults
        self.last_active = self._loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._transport = None

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self.last_active = self._loop.time()
        if self.hung:
            return  # accepts and reads, never answers (DOMAIN.md 7.8)
        self._buf += data
        if not self.busy:
            self._process()

    def _process(self) -> None:
        while self._transport is not None and not self.busy:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEADER_BYTES:
                    self._send_simple(431, close=True)
                return
            head = bytes(self._buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                self._send_simple(400, close=True)
                return
            method, target, version = parts
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._send_simple(411, close=True)  # cameras' embedded servers rarely take chunked bodies
                return
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._send_simple(400, close=True)
                return
            if length < 0 or length > MAX_REQUEST_BYTES:
                self._send_simple(413, close=True)
                return
            total = end + 4 + length
            if len(self._buf) < total:
                if headers.get("expect", "").lower() == "100-continue" and len(self._buf) == end + 4:
                    assert self._transport is not None
                    self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return
            body = bytes(self._buf[end + 4 : total])
            del self._buf[:total]
            conn_hdr = headers.get("connection", "").lower()
            close = conn_hdr == "close" or (version == "HTTP/1.0" and conn_hdr != "keep-alive")
            try:
                resp = self._server.handle(self._rt, method, target, headers, body)
            except Exception:  # a simulator bug must not kill the listener
                logger.exception("simulated device %s failed on %s %s", self._rt.spec.host, method, target)
                resp = _Response(500, b"internal error", b"text/plain", close=True)
            if resp.hang:
                self.hung = True
                return
            if method == "HEAD":
                resp.body, length_override = b"", len(resp.body)
            else:
                length_override = len(resp.body)
            raw = self._serialize(resp, close or resp.close, length_override)
            if "slow" in self._rt.spec.faults:
                self.busy = True
                self._loop.call_later(self._server.slow_delay(self._rt), self._deliver, raw, close or resp.close)
                return
            self._write(raw, close or resp.close)

    def _deliver(self, raw: bytes, close: bool) -> None:
        self.busy = False
        self.last_active = self._loop.time()
        self._write(raw, close)
        if self._transport is not None and self._buf:
            self._process()

    def _write(self, raw: bytes, close: bool) -> None:
        if self._transport is None:
            return
        self._transport.write(raw)
        if close:
            self._transport.close()

    def _serialize(self, resp: _Response, close: bool, length: int) -> bytes:
        head = [
            b"HTTP/1.1 %d %s" % (resp.status, _REASONS.get(resp.status, b"Status")),
            b"Server: " + self._rt.server_header,
            b"Content-Type: " + resp.content_type,
            b"Content-Length: %d" % length,
            b"Connection: close" if close else b"Connection: keep-alive",
        ]
        head.extend(k + b": " + v for k, v in resp.extra_headers)
        return b"\r\n".join(head) + b"\r\n\r\n" + resp.body

    def _send_simple(self, status: int, *, close: bool) -> None:
        reason = _REASONS.get(status, b"Error")
        self._write(self._serialize(_Response(status, reason, b"text/plain"), close, len(reason)), close)
        self._buf.clear()
