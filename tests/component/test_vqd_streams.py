"""Video-quality diagnosis of real streams: generated clips (tests/videos.py) served by the real GStreamer RTSP
server, which decodes and re-encodes them (x264, 384 kbit/s), sampled over RTSP/TCP and diagnosed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from probes.sim.rtsp import RtspServer, RtspUnavailable, start_rtsp_server
from tests import videos
from vms.frames.vqd import Thresholds, diagnose, reference_of, thumbnail

KINDS = (*videos.EXPECTED, "noisy", "striped")
SAMPLES = 3  # one picture a second: enough for a freeze check with freeze_samples=3
SIZE = (320, 240)  # the server's output size: small, fast
THRESHOLDS = Thresholds(freeze_samples=SAMPLES)


def sample(url: str, *, count: int = SAMPLES, every: int = 10, budget_s: float = 10.0) -> list[np.ndarray]:
    """`count` pictures `every` frames apart (1 s at 10 fps), bounded in time. PyAV/FFmpeg's RTSP client: a
    test-side reader, not the product's sampler."""
    pictures: list[np.ndarray] = []
    deadline = time.monotonic() + budget_s
    options = {"rtsp_transport": "tcp", "probesize": "32768", "analyzeduration": "0"}
    with av.open(url, options=options, timeout=5.0) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n % every == 0:
                pictures.append(frame.to_ndarray(format="bgr24"))
            if len(pictures) >= count or time.monotonic() > deadline:
                break
    return pictures


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[np.ndarray]]:
    out: Path = tmp_path_factory.mktemp("vqd-clips")
    clips = {kind: videos.make_clip(kind, out, seconds=6.0, size=SIZE) for kind in KINDS}
    servers: dict[str, RtspServer] = {}
    try:
        for kind, clip in clips.items():
            servers[kind] = start_rtsp_server(["/v"], video=clip, width=SIZE[0], height=SIZE[1], fps=videos.FPS)
    except RtspUnavailable as exc:
        for server in servers.values():
            server.stop()
        pytest.skip(f"GStreamer RTSP server unavailable: {exc}")
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            futures = {kind: pool.submit(sample, server.url("/v")) for kind, server in servers.items()}
            return {kind: future.result(timeout=20) for kind, future in futures.items()}
    finally:
        for server in servers.values():
            server.stop()


def judge(sampled: dict[str, list[np.ndarray]], kind: str, thresholds: Thresholds = THRESHOLDS):
    pictures = sampled[kind]
    assert len(pictures) == SAMPLES, f"{kind}: {len(pictures)} pictures"
    history = [thumbnail(p) for p in reversed(pictures[:-1])]  # newest first
    reference = reference_of(sampled["normal"][0])  # the camera's reference: its good picture
    return diagnose(pictures[-1], history=history, reference=reference, thresholds=thresholds)


@pytest.mark.parametrize("kind", list(videos.EXPECTED))
def test_each_stream_is_flagged_with_its_fault_and_the_normal_one_passes(sampled, kind):
    d = judge(sampled, kind)
    expected = videos.EXPECTED[kind]
    assert d.faults == ((expected,) if expected else ()), (kind, d.reasons, d.metrics)
    assert sampled[kind][0].shape == (SIZE[1], SIZE[0], 3)


def test_the_normal_stream_keeps_passing_on_every_sample(sampled):
    for i, picture in enumerate(sampled["normal"]):
        assert diagnose(picture, reference=reference_of(sampled["normal"][0])).faults == (), i


def test_noise_and_stripes_survive_the_encoder_well_enough_to_flag_when_switched_on(sampled):
    on = Thresholds(freeze_samples=SAMPLES, noise_sigma=8.0, stripes_ratio=15.0)
    assert judge(sampled, "normal", on).faults == ()
    assert "noise" in judge(sampled, "noisy", on).faults
    assert "stripes" in judge(sampled, "striped", on).faults
    # off by default: measured, not judged
    assert judge(sampled, "noisy").faults == () and judge(sampled, "noisy").metrics["noise"] > 8


def test_the_real_scene_passes_at_1080p_and_its_blurred_copy_fails_at_every_size():
    """Blur is judged at a fixed analysis width: the pedestrian scene (480x360) upscaled to 1080p still passes."""
    picture = videos.source_frames(1)[0]
    blurred = videos.variant("blurred", [picture])[0]
    for size in ((480, 360), (1280, 720), (1920, 1080)):
        big = cv2.resize(picture, size, interpolation=cv2.INTER_CUBIC)
        assert diagnose(big).faults == (), (size, diagnose(big).metrics)
        assert diagnose(cv2.resize(blurred, size, interpolation=cv2.INTER_CUBIC)).faults == ("blur",), size
