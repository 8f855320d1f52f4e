"""File search's chunk table and its full-text index: FTS5 on SQLite, a GIN'd `tsvector` on PostgreSQL.

On SQLite the FTS5 table uses external content (the text is stored once, in `search_chunks`) and
triggers keep it in step with every insert, delete and text update. The tokenizer is `porter`
over `unicode61 remove_diacritics 2`: English stemming so "configuring" finds "configure", as
PostgreSQL's `english` configuration does, and accent folding so "cafe" finds "café".

On PostgreSQL a stored generated column holds `to_tsvector('english', text)`, so the database
keeps it in step by itself, and a GIN index serves `@@`. `english` (not `simple`) stems and drops
stop words; both matter for OR-ed queries, where "the" would otherwise match every chunk.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

SQLITE_UP = [
    "CREATE VIRTUAL TABLE search_chunks_fts USING fts5("
    "text, content='search_chunks', content_rowid='seq', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER search_chunks_fts_insert AFTER INSERT ON search_chunks BEGIN "
    "INSERT INTO search_chunks_fts(rowid, text) VALUES (new.seq, new.text); END",
    "CREATE TRIGGER search_chunks_fts_delete AFTER DELETE ON search_chunks BEGIN "
    "INSERT INTO search_chunks_fts(search_chunks_fts, rowid, text) VALUES ('delete', old.seq, old.text); END",
    "CREATE TRIGGER search_chunks_fts_update AFTER UPDATE OF text ON search_chunks BEGIN "
    "INSERT INTO search_chunks_fts(search_chunks_fts, rowid, text) VALUES ('delete', old.seq, old.text); "
    "INSERT INTO search_chunks_fts(rowid, text) VALUES (new.seq, new.text); END",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS search_chunks_fts_update",
    "DROP TRIGGER IF EXISTS search_chunks_fts_delete",
    "DROP TRIGGER IF EXISTS search_chunks_fts_insert",
    "DROP TABLE IF EXISTS search_chunks_fts",
]
POSTGRES_UP = [
    "ALTER TABLE search_chunks ADD COLUMN tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED",
    "CREATE INDEX ix_search_chunks_tsv ON search_chunks USING gin (tsv)",
]


def upgrade() -> None:
    op.create_table(
        "search_chunks",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("vector_store_id", sa.String(64), nullable=False),
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("char_start", sa.Integer(), nullable=False),
        sa.Column("char_end", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
    )
    op.create_index(
        "uq_search_chunks_store_file_index",
        "search_chunks",
        ["vector_store_id", "file_id", "chunk_index"],
        unique=True,
    )
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_UP if dialect == "sqlite" else POSTGRES_UP:
        op.execute(statement)


def downgrade() -> None:
    # The generated column and its GIN index go with the table on PostgreSQL.
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_DOWN:
            op.execute(statement)
    op.drop_index("uq_search_chunks_store_file_index", table_name="search_chunks")
    op.drop_table("search_chunks")
