"""Alembic migrations on both backends: blank upgrade, idempotence, downgrade/upgrade, schema match."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from assistants.exceptions import InvalidRequestError
from assistants.ids import new_id, now
from assistants.store import ListParams, MessageCounts, SqlStore
from assistants.store import schema as store_schema
from assistants.store.migrate import alembic_config, current_revision, upgrade
from assistants.types import Assistant, File, Message, TextContent, TextValue, Thread

HEAD = "0018"
OBJECT_TABLES = {"assistants", "threads", "messages", "runs", "run_steps", "files"}
VECTOR_STORE_TABLES = {"vector_stores", "vector_store_files", "vector_store_file_batches"}
SEARCH_VECTOR_TABLES = {"search_vectors", "search_generations"}
ALL_TABLES = (
    OBJECT_TABLES
    | VECTOR_STORE_TABLES
    | {"users", "api_keys", "search_chunks", "run_events", "login_failures", "deleted_cursors"}
    | SEARCH_VECTOR_TABLES
)
# SQLite lists the FTS5 table of migration 0004 and its shadow tables among the tables.
SQLITE_FTS_TABLES = {store_schema.SEARCH_FTS_TABLE} | store_schema.SEARCH_FTS_SHADOW_TABLES


def all_tables(store: SqlStore) -> set[str]:
    """Every table a migrated database lists, including each dialect's full-text machinery."""
    extra = SQLITE_FTS_TABLES if store.engine.dialect.name == "sqlite" else set(store_schema.SEARCH_POSTGRES_TABLES)
    return ALL_TABLES | extra | {"alembic_version"}


async def table_names(store: SqlStore) -> set[str]:
    async with store.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def index_names(store: SqlStore, table: str) -> set[str]:
    async with store.engine.connect() as conn:
        indexes = await conn.run_sync(lambda c: sa.inspect(c).get_indexes(table))
    return {ix["name"] for ix in indexes}


async def downgrade_to(store: SqlStore, revision: str = "base") -> None:
    def run(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), revision)

    async with store.engine.begin() as conn:
        await conn.run_sync(run)


async def schema_differences(store: SqlStore) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                # The full-text machinery is dialect-specific SQL outside the metadata; the tests
                # of migration 0004 check it directly.
                "include_name": lambda name, type_, _parents: not store_schema.outside_metadata(name, type_),
            },
        )
        return list(compare_metadata(context, store_schema.metadata))

    async with store.engine.connect() as conn:
        return await conn.run_sync(compare)


async def write_and_read_back(store: SqlStore) -> None:
    """The migrated schema is usable by the store: an insert and a read succeed."""
    assistant = Assistant(id=new_id("assistant"), created_at=1, model="m", name="check")
    async with store.transaction() as tx:
        await tx.insert(assistant, owner="user_1")
        await tx.insert_user("user_1", "alice", None, 1)
    async with store.read() as tx:
        assert await tx.get(Assistant, assistant.id, owner="user_1") == assistant
        assert await tx.count_users() == 1


async def test_upgrade_on_blank_database_creates_all_tables(store_url: str) -> None:
    store = SqlStore.from_url(store_url)
    try:
        assert await table_names(store) == set()
        assert await current_revision(store.engine) is None

        await upgrade(store.engine)

        tables = await table_names(store)
        assert tables == all_tables(store)
        assert await current_revision(store.engine) == HEAD
        assert "uq_runs_one_active_per_thread" in await index_names(store, "runs")
        assert "ix_messages_thread_seq" in await index_names(store, "messages")
        assert "ix_run_steps_run_seq" in await index_names(store, "run_steps")
        await write_and_read_back(store)
    finally:
        await store.close()


async def test_upgrade_twice_is_a_no_op(store_url: str) -> None:
    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine)
        thread = Thread(id=new_id("thread"), created_at=1, metadata={"keep": "me"})
        async with store.transaction() as tx:
            await tx.insert(thread, owner="user_1")

        await upgrade(store.engine)

        assert await current_revision(store.engine) == HEAD
        assert await table_names(store) == all_tables(store)
        async with store.read() as tx:
            assert await tx.get(Thread, thread.id, owner="user_1") == thread
        async with store.engine.connect() as conn:
            versions = (
                await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            ).all()
        assert [row[0] for row in versions] == [HEAD]
    finally:
        await store.close()


