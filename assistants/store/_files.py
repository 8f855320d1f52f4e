"""Files and vector store files: expiry, lookups by id, stored paths, ingestion status and counts."""

from __future__ import annotations

import builtins
from typing import Any

import sqlalchemy as sa

from ..exceptions import NotFoundError
from ..types import File, VectorStore, VectorStoreFile
from ..types.objects import FileCounts
from . import schema
from ._objects import ObjectsTx, _columns_for, _data


class FilesTx(ObjectsTx):
    """File and vector-store-file rows."""

    async def expired_files(self, now: int, limit: int = 100) -> builtins.list[tuple[str, str]]:
        """(owner, file id) of up to `limit` files whose `expires_at` has come, oldest first."""
        table = schema.files
        query = (
            sa.select(table.c.owner_id, table.c.id)
            .where(table.c.expires_at.is_not(None), table.c.expires_at <= now)
            .order_by(table.c.expires_at)
            .limit(limit)
        )
        return [(str(row[0]), str(row[1])) for row in (await self.conn.execute(query)).all()]

    async def files_by_id(self, file_ids: builtins.list[str], *, owner: str) -> dict[str, File]:
        """The owner's files among `file_ids`."""
        if not file_ids:
            return {}
        table = schema.files
        query = sa.select(table.c.data).where(table.c.id.in_(file_ids), table.c.owner_id == owner)
        files = [File.model_validate(row[0]) for row in (await self.conn.execute(query)).all()]
        return {f.id: f for f in files}

    async def stored_files(self, file_ids: builtins.list[str], *, owner: str) -> builtins.list[tuple[File, str]]:
        """The owner's files among `file_ids` with where their bytes are, in the order asked."""
        if not file_ids:
            return []
        table = schema.files
        query = sa.select(table.c.data, table.c.path).where(table.c.id.in_(file_ids), table.c.owner_id == owner)
        found: dict[str, tuple[File, str]] = {}
        for row in (await self.conn.execute(query)).all():
            file = File.model_validate(row[0])
            found[file.id] = (file, str(row[1]))
        return [found[i] for i in dict.fromkeys(file_ids) if i in found]

    async def file_path(self, file_id: str, *, owner: str | None) -> str:
        """Where a file's bytes are kept."""
        table = schema.files
        query = sa.select(table.c.path).where(table.c.id == file_id)
        if owner is not None:
            query = query.where(table.c.owner_id == owner)
        path = (await self.conn.execute(query)).scalar()
        if path is None:
            raise NotFoundError(f"No file found with id '{file_id}'.", param="file_id")
        return str(path)

    async def vector_stores_with_chunks(self) -> builtins.list[VectorStore]:
        """Vector stores that still have chunks in the index (the expiry purge checks these)."""
        table, chunks = schema.vector_stores, schema.search_chunks
        has_chunks = sa.select(chunks.c.seq).where(chunks.c.vector_store_id == table.c.id).exists()
        query = sa.select(table.c.data).where(has_chunks)
        return [VectorStore.model_validate(row[0]) for row in (await self.conn.execute(query)).all()]

    async def vector_store_file(self, vector_store_id: str, file_id: str, *, owner: str | None) -> VectorStoreFile | None:
        """A file of a vector store, or None when it is not in that store (or not the owner's)."""
        table = schema.vector_store_files
        query = sa.select(table.c.data).where(table.c.vector_store_id == vector_store_id, table.c.id == file_id)
        if owner is not None:
            query = query.where(table.c.owner_id == owner)
        row = (await self.conn.execute(query)).first()
        return None if row is None else VectorStoreFile.model_validate(row[0])

    async def save_vector_store_file(self, file: VectorStoreFile, *, if_status: str | None = None) -> bool:
        """Write back a changed vector store file; False if it has left its store meanwhile.

        With `if_status`, the write happens only if the stored status still is that one: a
        compare-and-set in SQL, so that ingestion finishing a file and a batch cancelling it
        cannot both win (a read-then-write would let the later writer silently undo the other).
        """
        table = schema.vector_store_files
        query = table.update().where(table.c.vector_store_id == file.vector_store_id, table.c.id == file.id)
        if if_status is not None:
            query = query.where(table.c.status == if_status)
        result = await self.conn.execute(query.values(data=_data(file), **_columns_for(file)))
        return bool(result.rowcount)

    async def start_ingestion(self, vector_store_id: str, file_id: str) -> int | None:
        """Count one more start of the file's ingestion; how many there have been, or None when
        the file is no longer `in_progress` in its store (nothing is counted then)."""
        table = schema.vector_store_files
        where = (table.c.vector_store_id == vector_store_id, table.c.id == file_id)
        counted = await self.conn.execute(
            table.update().where(*where, table.c.status == "in_progress").values(ingest_attempts=table.c.ingest_attempts + 1)
        )
        if not counted.rowcount:
            return None
        return int((await self.conn.execute(sa.select(table.c.ingest_attempts).where(*where))).scalar_one())

    async def delete_vector_store_file(self, vector_store_id: str, file_id: str) -> bool:
        """Take a file out of a vector store (its chunks are the index's business)."""
        table = schema.vector_store_files
        await self._remember_place(table, file_id, None, within=vector_store_id)
        result = await self.conn.execute(
            table.delete().where(table.c.vector_store_id == vector_store_id, table.c.id == file_id)
        )
        return bool(result.rowcount)

    async def delete_vector_store_rows(self, vector_store_id: str) -> None:
        """Delete a vector store's file and batch rows (not the store's own row)."""
        for table in (schema.vector_store_files, schema.vector_store_file_batches):
            await self.conn.execute(table.delete().where(table.c.vector_store_id == vector_store_id))

    async def vector_store_files_where(self, **columns: Any) -> builtins.list[tuple[str, VectorStoreFile]]:
        """Vector store files matching column values (e.g. `status`, `batch_id`), with their owners."""
        table = schema.vector_store_files
        query = sa.select(table.c.owner_id, table.c.data).where(
            *(table.c[name] == value for name, value in columns.items())
        ).order_by(table.c.seq)
        return [(str(row[0]), VectorStoreFile.model_validate(row[1])) for row in (await self.conn.execute(query)).all()]

    async def file_counts(self, column: str, keys: builtins.list[str]) -> dict[str, tuple[FileCounts, int]]:
        """Per vector store (`column="vector_store_id"`) or batch (`"batch_id"`): counts by status and usage bytes.

        Counted in SQL on every read rather than kept as counters, so they can never drift from
        the files themselves.
        """
        table = schema.vector_store_files
        key = table.c[column]
        query = (
            sa.select(key, table.c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(table.c.usage_bytes), 0))
            .where(key.in_(keys))
            .group_by(key, table.c.status)
        )
        totals: dict[str, dict[str, int]] = {k: {} for k in keys}
        usage: dict[str, int] = dict.fromkeys(keys, 0)
        for row in (await self.conn.execute(query)).all():
            totals[str(row[0])][str(row[1])] = int(row[2])
            usage[str(row[0])] += int(row[3])
        return {
            k: (
                FileCounts(
                    in_progress=counts.get("in_progress", 0),
                    completed=counts.get("completed", 0),
                    failed=counts.get("failed", 0),
                    cancelled=counts.get("cancelled", 0),
                    total=sum(counts.values()),
                ),
                usage[k],
            )
            for k, counts in totals.items()
        }
