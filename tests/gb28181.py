"""GB/T 28181 test helpers: an in-memory Directory (the real interface the server calls, kept in lists), a raw SIP
device over UDP or TCP on 127.0.0.1 (for what SIPp cannot show: byte-exact retransmissions, hostile input), and
SIPp runs of the scenarios in tests/data/sipp/ (skipped without sipp, failed on CI: tests/services.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from probes.gb28181 import CatalogAnswer, CatalogNotice, GbServer, Keepalive, Registration, Unregistration
from probes.gb28181.message import SipMessage, StreamFramer, parse_message
from tests.services import ServiceUnavailable, skip_or_fail

SIPP_DIR = Path(__file__).parent / "data" / "sipp"
SERVER_ID = "34020000002000000001"
REALM = "3402000000"
PASSWORD = "secret-pw-1"
T = TypeVar("T")


@dataclass
class MemoryDirectory:
    """Passwords by ID prefix (or exact ID); every event kept in order, and each kind in its own list."""

    passwords: dict[str, str] = field(default_factory=lambda: {"3713": PASSWORD})
    events: list[object] = field(default_factory=list)
    registrations: list[Registration] = field(default_factory=list)
    unregistrations: list[Unregistration] = field(default_factory=list)
    keepalives: list[Keepalive] = field(default_factory=list)
    answers: list[CatalogAnswer] = field(default_factory=list)
    notices: list[CatalogNotice] = field(default_factory=list)
    lookups: int = 0

    def password_for(self, device_id: str) -> str | None:
        self.lookups += 1
        if device_id in self.passwords:
            return self.passwords[device_id]
        for prefix, password in self.passwords.items():
            if device_id.startswith(prefix):
                return password
        return None

    def registered(self, event: Registration) -> None:
        self.events.append(event)
        self.registrations.append(event)

    def unregistered(self, event: Unregistration) -> None:
        self.events.append(event)
        self.unregistrations.append(event)

    def keepalive(self, event: Keepalive) -> None:
        self.events.append(event)
        self.keepalives.append(event)

    def catalog(self, answer: CatalogAnswer) -> None:
        self.events.append(answer)
        self.answers.append(answer)

    def notice(self, notice: CatalogNotice) -> None:
        self.events.append(notice)
        self.notices.append(notice)


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll ``predicate()`` every 20 ms until true or ``timeout`` seconds."""
    return bool(until(predicate, timeout, every=0.02))