async def test_downgrade_to_base_then_upgrade_again(store_url: str) -> None:
    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine)
        await write_and_read_back(store)

        await downgrade_to(store)
        assert await current_revision(store.engine) is None
        # Only Alembic's own (now empty) bookkeeping table is left.
        assert await table_names(store) <= {"alembic_version"}

        # Upgrading on the previous schema's leftovers builds everything afresh.
        await upgrade(store.engine)
        assert await current_revision(store.engine) == HEAD
        assert await table_names(store) == all_tables(store)
        assert "uq_runs_one_active_per_thread" in await index_names(store, "runs")
        async with store.read() as tx:
            assert await tx.count_users() == 0  # The old rows went with the old tables.
        await write_and_read_back(store)
        assert await schema_differences(store) == []
    finally:
        await store.close()


async def test_migrated_schema_matches_the_models(store_url: str) -> None:
    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine)
        # Nothing is ignored: any difference (a table, column, type, nullability, index or unique
        # constraint that the migration and `schema.py` disagree on) fails the test.
        assert await schema_differences(store) == []
    finally:
        await store.close()


async def test_schema_comparison_detects_drift(store_url: str) -> None:
    """The comparison above can fail: a schema missing an index and a column is reported."""
    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine)
        async with store.engine.begin() as conn:
            await conn.execute(sa.text("DROP INDEX ix_run_steps_run_seq"))
            await conn.execute(sa.text("DROP TABLE api_keys"))
        diffs = await schema_differences(store)
        kinds = {(d[0], getattr(d[1], "name", None)) for d in diffs if isinstance(d, tuple)}
        assert ("add_index", "ix_run_steps_run_seq") in kinds
        assert ("add_table", "api_keys") in kinds
    finally:
        await store.close()


async def test_one_active_run_index_is_partial(store_url: str) -> None:
    """`compare_metadata` does not compare index predicates, so check this one directly.

    Without its `WHERE active` the index would allow one run per thread in total, not one
    *active* run; a finished run must not block the next.
    """
    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine)
        if store_url.startswith("sqlite"):
            query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'uq_runs_one_active_per_thread'"
        else:
            query = (
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_runs_one_active_per_thread'"
            )
        async with store.engine.connect() as conn:
            definition = (await conn.execute(sa.text(query))).scalar_one()
        normalized = " ".join(definition.upper().replace("(", " ").replace(")", " ").split())
        assert "UNIQUE INDEX" in normalized
        assert normalized.endswith("WHERE ACTIVE")
    finally:
        await store.close()


async def test_upgrade_from_the_previous_schema_keeps_sessions_findable(store_url: str) -> None:
    """0001 -> 0002 on a database with data: sessions made before keep working, by UI id too."""
    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0001")
        assert await current_revision(store.engine) == "0001"
        session = Thread(id=new_id("thread"), created_at=1, metadata={"user": "user_1", "ui_thread": "ui-123"})
        plain = Thread(id=new_id("thread"), created_at=2)
        threads_0001 = sa.table(
            "threads",
            sa.column("id", sa.String),
            sa.column("owner_id", sa.String),
            sa.column("created_at", sa.BigInteger),
            sa.column("data", sa.JSON),
        )
        async with store.engine.begin() as conn:
            for thread in (session, plain):
                await conn.execute(
                    threads_0001.insert().values(
                        id=thread.id, owner_id="user_1", created_at=thread.created_at, data=thread.model_dump(mode="json")
                    )
                )
        await upgrade(store.engine)
        assert await current_revision(store.engine) == HEAD
        async with store.read() as tx:
            found = await tx.thread_by_ui_id("ui-123")
            assert found is not None and found[0] == "user_1" and found[1].id == session.id
            assert await tx.get(Thread, plain.id, owner="user_1") == plain
        assert await schema_differences(store) == []
    finally:
        await store.close()


async def search_machinery(store: SqlStore) -> set[str]:
    """The names of the dialect-specific full-text objects present in the database (0004, 0015)."""
    async with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE name LIKE 'search_chunks_fts%'"
        else:
            query = (
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'search_chunks' AND column_name = 'tsv'"
                " UNION SELECT indexname FROM pg_indexes WHERE indexname = 'ix_search_chunks_tsv'"
                " UNION SELECT table_name FROM information_schema.tables"
                " WHERE table_name IN ('search_postings', 'search_file_lengths')"
            )
        return {str(row[0]) for row in (await conn.execute(sa.text(query))).all()}


