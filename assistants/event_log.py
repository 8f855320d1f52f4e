"""The run event log: every event of every run, kept in order in the database.

The in-process `EventBus` reaches subscribers in this process only, and only while they are
connected. The log makes the same events durable and shareable: a background writer appends what
the bus publishes to `run_events` in batches, at most one transaction every `FLUSH_SECONDS` (each
event gets a sequence number, `seq`; the text deltas of one message that share a batch are one
event, their texts joined), and readers follow an assistant's events from a cursor
(`GET /v1/assistants/{id}/events`), so a client that reconnects with the last `seq` it saw misses
nothing, and a process that did not run the run can still stream it.

Readers wait for new rows without polling: the writer wakes this process's readers after each
batch, and on PostgreSQL it also sends `NOTIFY assistants_events` in the batch's transaction;
every process listens on that channel (`PostgresWakeups`) and wakes its own readers, so events
written by another instance arrive within milliseconds. Rows older than `RETENTION_SECONDS` are
deleted by the engine's sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .background import stop_background
from .events import Event, EventBus, Subscription, merge_text_deltas
from .ids import now
from .store import SqlStore, schema

log = logging.getLogger(__name__)

BATCH_LIMIT = 500
"""At most this many events are read in one query."""
WRITE_BATCH_LIMIT = 10_000
"""At most this many events go into the database in one transaction (fewer rows: text deltas of
one message are merged first). A writer that fell behind under load catches up in a few writes,
instead of holding tens of thousands of queued events (and the collector's time) for seconds."""
FLUSH_SECONDS = 0.05
"""The writer starts a transaction at most this often: an event after a quiet spell is written at
once, and events that come faster wait (at most this long) to share one. Writing every token of
every stream in its own transaction cost more than the rest of the token's way to its reader."""
RETENTION_SECONDS = 7 * 86_400
"""Events are kept this long; a cursor older than that resumes at the oldest event kept."""
CHANNEL = "assistants_events"
"""The PostgreSQL notification channel that announces new events to every process."""
CANCEL_CHANNEL = "assistants_cancel"
"""The PostgreSQL notification channel that asks the process executing a run to cancel it."""
WRITE_LOCK = 0x61737369
"""The advisory lock the event writers of all processes take turns on (PostgreSQL)."""


@dataclass(frozen=True)
class LoggedEvent:
    seq: int
    event: str
    data: dict[str, Any]


class EventLog:
    """Writes the bus's events to `run_events` and lets readers follow them from a cursor."""

    def __init__(self, store: SqlStore, bus: EventBus) -> None:
        self.store = store
        self.bus = bus
        self._subscription: Subscription | None = None
        self._writer: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._postgres = store.engine.dialect.name == "postgresql"

    async def start(self) -> None:
        self._subscription = self.bus.subscribe()
        self._writer = asyncio.create_task(self._write_forever(), name="run event log writer")

    async def close(self) -> None:
        """Write what is still queued, then stop."""
        await stop_background(self._writer)
        self._writer = None
        if self._subscription is not None:
            await self._flush_queued()
            self._subscription.close()
            self._subscription = None

    def wake(self) -> None:
        """Tell this process's readers that new events may be in the table."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def changed(self) -> asyncio.Event:
        """Set at the next wake-up; take it before reading, then wait on it."""
        return self._changed

    async def _write_forever(self) -> None:
        assert self._subscription is not None
        queue = self._subscription.queue
        loop = asyncio.get_running_loop()
        last_write = -FLUSH_SECONDS
        while True:
            first = await queue.get()
            pause = last_write + FLUSH_SECONDS - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            last_write = loop.time()
            await self._write_logged(_take([first], queue))
            # Nothing of the batch stays referenced while the writer waits for the next event.
            del first

    async def _write_logged(self, batch: list[Event]) -> None:
        try:
            await self._write(batch)
        except Exception:
            log.exception("could not write %d run events to the log; they are lost to late readers", len(batch))

    async def _flush_queued(self) -> None:
        assert self._subscription is not None
        queue = self._subscription.queue
        while not queue.empty():
            with contextlib.suppress(Exception):
                await self._write(_take([], queue))

    async def _write(self, batch: list[Event]) -> None:
        # Text deltas of one message that share a batch become one row: a reader gets the same text
        # in fewer events, and a busy server writes a row per batch and stream, not per token.
        rows = [
            {
                "assistant_id": event.assistant_id,
                "thread_id": event.thread_id,
                "run_id": event.run_id,
                "event": event.event,
                "data": event.data,
                "created_at": now(),
            }
            for event in merge_text_deltas(batch)
            if event.assistant_id is not None
        ]
        if not rows:
            return
        async with self.store.transaction() as tx:
            if self._postgres:
                # Writers of all processes take turns, so sequence numbers commit in order and a
                # reader that has seen `seq` n can never later find a smaller one appear.
                await tx.conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})
            await tx.conn.execute(schema.run_events.insert(), rows)
            if self._postgres:
                # Delivered at commit, to every process listening (this one included).
                await tx.conn.execute(sa.text(f"NOTIFY {CHANNEL}"))
        self.wake()

    async def read(self, assistant_id: str, after: int, limit: int = BATCH_LIMIT) -> list[LoggedEvent]:
        """The assistant's events with `seq` greater than `after`, oldest first."""
        table = schema.run_events
        query = (
            sa.select(table.c.seq, table.c.event, table.c.data)
            .where(table.c.assistant_id == assistant_id, table.c.seq > after)
            .order_by(table.c.seq)
            .limit(limit)
        )
        async with self.store.read() as tx:
            rows = (await tx.conn.execute(query)).all()
        return [LoggedEvent(int(row.seq), str(row.event), dict(row.data)) for row in rows]

    async def last_seq(self) -> int:
        """The newest event's `seq` (0 when there is none): a cursor that starts from now."""
        table = schema.run_events
        async with self.store.read() as tx:
            return int((await tx.conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.seq), 0)))).scalar_one())

    async def forget_old(self, seconds: int = RETENTION_SECONDS) -> int:
        """Delete events older than `seconds`; returns how many went."""
        table = schema.run_events
        newest = sa.select(sa.func.max(table.c.seq)).scalar_subquery()
        # The newest row always stays: SQLite numbers new rows from the largest one left, so an
        # emptied table would hand out ids that followers have already seen.
        query = table.delete().where(table.c.created_at < now() - seconds, table.c.seq < newest)
        async with self.store.transaction() as tx:
            result = await tx.conn.execute(query)
        return int(result.rowcount or 0)


