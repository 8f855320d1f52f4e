"""The serving loop under `chainlit run` drops cancelled timers, as asyncio's own loop does."""

from __future__ import annotations

import asyncio
import heapq
from typing import Any

from assistants.ui.event_loop import drop_cancelled_timers


class NestedLoop(asyncio.SelectorEventLoop):
    """A loop whose `_run_once` is replaced as `nest_asyncio` replaces it: cancelled timers are
    popped from the head of the heap only."""

    def _run_once(self) -> None:
        scheduled: Any = self._scheduled  # type: ignore[attr-defined]
        while scheduled and scheduled[0]._cancelled:
            heapq.heappop(scheduled)
        ready: Any = self._ready  # type: ignore[attr-defined]
        event_list = self._selector.select(0 if ready else 0.001)  # type: ignore[attr-defined]
        self._process_events(event_list)  # type: ignore[attr-defined]
        for _ in range(len(ready)):
            handle = ready.popleft()
            if not handle._cancelled:
                handle._run()


def timers_left(loop: asyncio.AbstractEventLoop) -> int:
    return len(loop._scheduled)  # type: ignore[attr-defined]


def run_with_cancelled_timeouts(loop: asyncio.AbstractEventLoop) -> int:
    """Arm and cancel a thousand long timeouts, as reads that finish early do; timers left after."""

    async def reads() -> None:
        for _ in range(1000):
            loop.call_later(120, lambda: None).cancel()
            await asyncio.sleep(0)

    # A live timer due first (a keep-alive, say) heads the heap, as on a serving loop.
    live = loop.call_later(60, lambda: None)
    loop.run_until_complete(reads())
    live.cancel()
    return timers_left(loop)


def test_cancelled_timers_are_dropped_once_they_are_most_of_the_heap() -> None:
    plain = NestedLoop()
    fixed = type("FixedLoop", (NestedLoop,), {})()
    try:
        drop_cancelled_timers(fixed)
        assert run_with_cancelled_timeouts(plain) >= 900, "the replaced loop keeps them (the problem)"
        assert run_with_cancelled_timeouts(fixed) <= 101
    finally:
        plain.close()
        fixed.close()


def test_the_standard_loop_is_left_as_it_is() -> None:
    loop = asyncio.new_event_loop()
    try:
        before = type(loop)._run_once  # type: ignore[attr-defined]
        drop_cancelled_timers(loop)
        assert type(loop)._run_once is before  # type: ignore[attr-defined]
        assert run_with_cancelled_timeouts(loop) <= 101
    finally:
        loop.close()