SQLITE_MACHINERY = SQLITE_FTS_TABLES | {
    store_schema.SEARCH_FTS_CONTENT_VIEW,
    # Migration 0011 took the insert and delete triggers out: `SqlChunkIndex` writes the index.
    "search_chunks_fts_update",
}
# Migration 0015 replaced 0004's generated `tsv` column and its GIN index with posting tables.
POSTGRES_MACHINERY = set(store_schema.SEARCH_POSTGRES_TABLES)
POSTGRES_MACHINERY_0004 = {"tsv", "ix_search_chunks_tsv"}


async def insert_chunk(store: SqlStore, text: str) -> None:
    """A chunk written as an older schema (0004, unchanged since) holds it, without today's index code."""
    from assistants.search.index import new_chunk_id

    async with store.transaction() as tx:
        await tx.conn.execute(
            store_schema.search_chunks.insert(),
            {"id": new_chunk_id(), "owner_id": "user_1", "vector_store_id": "vs_1", "file_id": "file-1",
             "chunk_index": 0, "text": text, "char_start": 0, "char_end": len(text), "tokens": 4},
        )


async def test_upgrade_from_0003_adds_a_working_chunk_index(store_url: str) -> None:
    """0003 -> 0004 on a database with data: old objects stay, and chunks are searchable at once."""
    from assistants.search.index import ChunkRow, SqlChunkIndex

    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0003")
        await write_and_read_back(store)
        assert "search_chunks" not in await table_names(store)
        assert await search_machinery(store) == set()

        await upgrade(store.engine)

        assert await current_revision(store.engine) == HEAD
        sqlite = store.engine.dialect.name == "sqlite"
        assert await search_machinery(store) == (SQLITE_MACHINERY if sqlite else POSTGRES_MACHINERY)
        assert "uq_search_chunks_store_file_index" in await index_names(store, "search_chunks")
        async with store.read() as tx:
            assert await tx.count_users() == 1
        index = SqlChunkIndex(store)
        await index.add("user_1", "vs_1", "file-1", [ChunkRow(index=0, text="Migrated kettles boil.", start=0, end=22, tokens=4)])
        [hit] = await index.search("user_1", ["vs_1"], "kettle")
        assert hit.text == "Migrated kettles boil."
        # The index follows deletes: the triggers (SQLite) or the generated column (PostgreSQL) work.
        assert await index.remove_file("vs_1", "file-1") == 1
        assert await index.search("user_1", ["vs_1"], "kettle") == []
        assert await schema_differences(store) == []
    finally:
        await store.close()


async def test_downgrade_from_0004_removes_the_chunk_index_cleanly(store_url: str) -> None:
    """0004 -> 0003 drops the table with its FTS5 table and triggers or its tsv column and GIN index."""
    from assistants.search.index import ChunkRow, SqlChunkIndex

    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine)
        await SqlChunkIndex(store).add("user_1", "vs_1", "file-1", [ChunkRow(index=0, text="x y", start=0, end=3, tokens=2)])

        await downgrade_to(store, "0003")

        assert await current_revision(store.engine) == "0003"
        assert await search_machinery(store) == set()
        assert await table_names(store) == ALL_TABLES - {"search_chunks", "run_events", "login_failures", "deleted_cursors"} - SEARCH_VECTOR_TABLES - VECTOR_STORE_TABLES | {"alembic_version"}
        # And back up again: the full-text objects are recreated without leftovers in the way.
        await upgrade(store.engine)
        assert await search_machinery(store) != set()
    finally:
        await store.close()


async def test_upgrade_from_0004_adds_vector_stores_and_keeps_chunks(store_url: str) -> None:
    """0004 -> 0005 on a database with data: old objects and chunks stay, vector stores work at once."""
    from assistants.search.index import SqlChunkIndex
    from assistants.types import VectorStore, VectorStoreFile

    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0004")
        await write_and_read_back(store)
        await insert_chunk(store, "Old kettles boil.")
        assert not VECTOR_STORE_TABLES & await table_names(store)

        await upgrade(store.engine)

        assert await current_revision(store.engine) == HEAD
        assert "uq_vector_store_files_store_file" in await index_names(store, "vector_store_files")
        assert [hit.text for hit in await SqlChunkIndex(store).search("user_1", ["vs_1"], "kettle")] == ["Old kettles boil."]
        vector_store = VectorStore(id=new_id("vector_store"), created_at=1, name="docs")
        entry = VectorStoreFile(id="file-1", created_at=1, vector_store_id=vector_store.id, status="completed", usage_bytes=17)
        async with store.transaction() as tx:
            await tx.insert(vector_store, owner="user_1")
            await tx.insert(entry, owner="user_1")
        async with store.read() as tx:
            assert await tx.get(VectorStore, vector_store.id, owner="user_1") == vector_store
            assert await tx.vector_store_file(vector_store.id, "file-1", owner="user_1") == entry
            counts, usage = (await tx.file_counts("vector_store_id", [vector_store.id]))[vector_store.id]
        assert (counts.completed, counts.total, usage) == (1, 1, 17)
        assert await schema_differences(store) == []
    finally:
        await store.close()


