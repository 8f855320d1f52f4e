"""Write transactions that take turns inside the process, for SQLite.

SQLite admits one writer at a time. A transaction that finds the database locked waits in SQLite's
busy handler, which sleeps and polls (1, 2, 5, ... up to 100 ms a sleep) while holding a pooled
connection and its thread. On a busy event loop a write transaction spans several loop turns, so
its lock is held long enough for others to pile up behind it: under 200 streaming sessions the
first write of a run's transactions waited 75-100 ms on average, with no CPU spent. Queueing the
process's transactions on an `asyncio.Lock` instead hands the database to the next one the moment
the last commits, and nobody sleeps. Other processes on the same file still meet the busy handler.

A task that already holds its turn passes straight through (a transaction opened inside another in
the same task, as before). So a transaction must never wait for another task that opens one (a
`gather`, `wait_for` or a queue inside `transaction()`): that task would wait for the turn
forever, or until `WAIT_SECONDS`. Nor should a transaction wait for anything slow (a model call):
every other transaction of the process waits with it. A turn held longer than `SLOW_SECONDS` is
logged with the task that held it. PostgreSQL needs none of this: its writers lock rows, not the
database.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

WAIT_SECONDS = 30.0
"""How long a transaction waits for its turn before failing, as SQLite's busy timeout did."""
SLOW_SECONDS = 1.0
"""A turn held longer than this is logged: everything else in the process waited for it."""


class TurnTimeout(TimeoutError):
    """A transaction waited `WAIT_SECONDS` for its turn at the SQLite database."""


class _Turn:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.holder: asyncio.Task[object] | None = None


class WriteTurns:
    """One transaction at a time per event loop; re-entrant for the task holding the turn."""

    def __init__(self, *, wait_seconds: float = WAIT_SECONDS, slow_seconds: float = SLOW_SECONDS) -> None:
        # Per loop, since an asyncio.Lock belongs to one loop (tests run several in turn). A lock
        # that ever queued a waiter keeps a reference to its loop, so such entries stay: one per
        # loop that used the store, which in a server is one.
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn] = weakref.WeakKeyDictionary()
        self.wait_seconds = wait_seconds
        self.slow_seconds = slow_seconds

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
        try:
            async with asyncio.timeout(self.wait_seconds):
                await turn.lock.acquire()
        except TimeoutError:
            holder = turn.holder.get_name() if turn.holder is not None else "unknown"
            raise TurnTimeout(
                f"The database stayed busy for {self.wait_seconds:g} s: another transaction of this "
                f"process (task {holder!r}) held it."
            ) from None
        turn.holder = task
        began = time.monotonic()
        try:
            yield
        finally:
            turn.holder = None
            turn.lock.release()
            held = time.monotonic() - began
            if held > self.slow_seconds:
                name = task.get_name() if task is not None else "unknown"
                log.warning("a transaction held the SQLite database for %.1f s (task %r); every other one waited", held, name)
