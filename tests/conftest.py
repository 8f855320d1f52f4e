"""Shared fixtures: real stores on SQLite and on the machine's PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from assistants.store import SqlStore
from assistants.store.migrate import upgrade

# Chainlit writes `.chainlit/` and `.files/` under its app root on import; keep them out of the repo.
os.environ.setdefault("CHAINLIT_APP_ROOT", str(Path(__file__).parent / ".chainlit-root"))

PG_ADMIN_DSN = os.environ.get("ASSISTANTS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def create_pg_database() -> str:
    """Create a fresh PostgreSQL database and return its SQLAlchemy asyncpg URL."""
    name = f"assistants_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def drop_pg_database(url: str) -> None:
    """Drop a database made by `create_pg_database`."""
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A blank database URL, once for SQLite and once for PostgreSQL (which must be running)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    """A migrated store on each backend."""
    store = SqlStore.from_url(store_url)
    await upgrade(store.engine)
    try:
        yield store
    finally:
        await store.close()
