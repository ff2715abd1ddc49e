"""A simulated fleet served from its own event loop in a thread, for synchronous tests and fixtures."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from probes.sim import SimFleet
from probes.sim.rtsp import RtspUnavailable
from tests.services import skip_or_fail


@contextmanager
def fleet_in_thread(sim: SimFleet, *, start_timeout: float = 60.0) -> Iterator[SimFleet]:
    """Start ``sim`` on a loop of its own (the test's code may block or run its own loop); stop it afterwards."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failed: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(sim.start())
        except BaseException as exc:  # reported to the test below, not lost in the thread
            failed.append(exc)
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(start_timeout) and not failed, f"fleet did not start: {failed}"
    try:
        yield sim
    finally:
        if not failed:
            asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextmanager
def rtsp_fleet_in_thread(sim: SimFleet) -> Iterator[SimFleet]:
    """fleet_in_thread for a fleet that serves RTSP: no RTSP server to start skips the test (fails under CI, where
    the RTSP server must run)."""
    try:
        with fleet_in_thread(sim) as running:
            yield running
    except AssertionError as exc:
        if "RtspUnavailable" in str(exc) or isinstance(getattr(exc, "__cause__", None), RtspUnavailable):
            skip_or_fail(exc)
        raise


def pid_base_host(first: int, spread: int = 20) -> str:
    """A base address of this process's own, 127.<first + pid % spread>.<(pid // spread) % 250>.1: test workers do
    not collide, nor do modules given ``first`` values ``spread`` or more apart."""
    pid = os.getpid()
    return f"127.{first + pid % spread}.{(pid // spread) % 250}.1"


@contextmanager
def onvif_fleet(count: int, base_host: str) -> Iterator[SimFleet]:
    """``count`` healthy ONVIF devices (no RTSP, no discovery) from ``base_host`` on one free port, in a thread."""
    sim = SimFleet(count, fault_mix={}, base_host=base_host, port=0, rtsp=False, discovery=False)
    with fleet_in_thread(sim) as running:
        yield running
