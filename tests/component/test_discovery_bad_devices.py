"""Bad devices must not stretch a run: a discovery over a range with hanging and slow devices ends within about one
device's time budget (the per-device deadline), not after a stage of timeouts followed by another.

A structural property, with a generous margin: the run must end within 3x the budget, while waiting for the
scan's timeouts and then for the slow devices, one stage after the other, takes 4x or more (and waiting for the
hanging devices one after another 8x). Real sockets on 127.x; every wait bounded.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from probes.sim import SimFleet, build_fleet
from tests.fleets import fleet_in_thread
from vms.discovery.demo import covering_cidr
from vms.discovery.service import Discovery, DiscoveryRequest
from vms.inventory.credentials import Cipher, add_credential

COUNT = 24
HANGING = range(0, 24, 3)  # 8 devices accept connections and never answer
SLOW = (1, 7, 13)  # 3 devices answer every request after 0.3-0.5 s: ~10 calls would take 4 s
BUDGET_S = 1.0  # the per-device deadline
CALL_TIMEOUT_S = 5.0  # longer than the budget: the budget, not the call timeout, bounds a device


def _base_host() -> str:
    pid = os.getpid()  # per process: parallel runs never share addresses
    return f"127.{110 + pid % 30}.{(pid // 30) % 250}.1"


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    faults = {i: {"hang"} for i in HANGING} | {i: {"slow"} for i in SLOW}
    devices = build_fleet(COUNT, fault_mix={}, faults_by_index=faults, base_host=_base_host(), port=0, seed=3)
    sim = SimFleet(devices=devices, rtsp=False, discovery=False, slow_delay_s=(0.3, 0.5))
    with fleet_in_thread(sim) as running:
        yield running


def test_hanging_and_slow_devices_end_within_about_one_device_budget(inventory, fleet):
    with inventory.session() as s:
        add_credential(
            s,
            Cipher(inventory.settings.fernet_key()),
            name="estate",
            username=fleet.credentials.default_username,
            password=fleet.credentials.default_password,
            default=True,
            actor="test",
        )
    req = DiscoveryRequest(
        ranges=[covering_cidr(d.host for d in fleet.devices)],
        ports=[fleet.port],
        call_timeout=CALL_TIMEOUT_S,
        device_deadline=BUDGET_S,
        actor="test",
    )
    started = time.perf_counter()
    outcome = asyncio.run(Discovery(inventory).run(req))
    wall = time.perf_counter() - started

    healthy = COUNT - len(HANGING) - len(SLOW)
    slow_hosts = {fleet.devices[i].host for i in SLOW}
    registered = {r.address for r in outcome.reports if r.ok}
    assert registered >= {d.host for d in fleet.devices if not d.faults}, outcome.failures
    assert outcome.registered >= healthy
    # slow devices answered and were cut at their deadline, the hanging ones never became devices to wait for
    assert slow_hosts <= {r.address for r in outcome.reports}
    assert not {fleet.devices[i].host for i in HANGING} & registered
    assert wall < 3 * BUDGET_S, f"the run took {wall:.2f} s for a device budget of {BUDGET_S} s"
