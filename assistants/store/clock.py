"""The database's clock, for times that several server processes compare.

A run's lease is written by the process executing it and read by every other process's sweep,
which ends the run if the lease has run out. Stamped and compared on each process's own clock, a
process whose clock runs 20 s ahead of another's (no NTP on one host, a paused VM) would see
live leases as run out and end runs that are still answering. Stamped and compared with the
database's clock, every process reads the same time. On SQLite every process is on the machine
holding the file, so the database's clock is theirs.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class db_now(FunctionElement[int]):  # noqa: N801 - used like SQL's own functions
    """The database's current time in whole Unix seconds, read when the statement runs."""

    type = sa.BigInteger()
    inherit_cache = True
    name = "db_now"


@compiles(db_now, "postgresql")
def _postgresql(element: db_now, compiler: Any, **kw: Any) -> str:
    # clock_timestamp(), not now(): now() is when the transaction began.
    return "CAST(floor(extract(epoch FROM clock_timestamp())) AS BIGINT)"


@compiles(db_now)
def _sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    return "CAST(strftime('%s', 'now') AS INTEGER)"
