"""End to end, the way an operator runs a trial: the real pedestrian clip served by the real GStreamer RTSP server,
sampled by a frame sweep (`vms sample`: our RTSP client, PyAV, the quality checks, the sample store), then a trial
of the HOG people detector over that sample set yields Person records on most sampled frames."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from probes.health.check import StageTimeouts
from probes.sim.rtsp import RtspServer, start_rtsp_server
from vms.catalog.domain import Observation, SourceKind
from vms.frames.store import SampleStore
from vms.frames.trials import run_trial, trial_objects_of
from vms.health.sweep import SweepRequest, run_sweep
from vms.store import repository as repo

FRAMES = 5


def _host() -> str:
    pid = os.getpid()  # per process: parallel runs never share addresses
    return f"127.{90 + pid % 30}.{(pid // 30) % 250}.7"


@pytest.fixture(scope="module")
def pedestrians(test_data: Path) -> Iterator[RtspServer]:
    # 480x360 like the clip, 10 fps: the server re-encodes it with a keyframe every second
    server = start_rtsp_server(1, video=test_data / "video" / "pedestrians_480x360_8s.mp4", device_hosts=[_host()],
                               width=480, height=360, fps=10)
    try:
        yield server
    finally:
        server.stop()


def test_a_trial_over_rtsp_samples_finds_people_on_most_frames(inventory, pedestrians: RtspServer) -> None:
    host = _host()
    inventory.ingest_observations(
        [Observation("ledger:streets", SourceKind.LEDGER, "local:P-1",
                     {"name": "Pedestrian street", "local_id": "P-1", "ip_address": host,
                      "stream_uri": pedestrians.url("/cam0").replace("127.0.0.1", host)})],
        source="ledger:streets", kind=SourceKind.LEDGER, snapshot=False, actor="test",
    )
    with inventory.session(write=False) as s:
        (camera,) = repo.camera_ids_by(s, "ip_address", host)
    summary = run_sweep(inventory, SweepRequest(stages=("frame",), sample_set="street", frames=FRAMES, spacing_s=0.5,
                                                timeouts=StageTimeouts(frame=15.0), concurrency=4))
    assert summary["outcome"] == {"ok": 1}, summary
    samples = SampleStore(inventory).list(camera_id=camera, limit=50)
    assert len(samples) == FRAMES and {(r.width, r.height) for r in samples} == {(480, 360)}
    report = run_trial(inventory, "street", ["hog_people"], actor="test")
    assert report.status == "done", report
    objects = trial_objects_of(inventory, report.id)
    with_person = {o["sample_id"] for o in objects if o["kind"] == "Person"}
    assert len(with_person) > FRAMES // 2, (len(with_person), FRAMES)  # most sampled frames
    assert {o["analyzer"] for o in objects} == {"hog_people"}
