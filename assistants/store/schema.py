"""The tables, as SQLAlchemy Core. Each object table keeps the wire object as JSON in `data`.

Columns beside `data` exist only for what SQL must filter, join or order by: the owner, the
parents, the status of runs. `seq` is the insertion order that pagination walks, because ids are
random and `created_at` has one-second resolution.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData()

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _object_table(name: str, *extra: sa.Column[object] | sa.Index) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("owner_id", sa.String(64), nullable=False, index=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("data", JSONType, nullable=False),
        *extra,
    )


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(256), nullable=True),
    sa.Column("created_at", sa.BigInteger(), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("created_at", sa.BigInteger(), nullable=False),
)

# Failed sign-ins (migration 0013): one row per try for its user name ("name:...") and one for
# its client address ("address:..."), counted within a window by every server process.
login_failures = sa.Table(
    "login_failures",
    metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("subject", sa.String(320), nullable=False),
    sa.Column("at_ms", sa.BigInteger(), nullable=False),
    sa.Index("ix_login_failures_subject_at", "subject", "at_ms"),
    sa.Index("ix_login_failures_at", "at_ms"),
)

# Where deleted objects stood in their lists (migration 0017): a client that deletes what it
# lists, page by page, sends the last id of a page as the next page's `after` cursor, and that id
# must still place the page. Kept for a day (`PURGE_SECONDS` sweeps), then forgotten.
deleted_cursors = sa.Table(
    "deleted_cursors",
    metadata,
    sa.Column("kind", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("deleted_at", sa.BigInteger(), nullable=False),
    sa.Index("ix_deleted_cursors_deleted_at", "deleted_at"),
)

assistants = _object_table("assistants")
threads = _object_table(
    "threads",
    # The chat UI names sessions by its own ids; this column finds a session by that id in one lookup.
    sa.Column("ui_id", sa.String(64), nullable=True, unique=True),
    # How many messages the thread holds, and how many it has ever lost to deletion, kept by every
    # insert and delete of a message in the same transaction (migration 0016): counting a long
    # thread's rows costs a scan of its index, and the history a process remembers is checked
    # against these two (`assistants/runs/_history.py`).
    sa.Column("message_count", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("messages_deleted", sa.BigInteger(), nullable=False, server_default="0"),
)
files = _object_table(
    "files",
    sa.Column("path", sa.String(512), nullable=False),
    # When the file is deleted by the expiry sweep (`expires_after` on upload; migration 0014).
    sa.Column("expires_at", sa.BigInteger(), nullable=True),
    sa.Index("ix_files_expires_at", "expires_at"),
)
messages = _object_table(
    "messages",
    sa.Column("thread_id", sa.String(64), nullable=False),
    sa.Index("ix_messages_thread_seq", "thread_id", "seq"),
)
runs = _object_table(
    "runs",
    sa.Column("thread_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("expires_at", sa.BigInteger(), nullable=True),
    # Which server process executes the run, and until when its claim holds unless renewed: a run
    # whose lease has run out was left by a process that stopped (migration 0010).
    sa.Column("worker_id", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.BigInteger(), nullable=True),
    sa.Index("ix_runs_thread_seq", "thread_id", "seq"),
    # One active run per thread, enforced by the database itself so that two processes racing to
    # start a run cannot both win.
    sa.Index(
        "uq_runs_one_active_per_thread",
        "thread_id",
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    ),
    # Counting a user's active runs (the per-user limit) reads only the active ones.
    sa.Index("ix_runs_active_owner", "owner_id", sqlite_where=sa.text("active"), postgresql_where=sa.text("active")),
)
run_steps = _object_table(
    "run_steps",
    sa.Column("thread_id", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Index("ix_run_steps_run_seq", "run_id", "seq"),
    sa.Index("ix_run_steps_thread_seq", "thread_id", "seq"),
)

# Vector stores -------------------------------------------------------------------------------------

vector_stores = _object_table("vector_stores")
vector_store_file_batches = _object_table(
    "vector_store_file_batches",
    sa.Column("vector_store_id", sa.String(64), nullable=False, index=True),
)
# A vector store file's id is its File's id, so it is unique only within its store; the status and
# the batch are columns because a store's and a batch's file counts are grouped by them in SQL.
vector_store_files = sa.Table(
    "vector_store_files",
    metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False),
    sa.Column("owner_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.BigInteger(), nullable=False),
    sa.Column("data", JSONType, nullable=False),
    sa.Column("vector_store_id", sa.String(64), nullable=False),
    sa.Column("batch_id", sa.String(64), nullable=True, index=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("usage_bytes", sa.BigInteger(), nullable=False),
    # How many times ingestion started on the file: one that keeps taking its process down is failed.
    sa.Column("ingest_attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Index("uq_vector_store_files_store_file", "vector_store_id", "id", unique=True),
    # Recovery after a restart looks for files left `in_progress`.
    sa.Index("ix_vector_store_files_status", "status"),
)

# File search ---------------------------------------------------------------------------------------

search_chunks = sa.Table(
    "search_chunks",
    metadata,
    # On SQLite `seq` is the rowid, which the FTS5 index (external content) uses to find each row.
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("owner_id", sa.String(64), nullable=False),
    sa.Column("vector_store_id", sa.String(64), nullable=False),
    sa.Column("file_id", sa.String(64), nullable=False),
    sa.Column("chunk_index", sa.Integer(), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    # Character offsets into the file's extracted text, so a citation can point back at the source.
    sa.Column("char_start", sa.Integer(), nullable=False),
    sa.Column("char_end", sa.Integer(), nullable=False),
    sa.Column("tokens", sa.Integer(), nullable=False),
    # Replacing or removing a file's chunks in a store, and counting a store, walk this index.
    sa.Index("uq_search_chunks_store_file_index", "vector_store_id", "file_id", "chunk_index", unique=True),
)

# Chunk embeddings for hybrid retrieval (only when an embedding model is configured): one unit
# vector per chunk, little-endian float16, with the model and size that made it, so vectors of
# different models are never compared. Rows go with their chunks (same transaction).
search_vectors = sa.Table(
    "search_vectors",
    metadata,
    sa.Column("chunk_id", sa.String(64), primary_key=True),
    sa.Column("owner_id", sa.String(64), nullable=False),
    sa.Column("vector_store_id", sa.String(64), nullable=False),
    sa.Column("file_id", sa.String(64), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("dimensions", sa.Integer(), nullable=False),
    sa.Column("vector", sa.LargeBinary(), nullable=False),
    # A search loads one model's vectors of some stores; removing a file's chunks walks this too.
    sa.Index("ix_search_vectors_store_model", "vector_store_id", "model", "file_id"),
)

# Bumped in every transaction that changes a store's chunks, so a process that keeps a store's
# vectors in memory can tell, with one primary-key read, whether they are still current.
search_generations = sa.Table(
    "search_generations",
    metadata,
    sa.Column("vector_store_id", sa.String(64), primary_key=True),
    sa.Column("generation", sa.BigInteger(), nullable=False),
)

# Every run event, in order (`seq`), so other processes and reconnecting clients can follow an
# assistant's runs from a cursor (assistants/event_log.py).
run_events = sa.Table(
    "run_events",
    metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("assistant_id", sa.String(64), nullable=False),
    sa.Column("thread_id", sa.String(64), nullable=True),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("data", JSONType, nullable=False),
    sa.Column("created_at", sa.BigInteger(), nullable=False),
    sa.Index("ix_run_events_assistant_seq", "assistant_id", "seq"),
    sa.Index("ix_run_events_created_at", "created_at"),
)

# The full-text machinery differs by dialect and is created by migrations in raw SQL, outside this
# metadata: on SQLite an FTS5 table (with its shadow tables) and its update trigger, on PostgreSQL
# the posting tables of migration 0015 (before it, a generated `tsvector` column and its GIN
# index). Schema comparisons skip these names.
SEARCH_FTS_TABLE = "search_chunks_fts"
SEARCH_FTS_SHADOW_TABLES = frozenset(
    f"{SEARCH_FTS_TABLE}_{suffix}" for suffix in ("data", "idx", "docsize", "config")
)
SEARCH_FTS_CONTENT_VIEW = "search_chunks_fts_content"  # migration 0008: the FTS5 table's content
SEARCH_TSV_COLUMN = "tsv"  # until migration 0015
SEARCH_TSV_INDEX = "ix_search_chunks_tsv"  # until migration 0015
# Migration 0015: PostgreSQL's posting lists and file lengths (assistants/search/postings.py).
SEARCH_POSTGRES_TABLES = frozenset({"search_postings", "search_file_lengths"})


def outside_metadata(name: str | None, type_: str) -> bool:
    """Whether a reflected object is dialect-specific search machinery that this metadata omits."""
    if type_ == "table":
        return (
            name in (SEARCH_FTS_TABLE, SEARCH_FTS_CONTENT_VIEW)
            or name in SEARCH_FTS_SHADOW_TABLES
            or name in SEARCH_POSTGRES_TABLES
        )
    if type_ == "column":
        return name == SEARCH_TSV_COLUMN
    if type_ == "index":
        return name == SEARCH_TSV_INDEX
    return False
