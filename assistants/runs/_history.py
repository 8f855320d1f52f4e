"""The newest history that fits a token budget (`full` context), remembered between runs.

Sending a long thread whole means converting and token-counting thousands of messages for every
run. But a thread's history only grows at its end: a message's content never changes once its
run has ended, and a thread has one active run at a time. So each process remembers, per
thread, the history it last sent (`HistoryMemory`), and the next run reads only the messages
stored since. They are read by the same statement as the thread's message counts, which the
store keeps in step with its rows (`MessageCounts`): if no message was deleted since, and the
thread holds as many messages up to the newest remembered as it did then, the remembered part
is as it was. A deletion changes the first; a message that appears under a lower `seq` changes the
second (the store gives a thread's messages their `seq` in commit order, so only a writer that
bypasses it could do that). The check reads no row of the remembered part, so it costs the same
for a thread of 10 messages as of 10,000, and so does carrying the memory over to the next run.

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

from ..store import MessageCounts, StoreTx
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
    """Every message of the thread with `seq` from `start` through `upto` that is history is in
    `items`; the others were not history (an answer left empty)."""
    start: int | None
    """The oldest `seq` covered; None when everything up to `upto` is."""
    through: int
    """How many messages the thread held with `seq` up to `upto`."""
    deleted: int
    """How many messages the thread had lost to deletion (`MessageCounts.deleted`)."""
    items: _Run
    prefix: list[int]
    """`prefix[i]`: the tokens of the items before the `i`-th, plus a constant (only differences
    count): the newest `k` cost `prefix[-1] - prefix[-1 - k]`."""
    size: int
    """Roughly what it holds, in characters of text (`ITEM_SIZE` more per message)."""

    @classmethod
    def of(cls, upto: int, start: int | None, through: int, deleted: int, items: _Run) -> _Remembered:
        prefix = list(itertools.accumulate(items.costs, initial=0))
        size = sum(items.chars) + ITEM_SIZE * len(items)
        return cls(upto, start, through, deleted, items, prefix, size)

    def moved_on(self, upto: int, start: int | None, through: int, taken: int, newer: _Run) -> _Remembered:
        """What to remember after a run that sent the newest `taken` items and then `newer` (oldest
        first), and nothing older: the work is in proportion to what changed, not to what is
        remembered."""
        dropped = len(self.items) - taken
        items = self.items.slice(dropped)
        items.extend(newer)
        prefix = self.prefix[dropped:]
        total = prefix[-1]
        for cost in newer.costs:
            total += cost
            prefix.append(total)
        size = self.size + sum(newer.chars) - sum(self.items.chars[:dropped]) + ITEM_SIZE * (len(newer) - dropped)
        return _Remembered(upto, start, through, self.deleted, items, prefix, size)

    def newest_cost(self, k: int) -> int:
        """The tokens of the newest `k` items."""
        return self.prefix[-1] - self.prefix[-1 - k]

    def still_holds(self, counts: MessageCounts, fresh: int) -> bool:
        """Whether the thread still holds exactly what was remembered, given its counts and how
        many messages it holds after `upto` (both read at one moment): no message was deleted
        since, so none of those remembered is gone, and as many are at or below `upto` as then,
        so none was added among them."""
        return counts.deleted == self.deleted and counts.held - fresh == self.through

    def newest_within(self, room: int) -> int:
        """How many of the newest items fit in `room` tokens."""
        return max(0, len(self.items) - bisect.bisect_left(self.prefix, self.prefix[-1] - room))


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
    page: list[tuple[int, Message]] | None = None
    """Without a memory: the newest messages, newest first."""
    if known is not None:
        counts, fresh = await tx.messages_counted(thread_id, after=known.upto, limit=HISTORY_BATCH + 1)
        fresh.reverse()
        if len(fresh) > HISTORY_BATCH or not known.still_holds(counts, len(fresh)):
            # Changed, or much was added meanwhile: read newest first from the top.
            known, fresh = None, []
    if known is None:
        counts, page = await tx.messages_counted(thread_id, after=None, limit=HISTORY_BATCH)
    # Read with the counts, at one moment: the messages newer than what is remembered, or the
    # newest page. What is remembered next is counted against them.
    read_together = fresh if known is not None else page or []

    # What can be remembered for the next run: the messages read (or remembered) up to the newest
    # that is not this run's own; this run's messages are newer than all of them.
    upto = known.upto if known is not None else None
    odd = False
    """A message of this run older than one of another's: nothing is remembered (never seen)."""
    newer, older = _Run(), _Run()
    """What is chosen newer than the remembered part, and older than it (both newest first)."""
    spent = taken = 0
    full = exhausted = rereads_files = False

    async def consider(seq: int, message: Message, into: _Run) -> bool:
        """Take one stored message, newest first; False once the budget is spent."""
        nonlocal upto, spent, full, rereads_files, odd
        if message.run_id == run_id:
            odd = odd or (upto is not None and seq <= upto)
        elif upto is None or seq > upto:
            upto = seq
        if not is_history(message, run_id):
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
        spent += known.newest_cost(taken)
        if taken < len(known.items):
            full, going = True, False
        elif known.start is None:
            exhausted, going = True, False
    if going:
        # Older than anything remembered (or nothing is): pages from the store, newest first.
        before = known.start if known is not None else None
        batch = page
        while going:
            if batch is None:
                batch = await tx.messages_page_desc(thread_id, limit=HISTORY_BATCH, before_seq=before)
            for seq, message in batch:
                before = seq
                if not (going := await consider(seq, message, older)):
                    break
            if going and len(batch) < HISTORY_BATCH:
                exhausted, going = True, False
            batch = None

    read_older = bool(older)
    chosen = older
    chosen.reverse()
    if known is not None:
        chosen.extend(known.items.slice(len(known.items) - taken))
    newer.reverse()
    chosen.extend(newer)
    left_out = max(counts.held - len(chosen), 0) if full else 0
    # Remembered only when the messages read with the counts reach down to `upto`: then how many
    # the thread held through it, at that moment, is known exactly.
    counted = known is not None or (bool(read_together) and upto is not None and upto >= read_together[-1][0])
    if memory is not None and upto is not None and counted and not (odd or rereads_files) and (chosen or exhausted):
        # Covered: from the oldest message chosen (or the first) through `upto`; every message
        # chosen is at or below `upto` (only this run's own are above it, and those never are).
        first = None if exhausted else chosen.seqs[0]
        through = counts.held - sum(1 for seq, _ in read_together if seq > upto)
        if known is not None and not read_older:
            remembered = known.moved_on(upto, first, through, taken, newer)
        else:
            # A copy: the lists returned are the caller's.
            remembered = _Remembered.of(upto, first, through, counts.deleted, chosen.slice(0))
        memory.keep(thread_id, remembered)
    return chosen.chats, chosen.costs, left_out