async def test_downgrade_from_0005_leaves_0004_intact(store_url: str) -> None:
    """0005 -> 0004 drops only the vector store tables; the chunk index keeps working."""
    from assistants.search.index import ChunkRow, SqlChunkIndex

    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine)
        await SqlChunkIndex(store).add("user_1", "vs_1", "file-1", [ChunkRow(index=0, text="x kettle", start=0, end=8, tokens=2)])

        await downgrade_to(store, "0004")

        assert await current_revision(store.engine) == "0004"
        assert await table_names(store) == (
            all_tables(store) - VECTOR_STORE_TABLES - SEARCH_VECTOR_TABLES - {"run_events", "login_failures", "deleted_cursors"}
            - store_schema.SEARCH_POSTGRES_TABLES
        )
        # The chunks survive; searching needs head's FTS5 layout (0008), which the upgrade rebuilds.
        assert await SqlChunkIndex(store).count("vs_1") == 1
        await upgrade(store.engine)
        assert await current_revision(store.engine) == HEAD
        assert len(await SqlChunkIndex(store).search("user_1", ["vs_1"], "kettle")) == 1
    finally:
        await store.close()


async def test_upgrade_from_0005_adds_chunk_vectors_and_downgrade_removes_only_them(store_url: str) -> None:
    """0005 -> 0006 keeps chunks searchable and adds the vector tables; 0006 -> 0005 drops only them."""
    from assistants.search.index import SqlChunkIndex

    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0005")
        await insert_chunk(store, "Old kettles boil.")
        assert not SEARCH_VECTOR_TABLES & await table_names(store)

        await upgrade(store.engine)

        assert await current_revision(store.engine) == HEAD
        assert "ix_search_vectors_store_model" in await index_names(store, "search_vectors")
        assert [hit.text for hit in await SqlChunkIndex(store).search("user_1", ["vs_1"], "kettle")] == ["Old kettles boil."]
        assert await schema_differences(store) == []

        await downgrade_to(store, "0005")
        assert await current_revision(store.engine) == "0005"
        assert await table_names(store) == (
            all_tables(store) - SEARCH_VECTOR_TABLES - {"run_events", "login_failures", "deleted_cursors"} - store_schema.SEARCH_POSTGRES_TABLES
        )
        await upgrade(store.engine)
        assert await current_revision(store.engine) == HEAD
    finally:
        await store.close()


async def test_upgrade_from_0006_indexes_active_runs_by_owner_and_downgrade_removes_it(store_url: str) -> None:
    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0006")
        await write_and_read_back(store)
        assert "ix_runs_active_owner" not in await index_names(store, "runs")

        await upgrade(store.engine)

        assert "ix_runs_active_owner" in await index_names(store, "runs")
        async with store.read() as tx:
            assert await tx.count_active_runs("user_1") == 0
        assert await schema_differences(store) == []

        await downgrade_to(store, "0006")
        assert "ix_runs_active_owner" not in await index_names(store, "runs")
    finally:
        await store.close()


async def test_upgrade_from_0007_scopes_the_full_text_index_and_keeps_chunks_searchable(store_url: str) -> None:
    """0007 -> 0008 rebuilds SQLite's FTS5 index with a scope token per chunk; chunks stay found."""
    from assistants.search.index import SqlChunkIndex

    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0007")
        await insert_chunk(store, "Old kettles boil.")

        await upgrade(store.engine)

        index = SqlChunkIndex(store)
        assert [hit.text for hit in await index.search("user_1", ["vs_1"], "kettle")] == ["Old kettles boil."]
        # Scoped: another owner, or another store, finds nothing.
        assert await index.search("user_2", ["vs_1"], "kettle") == []
        assert await index.search("user_1", ["vs_2"], "kettle") == []
        sqlite = store.engine.dialect.name == "sqlite"
        assert await search_machinery(store) == (SQLITE_MACHINERY if sqlite else POSTGRES_MACHINERY)
        assert await schema_differences(store) == []

        await downgrade_to(store, "0007")
        assert await current_revision(store.engine) == "0007"
        assert await SqlChunkIndex(store).count("vs_1") == 1
        await upgrade(store.engine)
        assert [hit.text for hit in await SqlChunkIndex(store).search("user_1", ["vs_1"], "kettle")] == ["Old kettles boil."]
    finally:
        await store.close()


