"""Threads get `ui_id`: the chat UI's id for a session, unique, so a session is found in one lookup.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("threads") as batch:
        batch.add_column(sa.Column("ui_id", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_threads_ui_id", ["ui_id"])
    # Sessions created before this revision keep their UI id in metadata; copy it over.
    threads = sa.table("threads", sa.column("id", sa.String), sa.column("data", sa.JSON), sa.column("ui_id", sa.String))
    connection = op.get_bind()
    for row in connection.execute(sa.select(threads.c.id, threads.c.data)).all():
        data = row.data if isinstance(row.data, dict) else {}
        ui_id = (data.get("metadata") or {}).get("ui_thread")
        if ui_id:
            connection.execute(threads.update().where(threads.c.id == row.id).values(ui_id=ui_id))


def downgrade() -> None:
    with op.batch_alter_table("threads") as batch:
        batch.drop_constraint("uq_threads_ui_id", type_="unique")
        batch.drop_column("ui_id")
