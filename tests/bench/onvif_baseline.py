"""Baseline for later benchmarks: the plain per-device onvif-zeep-async loop most integrations write.

It is what ``probes.onvif.client.interrogate_many`` is measured against (FIELD-NOTES: ~175 devices/s for a
4-call check with cached WSDLs). No benchmark here yet, only the function; it is not collected by pytest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BaselineResult:
    host: str
    port: int
    ok: bool
    manufacturer: str | None = None
    model: str | None = None
    interfaces: int = 0
    stream_uris: tuple[str, ...] = ()
    error: str | None = None


async def zeep_interrogate(host: str, port: int, username: str, password: str) -> BaselineResult:
    """One device the way a typical onvif-zeep-async user does it, one call after the other."""
    from onvif import ONVIFCamera  # imported lazily: 0.18 s, and only the benchmark needs it

    camera = ONVIFCamera(host, port, username, password)
    try:
        await camera.update_xaddrs()
        devicemgmt = await camera.create_devicemgmt_service()
        info: Any = await devicemgmt.GetDeviceInformation()
        interfaces: Any = await devicemgmt.GetNetworkInterfaces()
        media = await camera.create_media_service()
        profiles: Any = await media.GetProfiles()
        uris: list[str] = []
        setup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
        for profile in profiles:
            reply: Any = await media.GetStreamUri({"StreamSetup": setup, "ProfileToken": profile.token})
            uris.append(str(reply.Uri))
        return BaselineResult(
            host, port, True, info.Manufacturer, info.Model, len(interfaces or ()), tuple(uris)
        )
    except Exception as exc:  # the baseline reports failures instead of stopping the loop
        return BaselineResult(host, port, False, error=type(exc).__name__)
    finally:
        await camera.close()


async def zeep_sweep(
    targets: Sequence[tuple[str, int]], username: str, password: str, *, concurrency: int = 1
) -> list[BaselineResult]:
    """The per-device loop over a fleet; ``concurrency`` > 1 runs that many devices at once."""
    slots = asyncio.Semaphore(max(1, concurrency))

    async def one(host: str, port: int) -> BaselineResult:
        async with slots:
            return await zeep_interrogate(host, port, username, password)

    return list(await asyncio.gather(*(one(host, port) for host, port in targets)))
