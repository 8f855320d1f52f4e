"""Deleted objects keep their place in lists for a while: `deleted_cursors` holds the id, kind,
owner and `seq` of each object deleted by id, so that a page cursor naming it (`after`, `before`)
still places the next page, as when a client deletes every object it lists, page by page.

Nothing deleted before this revision is remembered; the table starts empty.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deleted_cursors",
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_deleted_cursors_deleted_at", "deleted_cursors", ["deleted_at"])


def downgrade() -> None:
    op.drop_index("ix_deleted_cursors_deleted_at", table_name="deleted_cursors")
    op.drop_table("deleted_cursors")
