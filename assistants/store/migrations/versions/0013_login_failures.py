"""Failed sign-ins, counted in the database so that every server process sees them.

Sign-in throttling counted failures in each process's memory, so behind a load balancer each
instance allowed its own five tries per name. A row per failed (or not yet checked) try, for the
user name and for the client address, is what every instance now counts.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("subject", sa.String(320), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_login_failures_subject_at", "login_failures", ["subject", "at_ms"])
    op.create_index("ix_login_failures_at", "login_failures", ["at_ms"])


def downgrade() -> None:
    op.drop_table("login_failures")
