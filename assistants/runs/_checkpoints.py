"""Answer checkpoints: the text of every answer being streamed is stored at least every second,
so that a process killed mid-answer leaves the words already shown in the database.

One writer serves every run of the process: each second it stores the texts of all the answers
still streaming, in one transaction and one statement that changes only their content (and only
while they are `in_progress`). Each run used to read, rebuild and write its own message every
second; with 200 answers streaming that was 200 transactions a second, most of a run's database
work. The writer runs beside the streams, never in their way (on SQLite a long ingestion can hold
the write lock for seconds): while a write waits, the next texts simply wait for it.
"""

from __future__ import annotations

import asyncio
import logging

from ..background import stop_background
from ..store import SqlStore

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 1.0
"""An answer being streamed is stored at least this often (a crash keeps what was shown)."""


class AnswerCheckpoints:
    """The latest text of each answer being streamed, stored by one writer every `interval` seconds."""

    def __init__(self, store: SqlStore, interval: float = CHECKPOINT_SECONDS) -> None:
        self.store = store
        self.interval = interval
        self._pending: dict[str, str] = {}
        """Message id -> text streamed so far, not stored yet."""
        self._under_way: tuple[frozenset[str], asyncio.Event] | None = None
        """The messages the write under way stores, and the event set when it is over."""
        self._writer: asyncio.Task[None] | None = None

    def note(self, message_id: str, text: str) -> None:
        """The answer's text so far; it is stored within `interval` seconds unless the answer ends first."""
        self._pending[message_id] = text
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_while_streaming(), name="answer checkpoints")

    async def settle(self, message_id: str) -> None:
        """The answer is about to be stored whole: forget its pending text and wait for a write
        under way that holds it, so that a checkpoint can never land after the final text."""
        self._pending.pop(message_id, None)
        under_way = self._under_way
        if under_way is not None and message_id in under_way[0]:
            await under_way[1].wait()

    async def close(self) -> None:
        """Stop the writer (a write under way is abandoned: its answers end with the process)."""
        await stop_background(self._writer)
        self._writer = None

    async def _write_while_streaming(self) -> None:
        while self._pending:
            await asyncio.sleep(self.interval)
            texts, self._pending = self._pending, {}
            if not texts:
                continue
            done = asyncio.Event()
            self._under_way = (frozenset(texts), done)
            try:
                async with self.store.transaction() as tx:
                    await tx.save_partial_texts(texts)
            except Exception:
                log.exception("could not store the text of %d answers being streamed", len(texts))
            finally:
                self._under_way = None
                done.set()