def _take(batch: list[Event], queue: asyncio.Queue[Event]) -> list[Event]:
    """`batch` topped up with what the queue holds right now, up to `WRITE_BATCH_LIMIT` events."""
    while len(batch) < WRITE_BATCH_LIMIT and not queue.empty():
        batch.append(queue.get_nowait())
    return batch


class PostgresWakeups:
    """Listens on PostgreSQL notification channels and calls a handler with each payload.

    `assistants_events` wakes this process's event readers; `assistants_cancel` carries the id of
    a run another process was asked to cancel. One dedicated connection (not from the pool); if it
    drops (or stops answering a ping), it is opened again, and every handler is called then with an
    empty payload, so readers catch up on what was written meanwhile (cancels missed meanwhile are
    caught by the engine's lease loop).
    """

    RECONNECT_SECONDS = 2.0
    PING_SECONDS = 10.0

    def __init__(self, store: SqlStore, handlers: dict[str, Callable[[str], None]]) -> None:
        self.url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._handlers = handlers
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="event log listener")

    async def close(self) -> None:
        await stop_background(self._task)

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Any failure of the connection: open a new one.
                log.warning("the run event listener failed (%s); reconnecting", exc)
            await asyncio.sleep(self.RECONNECT_SECONDS)

    async def _listen_once(self) -> None:
        """Listen on one connection until it fails; a half-open one is caught by a ping."""
        import asyncpg

        connection = await asyncpg.connect(self.url, timeout=10)
        try:
            lost = asyncio.Event()
            connection.add_termination_listener(lambda *_: lost.set())
            for channel, handler in self._handlers.items():
                await connection.add_listener(channel, lambda _c, _p, _ch, payload, h=handler: h(payload))
            for handler in self._handlers.values():
                handler("")
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self.PING_SECONDS)
                if not lost.is_set():
                    await connection.fetchval("SELECT 1", timeout=self.PING_SECONDS)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(connection.close(timeout=5))