async def test_upgrade_from_0008_adds_the_run_event_log_and_downgrade_removes_only_it(store_url: str) -> None:
    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0008")
        await write_and_read_back(store)
        assert "run_events" not in await table_names(store)

        await upgrade(store.engine)

        assert {"ix_run_events_assistant_seq", "ix_run_events_created_at"} <= await index_names(store, "run_events")
        assert await schema_differences(store) == []

        await downgrade_to(store, "0008")
        assert await table_names(store) == all_tables(store) - {"run_events", "login_failures", "deleted_cursors"} - store_schema.SEARCH_POSTGRES_TABLES
    finally:
        await store.close()


async def test_upgrade_from_0009_adds_run_leases_and_downgrade_removes_them(store_url: str) -> None:
    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0009")
        await write_and_read_back(store)

        await upgrade(store.engine)

        async with store.read() as tx:
            assert await tx.abandoned_runs() == []
        assert await schema_differences(store) == []

        await downgrade_to(store, "0009")
        async with store.engine.connect() as conn:
            columns = await conn.run_sync(lambda c: {col["name"] for col in sa.inspect(c).get_columns("runs")})
        assert not {"worker_id", "lease_until"} & columns
        # The partial unique index (one active run per thread) is still there.
        assert "uq_runs_one_active_per_thread" in await index_names(store, "runs")
    finally:
        await store.close()


async def test_upgrade_from_0010_keeps_the_index_whole_and_downgrade_brings_the_triggers_back(store_url: str) -> None:
    """0010 -> 0011: chunks indexed by the old triggers stay found, and new ones are indexed and removed."""
    from assistants.search.index import ChunkRow, SqlChunkIndex

    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0010")
        await insert_chunk(store, "Old kettles boil.")

        await upgrade(store.engine)

        index = SqlChunkIndex(store)
        assert [hit.text for hit in await index.search("user_1", ["vs_1"], "kettle")] == ["Old kettles boil."]
        await index.add("user_1", "vs_1", "file-2", [ChunkRow(index=0, text="New kettles whistle.", start=0, end=20, tokens=4)])
        assert sorted(hit.text for hit in await index.search("user_1", ["vs_1"], "kettle")) == ["New kettles whistle.", "Old kettles boil."]
        assert await index.remove_file("vs_1", "file-1") == 1
        assert [hit.text for hit in await index.search("user_1", ["vs_1"], "kettle")] == ["New kettles whistle."]
        sqlite = store.engine.dialect.name == "sqlite"
        if sqlite:
            # The FTS5 index holds exactly the chunks' rows: FTS5's own integrity check compares
            # it with its content and fails on an entry left behind or missing.
            async with store.transaction() as tx:
                await tx.conn.execute(sa.text("INSERT INTO search_chunks_fts(search_chunks_fts, rank) VALUES ('integrity-check', 1)"))
                indexed = (await tx.conn.execute(sa.text("SELECT count(*) FROM search_chunks_fts WHERE search_chunks_fts MATCH 'kettl*'"))).scalar_one()
            assert indexed == 1
        assert await search_machinery(store) == (SQLITE_MACHINERY if sqlite else POSTGRES_MACHINERY)

        await downgrade_to(store, "0010")
        if sqlite:
            assert {"search_chunks_fts_insert", "search_chunks_fts_delete"} <= await search_machinery(store)
        await upgrade(store.engine)
        assert [hit.text for hit in await SqlChunkIndex(store).search("user_1", ["vs_1"], "kettle")] == ["New kettles whistle."]
    finally:
        await store.close()


