"""GB/T 28181 upper-platform SIP server: devices and lower platforms register to us over UDP and TCP (asyncio).

What it does (the application sees only :mod:`probes.gb28181.api` events and answers ``password_for``):

- REGISTER with MD5 digest (RFC 2617 without or with ``qop=auth``): 401 with a fresh nonce, 403 on a wrong password
  or an ID the directory does not know, 401 ``stale=true`` when a right answer used an expired nonce. Nonces are
  self-checking (a timestamp signed with a per-server key), so a flood of 401s costs no memory. Failed attempts are
  counted per source address and per ID; past ``max_failed_auth`` in ``failed_auth_window_s`` the answer is 403
  without checking. ``Expires: 0`` (header or Contact parameter) unregisters; a registration whose expiry passes
  without a refresh ends the same way (an Unregistration).
- MESSAGE: Keepalive -> 200 and ``directory.keepalive``; Catalog answers grouped by (device, SN) until SumNum items or
  ``catalog_quiet_s`` without a new page (then ``complete=False``); a Catalog with ``<Event>`` per item that answers
  no query of ours is a CatalogNotice, as is a NOTIFY of a catalog subscription. Only registered devices, from the
  host they registered from (any port, UDP or TCP: NAT rebinding, reconnects), are heard; others get 403.
- Transactions: a retransmitted request (same Via branch, or Call-ID/CSeq/From tag without an RFC 3261 branch) gets
  the same response again without the directory being called twice. What we send (the Catalog query MESSAGE, a
  SUBSCRIBE) is retransmitted on UDP by RFC 3261 timers E/F (T1 doubling to T2, given up after 64 x T1).
- Responses go where RFC 3261 18.2.2 / RFC 3581 say: the source address when the Via has ``rport``, else the
  source host and the Via port; over TCP, the same connection. INVITE and unknown methods: 501 (media is out of scope).
- Hostile input: a datagram that does not parse is dropped and counted (``stats["dropped"]``); a TCP peer sending
  garbage, an endless header block or an oversized body is closed (``stats["tcp_closed"]``), as is one that leaves
  a message half-sent for ``partial_timeout_s``. Nothing logs a password, a nonce answer or an Authorization header.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import hashlib
import hmac
import itertools
import logging
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from probes.gb28181.api import (
    CatalogAnswer,
    CatalogNotice,
    Directory,
    Keepalive,
    Peer,
    Registration,
    Transport,
    Unregistration,
)
from probes.gb28181.manscdp import ManscdpDoc, ManscdpError, catalog_query, parse_manscdp
from probes.gb28181.message import (
    SipMessage,
    SipParseError,
    StreamFramer,
    parse_message,
    parse_name_addr,
    parse_via,
)
from probes.gb28181.transaction import T1, ClientTransactions, NoPath, TransactionTimeout

__all__ = ["CatalogQueryError", "GbServer"]

log = logging.getLogger(__name__)

DEFAULT_EXPIRES: Final = 3600
MAX_EXPIRES: Final = 7 * 24 * 3600
NONCE_TTL_S: Final = 300.0
SERVER_TX_TTL_S: Final = 32.0  # RFC 3261 timer J: how long a response is kept for retransmitted requests
MAX_SERVER_TX: Final = 65_536  # ~32 s of 2,000 requests a second; the oldest go first
MAX_TCP_CONNECTIONS: Final = 20_000
MAX_CATALOG_GROUPS: Final = 10_000  # answers being grouped at once (each closes after the quiet period or timeout)
MAX_CATALOG_BYTES: Final = 64 * 1024 * 1024  # one answer's pages together
_ID: Final = re.compile(r"^[0-9A-Za-z]{1,32}$")
_AUTH_PARAM: Final = re.compile(r'([A-Za-z-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
_MANSCDP: Final = "Application/MANSCDP+xml"
_ALLOW: Final = "REGISTER, MESSAGE, NOTIFY, OPTIONS, ACK"


class CatalogQueryError(Exception):
    """A Catalog query or subscription could not be made or got no answer (the device is not registered, refused
    the query, did not answer within the timeout). The message names the device and the reason only."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _token(n: int = 8) -> str:
    return secrets.token_hex(n)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


