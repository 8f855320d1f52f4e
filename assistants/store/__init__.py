"""Persistence behind one async interface: SQLite by default, PostgreSQL for scale."""

from __future__ import annotations

from ..config import Settings
from ._runs import lease_for
from ._threads import MessageCounts
from .base import ListParams, Page
from .files import FileStore
from .migrate import upgrade
from .sql import ACTIVE_RUN_STATUSES, ActiveRunConflict, SqlStore, StoreTx

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "ActiveRunConflict",
    "FileStore",
    "ListParams",
    "MessageCounts",
    "Page",
    "SqlStore",
    "StoreTx",
    "lease_for",
    "open_store",
]


async def open_store(settings: Settings) -> SqlStore:
    """Create the data folder, connect, and apply migrations."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SqlStore.from_url(settings.resolved_database_url)
    await upgrade(store.engine)
    return store
