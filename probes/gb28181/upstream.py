"""GB/T 28181 cascade upward: we register to an upper-level platform as a lower platform and answer its queries.

:class:`GbUpstream` is a SIP client over UDP or TCP (asyncio), reusing the parser (:mod:`probes.gb28181.message`),
the MANSCDP reader (:mod:`probes.gb28181.manscdp`), the client transactions the server uses too
(:mod:`probes.gb28181.transaction`) and the server's Via and digest helpers:

- REGISTER to the platform; MD5 digest after a 401 (with or without ``qop=auth``); registered again before the
  granted expiry runs out (at expiry - min(60 s, expiry / 5)). A refusal (403, another 401 after our answer), no
  answer or a refused connection is retried after a back-off that doubles from ``retry_min_s`` to ``retry_max_s``
  (with jitter): never a tight loop.
- Keepalive MESSAGEs every ``keepalive_interval_s``; one refused (the platform restarted and forgot us) starts a
  new registration at once, ``keepalive_failures`` unanswered in a row one after the back-off.
- The platform's MESSAGE Catalog query (``<Query><CmdType>Catalog``, an SN): 200, then Response MESSAGEs carrying
  the items the application gives (``items`` callback, run in a worker thread), at most ``batch`` a message and, on
  UDP, each body under ``max_body_udp`` bytes (one item alone may be larger), each with the query's SN and
  ``SumNum`` = all items. Sent one after the other, each waiting for its 200. DeviceInfo and DeviceStatus queries
  get 200 and a Response about this platform. Other MESSAGEs: 200; INVITE and other methods: 501.
- Text: the declared ``encoding`` (GB2312, written as GBK with character references for anything outside it, or
  UTF-8). Nothing logs the password or an Authorization header.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import itertools
import logging
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal
from xml.sax.saxutils import escape

from probes.gb28181.api import Transport
from probes.gb28181.manscdp import ManscdpError, parse_manscdp
from probes.gb28181.message import SipMessage, SipParseError, StreamFramer, parse_message, parse_via
from probes.gb28181.server import _AUTH_PARAM, _md5, _stamp_via, _token
from probes.gb28181.transaction import T1, ClientTransactions, NoPath, TransactionTimeout

__all__ = ["CatalogItems", "GbUpstream", "UpstreamConfig", "UpstreamError", "UpstreamStatus", "catalog_bodies"]

log = logging.getLogger(__name__)

_MANSCDP: Final = "Application/MANSCDP+xml"
_ALLOW: Final = "REGISTER, MESSAGE, OPTIONS, ACK"
SERVER_TX_TTL_S: Final = 32.0
MAX_SERVER_TX: Final = 1024

CatalogItems = Callable[[], Sequence[str]]
"""Returns the catalog as ``<Item>...</Item>`` XML fragments (text), one per camera or tree node."""

State = Literal["stopped", "connecting", "registering", "registered", "retrying"]


class UpstreamError(Exception):
    """The platform refused, did not answer or could not be reached (the message names the reason only)."""


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    local_id: str  # our SIP ID: the 20-digit ID the upper platform knows us by
    local_domain: str  # our domain (From / To host)
    upstream_id: str  # the platform's SIP ID
    upstream_domain: str  # the platform's domain (realm)
    host: str  # the platform's address
    port: int = 5060
    transport: Transport = "udp"
    password: str = ""
    local_host: str = "127.0.0.1"  # the address we send from (and the platform sends its queries to)
    local_port: int = 0  # 0: any
    expires: int = 3600
    keepalive_interval_s: float = 60.0
    keepalive_failures: int = 3
    batch: int = 4  # items per Response MESSAGE at most
    max_body_udp: int = 1300  # bytes of one Response body on UDP (an item alone may be more)
    encoding: Literal["GB2312", "UTF-8"] = "GB2312"
    retry_min_s: float = 2.0
    retry_max_s: float = 300.0
    name: str = "vms"  # DeviceInfo's DeviceName
    manufacturer: str = "vms"
    firmware: str = ""
    t1: float = T1


@dataclass(slots=True)
class UpstreamStatus:
    """What ``status()`` shows (a copy): the registration's state and counters."""

    state: State = "stopped"
    registered_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    last_keepalive_at: dt.datetime | None = None  # the last keepalive the platform answered 2xx
    last_error: str | None = None
    failures: int = 0  # attempts failed in a row (the back-off grows with them)
    next_attempt_at: dt.datetime | None = None
    catalog_queries: int = 0
    catalog_messages: int = 0  # Response MESSAGEs the platform answered 2xx
    last_query_at: dt.datetime | None = None
    counters: dict[str, int] = field(default_factory=dict)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _encode(text: str, encoding: str) -> bytes:
    if encoding.upper() == "UTF-8":
        return text.encode("utf-8")
    return text.encode("gbk", errors="xmlcharrefreplace")  # devices declaring GB2312 read GBK


