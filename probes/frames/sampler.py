"""Bounded sampling: at most ``concurrency`` samples at once and at most ``per_host`` sessions per camera host
(cameras allow a few stream sessions and answer 453 Not Enough Bandwidth beyond them). One per sweep shard or
sample run; a sample waits for its host's slot before it takes a global one, so a busy camera holds no global
slot while it waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from probes.frames.frame import Frame, SampleTimeouts
from probes.frames.rtsp import sample_rtsp
from probes.frames.snapshot import sample_snapshot
from probes.media.causes import MediaFailure
from probes.onvif.http import HttpClient
from probes.policy import AddressPolicy

__all__ = ["Sampler"]


class Sampler:
    def __init__(
        self,
        *,
        concurrency: int = 64,
        per_host: int = 2,
        timeouts: SampleTimeouts = SampleTimeouts(),
        max_bytes: int = 16 * 2**20,
        snapshot_max_bytes: int = 8 * 2**20,
        client: HttpClient | None = None,
    ) -> None:
        if concurrency < 1 or per_host < 1:
            raise ValueError("concurrency and per_host must be at least 1")
        self.timeouts = timeouts
        self.per_host = per_host
        self.max_bytes = max_bytes
        self.snapshot_max_bytes = snapshot_max_bytes
        self.client = client
        self._global = asyncio.Semaphore(concurrency)
        self._hosts: dict[str, tuple[asyncio.Semaphore, int]] = {}  # host -> (slots, samples using or waiting)
        self.active = 0
        self.peak = 0

    @asynccontextmanager
    async def _slot(self, url: str, device_ip: str) -> AsyncIterator[None]:
        try:
            host = (urlsplit(url).hostname or device_ip).lower()
        except ValueError:
            host = device_ip
        slots, users = self._hosts.get(host) or (asyncio.Semaphore(self.per_host), 0)
        self._hosts[host] = (slots, users + 1)
        try:
            async with slots, self._global:
                self.active += 1
                self.peak = max(self.peak, self.active)
                try:
                    yield
                finally:
                    self.active -= 1
        finally:
            slots, users = self._hosts[host]
            if users <= 1:
                del self._hosts[host]  # nobody uses or waits for it: the map stays as small as the work in flight
            else:
                self._hosts[host] = (slots, users - 1)

    async def rtsp(
        self,
        url: str,
        *,
        username: str | None,
        password: str | None,
        policy: AddressPolicy,
        device_ip: str,
        frames: int = 1,
        spacing_s: float = 0.0,
    ) -> list[Frame] | MediaFailure:
        async with self._slot(url, device_ip):
            return await sample_rtsp(
                url,
                username=username,
                password=password,
                policy=policy,
                device_ip=device_ip,
                timeouts=self.timeouts,
                frames=frames,
                spacing_s=spacing_s,
                max_bytes=self.max_bytes,
            )

    async def snapshot(
        self, url: str, *, username: str | None, password: str | None, policy: AddressPolicy, device_ip: str
    ) -> Frame | MediaFailure:
        async with self._slot(url, device_ip):
            return await sample_snapshot(
                url,
                username=username,
                password=password,
                policy=policy,
                device_ip=device_ip,
                timeout=self.timeouts.total,
                client=self.client,
                max_bytes=self.snapshot_max_bytes,
            )
