"""The staged health check (probes.health.check) against the simulated fleet over real loopback sockets.

Each fault profile ends in the right outcome, stage and cause; a hanging device costs no more than its stage
timeouts; wrong credentials never lock a `lockout` device however many sweeps run; the sweep deadline reports
"deadline", never "off"; the per-host limit holds (counted at a relaying server); a stream or snapshot URI on
another host is refused and nothing connects there. The fleet serves from its own thread (tests/fleets.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest

from probes.health.check import (
    ONVIF_STAGES,
    CheckTarget,
    DeviceMemory,
    StageTimeouts,
    check_camera,
    check_many,
    select_stages,
)
from probes.health.results import CheckResult
from probes.onvif.auth import Credential, LoginBudget
from probes.onvif.client import make_session
from probes.onvif.http import HttpClient
from probes.sim import SimFleet, build_fleet
from probes.sim.devices import DEFAULT_PASSWORD, DEFAULT_USERNAME, DeviceSpec
from probes.sim.rtsp import RtspUnavailable, start_rtsp_server
from tests.fleets import fleet_in_thread
from tests.services import skip_or_fail

GOOD = (Credential(DEFAULT_USERNAME, DEFAULT_PASSWORD),)
WRONG = (Credential(DEFAULT_USERNAME, "wrong-1"), Credential(DEFAULT_USERNAME, "wrong-2"))
TIMEOUTS = StageTimeouts(tcp=1.0, onvif=1.5, login=1.5, stream=2.0, rtsp=1.5, snapshot=1.5)

# index -> faults; the auth mode pins the path each fault bites on
LAYOUT: dict[int, set[str]] = {
    0: set(),
    1: {"offline"},
    2: {"hang"},
    3: {"slow"},
    4: {"wrong_password"},
    5: {"lockout"},  # right credentials: fine
    6: {"clock_skew"},
    7: {"private_addrs"},
    8: {"zero_addrs"},
    9: {"no_get_services"},
    10: set(),  # Media2 (H.265 main stream)
    11: {"lockout"},  # wrong credentials, sweep after sweep
    12: {"hang"},  # the deadline's
    13: {"hang"},
    14: set(),  # an NVR: many cameras, one host
    15: {"slow"},  # behind the counting relay
    16: {"malformed_xml"},  # the quirks a check survives: recovered replies, odd HTTP, odd auth refusals
    17: {"invalid_utf8"},
    18: {"auth_http_400"},
    19: {"soap_content_type_mismatch"},
    20: {"picky_probe"},
}
AUTH = {0: "both", 4: "both", 5: "both", 6: "wsse", 10: "digest", 11: "both", 14: "digest", 15: "wsse", 16: "digest",
        17: "wsse", 18: "digest"}


def _base_host() -> str:
    pid = os.getpid()  # per process: parallel runs never share addresses
    return f"127.{200 + pid % 50}.{(pid // 50) % 250}.1"


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    devices = build_fleet(
        len(LAYOUT),
        fault_mix={},
        faults_by_index=LAYOUT,
        auth_by_index=AUTH,  # type: ignore[arg-type]
        media2_by_index={i: i == 10 for i in LAYOUT},
        base_host=_base_host(),
        port=0,
    )
    sim = SimFleet(devices=devices, rtsp=False, discovery=False, slow_delay_s=(0.3, 0.4))
    with fleet_in_thread(sim) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[HttpClient]:
    async with make_session(limit_per_host=8) as http:
        yield http


def _stream(d: DeviceSpec) -> str:
    return f"rtsp://{d.host}:554/cam{d.index}"  # what the inventory keeps: the address that answers


def _target(d: DeviceSpec, camera_id: int | None = None, **kw: object) -> CheckTarget:
    fields: dict[str, object] = {"credentials": GOOD, "stream_uri": _stream(d)}
    fields.update(kw)
    return CheckTarget(camera_id if camera_id is not None else d.index, d.host, d.port, **fields)  # type: ignore[arg-type]


async def _check(fleet: SimFleet, index: int, session: HttpClient, **kw: object) -> CheckResult:
    return await check_camera(
        _target(fleet.device(index)), session=session, budget=LoginBudget(), timeouts=TIMEOUTS, **kw  # type: ignore[arg-type]
    )


async def test_every_fault_ends_in_its_outcome_stage_and_cause(fleet: SimFleet, session: HttpClient) -> None:
    expected = {  # index: (outcome, stage, cause)
        0: ("ok", "stream", None),
        1: ("off", "tcp", "refused"),
        2: ("off", "onvif", "timeout"),
        3: ("ok", "stream", None),
        4: ("defect", "login", "auth"),
        5: ("ok", "stream", None),
        6: ("ok", "stream", None),
        7: ("ok", "stream", None),
        8: ("ok", "stream", None),
        9: ("ok", "stream", None),
        10: ("ok", "stream", None),
        **{i: ("ok", "stream", None) for i in range(16, 21)},
    }
    results = await asyncio.gather(*(_check(fleet, i, session) for i in expected))
    for index, result in zip(expected, results, strict=True):
        got = (result.outcome, result.stage, result.cause)
        assert got == expected[index], (index, fleet.device(index).faults, result)
        assert [s.stage for s in result.stages] == list(ONVIF_STAGES[: ONVIF_STAGES.index(result.stage) + 1])
        assert all(s.ms >= 0 for s in result.stages)
        if result.ok:
            # URIs naming a LAN or 0.0.0.0 address come back rewritten to the device: unchanged for the inventory
            assert result.stream_uri == _stream(fleet.device(index)), (index, result.stream_uri)
            assert "stream_uri_changed" not in result.details
            assert result.clock_offset_s is not None
    assert abs(results[0].clock_offset_s or 0) < 5
    assert abs(results[6].clock_offset_s or 0) > 3000  # hours off: recorded, and the WS-Security login still works
    assert results[4].stages[-1].detail  # why the login failed, for the operator
    assert DEFAULT_PASSWORD not in repr(results)


async def test_a_changed_stream_uri_is_flagged(fleet: SimFleet, session: HttpClient) -> None:
    d = fleet.device(0)
    result = await check_camera(
        _target(d, stream_uri=f"rtsp://{DEFAULT_USERNAME}:{DEFAULT_PASSWORD}@{d.host}:554/old"),
        session=session, budget=LoginBudget(), timeouts=TIMEOUTS,
    )
    assert result.ok and result.details.get("stream_uri_changed") is True
    assert result.stream_uri == _stream(d) and DEFAULT_PASSWORD not in repr(result)


async def test_a_hanging_device_costs_no_more_than_its_stage_timeouts(fleet: SimFleet, session: HttpClient) -> None:
    timeouts = StageTimeouts(tcp=0.5, onvif=0.4, login=0.4, stream=0.4)
    started = time.perf_counter()
    result = await check_camera(_target(fleet.device(2)), session=session, budget=LoginBudget(), timeouts=timeouts)
    elapsed = time.perf_counter() - started
    assert (result.outcome, result.stage, result.cause) == ("off", "onvif", "timeout")
    assert elapsed < 0.5 + 0.4 + 0.6, elapsed  # the tcp and onvif budgets, plus slack for a busy machine
    assert result.stages[-1].ms < 400 + 300


async def test_wrong_credentials_never_lock_an_account_over_repeated_sweeps(fleet: SimFleet) -> None:
    budget = LoginBudget()  # one budget for every round: what the health service keeps
    memory = DeviceMemory()
    target = _target(fleet.device(11), credentials=WRONG)
    for _round in range(4):
        results = [r async for r in check_many([target], budget=budget, memory=memory, timeouts=TIMEOUTS)]
        assert len(results) == 1
        result = results[0]
        assert (result.outcome, result.stage) == ("defect", "login"), result
        assert result.cause in ("auth", "locked_out")
        assert not fleet.is_locked(11)
        assert fleet.failed_logins(11) < 3
    # the right credentials still get in: the account was never locked
    good = [r async for r in check_many([_target(fleet.device(11))], budget=LoginBudget(), timeouts=TIMEOUTS)]
    assert good[0].ok, good[0]


async def test_the_sweep_deadline_reports_deadline_not_off(fleet: SimFleet) -> None:
    timeouts = StageTimeouts(tcp=1.0, onvif=5.0)
    targets = [_target(fleet.device(i)) for i in (12, 13, 0)]
    started = time.perf_counter()
    results = [
        r async for r in check_many(targets, budget=LoginBudget(), concurrency=1, timeouts=timeouts, deadline_s=0.8)
    ]
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, elapsed  # not the 5 s onvif timeout, let alone three of them
    by_id = {r.camera_id: r for r in results}
    assert sorted(by_id) == [0, 12, 13]
    assert all(r.outcome == "deadline" and r.cause == "deadline" for r in results), results
    assert by_id[12].stage == "onvif" and [s.stage for s in by_id[12].stages] == ["tcp"]  # interrupted there
    assert by_id[13].stage == "tcp" and by_id[13].stages == ()  # never started


async def test_cameras_of_one_device_share_a_round(fleet: SimFleet) -> None:
    d = fleet.device(14)
    targets = [_target(d, camera_id=1000 + ch) for ch in range(12)]  # an NVR's channels: one host:port
    before = fleet.server.requests_served
    results = [r async for r in check_many(targets, budget=LoginBudget(), per_host=2, timeouts=TIMEOUTS)]
    requests = fleet.server.requests_served - before
    assert sorted(r.camera_id for r in results) == [1000 + ch for ch in range(12)]
    assert all(r.ok for r in results), results
    # one clock reading, one login (digest: challenge + signed call), services, profiles, one stream URI
    assert requests <= 8, requests


class _CountingRelay:
    """A TCP relay in front of one device that counts requests in flight at once (sent, not yet answered)."""

    def __init__(self, host: str, upstream: tuple[str, int]) -> None:
        self.host = host
        self.upstream = upstream
        self.in_flight = 0
        self.most = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, self.host, 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        busy = [False]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, request: bool) -> None:
            try:
                while data := await src.read(65536):
                    if request and not busy[0]:
                        busy[0] = True
                        self.in_flight += 1
                        self.most = max(self.most, self.in_flight)
                    elif not request and busy[0]:
                        busy[0] = False
                        self.in_flight -= 1
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
        if busy[0]:
            self.in_flight -= 1


async def test_the_per_host_limit_holds(fleet: SimFleet) -> None:
    d = fleet.device(15)  # slow: 0.3-0.4 s per request, so checks would overlap without the limit
    relay = _CountingRelay(_base_host().rsplit(".", 1)[0] + ".250", (d.host, d.port))
    port = await relay.start()
    try:
        # distinct credential sets: six rounds that share nothing but the host
        targets = [
            CheckTarget(i, relay.host, port, credentials=(*GOOD, Credential(f"user{i}", "x")), auth_hint="wsse")
            for i in range(6)
        ]
        results = [
            r async for r in check_many(targets, stages=("tcp", "onvif", "login"), budget=LoginBudget(),
                                        concurrency=6, per_host=2, timeouts=TIMEOUTS)
        ]
    finally:
        await relay.stop()
    assert all(r.ok for r in results), results
    assert 1 <= relay.most <= 2, relay.most


async def test_snapshot_uri_on_another_host_is_refused_and_never_opened(fleet: SimFleet,
                                                                        session: HttpClient) -> None:
    elsewhere = _base_host().rsplit(".", 1)[0] + ".251"
    connections = 0

    async def count(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(count, elsewhere, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        d = fleet.device(0)
        target = _target(d, snapshot_uri=f"http://{elsewhere}:{port}/snap.jpg",
                         stream_uri=f"rtsp://{elsewhere}:{port}/live")
        for stage in ("snapshot", "rtsp"):
            result = await check_camera(target, stages=("tcp", stage), session=session, budget=LoginBudget(),
                                        timeouts=TIMEOUTS)
            assert (result.outcome, result.stage, result.cause) == ("defect", stage, "address_refused"), result
    finally:
        server.close()
        await server.wait_closed()
    assert connections == 0


async def test_rtsp_from_the_real_gstreamer_server_and_the_snapshot(fleet: SimFleet, session: HttpClient) -> None:
    d = fleet.device(0)
    try:
        gst = await asyncio.to_thread(start_rtsp_server, 1, width=640, height=480, device_hosts=[d.host])
    except RtspUnavailable as exc:
        skip_or_fail(exc)  # fails under CI, where the RTSP server must run
    try:
        target = _target(d, stream_uri=f"rtsp://{d.host}:{gst.port}/cam0", expect_size=(352, 288),
                         snapshot_uri=f"http://{d.host}:{d.port}/onvif/snapshot?profile=Profile_1")
        result = await check_camera(target, stages=("tcp", "onvif", "login", "rtsp", "snapshot"), session=session,
                                    budget=LoginBudget(), timeouts=StageTimeouts(rtsp=10.0, snapshot=5.0))
        assert result.ok, result
        assert [s.stage for s in result.stages] == ["tcp", "onvif", "login", "rtsp", "snapshot"]
        assert result.details["codec"] == "H264" and (result.details["width"], result.details["height"]) == (640, 480)
        assert (result.details["snapshot_width"], result.details["snapshot_height"]) == (352, 288)
        wrong_size = await check_camera(replace(target, expect_size=(1920, 1080)), stages=("snapshot",),
                                        session=session, budget=LoginBudget(), timeouts=TIMEOUTS)
        assert (wrong_size.outcome, wrong_size.cause) == ("defect", "snapshot_size"), wrong_size
        lost = await check_camera(replace(target, stream_uri=f"rtsp://{d.host}:{gst.port}/gone"), stages=("rtsp",),
                                  session=session, budget=LoginBudget(), timeouts=StageTimeouts(rtsp=10.0))
        assert (lost.outcome, lost.stage, lost.cause) == ("defect", "rtsp", "rtsp_not_found"), lost
    finally:
        await asyncio.to_thread(gst.stop)


def test_unknown_and_unavailable_stages_are_refused() -> None:
    with pytest.raises(ValueError, match="frame stage: needs a frame sampler"):
        select_stages(["tcp", "frame"])
    with pytest.raises(ValueError, match="unknown stage"):
        select_stages(["ping"])
    assert select_stages(["stream", "tcp"]) == ("tcp", "stream")
