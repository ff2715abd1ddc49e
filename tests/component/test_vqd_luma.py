"""The diagnosis' grey from the decoder's luma plane (probes.frames.Frame.luma) instead of a conversion of the BGR
picture: real H.264 keyframes of the pedestrian scene (tests/data/video), limited range (yuv420p) and full range
(yuvj420p), at 1080p and at a width whose rows the decoder pads; every generated fault clip (tests/videos.py) is
still flagged with its fault and the normal one passes; the sampler hands the plane over through RTSP (the replay
server), and the frame stage passes it on."""

from __future__ import annotations

import asyncio
import datetime as dt
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from probes.frames import Frame, decode_keyframe, decode_picture, sample_rtsp
from probes.media.causes import MediaFailure
from probes.policy import AddressPolicy
from probes.sim.rtsp_replay import Clip, ClipSpec, ReplayServer
from tests import videos
from vms.frames import vqd
from vms.frames.vqd import Thresholds, diagnose

VIDEO = Path(__file__).resolve().parents[1] / "data" / "video" / "pedestrians_480x360_8s.mp4"


def encode_keyframes(frames: list[np.ndarray], pix_fmt: str = "yuv420p") -> list[bytes]:
    """Each BGR frame as one Annex-B H.264 keyframe (libx264, parameter sets repeated)."""
    h, w = frames[0].shape[:2]
    cc = av.CodecContext.create("libx264", "w")
    cc.width, cc.height, cc.pix_fmt = w, h, pix_fmt
    cc.time_base = Fraction(1, 10)
    cc.options = {"preset": "ultrafast", "crf": "20", "g": "1", "bf": "0", "x264-params": "repeat-headers=1"}
    out: list[bytes] = []
    for i, img in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(img, format="bgr24")
        if pix_fmt != "yuv420p":
            frame = frame.reformat(format=pix_fmt)
        frame.pts = i
        out += [bytes(p) for p in cc.encode(frame)]
    out += [bytes(p) for p in cc.encode(None)]
    assert len(out) == len(frames)
    return out


def scene(size: tuple[int, int] | None = None, count: int = 3) -> list[np.ndarray]:
    frames = videos.source_frames()[::20][:count]
    return [cv2.resize(f, size, interpolation=cv2.INTER_CUBIC) for f in frames] if size else frames


def assert_same_measure(image: np.ndarray, luma: np.ndarray, full: bool) -> None:
    """The grey from the plane is OpenCV's grey of the BGR picture within a grey level or two, and so are the
    figures the thresholds read."""
    from_bgr = vqd._grey(image).astype(np.float32)
    from_luma = vqd._grey(image, luma, full).astype(np.float32)
    assert from_luma.shape == from_bgr.shape
    diff = np.abs(from_luma - from_bgr)
    assert float(diff.mean()) < 2.5, float(diff.mean())
    assert float(np.percentile(diff, 99)) <= 6, float(np.percentile(diff, 99))
    a, b = diagnose(image).metrics, diagnose(image, luma=luma, luma_full_range=full).metrics
    assert abs(a["mean"] - b["mean"]) < 2.5 and abs(a["std"] - b["std"]) < 1.5, (a, b)
    assert abs(a["blur_var"] - b["blur_var"]) < 0.1 * a["blur_var"] + 5, (a, b)
    assert a["cast"] == b["cast"]  # colour is still measured on the BGR picture


@pytest.mark.parametrize(("pix_fmt", "full"), [("yuv420p", False), ("yuvj420p", True)])
def test_the_luma_grey_of_real_1080p_keyframes_is_opencvs_grey(pix_fmt: str, full: bool) -> None:
    for data in encode_keyframes(scene((1920, 1080), 2), pix_fmt):
        picture = decode_picture("H264", data)
        assert picture.image.shape == (1080, 1920, 3) and picture.luma is not None
        assert picture.luma.shape == (1080, 1920) and picture.luma.dtype == np.uint8
        assert picture.luma_full_range is full
        assert np.array_equal(picture.image, decode_keyframe("H264", data))  # the BGR picture as before
        assert_same_measure(picture.image, picture.luma, full)


def test_limited_range_is_stretched_and_full_range_is_not() -> None:
    data = encode_keyframes(scene((320, 240), 1))[0]
    picture = decode_picture("H264", data)
    assert picture.luma is not None and not picture.luma_full_range
    raw = diagnose(picture.image, luma=picture.luma, luma_full_range=True).metrics  # 16-235 read as 0-255
    right = diagnose(picture.image, luma=picture.luma).metrics
    bgr = diagnose(picture.image).metrics
    assert abs(right["std"] - bgr["std"]) < 1.5 < abs(raw["std"] - bgr["std"])
    assert vqd._LIMITED_TO_FULL[16] == 0 and vqd._LIMITED_TO_FULL[235] == 255 and vqd._LIMITED_TO_FULL[126] == 128


