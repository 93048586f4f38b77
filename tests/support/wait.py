"""Waiting in tests: poll a condition on the running loop, bounded."""

from __future__ import annotations

import asyncio
from typing import Callable


async def until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> None:
    """Return once ``predicate()`` is true; AssertionError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
