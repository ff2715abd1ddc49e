"""The fast path of the ONVIF stages (probes.health.fastpath) gives the normal path's results.

Two identical simulated fleets (one per path, so a device's failed-login counter or lock is its path's own) are
checked in the steady state (each device's media service and WS-UsernameToken login known, as after earlier
sweeps), once through the fast path and once through the normal path, and every CheckResult is compared field by
field (latencies apart), hostile devices included: hang, slow, offline, malformed and non-UTF-8 replies, a wrong
password, a lockout device with wrong credentials, clock skew, LAN and 0.0.0.0 addresses, a media service address
the policy refuses, the sweep deadline. A wrong password costs the same login budget (and the same failed logins
counted by the device) on both paths.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from probes.health import fastpath
from probes.health.check import ONVIF_STAGES, CheckTarget, DeviceMemory, StageTimeouts, check_camera, check_many
from probes.health.results import CheckResult
from probes.onvif.auth import Credential, LoginBudget
from probes.onvif.client import make_session
from probes.sim import SimFleet, build_fleet
from probes.sim.devices import DEFAULT_PASSWORD, DEFAULT_USERNAME, MEDIA2_SERVICE_PATH, MEDIA_SERVICE_PATH
from tests.fleets import fleet_in_thread

GOOD = (Credential(DEFAULT_USERNAME, DEFAULT_PASSWORD),)
WRONG = (Credential(DEFAULT_USERNAME, "wrong-1"), Credential(DEFAULT_USERNAME, "wrong-2"))
TIMEOUTS = StageTimeouts(tcp=0.8, onvif=0.6, login=0.6, stream=0.8)

LAYOUT: dict[int, set[str]] = {
    0: set(),
    1: set(),  # Media2
    2: {"hang"},
    3: {"slow"},
    4: {"offline"},
    5: {"wrong_password"},
    6: {"lockout"},  # wrong credentials
    7: {"clock_skew"},
    8: {"malformed_xml"},
    9: {"invalid_utf8"},
    10: {"private_addrs"},
    11: {"zero_addrs"},
    12: {"soap_content_type_mismatch"},
    13: {"no_get_services"},
    14: set(),  # its media service known at another host: refused by the address policy
    15: {"hang"},  # the sweep deadline's
    16: {"auth_http_400"},  # a digest device remembered as WS-UsernameToken (its login changed)
    17: set(),  # remembered with a Media2 service it does not have (firmware downgraded): Media after all
}
AUTH = {i: "wsse" for i in LAYOUT} | {16: "digest"}


def _fleet(pid_offset: int) -> Iterator[SimFleet]:
    pid = os.getpid()
    base = f"127.{150 + pid % 40 + pid_offset * 50}.{(pid // 40) % 250}.1"
    devices = build_fleet(
        len(LAYOUT), fault_mix={}, faults_by_index=LAYOUT, auth_by_index=AUTH,  # type: ignore[arg-type]
        media2_by_index={i: i == 1 for i in LAYOUT}, base_host=base, port=0,
    )
    sim = SimFleet(devices=devices, rtsp=False, discovery=False, slow_delay_s=(0.2, 0.25))
    with fleet_in_thread(sim) as running:
        yield running


@pytest.fixture(scope="module")
def fleets() -> Iterator[tuple[SimFleet, SimFleet]]:
    fast_fleet = _fleet(0)
    normal_fleet = _fleet(1)
    a = next(fast_fleet)
    try:
        b = next(normal_fleet)
        try:
            yield a, b
        finally:
            next(normal_fleet, None)
    finally:
        next(fast_fleet, None)


def _targets(fleet: SimFleet) -> list[CheckTarget]:
    out = []
    for i in LAYOUT:
        d = fleet.device(i)
        creds = WRONG if i == 6 else GOOD
        out.append(CheckTarget(i, d.host, d.port, credentials=creds, stream_uri=f"rtsp://{d.host}:554/cam{i}"))
    return out


def _steady_memory(fleet: SimFleet) -> DeviceMemory:
    """What earlier sweeps left: every device's media service(s) and its WS-UsernameToken login."""
    memory = DeviceMemory()
    for i in LAYOUT:
        d = fleet.device(i)
        key = f"{d.host}:{d.port}"
        media = f"http://{key}{MEDIA_SERVICE_PATH}"
        media2 = f"http://{key}{MEDIA2_SERVICE_PATH}" if i in (1, 17) else None
        if i == 14:
            media = f"http://192.0.2.7:{d.port}{MEDIA_SERVICE_PATH}"  # elsewhere: never called
        memory.remember(key, media, media2)
        memory.remember_auth(key, "wsse")
    return memory


