"""Results of concurrent workers as they come: what every sweep of the device library streams (interrogations,
health checks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

from probes.onvif.gcpause import sweep_gc

__all__ = ["fan_out"]

T = TypeVar("T")
Emit = Callable[[T], Awaitable[None]]


async def fan_out(worker: Callable[[Emit[T]], Awaitable[None]], workers: int) -> AsyncGenerator[T, None]:
    """Run ``workers`` copies of ``worker(emit)`` and yield what they emit, in the order it comes.

    The queue holds at most ``workers`` results, so a slow consumer slows the workers instead of filling memory.
    A worker's exception surfaces here once the others end; a consumer that stops early (close the generator,
    e.g. with ``contextlib.aclosing``) cancels the workers. No full collection of the whole heap meanwhile
    (:func:`probes.onvif.gcpause.sweep_gc`)."""
    count = max(1, workers)
    queue: asyncio.Queue[tuple[T] | None] = asyncio.Queue(maxsize=count)

    async def emit(item: T) -> None:
        await queue.put((item,))

    async def run_all() -> None:
        try:
            with sweep_gc():
                await asyncio.gather(*(worker(emit) for _ in range(count)))
        finally:
            await queue.put(None)

    runner = asyncio.create_task(run_all())
    try:
        while (got := await queue.get()) is not None:
            yield got[0]
        await runner  # surfaces a bug in a worker instead of hiding it
    finally:
        if not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
