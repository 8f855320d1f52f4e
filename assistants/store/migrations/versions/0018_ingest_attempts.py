"""Vector store files count how often their ingestion started (`ingest_attempts`), so that a file
whose ingestion takes the server down with it (out of memory, a crash in a parser) is not tried
again at every start for ever: at its fourth start it fails instead, saying so.

Files left `in_progress` by an older version start from 0, as if never tried.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vector_store_files") as batch:
        batch.add_column(sa.Column("ingest_attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("vector_store_files") as batch:
        batch.drop_column("ingest_attempts")