def test_a_plane_with_padded_rows() -> None:
    # 470 px wide: the decoder's rows are 512 bytes, the plane a strided view of its buffer
    for data in encode_keyframes(scene((470, 266), 2)):
        picture = decode_picture("H264", data)
        assert picture.luma is not None and picture.luma.shape == (266, 470)
        assert picture.luma.strides[0] > 470 and not picture.luma.flags.c_contiguous
        assert_same_measure(picture.image, picture.luma, picture.luma_full_range)
    # and a padded copy of a full-range plane (a wide frame: the downscale reads the strided view)
    image = scene((1280, 720), 1)[0]
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    padded = np.zeros((720, 1344), np.uint8)
    padded[:, :1280] = grey
    assert diagnose(image, luma=padded[:, :1280], luma_full_range=True).metrics == diagnose(image).metrics


def test_a_plane_that_is_not_the_pictures_is_refused() -> None:
    image = scene(count=1)[0]
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    with pytest.raises(ValueError, match="shape"):
        diagnose(image, luma=grey[:-2])
    with pytest.raises(ValueError, match="luma plane"):
        diagnose(image, luma=image)
    with pytest.raises(ValueError, match="adjacent"):
        diagnose(image, luma=np.zeros((grey.shape[0], grey.shape[1] * 2), np.uint8)[:, ::2])


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuvj420p"])
def test_every_generated_fault_is_still_flagged_and_the_normal_clip_passes(pix_fmt: str) -> None:
    thresholds = Thresholds(freeze_samples=3)
    base = [cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA) for f in videos.source_frames()[::15][:3]]

    def pictures(kind: str) -> list[Frame]:
        out = []
        for data in encode_keyframes(videos.variant(kind, base), pix_fmt):
            p = decode_picture("H264", data)
            out.append(Frame(p.image, 320, 240, "H264", "rtsp", 0.0, 0.0, len(data), None, p.luma,
                             p.luma_full_range))
        return out

    def judge(frames: list[Frame], reference: np.ndarray | None) -> vqd.Diagnosis:
        history: list[np.ndarray] = []  # as the frame stage keeps it: the diagnoses' thumbnails, newest first
        for frame in frames:
            d = diagnose(frame.image, history=history, reference=reference, thresholds=thresholds,
                         luma=frame.luma, luma_full_range=frame.luma_full_range)
            assert d.thumb is not None
            history.insert(0, d.thumb)
        return d

    normal = pictures("normal")
    reference = diagnose(normal[0].image, luma=normal[0].luma, luma_full_range=normal[0].luma_full_range).ref
    assert reference is not None
    for kind, expected in videos.EXPECTED.items():
        frames = normal if kind == "normal" else pictures(kind)
        assert all(f.luma is not None for f in frames)
        d = judge(frames, reference)
        assert d.faults == ((expected,) if expected else ()), (kind, d.reasons, d.metrics)


async def test_the_sampler_hands_over_the_luma_plane_of_its_keyframe() -> None:
    clip = Clip.load(ClipSpec(width=640, height=360, seconds=1.0, gop_s=0.5, source=str(VIDEO)))
    async with ReplayServer(clip, hosts=("127.72.9.1",)) as srv:
        got = await sample_rtsp(srv.url(), username=None, password=None, policy=AddressPolicy.build(),
                                device_ip="127.72.9.1")
    assert not isinstance(got, MediaFailure), got
    frame = got[0]
    assert frame.luma is not None and frame.luma.shape == (360, 640) and frame.luma_full_range is False
    assert_same_measure(frame.image, frame.luma, frame.luma_full_range)
    assert diagnose(frame.image, luma=frame.luma).faults == diagnose(frame.image).faults == ()


def test_the_frame_stage_diagnoses_from_the_frames_luma(tmp_path: Path) -> None:
    from vms.frames.stage import FrameStageRunner
    from vms.inventory.service import Inventory
    from vms.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
                        secret_key="0" * 43 + "=", _env_file=None)
    runner = FrameStageRunner(Inventory(settings))
    image = scene(count=1)[0]
    h, w = image.shape[:2]
    black = np.full((h, w), 16, np.uint8)  # a limited-range black plane: proves which grey the stage measured
    frame = Frame(image, w, h, "H264", "rtsp", 1.0, 0.5, 1000, None, black, False)
    judged = runner._judge(7, [frame])
    assert judged[0].diagnosis.faults == ("signal_loss",)
    assert judged[0].row.taken_at <= dt.datetime.now(dt.UTC)
    plain = runner._judge(8, [Frame(image, w, h, "H264", "rtsp", 1.0, 0.5, 1000)])
    assert plain[0].diagnosis.faults == ()
    asyncio.run(runner.aclose())
