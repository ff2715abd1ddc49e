"""A range scan shared by worker processes finds, interrogates and registers what one process does, under the same
login budget and address policy: each device is probed by exactly one worker, the budget they spent comes back
to the parent (no account locks over repeated sweeps), and devices naming addresses elsewhere are refused there
too. Real sockets on 127.x; every wait bounded."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from probes.sim import SimFleet, build_fleet
from tests.fleets import fleet_in_thread
from vms.discovery.demo import covering_cidr
from vms.discovery.service import WORKER_MIN_ADDRESSES, Discovery, DiscoveryRequest
from vms.inventory.credentials import Cipher, add_credential
from vms.store.models import Credential as CredentialRow
from vms.store.models import DeviceLogin

COUNT = 16
FAULTS = {0: {"lockout"}, 3: {"lockout"}, 5: {"private_addrs"}, 8: {"wrong_password"}, 11: {"clock_skew"}}


def _base_host() -> str:
    pid = os.getpid()  # per process: parallel runs never share addresses
    return f"127.{60 + pid % 40}.{(pid // 40) % 250}.1"


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    devices = build_fleet(COUNT, fault_mix={}, faults_by_index=FAULTS, base_host=_base_host(), port=0, seed=9)
    sim = SimFleet(devices=devices, rtsp=False, discovery=False)
    with fleet_in_thread(sim) as running:
        yield running


def _logins(inventory, fleet: SimFleet) -> None:
    cipher = Cipher(inventory.settings.fernet_key())
    with inventory.session() as s:
        # a wrong login first: every device spends budget on it, lockout devices count it
        add_credential(s, cipher, name="old", username="admin", password="Old-Pass-1", default=True, actor="test")
        add_credential(
            s,
            cipher,
            name="estate",
            username=fleet.credentials.default_username,
            password=fleet.credentials.default_password,
            default=True,
            actor="test",
        )


def _summary(outcome) -> tuple:
    return (
        sorted((r.address, r.ok, r.manufacturer, r.serial, r.auth_method) for r in outcome.reports),
        outcome.registered,
        outcome.by_cause,
        outcome.step_failures,
    )


def test_workers_register_what_one_process_does_under_the_same_budget(inventory, fleet):
    _logins(inventory, fleet)
    cidr = covering_cidr(d.host for d in fleet.devices)
    one = DiscoveryRequest(ranges=[cidr], ports=[fleet.port], call_timeout=5.0, workers=1, actor="test")
    two = DiscoveryRequest(ranges=[cidr], ports=[fleet.port], call_timeout=5.0, workers=2, actor="test")
    assert one.worker_count() == 1 and two.worker_count() == 2
    # auto: small ranges stay in this process; other methods too
    assert DiscoveryRequest(ranges=[cidr]).worker_count() == 1
    assert DiscoveryRequest(ranges=["10.0.0.0/16"], targets=["10.0.0.1"]).worker_count() == 1
    if (os.cpu_count() or 1) > 1:
        assert DiscoveryRequest(ranges=["10.0.0.0/16"]).worker_count() > 1
    assert WORKER_MIN_ADDRESSES > 2**10

    first = asyncio.run(Discovery(inventory).run(two))
    healthy_or_recoverable = COUNT - 1  # wrong_password cannot log in
    assert first.registered == healthy_or_recoverable, first.failures
    assert first.by_cause == {"auth": 1}
    # the address policy held in the workers: the private_addrs device's services were rewritten to its address
    private = next(r for r in first.reports if r.address == fleet.devices[5].host)
    assert all(fleet.devices[5].host in url for url in private.services.values())

    # repeated sweeps with workers never lock an account: the budget they spent was saved by the parent
    for _ in range(3):
        again = asyncio.run(Discovery(inventory).run(two))
        assert again.registered == healthy_or_recoverable
    for index in (0, 3):
        assert not fleet.is_locked(index), f"device {index} locked"
    with inventory.session(write=False) as s:
        saved = {row.address for row in s.scalars(select(DeviceLogin))}
    assert {f"{d.host}:{fleet.port}" for d in fleet.devices} <= saved

    # and one process sees the same as two
    single = asyncio.run(Discovery(inventory).run(one))
    assert _summary(single) == _summary(again)


def test_bad_worker_counts_are_refused():
    with pytest.raises(ValueError, match="bad workers"):
        DiscoveryRequest(ranges=["10.0.0.0/24"], workers=-1).validate()
    with pytest.raises(ValueError, match="bad workers"):
        DiscoveryRequest(ranges=["10.0.0.0/24"], workers=1000).validate()


def test_worker_logins_match_the_resolver(inventory):
    """The logins a worker process takes are the ones the credential resolver gives, in the same order."""
    from vms.discovery.sweep import ShardLogins
    from vms.inventory.credentials import CredentialResolver

    cipher = Cipher(inventory.settings.fernet_key())
    with inventory.session() as s:
        add_credential(s, cipher, name="any", username="u0", password="p0", default=True, actor="test")
        add_credential(s, cipher, name="wide", username="u1", password="p1", scope="10.0.0.0/8", actor="test")
        add_credential(s, cipher, name="narrow", username="u2", password="p2", scope="10.1.2.0/24", actor="test")
        add_credential(s, cipher, name="v6", username="u3", password="p3", scope="fd00::/8", actor="test")
    with inventory.session(write=False) as s:
        resolver = CredentialResolver.load(s, cipher)
        rows = s.scalars(select(CredentialRow))
        logins = ShardLogins.build([(r.scope, r.is_default, r.username, cipher.decrypt(r.secret)) for r in rows])
    for target in ("10.1.2.3", "10.9.9.9:8080", "http://10.1.2.200/onvif/device_service", "192.0.2.1", "[fd00::1]:80"):
        assert [(c.username, c.password) for c in logins(target)] == [
            (c.username, c.password) for c in resolver.credentials(target)
        ], target
