"""SDP parsing of the rtsp stage (probes.media.sdp): codec and resolution from the SDPs cameras really send.

The GStreamer SDP is what the simulator's RTSP server (probes/sim/rtsp_server_gst.py) answered to DESCRIBE at
1280x720. The camera SDPs follow the vendors' documented layouts (Hikvision ``a=x-dimensions``, Dahua H.265 with
``sprop-vps/sps/pps``, Live555 ``a=framesize``, Darwin-style ``a=cliprect``, Axis Motion JPEG on static payload 26);
the H.264/H.265 parameter sets in them were produced by x264 and x265 at those sizes, or are the sets these
cameras are known to send for 1080p main streams.
"""

from __future__ import annotations

import base64

import pytest

from probes.media.sdp import SdpMedia, h264_sps_size, h265_sps_size, parse_sdp

GSTREAMER = """v=0
o=- 5236354835459224587 1 IN IP4 127.0.0.1
s=Session streamed with GStreamer
i=rtsp-server
t=0 0
a=tool:GStreamer
a=type:broadcast
a=control:*
a=range:npt=now-
m=video 0 RTP/AVP 96
c=IN IP4 0.0.0.0
b=AS:393
a=rtpmap:96 H264/90000
a=framerate:10
a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0LAH9oBQBbsBagICAoAAAMAAgAAAwApHjBlQA==,aM48gA==;\
profile-level-id=42c01f;level-asymmetry-allowed=1
a=control:stream=0
a=ts-refclk:local
a=mediaclk:sender
a=ssrc:130209849 cname:user2789108785@host-c1880227
"""

HIKVISION = """v=0
o=- 1109162014219182 1109162014219192 IN IP4 192.168.1.64
s=Media Presentation
e=NONE
b=AS:5050
t=0 0
a=control:rtsp://192.168.1.64:554/Streaming/Channels/101/?transportmode=unicast
m=video 0 RTP/AVP 96
c=IN IP4 0.0.0.0
b=AS:5000
a=recvonly
a=x-dimensions:1920,1080
a=control:rtsp://192.168.1.64:554/Streaming/Channels/101/trackID=1?transportmode=unicast
a=rtpmap:96 H264/90000
a=fmtp:96 profile-level-id=420029; packetization-mode=1; sprop-parameter-sets=Z00AKpWoHgCJ+WEAAAcIAAFfkAQ=,aO48gA==
m=audio 0 RTP/AVP 8
c=IN IP4 0.0.0.0
b=AS:50
a=recvonly
a=control:rtsp://192.168.1.64:554/Streaming/Channels/101/trackID=2?transportmode=unicast
a=rtpmap:8 PCMA/8000
a=Media_header:MEDIAINFO=494D4B48010100000400010010710110401F000000FA000000000000000000000000000000000000;
a=appversion:1.0
"""

DAHUA_H265 = """v=0
o=- 2251938202 2251938202 IN IP4 0.0.0.0
s=Media Server
c=IN IP4 0.0.0.0
t=0 0
a=control:*
a=packetization-supported:DH
a=rtppayload-supported:DH
a=range:npt=now-
m=video 0 RTP/AVP 98
a=control:trackID=0
a=framerate:25.000000
a=rtpmap:98 H265/90000
a=fmtp:98 profile-id=1;sprop-sps=QgEBAWAAAAMAkAAAAwAAAwCWoAFQIAXxZZWaSTK//AAEAAWoCAgIIAAAAwAgAAADA8E=;\
sprop-pps=RAHBcrRiQA==;sprop-vps=QAEMAf//AWAAAAMAkAAAAwAAAwCWlZgJ
a=recvonly
m=application 0 RTP/AVP 107
a=control:trackID=4
a=rtpmap:107 vnd.onvif.metadata/90000
a=recvonly
"""

LIVE555_FRAMESIZE = """v=0
o=- 1 1 IN IP4 10.0.0.5
s=H.264 Video, streamed by the LIVE555 Media Server
t=0 0
m=video 0 RTP/AVP 96
a=rtpmap:96 H264/90000
a=fmtp:96 packetization-mode=1;profile-level-id=4D001F
a=framesize:96 1280-720
a=control:track1
"""

CLIPRECT_MPEG4 = """v=0
o=- 1 1 IN IP4 10.0.0.6
s=QuickTime
t=0 0
m=video 0 RTP/AVP 96
a=rtpmap:96 MP4V-ES/90000
a=cliprect:0,0,576,704
a=mpeg4-esid:201
"""

AXIS_MJPEG = """v=0
o=- 1 1 IN IP4 192.168.0.90
s=Session streamed with GStreamer
t=0 0
a=control:rtsp://192.168.0.90/axis-media/media.amp?videocodec=jpeg
m=video 0 RTP/AVP 26
c=IN IP4 0.0.0.0
b=AS:50000
a=control:rtsp://192.168.0.90/axis-media/media.amp/stream=0?videocodec=jpeg
a=framerate:30.000000
"""