async def test_upgrade_from_0011_stops_chat_sessions_own_stores_from_expiring(store_url: str) -> None:
    """Stores made for a session's attachments before expiry was enforced lose their 7-day policy."""
    from assistants.types import Session, VectorStore
    from assistants.types.objects import ExpiresAfter

    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0011")
        session = Session(id=new_id("thread"), created_at=1, user="user_1", assistant_id="asst_1", title="Chat")
        plain = Thread(id=new_id("thread"), created_at=1)
        week = ExpiresAfter(anchor="last_active_at", days=7)
        stores = {
            "session": VectorStore(id=new_id("vector_store"), created_at=1, name=f"Files of {session.id}", expires_after=week, expires_at=10),
            "chosen": VectorStore(id=new_id("vector_store"), created_at=1, name="Team docs", expires_after=week, expires_at=10),
            "plain": VectorStore(id=new_id("vector_store"), created_at=1, name=f"Files of {plain.id}", expires_after=week, expires_at=10),
        }
        session = session.model_copy(update={"tool_resources": {"file_search": {"vector_store_ids": [stores["session"].id, stores["chosen"].id]}}})
        plain = plain.model_copy(update={"tool_resources": {"file_search": {"vector_store_ids": [stores["plain"].id]}}})
        async with store.transaction() as tx:
            await tx.insert(session, owner="user_1")
            await tx.insert(plain, owner="user_1")
            for vector_store in stores.values():
                await tx.insert(vector_store, owner="user_1")

        await upgrade(store.engine)

        async with store.read() as tx:
            after = {name: await tx.get(VectorStore, s.id, owner="user_1") for name, s in stores.items()}
        assert (after["session"].expires_after, after["session"].expires_at) == (None, None)
        # A store the user chose, and another thread's own store, keep their policy.
        assert after["chosen"].expires_after == week and after["plain"].expires_after == week
    finally:
        await store.close()


async def test_upgrade_from_0012_adds_sign_in_counts_and_file_expiry_and_keeps_files(store_url: str) -> None:
    """0012 -> 0014 with a file stored: it keeps its row (no expiry), sign-in failures get their
    table; down again to 0012 removes both and keeps the file."""
    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0012")
        file = File(id=new_id("file"), bytes=3, created_at=5, filename="old.txt", purpose="assistants")
        files_0012 = sa.table(
            "files",
            sa.column("id", sa.String),
            sa.column("owner_id", sa.String),
            sa.column("created_at", sa.BigInteger),
            sa.column("data", sa.JSON),
            sa.column("path", sa.String),
        )
        async with store.engine.begin() as conn:
            await conn.execute(
                files_0012.insert().values(
                    id=file.id, owner_id="user_1", created_at=5, data=file.model_dump(mode="json", exclude_none=True), path="x"
                )
            )
        await upgrade(store.engine)
        assert await current_revision(store.engine) == HEAD
        assert "login_failures" in await table_names(store)
        async with store.transaction() as tx:
            assert await tx.get(File, file.id, owner="user_1") == file
            assert await tx.expired_files(10**12) == []
            [seq] = await tx.add_login_failures(["name:old"], 1_000)
            assert await tx.recent_login_failures("name:old", since_ms=0, limit=5, besides=0) == [1_000] and seq > 0
        assert await schema_differences(store) == []

        await downgrade_to(store, "0012")
        assert "login_failures" not in await table_names(store)
        async with store.engine.connect() as conn:
            columns = await conn.run_sync(lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("files")})
            assert "expires_at" not in columns
            assert (await conn.execute(sa.select(files_0012.c.id))).scalars().all() == [file.id]
    finally:
        await store.close()