def _comparable(result: CheckResult, fleet: SimFleet) -> str:
    """The result's fields but its latencies, the fleet's own addresses written HOST."""
    d = fleet.device(result.camera_id)
    return repr({
        "camera_id": result.camera_id,
        "outcome": result.outcome,
        "stage": result.stage,
        "cause": result.cause,
        "stages": [(s.stage, s.ok, s.cause, s.detail) for s in result.stages],
        "stream_uri": result.stream_uri,
        "details": result.details,
        "clock_offset_known": result.clock_offset_s is not None,
    }).replace(d.host, "HOST")


async def _sweep(fleet: SimFleet, *, fast: bool, budget: LoginBudget, memory: DeviceMemory,
                 targets: list[CheckTarget] | None = None, **kw: Any) -> dict[int, CheckResult]:
    async with make_session(limit_per_host=4) as http:
        results = [
            r async for r in check_many(
                targets or _targets(fleet), stages=ONVIF_STAGES, budget=budget, session=http, memory=memory,
                timeouts=TIMEOUTS, fast_path=fast, **kw,
            )
        ]
    return {r.camera_id: r for r in results}


def _run(fleets: tuple[SimFleet, SimFleet], **kw: Any) -> tuple[dict[int, CheckResult], dict[int, CheckResult],
                                                                 tuple[LoginBudget, LoginBudget]]:
    fast_fleet, normal_fleet = fleets
    budgets = LoginBudget(), LoginBudget()

    async def both() -> tuple[dict[int, CheckResult], dict[int, CheckResult]]:
        return await asyncio.gather(
            _sweep(fast_fleet, fast=True, budget=budgets[0], memory=_steady_memory(fast_fleet), **kw),
            _sweep(normal_fleet, fast=False, budget=budgets[1], memory=_steady_memory(normal_fleet), **kw),
        )

    before = dict(fastpath.STATS)
    fast, normal = asyncio.run(both())
    used = {k: fastpath.STATS[k] - before.get(k, 0) for k in fastpath.STATS}
    assert used.get("ok", 0) >= 8 and used.get("handed_over", 0) >= 6, used  # both ways were taken
    return fast, normal, budgets


def test_fast_and_normal_paths_give_the_same_results(fleets: tuple[SimFleet, SimFleet]) -> None:
    fast, normal, (fast_budget, normal_budget) = _run(fleets)
    assert sorted(fast) == sorted(normal) == sorted(LAYOUT)
    for i in LAYOUT:
        assert _comparable(fast[i], fleets[0]) == _comparable(normal[i], fleets[1]), (i, LAYOUT[i], fast[i], normal[i])
        if fast[i].clock_offset_s is not None:
            assert abs((fast[i].clock_offset_s or 0) - (normal[i].clock_offset_s or 0)) < 2.0
    outcomes = {i: (fast[i].outcome, fast[i].stage, fast[i].cause) for i in LAYOUT}
    assert outcomes[0] == outcomes[1] == outcomes[7] == outcomes[10] == ("ok", "stream", None)
    assert outcomes[2] == ("off", "onvif", "timeout")
    assert outcomes[4] == ("off", "tcp", "refused")
    assert outcomes[5] == ("defect", "login", "auth")
    assert outcomes[14] == ("defect", "stream", "address_refused")
    assert outcomes[16] == outcomes[17] == ("ok", "stream", None)
    assert abs(fast[7].clock_offset_s or 0) > 3000  # signed with the device's clock: the login worked
    # a wrong password costs the same on both paths: the budget's charges and the device's own count
    fast_fleet, normal_fleet = fleets
    for i in (5, 6):
        fk, nk = (f"{f.device(i).host}:{f.device(i).port}" for f in (fast_fleet, normal_fleet))
        assert fast_budget.remaining(fk) == normal_budget.remaining(nk) < fast_budget.max_failures
        assert fast_fleet.failed_logins(i) == normal_fleet.failed_logins(i) > 0
        assert not fast_fleet.is_locked(i)
    assert DEFAULT_PASSWORD not in repr(fast)


def test_the_sweep_deadline_is_the_same_on_both_paths(fleets: tuple[SimFleet, SimFleet]) -> None:
    fast_fleet, normal_fleet = fleets

    async def both() -> tuple[dict[int, CheckResult], dict[int, CheckResult]]:
        timeouts = StageTimeouts(tcp=1.0, onvif=5.0)
        out = []
        for fleet, fast in ((fast_fleet, True), (normal_fleet, False)):
            targets = [t for t in _targets(fleet) if t.camera_id in (15, 0)]
            async with make_session() as http:
                out.append({r.camera_id: r async for r in check_many(
                    targets, budget=LoginBudget(), memory=_steady_memory(fleet), session=http, concurrency=2,
                    timeouts=timeouts, deadline_s=0.6, fast_path=fast,
                )})
        return out[0], out[1]

    fast, normal = asyncio.run(both())
    for i in (0, 15):
        assert _comparable(fast[i], fast_fleet) == _comparable(normal[i], normal_fleet), (fast[i], normal[i])
    assert (fast[15].outcome, fast[15].stage, [s.stage for s in fast[15].stages]) == ("deadline", "onvif", ["tcp"])
    assert fast[0].ok


