"""PostgreSQL: file search ranks posting lists with BM25 instead of `ts_rank_cd` over a `tsvector`.

Migration 0004's generated `tsv` column and its GIN index found every chunk holding any query
word, and `ts_rank_cd` then scored each one (about 10 µs a match, 29,000 matches for some
three-word queries over 100,000 chunks). They go. In their place:

- `search_postings`: per (store, owner, term, file), the packed posting list of the file's chunks
  that hold the term (`assistants/search/postings.py`: chunk `seq`, term frequency, chunk length),
  in parts of at most 100 chunks. Its primary key leads with the scope and the term, so a search
  reads only its own words in its own scopes, and includes the postings, so it reads them from
  adjacent index pages rather than from one heap page per row; a second index serves removing a
  file.
- `search_file_lengths`: per (store, file), its owner, chunks and words, for BM25's document count
  and average length.

Chunks already indexed are counted into both tables here, file by file, with the index's own
word counting, so an upgraded database searches as a new one does. SQLite is unchanged (FTS5).
The downgrade drops both tables and brings back the generated column and its GIN index, which
PostgreSQL recomputes from the chunks' text.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

POSTGRES_UP = [
    "CREATE TABLE search_postings ("
    " vector_store_id varchar(64) NOT NULL, owner_id varchar(64) NOT NULL, term text NOT NULL,"
    " file_id varchar(64) NOT NULL, part integer NOT NULL, postings bytea NOT NULL,"
    " CONSTRAINT pk_search_postings PRIMARY KEY (vector_store_id, owner_id, term, file_id, part) INCLUDE (postings))",
    "CREATE INDEX ix_search_postings_file ON search_postings (vector_store_id, file_id)",
    "CREATE TABLE search_file_lengths ("
    " vector_store_id varchar(64) NOT NULL, file_id varchar(64) NOT NULL, owner_id varchar(64) NOT NULL,"
    " chunks integer NOT NULL, words bigint NOT NULL,"
    " CONSTRAINT pk_search_file_lengths PRIMARY KEY (vector_store_id, file_id))",
]
POSTGRES_DROP_TSV = [
    "DROP INDEX IF EXISTS ix_search_chunks_tsv",
    "ALTER TABLE search_chunks DROP COLUMN IF EXISTS tsv",
    # Most chunks' text is long enough to be compressed; lz4 does it several times faster than
    # PostgreSQL's default (pglz), which ingestion feels. Rows already stored keep theirs.
    "ALTER TABLE search_chunks ALTER COLUMN text SET COMPRESSION lz4",
]
# Migration 0004's full-text objects, as it made them.
POSTGRES_DOWN = [
    "ALTER TABLE search_chunks ALTER COLUMN text SET COMPRESSION default",
    "DROP TABLE IF EXISTS search_file_lengths",
    "DROP TABLE IF EXISTS search_postings",
    "ALTER TABLE search_chunks ADD COLUMN tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED",
    "CREATE INDEX ix_search_chunks_tsv ON search_chunks USING gin (tsv)",
]

_chunks = sa.table(
    "search_chunks",
    sa.column("seq", sa.BigInteger),
    sa.column("owner_id", sa.String),
    sa.column("vector_store_id", sa.String),
    sa.column("file_id", sa.String),
    sa.column("chunk_index", sa.Integer),
    sa.column("text", sa.Text),
)


def _backfill() -> None:
    """Count every indexed file's chunks into the new tables, one file at a time."""
    # Imported here: the index's word counting is what searches will look terms up by.
    from assistants.search.postings import file_postings, posting_rows

    bind = op.get_bind()
    files = bind.execute(
        sa.select(_chunks.c.owner_id, _chunks.c.vector_store_id, _chunks.c.file_id).distinct()
    ).all()
    for owner, store, file in files:
        rows = bind.execute(
            sa.select(_chunks.c.seq, _chunks.c.text)
            .where(_chunks.c.owner_id == owner, _chunks.c.vector_store_id == store, _chunks.c.file_id == file)
            .order_by(_chunks.c.chunk_index)
        ).all()
        postings = file_postings([str(row.text) for row in rows], [int(row.seq) for row in rows])
        keys = {"store": store, "owner": owner, "file": file}
        bind.execute(
            sa.text(
                "INSERT INTO search_file_lengths (vector_store_id, file_id, owner_id, chunks, words)"
                " VALUES (:store, :file, :owner, :chunks, :words)"
            ),
            {**keys, "chunks": postings.chunks, "words": postings.words},
        )
        if postings.lists:
            bind.execute(
                sa.text(
                    "INSERT INTO search_postings (vector_store_id, owner_id, term, file_id, part, postings)"
                    " VALUES (:store, :owner, :term, :file, :part, :postings)"
                ),
                [{**keys, "term": term, "part": part, "postings": packed} for term, part, packed in posting_rows(postings)],
            )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in POSTGRES_UP:
        op.execute(statement)
    _backfill()
    for statement in POSTGRES_DROP_TSV:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in POSTGRES_DOWN:
        op.execute(statement)
