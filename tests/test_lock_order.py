"""Writers of one thread at the same moment, on PostgreSQL (SQLite writes one transaction at a
time): they take the thread's row first and so queue in one order, no pair of them deadlocks,
and none leaves a row behind a thread that was deleted meanwhile.

Each test makes the interleaving happen rather than hoping for it: a transaction of the test's
holds a row, and the test waits (through `pg_stat_activity`) until the writers it started are
blocked where the interleaving needs them before it lets go.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import sqlalchemy as sa

from assistants.background import stop_background
from assistants.engine import Engine
from assistants.exceptions import InvalidRequestError, NotFoundError
from assistants.store import schema
from assistants.types import Message, MessageStatus, Run, RunStatus, RunStep, Thread, VectorStore
from assistants.types.objects import MessageCreation, MessageCreationDetails
from assistants.types.requests import (
    AssistantCreate,
    MessageCreate,
    RunCreate,
    ThreadCreate,
    VectorStoreCreate,
)
from tests.conftest import PG_ADMIN_DSN, StartRuntime

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

OWNER = "user_lock_order"
WAIT = 20.0


async def until_blocked(database_url: str, count: int) -> None:
    """Wait until `count` sessions of the test's database wait for a lock."""
    name = database_url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        async with asyncio.timeout(WAIT):
            while True:
                waiting = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", name
                )
                if waiting >= count:
                    return
                await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def unstarted_run(engine: Engine, thread_id: str, owner: str = OWNER) -> Run:
    """A run of the thread as it is stored `in_progress`, not stored yet and executed by no one: a
    copy, under a new id, of a run the engine made and completed."""
    assistant = await engine.create_assistant(owner, AssistantCreate(model="scripted-model"))
    await engine.create_message(owner, thread_id, MessageCreate(role="user", content="Tell me a story."))
    run = await engine.create_run(owner, thread_id, RunCreate(assistant_id=assistant.id))
    async with asyncio.timeout(WAIT):
        await engine.wait_for_run(run.id)
    stored = await engine.get_run(owner, thread_id, run.id)
    return stored.model_copy(update={"id": f"{run.id}_copy", "status": RunStatus.in_progress, "completed_at": None})


async def abandoned_answer(engine: Engine, thread_id: str, owner: str = OWNER) -> tuple[Run, Message]:
    """A run left `in_progress` mid-answer by a process that stopped: no lease, its
    `message_creation` step and its answer still open, as a crash leaves them."""
    left = await unstarted_run(engine, thread_id, owner)
    # The runtime's own sweep (every few seconds) would end it too, racing what the test does.
    await stop_background(engine._sweeper)
    assistant = left.assistant_id
    answer = Message(
        id=f"msg_{left.id}",
        created_at=left.created_at,
        thread_id=thread_id,
        status=MessageStatus.in_progress,
        role="assistant",
        content=[],
        assistant_id=assistant,
        run_id=left.id,
        attachments=[],
    )
    step = RunStep(
        id=f"step_{left.id}",
        created_at=left.created_at,
        assistant_id=assistant,
        thread_id=thread_id,
        run_id=left.id,
        type="message_creation",
        step_details=MessageCreationDetails(message_creation=MessageCreation(message_id=answer.id)),
    )
    async with engine.store.transaction() as tx:
        await tx.insert(left, owner=owner)  # no worker, no lease: its process is gone
        await tx.insert(step, owner=owner)
        await tx.insert(answer, owner=owner)
    return left, answer


async def rows_of_thread(engine: Engine, thread_id: str) -> dict[str, int]:
    async with engine.store.read() as tx:
        return {
            table.name: int(
                (await tx.conn.execute(sa.select(sa.func.count()).where(table.c.thread_id == thread_id))).scalar_one()
            )
            for table in (schema.messages, schema.runs, schema.run_steps)
        }


async def test_ending_an_abandoned_run_while_its_thread_is_deleted_does_not_deadlock(
    start_runtime: StartRuntime, database_url: str
) -> None:
    """The sweep that ends an abandoned run writes the run, its steps, then its answer; a thread's
    deletion removes the messages, then the runs. Both now take the thread's row first: before,
    each held what the other needed next, and PostgreSQL aborted one as a deadlock."""
    engine = (await start_runtime()).engine
    thread = await engine.create_thread(OWNER, ThreadCreate())
    run, answer = await abandoned_answer(engine, thread.id)

    async with engine.store.transaction() as holder:
        # Another writer holds the run's steps for a moment: the sweep stops at them, having
        # taken what it takes before them.
        steps = schema.run_steps
        await holder.conn.execute(sa.select(steps.c.id).where(steps.c.run_id == run.id).with_for_update())
        sweep = asyncio.create_task(engine.end_abandoned_runs())
        await until_blocked(database_url, 1)
        deletion = asyncio.create_task(engine.delete_thread(OWNER, thread.id))
        await until_blocked(database_url, 2)
    async with asyncio.timeout(WAIT):
        ended, deleted = await asyncio.gather(sweep, deletion)

    assert ended == [run.id] and deleted is True
    assert await rows_of_thread(engine, thread.id) == {"messages": 0, "runs": 0, "run_steps": 0}
    async with engine.store.read() as tx:
        assert await tx.find(Thread, thread.id, owner=None) is None
        assert await tx.find(Message, answer.id, owner=None) is None