def test_check_camera_takes_the_fast_path_and_the_switch_turns_it_off(fleets: tuple[SimFleet, SimFleet]) -> None:
    fleet = fleets[0]
    target = _targets(fleet)[0]

    async def one(fast: bool) -> CheckResult:
        async with make_session() as http:
            return await check_camera(target, session=http, budget=LoginBudget(), memory=_steady_memory(fleet),
                                      timeouts=TIMEOUTS, fast_path=fast)

    before = fastpath.STATS["ok"]
    fast = asyncio.run(one(True))
    assert fastpath.STATS["ok"] == before + 1
    normal = asyncio.run(one(False))
    assert fastpath.STATS["ok"] == before + 1  # off: the normal path only
    assert _comparable(fast, fleet) == _comparable(normal, fleet) and fast.ok and fast.details["auth_method"] == "wsse"
    # an unknown device (nothing remembered) is the normal path's: a first sweep learns what the fast path needs
    memory = DeviceMemory()

    async def learn() -> CheckResult:
        async with make_session() as http:
            return await check_camera(replace(target), session=http, budget=LoginBudget(), memory=memory,
                                      timeouts=TIMEOUTS)

    assert asyncio.run(learn()).ok and fastpath.STATS["ok"] == before + 1
    assert memory.services(f"{fleet.device(0).host}:{fleet.device(0).port}") is not None
    assert asyncio.run(learn()).ok and fastpath.STATS["ok"] == before + 2


class _RecordingRelay:
    """A TCP relay in front of one device that keeps every byte the client sent, per connection."""

    def __init__(self, host: str, upstream: tuple[str, int]) -> None:
        self.host = host
        self.upstream = upstream
        self.sent: list[bytearray] = []
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
        seen = bytearray()
        self.sent.append(seen)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bytearray | None) -> None:
            try:
                while data := await src.read(65536):
                    if keep is not None:
                        keep += data
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, seen), pump(up_reader, writer, None))


def _requests(raw: bytes) -> list[tuple[str, bool, bool]]:
    """(SOAP action, WS-UsernameToken signed, Host header present) of each request in a connection's bytes."""
    out = []
    for part in raw.split(b"POST ")[1:]:
        head = part.split(b"\r\n\r\n", 1)[0]
        action = head.split(b'action="', 1)[1].split(b'"', 1)[0].decode()
        out.append((action.rsplit("/", 1)[1], b"UsernameToken" in part, b"\r\nHost: " in head))
    return out


def test_the_fast_path_sends_what_the_normal_path_sends(fleets: tuple[SimFleet, SimFleet]) -> None:
    """The same requests on the wire, one connection: GetSystemDateAndTime anonymous, the other three signed."""
    fleet = fleets[0]
    d = fleet.device(0)

    async def through_relay(fast: bool) -> list[list[tuple[str, bool, bool]]]:
        relay = _RecordingRelay(d.host.rsplit(".", 1)[0] + ".240", (d.host, d.port))
        port = await relay.start()
        try:
            target = CheckTarget(0, relay.host, port, credentials=GOOD, stream_uri=f"rtsp://{relay.host}:554/cam0")
            memory = DeviceMemory()
            memory.remember(target.key, f"http://{target.key}{MEDIA_SERVICE_PATH}", None)
            memory.remember_auth(target.key, "wsse")
            async with make_session() as http:
                result = await check_camera(target, session=http, budget=LoginBudget(), memory=memory,
                                            timeouts=TIMEOUTS, fast_path=fast)
            assert result.ok, result
            await asyncio.sleep(0.05)  # the relay's last bytes
        finally:
            await relay.stop()
        return [_requests(bytes(raw)) for raw in relay.sent if raw]

    before = fastpath.STATS["ok"]
    fast = asyncio.run(through_relay(True))
    assert fastpath.STATS["ok"] == before + 1
    normal = asyncio.run(through_relay(False))
    expected = [[("GetSystemDateAndTime", False, True), ("GetDeviceInformation", True, True),
                 ("GetProfiles", True, True), ("GetStreamUri", True, True)]]
    assert fast == normal == expected