def catalog_bodies(
    items: Sequence[str],
    *,
    sn: int,
    device_id: str,
    batch: int = 4,
    max_body: int | None = 1300,
    encoding: str = "GB2312",
) -> list[bytes]:
    """The Response MESSAGE bodies answering a Catalog query: items packed in order, at most ``batch`` a body and
    (when ``max_body``) the body under ``max_body`` bytes unless one item alone is larger; each body carries the
    query's SN and SumNum = len(items). No items: one body with SumNum 0."""
    total = len(items)
    head = (
        f'<?xml version="1.0" encoding="{encoding}"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n'
        f"<SN>{sn}</SN>\r\n<DeviceID>{escape(device_id)}</DeviceID>\r\n<SumNum>{total}</SumNum>\r\n"
    )
    tail = "</DeviceList>\r\n</Response>\r\n"

    def body(chunk: list[bytes]) -> bytes:
        return (
            _encode(head + f'<DeviceList Num="{len(chunk)}">\r\n', encoding)
            + b"".join(chunk)
            + _encode(tail, encoding)
        )

    fixed = len(body([]))
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = fixed
    for text in items:
        data = _encode(text.strip() + "\r\n", encoding)
        full = len(chunk) >= max(1, batch) or (max_body is not None and chunk and size + len(data) > max_body)
        if full:
            out.append(body(chunk))
            chunk, size = [], fixed
        chunk.append(data)
        size += len(data)
    if chunk or not out:
        out.append(body(chunk))
    return out


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: GbUpstream) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not data.strip(b"\r\n\x00 "):
            return
        try:
            msg = parse_message(data, datagram=True)
        except SipParseError:
            self.owner._count("dropped")
            return
        self.owner._on_message(msg, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: the platform is down
        self.owner._count("udp_errors")
        self.owner._fail_all(f"platform unreachable ({exc.__class__.__name__})")


class _Tcp(asyncio.Protocol):
    def __init__(self, owner: GbUpstream) -> None:
        self.owner = owner
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except SipParseError:
            self.owner._count("tcp_closed")
            if self.transport is not None:
                self.transport.abort()
            return
        peer = self.transport.get_extra_info("peername") if self.transport else None
        addr = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        for msg in messages:
            self.owner._on_message(msg, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        self.owner._fail_all("connection to the platform lost")


class GbUpstream:
    """Registration to one upper platform and the answers to its queries (see the module text). ``start`` and
    ``stop`` run on the caller's event loop; ``status()`` may be read from any thread."""

    def __init__(self, config: UpstreamConfig, items: CatalogItems) -> None:
        self.config = config
        self.items = items
        self._status = UpstreamStatus()
        self.stats: collections.Counter[str] = collections.Counter()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: _Tcp | None = None
        self._local: tuple[str, int] = (config.local_host, config.local_port)
        self._remote: tuple[str, int] = (config.host, config.port)
        self._transactions = ClientTransactions(self._count)
        self._server_txs: collections.OrderedDict[str, tuple[float, bytes]] = collections.OrderedDict()
        self._cseq = itertools.count(1)
        self._sn = itertools.count(1)
        self._call_id = f"{_token(12)}@{config.local_host}"
        self._tag = _token(6)
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()  # set when the registration must be renewed now (keepalives refused...)
        self._random = random.Random()

    # ------------------------------------------------------------------ life

    def status(self) -> UpstreamStatus:
        st = replace(self._status)
        st.counters = dict(self.stats)
        return st

    @property
    def local_address(self) -> tuple[str, int]:
        return self._local

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self, *, unregister: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if unregister and self._status.state == "registered":
            with contextlib.suppress(UpstreamError, OSError):
                await asyncio.wait_for(self._register(expires=0), 5.0)
        self._status.state = "stopped"
        self._close()

    def _close(self) -> None:
        self._fail_all("stopped")
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None and self._tcp.transport is not None:
            self._tcp.transport.close()
        self._tcp = None

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] += n

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ the registration loop

    async def _run(self) -> None:
        cfg = self.config
        while True:
            try:
                await self._connect()
                self._status.state = "registering"
                granted = await self._register(expires=cfg.expires)
                now = _utcnow()
                self._status.state = "registered"
                self._status.registered_at = now
                self._status.expires_at = now + dt.timedelta(seconds=granted)
                self._status.failures = 0
                self._status.last_error = None
                self._status.next_attempt_at = None
                log.info("GB/T 28181 upstream: registered to %s:%s for %s s", cfg.host, cfg.port, granted)
                await self._registered(granted)
            except asyncio.CancelledError:
                raise
            except (UpstreamError, OSError) as exc:
                self._status.state = "retrying"
                self._status.failures += 1
                self._status.last_error = str(exc) or exc.__class__.__name__
                delay = min(cfg.retry_max_s, cfg.retry_min_s * 2 ** min(self._status.failures - 1, 20))
                delay *= self._random.uniform(0.8, 1.2)
                self._status.next_attempt_at = _utcnow() + dt.timedelta(seconds=delay)
                self._count("register_failed")
                log.warning("GB/T 28181 upstream %s:%s: %s; next attempt in %.1f s", cfg.host, cfg.port,
                            self._status.last_error, delay)
                if cfg.transport == "tcp":
                    self._close()
                await asyncio.sleep(delay)

    async def _connect(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        if cfg.transport == "udp":
            if self._udp is None:
                self._status.state = "connecting"
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self), local_addr=(cfg.local_host, cfg.local_port), family=socket.AF_INET
                )
                self._udp = transport
                sockname = transport.get_extra_info("sockname")
                self._local = (str(sockname[0]), int(sockname[1]))
                if self._local[0] in ("0.0.0.0", ""):  # noqa: S104  (bound to all: the address the platform reaches)
                    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                        probe.connect((cfg.host, cfg.port))
                        self._local = (probe.getsockname()[0], self._local[1])
            infos = await loop.getaddrinfo(cfg.host, cfg.port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
            self._remote = (str(infos[0][4][0]), int(infos[0][4][1]))
            return
        if self._tcp is not None and not self._tcp.lost.is_set():
            return
        self._status.state = "connecting"
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _Tcp(self), cfg.host, cfg.port, local_addr=self._local),
                10.0,
            )
        except TimeoutError:
            raise UpstreamError("connection to the platform timed out") from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect to the platform ({exc.strerror or exc})") from None
        self._tcp = proto
        assert proto.transport is not None
        sockname = proto.transport.get_extra_info("sockname")
        peer = proto.transport.get_extra_info("peername")
        self._local = (str(sockname[0]), int(sockname[1]))
        self._remote = (str(peer[0]), int(peer[1]))

    async def _registered(self, granted: int) -> None:
        """Keepalives until the registration is due again (returns) or fails (UpstreamError)."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + max(1.0, granted - min(60.0, granted / 5))
        next_keepalive = loop.time() + cfg.keepalive_interval_s
        missed = 0
        self._wake.clear()
        while True:
            now = loop.time()
            if now >= renew_at:
                return
            if now >= next_keepalive:
                next_keepalive = now + cfg.keepalive_interval_s
                try:
                    resp = await self._send_request("MESSAGE", self._keepalive_body())
                    ok = 200 <= resp.status < 300
                except UpstreamError:
                    ok = False
                else:
                    if not ok:  # the platform no longer knows us (restarted, expired us): register again now
                        self._count("keepalive_refused")
                        log.info("GB/T 28181 upstream: keepalive refused (%s): registering again", resp.status)
                        return
                if ok:
                    missed = 0
                    self._status.last_keepalive_at = _utcnow()
                    self._count("keepalive_ok")
                else:
                    missed += 1
                    self._count("keepalive_failed")
                    if missed >= cfg.keepalive_failures:
                        raise UpstreamError(f"{missed} keepalives in a row not answered")
                continue
            if self._tcp is not None and self._tcp.lost.is_set():
                raise UpstreamError("connection to the platform lost")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(renew_at, next_keepalive) - now)
            if self._wake.is_set():
                self._wake.clear()
                if self._tcp is not None and self._tcp.lost.is_set():
                    raise UpstreamError("connection to the platform lost")

    async def _register(self, *, expires: int) -> int:
        """REGISTER (and again with digest after a 401): the expiry granted. UpstreamError when refused."""
        extra = [("Expires", str(expires))]
        resp = await self._send_request("REGISTER", b"", extra=extra)
        stale_retry = True
        for _ in range(3):
            if resp.status != 401:
                break
            challenge = resp.get("WWW-Authenticate") or ""
            auth = self._authorization(challenge, self._register_uri())
            if auth is None:
                raise UpstreamError("the platform's challenge is not MD5 digest")
            resp = await self._send_request("REGISTER", b"", extra=[*extra, ("Authorization", auth)])
            if resp.status == 401 and "stale=true" in (resp.get("WWW-Authenticate") or "").replace(" ", "").lower():
                if not stale_retry:
                    break
                stale_retry = False
                continue
            if resp.status == 401:
                raise UpstreamError("the platform refused our password (401 again)")
        if not 200 <= resp.status < 300:
            raise UpstreamError(f"the platform refused the registration ({resp.status} {resp.reason})".strip())
        if expires == 0:
            return 0
        granted_text = (resp.get("Expires") or "").strip()
        granted = int(granted_text) if granted_text.isdigit() else expires
        return max(1, granted)

    def _register_uri(self) -> str:
        return f"sip:{self.config.upstream_id}@{self.config.upstream_domain}"

    def _authorization(self, challenge: str, uri: str) -> str | None:
        if not challenge.lstrip().lower().startswith("digest"):
            return None
        params = {
            m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _AUTH_PARAM.finditer(challenge.lstrip()[6:])
        }
        if params.get("algorithm", "MD5").upper() != "MD5" or "nonce" not in params:
            return None
        realm, nonce = params.get("realm", self.config.upstream_domain), params["nonce"]
        user = self.config.local_id
        ha1 = _md5(f"{user}:{realm}:{self.config.password}")
        ha2 = _md5(f"REGISTER:{uri}")
        qops = [q.strip() for q in (params.get("qop") or "").split(",") if q.strip()]
        value = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
        if "auth" in qops:
            cnonce, nc = _token(8), "00000001"
            response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
            value += f', response="{response}", qop=auth, nc={nc}, cnonce="{cnonce}"'
        else:
            value += f', response="{_md5(f"{ha1}:{nonce}:{ha2}")}"'
        if "opaque" in params:
            value += f', opaque="{params["opaque"]}"'
        return value + ", algorithm=MD5"

    def _keepalive_body(self) -> bytes:
        cfg = self.config
        text = (
            f'<?xml version="1.0" encoding="{cfg.encoding}"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
            f"<SN>{next(self._sn)}</SN>\r\n<DeviceID>{cfg.local_id}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
        )
        return _encode(text, cfg.encoding)

    # ------------------------------------------------------------------ client transactions

    def _send(self, data: bytes) -> bool:
        """False when there is no socket or connection to the platform."""
        if self.config.transport == "udp":
            if self._udp is None:
                return False
            self._udp.sendto(data, self._remote)
            return True
        if self._tcp is None or self._tcp.transport is None or self._tcp.transport.is_closing():
            return False
        self._tcp.transport.write(data)
        return True

    async def _send_request(
        self, method: str, body: bytes, *, extra: Sequence[tuple[str, str]] = (), call_id: str | None = None
    ) -> SipMessage:
        """One non-INVITE client transaction (RFC 3261 timers E/F on UDP): the final response."""
        cfg = self.config
        branch = f"z9hG4bK{_token(10)}"
        host, port = self._local
        register = method == "REGISTER"
        msg = SipMessage(method=method, uri=self._register_uri() if register else
                         f"sip:{cfg.upstream_id}@{cfg.upstream_domain}")
        msg.headers = [
            ("Via", f"SIP/2.0/{cfg.transport.upper()} {host}:{port};rport;branch={branch}"),
            ("From", f"<sip:{cfg.local_id}@{cfg.local_domain}>;tag={self._tag if register else _token(6)}"),
            ("To", f"<sip:{cfg.local_id if register else cfg.upstream_id}@"
                   f"{cfg.local_domain if register else cfg.upstream_domain}>"),
            ("Call-ID", self._call_id if register else call_id or f"{_token(12)}@{host}"),
            ("CSeq", f"{next(self._cseq)} {method}"),
            ("Max-Forwards", "70"),
            ("User-Agent", "vms"),
        ]
        if register:
            msg.headers.append(("Contact", f"<sip:{cfg.local_id}@{host}:{port}>"))
        msg.headers.extend(extra)
        if body:
            msg.headers.append(("Content-Type", _MANSCDP))
        msg.body = body
        try:
            resp = await self._transactions.request(
                branch, msg.to_bytes(), self._send, retransmit=cfg.transport == "udp", t1=cfg.t1
            )
        except NoPath:
            raise UpstreamError("not connected to the platform") from None
        except TransactionTimeout:
            raise UpstreamError(f"no answer to {method} from {cfg.host}:{cfg.port}") from None
        self._count(f"sent_{method.lower()}")
        return resp

    def _fail_all(self, reason: str) -> None:
        self._transactions.fail_all(UpstreamError(reason))
        self._wake.set()

    # ------------------------------------------------------------------ what the platform sends

    def _on_message(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        try:
            if msg.is_request:
                self._on_request(msg, addr)
                return
            self._transactions.response(msg)
        except SipParseError:
            self._count("dropped")
        except Exception:
            self._count("errors")
            log.exception("GB/T 28181 upstream: failed to handle a %s", msg.method or msg.status)

    def _on_request(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        vias = msg.vias()
        if not vias or msg.get("Call-ID") is None or msg.get("From") is None:
            self._count("dropped")
            return
        method = msg.method or ""
        if method == "ACK":
            return
        via = parse_via(vias[0])
        key = f"{via.branch}|{msg.get('Call-ID')}|{msg.get('CSeq')}|{addr}"
        cached = self._server_txs.get(key)
        if cached is not None:
            self._count("retransmitted")
            self._reply(cached[1], via.params, via.port, addr)
            return
        after: list[Callable[[], None]] = []
        if self.config.transport == "udp" and addr[0] != self._remote[0]:
            status = 403  # only the platform we registered to may ask
        elif method == "MESSAGE":
            status = self._message(msg, after)
        elif method == "OPTIONS":
            status = 200
        else:
            status = 501
        resp = SipMessage(status=status)
        for i, value in enumerate(vias):
            resp.headers.append(("Via", _stamp_via(value, addr) if i == 0 else value))
        to = msg.get("To") or ""
        if ";tag=" not in to.replace(" ", "").lower():
            to = f"{to};tag={_token(6)}"
        resp.headers += [("From", msg.get("From") or ""), ("To", to), ("Call-ID", msg.get("Call-ID") or ""),
                         ("CSeq", msg.get("CSeq") or ""), ("User-Agent", "vms")]
        if status == 501:
            resp.headers.append(("Allow", _ALLOW))
        data = resp.to_bytes()
        now = time.monotonic()
        self._server_txs[key] = (now + SERVER_TX_TTL_S, data)
        while self._server_txs and (
            len(self._server_txs) > MAX_SERVER_TX or next(iter(self._server_txs.values()))[0] <= now
        ):
            self._server_txs.popitem(last=False)
        self._reply(data, via.params, via.port, addr)
        for fn in after:
            fn()

    def _reply(self, data: bytes, params: dict[str, str | None], via_port: int | None, addr: tuple[str, int]) -> None:
        if self.config.transport == "tcp":
            self._send(data)
            return
        port = addr[1] if "rport" in params or via_port is None else via_port
        if self._udp is not None:
            self._udp.sendto(data, (addr[0], port))

    def _message(self, msg: SipMessage, after: list[Callable[[], None]]) -> int:
        try:
            doc = parse_manscdp(msg.body)
        except ManscdpError:
            self._count("message_unreadable")
            return 400
        if doc.root.lower() != "query":
            self._count("message_other")
            return 200
        cmd = doc.cmd_type.lower()
        sn = doc.sn if doc.sn is not None else 0
        asked = doc.device_id or self.config.local_id
        if cmd == "catalog":
            self._count("catalog_queries")
            self._status.catalog_queries += 1
            self._status.last_query_at = _utcnow()
            after.append(lambda: self._spawn(self._answer_catalog(sn, asked)))
        elif cmd in ("deviceinfo", "devicestatus"):
            self._count(f"{cmd}_queries")
            after.append(lambda: self._spawn(self._answer_device(cmd, sn, asked)))
        else:
            self._count("message_other")
        return 200

    async def _answer_catalog(self, sn: int, asked: str) -> None:
        cfg = self.config
        try:
            items = await asyncio.get_running_loop().run_in_executor(None, self.items)
        except Exception:
            self._count("catalog_errors")
            log.exception("GB/T 28181 upstream: reading the catalog failed")
            return
        bodies = catalog_bodies(
            items, sn=sn, device_id=asked, batch=cfg.batch,
            max_body=cfg.max_body_udp if cfg.transport == "udp" else None, encoding=cfg.encoding,
        )  # fmt: skip
        for body in bodies:
            try:
                resp = await self._send_request("MESSAGE", body)
            except UpstreamError as exc:
                self._count("catalog_errors")
                log.warning("GB/T 28181 upstream: Catalog answer (SN %s) not delivered: %s", sn, exc)
                return
            if 200 <= resp.status < 300:
                self._count("catalog_messages")
                self._status.catalog_messages += 1
            else:
                self._count("catalog_refused")
                log.warning("GB/T 28181 upstream: the platform refused a Catalog answer (%s)", resp.status)
                return

    async def _answer_device(self, cmd: str, sn: int, asked: str) -> None:
        cfg = self.config
        ours = asked == cfg.local_id
        if cmd == "deviceinfo":
            count = 0
            if ours:
                with contextlib.suppress(Exception):
                    count = len(await asyncio.get_running_loop().run_in_executor(None, self.items))
            fields = (
                f"<DeviceName>{escape(cfg.name)}</DeviceName>\r\n<Result>OK</Result>\r\n"
                f"<Manufacturer>{escape(cfg.manufacturer)}</Manufacturer>\r\n<Model>vms</Model>\r\n"
                f"<Firmware>{escape(cfg.firmware)}</Firmware>\r\n<Channel>{count}</Channel>\r\n"
                if ours else "<Result>ERROR</Result>\r\n"
            )
            tag = "DeviceInfo"
        else:
            stamp = dt.datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
            fields = (
                f"<Result>OK</Result>\r\n<Online>ONLINE</Online>\r\n<Status>OK</Status>\r\n"
                f"<DeviceTime>{stamp}</DeviceTime>\r\n"
                if ours else "<Result>ERROR</Result>\r\n"
            )
            tag = "DeviceStatus"
        text = (
            f'<?xml version="1.0" encoding="{cfg.encoding}"?>\r\n<Response>\r\n<CmdType>{tag}</CmdType>\r\n'
            f"<SN>{sn}</SN>\r\n<DeviceID>{escape(asked)}</DeviceID>\r\n{fields}</Response>\r\n"
        )
        with contextlib.suppress(UpstreamError):
            await self._send_request("MESSAGE", _encode(text, cfg.encoding))
