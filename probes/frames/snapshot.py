"""A frame from a camera's snapshot URI: probes.media.snapshot fetches and checks the JPEG (address policy, one
401 answered, capped reply, one deadline), OpenCV decodes it on the decoder pool."""

from __future__ import annotations

import asyncio
import time

from probes.frames.frame import DecodeError, Frame, decode_jpeg, in_decoder_thread
from probes.media.causes import MediaCause, MediaFailure
from probes.media.snapshot import fetch_snapshot
from probes.onvif.http import HttpClient
from probes.policy import AddressPolicy

__all__ = ["sample_snapshot"]


async def sample_snapshot(
    url: str,
    *,
    username: str | None,
    password: str | None,
    policy: AddressPolicy,
    device_ip: str,
    timeout: float,
    client: HttpClient | None = None,
    max_bytes: int = 8 * 2**20,
) -> Frame | MediaFailure:
    """The snapshot at ``url`` decoded to BGR, within ``timeout`` seconds in all (decoding included)."""
    started = time.monotonic()
    got = await fetch_snapshot(
        url,
        username=username,
        password=password,
        timeout=timeout,
        policy=policy,
        device_ip=device_ip,
        max_bytes=max_bytes,
        client=client,
        keep=True,
    )
    if isinstance(got, MediaFailure):
        return got
    left = max(0.1, timeout - (time.monotonic() - started))
    try:
        async with asyncio.timeout(left):
            image = await in_decoder_thread(decode_jpeg, "JPEG", got.data)
    except TimeoutError:
        return MediaFailure(MediaCause.SNAPSHOT_TIMEOUT, f"decoding took over the {timeout:g} s budget")
    except DecodeError as exc:
        return MediaFailure(MediaCause.FRAME_DECODE, str(exc))
    height, width = image.shape[:2]
    return Frame(
        image=image,
        width=width,
        height=height,
        codec="JPEG",
        source="snapshot",
        latency_ms=(time.monotonic() - started) * 1000.0,
        first_byte_ms=None,
        bytes_read=got.size,
        jpeg=got.data,
    )
