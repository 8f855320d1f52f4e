"""The event loop under `chainlit run`: cancelled timers are dropped as asyncio itself drops them.

Chainlit's command line applies `nest_asyncio`, which replaces the loop's `_run_once` with its own
so that a running loop can be re-entered (Chainlit does that to read a chat profile's settings).
The replacement leaves out one thing the standard loop does at each turn: once cancelled timers are
more than half of the loop's timer heap, drop them. A timeout that ends early cancels its timer,
and the provider's HTTP client sets a timeout around every read of a streamed answer, so under
load tens of thousands of cancelled timers (each with a copy of its context) stayed in the heap
until their deadlines passed, the provider timeout later (two minutes by default), and every new
timer was pushed into that much bigger heap.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from typing import Any

MIN_TIMERS = 100
"""As asyncio's `_MIN_SCHEDULED_TIMER_HANDLES`: smaller heaps are left alone."""
CANCELLED_FRACTION = 0.5
"""As asyncio's `_MIN_CANCELLED_TIMER_HANDLES_FRACTION`."""


def drop_cancelled_timers(loop: asyncio.AbstractEventLoop) -> None:
    """Make the loop drop cancelled timers at each turn as the standard loop does, if its
    `_run_once` was replaced by one that does not (`nest_asyncio`); otherwise change nothing."""
    loop_class: Any = type(loop)
    run_once: Callable[[Any], None] = loop_class._run_once
    if getattr(run_once, "drops_cancelled_timers", False) or run_once is asyncio.BaseEventLoop._run_once:  # type: ignore[attr-defined]
        return

    def run_once_dropping_cancelled_timers(self: Any) -> None:
        scheduled = self._scheduled
        if len(scheduled) > MIN_TIMERS and self._timer_cancelled_count > len(scheduled) * CANCELLED_FRACTION:
            kept = []
            for handle in scheduled:
                if handle._cancelled:
                    handle._scheduled = False
                else:
                    kept.append(handle)
            heapq.heapify(kept)
            self._scheduled = kept
            self._timer_cancelled_count = 0
        run_once(self)

    run_once_dropping_cancelled_timers.drops_cancelled_timers = True  # type: ignore[attr-defined]
    loop_class._run_once = run_once_dropping_cancelled_timers
