"""Runs across processes: the active run of a thread, per-user limits, leases, expiry and recovery."""

from __future__ import annotations

import builtins

import sqlalchemy as sa

from ..types import Run
from . import schema
from ._objects import ObjectsTx
from .clock import db_now

RUN_START_LOCK_SPACE = 0x72756E73
"""The first key of the per-owner advisory locks that run starts take turns on (PostgreSQL)."""


class RunsTx(ObjectsTx):
    """Run bookkeeping that several processes share."""

    async def active_run(self, thread_id: str) -> Run | None:
        """The thread's active run, if any (at most one, by a unique index)."""
        table = schema.runs
        row = (await self.conn.execute(sa.select(table.c.data).where(table.c.thread_id == thread_id, table.c.active))).first()
        return None if row is None else Run.model_validate(row[0])

    async def take_turns_starting_runs(self, owner: str) -> None:
        """Make this transaction wait for any other one starting a run for `owner` to end, so that
        counting the owner's active runs after inserting one sees every run started before.

        PostgreSQL: a transaction-scoped advisory lock per owner (taken again in the same
        transaction, it is held already); the count after it sees the runs committed meanwhile
        because transactions run at READ COMMITTED. SQLite needs none: its writes take turns on the
        database, and a write transaction reads what the writes before it left. That holds because
        Python's sqlite3 (legacy transaction control, as SQLAlchemy leaves it) opens the transaction
        at the first write, so no earlier read in it pins an older snapshot; an explicit `BEGIN`
        at the start would make simultaneous starts fail with SQLITE_BUSY_SNAPSHOT instead.
        """
        if self.conn.dialect.name == "postgresql":
            await self.conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:owner))"),
                {"space": RUN_START_LOCK_SPACE, "owner": owner},
            )

    async def count_active_runs(self, owner: str) -> int:
        """How many runs of the owner are active (queued, in progress, waiting for tools, cancelling)."""
        table = schema.runs
        query = sa.select(sa.func.count()).select_from(table).where(table.c.owner_id == owner, table.c.active)
        return int((await self.conn.execute(query)).scalar_one())

    async def expired_runs(self, now: int) -> builtins.list[tuple[str, Run]]:
        """Runs still waiting for tool outputs past their `expires_at`, with their owners."""
        table = schema.runs
        query = sa.select(table.c.owner_id, table.c.data).where(
            table.c.active, table.c.status == "requires_action", table.c.expires_at <= now
        )
        return [(str(row[0]), Run.model_validate(row[1])) for row in (await self.conn.execute(query)).all()]

    async def unfinished_runs(self) -> builtins.list[tuple[str, Run]]:
        """Runs that are active in the database, for recovery after a crash."""
        table = schema.runs
        query = sa.select(table.c.owner_id, table.c.data).where(table.c.active)
        return [(str(row[0]), Run.model_validate(row[1])) for row in (await self.conn.execute(query)).all()]

    async def lease_runs(self, run_ids: builtins.list[str], worker_id: str, seconds: int) -> None:
        """Claim (or renew the claim on) runs this process executes, for `seconds` from now on the
        database's clock."""
        if not run_ids:
            return
        table = schema.runs
        await self.conn.execute(
            table.update().where(table.c.id.in_(run_ids)).values(worker_id=worker_id, lease_until=lease_for(seconds))
        )

    async def held_run(self, thread_id: str, run_id: str, *, owner: str | None) -> Run | None:
        """The run as stored, its thread's row and then its own held until the commit (PostgreSQL),
        as every change of a run's status takes them; None when it does not exist (any more)."""
        await self.lock_thread(thread_id)
        return await self.find(Run, run_id, owner=owner, lock=True)

    async def run_lease(self, run_id: str, *, lock: bool = False) -> tuple[str | None, bool]:
        """`(worker_id, live)` of a run: the process that claimed it, and whether its lease still
        runs on the database's clock. `lock` holds its row until the transaction ends
        (PostgreSQL; SQLite transactions that write are serialized anyway)."""
        table = schema.runs
        live = sa.and_(table.c.lease_until.is_not(None), table.c.lease_until >= db_now())
        query = sa.select(table.c.worker_id, live.label("live")).where(table.c.id == run_id)
        if lock and self.conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        return (None, False) if row is None else (row.worker_id, bool(row.live))

    async def run_statuses(self, run_ids: builtins.list[str]) -> dict[str, str]:
        """The stored status of each of these runs."""
        if not run_ids:
            return {}
        table = schema.runs
        query = sa.select(table.c.id, table.c.status).where(table.c.id.in_(run_ids))
        return {str(row.id): str(row.status) for row in (await self.conn.execute(query)).all()}

    async def abandoned_runs(self) -> builtins.list[tuple[str, Run]]:
        """Runs still working (queued, in progress, cancelling) whose executing process's lease ran
        out on the database's clock, or that no process ever claimed: their process stopped."""
        table = schema.runs
        query = sa.select(table.c.owner_id, table.c.data).where(
            table.c.active,
            table.c.status.in_(("queued", "in_progress", "cancelling")),
            sa.or_(table.c.lease_until.is_(None), table.c.lease_until < db_now()),
        )
        return [(str(row[0]), Run.model_validate(row[1])) for row in (await self.conn.execute(query)).all()]


def lease_for(seconds: int) -> sa.ColumnElement[int]:
    """A run's `lease_until` for a lease of `seconds` from now, on the database's clock."""
    return db_now() + seconds
