"""The newest history that fits a token budget (`full` context), remembered between runs.

Sending a long thread whole means converting and token-counting thousands of messages for every
run. But a thread's history only grows at its end: a message's content never changes once its
run has ended, and a thread has one active run at a time. So each process remembers, per
thread, the history it last sent (`HistoryMemory`), and the next run reads only the messages
stored since, after checking with one query that the remembered part is as it was: as many
messages from the oldest remembered through the newest, and the same newest one. A deletion
changes the first (or, when SQLite gives a deleted newest message's `seq` to a new one, the
second); so does a message that committed late under a lower `seq` (PostgreSQL hands out
sequence numbers before commit). What is remembered is counted from the rows actually read, so a
change made while they were read also shows up at the next check.

What is remembered covers every message of the thread from `start` (or from the first) up to
`upto`, by `seq`; the messages of the run being built are newer than all of them and never
remembered. Another process's writes are seen through the same checks, so instances that share
one PostgreSQL need no coordination. A message whose content changes in place after its run
ended would not be seen; the engine never does that (`RunRecorder.finish_message`).
"""

from __future__ import annotations

import base64
import bisect
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..store import StoreTx
from ..tokens import count_message
from ..types import Message, TextContent
from ..types.objects import ImageFileContent, ImageURLContent

HISTORY_BATCH = 200
"""Messages read per query while filling the token budget, newest first."""
MEMORY_CHARS = 16_000_000
"""Characters of message text a process remembers across all threads (least recently used go first)."""
ITEM_SIZE = 256
"""What remembering one message costs beside its text, counted in characters."""


def is_history(message: Message, run_id: str) -> bool:
    """Whether a stored message is history for this run: not one of its own, and not empty.

    A message without content was left by a run that never finished it (the server stopped
    mid-answer); sending it would put an empty turn before the model.
    """
    return message.run_id != run_id and bool(message.content)


async def to_chat_message(message: Message, read_file: Any) -> dict[str, Any]:
    """One stored message as a Chat Completions message (images inlined as data URLs)."""
    parts: list[dict[str, Any]] = []
    has_image = False
    for part in message.content:
        if isinstance(part, TextContent):
            parts.append({"type": "text", "text": part.text.value})
        elif isinstance(part, ImageURLContent):
            has_image = True
            parts.append({"type": "image_url", "image_url": {"url": part.image_url.url}})
        elif isinstance(part, ImageFileContent) and message.role == "user":
            data = await read_file(part.image_file.file_id)
            if data is not None:
                has_image = True
                encoded = base64.b64encode(data).decode()
                parts.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}})
    if not has_image:
        return {"role": message.role, "content": "".join(p["text"] for p in parts if p["type"] == "text")}
    return {"role": message.role, "content": parts}


@dataclass
class _Run:
    """Consecutive history messages, oldest first, as parallel lists (sliced at C speed)."""

    seqs: list[int] = field(default_factory=list)
    chats: list[dict[str, Any]] = field(default_factory=list)
    costs: list[int] = field(default_factory=list)
    chars: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seqs)

    def add(self, seq: int, chat: dict[str, Any], cost: int, chars: int) -> None:
        self.seqs.append(seq)
        self.chats.append(chat)
        self.costs.append(cost)
        self.chars.append(chars)

    def reverse(self) -> None:
        for part in (self.seqs, self.chats, self.costs, self.chars):
            part.reverse()

    def slice(self, start: int, stop: int | None = None) -> _Run:
        return _Run(self.seqs[start:stop], self.chats[start:stop], self.costs[start:stop], self.chars[start:stop])

    def extend(self, other: _Run) -> None:
        self.seqs += other.seqs
        self.chats += other.chats
        self.costs += other.costs
        self.chars += other.chars


@dataclass(frozen=True)
class _Remembered:
    upto: int
    """Every message of the thread with `seq` from `start` through `upto` is in `items` (history)
    or `skipped` (not history: an answer left empty)."""
    start: int | None
    """The oldest `seq` covered; None when everything up to `upto` is."""
    newest_id: str
    """The id of the message at `upto`."""
    items: _Run
    skipped: list[int]
    newest_costs: list[int]
    """`newest_costs[k]`: the tokens of the newest `k` items (for a binary search of what fits)."""
    size: int
    """Roughly what it holds, in characters of text (`ITEM_SIZE` more per message)."""

    @classmethod
    def of(cls, upto: int, start: int | None, newest_id: str, items: _Run, skipped: list[int]) -> _Remembered:
        newest_costs = [0, *itertools.accumulate(reversed(items.costs))]
        size = sum(items.chars) + ITEM_SIZE * (len(items) + len(skipped))
        return cls(upto, start, newest_id, items, skipped, newest_costs, size)

    @property
    def count(self) -> int:
        """How many messages the thread held from `start` through `upto`."""
        return len(self.items) + len(self.skipped)

    def newest_within(self, room: int) -> int:
        """How many of the newest items fit in `room` tokens."""
        return max(0, bisect.bisect_right(self.newest_costs, room) - 1)


