"""SQLite: a scope token per chunk inside the FTS5 index, so a search only ranks its own rows.

Migration 0004's FTS5 table indexes `text` alone, so a search ranks every matching chunk of every
owner and store (computing bm25 and reading each chunk's row to check its owner and store) before
it can take the top hits. This migration adds a second indexed column, `scope`, holding one
token per chunk that names its (owner, store) pair: `hex(owner_id) || 'x' || hex(vector_store_id)
|| 'x0'`. Hex digits never contain `x`, so the token is unique to the pair; it is one unicode61
token, and ending in a digit means the porter stemmer never changes it. A search matches
`{scope}: ("<token>" OR ...) AND {text}: (<words>)`, so FTS5 yields only the asker's in-scope rows,
bm25 (with weight 0 on `scope`) ranks them, and LIMIT keeps the best before any row is read.

The FTS5 table still uses external content: its content is the view `search_chunks_fts_content`,
which derives `scope` from `search_chunks`, so `rebuild` and column reads keep working. The
triggers now also fire when a chunk's owner or store changes. PostgreSQL is unchanged.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _scope(row: str) -> str:
    return f"hex({row}.owner_id) || 'x' || hex({row}.vector_store_id) || 'x0'"


_TOKENIZE = "tokenize='porter unicode61 remove_diacritics 2'"

SQLITE_DROP_0004 = [
    "DROP TRIGGER IF EXISTS search_chunks_fts_update",
    "DROP TRIGGER IF EXISTS search_chunks_fts_delete",
    "DROP TRIGGER IF EXISTS search_chunks_fts_insert",
    "DROP TABLE IF EXISTS search_chunks_fts",
]
SQLITE_UP = [
    *SQLITE_DROP_0004,
    "CREATE VIEW search_chunks_fts_content AS "
    "SELECT seq, text, hex(owner_id) || 'x' || hex(vector_store_id) || 'x0' AS scope FROM search_chunks",
    "CREATE VIRTUAL TABLE search_chunks_fts USING fts5("
    f"text, scope, content='search_chunks_fts_content', content_rowid='seq', {_TOKENIZE})",
    "CREATE TRIGGER search_chunks_fts_insert AFTER INSERT ON search_chunks BEGIN "
    f"INSERT INTO search_chunks_fts(rowid, text, scope) VALUES (new.seq, new.text, {_scope('new')}); END",
    "CREATE TRIGGER search_chunks_fts_delete AFTER DELETE ON search_chunks BEGIN "
    "INSERT INTO search_chunks_fts(search_chunks_fts, rowid, text, scope) "
    f"VALUES ('delete', old.seq, old.text, {_scope('old')}); END",
    "CREATE TRIGGER search_chunks_fts_update AFTER UPDATE OF text, owner_id, vector_store_id ON search_chunks BEGIN "
    "INSERT INTO search_chunks_fts(search_chunks_fts, rowid, text, scope) "
    f"VALUES ('delete', old.seq, old.text, {_scope('old')}); "
    f"INSERT INTO search_chunks_fts(rowid, text, scope) VALUES (new.seq, new.text, {_scope('new')}); END",
    "INSERT INTO search_chunks_fts(search_chunks_fts) VALUES ('rebuild')",
]
# Back to migration 0004's shape.
SQLITE_DOWN = [
    *SQLITE_DROP_0004,
    "DROP VIEW IF EXISTS search_chunks_fts_content",
    f"CREATE VIRTUAL TABLE search_chunks_fts USING fts5(text, content='search_chunks', content_rowid='seq', {_TOKENIZE})",
    "CREATE TRIGGER search_chunks_fts_insert AFTER INSERT ON search_chunks BEGIN "
    "INSERT INTO search_chunks_fts(rowid, text) VALUES (new.seq, new.text); END",
    "CREATE TRIGGER search_chunks_fts_delete AFTER DELETE ON search_chunks BEGIN "
    "INSERT INTO search_chunks_fts(search_chunks_fts, rowid, text) VALUES ('delete', old.seq, old.text); END",
    "CREATE TRIGGER search_chunks_fts_update AFTER UPDATE OF text ON search_chunks BEGIN "
    "INSERT INTO search_chunks_fts(search_chunks_fts, rowid, text) VALUES ('delete', old.seq, old.text); "
    "INSERT INTO search_chunks_fts(rowid, text) VALUES (new.seq, new.text); END",
    "INSERT INTO search_chunks_fts(search_chunks_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_DOWN:
            op.execute(statement)
