"""Frames from cameras: RTSP (our own PLAY client over TCP interleaved, the first keyframe decoded by PyAV) and
snapshot URIs (JPEG decoded by OpenCV), bounded in time, bytes and concurrency. Device I/O only (no vms imports).
"""

from probes.frames.frame import (
    DecodeError,
    Frame,
    Picture,
    SampleTimeouts,
    decode_jpeg,
    decode_keyframe,
    decode_picture,
)
from probes.frames.rtsp import sample_rtsp
from probes.frames.sampler import Sampler
from probes.frames.snapshot import sample_snapshot

__all__ = [
    "DecodeError",
    "Frame",
    "Picture",
    "SampleTimeouts",
    "Sampler",
    "decode_jpeg",
    "decode_keyframe",
    "decode_picture",
    "sample_rtsp",
    "sample_snapshot",
]