@dataclass(slots=True)
class _Reg:
    device_id: str
    domain: str
    peer: Peer
    expires_at: float  # monotonic


@dataclass(slots=True)
class _Group:
    device_id: str
    sn: int
    created: float
    last: float
    future: asyncio.Future[CatalogAnswer] | None = None
    documents: list[bytes] = field(default_factory=list)
    size: int = 0
    items: int = 0
    sum_num: int | None = None


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: GbServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.server._on_udp(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable from a device that went away
        self.server._count("udp_errors")


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, server: GbServer) -> None:
        self.server = server
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.addr: tuple[str, int] = ("", 0)
        self.partial_since: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        self.addr = (str(peer[0]), int(peer[1]))
        if len(self.server._tcp) >= MAX_TCP_CONNECTIONS:
            self.server._count("tcp_refused")
            transport.abort()
            return
        self.server._tcp[self.addr] = self

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except SipParseError:
            self.server._count("tcp_closed")
            self.close()
            return
        self.partial_since = time.monotonic() if self.framer.buffered else None
        for msg in messages:
            self.server._on_message(msg, "tcp", self.addr)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.server._tcp.get(self.addr) is self:
            del self.server._tcp[self.addr]

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class GbServer:
    """SIP over UDP and TCP for GB/T 28181 devices and lower platforms registering to us (see the module text)."""

    udp_port: int | None
    tcp_port: int | None
    stats: dict[str, int]

    def __init__(
        self,
        directory: Directory,
        *,
        sip_id: str,
        realm: str,
        host: str = "127.0.0.1",
        udp_port: int | None = 5060,
        tcp_port: int | None = 5060,
        catalog_quiet_s: float = 5.0,
        catalog_timeout_s: float = 30.0,
        max_failed_auth: int = 5,
        failed_auth_window_s: float = 60.0,
        query_catalog_on_register: bool = True,
    ) -> None:
        self.directory = directory
        self.sip_id = sip_id
        self.realm = realm
        self.host = host
        self.udp_port = udp_port
        self.tcp_port = tcp_port
        self.catalog_quiet_s = catalog_quiet_s
        self.catalog_timeout_s = catalog_timeout_s
        self.max_failed_auth = max_failed_auth
        self.failed_auth_window_s = failed_auth_window_s
        self.query_catalog_on_register = query_catalog_on_register
        self.stats = collections.defaultdict(int)
        self.t1 = T1
        self.nonce_ttl_s = NONCE_TTL_S
        self.partial_timeout_s = 30.0
        self._key = secrets.token_bytes(32)
        self._regs: dict[str, _Reg] = {}
        self._groups: dict[tuple[str, int], _Group] = {}
        self._closed: dict[tuple[str, int], float] = {}  # answers reported, until when their late pages are ignored
        self._transactions = ClientTransactions(self._count, prefix="client_")  # what we send (RFC 3261 17.1.2)
        self._server_txs: collections.OrderedDict[tuple[str, ...], tuple[float, bytes]] = collections.OrderedDict()
        self._failed: dict[str, collections.deque[float]] = {}
        self._tcp: dict[tuple[str, int], _TcpProtocol] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._sn = itertools.count(1)
        self._cseq = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self.udp_port is not None:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, self.udp_port)
            )
            self._udp = transport
            sock = transport.get_extra_info("socket")
            with contextlib.suppress(OSError):  # a burst of 1,000 devices registering at once
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            self.udp_port = int(transport.get_extra_info("sockname")[1])
        if self.tcp_port is not None:
            self._tcp_server = await loop.create_server(
                lambda: _TcpProtocol(self), self.host, self.tcp_port, reuse_address=True, backlog=1024
            )
            self.tcp_port = int(self._tcp_server.sockets[0].getsockname()[1])
        self._spawn(self._housekeeping())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._transactions.fail_all(CatalogQueryError("server stopped"))
        for group in self._groups.values():
            if group.future is not None and not group.future.done():
                group.future.set_exception(CatalogQueryError("server stopped"))
                group.future.exception()
        self._groups.clear()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for conn in list(self._tcp.values()):
            conn.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp_server.wait_closed(), 2.0)
            self._tcp_server = None

    def registered_peer(self, device_id: str) -> Peer | None:
        reg = self._regs.get(device_id)
        return reg.peer if reg is not None else None

    def restore(self, registration: Registration) -> bool:
        """Take back a registration the application kept (after a restart of vms) so the device's keepalives and
        answers are heard before it registers again; nothing is reported to the directory. False (and nothing kept)
        when it has expired (``at + expires`` in the past) or the ID is not one we accept."""
        if not _ID.match(registration.device_id) or registration.expires <= 0:
            return False
        left = (registration.at + dt.timedelta(seconds=registration.expires) - _utcnow()).total_seconds()
        if left <= 0:
            return False
        self._regs[registration.device_id] = _Reg(
            registration.device_id, registration.domain, registration.peer, time.monotonic() + min(left, MAX_EXPIRES)
        )
        self._count("restored")
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] += n

    def _call(self, fn: Callable[[Any], None], event: object) -> None:
        try:
            fn(event)
        except Exception:
            self._count("directory_errors")
            log.exception("GB/T 28181 directory callback %s failed", getattr(fn, "__name__", fn))

    # ------------------------------------------------------------------ transport in

    def _on_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip(b"\r\n\x00 "):
            return  # a NAT keep-alive (CRLF) or an empty datagram
        try:
            msg = parse_message(data, datagram=True)
        except SipParseError:
            self._count("dropped")
            return
        self._on_message(msg, "udp", addr)

    def _on_message(self, msg: SipMessage, transport: Transport, addr: tuple[str, int]) -> None:
        try:
            if msg.is_request:
                self._on_request(msg, transport, addr)
            else:
                self._on_response(msg)
        except SipParseError:
            self._count("dropped")
        except Exception:  # a bug must not take the server down: count it and go on
            self._count("errors")
            log.exception("GB/T 28181: failed to handle a %s", msg.method or msg.status)

    # ------------------------------------------------------------------ transport out

    def _send(self, peer: Peer, data: bytes) -> bool:
        if peer.transport == "udp":
            if self._udp is None:
                return False
            self._udp.sendto(data, (peer.host, peer.port))
            return True
        conn = self._tcp.get((peer.host, peer.port))
        if conn is None:
            return False
        conn.write(data)
        return True

    def _local_address(self, peer: Peer) -> tuple[str, int]:
        port = (self.udp_port if peer.transport == "udp" else self.tcp_port) or 5060
        if peer.transport == "tcp":
            conn = self._tcp.get((peer.host, peer.port))
            if conn is not None and conn.transport is not None:
                sockname = conn.transport.get_extra_info("sockname")
                if sockname:
                    return str(sockname[0]), int(sockname[1])
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104  (bound to all: the address the peer reaches)
            with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((peer.host, peer.port))
                host = s.getsockname()[0]
        return host, port

    # ------------------------------------------------------------------ requests

    def _on_request(self, msg: SipMessage, transport: Transport, addr: tuple[str, int]) -> None:
        vias = msg.vias()
        if not vias or msg.get("From") is None or msg.get("To") is None or msg.get("Call-ID") is None:
            self._count("dropped")
            return
        via = parse_via(vias[0])
        cseq_n, cseq_method = msg.cseq()
        method = msg.method or ""
        if method == "ACK":
            return
        branch = via.branch or ""
        if branch.startswith("z9hG4bK"):
            key: tuple[str, ...] = ("b", branch, f"{via.host}:{via.port}", method, transport, f"{addr[0]}:{addr[1]}")
        else:
            frm = parse_name_addr(msg.get("From") or "")
            key = ("c", msg.get("Call-ID") or "", str(cseq_n), cseq_method, frm.tag or "", f"{transport}:{addr}")
        if transport == "udp":
            cached = self._server_txs.get(key)
            if cached is not None:
                self._count("retransmitted")
                self._reply_to(
                    via_has_rport="rport" in via.params,
                    via_port=via.port,
                    transport=transport,
                    addr=addr,
                    data=cached[1],
                )
                return
        peer = Peer(transport, addr[0], addr[1])
        handler = {
            "REGISTER": self._register,
            "MESSAGE": self._message,
            "NOTIFY": self._notify,
            "OPTIONS": self._options,
        }.get(method)
        after: list[Callable[[], None]] = []
        if handler is None:
            self._count("not_implemented" if method != "CANCEL" else "cancel")
            status, extra = (501, [("Allow", _ALLOW)]) if method != "CANCEL" else (481, [])
        else:
            status, extra = handler(msg, peer, after)
        data = self._response(msg, status, extra, addr).to_bytes()
        if transport == "udp":
            self._server_txs[key] = (time.monotonic() + SERVER_TX_TTL_S, data)
            if len(self._server_txs) > MAX_SERVER_TX:
                self._server_txs.popitem(last=False)
        self._reply_to(
            via_has_rport="rport" in via.params, via_port=via.port, transport=transport, addr=addr, data=data
        )
        for fn in after:
            fn()

    def _reply_to(
        self, *, via_has_rport: bool, via_port: int | None, transport: Transport, addr: tuple[str, int], data: bytes
    ) -> None:
        if transport == "tcp":
            conn = self._tcp.get(addr)
            if conn is not None:
                conn.write(data)
            return
        port = addr[1] if via_has_rport or via_port is None else via_port
        if self._udp is not None:
            self._udp.sendto(data, (addr[0], port))

    def _response(
        self, req: SipMessage, status: int, extra: list[tuple[str, str]], addr: tuple[str, int]
    ) -> SipMessage:
        resp = SipMessage(status=status)
        for i, value in enumerate(req.vias()):
            if i == 0:
                value = _stamp_via(value, addr)
            resp.headers.append(("Via", value))
        resp.headers.append(("From", req.get("From") or ""))
        to = req.get("To") or ""
        if status > 100 and ";tag=" not in to.replace(" ", "").lower():
            to = f"{to};tag={_token(6)}"
        resp.headers.append(("To", to))
        resp.headers.append(("Call-ID", req.get("Call-ID") or ""))
        resp.headers.append(("CSeq", req.get("CSeq") or ""))
        resp.headers.append(("User-Agent", "vms"))
        resp.headers.extend(extra)
        return resp

    def _options(self, msg: SipMessage, peer: Peer, after: list[Callable[[], None]]) -> tuple[int, list[Any]]:
        return 200, [("Allow", _ALLOW)]

    # ------------------------------------------------------------------ REGISTER

    def _nonce(self) -> str:
        stamp = f"{int(time.time()):x}"
        sig = hmac.new(self._key, stamp.encode("ascii"), hashlib.sha256).hexdigest()[:24]
        return f"{stamp}{sig}"

    def _nonce_state(self, nonce: str) -> str:
        """One of ok, stale (ours, expired) or bad (not ours)."""
        if len(nonce) < 25:
            return "bad"
        stamp, sig = nonce[:-24], nonce[-24:]
        good = hmac.new(self._key, stamp.encode("ascii", errors="replace"), hashlib.sha256).hexdigest()[:24]
        if not hmac.compare_digest(sig, good):
            return "bad"
        try:
            age = time.time() - int(stamp, 16)
        except ValueError:
            return "bad"
        return "ok" if -5 <= age <= self.nonce_ttl_s else "stale"

    def _challenge(self, stale: bool = False) -> tuple[int, list[Any]]:
        self._count("register_401")
        value = f'Digest realm="{self.realm}", nonce="{self._nonce()}", algorithm=MD5'
        if stale:
            value += ", stale=true"
        return 401, [("WWW-Authenticate", value)]

    def _limited(self, *keys: str) -> bool:
        now = time.monotonic()
        for key in keys:
            times = self._failed.get(key)
            if times is None:
                continue
            while times and times[0] < now - self.failed_auth_window_s:
                times.popleft()
            if len(times) >= self.max_failed_auth:
                return True
        return False

    def _failure(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            self._failed.setdefault(key, collections.deque(maxlen=self.max_failed_auth + 1)).append(now)

    def _register(self, msg: SipMessage, peer: Peer, after: list[Callable[[], None]]) -> tuple[int, list[Any]]:
        self._count("register")
        frm = parse_name_addr(msg.get("From") or "")
        to = parse_name_addr(msg.get("To") or "")
        device_id = frm.uri.user or to.uri.user or ""
        if not _ID.match(device_id):
            self._count("register_403")
            return 403, []
        by_host, by_id = f"host:{peer.host}", f"id:{device_id}"
        if self._limited(by_host, by_id):
            self._count("rate_limited")
            self._count("register_403")
            return 403, [("Retry-After", str(int(self.failed_auth_window_s)))]
        password = self.directory.password_for(device_id)
        if password is None:
            self._failure(by_host)
            self._count("register_403")
            return 403, []
        auth = msg.get("Authorization")
        if not auth or not auth.lstrip().lower().startswith("digest"):
            return self._challenge()
        params = {
            m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _AUTH_PARAM.finditer(auth.lstrip()[6:])
        }
        nonce = params.get("nonce", "")
        state = self._nonce_state(nonce)
        if state == "bad":
            return self._challenge()
        if params.get("username") != device_id or not _digest_ok(params, password, "REGISTER"):
            self._failure(by_host, by_id)
            self._count("register_403")
            log.info("GB/T 28181: REGISTER of %s from %s refused (wrong credentials)", device_id, peer.host)
            return 403, []
        if state == "stale":
            return self._challenge(stale=True)
        contact = msg.get("Contact")
        expires = _expires_of(msg, contact)
        at = _utcnow()
        if expires == 0:
            self._count("unregister")
            self._regs.pop(device_id, None)  # reported even when unknown here: the application may know it
            event = Unregistration(device_id, peer, at)
            after.append(lambda: self._call(self.directory.unregistered, event))
            return 200, [("Expires", "0"), ("Date", _gb_date())]
        expires = min(expires, MAX_EXPIRES)
        old = self._regs.get(device_id)
        self._regs[device_id] = _Reg(device_id, frm.uri.host, peer, time.monotonic() + expires)
        self._count("register_ok")
        reg_event = Registration(
            device_id, frm.uri.host, peer, expires, at, contact=contact, user_agent=msg.get("User-Agent")
        )
        after.append(lambda: self._call(self.directory.registered, reg_event))
        if self.query_catalog_on_register and (old is None or old.peer != peer):
            after.append(lambda: self._spawn(self._background_query(device_id)))
        extra: list[tuple[str, str]] = [("Expires", str(expires)), ("Date", _gb_date())]
        if contact and contact.strip() != "*":
            extra.insert(0, ("Contact", contact))
        return 200, extra

    async def _background_query(self, device_id: str) -> None:
        try:
            await self.query_catalog(device_id)
        except CatalogQueryError as exc:
            self._count("catalog_failed")
            log.info("GB/T 28181: catalog query after registration: %s", exc)

    def _expire_registrations(self, now: float) -> None:
        for device_id, reg in list(self._regs.items()):
            if reg.expires_at <= now:
                del self._regs[device_id]
                self._count("expired")
                self._call(self.directory.unregistered, Unregistration(device_id, reg.peer, _utcnow()))

    # ------------------------------------------------------------------ MESSAGE / NOTIFY

    def _sender(self, msg: SipMessage, peer: Peer) -> str | None:
        """The registered device a MESSAGE/NOTIFY is from (the host it registered from, over either transport and
        from any port), or None. A device that comes back from another port (NAT rebinding, a new TCP connection)
        or over the other transport (registered over UDP, keeps alive over TCP, or the reverse) is asked there
        from now on."""
        frm = parse_name_addr(msg.get("From") or "")
        device_id = frm.uri.user or ""
        reg = self._regs.get(device_id)
        if reg is None or reg.peer.host != peer.host:
            return None
        if reg.peer != peer:
            self._count("peer_moved")
            reg.peer = peer
        return device_id

    def _message(self, msg: SipMessage, peer: Peer, after: list[Callable[[], None]]) -> tuple[int, list[Any]]:
        self._count("message")
        device_id = self._sender(msg, peer)
        if device_id is None:
            self._count("message_unregistered")
            return 403, []
        try:
            doc = parse_manscdp(msg.body)
        except ManscdpError:
            self._count("message_unreadable")
            return 400, []
        cmd = doc.cmd_type.lower()
        at = _utcnow()
        if cmd == "keepalive":
            self._count("keepalive")
            event = Keepalive(device_id, peer, at, sn=doc.sn, status=doc.status)
            after.append(lambda: self._call(self.directory.keepalive, event))
        elif cmd == "catalog" and doc.root.lower() in ("response", "notify"):
            sn = doc.sn if doc.sn is not None else -1
            key = (device_id, sn)
            if key not in self._groups and doc.events:
                self._count("notice")
                notice = CatalogNotice(device_id, msg.body, doc.events, at)
                after.append(lambda: self._call(self.directory.notice, notice))
            else:
                after.append(lambda: self._catalog_page(device_id, sn, doc, msg.body))
        else:
            self._count("message_other")
        return 200, []

    def _notify(self, msg: SipMessage, peer: Peer, after: list[Callable[[], None]]) -> tuple[int, list[Any]]:
        self._count("notify")
        device_id = self._sender(msg, peer)
        if device_id is None:
            return 481, []
        try:
            doc = parse_manscdp(msg.body)
        except ManscdpError:
            self._count("message_unreadable")
            return 400, []
        if doc.cmd_type.lower() == "catalog":
            self._count("notice")
            notice = CatalogNotice(device_id, msg.body, doc.events, _utcnow())
            after.append(lambda: self._call(self.directory.notice, notice))
        return 200, []

    # ------------------------------------------------------------------ catalog grouping

    def _catalog_page(self, device_id: str, sn: int, doc: ManscdpDoc, body: bytes) -> None:
        now = time.monotonic()
        key = (device_id, sn)
        if key in self._closed:  # a late page of an answer already reported (a retransmitted query answered twice)
            self._count("catalog_late")
            return
        group = self._groups.get(key)
        if group is None:  # unsolicited (a device pushing its catalog, or an answer after we gave up)
            if len(self._groups) >= MAX_CATALOG_GROUPS:
                self._count("catalog_dropped")
                return
            group = _Group(device_id, sn, now, now)
            self._groups[key] = group
        group.documents.append(body)
        group.size += len(body)
        group.items += doc.items
        group.last = now
        if doc.sum_num is not None:
            group.sum_num = max(group.sum_num or 0, doc.sum_num)
        if group.sum_num is not None and group.items >= group.sum_num:
            self._close_group(group, complete=True)
        elif group.size > MAX_CATALOG_BYTES:  # a device sending pages without end: report what came, stop there
            self._close_group(group, complete=False)

    def _close_group(self, group: _Group, *, complete: bool) -> None:
        self._groups.pop((group.device_id, group.sn), None)
        self._closed[(group.device_id, group.sn)] = time.monotonic() + max(60.0, self.catalog_timeout_s)
        if not group.documents:
            if group.future is not None and not group.future.done():
                group.future.set_exception(CatalogQueryError(f"{group.device_id}: no Catalog answer"))
            return
        answer = CatalogAnswer(
            group.device_id, group.sn, group.sum_num, tuple(group.documents), group.items, complete, _utcnow()
        )
        self._count("catalog_answers")
        self._call(self.directory.catalog, answer)
        if group.future is not None and not group.future.done():
            group.future.set_result(answer)

    def _check_groups(self, now: float) -> None:
        for group in list(self._groups.values()):
            if (group.documents and now - group.last >= self.catalog_quiet_s) or (
                now - group.created >= self.catalog_timeout_s
            ):
                self._close_group(group, complete=False)

    # ------------------------------------------------------------------ what we send

    def _request(
        self, method: str, device_id: str, peer: Peer, body: bytes, extra: list[tuple[str, str]]
    ) -> tuple[str, SipMessage]:
        reg = self._regs.get(device_id)
        domain = reg.domain if reg is not None else device_id[:10]
        local_host, local_port = self._local_address(peer)
        branch = f"z9hG4bK{_token(10)}"
        msg = SipMessage(method=method, uri=f"sip:{device_id}@{peer.host}:{peer.port}")
        msg.headers = [
            ("Via", f"SIP/2.0/{peer.transport.upper()} {local_host}:{local_port};rport;branch={branch}"),
            ("From", f"<sip:{self.sip_id}@{self.realm}>;tag={_token(6)}"),
            ("To", f"<sip:{device_id}@{domain}>"),
            ("Call-ID", f"{_token(12)}@{local_host}"),
            ("CSeq", f"{next(self._cseq)} {method}"),
            ("Max-Forwards", "70"),
            ("User-Agent", "vms"),
            *extra,
            ("Content-Type", _MANSCDP),
        ]
        msg.body = body
        return branch, msg

    async def _transact(self, branch: str, msg: SipMessage, peer: Peer) -> SipMessage:
        """A non-INVITE client transaction: the final response, or CatalogQueryError after timer F."""
        try:
            return await self._transactions.request(
                branch, msg.to_bytes(), lambda data: self._send(peer, data), retransmit=peer.transport == "udp",
                t1=self.t1,
            )  # fmt: skip
        except NoPath:
            raise CatalogQueryError(f"no {peer.transport.upper()} path to {peer.host}:{peer.port}") from None
        except TransactionTimeout:
            raise CatalogQueryError(f"no answer from {peer.host}:{peer.port} to {msg.method}") from None

    def _on_response(self, msg: SipMessage) -> None:
        if not msg.vias():
            self._count("dropped")
            return
        self._transactions.response(msg)

    async def query_catalog(self, device_id: str) -> CatalogAnswer:
        """Send a Catalog query to the device's registered address and wait for its pages (grouped by SN until
        SumNum items, the quiet period or the timeout). The answer also goes to ``directory.catalog``.
        Raises CatalogQueryError when the device is not registered, refuses or never answers."""
        reg = self._regs.get(device_id)
        if reg is None:
            raise CatalogQueryError(f"{device_id}: not registered")
        loop = asyncio.get_running_loop()
        sn = next(self._sn)
        now = time.monotonic()
        group = _Group(device_id, sn, now, now, future=loop.create_future())
        self._groups[(device_id, sn)] = group
        self._count("catalog_queries")
        branch, msg = self._request("MESSAGE", device_id, reg.peer, catalog_query(sn, device_id), [])
        future = group.future
        assert future is not None
        transaction = asyncio.ensure_future(self._transact(branch, msg, reg.peer))
        try:
            # the pages may all come before the 200 to our MESSAGE (or with no 200 at all): whichever ends first
            waiting: set[asyncio.Future[Any]] = {transaction, future}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not future.done():
                try:
                    resp = transaction.result()
                except CatalogQueryError:
                    self._groups.pop((device_id, sn), None)
                    raise
                if resp.status >= 300:
                    self._groups.pop((device_id, sn), None)
                    raise CatalogQueryError(f"{device_id}: Catalog query refused ({resp.status})")
            return await asyncio.shield(future)
        finally:
            if not transaction.done():
                transaction.cancel()  # the device answered: no more retransmissions

    async def subscribe_catalog(self, device_id: str, expires: int = 3600) -> bool:
        """SUBSCRIBE to the device's catalog changes (Event: Catalog); True when it accepted (2xx). Its NOTIFYs
        become CatalogNotice events."""
        reg = self._regs.get(device_id)
        if reg is None:
            return False
        sn = next(self._sn)
        local_host, local_port = self._local_address(reg.peer)
        branch, msg = self._request(
            "SUBSCRIBE", device_id, reg.peer, catalog_query(sn, device_id),
            [("Event", f"Catalog;id={sn}"), ("Expires", str(max(0, int(expires)))),
             ("Contact", f"<sip:{self.sip_id}@{local_host}:{local_port}>")],
        )  # fmt: skip
        try:
            resp = await self._transact(branch, msg, reg.peer)
        except CatalogQueryError:
            return False
        ok = 200 <= resp.status < 300
        self._count("subscribe_ok" if ok else "subscribe_refused")
        return ok

    # ------------------------------------------------------------------ housekeeping

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(min(0.25, self.catalog_quiet_s / 4))
            now = time.monotonic()
            try:
                self._check_groups(now)
                for closed in [k for k, until in self._closed.items() if until <= now]:
                    del self._closed[closed]
                self._expire_registrations(now)
                while self._server_txs:
                    oldest, (until, _) = next(iter(self._server_txs.items()))
                    if until > now:
                        break
                    del self._server_txs[oldest]
                for conn in list(self._tcp.values()):
                    if conn.partial_since is not None and now - conn.partial_since > self.partial_timeout_s:
                        self._count("tcp_closed")
                        conn.close()
                if len(self._failed) > 10_000:
                    for key in [k for k, v in self._failed.items() if not v or v[-1] < now - self.failed_auth_window_s]:
                        del self._failed[key]
            except Exception:
                self._count("errors")
                log.exception("GB/T 28181 housekeeping failed")


def _stamp_via(value: str, addr: tuple[str, int]) -> str:
    """The top Via with received= and rport=<source port> (RFC 3581) filled in."""
    head, *params = value.split(";")
    out = [head]
    has_received = False
    for param in params:
        name = param.split("=", 1)[0].strip().lower()
        if name == "rport":
            out.append(f"rport={addr[1]}")
        elif name == "received":
            out.append(f"received={addr[0]}")
            has_received = True
        else:
            out.append(param)
    if not has_received:
        out.append(f"received={addr[0]}")
    return ";".join(out)


def _expires_of(msg: SipMessage, contact: str | None) -> int:
    if contact and contact.strip() != "*":
        with contextlib.suppress(SipParseError):
            value = parse_name_addr(contact).params.get("expires")
            if value is not None and value.strip().isdigit():
                return int(value.strip())
    header = (msg.get("Expires") or "").strip()
    if header.isdigit():
        return int(header)
    return DEFAULT_EXPIRES


def _digest_ok(params: dict[str, str], password: str, method: str) -> bool:
    realm, nonce, uri, response = (params.get(k) for k in ("realm", "nonce", "uri", "response"))
    if realm is None or nonce is None or uri is None or response is None:
        return False
    if params.get("algorithm", "MD5").upper() != "MD5":
        return False
    ha1 = _md5(f"{params.get('username', '')}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    qop = params.get("qop")
    if qop:
        expected = _md5(f"{ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:{qop}:{ha2}")
    else:
        expected = _md5(f"{ha1}:{nonce}:{ha2}")
    return hmac.compare_digest(expected.encode("ascii"), response.lower().encode("ascii", errors="replace"))


def _gb_date() -> str:
    """The Date of a REGISTER's 200 OK as GB/T 28181 devices read it to set their clocks (local time)."""
    return dt.datetime.now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
