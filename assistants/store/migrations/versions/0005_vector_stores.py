"""Vector stores, their files and their file batches.

A vector store file's id is its File's id, unique only within its store, so its table has no
unique `id` but a unique (`vector_store_id`, `id`) pair. `status` and `usage_bytes` are columns
because a store's `file_counts` and `usage_bytes` are computed from them in SQL on every read.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def _object_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("data", JSONType, nullable=False),
    ]


def upgrade() -> None:
    op.create_table("vector_stores", *_object_columns())
    op.create_index("ix_vector_stores_owner_id", "vector_stores", ["owner_id"])

    op.create_table(
        "vector_store_file_batches",
        *_object_columns(),
        sa.Column("vector_store_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_vector_store_file_batches_owner_id", "vector_store_file_batches", ["owner_id"])
    op.create_index("ix_vector_store_file_batches_vector_store_id", "vector_store_file_batches", ["vector_store_id"])

    op.create_table(
        "vector_store_files",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("data", JSONType, nullable=False),
        sa.Column("vector_store_id", sa.String(64), nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("usage_bytes", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_vector_store_files_owner_id", "vector_store_files", ["owner_id"])
    op.create_index("ix_vector_store_files_batch_id", "vector_store_files", ["batch_id"])
    op.create_index("ix_vector_store_files_status", "vector_store_files", ["status"])
    op.create_index("uq_vector_store_files_store_file", "vector_store_files", ["vector_store_id", "id"], unique=True)


def downgrade() -> None:
    op.drop_table("vector_store_files")
    op.drop_table("vector_store_file_batches")
    op.drop_table("vector_stores")
