"""Chunk embeddings for hybrid file search: `search_vectors`, one compact vector per chunk, and
`search_generations`, a counter per store bumped with every change to its chunks.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_vectors",
        sa.Column("chunk_id", sa.String(64), primary_key=True),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("vector_store_id", sa.String(64), nullable=False),
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_search_vectors_store_model", "search_vectors", ["vector_store_id", "model", "file_id"])
    op.create_table(
        "search_generations",
        sa.Column("vector_store_id", sa.String(64), primary_key=True),
        sa.Column("generation", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("search_generations")
    op.drop_index("ix_search_vectors_store_model", table_name="search_vectors")
    op.drop_table("search_vectors")
