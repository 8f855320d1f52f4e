"""The full-text chunk index that file search retrieves from, on SQLite (FTS5) and PostgreSQL.

Ingestion hands over a file's chunks with `ChunkIndex.add`; retrieval asks `ChunkIndex.search`
for the best chunks of some vector stores. Every chunk carries its owner, and a search only ever
sees the asking owner's chunks, even when given another owner's vector store id.

User text never reaches a query language as written. `query_terms` keeps only the words (runs of
letters and digits), drops English stop words and duplicates. FTS5 gets them joined with OR:
`{scope}: ("<owner+store token>") AND {text}: ("w1" OR "w2")` (the scope token, indexed per chunk
since migration 0008, makes FTS5 rank only the asker's rows). PostgreSQL gets no query language
at all: the words, stemmed (`postings.search_terms`), are bound parameters that pick rows of
`search_postings` by primary key within the asker's (owner, store) scopes (migration 0015;
postings.py). Quotes, `NEAR(`, `*`, `-`, `:` or parentheses in the user's text are separators,
never operators, and a query with no words left returns no hits instead of an error.

Scores lie in [0, 1), higher is better. Both backends' raw relevance `r` is BM25 with FTS5's
constants (k1 = 1.2, b = 0.75) and idf, which weighs rare words up and saturates repeated ones:
FTS5's `-bm25()` on SQLite, the same sum over the query's words computed from posting lists on
PostgreSQL (postings.py). `r` is divided by the number of query words, so a long question is not
favoured over a short one, and mapped through `s / (s + k)`. `k` is the per-word relevance of a
typical right answer on the fixed corpus of tests/test_search_index.py, where right answers then
score 0.32-0.62 on both backends and other hits at most 0.33: a `score_threshold` around 0.3
keeps good hits and 0.5 keeps only strong ones. The scale is not exact across stores: bm25's
weight for a word grows with how rare it is, so scores drift up in large collections. The
collection differs by backend: FTS5 counts chunks and word frequencies over its whole index,
PostgreSQL over the searched scopes only (so one owner's files never move another's scores).
Stemming differs slightly too (Porter on SQLite, Snowball's English on PostgreSQL). bm25 gives
(almost) no weight to a word found in half the collection or more, which in a nearly empty one is
every word; so the share of the query's words a chunk holds (`COVERAGE_WEIGHT` times it) is a
floor under the score, and hits are ordered by the final score.

Hybrid retrieval. With an embedder (`ASSISTANTS_EMBEDDING_MODEL`), `add` also stores each chunk's
vector (`search_vectors`) and `search` embeds the query, takes the `CANDIDATES` best chunks by
cosine similarity and the `CANDIDATES` best by full text, and ranks their union by the convex
combination `HYBRID_WEIGHT * max(cosine, 0) + (1 - HYBRID_WEIGHT) * full_text`, where a chunk the
full-text search did not return gets its coverage floor as full-text part. A chunk with no vector
of the current model (indexed before the model was set, or with another one) is found by full
text only. Should the query fail to embed, the search falls back to full text, so a provider
hiccup never fails a run. A store's vectors stay in memory between searches (`VectorCache`, an LRU
within a byte budget) for as long as the store's generation, a counter bumped in the same
transaction as any change to its chunks, is the one they were read at; so another process's
changes are seen at the next search.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import unicodedata
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import sqlalchemy as sa

from ..exceptions import InvalidRequestError
from ..store import SqlStore, schema
from .embed import Embedder, EmbeddingError, pack, unpack_many
from .postings import FilePostings, PostingList, bm25_top, file_postings, posting_rows, search_terms
from .words import MAX_QUERY_TERMS as MAX_QUERY_TERMS
from .words import STOP_WORDS as STOP_WORDS
from .words import WORD
from .words import query_terms as query_terms

log = logging.getLogger(__name__)

COVERAGE_WEIGHT = 0.5
"""A chunk holding every word of the query scores at least this (see `SqlChunkIndex._hit`)."""
HYBRID_WEIGHT = 0.5
"""The share of vector similarity in a hybrid score (the rest is the full-text score)."""
CANDIDATES = 50
"""Chunks each side (vector and full text) hands to hybrid ranking, at least `limit`."""
VECTOR_CACHE_BYTES = 256 * 1024 * 1024
"""Default memory for stores' vectors kept between searches (`ASSISTANTS_SEARCH_CACHE_MB`)."""

# Per-word raw relevance of a typical right answer on each backend, measured on the fixed corpus
# of tests/test_search_index.py: the `k` of `s / (s + k)` (see the module docstring). Both rank
# with BM25 since migration 0015, so both have the same.
_HALF_SCORE = {"sqlite": 1.4, "postgresql": 1.4}


@dataclass(frozen=True)
class ChunkRow:
    """One chunk of a file's extracted text, as ingestion hands it over."""

    index: int
    """The chunk's position in its file, from 0."""
    text: str
    """The chunk's text, which is what gets indexed and returned."""
    start: int
    """Character offset of the chunk's first character in the file's extracted text."""
    end: int
    """Character offset just past the chunk's last character."""
    tokens: int
    """How many model tokens the chunk holds."""


@dataclass(frozen=True)
class Hit:
    """One chunk found by a search."""

    chunk_id: str
    """The chunk's own id (`chunk_...`), new each time its file is (re)indexed."""
    vector_store_id: str
    file_id: str
    index: int
    """The chunk's position in its file."""
    text: str
    start: int
    """Character offset of the chunk in the file's extracted text."""
    end: int
    score: float
    """Relevance in [0, 1), higher is better; see the module docstring for how it is made."""


class ChunkIndex(Protocol):
    """The chunk index behind file search."""

    async def add(self, owner: str, vector_store_id: str, file_id: str, chunks: Sequence[ChunkRow]) -> None:
        """Index a file's chunks in a vector store, replacing whatever that file had there before."""
        ...

    async def remove_file(self, vector_store_id: str, file_id: str) -> int:
        """Remove a file's chunks from a vector store; returns how many were removed."""
        ...

    async def remove_store(self, vector_store_id: str) -> int:
        """Remove every chunk of a vector store; returns how many were removed."""
        ...

    async def search(
        self,
        owner: str,
        vector_store_ids: Sequence[str],
        query: str,
        *,
        limit: int = 20,
        score_threshold: float = 0.0,
        file_ids: Sequence[str] | None = None,
    ) -> list[Hit]:
        """The owner's best chunks for `query` in those stores, best first, at most `limit`.

        Hits scoring below `score_threshold` are left out; `file_ids` narrows the search to
        those files. A query with no searchable words returns no hits.
        """
        ...

    async def count(self, vector_store_id: str) -> int:
        """How many chunks a vector store holds."""
        ...


def fts5_query(terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression that matches any of `terms`, each quoted as a plain string."""
    # `query_terms` words hold no double quote, but doubling them keeps this safe on any input.
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def scope_token(owner: str, vector_store_id: str) -> str:
    """The FTS5 token naming an (owner, store) pair, as migration 0008's triggers index it in `scope`.

    Hex digits never hold an `x`, so the token is unique to the pair; it is one unicode61 token,
    and ending in a digit keeps the porter stemmer from changing it.
    """
    return owner.encode().hex() + "x" + vector_store_id.encode().hex() + "x0"


def fts5_scoped_query(owner: str, vector_store_ids: Sequence[str], terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression for any of `terms` in the `text` of the owner's chunks in those stores."""
    scopes = " OR ".join('"' + scope_token(owner, store) + '"' for store in dict.fromkeys(vector_store_ids))
    return "{scope}: (" + scopes + ") AND {text}: (" + fts5_query(terms) + ")"


async def _copy_rows(conn: Any, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows of the same keys with PostgreSQL's COPY (same connection, same transaction)."""
    columns = tuple(rows[0])
    await _copy_records(conn, table, columns, [tuple(row[column] for column in columns) for row in rows])


async def _copy_records(conn: Any, table: str, columns: Sequence[str], records: Sequence[tuple[Any, ...]]) -> None:
    """COPY `records` into `table` on an asyncpg connection: a few µs a row, where SQLAlchemy's
    executemany costs ten times that, most of it Python in the event loop's thread."""
    raw = await conn.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(table, columns=columns, records=records)


class _Counting:
    """A file's words counted into posting lists in a worker thread, a batch of chunks at a time,
    starting at once; iterating awaits each batch and starts counting the next."""

    def __init__(self, chunks: Sequence[ChunkRow], seqs: Sequence[int]) -> None:
        self._texts = [chunk.text for chunk in chunks]
        self._spans = [(chunk.start, chunk.end) for chunk in chunks]
        self._seqs = seqs
        batches = -(-len(chunks) // COUNT_BATCH_CHUNKS)
        size = -(-len(chunks) // batches)
        self._batches = [range(start, min(start + size, len(chunks))) for start in range(0, len(chunks), size)]
        self._pending = self._count(0)

    def _count(self, at: int) -> asyncio.Future[FilePostings] | None:
        if at >= len(self._batches):
            return None
        batch = self._batches[at]
        texts, seqs, spans = self._texts[batch.start : batch.stop], self._seqs[batch.start : batch.stop], self._spans[batch.start : batch.stop]
        return asyncio.ensure_future(asyncio.to_thread(file_postings, texts, seqs, spans))

    async def __aiter__(self) -> AsyncIterator[FilePostings]:
        for at in range(1, len(self._batches) + 1):
            current = self._pending
            assert current is not None
            postings = await current
            self._pending = self._count(at)
            yield postings

    def cancel(self) -> None:
        """Stop waiting for a batch still being counted (the thread finishes it unheard)."""
        if self._pending is None:
            return
        if not self._pending.done():
            self._pending.cancel()
        elif not self._pending.cancelled():
            # Its failure is part of the error being raised (or moot): mark it heard.
            self._pending.exception()


def new_chunk_id() -> str:
    """A fresh chunk id: `chunk_` and 24 random hex digits (cheap enough for bulk ingestion)."""
    return "chunk_" + secrets.token_hex(12)


_COLUMNS = "c.id, c.vector_store_id, c.file_id, c.chunk_index, c.text, c.char_start, c.char_end"

# FTS5 matches only the asker's (owner, store) scope tokens, ranks those rows (bm25 weighs the
# `scope` column 0) and keeps the best before any chunk row is read; the owner and store are
# checked again on the rows read.
_SQLITE_SEARCH = f"""
SELECT {_COLUMNS}, t.rank
FROM (
    SELECT f.rowid AS seq, -bm25(search_chunks_fts, 1.0, 0.0) AS rank
    FROM search_chunks_fts AS f {{files_join}}
    WHERE search_chunks_fts MATCH :query {{files}}
    ORDER BY rank DESC, f.rowid
    LIMIT :limit
) AS t JOIN search_chunks AS c ON c.seq = t.seq
WHERE c.owner_id = :owner AND c.vector_store_id IN :stores
ORDER BY t.rank DESC, c.seq
"""

# PostgreSQL (migration 0015; see postings.py): the posting lists of the query's terms in the
# asker's scopes, the scopes' sizes, then the chosen chunks, checked again against owner and store.
_PG_POSTINGS = sa.text(
    "SELECT string_agg(postings, ''::bytea) AS postings, array_agg(file_id) AS file_ids,"
    " array_agg(octet_length(postings)) AS sizes FROM search_postings"
    " WHERE owner_id = :owner AND vector_store_id IN :stores AND term IN :terms GROUP BY term"
).bindparams(sa.bindparam("stores", expanding=True), sa.bindparam("terms", expanding=True))
_PG_SIZES = sa.text(
    "SELECT coalesce(sum(chunks), 0), coalesce(sum(words), 0) FROM search_file_lengths"
    " WHERE owner_id = :owner AND vector_store_id IN :stores"
).bindparams(sa.bindparam("stores", expanding=True))
_PG_CHUNKS = sa.text(
    f"SELECT c.seq, {_COLUMNS} FROM search_chunks AS c"
    " WHERE c.seq IN :seqs AND c.owner_id = :owner AND c.vector_store_id IN :stores"
).bindparams(sa.bindparam("seqs", expanding=True), sa.bindparam("stores", expanding=True))
_PG_NEW_SEQS = sa.text("SELECT nextval(pg_get_serial_sequence('search_chunks', 'seq')) FROM generate_series(1, :n)")
_PG_ADD_LENGTHS = sa.text(
    "INSERT INTO search_file_lengths (vector_store_id, file_id, owner_id, chunks, words)"
    " VALUES (:store, :file, :owner, :chunks, :words)"
)
COUNT_BATCH_CHUNKS = 10_000
"""A large file's words are counted in batches of at most this many chunks (of equal size), each
stored while the next is counted: the memory counting takes stays bounded whatever the file's
size, and a batch adds a posting row per distinct word it holds, so batches are not small."""
_PG_LZ4 = sa.text("SET LOCAL default_toast_compression = 'lz4'")
_PG_REMOVE_FILE = [
    sa.text(f"DELETE FROM {table} WHERE vector_store_id = :store AND file_id = :file")
    for table in ("search_postings", "search_file_lengths")
]
_PG_REMOVE_STORE = [
    sa.text(f"DELETE FROM {table} WHERE vector_store_id = :store") for table in ("search_postings", "search_file_lengths")
]


def _search_statement(with_files: bool) -> sa.TextClause:
    sql = _SQLITE_SEARCH.format(
        files_join="JOIN search_chunks AS fc ON fc.seq = f.rowid" if with_files else "",
        files="AND fc.file_id IN :files" if with_files else "",
    )
    params: list[sa.BindParameter[Any]] = [sa.bindparam("stores", expanding=True)]
    if with_files:
        params.append(sa.bindparam("files", expanding=True))
    return sa.text(sql).bindparams(*params)


# SQLite's FTS5 index is written by one statement per file in the transaction that writes the
# chunks (migration 0011): row triggers would make FTS5 flush its pending terms for every row.
_SCOPE_SQL = "hex(owner_id) || 'x' || hex(vector_store_id) || 'x0'"
_FTS_ADD = sa.text(
    f"INSERT INTO search_chunks_fts(rowid, text, scope) SELECT seq, text, {_SCOPE_SQL} "
    "FROM search_chunks WHERE vector_store_id = :store AND file_id = :file"
)
_FTS_REMOVE_STORE_SQL = (
    f"INSERT INTO search_chunks_fts(search_chunks_fts, rowid, text, scope) SELECT 'delete', seq, text, {_SCOPE_SQL} "
    "FROM search_chunks WHERE vector_store_id = :store"
)
_FTS_REMOVE_STORE = sa.text(_FTS_REMOVE_STORE_SQL)
_FTS_REMOVE_FILE = sa.text(_FTS_REMOVE_STORE_SQL + " AND file_id = :file")

_BUMP_GENERATION = sa.text(
    "INSERT INTO search_generations (vector_store_id, generation) VALUES (:store, 1) "
    "ON CONFLICT (vector_store_id) DO UPDATE SET generation = search_generations.generation + 1"
)


@dataclass(frozen=True)
class StoreVectors:
    """One owner's vectors of one model in one store, as a matrix (a unit-length row per chunk)."""

    generation: int
    """The store's generation they were read at (`search_generations`)."""
    chunk_ids: list[str]
    positions: dict[str, int]
    """Row of each chunk id."""
    files: dict[str, tuple[int, int]]
    """Rows `[first, last)` of each file (rows are ordered by file)."""
    matrix: np.ndarray

    @property
    def size(self) -> int:
        """Roughly the bytes held: the matrix and the per-chunk bookkeeping."""
        return int(self.matrix.nbytes) + 200 * len(self.chunk_ids)

    def rows(self, file_ids: Sequence[str] | None) -> np.ndarray:
        """The rows of these files (all rows without a filter)."""
        if file_ids is None:
            return np.arange(len(self.chunk_ids))
        spans = [self.files[f] for f in dict.fromkeys(file_ids) if f in self.files]
        if not spans:
            return np.zeros(0, dtype=np.intp)
        return np.concatenate([np.arange(first, last) for first, last in spans])


class VectorCache:
    """Stores' vectors kept in memory, least recently used first out, within a byte budget."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str, str, int], StoreVectors] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, str, str, int], generation: int) -> StoreVectors | None:
        """The entry when it is of `generation`; a stale one is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.generation != generation:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, str, str, int], entry: StoreVectors) -> None:
        """Keep an entry if it fits the budget, making room by dropping the least recently used."""
        if key in self._entries:
            self._drop(key)
        if entry.size > self.max_bytes:
            return
        while self._entries and self._bytes + entry.size > self.max_bytes:
            self._drop(next(iter(self._entries)))
        self._entries[key] = entry
        self._bytes += entry.size

    def _drop(self, key: tuple[str, str, str, int]) -> None:
        self._bytes -= self._entries.pop(key).size


class SqlChunkIndex:
    """`ChunkIndex` on the project's SQL store: FTS5 on SQLite, posting lists on PostgreSQL (both
    ranked by BM25), and, with an embedder, chunk vectors for hybrid retrieval."""

    def __init__(self, store: SqlStore, embedder: Embedder | None = None, *, cache_bytes: int = VECTOR_CACHE_BYTES) -> None:
        self.store = store
        self.embedder = embedder
        self.cache = VectorCache(cache_bytes)
        self.dialect = store.engine.dialect.name
        self._half_score = _HALF_SCORE.get(self.dialect, 1.0)

    async def add(self, owner: str, vector_store_id: str, file_id: str, chunks: Sequence[ChunkRow]) -> None:
        """Index a file's chunks in a vector store, replacing whatever that file had there before.

        With an embedder the chunks are embedded first; an `EmbeddingError` leaves the index as it was.
        """
        table, vectors = schema.search_chunks, schema.search_vectors
        rows: list[dict[str, Any]] = [
            {
                "id": new_chunk_id(),
                "owner_id": owner,
                "vector_store_id": vector_store_id,
                "file_id": file_id,
                "chunk_index": chunk.index,
                "text": chunk.text,
                "char_start": chunk.start,
                "char_end": chunk.end,
                "tokens": chunk.tokens,
            }
            for chunk in chunks
        ]
        counting: _Counting | None = None
        if rows and self.dialect == "postgresql":
            # The chunks' seqs are drawn first, so their posting lists can name them.
            async with self.store.transaction() as tx:
                seqs = [int(seq) for seq in (await tx.conn.execute(_PG_NEW_SEQS, {"n": len(rows)})).scalars()]
            for row, seq in zip(rows, seqs, strict=True):
                row["seq"] = seq
            # Words are counted in a worker thread while PostgreSQL stores the chunks' text.
            counting = _Counting(chunks, seqs)
        try:
            vector_rows: list[dict[str, Any]] = []
            if self.embedder is not None and rows:
                matrix = await self.embedder.embed([chunk.text for chunk in chunks])
                vector_rows = [
                    {
                        "chunk_id": row["id"],
                        "owner_id": owner,
                        "vector_store_id": vector_store_id,
                        "file_id": file_id,
                        "model": self.embedder.model,
                        "dimensions": int(matrix.shape[1]),
                        "vector": pack(vector),
                    }
                    for row, vector in zip(rows, matrix, strict=True)
                ]
            # The old chunks go and the new ones come in one transaction, so a search sees one or
            # the other, never both and never neither.
            async with self.store.transaction() as tx:
                await self._delete(tx.conn, vector_store_id, file_id)
                if rows and self.dialect == "postgresql":
                    await _copy_rows(tx.conn, table.name, rows)
                elif rows:
                    await tx.conn.execute(table.insert(), rows)
                    if tx.conn.dialect.name == "sqlite":
                        await tx.conn.execute(_FTS_ADD, {"store": vector_store_id, "file": file_id})
                if counting is not None:
                    await self._add_postings(tx.conn, owner, vector_store_id, file_id, counting)
                if vector_rows:
                    await tx.conn.execute(vectors.insert(), vector_rows)
        finally:
            if counting is not None:
                counting.cancel()

    @staticmethod
    async def _add_postings(conn: Any, owner: str, vector_store_id: str, file_id: str, counting: _Counting) -> None:
        # The primary key holds the postings too, and PostgreSQL compresses index entries of over
        # 512 bytes with `default_toast_compression`: lz4 halves the COPY's time against the
        # default pglz (the table's own compression setting does not reach its indexes).
        await conn.execute(_PG_LZ4)
        parts: dict[str, int] = {}
        chunks = words = 0
        # A batch is stored while the next one is counted.
        async for postings in counting:
            chunks, words = chunks + postings.chunks, words + postings.words
            if postings.lists:
                # A batch adds a row or more per distinct word (thousands).
                await _copy_records(
                    conn,
                    "search_postings",
                    ("vector_store_id", "owner_id", "term", "file_id", "part", "postings"),
                    [(vector_store_id, owner, term, file_id, part, packed) for term, part, packed in posting_rows(postings, parts)],
                )
        keys = {"store": vector_store_id, "owner": owner, "file": file_id}
        await conn.execute(_PG_ADD_LENGTHS, {**keys, "chunks": chunks, "words": words})

    @staticmethod
    async def _delete(conn: Any, vector_store_id: str, file_id: str | None) -> int:
        """Delete a file's (or, without `file_id`, a whole store's) chunks and vectors, and bump the
        store's generation: every change to a store's chunks goes through here."""
        await conn.execute(_BUMP_GENERATION, {"store": vector_store_id})
        if conn.dialect.name == "sqlite":
            # FTS5's rows go first, while the chunks they were made from can still be read.
            await conn.execute(_FTS_REMOVE_FILE if file_id is not None else _FTS_REMOVE_STORE, {"store": vector_store_id, "file": file_id})
        elif conn.dialect.name == "postgresql":
            for statement in _PG_REMOVE_FILE if file_id is not None else _PG_REMOVE_STORE:
                await conn.execute(statement, {"store": vector_store_id, "file": file_id})
        removed = 0
        for table in (schema.search_chunks, schema.search_vectors):
            where = [table.c.vector_store_id == vector_store_id]
            if file_id is not None:
                where.append(table.c.file_id == file_id)
            result = await conn.execute(table.delete().where(*where))
            if table is schema.search_chunks:
                removed = int(result.rowcount or 0)
        return removed

    async def remove_file(self, vector_store_id: str, file_id: str) -> int:
        """Remove a file's chunks from a vector store; returns how many were removed."""
        async with self.store.transaction() as tx:
            return await self._delete(tx.conn, vector_store_id, file_id)

    async def remove_store(self, vector_store_id: str) -> int:
        """Remove every chunk of a vector store; returns how many were removed."""
        async with self.store.transaction() as tx:
            return await self._delete(tx.conn, vector_store_id, None)

    async def count(self, vector_store_id: str) -> int:
        """How many chunks a vector store holds."""
        table = schema.search_chunks
        query = sa.select(sa.func.count()).select_from(table).where(table.c.vector_store_id == vector_store_id)
        async with self.store.read() as tx:
            return int((await tx.conn.execute(query)).scalar_one())

    async def search(
        self,
        owner: str,
        vector_store_ids: Sequence[str],
        query: str,
        *,
        limit: int = 20,
        score_threshold: float = 0.0,
        file_ids: Sequence[str] | None = None,
    ) -> list[Hit]:
        """The owner's best chunks for `query` in those stores, best first, at most `limit`.

        Hits scoring below `score_threshold` are left out; `file_ids` narrows the search to
        those files (an empty list finds nothing). A query with no searchable words returns no
        hits, unless an embedder finds chunks close to it in meaning.
        """
        if limit < 1:
            raise InvalidRequestError(f"Invalid 'max_num_results': {limit}; it must be at least 1.", param="max_num_results")
        if not 0.0 <= score_threshold <= 1.0:
            raise InvalidRequestError(
                f"Invalid 'score_threshold': {score_threshold}; it must be between 0 and 1.", param="score_threshold"
            )
        if not query.strip() or not vector_store_ids or (file_ids is not None and not file_ids):
            return []
        terms = query_terms(query)
        query_vector = await self._embed_query(query)
        if query_vector is None:
            if not terms:
                return []
            hits = await self._full_text(owner, vector_store_ids, terms, limit, file_ids)
        else:
            hits = await self._hybrid(owner, vector_store_ids, terms, query_vector, max(limit, CANDIDATES), file_ids)
        hits.sort(key=lambda hit: -hit.score)
        return [hit for hit in hits if hit.score >= score_threshold][:limit]

    async def _embed_query(self, query: str) -> np.ndarray | None:
        if self.embedder is None:
            return None
        try:
            vector: np.ndarray = (await self.embedder.embed([query]))[0]
            return vector
        except EmbeddingError as exc:
            log.warning("searching by full text only: %s", exc.message)
            return None

    async def _full_text(
        self, owner: str, vector_store_ids: Sequence[str], terms: list[str], limit: int, file_ids: Sequence[str] | None
    ) -> list[Hit]:
        if self.dialect == "postgresql":
            return await self._ranked_postings(owner, vector_store_ids, terms, limit, file_ids)
        text = fts5_scoped_query(owner, vector_store_ids, terms)
        params: dict[str, Any] = {"query": text, "owner": owner, "stores": list(vector_store_ids), "limit": limit}
        if file_ids is not None:
            params["files"] = list(file_ids)
        async with self.store.read() as tx:
            rows = (await tx.conn.execute(_search_statement(file_ids is not None), params)).all()
        return [self._hit(row, terms) for row in rows]

    async def _ranked_postings(
        self, owner: str, vector_store_ids: Sequence[str], terms: list[str], limit: int, file_ids: Sequence[str] | None
    ) -> list[Hit]:
        """PostgreSQL: BM25 over the posting lists of the query's terms (see postings.py)."""
        scope: dict[str, Any] = {"owner": owner, "stores": list(dict.fromkeys(vector_store_ids))}
        async with self.store.read() as tx:
            lists = (await tx.conn.execute(_PG_POSTINGS, {**scope, "terms": search_terms(terms)})).all()
            if not lists:
                return []
            chunks, words = (await tx.conn.execute(_PG_SIZES, scope)).one()
            best = bm25_top(
                [PostingList(row.postings, row.file_ids, row.sizes) for row in lists], int(chunks), int(words), limit, file_ids
            )
            if not best:
                return []
            found = {int(row.seq): row for row in (await tx.conn.execute(_PG_CHUNKS, {**scope, "seqs": [seq for seq, _ in best]})).all()}
        return [self._hit(found[seq], terms, rank=rank) for seq, rank in best if seq in found]

    async def _hybrid(
        self,
        owner: str,
        vector_store_ids: Sequence[str],
        terms: list[str],
        query_vector: np.ndarray,
        candidates: int,
        file_ids: Sequence[str] | None,
    ) -> list[Hit]:
        """Full-text and vector candidates, ranked by the fused score (see the module docstring)."""
        assert self.embedder is not None
        full_text = {hit.chunk_id: hit for hit in await self._full_text(owner, vector_store_ids, terms, candidates, file_ids)} if terms else {}
        closeness: dict[str, float] = {}
        nearest: list[tuple[float, str]] = []
        for vectors in await self._vectors(owner, vector_store_ids, self.embedder.model, int(query_vector.shape[0])):
            similarity = vectors.matrix @ query_vector
            rows = vectors.rows(file_ids)
            for chunk_id in full_text:
                position = vectors.positions.get(chunk_id)
                if position is not None:
                    closeness[chunk_id] = float(similarity[position])
            if len(rows) > candidates:
                rows = rows[np.argpartition(-similarity[rows], candidates - 1)[:candidates]]
            nearest.extend((float(similarity[row]), vectors.chunk_ids[row]) for row in rows)
        nearest.sort(key=lambda pair: -pair[0])
        for score, chunk_id in nearest[:candidates]:
            closeness[chunk_id] = score
        missing = [chunk_id for _, chunk_id in nearest[:candidates] if chunk_id not in full_text]
        if missing:
            chunks = schema.search_chunks
            select = sa.select(
                chunks.c.id, chunks.c.vector_store_id, chunks.c.file_id, chunks.c.chunk_index,
                chunks.c.text, chunks.c.char_start, chunks.c.char_end,
            ).where(chunks.c.id.in_(missing), chunks.c.owner_id == owner)
            async with self.store.read() as tx:
                for row in (await tx.conn.execute(select)).all():
                    full_text[str(row.id)] = self._hit(row, terms, rank=0.0)
        fused = (
            replace(hit, score=HYBRID_WEIGHT * max(closeness.get(chunk_id, 0.0), 0.0) + (1 - HYBRID_WEIGHT) * hit.score)
            for chunk_id, hit in full_text.items()
        )
        # A nearest neighbour that shares neither meaning nor words with the query is no hit.
        return [hit for hit in fused if hit.score > 0]

    async def _vectors(self, owner: str, vector_store_ids: Sequence[str], model: str, dimensions: int) -> list[StoreVectors]:
        """The owner's vectors of `model` in each store: from memory while the store's generation
        is unchanged, else read again (and kept, within the cache's budget)."""
        generations = schema.search_generations
        found: list[StoreVectors] = []
        async with self.store.read() as tx:
            # The generation is read first: vectors read after it are at least as new, so a racing
            # change can only make the cached entry look stale, never look current when it is not.
            select = sa.select(generations.c.vector_store_id, generations.c.generation).where(
                generations.c.vector_store_id.in_(list(vector_store_ids))
            )
            current = {str(row.vector_store_id): int(row.generation) for row in (await tx.conn.execute(select)).all()}
            for store_id in dict.fromkeys(vector_store_ids):
                key = (owner, store_id, model, dimensions)
                generation = current.get(store_id, 0)
                vectors = self.cache.get(key, generation)
                if vectors is None:
                    vectors = await self._read_vectors(tx.conn, key, generation)
                    self.cache.put(key, vectors)
                found.append(vectors)
        return found

    @staticmethod
    async def _read_vectors(conn: Any, key: tuple[str, str, str, int], generation: int) -> StoreVectors:
        owner, store_id, model, dimensions = key
        table = schema.search_vectors
        select = (
            sa.select(table.c.chunk_id, table.c.file_id, table.c.vector)
            .where(
                table.c.owner_id == owner,
                table.c.vector_store_id == store_id,
                table.c.model == model,
                table.c.dimensions == dimensions,
            )
            .order_by(table.c.file_id)
        )
        stored = (await conn.execute(select)).all()
        files: dict[str, tuple[int, int]] = {}
        for position, row in enumerate(stored):
            first, _ = files.get(row.file_id, (position, position))
            files[str(row.file_id)] = (first, position + 1)
        chunk_ids = [str(row.chunk_id) for row in stored]
        return StoreVectors(
            generation=generation,
            chunk_ids=chunk_ids,
            positions={chunk_id: i for i, chunk_id in enumerate(chunk_ids)},
            files=files,
            matrix=unpack_many([bytes(row.vector) for row in stored], dimensions),
        )

    def _hit(self, row: Any, terms: list[str], rank: float | None = None) -> Hit:
        """A hit with its full-text score; `rank` overrides the row's (0 for chunks found by vector)."""
        covered = 0.0
        ranked = 0.0
        if terms:
            per_term = max(float(row.rank if rank is None else rank), 0.0) / len(terms)
            ranked = per_term / (per_term + self._half_score)
            # bm25 gives a word no weight when it is in half the index or more, which is every word
            # of a nearly empty index: the share of the query's words the chunk holds is a floor.
            words = set(WORD.findall(unicodedata.normalize("NFKC", str(row.text)).casefold()))
            covered = sum(1 for term in terms if term in words) / len(terms)
        return Hit(
            chunk_id=str(row.id),
            vector_store_id=str(row.vector_store_id),
            file_id=str(row.file_id),
            index=int(row.chunk_index),
            text=str(row.text),
            start=int(row.char_start),
            end=int(row.char_end),
            score=max(ranked, COVERAGE_WEIGHT * covered),
        )
