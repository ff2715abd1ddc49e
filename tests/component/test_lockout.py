"""No sweep locks an account, whatever the timing: regression tests of two ways the budget was outrun.

1. A digest login on trial that came back 401 with a new nonce was resent "for free" as if the nonce had merely
   expired. Devices with single-use nonces (and the simulator's time-based nonces at a clock tick) thus counted a
   third failed login per sweep and locked the account. The simulator here issues a new nonce on every
   challenge, so the old behaviour fails every time, not one run in twenty.
2. A login whose reply came too late was refunded although the device had read (and counted) it, so every sweep
   could spend another attempt. The device here counts the login at once and answers after the call timeout.

Real sockets on 127.x only; every wait is bounded by the probes' timeouts.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator

import pytest_asyncio

from probes.errors import LOGIN_BUDGET_EXHAUSTED, Cause
from probes.onvif.auth import Credential, LoginBudget
from probes.onvif.client import interrogate_many
from probes.results import DeviceReport
from probes.sim import SimFleet, build_fleet
from probes.sim.device_auth import DigestAuthority
from probes.sim.devices import DeviceSpec


class SingleUseNonces(DigestAuthority):
    """Every challenge carries a nonce never issued before (what many camera firmwares do)."""

    def __init__(self) -> None:
        super().__init__()
        self._tick = itertools.count(1)

    def _nonce(self, device: DeviceSpec, now: float) -> str:
        return super()._nonce(device, now + next(self._tick))


def _base_host() -> str:
    pid = os.getpid()  # per process: parallel runs never share addresses
    return f"127.{100 + pid % 40}.{(pid // 40) % 250}.1"


@pytest_asyncio.fixture
async def fleet() -> AsyncIterator[SimFleet]:
    devices = build_fleet(
        2,
        fault_mix={},
        faults_by_index={0: {"lockout"}, 1: {"lockout", "slow"}},
        auth_by_index={0: "digest", 1: "wsse"},
        base_host=_base_host(),
        port=0,
    )
    sim = SimFleet(devices=devices, rtsp=False, discovery=False, slow_delay_s=(1.0, 1.0))
    sim.server.digest = SingleUseNonces()
    async with sim:
        yield sim


WRONG = [Credential("admin", "wrong-1"), Credential("admin", "wrong-2")]


async def _sweep(device: DeviceSpec, budget: LoginBudget, *, timeout: float, hint: str | None = None) -> DeviceReport:
    (report,) = await interrogate_many(
        [device.url],
        credentials_for=lambda _t: WRONG,
        budget=budget,
        timeout=timeout,
        deadline=30.0,
        auth_hint_for=lambda _t: hint,  # type: ignore[arg-type,return-value]
    )
    return report


async def test_single_use_nonces_never_turn_one_charged_login_into_two(fleet: SimFleet) -> None:
    device = fleet.devices[0]
    budget = LoginBudget()
    for _sweep_no in range(3):
        report = await _sweep(device, budget, timeout=15.0)  # generous: a verdict, never a timeout
        assert report.fatal is not None and report.fatal.cause is Cause.LOCKED_OUT, report.fatal
        assert report.fatal.detail == LOGIN_BUDGET_EXHAUSTED
        assert not fleet.is_locked(0)
        assert fleet.failed_logins(0) == 2  # the two charged attempts, each sent once; the camera locks at 3
    restored = LoginBudget()  # a service restart with the persisted budget
    restored.restore(budget.snapshot())
    report = await _sweep(device, restored, timeout=15.0)
    assert report.fatal is not None and report.fatal.cause is Cause.LOCKED_OUT
    assert not fleet.is_locked(0) and fleet.failed_logins(0) == 2


async def test_a_login_answered_too_late_stays_charged(fleet: SimFleet) -> None:
    device = fleet.devices[1]  # counts each login at once, answers 1 s later: after our 0.3 s call timeout
    budget = LoginBudget()
    key = f"{device.host}:{device.port}"
    for _sweep_no in range(4):
        report = await _sweep(device, budget, timeout=0.3, hint="wsse")  # wsse: the login is the first call
        assert not report.ok
        assert not fleet.is_locked(1)
        assert fleet.failed_logins(1) <= 2
    assert budget.remaining(key) == 0  # both attempts spent: the device may have counted them
    assert fleet.failed_logins(1) <= 2 and not fleet.is_locked(1)
