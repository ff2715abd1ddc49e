"""Test clips for video-quality diagnosis, made at test time with PyAV (libx264 from its wheel).

Every clip is derived from the real pedestrian scene (tests/data/video/pedestrians_480x360_8s.mp4) by one
picture fault, so that a detector has a real scene to tell the fault from:
normal, dark, overexposed, blurred, colour_cast, frozen (one frame repeated), covered (a grey patch over 40 %
of the scene), noisy (Gaussian snow), striped (horizontal interference bars), no_signal_blue, no_signal_black.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import cv2
import numpy as np

SOURCE = Path(__file__).resolve().parent / "data" / "video" / "pedestrians_480x360_8s.mp4"
FPS = 10

# The fault each clip must be flagged with (None: it must pass).
EXPECTED: dict[str, str | None] = {
    "normal": None,
    "dark": "too_dark",
    "overexposed": "too_bright",
    "blurred": "blur",
    "colour_cast": "colour_cast",
    "frozen": "freeze",
    "covered": "occlusion",
    "no_signal_blue": "signal_loss",
    "no_signal_black": "signal_loss",
}


@cache
def _source() -> tuple[np.ndarray, ...]:
    with av.open(str(SOURCE)) as container:
        frames = tuple(f.to_ndarray(format="bgr24") for f in container.decode(video=0))
    for f in frames:
        f.flags.writeable = False
    return frames


def source_frames(count: int | None = None) -> list[np.ndarray]:
    """Decoded BGR frames of the pedestrian scene (480x360, 10 fps, 80 frames), copies."""
    frames = _source()
    return [f.copy() for f in frames[:count]]


def _gain(frame: np.ndarray, gain: float, offset: float = 0.0) -> np.ndarray:
    return cv2.convertScaleAbs(frame, alpha=gain, beta=offset)


def _cast(frame: np.ndarray) -> np.ndarray:
    # a red tint (a stuck IR-cut filter in daylight, a failed white balance): red up, green and blue down
    out = frame.astype(np.float32) * np.array([0.8, 0.75, 1.0], np.float32) + np.array([0, 0, 70], np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def _cover(frame: np.ndarray) -> np.ndarray:
    out = frame.copy()
    h, w = out.shape[:2]
    out[: int(h * 0.65), : int(w * 0.6)] = 90  # a grey patch (a bag, a sticker, a branch) over ~40 % of the frame
    return out


def _noise(frame: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 30.0, frame.shape[:2]).astype(np.float32)[..., None]
    return np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _stripes(frame: np.ndarray) -> np.ndarray:
    h = frame.shape[0]
    bars = (25.0 * np.sin(2 * np.pi * np.arange(h) / 12.0)).astype(np.float32)[:, None, None]
    return np.clip(frame.astype(np.float32) + bars, 0, 255).astype(np.uint8)


def _uniform(frame: np.ndarray, bgr: tuple[int, int, int]) -> np.ndarray:
    return np.full_like(frame, bgr)


TRANSFORMS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "normal": lambda f, i: f,
    "dark": lambda f, i: _gain(f, 0.2),
    "overexposed": lambda f, i: _gain(f, 1.6, 70),
    "blurred": lambda f, i: cv2.GaussianBlur(f, (0, 0), 3.0 * f.shape[1] / 480),
    "colour_cast": lambda f, i: _cast(f),
    "frozen": lambda f, i: f,  # the first frame repeated: see variant()
    "covered": lambda f, i: _cover(f),
    "noisy": _noise,
    "striped": lambda f, i: _stripes(f),
    "no_signal_blue": lambda f, i: _uniform(f, (255, 0, 0)),
    "no_signal_black": lambda f, i: _uniform(f, (0, 0, 0)),
}


def variant(kind: str, frames: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """The frames of one clip kind (BGR uint8)."""
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown clip kind {kind!r}; known: {', '.join(TRANSFORMS)}")
    frames = source_frames() if frames is None else frames
    if kind == "frozen":
        return [frames[0].copy() for _ in frames]
    return [TRANSFORMS[kind](f, i) for i, f in enumerate(frames)]


def write_clip(path: Path, frames: list[np.ndarray], *, fps: int = FPS, gop: int = FPS) -> Path:
    """Encode BGR frames as H.264 (libx264, yuv420p, a keyframe every `gop` frames) in an MP4."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(gop), "crf": "20"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_clip(kind: str, out_dir: Path, *, seconds: float = 8.0, size: tuple[int, int] | None = None) -> Path:
    """Write `<out_dir>/<kind>.mp4`: `seconds` of the kind's clip (the 8 s scene looped), optionally resized."""
    count = max(1, round(seconds * FPS))
    base = source_frames()
    frames = [base[i % len(base)] for i in range(count)]
    if size is not None:
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return write_clip(out_dir / f"{kind}.mp4", variant(kind, frames))
