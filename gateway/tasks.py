"""Background-task helpers."""

from __future__ import annotations

import asyncio


def raise_if_cancelled(cause: BaseException | None = None) -> None:
    """Re-raise a cancellation that a library hid. redis-py can turn a task's cancellation, racing
    its own timeouts, into an ordinary error; a background loop that retries on errors would then
    never end, and shutdown would wait on it forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause
