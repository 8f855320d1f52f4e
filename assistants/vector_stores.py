"""Vector stores: their files, file batches and search, and the background ingestion of files.

Adding a file to a vector store writes it `in_progress` and queues it; ingestion workers (asyncio
tasks in the server process) extract its text, chunk it and hand the chunks to the chunk index,
then mark it `completed`, or `failed` with a `last_error` the uploader can act on. A file whose
row left `in_progress` meanwhile (deleted, or cancelled with its batch) has its fresh chunks
removed again, so the index never holds chunks of a file that is not `completed` in its store.

File counts, `usage_bytes` and `status` of stores and batches are not stored: they are counted
from the files' rows on every read, so they can never disagree with the files. A file's
`usage_bytes` is the UTF-8 size of its chunks' text, which is what the index holds for it.

After a restart, files left `in_progress` are queued again: the File's bytes are in the file
store, so ingestion simply runs once more; a File deleted meanwhile fails with a message saying so.
A file whose ingestion was started three times without finishing fails at its fourth start
instead, so a file that takes the server down with it is not tried at every start for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from pydantic import ValidationError

from .exceptions import IngestionError, InvalidRequestError, NotFoundError
from .ids import new_id, now
from .search import (
    DEFAULT_MAX_BYTES,
    ChunkIndex,
    ChunkRow,
    SqlChunkIndex,
    chunk_text,
    extract_text,
    validate_static_strategy,
)
from .search.filters import parse_filter
from .store import FileStore, ListParams, Page, SqlStore, StoreTx
from .types import File, Thread, VectorStore, VectorStoreFile, VectorStoreFileBatch
from .types.objects import (
    ExpiresAfter,
    FileAttributes,
    IngestionLastError,
    StaticChunking,
    StaticChunkingStrategy,
)
from .types.requests import (
    ChunkingStrategyRequest,
    StaticChunkingRequest,
    VectorStoreCreate,
    VectorStoreFileBatchCreate,
    VectorStoreFileCreate,
    VectorStoreFileUpdate,
    VectorStoreHelper,
    VectorStoreSearch,
    VectorStoreUpdate,
)
from .types.session import session_of

log = logging.getLogger(__name__)

INGESTION_WORKERS = 2
"""How many files are ingested at once; extraction and chunking run in threads."""
DAY_SECONDS = 86_400
THREAD_STORE_DAYS = 7
"""A thread's own vector store (made from message attachments) expires this long after its last use."""
FILE_STATUSES = ("in_progress", "completed", "failed", "cancelled")
PURGE_SECONDS = 3600
"""How often the index is cleared of expired stores' chunks."""
MAX_INGEST_ATTEMPTS = 3
"""Starts of a file's ingestion before it is failed: each start that did not finish was cut short
by its process stopping (a restart, or the file itself taking the process down)."""


def _strategy(request: ChunkingStrategyRequest | None, *, param: str = "chunking_strategy") -> StaticChunkingStrategy:
    """The strategy a file is chunked with: `auto` is OpenAI's default, static 800/400."""
    if not isinstance(request, StaticChunkingRequest):
        return StaticChunkingStrategy()
    sizes = request.static
    try:
        validate_static_strategy(sizes.max_chunk_size_tokens, sizes.chunk_overlap_tokens)
    except ValueError as exc:
        # The message starts with the offending field's name, which is the param to name.
        field = str(exc).split(" ", 1)[0]
        raise InvalidRequestError(f"Invalid '{param}.static.{field}': {exc}", param=f"{param}.static.{field}") from exc
    return StaticChunkingStrategy(static=StaticChunking(**sizes.model_dump()))


def thread_store_name(thread_id: str) -> str:
    """The name of the vector store made for a thread's attached files."""
    return f"Files of {thread_id}"


class VectorStores:
    """The vector store API over the store, the file store and the chunk index; every call takes the owner."""

    def __init__(
        self, store: SqlStore, files: FileStore, index: ChunkIndex | None = None, *, max_ingest_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.store = store
        self.files = files
        self.max_ingest_bytes = max_ingest_bytes
        """Largest file ingestion reads (`ASSISTANTS_MAX_INGEST_BYTES`); a larger one fails naming the limit."""
        self.index: ChunkIndex = index or SqlChunkIndex(store)
        self._queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self._queued: set[tuple[str, str, str]] = set()
        self._ingesting: set[tuple[str, str, str]] = set()
        """Files this process's workers are indexing now: never queued a second time meanwhile."""
        """Files waiting in the queue, so that `kick()` does not queue a file twice."""
        self._workers: list[asyncio.Task[None]] = []

    # Lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the ingestion workers and queue the files a previous process left `in_progress`."""
        await self._queue_in_progress(only_unstarted=False)
        if self._queued:
            log.info("re-ingesting %d vector store file(s) left in progress", len(self._queued))
        self._workers = [
            asyncio.create_task(self._work_forever(), name=f"vector store ingestion {n}") for n in range(INGESTION_WORKERS)
        ]

    async def close(self) -> None:
        """Stop the workers; files they had not finished stay `in_progress` for the next start."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    # Vector stores -----------------------------------------------------------------------------

    async def create(self, owner: str, body: VectorStoreCreate) -> VectorStore:
        """Create a store, adding `file_ids` (ingested in the background) in the same transaction."""
        strategy = _strategy(body.chunking_strategy)
        stamp = now()
        store = VectorStore(
            id=new_id("vector_store"),
            created_at=stamp,
            name=body.name or "",
            description=body.description,
            expires_after=body.expires_after,
            expires_at=stamp + body.expires_after.days * DAY_SECONDS if body.expires_after else None,
            last_active_at=stamp,
            metadata=body.metadata or {},
        )
        async with self.store.transaction() as tx:
            await tx.insert(store, owner=owner)
            added = await self._add_files(tx, owner, store.id, body.file_ids or [], strategy, param="file_ids")
        self._enqueue(owner, added)
        return await self.get(owner, store.id)

    async def attach_to_thread(self, tx: StoreTx, owner: str, thread_id: str, file_ids: list[str]) -> list[VectorStoreFile]:
        """Files a message attaches for `file_search` go into the thread's vector store, made if needed.

        As on the hosted API, the thread's store expires 7 days after it was last used (an
        expired one is replaced by a new store); a chat session's store does not expire. Runs in
        the caller's transaction; the caller calls `kick` once it has committed.
        """
        thread = await tx.get(Thread, thread_id, owner=owner)
        resources = dict(thread.tool_resources or {})
        file_search = dict(resources.get("file_search") or {})
        attached = [store for i in file_search.get("vector_store_ids") or [] if (store := await tx.find(VectorStore, i, owner=owner))]
        usable = [store for store in attached if not store.expired(now())]
        if usable:
            store_id = usable[0].id
        else:
            stamp = now()
            # A chat session's files stay searchable for as long as the session is kept; other
            # threads follow the hosted API's policy.
            lasting = session_of(thread) is not None
            store = VectorStore(
                id=new_id("vector_store"),
                created_at=stamp,
                name=thread_store_name(thread_id),
                expires_after=None if lasting else ExpiresAfter(anchor="last_active_at", days=THREAD_STORE_DAYS),
                expires_at=None if lasting else stamp + THREAD_STORE_DAYS * DAY_SECONDS,
                last_active_at=stamp,
            )
            await tx.insert(store, owner=owner)
            store_id = store.id
            # An expired store of the thread gives way to the new one (runs would fail on it).
            file_search["vector_store_ids"] = [store_id, *(s.id for s in attached if s.id != store_id and not s.expired(now()))]
            resources["file_search"] = file_search
            await tx.save(thread.model_copy(update={"tool_resources": resources}))
        return await self._add_files(tx, owner, store_id, file_ids, _strategy(None), param="attachments")

    async def wait_for_ingestion(self, vector_store_ids: list[str]) -> None:
        """Return once no file of these stores is still being ingested (the caller bounds the wait)."""
        while True:
            async with self.store.read() as tx:
                counts = await tx.file_counts("vector_store_id", vector_store_ids)
            if not any(found.in_progress for found, _ in counts.values()):
                return
            await asyncio.sleep(0.2)

    async def get(self, owner: str, vector_store_id: str) -> VectorStore:
        async with self.store.read() as tx:
            store = await tx.get(VectorStore, vector_store_id, owner=owner)
            [shown] = await self._present(tx, [store])
        return shown

    async def list_stores(self, owner: str, params: ListParams) -> Page[VectorStore]:
        async with self.store.read() as tx:
            page = await tx.list(VectorStore, owner=owner, params=params)
            page.data = await self._present(tx, page.data)
        return page

    async def update(self, owner: str, vector_store_id: str, body: VectorStoreUpdate) -> VectorStore:
        async with self.store.transaction() as tx:
            # Held (on PostgreSQL) until the change is written, as `_mark_active` holds it: neither
            # write can put back what the other read before it.
            store = await tx.get(VectorStore, vector_store_id, owner=owner, lock=True)
            changes = body.model_dump(exclude_unset=True)
            if changes.get("metadata") is None:
                changes.pop("metadata", None)
            if "name" in changes and changes["name"] is None:
                changes["name"] = ""
            if "expires_after" in changes:
                if store.expired(now()):
                    # As on the hosted API an expired store stays expired: its chunks are (or will
                    # soon be) cleared from the index, so a new policy would show it `completed`
                    # with nothing left to search.
                    raise InvalidRequestError(
                        f"Invalid 'expires_after': {store.expired_message()} An expired vector store cannot be "
                        "given a new expiration policy.",
                        param="expires_after",
                    )
                after = body.expires_after
                anchor = store.last_active_at or store.created_at
                changes["expires_at"] = anchor + after.days * DAY_SECONDS if after else None
            await tx.save(store.with_updates(**changes))
        return await self.get(owner, vector_store_id)

    async def delete(self, owner: str, vector_store_id: str) -> bool:
        """Delete a store with its file rows, batches and chunks; the Files themselves stay."""
        async with self.store.transaction() as tx:
            await tx.get(VectorStore, vector_store_id, owner=owner)
            await tx.delete_vector_store_rows(vector_store_id)
            deleted = await tx.delete(VectorStore, vector_store_id, owner=owner)
        await self.index.remove_store(vector_store_id)
        return deleted

    async def _present(self, tx: StoreTx, stores: list[VectorStore]) -> list[VectorStore]:
        """The stores with their counted `file_counts`, `usage_bytes` and `status`."""
        counted = await tx.file_counts("vector_store_id", [s.id for s in stores])
        stamp = now()
        shown: list[VectorStore] = []
        for store in stores:
            counts, usage = counted[store.id]
            if store.expires_at is not None and store.expires_at <= stamp:
                status = "expired"
            else:
                status = "in_progress" if counts.in_progress else "completed"
            shown.append(store.model_copy(update={"file_counts": counts, "usage_bytes": usage, "status": status}))
        return shown

    @staticmethod
    async def _usable(tx: StoreTx, owner: str, vector_store_id: str) -> VectorStore:
        """The store, unless it has expired (a 400 saying so)."""
        store = await tx.get(VectorStore, vector_store_id, owner=owner)
        if store.expired(now()):
            raise InvalidRequestError(store.expired_message(), param="vector_store_id")
        return store

    async def touch(self, owner: str, vector_store_ids: list[str]) -> None:
        """Record that a run used these stores (it started with them, or searched them), which
        pushes back their expiry."""
        for vector_store_id in vector_store_ids:
            with contextlib.suppress(NotFoundError):
                await self._touch(owner, vector_store_id)

    async def purge_expired(self) -> list[str]:
        """Take expired stores' chunks out of the index (the stores and their file lists stay)."""
        async with self.store.read() as tx:
            indexed = await tx.vector_stores_with_chunks()
        purged: list[str] = []
        stamp = now()
        for store in indexed:
            if store.expired(stamp):
                await self.index.remove_store(store.id)
                purged.append(store.id)
        if purged:
            log.info("cleared the index of %d expired vector store(s)", len(purged))
        return purged

    async def _touch(self, owner: str, vector_store_id: str) -> None:
        """Record activity, which pushes back an `expires_after` expiry."""
        async with self.store.transaction() as tx:
            await self._mark_active(tx, owner, vector_store_id)

    @staticmethod
    async def _mark_active(tx: StoreTx, owner: str, vector_store_id: str) -> None:
        """Set the store's `last_active_at` to now and its expiry from there, in the caller's transaction.

        As on the hosted API a store is active when a run uses it and when files are added to it.
        """
        store = await tx.get(VectorStore, vector_store_id, owner=owner, lock=True)
        stamp = now()
        if store.expired(stamp):
            return  # Expired stays expired (its chunks may be gone already).
        after = store.expires_after
        expires_at = stamp + after.days * DAY_SECONDS if after else None
        await tx.save(store.model_copy(update={"last_active_at": stamp, "expires_at": expires_at}))

    # Files -------------------------------------------------------------------------------------

    async def add_file(self, owner: str, vector_store_id: str, body: VectorStoreFileCreate) -> VectorStoreFile:
        """Add one File to a store; adding a file the store already has returns it unchanged."""
        strategy = _strategy(body.chunking_strategy)
        async with self.store.transaction() as tx:
            await self._usable(tx, owner, vector_store_id)
            existing = await tx.vector_store_file(vector_store_id, body.file_id, owner=owner)
            if existing is not None:
                return existing
            [added] = await self._add_files(
                tx, owner, vector_store_id, [body.file_id], strategy, param="file_id", attributes=body.attributes
            )
        self._enqueue(owner, [added])
        return added

    async def _add_files(
        self,
        tx: StoreTx,
        owner: str,
        vector_store_id: str,
        file_ids: list[str],
        strategy: StaticChunkingStrategy,
        *,
        param: str,
        attributes: dict[str, Any] | None = None,
        batch_id: str | None = None,
    ) -> list[VectorStoreFile]:
        """Insert `in_progress` rows for the owner's files not yet in the store; a foreign or unknown id is a 400."""
        found = await tx.files_by_id(list(dict.fromkeys(file_ids)), owner=owner)
        for position, file_id in enumerate(file_ids):
            if file_id not in found:
                # `file_id` (or `files[2].file_id`) names one file; a list param gets the position.
                name = param if param.endswith("file_id") else f"{param}[{position}]"
                raise InvalidRequestError(f"Invalid '{name}': no file found with id '{file_id}'.", param=name)
        added: list[VectorStoreFile] = []
        stamp = now()
        for file_id in dict.fromkeys(file_ids):
            if await tx.vector_store_file(vector_store_id, file_id, owner=owner) is not None:
                continue
            file = VectorStoreFile(
                id=file_id, created_at=stamp, vector_store_id=vector_store_id, chunking_strategy=strategy, attributes=attributes
            )
            await tx.insert(file, owner=owner, batch_id=batch_id)
            added.append(file)
        if added:
            # Adding files is activity: it pushes back the store's `expires_after` expiry.
            await self._mark_active(tx, owner, vector_store_id)
        return added

    async def get_file(self, owner: str, vector_store_id: str, file_id: str) -> VectorStoreFile:
        async with self.store.read() as tx:
            await tx.get(VectorStore, vector_store_id, owner=owner)
            found = await tx.vector_store_file(vector_store_id, file_id, owner=owner)
        if found is None:
            raise NotFoundError(f"No file found with id '{file_id}' in vector store '{vector_store_id}'.")
        return found

    async def list_files(
        self, owner: str, vector_store_id: str, params: ListParams, *, status: str | None = None, batch_id: str | None = None
    ) -> Page[VectorStoreFile]:
        """A page of a store's files (or of one batch's), optionally only those in one status."""
        if status is not None and status not in FILE_STATUSES:
            raise InvalidRequestError(
                f"Invalid 'filter': {status!r}; expected one of {', '.join(FILE_STATUSES)}.", param="filter"
            )
        where: dict[str, Any] = {"vector_store_id": vector_store_id}
        if status is not None:
            where["status"] = status
        if batch_id is not None:
            where["batch_id"] = batch_id
        async with self.store.read() as tx:
            await tx.get(VectorStore, vector_store_id, owner=owner)
            return await tx.list(VectorStoreFile, owner=owner, params=params, where=where)

    async def update_file(self, owner: str, vector_store_id: str, file_id: str, body: VectorStoreFileUpdate) -> VectorStoreFile:
        """Replace a file's `attributes`, which search results carry."""
        async with self.store.transaction() as tx:
            await tx.get(VectorStore, vector_store_id, owner=owner)
            found = await tx.vector_store_file(vector_store_id, file_id, owner=owner)
            if found is None:
                raise NotFoundError(f"No file found with id '{file_id}' in vector store '{vector_store_id}'.")
            updated = found.model_copy(update={"attributes": body.attributes})
            await tx.save_vector_store_file(updated)
        return updated

    async def delete_file(self, owner: str, vector_store_id: str, file_id: str) -> bool:
        """Take a file out of a store and its chunks out of the index; the File itself stays."""
        async with self.store.transaction() as tx:
            await tx.get(VectorStore, vector_store_id, owner=owner)
            if not await tx.delete_vector_store_file(vector_store_id, file_id):
                raise NotFoundError(f"No file found with id '{file_id}' in vector store '{vector_store_id}'.")
        await self.index.remove_file(vector_store_id, file_id)
        return True

    async def forget_file(self, owner: str, file_id: str) -> None:
        """A File was deleted: take it out of every store of its owner, and out of the index."""
        async with self.store.transaction() as tx:
            entries = await tx.vector_store_files_where(id=file_id, owner_id=owner)
            for _, entry in entries:
                await tx.delete_vector_store_file(entry.vector_store_id, file_id)
        for _, entry in entries:
            await self.index.remove_file(entry.vector_store_id, file_id)

    async def file_content(self, owner: str, vector_store_id: str, file_id: str) -> str:
        """The text file search reads from a file of the store (its extracted text)."""
        await self.get_file(owner, vector_store_id, file_id)
        async with self.store.read() as tx:
            file = await tx.get(File, file_id, owner=owner, param="file_id")
            path = await tx.file_path(file_id, owner=owner)
        content = await self.files.read(path)
        try:
            return await asyncio.to_thread(extract_text, file.filename, content, max_bytes=self.max_ingest_bytes)
        except IngestionError as exc:
            raise InvalidRequestError(exc.message, param="file_id", code=exc.code) from exc

    # Batches -----------------------------------------------------------------------------------

    async def create_batch(self, owner: str, vector_store_id: str, body: VectorStoreFileBatchCreate) -> VectorStoreFileBatch:
        """Add several files at once; files the store already has are left as they are, outside the batch.

        Given as `files`, each file has its own attributes and chunking strategy (a file listed
        twice is added once, as first listed); given as `file_ids`, they all share the batch's.
        """
        # What to add: each `files` entry on its own, or all the `file_ids` together.
        groups: list[tuple[list[str], StaticChunkingStrategy, FileAttributes | None, str]] = (
            [
                ([entry.file_id], _strategy(entry.chunking_strategy, param=f"files[{n}].chunking_strategy"), entry.attributes, f"files[{n}].file_id")
                for n, entry in enumerate(body.files)
            ]
            if body.files is not None
            else [(body.file_ids or [], _strategy(body.chunking_strategy), body.attributes, "file_ids")]
        )
        batch = VectorStoreFileBatch(id=new_id("file_batch"), created_at=now(), vector_store_id=vector_store_id)
        async with self.store.transaction() as tx:
            await self._usable(tx, owner, vector_store_id)
            await tx.insert(batch, owner=owner)
            added: list[VectorStoreFile] = []
            for file_ids, strategy, attributes, param in groups:
                added += await self._add_files(
                    tx, owner, vector_store_id, file_ids, strategy, param=param, attributes=attributes, batch_id=batch.id
                )
        self._enqueue(owner, added)
        return await self.get_batch(owner, vector_store_id, batch.id)

    async def get_batch(self, owner: str, vector_store_id: str, batch_id: str) -> VectorStoreFileBatch:
        async with self.store.read() as tx:
            batch = await tx.get(VectorStoreFileBatch, batch_id, owner=owner, param="batch_id")
            if batch.vector_store_id != vector_store_id:
                raise NotFoundError(f"No vector store file batch found with id '{batch_id}'.", param="batch_id")
            counts, _ = (await tx.file_counts("batch_id", [batch_id]))[batch_id]
        if batch.status == "cancelled":
            status = "cancelled"
        elif counts.in_progress:
            status = "in_progress"
        elif counts.total and counts.failed == counts.total:
            status = "failed"
        else:
            status = "completed"
        return batch.model_copy(update={"file_counts": counts, "status": status})

    async def cancel_batch(self, owner: str, vector_store_id: str, batch_id: str) -> VectorStoreFileBatch:
        """Cancel the batch's files not yet ingested; those already done stay as they are."""
        batch = await self.get_batch(owner, vector_store_id, batch_id)
        if batch.status != "in_progress":
            raise InvalidRequestError(f"Cannot cancel a vector store file batch with status '{batch.status}'.", param="batch_id")
        async with self.store.transaction() as tx:
            for _owner, file in await tx.vector_store_files_where(batch_id=batch_id, status="in_progress"):
                await tx.save_vector_store_file(file.model_copy(update={"status": "cancelled"}), if_status="in_progress")
            await tx.save(batch.model_copy(update={"status": "cancelled"}))
        return await self.get_batch(owner, vector_store_id, batch_id)

    async def list_batch_files(
        self, owner: str, vector_store_id: str, batch_id: str, params: ListParams, *, status: str | None = None
    ) -> Page[VectorStoreFile]:
        await self.get_batch(owner, vector_store_id, batch_id)
        return await self.list_files(owner, vector_store_id, params, status=status, batch_id=batch_id)

    # Search ------------------------------------------------------------------------------------

    async def search(self, owner: str, vector_store_id: str, body: VectorStoreSearch) -> dict[str, Any]:
        """The best chunks of the store for the query, as the search results page."""
        queries = [body.query] if isinstance(body.query, str) else body.query
        threshold = body.ranking_options.score_threshold if body.ranking_options else 0.0
        async with self.store.read() as tx:
            await self._usable(tx, owner, vector_store_id)
            wanted = parse_filter(body.filters) if body.filters is not None else None
            # Only `completed` files are searched: a file being cancelled or removed may still have
            # chunks in the index for a moment, until its ingestion notices and takes them out.
            entries = [f for _, f in await tx.vector_store_files_where(vector_store_id=vector_store_id)]
        completed = {f.id: f for f in entries if f.status == "completed"}
        if wanted is not None:
            completed = {file_id: f for file_id, f in completed.items() if wanted.matches(f.attributes or {})}
        # Naming the files costs the search a join before its limit (on SQLite about twice the
        # time): it is left out when it would keep every file of the store. The hits are still
        # checked, for the moment between a file leaving the store and its chunks leaving the index.
        narrowed = wanted is not None or len(completed) < len(entries)
        hits = await self.index.search(
            owner, [vector_store_id], " ".join(queries),
            limit=body.max_num_results, score_threshold=threshold, file_ids=list(completed) if narrowed else None,
        )
        hits = [hit for hit in hits if hit.file_id in completed]
        await self._touch(owner, vector_store_id)
        async with self.store.read() as tx:
            files = await tx.files_by_id(list({hit.file_id for hit in hits}), owner=owner)
        attributes = {file_id: entry.attributes or {} for file_id, entry in completed.items()}
        data = [
            {
                "file_id": hit.file_id,
                "filename": files[hit.file_id].filename if hit.file_id in files else "",
                "score": hit.score,
                "attributes": attributes.get(hit.file_id, {}),
                "content": [{"type": "text", "text": hit.text}],
            }
            for hit in hits
        ]
        return {
            "object": "vector_store.search_results.page",
            "search_query": queries,
            "data": data,
            "has_more": False,
            "next_page": None,
        }

    async def resolve_tool_resources(self, tx: StoreTx, owner: str, tool_resources: dict[str, Any] | None) -> dict[str, Any] | None:
        """Check `file_search` tool resources and create the stores its `vector_stores` helper asks for.

        Runs inside the caller's transaction, so an assistant or thread is never written with a
        store that does not exist or is someone else's; every problem is a 400 naming the field.
        Returns the resources with the helper's stores replaced by their ids. Their files are
        ingested once the caller has committed and called `kick()`.
        """
        file_search = (tool_resources or {}).get("file_search")
        if file_search is None:
            return tool_resources
        prefix = "tool_resources.file_search"
        if not isinstance(file_search, dict):
            raise InvalidRequestError(f"Invalid '{prefix}': expected an object.", param=prefix)
        param = f"{prefix}.vector_store_ids"
        ids = file_search.get("vector_store_ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidRequestError(f"Invalid '{param}': expected an array of vector store ids.", param=param)
        helpers = file_search.get("vector_stores") or []
        if not isinstance(helpers, list):
            raise InvalidRequestError(f"Invalid '{prefix}.vector_stores': expected an array.", param=f"{prefix}.vector_stores")
        # OpenAI attaches at most one vector store to an assistant or a thread, however given.
        if len(ids) + len(helpers) > 1:
            raise InvalidRequestError(
                f"Invalid '{prefix}': at most 1 vector store may be attached, not {len(ids) + len(helpers)}.", param=prefix
            )
        for position, vector_store_id in enumerate(ids):
            if await tx.find(VectorStore, vector_store_id, owner=owner) is None:
                raise InvalidRequestError(
                    f"Invalid '{param}[{position}]': no vector store found with id '{vector_store_id}'.",
                    param=f"{param}[{position}]",
                )
        created: list[str] = []
        for position, helper in enumerate(helpers):
            where = f"{prefix}.vector_stores[{position}]"
            try:
                request = VectorStoreHelper.model_validate(helper)
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = first["loc"]
                # Pydantic names the chunking strategy's member (`auto`, `static`) right after the
                # field; that name is not part of the request, though a later `static` is.
                field = ".".join([where, *(
                    str(p) for n, p in enumerate(loc)
                    if isinstance(p, str) and not (n and loc[n - 1] == "chunking_strategy" and p in ("auto", "static"))
                )])
                raise InvalidRequestError(f"Invalid '{field}': {first['msg']}.", param=field) from exc
            store = VectorStore(id=new_id("vector_store"), created_at=now(), last_active_at=now(), metadata=request.metadata or {})
            await tx.insert(store, owner=owner)
            strategy = _strategy(request.chunking_strategy, param=f"{where}.chunking_strategy")
            await self._add_files(tx, owner, store.id, request.file_ids, strategy, param=f"{where}.file_ids")
            created.append(store.id)
        if not helpers:
            return tool_resources
        rest = {k: v for k, v in file_search.items() if k != "vector_stores"}
        return {**(tool_resources or {}), "file_search": {**rest, "vector_store_ids": [*ids, *created]}}

    async def kick(self) -> None:
        """Queue the `in_progress` files whose ingestion nobody has started: call after committing
        new files. One already started is being indexed (here, or by another process on the same
        database) or was left by a process that stopped, which `start` takes up again; queueing it
        here would index it twice and count a start that was none."""
        await self._queue_in_progress(only_unstarted=True)

    async def _queue_in_progress(self, *, only_unstarted: bool) -> None:
        async with self.store.read() as tx:
            filters: dict[str, Any] = {"status": "in_progress"}
            if only_unstarted:
                filters["ingest_attempts"] = 0
            pending = await tx.vector_store_files_where(**filters)
        for owner, file in pending:
            self._enqueue(owner, [file])

    # Ingestion ---------------------------------------------------------------------------------

    def _enqueue(self, owner: str, files: list[VectorStoreFile]) -> None:
        for file in files:
            key = (owner, file.vector_store_id, file.id)
            if key not in self._queued and key not in self._ingesting:
                self._queued.add(key)
                self._queue.put_nowait(key)

    async def _work_forever(self) -> None:
        while True:
            key = await self._queue.get()
            owner, vector_store_id, file_id = key
            self._queued.discard(key)
            self._ingesting.add(key)
            try:
                await self.ingest(owner, vector_store_id, file_id)
            except Exception:
                # Only the store itself failing gets here; the file stays `in_progress` and is
                # retried at the next start.
                log.exception("ingesting %s into %s failed", file_id, vector_store_id)
            finally:
                self._ingesting.discard(key)
                self._queue.task_done()

    async def ingest(self, owner: str, vector_store_id: str, file_id: str) -> None:
        """Index one `in_progress` file and mark it `completed` or `failed`."""
        async with self.store.read() as tx:
            entry = await tx.vector_store_file(vector_store_id, file_id, owner=owner)
            file = await tx.find(File, file_id, owner=owner)
            path = await tx.file_path(file_id, owner=owner) if file is not None else None
        if entry is None or entry.status != "in_progress":
            return
        if file is None or path is None:
            await self._finish(entry, failed=IngestionLastError(
                code="invalid_file", message=f"The file {file_id} was deleted before it could be indexed. Upload it again and add the new file.",
            ))
            return
        # Counted before any of the work, so a start that takes the process down still counts.
        async with self.store.transaction() as tx:
            attempts = await tx.start_ingestion(vector_store_id, file_id)
        if attempts is None:
            return
        if attempts > MAX_INGEST_ATTEMPTS:
            log.warning("giving up on %s (%s) in %s: its ingestion was interrupted %d times", file_id, file.filename, vector_store_id, attempts - 1)
            await self._finish(entry, failed=IngestionLastError(
                code="server_error",
                message=(
                    f"Indexing {file.filename} was interrupted repeatedly ({attempts - 1} times): the server stopped while reading it, "
                    "perhaps because the file needs more memory than it has. It is not tried again; split the file "
                    "into smaller ones, or check that it is not damaged, and add those."
                ),
            ))
            return
        sizes = entry.chunking_strategy.static
        try:
            content = await self.files.read(path)
            text = await asyncio.to_thread(extract_text, file.filename, content, max_bytes=self.max_ingest_bytes)
            chunks = await asyncio.to_thread(
                chunk_text, text, max_tokens=sizes.max_chunk_size_tokens, overlap=sizes.chunk_overlap_tokens
            )
            rows = [ChunkRow(index=c.index, text=c.text, start=c.start, end=c.end, tokens=c.tokens) for c in chunks]
            await self.index.add(owner, vector_store_id, file_id, rows)
        except IngestionError as exc:
            await self._finish(entry, failed=IngestionLastError.model_validate(exc.to_last_error()))
            return
        except Exception:
            log.exception("unexpected error ingesting %s (%s) into %s", file_id, file.filename, vector_store_id)
            await self._finish(entry, failed=IngestionLastError(
                code="server_error", message="The server failed to index this file. Try adding it again.",
            ))
            return
        usage = sum(len(row.text.encode()) for row in rows)
        if not await self._finish(entry, usage_bytes=usage):
            # The file left the store (or its batch was cancelled) while it was being indexed.
            await self.index.remove_file(vector_store_id, file_id)

    async def _finish(self, entry: VectorStoreFile, *, failed: IngestionLastError | None = None, usage_bytes: int = 0) -> bool:
        """Mark an ingested file `completed` or `failed` if it is still `in_progress`; False if not."""
        async with self.store.transaction() as tx:
            current = await tx.vector_store_file(entry.vector_store_id, entry.id, owner=None)
            if current is None or current.status != "in_progress":
                return False
            update: dict[str, Any] = (
                {"status": "failed", "last_error": failed} if failed else {"status": "completed", "usage_bytes": usage_bytes}
            )
            return await tx.save_vector_store_file(current.model_copy(update=update), if_status="in_progress")


__all__ = ["VectorStores"]