def video(text: str) -> SdpMedia:
    got = parse_sdp(text).video
    assert got is not None
    return got


def test_gstreamer_sdp_resolution_from_the_sps() -> None:
    v = video(GSTREAMER)
    assert (v.codec, v.width, v.height, v.payload, v.clock_rate) == ("H264", 1280, 720, 96, 90000)
    assert v.control == "stream=0" and v.fmtp["profile-level-id"] == "42c01f"
    assert parse_sdp(GSTREAMER).name == "Session streamed with GStreamer"


def test_hikvision_x_dimensions_and_tracks() -> None:
    session = parse_sdp(HIKVISION.replace("\n", "\r\n"))
    assert [(m.kind, m.codec) for m in session.media] == [("video", "H264"), ("audio", "PCMA")]
    assert (video(HIKVISION).width, video(HIKVISION).height) == (1920, 1080)
    # the attribute wins over the SPS; without it the SPS gives the same 1080p
    assert video(HIKVISION.replace("1920,1080", "1280,720")).width == 1280
    assert (video(HIKVISION.replace("a=x-dimensions:1920,1080\n", "")).height) == 1080


def test_dahua_h265_from_sprop_sps() -> None:
    session = parse_sdp(DAHUA_H265)
    v = video(DAHUA_H265)
    assert (v.codec, v.width, v.height) == ("H265", 2688, 1520)
    assert session.media[1].kind == "application" and session.media[1].codec == "VND.ONVIF.METADATA"


def test_framesize_cliprect_and_static_payloads() -> None:
    assert (video(LIVE555_FRAMESIZE).width, video(LIVE555_FRAMESIZE).height) == (1280, 720)
    cliprect = video(CLIPRECT_MPEG4)
    assert (cliprect.codec, cliprect.width, cliprect.height) == ("MP4V-ES", 704, 576)
    mjpeg = video(AXIS_MJPEG)
    assert (mjpeg.codec, mjpeg.payload, mjpeg.width) == ("JPEG", 26, None)


@pytest.mark.parametrize(
    ("sps", "size"),
    [
        ("Z2QAKKzZQHgCJ+XAWoCAgKAAAAMAIAAAB5HjBjLA", (1920, 1080)),  # x264 High, cropped from 1088
        ("Z2QAMqzZQCoAv7AWoCAgKAAAAwAIAAADAeR4wYyw", (2688, 1520)),
        ("Z2QAH6zZQLASbAWoMDA1KAAAAwAIAAADAeR4wYyw", (704, 576)),
        ("Z00AKp2oHgCJ+WbgICAoAAADAAgAAAMAyCA=", (1920, 1080)),  # Dahua 1080p main profile
    ],
)
def test_h264_sps(sps: str, size: tuple[int, int]) -> None:
    assert h264_sps_size(base64.b64decode(sps + "=" * (-len(sps) % 4))) == size


@pytest.mark.parametrize(
    ("sps", "size"),
    [
        ("QgEBAWAAAAMAkAAAAwAAAwB4oAPAgBDlllZpJMr/8AAQABagICAggAAAAwCAAAAPBA==", (1920, 1080)),  # conformance window
        ("QgEBAWAAAAMAkAAAAwAAAwBaoAWCAJBZZWaSTK//AAEAAWoMDAwIAAADAAgAAAMA8EA=", (704, 576)),
    ],
)
def test_h265_sps(sps: str, size: tuple[int, int]) -> None:
    assert h265_sps_size(base64.b64decode(sps)) == size


def test_damaged_sps_leaves_the_resolution_unknown() -> None:
    truncated = GSTREAMER.replace("Z0LAH9oBQBbsBagICAoAAAMAAgAAAwApHjBlQA==", "Z0LAH9oB")
    v = video(truncated)
    assert (v.codec, v.width, v.height) == ("H264", None, None)
    with pytest.raises(ValueError, match="truncated"):
        h264_sps_size(base64.b64decode("Z0LAH9oB"))
    assert video(GSTREAMER.replace("sprop-parameter-sets=", "sprop-parameter-sets=!!!,")).width == 1280


def test_audio_only_and_not_an_sdp() -> None:
    assert parse_sdp("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nm=audio 0 RTP/AVP 0\n").video is None
    for bad in ("", "<html>401</html>", "v=0\ns=no media\n", "v=0\n" + "a=x\n" * 5000):
        with pytest.raises(ValueError):
            parse_sdp(bad)


def test_absurd_dimensions_are_ignored() -> None:
    assert video(LIVE555_FRAMESIZE.replace("1280-720", "99999-0")).width is None
