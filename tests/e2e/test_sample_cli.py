"""`vms sample` as an operator runs it (python -m vms in a subprocess, on SQLite and PostgreSQL): a frame-only sweep
of two simulated ONVIF cameras whose streams come from the real GStreamer RTSP server. It prints the summary by
cause with the sample set, `vms health CAMERA` shows the frame stage and its findings, and bad input is one line
and exit 2 with nothing recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from probes.sim import SimFleet, build_fleet
from tests.e2e.cli import vms_env, vms_runner
from tests.fleets import pid_base_host, rtsp_fleet_in_thread
from vms.discovery.service import Discovery, DiscoveryRequest
from vms.frames.store import SampleSets, SampleStore
from vms.health.service import Health
from vms.inventory.credentials import Cipher, add_credential
from vms.inventory.service import Inventory
from vms.store import repository as repo
from vms.store.models import cameras


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimFleet]:
    devices = build_fleet(2, fault_mix={}, base_host=pid_base_host(200), port=0, rtsp_mounts=1)
    sim = SimFleet(devices=devices, discovery=False)
    with rtsp_fleet_in_thread(sim) as running:
        yield running


def _register(inv: Inventory, fleet: SimFleet) -> tuple[int, int]:
    """The fleet's cameras registered by real discovery (in this process: the command under test is `vms sample`);
    the second camera's stream URI then names another address, which the address policy refuses."""
    with inv.session() as s:
        add_credential(s, Cipher(inv.settings.fernet_key()), name="estate", username=fleet.credentials.default_username,
                       password=fleet.credentials.default_password, default=True, actor="test")
    outcome = asyncio.run(Discovery(inv).run(DiscoveryRequest(targets=[d.url for d in fleet.devices])))
    assert outcome.registered == 2, outcome.failures
    with inv.session() as s:
        good, moved = (repo.camera_ids_by(s, "ip_address", d.host)[0] for d in fleet.devices)
        s.execute(cameras.update().where(cameras.c.id == moved).values(stream_uri="rtsp://127.0.0.1:1/cam0"))
    return good, moved


def test_sample_prints_its_summary_and_health_shows_the_frame_stage(inventory, settings, tmp_path, fleet):
    vms = vms_runner(vms_env(settings, tmp_path, COLUMNS="250"), no_traceback=True)
    if settings.url.startswith("sqlite"):  # refused before any database is touched: once is enough
        done = vms("sample", "--region", "3713", "--group", "tag:x", "--frames", "0", code=2)
        assert done.stderr.strip() == "error: give at most one of --region, --group", done.stderr
    good, moved = _register(inventory, fleet)

    text = vms("sample", "--set", "north-gate", "--frames", "2").stdout
    assert "(all; set north-gate): 2 cameras, 1 with a good picture, 1 failed, 0 deadline" in text, text
    assert "by cause" in text and "address_refused" in text, text

    shown = vms("health", str(good)).stdout
    assert f"camera {good}: ON since" in shown and "frame" in shown and "faults []" in shown, shown
    assert "codec H264" in shown and "width 320" in shown and "sample_id" in shown, shown
    latest = Health(inventory).latest(moved)
    samples = SampleStore(inventory).latest([good, moved])
    sample_set = SampleSets(inventory).get("north-gate")
    assert latest is not None and (latest["status"], latest["stage"], latest["cause"]) == (
        "DEFECT", "frame", "address_refused")
    assert list(samples) == [good] and samples[good].set_id == sample_set.id  # type: ignore[union-attr]
    assert sample_set is not None and sample_set.settings["frames"] == 2