def until(check: Callable[[], object], timeout: float = 10.0, *, every: float = 0.1) -> object:
    """Poll ``check()`` until it gives something true (returned) or ``timeout`` seconds pass (its last value)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    return check()


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def digest_header(device_id: str, password: str, challenge: str, uri: str, realm: str | None = None) -> str:
    params = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge))
    realm = realm or params["realm"]
    nonce = params["nonce"]
    response = md5(f"{md5(f'{device_id}:{realm}:{password}')}:{nonce}:{md5(f'REGISTER:{uri}')}")
    return (f'Digest username="{device_id}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5')


class RawDevice:
    """One SIP endpoint on a loopback address (127.0.0.1 unless ``bind``) speaking bytes to the server (UDP, TCP)."""

    def __init__(self, transport: str, server_port: int, device_id: str = "37131100001320000001",
                 bind: str = "127.0.0.1") -> None:
        self.transport = transport
        self.server = ("127.0.0.1", server_port)
        self.device_id = device_id
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.settimeout(3.0)
        self.bind = bind
        self.sock.bind((bind, 0))
        if transport == "tcp":
            self.sock.connect(self.server)
        self.port = self.sock.getsockname()[1]
        self._framer = StreamFramer()
        self._pending: list[SipMessage] = []
        self._n = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def recv_raw(self) -> bytes:
        """One datagram, as sent (UDP only)."""
        assert self.transport == "udp"
        return self.sock.recvfrom(65535)[0]

    def recv(self) -> SipMessage:
        if self.transport == "udp":
            return parse_message(self.recv_raw())
        while not self._pending:
            chunk = self.sock.recv(65535)
            if not chunk:
                raise ConnectionError("closed by the server")
            self._pending.extend(self._framer.feed(chunk))
        return self._pending.pop(0)

    def request(self, method: str, *, headers: Sequence[tuple[str, str]] = (), body: bytes = b"",
                branch: str | None = None, call_id: str = "call-1", cseq: int | None = None,
                from_tag: str = "ft1") -> bytes:
        self._n += 1
        branch = branch or f"z9hG4bK-{self._n}-{os.getpid()}"
        lines = [
            f"{method} sip:{SERVER_ID}@{REALM} SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} {self.bind}:{self.port};rport;branch={branch}",
            f"From: <sip:{self.device_id}@{REALM}>;tag={from_tag}",
            f"To: <sip:{self.device_id if method == 'REGISTER' else SERVER_ID}@{REALM}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq if cseq is not None else self._n} {method}",
            "Max-Forwards: 70",
            *(f"{k}: {v}" for k, v in headers),
            f"Content-Length: {len(body)}",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def register(self, password: str = PASSWORD, expires: int = 3600) -> SipMessage:
        """REGISTER, the 401, REGISTER with digest: the final response."""
        contact = ("Contact", f"<sip:{self.device_id}@{self.bind}:{self.port}>")
        self.send(self.request("REGISTER", headers=[contact, ("Expires", str(expires))]))
        challenge = self.recv()
        assert challenge.status == 401, challenge.status
        auth = digest_header(self.device_id, password, challenge.get("WWW-Authenticate") or "",
                             f"sip:{SERVER_ID}@{REALM}")
        self.send(self.request("REGISTER", headers=[contact, ("Expires", str(expires)), ("Authorization", auth)]))
        return self.recv()

    def keepalive(self, sn: int = 1) -> bytes:
        body = (f'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
                f"<SN>{sn}</SN>\r\n<DeviceID>{self.device_id}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n")
        return self.request("MESSAGE", headers=[("Content-Type", "Application/MANSCDP+xml")], body=body.encode())


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        skip_or_fail(ServiceUnavailable("sipp not found (Debian package sip-tester; deploy/bootstrap.sh --dev)"))
    return path


def device_csv(path: Path, ids: Sequence[str], password: str = PASSWORD) -> Path:
    """An injection file: the ID, then the whole authentication keyword (FIELD-NOTES: SIPp needs it whole)."""
    rows = [f"{d};[authentication username={d} password={password}]" for d in ids]
    path.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n", encoding="ascii")
    return path


@dataclass(frozen=True)
class SippRun:
    returncode: int
    output: str
    seconds: float


def run_sipp(port: int, scenario: str, csv: Path, transport: str, *, calls: int = 1, rate: int = 10,
             limit: int | None = None, ooc: str | None = None, timeout_s: int = 20, cwd: Path | None = None,
             extra: Sequence[str] = ()) -> SippRun:
    """SIPp as GB/T 28181 devices against 127.0.0.1:``port``, bounded by its own -timeout and ours."""
    cmd = [sipp_binary(), f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / scenario), "-inf", str(csv),
           "-t", "u1" if transport == "udp" else "t1", "-i", "127.0.0.1", "-m", str(calls), "-r", str(rate),
           "-nd", "-nostdin", "-timeout", f"{timeout_s}s", "-timeout_error", *extra]
    if limit is not None:
        cmd += ["-l", str(limit)]
    if ooc is not None:
        cmd += ["-oocsf", str(SIPP_DIR / ooc)]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout_s + 10,
                              check=False)
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, out = -1, (exc.stdout or b"") + (exc.stderr or b"")
    return SippRun(code, out.decode(errors="replace")[-3000:], time.monotonic() - start)


class ServerThread:
    """A GbServer on 127.0.0.1 (UDP and TCP on ports chosen by the system) in its own thread and event loop, so
    tests can use blocking sockets and subprocesses; ``call`` runs a coroutine of the server there."""

    def __init__(self, directory: MemoryDirectory | None = None, **options: Any) -> None:
        self.directory = directory or MemoryDirectory()
        options.setdefault("query_catalog_on_register", False)
        options.setdefault("catalog_quiet_s", 1.0)
        self.server = GbServer(self.directory, sip_id=SERVER_ID, realm=REALM, host="127.0.0.1", udp_port=0,
                               tcp_port=0, **options)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gb28181-server", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        self.call(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.call(self.server.stop(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def port(self, transport: str) -> int:
        port = self.server.udp_port if transport == "udp" else self.server.tcp_port
        assert port
        return port
