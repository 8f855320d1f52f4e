"""Chat sessions' own vector stores do not expire.

Until vector store expiry was enforced, every thread's own store (made from message attachments,
named "Files of <thread id>") was created with the hosted API's 7-day `expires_after`, chat
sessions' too, and nothing acted on it. Sessions are meant to be come back to, so their stores no
longer expire; this clears the policy from the ones made before, so that enforcing expiry does
not fail (and purge) sessions idle for a week. Other threads' stores keep their policy.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_threads = sa.table("threads", sa.column("id", sa.String), sa.column("data", _JSON))
_stores = sa.table("vector_stores", sa.column("id", sa.String), sa.column("data", _JSON))


def _loaded(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def upgrade() -> None:
    bind = op.get_bind()
    own: dict[str, str] = {}
    for thread_id, raw in bind.execute(sa.select(_threads.c.id, _threads.c.data)):
        data = _loaded(raw)
        metadata = data.get("metadata") or {}
        if "user" not in metadata or "assistant_id" not in metadata:
            continue  # Not a chat session.
        for store_id in ((data.get("tool_resources") or {}).get("file_search") or {}).get("vector_store_ids") or []:
            own[store_id] = thread_id
    for store_id, thread_id in own.items():
        row = bind.execute(sa.select(_stores.c.data).where(_stores.c.id == store_id)).first()
        if row is None:
            continue
        data = _loaded(row[0])
        if data.get("name") == f"Files of {thread_id}" and data.get("expires_after") is not None:
            data.update(expires_after=None, expires_at=None)
            bind.execute(_stores.update().where(_stores.c.id == store_id).values(data=data))


def downgrade() -> None:
    # Nothing to undo: a store without an expiry policy is valid at every revision.
    pass
