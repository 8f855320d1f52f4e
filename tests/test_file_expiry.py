"""Files uploaded with `expires_after` are deleted by the expiry sweep once their time has come:
their row, their bytes, and their chunks in file search; files without a policy are kept."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from assistants.exceptions import NotFoundError
from assistants.ids import now
from assistants.store import schema
from assistants.types.requests import FileExpiry, VectorStoreCreate, VectorStoreSearch
from tests.conftest import StartRuntime


async def test_an_expired_file_is_deleted_with_its_bytes_and_search_chunks(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime()
    engine = runtime.engine
    policy = FileExpiry(anchor="created_at", seconds=3600)
    lighthouse = VectorStoreSearch(query="lighthouse keeper")
    leaving = await engine.create_file(
        "user_ann", filename="leaving.txt", purpose="assistants", content=b"The lighthouse keeper feeds the gulls.",
        expires_after=policy,
    )
    later = await engine.create_file("user_ann", filename="later.txt", purpose="assistants", content=b"x", expires_after=policy)
    kept = await engine.create_file("user_ann", filename="kept.txt", purpose="assistants", content=b"kept")
    store = await engine.vector_stores.create("user_ann", VectorStoreCreate(name="Notes", file_ids=[leaving.id]))
    await engine.vector_stores.wait_for_ingestion([store.id])
    assert (await engine.vector_stores.search("user_ann", store.id, lighthouse))["data"]
    async with engine.store.read() as tx:
        stored = await tx.file_path(leaving.id, owner="user_ann")
    bytes_path = engine.files.locate(stored)
    assert bytes_path.exists()

    # An hour passes for one of them: its expiry time is moved into the past in the database.
    table = schema.files
    async with engine.store.transaction() as tx:
        await tx.conn.execute(table.update().where(table.c.id == leaving.id).values(expires_at=now() - 1))

    assert await engine.expire_files() == [leaving.id]
    with pytest.raises(NotFoundError):
        await engine.get_file("user_ann", leaving.id)
    assert not bytes_path.exists()
    assert (await engine.vector_stores.search("user_ann", store.id, lighthouse))["data"] == []
    # The others are untouched, and a second sweep finds nothing more.
    assert (await engine.get_file("user_ann", later.id)).expires_at == later.created_at + 3600
    assert (await engine.get_file("user_ann", kept.id)).expires_at is None
    assert await engine.expire_files() == []


async def test_the_running_sweep_deletes_due_files_by_itself(start_runtime: StartRuntime) -> None:
    engine = (await start_runtime()).engine
    file = await engine.create_file(
        "user_bo", filename="brief.txt", purpose="assistants", content=b"brief",
        expires_after=FileExpiry(anchor="created_at", seconds=3600),
    )
    table = schema.files
    async with engine.store.transaction() as tx:
        await tx.conn.execute(table.update().where(table.c.id == file.id).values(expires_at=now() - 1))
    async with asyncio.timeout(30):
        while True:
            async with engine.store.read() as tx:
                left = (await tx.conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.id == file.id))).scalar_one()
            if left == 0:
                break
            await asyncio.sleep(0.2)
