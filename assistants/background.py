"""Background tasks: stopping one cleanly."""

from __future__ import annotations

import asyncio
from typing import Any


async def stop_background(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended.

    Unlike awaiting it under `suppress(CancelledError)`, a cancellation of the caller itself still
    reaches the caller. An exception the task ended with (other than its cancellation) is raised.
    """
    if task is None:
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and (error := task.exception()) is not None:
        raise error