class HistoryMemory:
    """Each thread's history as last sent, least recently used dropped first (one per process)."""

    def __init__(self, max_chars: int = MEMORY_CHARS) -> None:
        self.max_chars = max_chars
        self._threads: OrderedDict[str, _Remembered] = OrderedDict()
        self._chars = 0

    def take(self, thread_id: str) -> _Remembered | None:
        remembered = self._threads.pop(thread_id, None)
        if remembered is not None:
            self._chars -= remembered.size
        return remembered

    def keep(self, thread_id: str, remembered: _Remembered) -> None:
        self.take(thread_id)
        if remembered.size > self.max_chars:
            return
        self._threads[thread_id] = remembered
        self._chars += remembered.size
        while self._chars > self.max_chars:
            _, dropped = self._threads.popitem(last=False)
            self._chars -= dropped.size


def _chars(message: Message, chat: dict[str, Any]) -> int | None:
    """The characters a message takes in memory, or None for one that is never remembered: one
    whose conversion reads a file (an image the user uploaded, which may since be deleted)."""
    if any(isinstance(part, ImageFileContent) for part in message.content):
        return None
    content = chat["content"]
    return len(content) if isinstance(content, str) else sum(len(str(p)) for p in content)


async def history_within(
    tx: StoreTx, thread_id: str, run_id: str, budget: int, read_file: Any, memory: HistoryMemory | None
) -> tuple[list[dict[str, Any]], list[int], int]:
    """Newest-first history that fits in `budget` tokens: (messages oldest first, their token costs, left out)."""
    known = memory.take(thread_id) if memory is not None else None
    fresh: list[tuple[int, Message]] = []
    """Every message stored after what is remembered, newest first."""
    through = 0
    """How many messages the thread holds up to what is remembered."""
    if known is not None:
        count, newest, through = await tx.messages_through(thread_id, known.upto, since=known.start)
        if (count, newest) != (known.count, known.newest_id):
            known = None
    if known is not None:
        fresh = await tx.messages_after(thread_id, known.upto, limit=HISTORY_BATCH + 1)
        fresh.reverse()
        if len(fresh) > HISTORY_BATCH:
            known, fresh = None, []  # Much was added meanwhile: read newest first from the top.

    # What can be remembered for the next run: the messages read (or remembered) up to the newest
    # that is not this run's own; this run's messages are newer than all of them.
    upto, newest_id = (known.upto, known.newest_id) if known is not None else (None, "")
    skipped: list[int] = []
    odd = False
    """A message of this run older than one of another's: nothing is remembered (never seen)."""
    newer, older = _Run(), _Run()
    """What is chosen newer than the remembered part, and older than it (both newest first)."""
    spent = taken = 0
    full = exhausted = rereads_files = False

    async def consider(seq: int, message: Message, into: _Run) -> bool:
        """Take one stored message, newest first; False once the budget is spent."""
        nonlocal upto, newest_id, spent, full, rereads_files, odd
        if message.run_id == run_id:
            odd = odd or (upto is not None and seq <= upto)
        elif upto is None or seq > upto:
            upto, newest_id = seq, message.id
        if not is_history(message, run_id):
            if message.run_id != run_id:
                skipped.append(seq)
            return True
        chat = await to_chat_message(message, read_file)
        cost = count_message(chat)
        if (newer or older or taken) and spent + cost > budget:
            full = True
            return False
        chars = _chars(message, chat)
        rereads_files = rereads_files or chars is None
        into.add(seq, chat, cost, chars or 0)
        spent += cost
        return True

    going = True
    for seq, message in fresh:
        if not (going := await consider(seq, message, newer)):
            break
    if going and known is not None:
        taken = known.newest_within(budget - spent)
        if taken == 0 and not newer and len(known.items):
            taken = 1  # The newest message goes, whatever it costs (the caller trims to fit).
        spent += known.newest_costs[taken]
        if taken < len(known.items):
            full, going = True, False
        elif known.start is None:
            exhausted, going = True, False
    if going:
        # Older than anything remembered (or nothing is): pages from the store, newest first.
        before = known.start if known is not None else None
        while going:
            batch = await tx.messages_page_desc(thread_id, limit=HISTORY_BATCH, before_seq=before)
            for seq, message in batch:
                before = seq
                if not (going := await consider(seq, message, older)):
                    break
            if going and len(batch) < HISTORY_BATCH:
                exhausted, going = True, False

    chosen = older
    chosen.reverse()
    if known is not None:
        chosen.extend(known.items.slice(len(known.items) - taken))
    newer.reverse()
    chosen.extend(newer)
    left_out = 0
    if full:
        total = through + len(fresh) if known is not None else await tx.count_messages(thread_id)
        left_out = max(total - len(chosen), 0)
    if memory is not None and upto is not None and not (odd or rereads_files) and (chosen or exhausted):
        # Covered: from the oldest message chosen (or the first) through `upto`. Counted from what
        # was read, never by a later query, so a message deleted or committed meanwhile shows up
        # as a difference at the next run's check.
        # Every message chosen, and every one skipped, is at or below `upto` (only this run's own
        # are above it, and those are neither).
        first = None if exhausted else chosen.seqs[0]
        earlier = known.skipped if known is not None else []
        gaps = sorted(seq for seq in (*earlier, *skipped) if first is None or seq >= first)
        # A copy: the lists returned are the caller's.
        memory.keep(thread_id, _Remembered.of(upto, first, newest_id, chosen.slice(0), gaps))
    return chosen.chats, chosen.costs, left_out
