"""The store's objects as rows: which table holds each model, the columns derived from it, and the
operations every kind shares (insert, save, find, get, delete, list).

`StoreTx` (in `sql.py`) gathers these with the operations of each area (`_threads`, `_runs`,
`_files`, `_accounts`).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..exceptions import InvalidRequestError, NotFoundError
from ..ids import now
from ..types import (
    Assistant,
    File,
    Message,
    Run,
    RunStep,
    TextContent,
    TextValue,
    Thread,
    VectorStore,
    VectorStoreFile,
    VectorStoreFileBatch,
)
from . import schema
from .base import ListParams, Page

T = TypeVar("T", bound=BaseModel)

_TABLES: list[tuple[type[BaseModel], sa.Table, str]] = [
    (Assistant, schema.assistants, "assistant"),
    (Thread, schema.threads, "thread"),
    (Message, schema.messages, "message"),
    (Run, schema.runs, "run"),
    (RunStep, schema.run_steps, "run step"),
    (File, schema.files, "file"),
    (VectorStore, schema.vector_stores, "vector store"),
    (VectorStoreFileBatch, schema.vector_store_file_batches, "vector store file batch"),
    # Listed for `insert` and `list` only: its ids repeat across stores, so it has its own
    # get, save and delete below.
    (VectorStoreFile, schema.vector_store_files, "vector store file"),
]

ACTIVE_RUN_STATUSES = ("queued", "in_progress", "requires_action", "cancelling")


class ActiveRunConflict(Exception):
    """Raised inside the store when the one-active-run index refuses a second active run."""


UI_ID_LENGTH = cast(sa.String, schema.threads.c.ui_id.type).length or 64
"""The longest `metadata.ui_thread` a thread can carry (its column's size)."""


def _write_refused(table: sa.Table, exc: IntegrityError) -> Exception | None:
    """What a refused insert or update means: another active run, or a chat id already taken
    (None: neither, a bug to show as it is).

    `ui_thread` is unique across all users (the chat looks sessions up by it alone), so a `/v1`
    caller naming another user's chat session learns only that the id is taken.
    """
    if table is schema.runs:
        return ActiveRunConflict(str(exc))
    if table is schema.threads and "ui_id" in str(exc.orig):
        return InvalidRequestError(
            "Invalid 'metadata.ui_thread': another thread already has this chat id. Leave it out: "
            "the chat sets it on the sessions it creates.",
            param="metadata",
        )
    return None


def _table_for(cls: type[BaseModel]) -> tuple[sa.Table, str]:
    for model, table, label in _TABLES:
        if issubclass(cls, model):
            return table, label
    raise TypeError(f"{cls.__name__} is not stored")


def _columns_for(obj: BaseModel) -> dict[str, Any]:
    """The filter columns derived from the object itself, so they can never disagree with `data`."""
    columns: dict[str, Any] = {}
    if isinstance(obj, Thread):
        ui_id = obj.metadata.get("ui_thread")
        if ui_id is not None and len(ui_id) > UI_ID_LENGTH:
            raise InvalidRequestError(
                f"Invalid 'metadata.ui_thread': at most {UI_ID_LENGTH} characters (it is the chat's id for a session).",
                param="metadata",
            )
        columns["ui_id"] = ui_id
    elif isinstance(obj, Message):
        columns["thread_id"] = obj.thread_id
    elif isinstance(obj, Run):
        columns.update(
            thread_id=obj.thread_id,
            status=obj.status.value,
            active=obj.status.value in ACTIVE_RUN_STATUSES,
            expires_at=obj.expires_at,
        )
    elif isinstance(obj, RunStep):
        columns.update(thread_id=obj.thread_id, run_id=obj.run_id)
    elif isinstance(obj, File):
        columns["expires_at"] = obj.expires_at
    elif isinstance(obj, VectorStoreFileBatch):
        columns["vector_store_id"] = obj.vector_store_id
    elif isinstance(obj, VectorStoreFile):
        columns.update(vector_store_id=obj.vector_store_id, status=obj.status, usage_bytes=obj.usage_bytes)
    return columns


def _id(obj: BaseModel) -> str:
    # Every stored model has an `id`; `BaseModel` itself does not say so.
    return str(cast(Any, obj).id)


def _data(obj: BaseModel) -> dict[str, Any]:
    return obj.model_dump(mode="json")


def _text_content(text: str) -> str:
    """A message's `content` holding `text` (none when empty), as JSON."""
    parts = [TextContent(text=TextValue(value=text, annotations=[])).model_dump(mode="json")] if text else []
    return json.dumps(parts)

def _list_kind(table: sa.Table, within: str | None) -> str:
    """The `deleted_cursors.kind` of a table's list (of one vector store's files: with its id)."""
    return table.name if within is None else f"{table.name} {within}"


class ObjectsTx:
    """The connection every `StoreTx` area works on, and the operations all stored kinds share."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert(self, obj: BaseModel, *, owner: str, **extra: Any) -> None:
        """Insert a new object owned by `owner` (extra columns: e.g. a file's `path`)."""
        table, _ = _table_for(type(obj))
        values = {
            "id": _id(obj),
            "owner_id": owner,
            "created_at": cast(Any, obj).created_at,
            "data": _data(obj),
            **_columns_for(obj),
            **extra,
        }
        if table is schema.messages:
            # Counted first: on PostgreSQL that locks the thread's row until the commit (see
            # `lock_thread`), so the messages of one thread also take their `seq` in the order
            # they commit.
            await self._count_messages(values["thread_id"], added=1)
        try:
            await self.conn.execute(table.insert().values(**values))
        except IntegrityError as exc:
            refused = _write_refused(table, exc)
            if refused is None:
                raise
            raise refused from exc

    async def lock_thread(self, thread_id: str) -> None:
        """On PostgreSQL, hold the thread's row until the commit before touching its messages or
        its runs' rows, so that writers of one thread queue in one order and cannot deadlock
        (SQLite writes one transaction at a time anyway)."""
        threads = schema.threads
        await self.conn.execute(sa.select(threads.c.id).where(threads.c.id == thread_id).with_for_update())

    async def _count_messages(self, thread_id: str, *, added: int = 0, deleted: int = 0) -> None:
        """Keep a thread's message counts (`threads.message_count`, `threads.messages_deleted`)
        in step with its rows: called by every insert and delete of messages, in its transaction.

        A message added to a thread that is gone raises `NotFoundError`: on PostgreSQL the
        thread's deletion may commit after the caller read the thread and before this update,
        which then finds no row, and the message would be left without its thread."""
        threads = schema.threads
        result = await self.conn.execute(
            threads.update()
            .where(threads.c.id == thread_id)
            .values(
                message_count=threads.c.message_count + added - deleted,
                messages_deleted=threads.c.messages_deleted + deleted,
            )
        )
        if added and not result.rowcount:
            raise NotFoundError(f"No thread found with id '{thread_id}'.")

    async def save(self, obj: BaseModel) -> None:
        """Write back a changed object (same id)."""
        await self._save_where(obj)

    async def _save_where(self, obj: BaseModel, *conditions: sa.ColumnElement[bool]) -> bool:
        """Write back a changed object if its stored row meets `conditions` too; whether it did."""
        table, _ = _table_for(type(obj))
        try:
            result = await self.conn.execute(
                table.update()
                .where(table.c.id == _id(obj), *conditions)
                .values(data=_data(obj), **_columns_for(obj))
            )
        except IntegrityError as exc:
            refused = _write_refused(table, exc)
            if refused is None:
                raise
            raise refused from exc
        return bool(result.rowcount)

    async def find(self, cls: type[T], object_id: str, *, owner: str | None, lock: bool = False) -> T | None:
        """The object, or None when it does not exist or belongs to someone else.

        `lock` holds its row until the commit (PostgreSQL; SQLite writes one transaction at a time
        anyway), as `lock_thread` does, in the same statement as the read.
        """
        table, _ = _table_for(cls)
        query = sa.select(table.c.data).where(table.c.id == object_id)
        if owner is not None:
            query = query.where(table.c.owner_id == owner)
        if lock and self.conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        return None if row is None else cls.model_validate(row[0])

    async def get(
        self, cls: type[T], object_id: str, *, owner: str | None, param: str | None = None, lock: bool = False
    ) -> T:
        """The object, or `NotFoundError` in OpenAI's words ("No assistant found with id ...")."""
        found = await self.find(cls, object_id, owner=owner, lock=lock)
        if found is None:
            _, label = _table_for(cls)
            raise NotFoundError(f"No {label} found with id '{object_id}'.", param=param)
        return found

    async def owner_of(self, cls: type[BaseModel], object_id: str) -> str | None:
        """Who owns an object (None if it does not exist)."""
        table, _ = _table_for(cls)
        row = (await self.conn.execute(sa.select(table.c.owner_id).where(table.c.id == object_id))).first()
        return None if row is None else str(row[0])

    async def delete(self, cls: type[BaseModel], object_id: str, *, owner: str | None) -> bool:
        """Delete one object; children of threads and runs go with them."""
        table, _ = _table_for(cls)
        query = table.delete().where(table.c.id == object_id)
        if owner is not None:
            query = query.where(table.c.owner_id == owner)
        if table is schema.messages:
            thread_id = (await self.conn.execute(sa.select(table.c.thread_id).where(table.c.id == object_id))).scalar()
            if thread_id is None:
                return False
            # The thread's row first, as every insert and the thread's own deletion take them.
            await self.lock_thread(thread_id)
            await self._remember_place(table, object_id, owner)
            if not (await self.conn.execute(query)).rowcount:
                return False
            await self._count_messages(thread_id, deleted=1)
            return True
        await self._remember_place(table, object_id, owner)
        result = await self.conn.execute(query)
        if result.rowcount and table is schema.threads:
            # The thread's own row (and its counts) is gone already.
            for child in (schema.messages, schema.runs, schema.run_steps):
                await self.conn.execute(child.delete().where(child.c.thread_id == object_id))
        return bool(result.rowcount)

    async def _remember_place(
        self, table: sa.Table, object_id: str, owner: str | None, *, within: str | None = None
    ) -> None:
        """Keep where an object about to be deleted stood in its lists (`deleted_cursors`), so that
        a page cursor naming it still places the next page (nothing when it is not there).

        `within` names the one list an id stands in when the same id is in several (a file in
        vector stores: the store's id); that id may be deleted from it more than once.
        """
        kind = _list_kind(table, within)
        source = sa.select(
            table.c.id, sa.literal(kind), table.c.owner_id, table.c.seq, sa.literal(now(), sa.BigInteger())
        ).where(table.c.id == object_id)
        if owner is not None:
            source = source.where(table.c.owner_id == owner)
        cursors = schema.deleted_cursors
        if within is not None:
            source = source.where(table.c.vector_store_id == within)
            await self.conn.execute(cursors.delete().where(cursors.c.kind == kind, cursors.c.id == object_id))
        await self.conn.execute(
            cursors.insert().from_select(["id", "kind", "owner_id", "seq", "deleted_at"], source)
        )

    async def _deleted_place(
        self, table: sa.Table, cursor: str, owner: str | None, within: str | None = None
    ) -> int | None:
        """Where a deleted object stood in its table's lists, if it was deleted lately."""
        cursors = schema.deleted_cursors
        query = sa.select(cursors.c.seq).where(cursors.c.id == cursor, cursors.c.kind == _list_kind(table, within))
        if owner is not None:
            query = query.where(cursors.c.owner_id == owner)
        seq = (await self.conn.execute(query)).scalar()
        return None if seq is None else int(seq)

    async def forget_deleted_places(self, before: int) -> None:
        """Forget where objects deleted before `before` (Unix seconds) stood."""
        cursors = schema.deleted_cursors
        await self.conn.execute(cursors.delete().where(cursors.c.deleted_at < before))

    async def list(
        self,
        cls: type[T],
        *,
        owner: str | None,
        params: ListParams,
        where: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        title_contains: str | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> Page[T]:
        """One page of objects, filtered by columns and by `metadata` key/values, all in SQL."""
        table, label = _table_for(cls)
        conditions: builtins.list[sa.ColumnElement[bool]] = []
        if owner is not None:
            conditions.append(table.c.owner_id == owner)
        for column, value in (where or {}).items():
            conditions.append(table.c[column] == value)
        for name, value in (fields or {}).items():
            conditions.append(table.c.data[name].as_string() == value)
        sqlite = self.conn.dialect.name == "sqlite"
        for key, value in (metadata or {}).items():
            if sqlite:
                # SQLite (before 3.45) matches JSON path labels against the raw, escaped key text, so
                # keys with quotes, backslashes or non-ASCII characters never match a path: use json_each.
                pairs = sa.func.json_each(table.c.data, "$.metadata").table_valued("key", "value")
                conditions.append(sa.exists(sa.select(1).select_from(pairs).where(pairs.c.key == key, pairs.c.value == value)))
            else:
                conditions.append(table.c.data["metadata"][key].as_string() == value)
        if title_contains:
            escaped = title_contains.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
            title = table.c.data["metadata"]["title"].as_string()
            if sqlite:
                # SQLite's LIKE and lower() fold ASCII only; fold both sides with Python's casefold.
                pattern = "%" + escaped.casefold() + "%"
                conditions.append(sa.func.casefold(title).like(pattern, escape="\\"))
            else:
                pattern = "%" + escaped + "%"
                conditions.append(title.ilike(pattern, escape="\\"))
        descending = params.order == "desc"
        for cursor, param in ((params.after, "after"), (params.before, "before")):
            if cursor is None:
                continue
            seq = (await self.conn.execute(sa.select(table.c.seq).where(table.c.id == cursor, *conditions))).scalar()
            if seq is None:
                # Deleted since it was listed (a client deleting what it pages through): its old
                # place still places the page.
                within = (where or {}).get("vector_store_id") if table is schema.vector_store_files else None
                seq = await self._deleted_place(table, cursor, owner, within)
            if seq is None:
                raise InvalidRequestError(
                    f"Invalid '{param}': no {label} with id '{cursor}' in this list.", param=param
                )
            # `after` walks forward in the list's order; `before` walks backward.
            forward = (param == "after") != descending
            conditions.append(table.c.seq > seq if forward else table.c.seq < seq)
        # A `before` cursor alone reads backwards from the cursor, then restores the list's order.
        reverse = params.before is not None and params.after is None
        ascending = (not descending) != reverse
        query = (
            sa.select(table.c.data)
            .where(*conditions)
            .order_by(table.c.seq.asc() if ascending else table.c.seq.desc())
            .limit(params.limit + 1)
        )
        rows = [row[0] for row in (await self.conn.execute(query)).all()]
        has_more = len(rows) > params.limit
        rows = rows[: params.limit]
        if reverse:
            rows.reverse()
        items = [cls.model_validate(row) for row in rows]
        return Page(
            data=items,
            has_more=has_more,
            first_id=_id(items[0]) if items else None,
            last_id=_id(items[-1]) if items else None,
        )
