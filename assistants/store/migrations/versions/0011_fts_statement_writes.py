"""SQLite: the FTS5 index is written by one statement per file, not by row triggers.

Row triggers made FTS5 write its pending terms out for every chunk (each trigger statement ends
FTS5's transaction of pending data), so indexing a file's chunks cost about three times what one
`INSERT ... SELECT` into the index costs. `SqlChunkIndex` now adds a file's rows to the index, and
takes them out, in one statement each, in the transaction that writes the chunks; the insert and
delete triggers go. The update trigger stays (the index never updates chunks, but a manual fix
of a chunk's text keeps the index right). PostgreSQL is unchanged (its `tsv` column is generated).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_SCOPE = "hex({row}.owner_id) || 'x' || hex({row}.vector_store_id) || 'x0'"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS search_chunks_fts_insert")
        op.execute("DROP TRIGGER IF EXISTS search_chunks_fts_delete")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER search_chunks_fts_insert AFTER INSERT ON search_chunks BEGIN "
            f"INSERT INTO search_chunks_fts(rowid, text, scope) VALUES (new.seq, new.text, {_SCOPE.format(row='new')}); END"
        )
        op.execute(
            "CREATE TRIGGER search_chunks_fts_delete AFTER DELETE ON search_chunks BEGIN "
            "INSERT INTO search_chunks_fts(search_chunks_fts, rowid, text, scope) "
            f"VALUES ('delete', old.seq, old.text, {_SCOPE.format(row='old')}); END"
        )
