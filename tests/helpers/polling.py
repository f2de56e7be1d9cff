"""Waiting for what another process or thread does: poll a condition, never sleep a fixed time.

The timeout is a hang guard, not a speed check: a condition that comes true late still passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 15.0, interval: float = 0.02, what: str = "") -> T:
    """`condition()`'s first truthy value; fails the test once `timeout` seconds have gone by without one."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what or condition} after {timeout:.0f} s")
        time.sleep(interval)
    return value


async def await_until(condition: Callable[[], T], timeout: float = 15.0, interval: float = 0.01, what: str = "") -> T:
    """`wait_until` inside an event loop: the loop keeps running while it waits."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what or condition} after {timeout:.0f} s")
        await asyncio.sleep(interval)
    return value
