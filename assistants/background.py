"""Background tasks: stopping one cleanly."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def stop_background(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended.

    Unlike awaiting it under `suppress(CancelledError)`, a cancellation of the caller itself still
    reaches the caller. An exception the task had ended with is logged, not raised, so that the
    caller's own shutdown goes on (stopping the next task, flushing what is queued).
    """
    if task is None:
        return
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("background task %r had failed before it was stopped", task.get_name(), exc_info=error)
