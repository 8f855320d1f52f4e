"""Index run steps by thread, so showing a session reads its own steps and not every user's.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_run_steps_thread_seq", "run_steps", ["thread_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_run_steps_thread_seq", table_name="run_steps")