async def test_upgrade_from_0014_counts_indexed_chunks_into_posting_lists(store_url: str) -> None:
    """0014 -> 0015 on PostgreSQL: chunks indexed before are counted in (per owner, store and file),
    rank as new ones do, and leave with their file; the downgrade brings `tsv` back. SQLite: no change."""
    from assistants.search.index import ChunkRow, SqlChunkIndex, new_chunk_id

    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0014")
        old = [
            ("user_1", "vs_1", "file-1", 0, "Kettles boil water. A kettle whistles when the water boils."),
            ("user_1", "vs_1", "file-1", 1, "Teapots keep tea warm."),
            ("user_1", "vs_1", "file-2", 0, "Café kettles in Paris."),
            ("user_2", "vs_1", "file-3", 0, "Another owner's kettle."),
        ]
        async with store.transaction() as tx:
            await tx.conn.execute(
                store_schema.search_chunks.insert(),
                [{"id": new_chunk_id(), "owner_id": owner, "vector_store_id": vs, "file_id": file, "chunk_index": i,
                  "text": text, "char_start": 0, "char_end": len(text), "tokens": 4} for owner, vs, file, i, text in old],
            )

        await upgrade(store.engine)

        if store.engine.dialect.name == "sqlite":
            # Nothing to do on SQLite (and chunks written without the index code are not in FTS5).
            assert await search_machinery(store) == SQLITE_MACHINERY
            assert await schema_differences(store) == []
            return
        assert await search_machinery(store) == POSTGRES_MACHINERY
        index = SqlChunkIndex(store)
        found = await index.search("user_1", ["vs_1"], "kettles boiling")
        # Only user_1's chunks, the one holding both words (twice) first; "cafe" finds "Café".
        assert [hit.text for hit in found] == [old[0][4], old[2][4]]
        assert [hit.file_id for hit in await index.search("user_1", ["vs_1"], "cafe")] == ["file-2"]
        assert [hit.text for hit in await index.search("user_2", ["vs_1"], "kettle")] == [old[3][4]]
        # A chunk added now ranks on the same scale as the counted-in ones.
        await index.add("user_1", "vs_1", "file-4", [ChunkRow(index=0, text=old[0][4], start=0, end=10, tokens=4)])
        again = await index.search("user_1", ["vs_1"], "kettles boiling")
        assert [hit.file_id for hit in again[:2]] == ["file-1", "file-4"] and again[0].score == again[1].score
        assert await index.remove_file("vs_1", "file-1") == 2
        assert [hit.file_id for hit in await index.search("user_1", ["vs_1"], "kettle teapot")] == ["file-4", "file-2"]
        async with store.read() as tx:
            left = (await tx.conn.execute(sa.text("SELECT DISTINCT file_id FROM search_postings ORDER BY file_id"))).scalars().all()
        assert left == ["file-2", "file-3", "file-4"]

        await downgrade_to(store, "0014")
        assert await search_machinery(store) == POSTGRES_MACHINERY_0004
        async with store.read() as tx:
            matched = (await tx.conn.execute(sa.text(
                "SELECT file_id FROM search_chunks WHERE tsv @@ to_tsquery('english', 'kettle') ORDER BY file_id"
            ))).scalars().all()
        assert matched == ["file-2", "file-3", "file-4"]  # 0004's column, computed again from the text.
        await upgrade(store.engine)
        assert {hit.file_id for hit in await SqlChunkIndex(store).search("user_1", ["vs_1"], "kettle")} == {"file-2", "file-4"}
        assert await schema_differences(store) == []
    finally:
        await store.close()


async def test_upgrade_from_0015_counts_each_threads_messages_and_downgrade_removes_the_counts(store_url: str) -> None:
    """0015 -> 0016: threads stored before get their message counts (none lost, as far as anything
    remembers); the store keeps counting from there. Down again: the columns go, messages stay."""
    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0015")
        def columns() -> list[sa.ColumnClause[Any]]:
            return [sa.column("id", sa.String), sa.column("owner_id", sa.String), sa.column("created_at", sa.BigInteger), sa.column("data", sa.JSON)]

        threads_0015 = sa.table("threads", *columns())
        messages_0015 = sa.table("messages", *columns(), sa.column("thread_id", sa.String))
        busy, empty = (Thread(id=new_id("thread"), created_at=1) for _ in range(2))
        async with store.engine.begin() as conn:
            for thread in (busy, empty):
                await conn.execute(threads_0015.insert().values(id=thread.id, owner_id="user_1", created_at=1, data=thread.model_dump(mode="json")))
            for index in range(3):
                message = Message(id=new_id("message"), created_at=1, thread_id=busy.id, role="user",
                                  content=[TextContent(text=TextValue(value=f"m{index}"))], attachments=[])
                await conn.execute(messages_0015.insert().values(
                    id=message.id, owner_id="user_1", created_at=1, data=message.model_dump(mode="json"), thread_id=busy.id))

        await upgrade(store.engine)

        assert await schema_differences(store) == []
        async with store.read() as tx:
            assert await tx.count_messages(busy.id) == 3 and await tx.count_messages(empty.id) == 0
            counts, rows = await tx.messages_counted(busy.id, after=None, limit=10)
            assert counts == MessageCounts(3, 0) and [m.text for _, m in rows] == ["m2", "m1", "m0"]
        async with store.transaction() as tx:
            assert await tx.delete(Message, rows[0][1].id, owner="user_1")
        async with store.read() as tx:
            assert (await tx.messages_counted(busy.id, after=None, limit=10))[0] == MessageCounts(2, 1)

        await downgrade_to(store, "0015")
        async with store.engine.connect() as conn:
            names = await conn.run_sync(lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("threads")})
            assert not {"message_count", "messages_deleted"} & names
            assert len((await conn.execute(sa.select(messages_0015.c.id))).all()) == 2
            # The threads table keeps its constraints (SQLite rebuilds it to drop the columns).
            assert sorted(await conn.run_sync(lambda sync: [c["column_names"] for c in sa.inspect(sync).get_unique_constraints("threads")])) == [["id"], ["ui_id"]]
            assert "ix_threads_owner_id" in await conn.run_sync(lambda sync: {i["name"] for i in sa.inspect(sync).get_indexes("threads")})
    finally:
        await store.close()


