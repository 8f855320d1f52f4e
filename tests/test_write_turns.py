"""Transactions of one process take turns on SQLite (instead of sleeping in SQLite's busy handler),
pass straight through when nested in the same task, and run side by side on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
import sqlalchemy as sa

from assistants.store import SqlStore, schema
from assistants.store.turns import TurnTimeout, WriteTurns


async def _holder_and_follower(store: SqlStore) -> tuple[bool, bool]:
    """Task A holds a transaction that has written; task B then opens one. Returns whether B got
    in while A still held its transaction, and whether B got in after A committed."""
    a_in, release, b_in = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def a() -> None:
        async with store.transaction() as tx:
            await tx.conn.execute(schema.api_keys.delete().where(schema.api_keys.c.key_hash == "nothing"))
            a_in.set()
            await release.wait()

    async def b() -> None:
        await a_in.wait()
        async with store.transaction() as tx:
            b_in.set()
            await tx.conn.execute(sa.text("SELECT 1"))

    tasks = [asyncio.create_task(a()), asyncio.create_task(b())]
    await a_in.wait()
    # Plenty of loop turns (and time for B's connection to open) for B to get in if it can.
    for _ in range(20):
        await asyncio.sleep(0.01)
    while_held = b_in.is_set()
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    return while_held, b_in.is_set()


async def test_transactions_of_one_process_take_turns_on_sqlite_only(store: SqlStore, store_url: str) -> None:
    while_held, after = await _holder_and_follower(store)
    if store_url.startswith("sqlite"):
        assert not while_held, "a second transaction started while the first still held SQLite"
    else:
        assert while_held, "PostgreSQL transactions should not wait for each other"
    assert after


async def test_a_transaction_opened_inside_another_in_the_same_task_goes_ahead(store: SqlStore) -> None:
    async def nested() -> int:
        async with store.transaction() as outer:
            await outer.conn.execute(sa.text("SELECT 1"))
            async with store.transaction() as inner:
                return int((await inner.conn.execute(sa.text("SELECT 41 + 1"))).scalar_one())

    assert await asyncio.wait_for(nested(), timeout=30) == 42


async def test_many_tasks_writing_at_once_all_commit(store: SqlStore) -> None:
    table = schema.login_failures

    async def write(i: int) -> None:
        async with store.transaction() as tx:
            await tx.add_login_failures([f"name:user{i}"], at_ms=i)

    await asyncio.wait_for(asyncio.gather(*(write(i) for i in range(60))), timeout=60)
    async with store.read() as tx:
        count = (await tx.conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
    assert count == 60


async def test_a_cancelled_waiter_leaves_the_turns_working(store: SqlStore, store_url: str) -> None:
    """A task cancelled while waiting for its turn neither takes nor blocks the next one."""
    a_in, release = asyncio.Event(), asyncio.Event()

    async def a() -> None:
        async with store.transaction() as tx:
            await tx.conn.execute(sa.text("SELECT 1"))
            a_in.set()
            await release.wait()

    async def waiter() -> None:
        async with store.transaction() as tx:
            await tx.conn.execute(sa.text("SELECT 1"))

    entered: list[str] = []

    async def recording_waiter() -> None:
        async with store.transaction() as tx:
            entered.append("waiter")
            await tx.conn.execute(sa.text("SELECT 1"))

    holder = asyncio.create_task(a())
    await a_in.wait()
    cancelled = asyncio.create_task(recording_waiter())
    await asyncio.sleep(0.05)
    cancelled.cancel()
    release.set()
    await asyncio.wait_for(holder, timeout=30)
    with contextlib.suppress(asyncio.CancelledError):
        await cancelled
    if store_url.startswith("sqlite"):
        # It was still waiting for its turn when it was cancelled: it never ran.
        assert cancelled.cancelled() and entered == []
    # The turn is free again.
    await asyncio.wait_for(waiter(), timeout=30)


async def test_a_holder_cancelled_or_failing_inside_its_turn_frees_it(store: SqlStore) -> None:
    inside = asyncio.Event()

    async def hold_forever() -> None:
        async with store.transaction() as tx:
            await tx.conn.execute(sa.text("SELECT 1"))
            inside.set()
            await asyncio.Event().wait()

    holder = asyncio.create_task(hold_forever())
    await inside.wait()
    holder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holder

    with pytest.raises(RuntimeError, match="boom"):
        async with store.transaction() as tx:
            await tx.conn.execute(sa.text("SELECT 1"))
            raise RuntimeError("boom")

    async with asyncio.timeout(30), store.transaction() as tx:
        assert (await tx.conn.execute(sa.text("SELECT 2"))).scalar_one() == 2


async def test_a_turn_not_given_in_time_fails_clearly_and_a_long_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    turns = WriteTurns(wait_seconds=0.2, slow_seconds=0.1)
    release = asyncio.Event()
    held = asyncio.Event()

    async def hold() -> None:
        async with turns.turn():
            held.set()
            await release.wait()

    holder = asyncio.create_task(hold(), name="slow-writer")
    await held.wait()
    with pytest.raises(TurnTimeout, match="slow-writer"):
        async with turns.turn():
            pass
    with caplog.at_level(logging.WARNING, logger="assistants.store.turns"):
        await asyncio.sleep(0.15)
        release.set()
        await holder
    assert any("held the SQLite database" in r.getMessage() and "slow-writer" in r.getMessage() for r in caplog.records)
    async with turns.turn():
        pass
