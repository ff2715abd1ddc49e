"""Video-quality diagnosis of real streams: generated clips (tests/videos.py) served by the real GStreamer RTSP
server, which decodes and re-encodes them (x264, 384 kbit/s), sampled by probes.frames.sample_rtsp (RTSP over TCP,
keyframes a second apart) and diagnosed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest

from probes.frames import SampleTimeouts, sample_rtsp
from probes.media.causes import MediaFailure
from probes.policy import AddressPolicy
from probes.sim.rtsp import RtspServer, RtspUnavailable, start_rtsp_server
from tests import videos
from vms.frames.vqd import Thresholds, diagnose, reference_of, thumbnail

KINDS = (*videos.EXPECTED, "noisy", "striped")
SAMPLES = 3  # keyframes a second apart (the server's GOP is 1 s): enough for a freeze check with freeze_samples=3
SIZE = (320, 240)  # the server's output size: small, fast
THRESHOLDS = Thresholds(freeze_samples=SAMPLES)
POLICY = AddressPolicy.build()


async def sample_all(urls: dict[str, str]) -> dict[str, list[np.ndarray]]:
    """`SAMPLES` keyframes a second apart from every stream at once, through the product's sampler."""
    timeouts = SampleTimeouts(connect=3.0, first_frame=5.0, total=12.0)

    async def one(url: str) -> list[np.ndarray]:
        got = await sample_rtsp(url, username=None, password=None, policy=POLICY, device_ip="127.0.0.1",
                                timeouts=timeouts, frames=SAMPLES, spacing_s=1.0)
        assert not isinstance(got, MediaFailure), (url, got)
        return [frame.image for frame in got]

    pictures = await asyncio.wait_for(asyncio.gather(*(one(url) for url in urls.values())), timeouts.total + 5)
    return dict(zip(urls, pictures, strict=True))


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
        return asyncio.run(sample_all({kind: server.url("/v") for kind, server in servers.items()}))
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
