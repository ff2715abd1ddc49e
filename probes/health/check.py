"""The staged health check of one camera (:func:`check_camera`) and of many (:func:`check_many`).

Stages run in the order of :data:`~probes.health.results.STAGES`, only those selected, and a check stops at the
first that fails:

* ``tcp``: a connection to the ONVIF host:port, kept for the calls that follow (no second handshake).
* ``onvif``: unauthenticated GetSystemDateAndTime; the clock offset is recorded. A device that wants a login even
  for its clock has answered all the same (Axis).
* ``login``: GetDeviceInformation with the camera's credential set through probes.onvif's auth and
  :class:`~probes.onvif.auth.LoginBudget` (keep the budget across sweeps: it is what never locks an account).
* ``stream``: GetProfiles and GetStreamUri of the main profile (largest picture, H.265 first; Media2 where the
  device has it); the URI rewritten to the answering host, credentials removed, compared with the inventory's.
  The service addresses come from GetServices (GetCapabilities on old firmwares) once, then from
  :class:`DeviceMemory`, so a steady sweep costs 4 SOAP calls per device.
* ``rtsp`` and ``snapshot``: probes.media after the address policy.
* ``frame``: a :class:`FrameStage` hook the caller gives (vms.frames samples a picture and judges its quality) with
  the stream URI the ``stream`` stage found, else the inventory's; its findings go into the result's details. The
  hook applies the address policy itself before it connects. Without a hook the stage cannot be selected.

Outcome: ``off`` when tcp or onvif failed with nothing heard (timeout, refused, unreachable, TLS); ``defect`` when
the device answered but a stage failed (a refused login included); ``deadline`` when the sweep's deadline came
first. Every stage has its own timeout, so a hanging device costs at most the sum of the selected stages' ones.

:func:`check_many` bounds the sweep: a global concurrency, a per-host limit (an NVR's 64 channels are one host:
they share the connection, one clock reading and one login per round), and a deadline after which unfinished
cameras are reported as ``deadline`` (at the stage they were in), never as ``off``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from probes.errors import Cause, Failure
from probes.health.results import STAGES, CheckResult, FrameVerdict, Outcome, StageResult
from probes.onvif.addresses import format_hostport, strip_credentials
from probes.onvif.auth import Credential, LoginBudget
from probes.onvif.client import DeviceChannel, clock_offset, make_session, open_channel
from probes.onvif.fanout import fan_out
from probes.onvif.http import HttpClient
from probes.onvif.parse import (
    MEDIA2_NS,
    MEDIA_NS,
    ProfileInfo,
    parse_capabilities,
    parse_media2_profiles,
    parse_media_profiles,
    parse_services,
    parse_system_date_and_time,
    parse_uri,
    unique_tokens,
)
from probes.onvif.soap import Ops, Reply
from probes.policy import AddressPolicy, Refusal, check_async
from probes.results import AuthMethod

__all__ = [
    "ONVIF_STAGES",
    "CheckTarget",
    "DeviceMemory",
    "FrameStage",
    "StageTimeouts",
    "check_camera",
    "check_many",
    "select_stages",
]

ONVIF_STAGES: Final = ("tcp", "onvif", "login", "stream")  # the every-few-minutes schedule
_TRANSPORT: Final = frozenset({Cause.TIMEOUT.value, Cause.REFUSED.value, Cause.UNREACHABLE.value, Cause.TLS.value})
_STAGE_TIMEOUT_CAUSE: Final = {"rtsp": "rtsp_timeout", "snapshot": "snapshot_timeout", "frame": "frame_timeout"}
DEADLINE: Final = "deadline"


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """One camera to check, as the inventory knows it. Cameras of one NVR share host and port."""

    camera_id: int
    host: str
    port: int = 80
    xaddr: str | None = None  # the device service URL; host:port and the standard path when absent
    credentials: tuple[Credential, ...] = ()
    auth_hint: AuthMethod | None = None
    stream_uri: str | None = None
    snapshot_uri: str | None = None
    expect_size: tuple[int, int] | None = None  # the snapshot's expected (width, height)

    @property
    def key(self) -> str:
        """host:port: the unit of the per-host limit and of the login budget."""
        return format_hostport(self.host, self.port)


@dataclass(frozen=True, slots=True)
class StageTimeouts:
    """Seconds per stage (the whole stage: a login's challenge round trip, GetProfiles + GetStreamUri...)."""

    tcp: float = 2.0
    onvif: float = 3.0
    login: float = 3.0
    stream: float = 4.0
    rtsp: float = 5.0
    snapshot: float = 5.0
    frame: float = 10.0

    def of(self, stage: str) -> float:
        value: float = getattr(self, stage)
        return value


@dataclass(slots=True)
class _Known:
    media: str | None = None
    media2: str | None = None
    services: bool = False  # media/media2 were asked
    auth: AuthMethod | None = None


@dataclass(slots=True)
class DeviceMemory:
    """What a check learnt that later rounds can skip asking: each device's media service addresses and the
    auth method that worked (WS-UsernameToken then goes out signed at once, without an anonymous try). Keep
    one across sweeps, like the LoginBudget; bounded, the least recently used forgotten first."""

    max_devices: int = 200_000
    devices: collections.OrderedDict[str, _Known] = field(default_factory=collections.OrderedDict)

    def _entry(self, key: str) -> _Known:
        entry = self.devices.get(key)
        if entry is None:
            entry = self.devices[key] = _Known()
            while len(self.devices) > self.max_devices:
                self.devices.popitem(last=False)
        else:
            self.devices.move_to_end(key)
        return entry

    def services(self, key: str) -> tuple[str | None, str | None] | None:
        entry = self.devices.get(key)
        return (entry.media, entry.media2) if entry is not None and entry.services else None

    def remember(self, key: str, media: str | None, media2: str | None) -> None:
        entry = self._entry(key)
        entry.media, entry.media2, entry.services = media, media2, True

    def auth_hint(self, key: str) -> AuthMethod | None:
        entry = self.devices.get(key)
        return entry.auth if entry is not None else None

    def remember_auth(self, key: str, method: AuthMethod | None) -> None:
        if method is not None:
            self._entry(key).auth = method

    def forget(self, key: str) -> None:
        """Drop what is known of a device (its firmware or credentials changed)."""
        self.devices.pop(key, None)

    def export(self, keys: Iterable[str]) -> dict[str, tuple[str | None, str | None, bool, str | None]]:
        """What is known of these devices, in plain values (for a worker process that checks them)."""
        out: dict[str, tuple[str | None, str | None, bool, str | None]] = {}
        for key in keys:
            entry = self.devices.get(key)
            if entry is not None:
                out[key] = (entry.media, entry.media2, entry.services, entry.auth)
        return out

    def load(self, state: Mapping[str, tuple[str | None, str | None, bool, str | None]],
             keys: Iterable[str] = ()) -> None:
        """Take what :meth:`export` gave: each device of ``state`` known as there, each of ``keys`` not in it
        forgotten (the exporter knows nothing of it)."""
        for key in keys:
            if key not in state:
                self.devices.pop(key, None)
        for key, (media, media2, services, auth) in state.items():
            entry = self._entry(key)
            entry.media, entry.media2, entry.services = media, media2, bool(services)
            entry.auth = auth if auth in ("wsse", "digest", "none") else None  # type: ignore[assignment]


class FrameStage(Protocol):
    """The ``frame`` stage: sample the camera's picture and judge it. ``stream_uri`` is the one the ``stream`` stage
    found now, else the inventory's (None when neither is known); ``target.host`` is the device's address as the
    check reached it and ``target.credentials`` start with the login that worked. Bounded by ``timeout`` (the
    check also cuts it there: ``frame_timeout``); never raises for device behaviour."""

    async def __call__(self, target: CheckTarget, stream_uri: str | None, timeout: float) -> FrameVerdict: ...


def select_stages(stages: Iterable[str], *, frame: bool = False) -> tuple[str, ...]:
    """The selected stages in check order. Raises ValueError naming an unknown or unavailable stage (``frame``
    only when the caller has a frame stage hook: ``frame=True``)."""
    chosen = set(stages)
    unknown = sorted(chosen - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}: choose from {', '.join(STAGES)}")
    if "frame" in chosen and not frame:
        raise ValueError("frame stage: needs a frame sampler")
    if not chosen:
        raise ValueError("no stage selected")
    return tuple(s for s in STAGES if s in chosen)


# --- one stage's verdict -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    ok: bool
    cause: str | None = None
    detail: str = ""
    ms: float = 0.0


def _failed(failure: Failure) -> _Step:
    return _Step(False, failure.cause.value, failure.detail)


@dataclass(slots=True)
class _Profiles:
    infos: list[ProfileInfo]
    url: str
    media2: bool
    uris: dict[str, str | None] = field(default_factory=dict)


class _HostRound:
    """One device's shared state in one check round: the channel, and the answers every camera of the device
    (an NVR's channels) would get alike: connection, clock, login, profiles, stream URIs per profile."""

    def __init__(self, target: CheckTarget, cameras: int) -> None:
        self.target = target
        self.cameras = cameras  # how many targets of the round share it (1 for a camera on its own)
        self.lock = asyncio.Lock()
        self.opening = asyncio.Lock()  # one channel per round, whichever stage opens it
        self.memo: dict[str, _Step] = {}
        self.channel: DeviceChannel | None = None
        self.clock_offset_s: float | None = None
        self.profiles: _Profiles | None = None

    def shared(self, name: str, compute: Callable[[], Awaitable[_Step]]) -> Awaitable[_Step]:
        if self.cameras == 1:  # a camera on its own: its stages run one after the other, nothing to share
            return compute()  # awaited by the stage itself: one coroutine less on each of its resumptions
        return self._shared(name, compute)

    async def _shared(self, name: str, compute: Callable[[], Awaitable[_Step]]) -> _Step:
        async with self.lock:
            known = self.memo.get(name)
            if known is not None:
                return known
            step = await compute()
            self.memo[name] = step
            return step

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


@dataclass(slots=True)
class _Context:
    session: HttpClient
    budget: LoginBudget
    timeouts: StageTimeouts
    policy: AddressPolicy
    memory: DeviceMemory
    frame_stage: FrameStage | None = None


@dataclass(slots=True)
class _Progress:
    """Where a check is, for a sweep deadline that interrupts it."""

    stage: str
    done: list[StageResult] = field(default_factory=list)
    clock_offset_s: float | None = None
    stream_uri: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


# --- the stages ----------------------------------------------------------------------------------------------------


class _Check:
    def __init__(self, target: CheckTarget, host: _HostRound, ctx: _Context, progress: _Progress) -> None:
        self.t = target
        self.host = host
        self.ctx = ctx
        self.p = progress
        self.deadline: float | None = None  # loop.time() at which the current ONVIF stage's budget ends

    def left(self, timeout: float) -> float:
        if self.deadline is None:
            return timeout
        return max(0.001, min(timeout, self.deadline - asyncio.get_running_loop().time()))

    async def channel(self, timeout: float) -> DeviceChannel | _Step:
        """The round's channel, its calls bounded by this stage's budget. Called with the round's lock held:
        channel calls never interleave, so the budget set here is this stage's."""
        host = self.host
        if host.channel is None:
            async with host.opening:
                return await self._open(timeout)
        host.channel.timeout = timeout
        host.channel.deadline = self.deadline
        return host.channel

    async def _open(self, timeout: float) -> DeviceChannel | _Step:
        host = self.host
        if host.channel is not None:
            host.channel.timeout = timeout
            host.channel.deadline = self.deadline
            return host.channel
        step = host.memo.get("open")
        if step is not None:
            return step
        try:
            host.channel = await open_channel(
                self.t.xaddr or self.t.key,
                credentials=self.t.credentials,
                session=self.ctx.session,
                budget=self.ctx.budget,
                timeout=timeout,
                auth_hint=self.ctx.memory.auth_hint(self.t.key) or self.t.auth_hint,
                port=self.t.port,
                policy=self.ctx.policy,
            )
        except ValueError as exc:
            step = host.memo["open"] = _Step(False, Cause.PROTOCOL.value, f"unusable device address: {exc}")
            return step
        except OSError as exc:
            step = host.memo["open"] = _Step(False, Cause.UNREACHABLE.value, str(exc))
            return step
        host.channel.deadline = self.deadline
        return host.channel

    async def tcp(self, timeout: float) -> _Step:
        async def compute() -> _Step:
            channel = await self.channel(timeout)
            if isinstance(channel, _Step):
                return channel
            failure = await channel.connect(self.left(timeout))
            return _failed(failure) if failure is not None else _Step(True)

        return await self.host.shared("tcp", compute)

    async def onvif(self, timeout: float) -> _Step:
        async def compute() -> _Step:
            channel = await self.channel(timeout)
            if isinstance(channel, _Step):
                return channel
            op = Ops.GET_SYSTEM_DATE_AND_TIME
            sent = time.time()
            reply = await channel.call(op.name, channel.url, op, anonymous=True)
            received = time.time()
            if isinstance(reply, Failure):
                if reply.cause is Cause.AUTH:
                    return _Step(True, detail="the device wants a login even for its clock")
                return _failed(reply)
            try:
                device_time = parse_system_date_and_time(reply.payload)
            except ValueError as exc:
                return _Step(False, Cause.MALFORMED.value, f"{op.name}: {exc}")
            offset = clock_offset(device_time.utc, sent, received)
            channel.clock_offset_s = offset
            self.host.clock_offset_s = offset
            return _Step(True)

        step = await self.host.shared("onvif", compute)
        self.p.clock_offset_s = self.host.clock_offset_s
        return step

    async def login(self, timeout: float) -> _Step:
        async def compute() -> _Step:
            channel = await self.channel(timeout)
            if isinstance(channel, _Step):
                return channel
            op = Ops.GET_DEVICE_INFORMATION
            reply = await channel.call(op.name, channel.url, op)
            if isinstance(reply, Failure):
                return _failed(reply)
            self.ctx.memory.remember_auth(self.t.key, channel.auth_method)
            return _Step(True)

        step = await self.host.shared("login", compute)
        channel = self.host.channel
        if step.ok and channel is not None and channel.auth_method is not None:
            self.p.details["auth_method"] = channel.auth_method
        return step

    async def stream(self, timeout: float) -> _Step:
        async def profiles_step() -> _Step:
            channel = await self.channel(timeout)
            return channel if isinstance(channel, _Step) else await self._profiles(channel)

        step = await self.host.shared("profiles", profiles_step)
        profiles = self.host.profiles
        if not step.ok or profiles is None:
            return step
        async with self.host.lock:  # one GetStreamUri per profile and round, whichever camera asks
            channel = await self.channel(timeout)
            if isinstance(channel, _Step):
                return channel
            uri, step = await self._pick(channel, profiles)
        if uri is None:
            return step
        self.p.stream_uri = uri
        known = strip_credentials(self.t.stream_uri.strip()) if self.t.stream_uri else None
        if known != uri:
            self.p.details["stream_uri_changed"] = True
        return _Step(True)

    async def _services(self, channel: DeviceChannel) -> tuple[str | None, str | None] | _Step:
        key = self.t.key
        known = self.ctx.memory.services(key)
        if known is not None:
            return known
        reply = await channel.call(Ops.GET_SERVICES.name, channel.url, Ops.GET_SERVICES)
        found: dict[str, str] = {}
        if isinstance(reply, Reply):
            found = parse_services(reply.payload)
        elif reply.cause.is_transport or reply.cause.is_auth:
            return _failed(reply)
        if not found:  # old firmwares lack GetServices (DOMAIN 7.7)
            caps = await channel.call(Ops.GET_CAPABILITIES.name, channel.url, Ops.GET_CAPABILITIES)
            if isinstance(caps, Reply):
                found = parse_capabilities(caps.payload)
            elif caps.cause.is_transport or caps.cause.is_auth:
                return _failed(caps)
        admitted: dict[str, str | None] = {}
        for ns in (MEDIA_NS, MEDIA2_NS):
            xaddr = found.get(ns)
            if xaddr is None:
                admitted[ns] = None
                continue
            verdict = await channel.admit(xaddr)
            # A service elsewhere than the policy allows is never called (no login goes there).
            admitted[ns] = None if isinstance(verdict, Refusal) else channel.rewrite(xaddr)
        media, media2 = admitted[MEDIA_NS], admitted[MEDIA2_NS]
        if media is None and media2 is None:
            if any(ns in found for ns in (MEDIA_NS, MEDIA2_NS)):
                return _Step(False, Cause.ADDRESS_REFUSED.value, "the media services' addresses were refused")
            media = channel.url  # unknown services: many stacks serve every service on the device endpoint
        self.ctx.memory.remember(key, media, media2)
        return media, media2

    async def _profiles(self, channel: DeviceChannel) -> _Step:
        services = await self._services(channel)
        if isinstance(services, _Step):
            return services
        media, media2 = services
        failure: Failure | None = None
        for url, is_media2 in ((media2, True), (media, False)):
            if url is None:
                continue
            op = Ops.MEDIA2_GET_PROFILES if is_media2 else Ops.MEDIA_GET_PROFILES
            step = "Media2.GetProfiles" if is_media2 else op.name
            reply = await channel.call(step, url, op)
            if isinstance(reply, Failure):
                failure = reply
                if reply.cause.is_transport or reply.cause.is_auth:
                    break
                continue
            infos = unique_tokens((parse_media2_profiles if is_media2 else parse_media_profiles)(reply.payload))
            if infos:
                infos.sort(key=_main_rank, reverse=True)
                self.host.profiles = _Profiles(infos, url, is_media2)
                return _Step(True)
        if failure is None or not failure.cause.is_transport:
            self.ctx.memory.forget(self.t.key)  # the next round asks for the service addresses again
        if failure is not None:
            return _failed(failure)
        return _Step(False, Cause.NOT_SUPPORTED.value, "no media profile")

    async def _uri(self, channel: DeviceChannel, profiles: _Profiles, info: ProfileInfo) -> str | Failure | None:
        if info.token in profiles.uris:
            return profiles.uris[info.token]
        if profiles.media2:
            step = "Media2.GetStreamUri"
            reply = await channel.call(step, profiles.url, Ops.media2_stream_uri(info.token))
            if isinstance(reply, Failure) and reply.cause in (Cause.NOT_SUPPORTED, Cause.PROTOCOL):
                # Some firmwares reject the "RtspUnicast" stream type but know the plain "RTSP" one.
                reply = await channel.call(step, profiles.url, Ops.media2_stream_uri(info.token, "RTSP"))
        else:
            reply = await channel.call("GetStreamUri", profiles.url, Ops.media_stream_uri(info.token))
        if isinstance(reply, Failure):
            return reply
        raw = parse_uri(reply.payload)
        uri = channel.rewrite(raw) if raw else None
        profiles.uris[info.token] = uri
        return uri

    async def _pick(self, channel: DeviceChannel, profiles: _Profiles) -> tuple[str | None, _Step]:
        """The main profile's stream URI; on a device shared by several cameras (an NVR's channels), the profile
        whose URI is this camera's, else the main one."""
        candidates = profiles.infos if self.host.cameras > 1 and self.t.stream_uri else profiles.infos[:1]
        known = strip_credentials(self.t.stream_uri.strip()) if self.t.stream_uri else None
        first: str | None = None
        last: _Step = _Step(False, Cause.NOT_SUPPORTED.value, "no stream URI")
        for index, info in enumerate(candidates):
            uri = await self._uri(channel, profiles, info)
            if isinstance(uri, Failure):
                last = _failed(uri)
                if uri.cause.is_transport or index == 0:
                    return None, last
                continue
            if index == 0:
                first = uri
            if uri is not None and uri == known:
                return uri, _Step(True)
        return (first, _Step(True)) if first is not None else (None, last)

    async def rtsp(self, timeout: float) -> _Step:
        from probes.media import MediaFailure, rtsp_describe

        url = self.p.stream_uri or self.t.stream_uri
        if not url:
            return _Step(False, Cause.NOT_SUPPORTED.value, "no stream URI known")
        refused = await self._refused(url, timeout)
        if refused is not None:
            return refused
        user, password = self._login()
        info = await rtsp_describe(
            url, username=user, password=password, timeout=timeout, policy=self.ctx.policy,
            device_ip=self._device_ip(),
        )
        if isinstance(info, MediaFailure):
            return _Step(False, info.cause, info.detail)
        self.p.details.update(codec=info.codec, width=info.width, height=info.height)
        return _Step(True)

    async def snapshot(self, timeout: float) -> _Step:
        from probes.media import MediaFailure, fetch_snapshot

        url = self.t.snapshot_uri
        if not url:
            return _Step(False, Cause.NOT_SUPPORTED.value, "no snapshot URI known")
        refused = await self._refused(url, timeout)
        if refused is not None:
            return refused
        user, password = self._login()
        info = await fetch_snapshot(
            url, username=user, password=password, timeout=timeout, policy=self.ctx.policy,
            device_ip=self._device_ip(), expect=self.t.expect_size,
        )
        if isinstance(info, MediaFailure):
            return _Step(False, info.cause, info.detail)
        self.p.details.update(snapshot_width=info.width, snapshot_height=info.height, snapshot_bytes=info.size)
        return _Step(True)

    async def frame(self, timeout: float) -> _Step:
        hook = self.ctx.frame_stage
        if hook is None:  # select_stages refused the stage already
            return _Step(False, Cause.NOT_SUPPORTED.value, "no frame sampler")
        target = self.t
        channel = self.host.channel
        if channel is not None:  # the address the device answered on, its working login first
            first = channel.credential
            creds = target.credentials
            if first is not None:
                creds = (first, *(c for c in creds if c != first))
            target = replace(target, host=channel.device_ip, credentials=creds)
        verdict = await hook(target, self.p.stream_uri or self.t.stream_uri, timeout)
        self.p.details.update(verdict.details)
        return _Step(verdict.ok, verdict.cause, verdict.detail)

    def _device_ip(self) -> str:
        channel = self.host.channel
        return channel.device_ip if channel is not None else self.t.host

    def _login(self) -> tuple[str | None, str | None]:
        channel = self.host.channel
        credential = channel.credential if channel is not None else None
        if credential is None and self.t.credentials:
            credential = self.t.credentials[0]
        return (credential.username, credential.password) if credential is not None else (None, None)

    async def _refused(self, url: str, timeout: float) -> _Step | None:
        """The address policy's verdict before anything connects to a stream or snapshot URI."""
        verdict = await check_async(self.ctx.policy, url, self._device_ip(), timeout=timeout)
        if isinstance(verdict, Refusal):
            return _Step(False, Cause.ADDRESS_REFUSED.value, f"{url.split('://', 1)[0]} URI at {verdict}")
        return None


def _main_rank(info: ProfileInfo) -> tuple[int, bool]:
    """The main stream first: the largest picture, H.265 over H.264 at the same size (as discovery keeps it)."""
    return (info.width or 0) * (info.height or 0), info.encoding == "H265"


async def _run_stage(check: _Check, stage: str, *, started: float | None = None,
                     deadline: float | None = None) -> _Step:
    """One stage; ``started`` (perf_counter) and ``deadline`` (loop time) of an ONVIF stage the fast path began."""
    timeout = check.ctx.timeouts.of(stage)
    if started is None:
        started = time.perf_counter()
    run: Callable[[float], Awaitable[_Step]] = getattr(check, stage)
    if stage in ONVIF_STAGES:
        # Every ONVIF call of the stage is cut to what is left of its budget (probes.onvif.client _Device.deadline):
        # the same bound as a timer around the stage, without one more timer per stage and device.
        check.deadline = deadline if deadline is not None else asyncio.get_running_loop().time() + timeout
        step = await run(timeout)
        return _Step(step.ok, step.cause, step.detail, round((time.perf_counter() - started) * 1000, 2))
    try:
        async with asyncio.timeout(timeout):
            step = await run(timeout)
    except TimeoutError:
        cause = _STAGE_TIMEOUT_CAUSE.get(stage, Cause.TIMEOUT.value)
        step = _Step(False, cause, f"no answer within the {stage} stage's {timeout:g} s")
    return _Step(step.ok, step.cause, step.detail, round((time.perf_counter() - started) * 1000, 2))


def _outcome(done: Sequence[StageResult], heard: bool) -> Outcome:
    """off: nothing heard from the device at its first ONVIF stage (a connection alone is not an answer)."""
    failed = done[-1]
    first = all(s.stage == "tcp" for s in done[:-1])
    if failed.stage in ONVIF_STAGES and failed.cause in _TRANSPORT and first and not heard:
        return "off"
    return "defect"


async def _check(target: CheckTarget, stages: Sequence[str], host: _HostRound, ctx: _Context,
                 progress: _Progress) -> CheckResult:
    started_at = dt.datetime.now(dt.UTC)
    check = _Check(target, host, ctx, progress)
    for stage in stages:
        progress.stage = stage
        step = await _run_stage(check, stage)
        progress.done.append(StageResult(stage, step.ok, step.ms, step.cause, step.detail))
        if not step.ok:
            heard = host.channel is not None and host.channel.heard
            return _result(target, started_at, progress, _outcome(progress.done, heard), step.cause)
    return _result(target, started_at, progress, "ok", None)


def _result(target: CheckTarget, at: dt.datetime, progress: _Progress, outcome: Outcome,
            cause: str | None) -> CheckResult:
    return CheckResult(
        camera_id=target.camera_id,
        at=at,
        stages=tuple(progress.done),
        outcome=outcome,
        stage=progress.stage,
        cause=cause,
        clock_offset_s=progress.clock_offset_s,
        stream_uri=progress.stream_uri,
        details=dict(progress.details),
    )


def _available(stages: Sequence[str], frame_stage: FrameStage | None) -> tuple[str, ...]:
    selected = select_stages(stages, frame=frame_stage is not None)
    if "rtsp" in stages or "snapshot" in stages:
        try:
            import probes.media  # noqa: F401
        except ImportError:
            raise ValueError("rtsp and snapshot stages: probes.media is not available") from None
    return selected


async def check_camera(
    target: CheckTarget,
    *,
    stages: Iterable[str] = ONVIF_STAGES,
    session: HttpClient,
    budget: LoginBudget,
    timeouts: StageTimeouts | None = None,
    policy: AddressPolicy | None = None,
    memory: DeviceMemory | None = None,
    frame_stage: FrameStage | None = None,
    fast_path: bool = True,
) -> CheckResult:
    """Check one camera through the selected ``stages`` (ValueError for an unknown or unavailable one).
    ``budget`` and ``memory`` should outlive the call (keep them across sweeps). Never raises for device
    behaviour; each stage is bounded by its timeout in ``timeouts``. ``frame_stage``: the hook of the ``frame``
    stage (:class:`FrameStage`). ``fast_path``: the ONVIF stages of a device the memory knows run by
    :mod:`probes.health.fastpath` (the same result; False: always the normal path)."""
    selected = _available(list(stages), frame_stage)
    ctx = _Context(session, budget, timeouts or StageTimeouts(), policy or AddressPolicy(), memory or DeviceMemory(),
                   frame_stage)
    host = _HostRound(target, 1)
    try:
        if fast_path and selected == ONVIF_STAGES:
            from probes.health.fastpath import fast_check

            progress = _Progress(selected[0])
            result = await fast_check(target, host, ctx, progress)
            if result is not None:
                return result
        return await _check(target, selected, host, ctx, _Progress(selected[0]))
    finally:
        host.close()


async def check_many(
    targets: Iterable[CheckTarget],
    *,
    stages: Iterable[str] = ONVIF_STAGES,
    budget: LoginBudget,
    session: HttpClient | None = None,
    concurrency: int = 200,
    per_host: int = 2,
    timeouts: StageTimeouts | None = None,
    deadline_s: float | None = None,
    policy: AddressPolicy | None = None,
    memory: DeviceMemory | None = None,
    frame_stage: FrameStage | None = None,
    fast_path: bool = True,
) -> AsyncIterator[CheckResult]:
    """Check many cameras; yield each result as it is ready (every target gets exactly one).

    At most ``concurrency`` cameras at a time and ``per_host`` per device (host:port): the cameras of one device
    with the same credentials share one round (connection, clock, login, profiles). After ``deadline_s`` seconds
    the cameras not finished are reported with outcome ``deadline`` at the stage they were in (or the first
    selected one when they had not started). ValueError for an unknown or unavailable stage (``frame`` needs
    ``frame_stage``). ``fast_path``: a camera on its own whose device the memory knows runs the ONVIF stages by
    :mod:`probes.health.fastpath` (the same result, less CPU; False: always the normal path)."""
    selected = _available(list(stages), frame_stage)
    if concurrency < 1 or per_host < 1:
        raise ValueError("concurrency and per_host must be >= 1")
    items = list(targets)
    own_session = session is None
    http = session or make_session(limit=max(16, concurrency * 2), limit_per_host=max(2, per_host))
    ctx = _Context(http, budget, timeouts or StageTimeouts(), policy or AddressPolicy(), memory or DeviceMemory(),
                   frame_stage)
    loop = asyncio.get_running_loop()
    deadline_at = loop.time() + deadline_s if deadline_s is not None else None
    fast: Callable[[CheckTarget, _HostRound, _Context, _Progress], Awaitable[CheckResult | None]] | None = None
    if fast_path and selected == ONVIF_STAGES:
        from probes.health.fastpath import fast_check as fast

    def round_key(t: CheckTarget) -> tuple[str, str | None, tuple[Credential, ...], str | None]:
        return t.key, t.xaddr, t.credentials, t.auth_hint

    left: collections.Counter[tuple[str, str | None, tuple[Credential, ...], str | None]] = collections.Counter(
        round_key(t) for t in items
    )
    rounds: dict[tuple[str, str | None, tuple[Credential, ...], str | None], _HostRound] = {}
    slots: dict[str, asyncio.Semaphore] = {}
    jobs = iter(items)

    async def one(target: CheckTarget) -> CheckResult:
        key = round_key(target)
        host = rounds.get(key)
        if host is None:
            host = rounds[key] = _HostRound(target, left[key])
        progress = _Progress(selected[0])
        slot = slots.get(target.key)
        if slot is None:
            slot = slots[target.key] = asyncio.Semaphore(per_host)
        at: dt.datetime | None = None  # taken only with a deadline: the time of a result it cuts short
        try:
            if deadline_at is None:
                async with slot:
                    if fast is not None and host.cameras == 1:
                        result = await fast(target, host, ctx, progress)
                        if result is not None:
                            return result
                    return await _check(target, selected, host, ctx, progress)
            at = dt.datetime.now(dt.UTC)
            if loop.time() >= deadline_at:  # not started: the first selected stage was never reached
                return _result(target, at, progress, DEADLINE, DEADLINE)
            async with asyncio.timeout_at(deadline_at), slot:
                if fast is not None and host.cameras == 1:
                    result = await fast(target, host, ctx, progress)
                    if result is not None:
                        return result
                return await _check(target, selected, host, ctx, progress)
        except TimeoutError:  # the sweep's deadline (each stage catches its own timeout)
            return _result(target, at or dt.datetime.now(dt.UTC), progress, DEADLINE, DEADLINE)
        finally:
            left[key] -= 1
            if left[key] <= 0:
                del left[key]
                done = rounds.pop(key, None)
                if done is not None:
                    done.close()

    async def worker(emit: Callable[[CheckResult], Awaitable[None]]) -> None:
        while (target := next(jobs, None)) is not None:
            await emit(await one(target))

    try:
        async with contextlib.aclosing(fan_out(worker, min(concurrency, len(items)))) as results:
            async for item in results:
                yield item
    finally:
        for host in rounds.values():
            host.close()
        if own_session:
            await http.close()
