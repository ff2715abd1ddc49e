"""A sampled picture and its decoders: an Annex-B keyframe through PyAV's libavcodec, a JPEG through OpenCV.

Decoding runs on a small thread pool (one thread per core): libavcodec and OpenCV release the GIL, so one event
loop keeps both cores busy while it goes on reading other streams.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

import av
import cv2
import numpy as np

__all__ = [
    "DecodeError",
    "Frame",
    "Picture",
    "SampleTimeouts",
    "decode_jpeg",
    "decode_keyframe",
    "decode_picture",
    "in_decoder_thread",
]

_DECODERS: Final[dict[str, Literal["h264", "hevc"]]] = {"H264": "h264", "H265": "hevc"}
_MAX_SIDE: Final = 16_384
# decoder outputs whose first plane is 8-bit luma, one byte per pixel (10-bit and packed formats give no luma)
_PLANAR_8BIT: Final = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p", "nv12", "nv21",
     "gray"}
)
_RANGE_JPEG: Final = 2  # AVCOL_RANGE_JPEG: full range 0-255
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Frame:
    image: np.ndarray  # BGR uint8 (H, W, 3)
    width: int
    height: int
    codec: str  # "H264" | "H265" | "JPEG"
    source: str  # "rtsp" | "snapshot"
    latency_ms: float  # open (connect) to the frame decoded: its keyframe arrived, plus its decoding
    first_byte_ms: float | None  # connect to the first RTP byte (None for a snapshot)
    bytes_read: int
    jpeg: bytes | None = None  # a snapshot's JPEG as the camera sent it (stored as is, not re-encoded)
    # The decoder's luma plane of the same picture, (H, W) uint8 (a view of the decoder's buffer: rows may be
    # padded), for grey measurements without converting `image` back; None for a snapshot or a 10-bit stream.
    luma: np.ndarray | None = None
    luma_full_range: bool = False  # luma spans 0-255 (JPEG range, yuvj*); else 16-235 (limited, MPEG range)


@dataclass(frozen=True, slots=True)
class Picture:
    """A decoded picture: BGR, and the decoder's own luma plane where it has one (see Frame.luma)."""

    image: np.ndarray
    luma: np.ndarray | None = None
    luma_full_range: bool = False


@dataclass(frozen=True, slots=True)
class SampleTimeouts:
    connect: float = 3.0  # TCP connect + OPTIONS/DESCRIBE/SETUP/PLAY replies
    first_frame: float = 5.0  # PLAY reply -> a complete keyframe (a live stream joined mid-GOP waits for one)
    total: float = 10.0  # the whole sample, whatever happens


class DecodeError(Exception):
    """No picture came out of the bytes (the message says why, without any of the bytes)."""


def decode_keyframe(codec: str, data: bytes) -> np.ndarray:
    """The BGR picture of one Annex-B keyframe access unit (parameter sets included)."""
    return decode_picture(codec, data).image


def decode_picture(codec: str, data: bytes) -> Picture:
    """One Annex-B keyframe access unit (parameter sets included) decoded: its BGR picture and its luma plane. A
    fresh single-threaded decoder per call: parallelism comes from decoding many streams at once, and nothing is
    kept between calls."""
    name = _DECODERS.get(codec)
    if name is None:
        raise DecodeError(f"no decoder for {codec[:16]!r}")
    try:
        ctx = av.CodecContext.create(name, "r")
        ctx.thread_count = 1
        frames = [*ctx.decode(av.Packet(data)), *ctx.decode(None)]
    except (av.FFmpegError, ValueError) as exc:
        raise DecodeError(f"{codec} decoder: {type(exc).__name__}") from None
    if not frames:
        raise DecodeError(f"{codec} decoder gave no picture from a {len(data)} byte keyframe")
    frame = frames[0]
    if not (0 < frame.width <= _MAX_SIDE and 0 < frame.height <= _MAX_SIDE):
        raise DecodeError(f"{codec} picture of {frame.width}x{frame.height}")
    # libswscale converts YUV to BGR once (measured: cheaper than cv2.cvtColor of the planes on this machine), on
    # this thread: by default a new conversion context starts slice threads of its own for every picture, which
    # costs more CPU than it saves while every core decodes other streams (the picture is the same either way)
    image: np.ndarray = frame.to_ndarray(format="bgr24", threads=1)
    return Picture(image, *_luma(frame))


def _luma(frame: av.VideoFrame) -> tuple[np.ndarray | None, bool]:
    """The Y plane as a (H, W) view of the frame's buffer (no copy: the view keeps the buffer), and whether it is
    full range. Measuring grey on it saves converting the BGR picture back (the Y of BT.601/709 weights gamma R'G'B'
    as OpenCV's grey does, within rounding)."""
    name = frame.format.name
    if name not in _PLANAR_8BIT:
        return None, False
    plane = frame.planes[0]
    if plane.width != frame.width or plane.height != frame.height or plane.line_size < plane.width:
        return None, False
    rows = np.frombuffer(memoryview(plane), np.uint8, count=plane.line_size * plane.height)
    luma = rows.reshape(plane.height, plane.line_size)[:, : plane.width]
    return luma, name.startswith("yuvj") or int(frame.color_range) == _RANGE_JPEG


def decode_jpeg(_codec: str, data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise DecodeError(f"OpenCV could not decode the {len(data)} byte JPEG")
    return image


_pool: tuple[int, ThreadPoolExecutor] | None = None  # (the process that made it, the pool)
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """The decoder pool of this process (a forked worker makes its own: the parent's threads are not there)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (
                os.getpid(),
                ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="frame-decode"),
            )
        return _pool[1]


async def in_decoder_thread(func: Callable[[str, bytes], _T], codec: str, data: bytes) -> _T:
    """``func(codec, data)`` on the decoder pool."""
    return await asyncio.get_running_loop().run_in_executor(_executor(), func, codec, data)
