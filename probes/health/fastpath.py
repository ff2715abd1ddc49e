"""The steady-state fast path of the ONVIF stages (tcp, onvif, login, stream) of one camera.

A device whose :class:`~probes.health.check.DeviceMemory` knows its media service and a login that needs no
challenge round trip (WS-UsernameToken, or none) gets its 4 calls (GetSystemDateAndTime, GetDeviceInformation,
GetProfiles, GetStreamUri) on one connection driven by callbacks (:class:`~probes.onvif.http.CallbackConnection`):
no task, future or coroutine per request, one timer per device (re-armed for a later stage's deadline only when it
fires before the device is done). Requests are built and signed exactly as the
normal path builds them (WS-UsernameToken with the device's clock offset), replies parsed by the same parsers,
and the result is the one the normal path gives.

Anything else than a clean answer (a non-2xx, a SOAP fault, an unparseable reply, a timeout, a closed connection,
an empty profile list...) hands the device to the normal path at the stage it was in: the replies that stage
received so far are *replayed* to the normal path's code (:class:`_Replay`), which decides from them as it would
have on the wire (a refused login is charged once, by the normal path, and never resent; a timeout is reported as
a timeout), and goes on to the network only for what it would have sent next. The normal path stays the
reference: whatever it does with a reply, the fast path does by running it.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import time
from collections.abc import Sequence
from typing import Final

from probes.health.check import (
    ONVIF_STAGES,
    CheckTarget,
    _Check,
    _Context,
    _failed,
    _HostRound,
    _main_rank,
    _outcome,
    _Profiles,
    _Progress,
    _result,
    _run_stage,
)
from probes.health.results import CheckResult, StageResult
from probes.onvif.addresses import strip_credentials
from probes.onvif.auth import Credential, wsse_header
from probes.onvif.client import MAX_REPLY_BYTES, DeviceChannel, _transport_failure, clock_offset, open_channel
from probes.onvif.http import CallbackConnection, HttpClient, Response
from probes.onvif.parse import (
    parse_media2_profiles,
    parse_media_profiles,
    parse_system_date_and_time,
    parse_uri,
    unique_tokens,
)
from probes.onvif.soap import (
    MalformedReply,
    Operation,
    Ops,
    build_envelope,
    parse_reply,
    plain_envelope,
    request_header_lines,
)
from probes.policy import Refusal

__all__ = ["STATS", "fast_check"]

# How devices went: "ok" (all four calls on the fast path), "handed_over" (the normal path finished the check).
STATS: Final[collections.Counter[str]] = collections.Counter()

_Record = Response | Exception
_GSDT: Final = Ops.GET_SYSTEM_DATE_AND_TIME
_GDI: Final = Ops.GET_DEVICE_INFORMATION


class _Replay(HttpClient):
    """The channel's session while the normal path re-decides a stage: the replies that stage already received
    come back in order, without a byte sent; then requests go to the real client."""

    def __init__(self, real: HttpClient, records: Sequence[_Record]) -> None:  # no super(): nothing of its own
        self.real = real
        self.records = collections.deque(records)

    def build(self, method: bytes, host_header: bytes, target: bytes, headers: bytes, body: bytes, *,
              close: bool = False) -> bytes:
        return self.real.build(method, host_header, target, headers, body, close=close)

    async def request(self, host: str, port: int, scheme: str, data: bytes, *, timeout: float, max_bytes: int,
                      head: bool = False, fresh: bool = False) -> Response:
        if self.records:
            record = self.records.popleft()
            if isinstance(record, Exception):
                raise record
            return record
        return await self.real.request(host, port, scheme, data, timeout=timeout, max_bytes=max_bytes, head=head,
                                       fresh=fresh)

    async def preconnect(self, host: str, port: int, scheme: str = "http", *, timeout: float) -> None:
        await self.real.preconnect(host, port, scheme, timeout=timeout)

    def forget(self, host: str, port: int, scheme: str = "http") -> None:
        self.real.forget(host, port, scheme)


class _Run:
    """One device's calls after the TCP stage: a state machine fed by its connection's callbacks."""

    def __init__(self, check: _Check, channel: DeviceChannel, conn: CallbackConnection, method: str,
                 cred: Credential | None, media: tuple[str, bool], head: tuple[bytes, bytes],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.check = check
        self.channel = channel
        self.conn = conn
        self.method = method  # "wsse" or "none"
        self.cred = cred
        self.media_url, self.media2 = media
        self.host_header, self.device_target = head
        self.media_target = b""
        self.loop = loop
        self.done: asyncio.Future[int] = self.loop.create_future()  # the stage index to hand over, or -1: finished
        self.stage = 1  # index in ONVIF_STAGES
        self.call = 0  # 0 GetSystemDateAndTime, 1 GetDeviceInformation, 2 GetProfiles, 3 GetStreamUri
        self.records: list[_Record] = []  # what the current stage received
        self.stage_t0 = 0.0
        self.stage_deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.sent = 0.0
        self.charged = False
        self.profiles: _Profiles | None = None
        conn.on_reply = self.reply
        conn.on_error = self.error

    # -- stages ---------------------------------------------------------------------------------------------

    def begin(self, stage: int) -> None:
        check = self.check
        name = ONVIF_STAGES[stage]
        check.p.stage = name
        self.stage = stage
        self.records = []
        self.stage_t0 = time.perf_counter()
        timeout = check.ctx.timeouts.of(name)
        self.stage_deadline = deadline = self.loop.time() + timeout
        timer = self.timer
        if timer is not None:
            if timer.when() <= deadline:
                return  # it fires first, sees the later deadline and re-arms for it (a quick device: never)
            timer.cancel()
        self.timer = self.loop.call_at(deadline, self.expired)

    def passed(self) -> None:
        ms = round((time.perf_counter() - self.stage_t0) * 1000, 2)
        self.check.p.done.append(StageResult(ONVIF_STAGES[self.stage], True, ms, None, ""))

    def send(self, op: Operation, target: bytes, *, signed: bool = True) -> None:
        """One request; ``signed``: with the login (GetSystemDateAndTime goes anonymous, as in the normal path)."""
        conn = self.conn
        if conn.closed or (not conn.reusable() and conn.uses):
            self.hand_over()  # the normal path would open another connection: let it
            return
        channel = self.channel
        headers = request_header_lines(op.action, channel.soap)
        if signed and self.method == "wsse" and self.cred is not None:
            security = wsse_header(self.cred, clock_offset_s=channel.clock_offset_s or 0.0)
            body = build_envelope(op, header=security, soap=channel.soap)
        else:
            body = plain_envelope(op, channel.soap)
        session = self.check.ctx.session
        data = session.build(b"POST", self.host_header, target, headers, body)
        session.requests += 1
        conn.send_to_callback(data, max_bytes=MAX_REPLY_BYTES)

    def start(self) -> None:
        self.begin(1)
        self.sent = time.time()
        self.send(_GSDT, self.device_target, signed=False)

    # -- callbacks ------------------------------------------------------------------------------------------

    def reply(self, response: Response) -> None:
        self.records.append(response)
        try:
            self.advance(response)
        except Exception:  # a reply shape the fast path did not expect: the normal path's verdict
            if not self.done.done():
                self.hand_over()

    def error(self, exc: Exception) -> None:
        self.records.append(exc)
        self.hand_over()

    def expired(self) -> None:
        self.timer = None
        if self.done.done():
            return
        if self.loop.time() < self.stage_deadline:  # not this stage's
            self.timer = self.loop.call_at(self.stage_deadline, self.expired)
            return
        self.conn.detach()
        self.conn.abort()  # as the client aborts a request that timed out
        self.records.append(TimeoutError())
        self.hand_over()

    def advance(self, response: Response) -> None:
        if not 200 <= response.status < 300:
            self.hand_over()
            return
        try:
            reply = parse_reply(response.body)
        except MalformedReply:
            self.hand_over()
            return
        if reply.fault is not None:
            self.hand_over()
            return
        check = self.check
        call = self.call
        if call == 0:
            received = time.time()
            device_time = parse_system_date_and_time(reply.payload)  # ValueError: handed over
            offset = clock_offset(device_time.utc, self.sent, received)
            self.channel.answered()
            self.channel.clock_offset_s = offset
            check.host.clock_offset_s = offset
            check.p.clock_offset_s = offset
            self.passed()
            self.call = 1
            self.begin(2)
            ctx = check.ctx
            if self.method == "wsse" and not ctx.budget.try_charge(check.t.key):
                self.hand_over()  # the budget is spent: the normal path says so, nothing sent
                return
            self.charged = self.method == "wsse"
            self.send(_GDI, self.device_target)
        elif call == 1:
            self.channel.answered()
            ctx = check.ctx
            key = check.t.key
            if self.method == "wsse":
                assert self.cred is not None
                self.charged = False
                ctx.budget.refund(key)
                ctx.budget.mark_good(key, self.cred, "wsse")
                self.channel.logged_in("wsse", self.cred)
            else:
                self.channel.logged_in("none", None)
            ctx.memory.remember_auth(key, self.channel.auth_method)
            check.p.details["auth_method"] = self.channel.auth_method
            self.passed()
            self.call = 2
            self.begin(3)
            op = Ops.MEDIA2_GET_PROFILES if self.media2 else Ops.MEDIA_GET_PROFILES
            self.send(op, self.media_target)
        elif call == 2:
            parse = parse_media2_profiles if self.media2 else parse_media_profiles
            infos = unique_tokens(parse(reply.payload))
            if not infos:
                self.hand_over()
                return
            self.channel.answered()
            infos.sort(key=_main_rank, reverse=True)
            self.profiles = check.host.profiles = _Profiles(infos, self.media_url, self.media2)
            self.call = 3
            token = infos[0].token
            op = Ops.media2_stream_uri(token) if self.media2 else Ops.media_stream_uri(token)
            self.send(op, self.media_target)
        else:
            raw = parse_uri(reply.payload)
            if not raw:
                self.hand_over()
                return
            self.channel.answered()
            uri = self.channel.rewrite(raw)
            assert self.profiles is not None
            self.profiles.uris[self.profiles.infos[0].token] = uri
            check.p.stream_uri = uri
            known = strip_credentials(check.t.stream_uri.strip()) if check.t.stream_uri else None
            if known != uri:
                check.p.details["stream_uri_changed"] = True
            self.passed()
            self.finish(-1)

    # -- the end --------------------------------------------------------------------------------------------

    def hand_over(self) -> None:
        conn = self.conn
        if conn.on_reply is not None:  # keep or close the connection as the client does after a reply
            conn.detach()
            self.check.ctx.session.adopt(conn, self.channel.device_ip, self.channel.port, self.channel.scheme)
        if self.charged:  # the normal path charges this login itself when it re-decides the stage
            self.charged = False
            self.check.ctx.budget.refund(self.check.t.key)
        self.finish(self.stage)

    def finish(self, stage: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.done.done():
            self.done.set_result(stage)

    def abandon(self) -> None:
        """Cancelled (the sweep's deadline): the connection goes, a charged login stays charged (it was sent)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.conn.detach()
        self.conn.abort()


def _eligible_method(check: _Check) -> tuple[str, Credential | None] | None:
    ctx, t = check.ctx, check.t
    key = t.key
    hint = ctx.memory.auth_hint(key) or t.auth_hint
    if hint == "none":
        return "none", None
    if hint != "wsse":
        return None
    budget = ctx.budget
    credentials = budget.order(key, t.credentials)
    if budget.preferred_method(key, credentials[0]) == "digest":
        return None
    cred = next((c for c in credentials if not budget.is_bad(key, c, "wsse")), None)
    return ("wsse", cred) if cred is not None else None


async def fast_check(target: CheckTarget, host: _HostRound, ctx: _Context, progress: _Progress) -> CheckResult | None:
    """The ONVIF stages of a camera on its own (``host.cameras == 1``) by the fast path; None when the device does
    not qualify (nothing was sent: the caller runs the normal path)."""
    if not target.credentials:
        return None
    key = target.key
    services = ctx.memory.services(key)
    if services is None:
        return None
    media, media2 = services
    url = media2 or media
    if url is None:
        return None
    started_at = dt.datetime.now(dt.UTC)
    check = _Check(target, host, ctx, progress)
    how = _eligible_method(check)
    if how is None:
        return None
    timeouts = ctx.timeouts
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    tcp_deadline = loop.time() + timeouts.tcp
    try:
        channel = await open_channel(
            target.xaddr or key, credentials=target.credentials, session=ctx.session, budget=ctx.budget,
            timeout=timeouts.tcp, auth_hint=ctx.memory.auth_hint(key) or target.auth_hint, port=target.port,
            policy=ctx.policy,
        )
        device = await channel.endpoint(channel.url)
        where = await channel.endpoint(url) if ctx.policy.lookup_name(url) is None else None
    except (ValueError, OSError):
        return None  # the normal path says how (it opens the channel again)
    if (
        isinstance(device, Refusal) or where is None or isinstance(where, Refusal) or device.scheme != "http"
        or (where.host, where.port, where.scheme) != (device.host, device.port, device.scheme)
    ):
        return None
    host.channel = channel  # from here on the round's: closed with it
    conn: CallbackConnection | None = None
    try:
        async with asyncio.timeout_at(tcp_deadline):
            _transport, conn = await loop.create_connection(CallbackConnection, device.host, device.port)
    except (TimeoutError, OSError) as exc:
        step = _failed(_transport_failure(exc, "connect"))
        ms = round((time.perf_counter() - t0) * 1000, 2)
        progress.done.append(StageResult("tcp", False, ms, step.cause, step.detail))
        return _result(target, started_at, progress, _outcome(progress.done, channel.heard), step.cause)
    ctx.session.connections_opened += 1
    progress.done.append(StageResult("tcp", True, round((time.perf_counter() - t0) * 1000, 2), None, ""))
    method, cred = how
    run = _Run(check, channel, conn, method, cred, (url, media2 is not None), (device.host_header, device.target),
               loop)
    run.media_target = where.target
    run.start()
    try:
        stage = await run.done
    except BaseException:
        run.abandon()
        raise
    if stage < 0:
        STATS["ok"] += 1
        conn.reset()  # as the normal path closes the device's idle connection at the end: a RST
        # Every endpoint of the device's channel is this host:port: one forget does what closing the channel would.
        host.channel = None
        ctx.session.forget(device.host, device.port, device.scheme)
        return _result(target, started_at, progress, "ok", None)
    STATS["handed_over"] += 1
    return await _continue(check, run, stage, started_at)


async def _continue(check: _Check, run: _Run, stage: int, started_at: dt.datetime) -> CheckResult:
    """The normal path from ``stage`` on: that stage re-decided from the replies it received, then the rest."""
    channel = run.channel
    real = channel.session
    channel.session = _Replay(real, run.records)
    progress = check.p
    try:
        step = await _run_stage(check, ONVIF_STAGES[stage], started=run.stage_t0, deadline=run.stage_deadline)
    finally:
        channel.session = real
    progress.done.append(StageResult(ONVIF_STAGES[stage], step.ok, step.ms, step.cause, step.detail))
    if not step.ok:
        heard = channel.heard
        return _result(check.t, started_at, progress, _outcome(progress.done, heard), step.cause)
    for name in ONVIF_STAGES[stage + 1:]:
        progress.stage = name
        step = await _run_stage(check, name)
        progress.done.append(StageResult(name, step.ok, step.ms, step.cause, step.detail))
        if not step.ok:
            return _result(check.t, started_at, progress, _outcome(progress.done, channel.heard), step.cause)
    return _result(check.t, started_at, progress, "ok", None)

