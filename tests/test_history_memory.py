"""`full` context remembered between runs (`assistants/runs/_history.py`), on SQLite and PostgreSQL.

What a run sends must be exactly what reading the whole thread afresh gives, whatever happened
to the thread since the last run: messages added or deleted (SQLite even gives a deleted
newest message's `seq` to the next one), a smaller or larger budget, this run's own messages,
emptied answers, images whose files come and go. The memory must also be used: a run on a long
thread reads only what is new.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from assistants.ids import new_id, now
from assistants.runs._history import ITEM_SIZE, HistoryMemory, _Remembered, _Run, history_within
from assistants.store import SqlStore, StoreTx, schema
from assistants.types import Message, TextContent, TextValue, Thread
from assistants.types.objects import ImageFile, ImageFileContent

OWNER = "user_memory"
PNG = b"\x89PNG\r\n\x1a\n-not-really-an-image"


class Thread_:
    """A thread in the store, with helpers to change it as the engine and the API can."""

    def __init__(self, store: SqlStore, thread_id: str) -> None:
        self.store = store
        self.id = thread_id
        self.files: dict[str, bytes] = {}

    async def add(self, text: str, *, role: str = "user", run_id: str | None = None, image: str | None = None) -> Message:
        content: list[Any] = [TextContent(text=TextValue(value=text))] if text else []
        if image is not None:
            content.append(ImageFileContent(image_file=ImageFile(file_id=image)))
        stamp = now()
        message = Message(
            id=new_id("message"), created_at=stamp, completed_at=stamp, thread_id=self.id, role=role,  # type: ignore[arg-type]
            content=content, run_id=run_id, attachments=[],
        )
        async with self.store.transaction() as tx:
            await tx.insert(message, owner=OWNER)
        return message

    async def delete(self, message_id: str) -> None:
        async with self.store.transaction() as tx:
            assert await tx.delete(Message, message_id, owner=None)

    async def ids(self) -> list[str]:
        async with self.store.read() as tx:
            return [m.id for _, m in reversed(await tx.messages_page_desc(self.id, limit=10_000, before_seq=None))]

    async def read_file(self, file_id: str) -> bytes | None:
        return self.files.get(file_id)

    async def sent(self, run_id: str, budget: int, memory: HistoryMemory | None) -> tuple[Any, ...]:
        async with self.store.read() as tx:
            return await history_within(tx, self.id, run_id, budget, self.read_file, memory)


async def new_thread(store: SqlStore) -> Thread_:
    thread = Thread(id=new_id("thread"), created_at=now())
    async with store.transaction() as tx:
        await tx.insert(thread, owner=OWNER)
    return Thread_(store, thread.id)


async def assert_same(thread: Thread_, run_id: str, budget: int, memory: HistoryMemory) -> tuple[Any, ...]:
    afresh = await thread.sent(run_id, budget, None)
    remembered = await thread.sent(run_id, budget, memory)
    assert remembered == afresh
    return remembered


def words(rng: random.Random) -> str:
    return " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "epsilon"]) for _ in range(rng.randint(1, 30)))


@pytest.mark.parametrize("seed", range(6))
async def test_what_is_sent_is_what_reading_afresh_gives_whatever_happens_to_the_thread(store: SqlStore, seed: int) -> None:
    rng = random.Random(seed)
    memory = HistoryMemory()
    thread = await new_thread(store)
    other = await new_thread(store)  # Takes rowids too, and is remembered beside it.
    used: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "threads.message_count" in statement and "messages.seq >" in statement:
            used.append(statement)  # a run that found its thread remembered, and read what is new

    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    for _ in range(30):
        await thread.add(words(rng), role=rng.choice(["user", "assistant"]))
    for step in range(60):
        action = rng.choice(["add", "add", "delete", "delete_newest", "own", "own_early", "empty", "image", "file", "other"])
        if action == "add":
            for _ in range(rng.randint(1, 4)):
                await thread.add(words(rng), role=rng.choice(["user", "assistant"]))
        elif action == "delete":
            ids = await thread.ids()
            if ids:
                await thread.delete(rng.choice(ids))
        elif action == "delete_newest":
            # On SQLite the next message stored anywhere gets the deleted one's `seq` (its rowid).
            ids = await thread.ids()
            if ids:
                await thread.delete(ids[-1])
            await thread.add(words(rng))
        elif action == "own":
            # A run with tool rounds: its own text is newest, left out, and history for the next run.
            run_id = new_id("run")
            await thread.add(words(rng), role="assistant", run_id=run_id)
            await assert_same(thread, run_id, rng.choice([40, 400, 100_000]), memory)
            await thread.add(words(rng), role="assistant", run_id=run_id)
        elif action == "own_early":
            # Not what the engine does (no message joins a thread during its run), but what is
            # remembered must still stop below the run's own messages.
            run_id = new_id("run")
            await thread.add(words(rng), role="assistant", run_id=run_id)
            await thread.add(words(rng))
            await assert_same(thread, run_id, rng.choice([40, 400, 100_000]), memory)
        elif action == "empty":
            await thread.add("", role="assistant", run_id=new_id("run"))
        elif action == "image":
            file_id = new_id("file")
            thread.files[file_id] = PNG
            await thread.add(words(rng), image=file_id)
        elif action == "file" and thread.files:
            thread.files.pop(rng.choice(sorted(thread.files)))
        elif action == "other":
            await other.add(words(rng))
            await assert_same(other, new_id("run"), 100_000, memory)
        budget = rng.choice([20, 60, 200, 400, 1_000, 100_000])
        messages, costs, left_out = await assert_same(thread, new_id("run"), budget, memory)
        assert sum(costs) <= budget or len(messages) == 1, f"step {step}: over the budget"
    event.remove(store.engine.sync_engine, "before_cursor_execute", record)
    assert len(used) >= 10, f"the memory was used {len(used)} times in 60 steps"


async def test_a_run_on_a_long_thread_reads_only_what_is_new(store: SqlStore) -> None:
    memory = HistoryMemory()
    thread = await new_thread(store)
    async with store.transaction() as tx:
        for index in range(600):
            stamp = now()
            await tx.insert(
                Message(id=new_id("message"), created_at=stamp, thread_id=thread.id, role="user",
                        content=[TextContent(text=TextValue(value=f"message {index}"))], attachments=[]),
                owner=OWNER,
            )
    await thread.add("", role="assistant", run_id=new_id("run"))  # an answer left empty: not history
    first = await thread.sent(new_id("run"), 100_000, memory)
    assert len(first[0]) == 600
    await thread.add("the newest question")

    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    try:
        second = await thread.sent(new_id("run"), 100_000, memory)
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", record)
    assert second[0][-1] == {"role": "user", "content": "the newest question"}
    assert second[0][:600] == first[0]
    # One statement: the thread's counts (the check that nothing remembered changed) and what is new.
    reads = [s for s in statements if "messages" in s]
    assert len(reads) == 1, reads
    assert "threads.message_count" in reads[0] and "messages.seq >" in reads[0], reads
    assert "ORDER BY messages.seq DESC" not in reads[0] and "count(" not in reads[0], reads
    # Without the memory, the same run reads the thread page by page.
    statements.clear()
    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    try:
        await thread.sent(new_id("run"), 100_000, None)
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", record)
    assert len([s for s in statements if "ORDER BY messages.seq DESC" in s]) == 4


def test_the_memory_drops_the_least_recently_used_threads_beyond_its_size() -> None:
    def remembered(chars: int) -> _Remembered:
        return _Remembered.of(1, None, 1, 0, _Run([1], [{}], [1], [chars]))

    memory = HistoryMemory(max_chars=100 + 2 * ITEM_SIZE)
    memory.keep("thread_a", remembered(40))
    memory.keep("thread_b", remembered(40))
    assert memory.take("thread_a") is not None  # used: now the most recent ...
    memory.keep("thread_a", remembered(40))
    memory.keep("thread_c", remembered(40))  # ... so thread_b goes
    assert memory.take("thread_b") is None
    assert memory.take("thread_c") is not None and memory.take("thread_a") is not None
    memory.keep("thread_d", remembered(101 + 2 * ITEM_SIZE))  # larger than the whole memory: not kept
    assert memory.take("thread_d") is None


async def test_a_new_message_larger_than_the_budget_after_an_empty_answer(store: SqlStore) -> None:
    memory = HistoryMemory()
    thread = await new_thread(store)
    await thread.add("", role="assistant", run_id=new_id("run"))
    await assert_same(thread, new_id("run"), 100, memory)  # remembers no message, and the empty one
    await thread.add("word " * 200)
    messages, _, left_out = await assert_same(thread, new_id("run"), 10, memory)
    assert len(messages) == 1 and left_out == 0


async def test_budgets_that_fit_exactly_take_the_same_messages_run_after_run(store: SqlStore) -> None:
    """What is remembered adds up the newest messages' tokens exactly as reading afresh does,
    also after it has been carried over from run to run (new messages in, old ones out)."""
    rng = random.Random(7)
    memory = HistoryMemory()
    thread = await new_thread(store)
    for _ in range(40):
        await thread.add(words(rng), role=rng.choice(["user", "assistant"]))
    await assert_same(thread, new_id("run"), 100_000, memory)
    for _ in range(15):
        for _ in range(rng.randint(1, 3)):
            await thread.add(words(rng), role=rng.choice(["user", "assistant"]))
        _, costs, _ = await thread.sent(new_id("run"), 100_000, None)
        k = rng.randint(2, 12)
        exact = sum(costs[-k:])
        short = rng.choice([0, 1])
        messages, _, left_out = await assert_same(thread, new_id("run"), exact - short, memory)
        assert len(messages) == k - short and left_out == len(costs) - len(messages)
        # What is carried over agrees with what remembering the same messages afresh holds.
        carried = memory.take(thread.id)
        assert carried is not None and carried.items.seqs == sorted(carried.items.seqs)
        again = _Remembered.of(carried.upto, carried.start, carried.through, carried.deleted, carried.items)
        assert carried.size == again.size
        assert [carried.newest_cost(n) for n in range(len(carried.items) + 1)] == [again.newest_cost(n) for n in range(len(again.items) + 1)]
        memory.keep(thread.id, carried)


async def test_a_message_that_appears_below_what_is_remembered_is_sent(store: SqlStore) -> None:
    """The store gives a thread's messages their `seq` in the order they commit, but what is
    remembered is checked against the thread's counts whatever the reason: here a message appears
    under a `seq` below the newest remembered (as a restore could put it), counted as the store
    counts: first alone, then with a remembered message deleted, so the thread holds as many as
    before and only the deletion tells."""
    memory = HistoryMemory()
    thread, other = await new_thread(store), await new_thread(store)
    await thread.add("first")
    gap = await other.add("takes a seq between the two")
    await thread.add("second")
    await assert_same(thread, new_id("run"), 100_000, memory)

    async def seq_of(message_id: str) -> int:
        async with store.read() as tx:
            return int((await tx.conn.execute(sa.select(schema.messages.c.seq).where(schema.messages.c.id == message_id))).scalar_one())

    seq = await seq_of(gap.id)
    await other.delete(gap.id)

    async def restore(tx: StoreTx, seq: int, text: str) -> Message:
        """A message stored under `seq`, counted as the store counts."""
        message = gap.model_copy(update={"id": new_id("message"), "thread_id": thread.id, "content": [TextContent(text=TextValue(value=text))]})
        await tx.conn.execute(
            schema.messages.insert().values(
                seq=seq, id=message.id, owner_id=OWNER, created_at=message.created_at,
                data=message.model_dump(mode="json"), thread_id=thread.id,
            )
        )
        threads = schema.threads
        await tx.conn.execute(
            threads.update().where(threads.c.id == thread.id).values(message_count=threads.c.message_count + 1)
        )
        return message

    async with store.transaction() as tx:
        restored = await restore(tx, seq, "restored")
    messages, _, _ = await assert_same(thread, new_id("run"), 100_000, memory)
    assert [m["content"] for m in messages] == ["first", "restored", "second"]

    # A message deleted, and another appearing below the newest remembered: as many as before.
    await thread.delete(restored.id)
    await assert_same(thread, new_id("run"), 100_000, memory)  # remembers "first", "second"
    third = await other.add("takes another seq below")
    await thread.add("newest")
    messages, _, _ = await assert_same(thread, new_id("run"), 100_000, memory)  # remembers all three
    below = await seq_of(third.id)
    await other.delete(third.id)
    await thread.delete((await thread.ids())[0])  # "first": one fewer, one more deleted ...
    async with store.transaction() as tx:  # ... and one more below the newest: as many as before
        await restore(tx, below, "restored again")
    messages, _, _ = await assert_same(thread, new_id("run"), 100_000, memory)
    assert [m["content"] for m in messages] == ["second", "restored again", "newest"]
