"""Media checks of a camera: RTSP OPTIONS + DESCRIBE with the SDP parsed, and a snapshot JPEG fetched and checked.

Device I/O only (no vms imports). Every URI passes the address policy (probes.policy) before anything connects.
"""

from probes.media.causes import MediaCause, MediaFailure
from probes.media.rtsp import RtspInfo, rtsp_describe
from probes.media.sdp import SdpMedia, SdpSession, parse_sdp
from probes.media.snapshot import SnapshotInfo, fetch_snapshot, jpeg_size

__all__ = [
    "MediaCause",
    "MediaFailure",
    "RtspInfo",
    "SdpMedia",
    "SdpSession",
    "SnapshotInfo",
    "fetch_snapshot",
    "jpeg_size",
    "parse_sdp",
    "rtsp_describe",
]
