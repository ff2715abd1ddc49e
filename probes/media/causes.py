"""Cause codes of the rtsp and snapshot stages and of the frame sampler (stable strings: stored, shown, counted)
and the failure result."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["MediaCause", "MediaFailure"]


class MediaCause(enum.StrEnum):
    RTSP_TIMEOUT = "rtsp_timeout"
    RTSP_REFUSED = "rtsp_refused"  # connection refused or the host unreachable
    RTSP_AUTH = "rtsp_auth"  # 401 with no credential, or the answered challenge rejected
    RTSP_NOT_FOUND = "rtsp_not_found"  # 404
    RTSP_BANDWIDTH = "rtsp_bandwidth"  # 453 Not Enough Bandwidth: the camera's stream slots are taken
    RTSP_ERROR = "rtsp_error"  # any other 3xx/4xx/5xx
    RTSP_PROTOCOL = "rtsp_protocol"  # not RTSP, garbage, over the size caps, SDP unparseable
    RTSP_NO_VIDEO = "rtsp_no_video"  # SDP without a video track
    SNAPSHOT_TIMEOUT = "snapshot_timeout"
    SNAPSHOT_REFUSED = "snapshot_refused"
    SNAPSHOT_AUTH = "snapshot_auth"
    SNAPSHOT_HTTP = "snapshot_http"  # a non-200 status, a redirect loop or a broken HTTP reply
    SNAPSHOT_NOT_JPEG = "snapshot_not_jpeg"
    SNAPSHOT_SIZE = "snapshot_size"  # a valid JPEG, not of the expected size
    SNAPSHOT_TOO_LARGE = "snapshot_too_large"
    ADDRESS_REFUSED = "address_refused"  # the address policy refused the URI (or a redirect): nothing connected
    FRAME_TIMEOUT = "frame_timeout"  # the stream played but no complete keyframe came in time (a silent stream)
    FRAME_DECODE = "frame_decode"  # no decodable picture: garbage payload, an unsupported codec, a broken keyframe
    FRAME_TOO_LARGE = "frame_too_large"  # over the byte cap before a complete keyframe


@dataclass(frozen=True, slots=True)
class MediaFailure:
    """A failed rtsp or snapshot stage. ``cause`` is a :class:`MediaCause` value; ``detail`` never holds
    credentials."""

    cause: str
    detail: str

    def __str__(self) -> str:
        return f"{self.cause} ({self.detail})" if self.detail else self.cause