async def test_upgrade_from_0016_remembers_where_deleted_objects_stood_and_downgrade_removes_it(store_url: str) -> None:
    """0016 -> 0017: an object deleted by id keeps its place in its lists for a day, so a page
    cursor naming it still places the next page; forgotten after that. Down again: the table goes."""
    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0016")
        await upgrade(store.engine)
        assert await schema_differences(store) == []
        assistants = [Assistant(id=new_id("assistant"), created_at=1, model="m") for _ in range(4)]
        async with store.transaction() as tx:
            for assistant in assistants:
                await tx.insert(assistant, owner="user_1")
        async with store.transaction() as tx:
            assert await tx.delete(Assistant, assistants[1].id, owner="user_1")
            assert not await tx.delete(Assistant, assistants[2].id, owner="user_2")  # not theirs: kept
        async with store.read() as tx:
            after = await tx.list(Assistant, owner="user_1", params=ListParams(order="asc", after=assistants[1].id))
            assert [a.id for a in after.data] == [assistants[2].id, assistants[3].id]
            before = await tx.list(Assistant, owner="user_1", params=ListParams(order="asc", before=assistants[1].id))
            assert [a.id for a in before.data] == [assistants[0].id]
            with pytest.raises(InvalidRequestError, match="Invalid 'after'"):  # another user's deleted place
                await tx.list(Assistant, owner="user_2", params=ListParams(after=assistants[1].id))
        async with store.transaction() as tx:
            await tx.forget_deleted_places(now() + 1)
        async with store.read() as tx:
            with pytest.raises(InvalidRequestError, match="Invalid 'after'"):
                await tx.list(Assistant, owner="user_1", params=ListParams(after=assistants[1].id))

        await downgrade_to(store, "0016")
        async with store.engine.connect() as conn:
            assert "deleted_cursors" not in await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    finally:
        await store.close()


async def test_upgrade_from_0017_counts_ingestion_starts_and_downgrade_removes_the_count(store_url: str) -> None:
    """0017 -> 0018: a file left `in_progress` before starts counting its ingestion's starts at 0.
    Down again: the column goes, the file stays in its store."""
    from assistants.types import VectorStore, VectorStoreFile

    store = SqlStore.from_url(store_url)
    try:
        await upgrade(store.engine, "0017")
        vector_store = VectorStore(id=new_id("vector_store"), created_at=1, name="docs")
        pending = VectorStoreFile(id="file-1", created_at=1, vector_store_id=vector_store.id)
        done = VectorStoreFile(id="file-2", created_at=1, vector_store_id=vector_store.id, status="completed")
        async with store.transaction() as tx:
            await tx.insert(vector_store, owner="user_1")
            await tx.insert(pending, owner="user_1")
            await tx.insert(done, owner="user_1")

        await upgrade(store.engine)

        assert await schema_differences(store) == []
        async with store.transaction() as tx:
            assert [await tx.start_ingestion(vector_store.id, "file-1") for _ in range(2)] == [1, 2]
            # Only files still `in_progress` count a start.
            assert await tx.start_ingestion(vector_store.id, "file-2") is None
            assert await tx.start_ingestion(vector_store.id, "file-nope") is None
            assert await tx.vector_store_file(vector_store.id, "file-1", owner="user_1") == pending

        await downgrade_to(store, "0017")
        async with store.engine.connect() as conn:
            names = await conn.run_sync(lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("vector_store_files")})
            assert "ingest_attempts" not in names
            assert "uq_vector_store_files_store_file" in await conn.run_sync(
                lambda sync: {i["name"] for i in sa.inspect(sync).get_indexes("vector_store_files")}
            )
        async with store.read() as tx:
            assert await tx.vector_store_file(vector_store.id, "file-1", owner="user_1") == pending
    finally:
        await store.close()
