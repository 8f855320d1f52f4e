"""The SQL store: SQLAlchemy 2 async over SQLite (WAL) or PostgreSQL.

Every object belongs to an owner; every read takes the owner and a foreign id reads as missing.
Writes that must happen together run in one `transaction()`. Pagination is done in SQL: a page
query fetches `limit + 1` rows past a cursor's `seq`, never a whole list.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..exceptions import ConfigurationError
from . import sqlite_driver
from ._accounts import AccountsTx
from ._files import FilesTx
from ._objects import ACTIVE_RUN_STATUSES, ActiveRunConflict
from ._runs import RunsTx
from ._threads import ThreadsTx
from .turns import WriteTurns

__all__ = ["ACTIVE_RUN_STATUSES", "ActiveRunConflict", "SqlStore", "StoreTx"]


class StoreTx(ThreadsTx, RunsTx, FilesTx, AccountsTx):
    """Store operations on one connection; inside `transaction()` they commit or roll back together.

    The operations live by area: every kind's insert/save/find/get/delete/list in `_objects`,
    threads and history in `_threads`, runs in `_runs`, files and vector store files in `_files`,
    users, keys and sign-ins in `_accounts`.
    """


class SqlStore:
    """The store: opens connections and transactions. Every operation is a `StoreTx` method."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._write_turns = WriteTurns() if engine.dialect.name == "sqlite" else None

    @classmethod
    def from_url(cls, url: str) -> SqlStore:
        """Build the store for a SQLAlchemy async URL (SQLite files get WAL and a busy timeout)."""
        try:
            if url.startswith("sqlite"):
                database = sa.make_url(url).database
                if database and database != ":memory:" and not sa.make_url(url).query:
                    engine = create_async_engine(url, async_creator=sqlite_driver.connector(database, timeout=30))
                else:
                    engine = create_async_engine(url, connect_args={"timeout": 30})
                event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            elif url.startswith("postgresql"):
                if not url.startswith("postgresql+asyncpg"):
                    raise ConfigurationError(
                        "ASSISTANTS_DATABASE_URL must use the asyncpg driver: postgresql+asyncpg://user@host/db"
                    )
                engine = create_async_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)
            else:
                raise ConfigurationError(
                    f"ASSISTANTS_DATABASE_URL {url.split(':', 1)[0]!r} is not supported; "
                    "use sqlite+aiosqlite:///path or postgresql+asyncpg://..."
                )
        except sa.exc.ArgumentError as exc:
            raise ConfigurationError(f"ASSISTANTS_DATABASE_URL is not a valid URL: {exc}") from exc
        return cls(engine)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTx]:
        """A transaction: everything inside commits together or not at all.

        On SQLite the process's transactions take turns (see `turns.WriteTurns`)."""
        turn = self._write_turns.turn() if self._write_turns is not None else contextlib.nullcontext()
        async with turn, self.engine.begin() as conn:
            yield StoreTx(conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[StoreTx]:
        """A connection for reads."""
        async with self.engine.connect() as conn:
            yield StoreTx(conn)

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    dbapi_connection.create_function(
        "casefold", 1, lambda text: text.casefold() if isinstance(text, str) else text, deterministic=True
    )
