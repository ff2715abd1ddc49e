"""A simulated fleet served from its own event loop in a thread, for synchronous tests and fixtures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from probes.sim import SimFleet


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
