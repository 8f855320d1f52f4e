"""Write transactions that take turns inside the process, for SQLite.

SQLite admits one writer at a time. A transaction that finds the database locked waits in SQLite's
busy handler, which sleeps and polls (1, 2, 5, ... up to 100 ms a sleep) while holding a pooled
connection and its thread. On a busy event loop a write transaction spans several loop turns, so
its lock is held long enough for others to pile up behind it: under 200 streaming sessions the
first write of a run's transactions waited 75-100 ms on average, with no CPU spent. Queueing the
process's transactions on an `asyncio.Lock` instead hands the database to the next one the moment
the last commits, and nobody sleeps. Other processes on the same file still meet the busy handler.

A task that already holds its turn passes straight through (a transaction opened inside another in
the same task, as before). PostgreSQL needs none of this: its writers lock rows, not the database.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class _Turn:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.holder: asyncio.Task[object] | None = None


class WriteTurns:
    """One transaction at a time per event loop; re-entrant for the task holding the turn."""

    def __init__(self) -> None:
        # Per loop, since an asyncio.Lock belongs to one loop (tests may run several in turn).
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn] = weakref.WeakKeyDictionary()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = _Turn()
        task = asyncio.current_task()
        if task is not None and task is turn.holder:
            yield
            return
        async with turn.lock:
            turn.holder = task
            try:
                yield
            finally:
                turn.holder = None