async def test_ending_an_abandoned_run_whose_thread_was_just_deleted_leaves_nothing_to_do(
    start_runtime: StartRuntime, database_url: str
) -> None:
    """The other order: the deletion commits while the sweep waits for the thread's row; the
    sweep then finds no run to end (before, it raised "No run found" and the sweep failed)."""
    engine = (await start_runtime()).engine
    thread = await engine.create_thread(OWNER, ThreadCreate())
    run, _ = await abandoned_answer(engine, thread.id)

    async with engine.store.transaction() as deleting:
        assert await deleting.delete(Thread, thread.id, owner=OWNER)
        sweep = asyncio.create_task(engine.end_abandoned_runs())
        await until_blocked(database_url, 1)
    async with asyncio.timeout(WAIT):
        assert await sweep == []
    assert await rows_of_thread(engine, thread.id) == {"messages": 0, "runs": 0, "run_steps": 0}


async def test_a_message_added_while_its_thread_is_deleted_is_refused_and_leaves_no_row(
    start_runtime: StartRuntime, database_url: str
) -> None:
    """A message whose thread is deleted between the request's read of the thread and its insert:
    a 404 in the API's words, and no message left without its thread."""
    engine = (await start_runtime()).engine
    thread = await engine.create_thread(OWNER, ThreadCreate())
    await engine.create_message(OWNER, thread.id, MessageCreate(role="user", content="The first."))

    async with engine.store.transaction() as deleting:
        assert await deleting.delete(Thread, thread.id, owner=OWNER)
        adding = asyncio.create_task(
            engine.create_message(OWNER, thread.id, MessageCreate(role="user", content="Too late."))
        )
        await until_blocked(database_url, 1)
    with pytest.raises(NotFoundError, match=f"No thread found with id '{thread.id}'"):
        async with asyncio.timeout(WAIT):
            await adding
    assert await rows_of_thread(engine, thread.id) == {"messages": 0, "runs": 0, "run_steps": 0}


async def test_a_message_added_while_a_run_starts_waits_and_is_refused(
    start_runtime: StartRuntime, database_url: str
) -> None:
    """A run that starts between a message request's check for an active run and its insert: the
    request waits for the thread's row and then refuses in OpenAI's words (before, the message
    was added while the run was active)."""
    engine = (await start_runtime()).engine
    thread = await engine.create_thread(OWNER, ThreadCreate())
    run = await unstarted_run(engine, thread.id)

    async with engine.store.transaction() as starting:  # what a run's start holds and writes
        await starting.lock_thread(thread.id)
        adding = asyncio.create_task(engine.create_message(OWNER, thread.id, MessageCreate(role="user", content="Now?")))
        await until_blocked(database_url, 1)
        await starting.insert(run, owner=OWNER)
    with pytest.raises(InvalidRequestError, match=f"Can't add messages to {thread.id} while a run {run.id} is active"):
        async with asyncio.timeout(WAIT):
            await adding
    async with engine.store.read() as tx:
        texts = [m.text for m in (await tx.thread_history(thread.id))[0]]
    assert "Now?" not in texts


async def test_a_run_started_while_its_thread_is_deleted_is_refused_and_leaves_no_row(
    start_runtime: StartRuntime, database_url: str
) -> None:
    """A run requested while its thread's deletion commits: a 404, and no run left, active, in a
    thread that is gone."""
    engine = (await start_runtime()).engine
    assistant = await engine.create_assistant(OWNER, AssistantCreate(model="scripted-model"))
    thread = await engine.create_thread(OWNER, ThreadCreate())
    await engine.create_message(OWNER, thread.id, MessageCreate(role="user", content="Hello?"))

    async with engine.store.transaction() as deleting:
        assert await deleting.delete(Thread, thread.id, owner=OWNER)
        starting = asyncio.create_task(engine.create_run(OWNER, thread.id, RunCreate(assistant_id=assistant.id)))
        await until_blocked(database_url, 1)
    with pytest.raises(NotFoundError, match=f"No thread found with id '{thread.id}'"):
        async with asyncio.timeout(WAIT):
            await starting
    assert await rows_of_thread(engine, thread.id) == {"messages": 0, "runs": 0, "run_steps": 0}


async def test_a_vector_store_marked_active_while_it_is_renamed_keeps_the_new_name(
    start_runtime: StartRuntime, database_url: str
) -> None:
    """Activity (a run starting with the store, files added) writes the store's row as a rename
    does: it waits for the rename's lock and writes on top of it, instead of putting the old name
    back from what it read before."""
    engine = (await start_runtime()).engine
    store = await engine.vector_stores.create(OWNER, VectorStoreCreate(name="old name"))
    async with engine.store.transaction() as renaming:  # what a rename holds and writes
        held = await renaming.get(VectorStore, store.id, owner=OWNER, lock=True)
        touching = asyncio.create_task(engine.vector_stores.touch(OWNER, [store.id]))
        await until_blocked(database_url, 1)
        await renaming.save(held.model_copy(update={"name": "new name"}))
    async with asyncio.timeout(WAIT):
        await touching
    stored = await engine.vector_stores.get(OWNER, store.id)
    assert stored.name == "new name"
    assert stored.last_active_at is not None and stored.last_active_at >= store.created_at
