"""SQLite through aiosqlite, one trip to the connection's thread per statement.

aiosqlite runs every call on the connection's own thread, and SQLAlchemy's adapter makes four
calls per query (open a cursor, execute, fetch the rows, close the cursor) and two per
transaction (the commit, then the pool's rollback when the connection goes back). Each trip wakes
that thread and then the event loop: on a busy machine a trip costs more than a small statement
(30-80 µs, and a chance for the OS to switch the loop's thread out). A run made about 115 trips.

`OneTripConnection` runs a statement, reads all of its rows and closes its cursor in a single
trip, and skips a commit or rollback when SQLite has no transaction open (it would do nothing).
SQLAlchemy's adapter reads every row of a query at once anyway; a server-side cursor
(`stream_results`, not used here) gets its rows at once too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any

import aiosqlite
from aiosqlite.context import Result

_Description = tuple[tuple[str, None, None, None, None, None, None], ...]


class OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors do all their work in one trip per statement."""

    def cursor(self) -> Result[aiosqlite.Cursor]:
        return Result(self._new_cursor())

    async def _new_cursor(self) -> aiosqlite.Cursor:
        return OneTripCursor(self)

    async def commit(self) -> None:
        if self._connection is not None and self._connection.in_transaction:
            await super().commit()

    async def rollback(self) -> None:
        if self._connection is not None and self._connection.in_transaction:
            await super().rollback()

    async def run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """`work(sqlite3_connection)` on the connection's thread."""
        # aiosqlite's own way onto its thread (untyped in aiosqlite).
        return await self._execute(lambda: work(self._conn))  # type: ignore[no-untyped-call]


class OneTripCursor(aiosqlite.Cursor):
    """A cursor that executes, fetches every row and closes in the same trip.

    Its rows, `description`, `rowcount` and `lastrowid` are kept from that trip, so reading them
    needs no further trip.
    """

    def __init__(self, connection: OneTripConnection) -> None:
        # No sqlite3 cursor stays open between trips, so the base class's is never made.
        self.iter_chunk_size = connection._iter_chunk_size
        self._conn = connection
        self._connection = connection
        self._rows: list[Any] = []
        self._description: _Description | None = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    async def _trip(self, call: Callable[[sqlite3.Connection], sqlite3.Cursor]) -> None:
        def work(connection: sqlite3.Connection) -> tuple[Any, int, int | None, list[Any]]:
            cursor = call(connection)
            try:
                rows = cursor.fetchall() if cursor.description else []
                return cursor.description, cursor.rowcount, cursor.lastrowid, rows
            finally:
                cursor.close()

        self._description, self._rowcount, self._lastrowid, self._rows = await self._connection.run(work)

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> aiosqlite.Cursor:
        values: Any = () if parameters is None else parameters
        await self._trip(lambda connection: connection.execute(sql, values))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> aiosqlite.Cursor:
        rows: Any = parameters
        await self._trip(lambda connection: connection.executemany(sql, rows))
        return self

    async def executescript(self, sql_script: str) -> aiosqlite.Cursor:
        await self._trip(lambda connection: connection.executescript(sql_script))
        return self

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        taken, self._rows = self._rows[:count], self._rows[count:]
        return taken

    async def fetchall(self) -> list[Any]:
        taken, self._rows = self._rows, []
        return taken

    async def close(self) -> None:
        self._rows = []

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._each()

    async def _each(self) -> AsyncIterator[Any]:
        while self._rows:
            yield self._rows.pop(0)

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    @property
    def description(self) -> _Description | None:  # type: ignore[override]
        return self._description

    @property
    def connection(self) -> sqlite3.Connection:
        return self._connection._conn


def connector(path: str, **options: Any) -> Callable[[], Awaitable[OneTripConnection]]:
    """An `async_creator` for `create_async_engine`: opens `path` as SQLAlchemy's own aiosqlite
    dialect would (`check_same_thread=False`), with `options` passed to `sqlite3.connect`."""

    async def connect() -> OneTripConnection:
        connection = OneTripConnection(partial(sqlite3.connect, path, check_same_thread=False, **options), 64)
        # As SQLAlchemy does for the connections it opens itself: never keep the process alive.
        connection._thread.daemon = True
        await connection
        return connection

    return connect


__all__: Sequence[str] = ["OneTripConnection", "OneTripCursor", "connector"]
