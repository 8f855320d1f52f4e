"""Run leases: which process executes a run (`worker_id`) and until when its claim holds
(`lease_until`), so processes sharing a database can tell a live run from an abandoned one.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("worker_id", sa.String(64), nullable=True))
    op.add_column("runs", sa.Column("lease_until", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite has it since 3.35): a batch rebuild of `runs` would
    # have to carry its partial unique index over by hand.
    op.drop_column("runs", "lease_until")
    op.drop_column("runs", "worker_id")
