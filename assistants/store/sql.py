"""The SQL store: SQLAlchemy 2 async over SQLite (WAL) or PostgreSQL.

Every object belongs to an owner; every read takes the owner and a foreign id reads as missing.
Writes that must happen together run in one `transaction()`. Pagination is done in SQL: a page
query fetches `limit + 1` rows past a cursor's `seq`, never a whole list.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..exceptions import ConfigurationError, InvalidRequestError, NotFoundError
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
from ..types.objects import FileCounts, MessageCreationDetails
from . import schema, sqlite_driver
from .base import ListParams, Page
from .turns import WriteTurns

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


class StoreTx:
    """Store operations on one connection; inside `transaction()` they commit or roll back together."""

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
        try:
            await self.conn.execute(table.insert().values(**values))
        except IntegrityError as exc:
            refused = _write_refused(table, exc)
            if refused is None:
                raise
            raise refused from exc

    async def save(self, obj: BaseModel) -> None:
        """Write back a changed object (same id)."""
        table, _ = _table_for(type(obj))
        try:
            await self.conn.execute(
                table.update()
                .where(table.c.id == _id(obj))
                .values(data=_data(obj), **_columns_for(obj))
            )
        except IntegrityError as exc:
            refused = _write_refused(table, exc)
            if refused is None:
                raise
            raise refused from exc

    async def save_partial_texts(self, texts: Mapping[str, str]) -> None:
        """Set the text of messages still `in_progress` (answers being streamed), by message id,
        in one statement. Nothing else of them changes (metadata a client set meanwhile stays),
        and a message that has ended meanwhile is left alone."""
        if not texts:
            return
        table = schema.messages
        content = sa.bindparam("content", type_=sa.String())
        if self.conn.dialect.name == "postgresql":
            data: Any = sa.func.jsonb_set(table.c.data, sa.literal_column("'{content}'"), sa.cast(content, JSONB))
        else:
            data = sa.func.json_set(table.c.data, "$.content", sa.func.json(content))
        query = (
            table.update()
            .where(table.c.id == sa.bindparam("message_id"), table.c.data["status"].as_string() == "in_progress")
            .values(data=data)
        )
        rows = [{"message_id": message_id, "content": _text_content(text)} for message_id, text in texts.items()]
        await self.conn.execute(query, rows)

    async def find(self, cls: type[T], object_id: str, *, owner: str | None) -> T | None:
        """The object, or None when it does not exist or belongs to someone else."""
        table, _ = _table_for(cls)
        query = sa.select(table.c.data).where(table.c.id == object_id)
        if owner is not None:
            query = query.where(table.c.owner_id == owner)
        row = (await self.conn.execute(query)).first()
        return None if row is None else cls.model_validate(row[0])

    async def get(self, cls: type[T], object_id: str, *, owner: str | None, param: str | None = None) -> T:
        """The object, or `NotFoundError` in OpenAI's words ("No assistant found with id ...")."""
        found = await self.find(cls, object_id, owner=owner)
        if found is None:
            _, label = _table_for(cls)
            raise NotFoundError(f"No {label} found with id '{object_id}'.", param=param)
        return found

    async def thread_by_ui_id(self, ui_id: str) -> tuple[str, Thread] | None:
        """The thread (and its owner) that the chat UI knows by `ui_id`."""
        table = schema.threads
        row = (await self.conn.execute(sa.select(table.c.owner_id, table.c.data).where(table.c.ui_id == ui_id))).first()
        return None if row is None else (str(row[0]), Thread.model_validate(row[1]))

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
        result = await self.conn.execute(query)
        if result.rowcount and table is schema.threads:
            for child in (schema.messages, schema.runs, schema.run_steps):
                await self.conn.execute(child.delete().where(child.c.thread_id == object_id))
        return bool(result.rowcount)

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

    async def messages_page_desc(
        self, thread_id: str, *, limit: int, before_seq: int | None
    ) -> builtins.list[tuple[int, Message]]:
        """Up to `limit` messages of a thread, newest first, older than `before_seq` when given.

        Returns `(seq, message)` pairs so a caller can walk further back from the last one.
        """
        table = schema.messages
        query = (
            sa.select(table.c.seq, table.c.data)
            .where(table.c.thread_id == thread_id)
            .order_by(table.c.seq.desc())
            .limit(limit)
        )
        if before_seq is not None:
            query = query.where(table.c.seq < before_seq)
        rows = (await self.conn.execute(query)).all()
        return [(int(row[0]), Message.model_validate(row[1])) for row in rows]

    async def run_steps(self, run_id: str) -> builtins.list[RunStep]:
        """All steps of a run, in the order they were created."""
        table = schema.run_steps
        query = sa.select(table.c.data).where(table.c.run_id == run_id).order_by(table.c.seq)
        return [RunStep.model_validate(row[0]) for row in (await self.conn.execute(query)).all()]

    async def thread_history(self, thread_id: str) -> tuple[builtins.list[Message], builtins.list[Run], builtins.list[RunStep]]:
        """Everything a thread holds, each kind in creation order: for showing a whole session."""
        result: builtins.list[builtins.list[Any]] = []
        for table, model in ((schema.messages, Message), (schema.runs, Run), (schema.run_steps, RunStep)):
            query = sa.select(table.c.data).where(table.c.thread_id == thread_id).order_by(table.c.seq)
            result.append([model.model_validate(row[0]) for row in (await self.conn.execute(query)).all()])
        return result[0], result[1], result[2]

    async def thread_tail(
        self, thread_id: str, user_messages: int
    ) -> tuple[builtins.list[Message], builtins.list[Run], builtins.list[RunStep], int]:
        """The thread from its `user_messages`-th newest user message on (all of it for 0), and how
        many user messages it holds: for showing the latest turns of a long session without reading
        the rest.

        The runs kept are those placed after a kept message, or after one deleted since (they show
        last); runs placed after an earlier message, or before every message, belong to earlier turns.
        A turn starts at each user message: the engine stores them without a `run_id` (additional
        messages of a run included), which is what the chat's rendering assumes too.
        """
        messages = schema.messages
        user_seqs = (
            (
                await self.conn.execute(
                    sa.select(messages.c.seq)
                    .where(messages.c.thread_id == thread_id, messages.c.data["role"].as_string() == "user")
                    .order_by(messages.c.seq)
                )
            )
            .scalars()
            .all()
        )
        if user_messages <= 0 or len(user_seqs) <= user_messages:
            return (*await self.thread_history(thread_id), len(user_seqs))
        cutoff = user_seqs[-user_messages]
        runs = schema.runs
        placed_after = runs.c.data["after_message_id"].as_string()
        earlier = sa.select(messages.c.id).where(messages.c.thread_id == thread_id, messages.c.seq < cutoff)
        kept_runs = [
            Run.model_validate(row[0])
            for row in await self.conn.execute(
                sa.select(runs.c.data)
                .where(runs.c.thread_id == thread_id, placed_after.is_not(None), placed_after.not_in(earlier))
                .order_by(runs.c.seq)
            )
        ]
        steps: builtins.list[RunStep] = []
        if kept_runs:
            table = schema.run_steps
            steps = [
                RunStep.model_validate(row[0])
                for row in await self.conn.execute(
                    sa.select(table.c.data)
                    .where(table.c.thread_id == thread_id, table.c.run_id.in_([r.id for r in kept_runs]))
                    .order_by(table.c.seq)
                )
            ]
        # A kept run's answer may be older than the cut: a run placed after a deleted message.
        written = [s.step_details.message_creation.message_id for s in steps if isinstance(s.step_details, MessageCreationDetails)]
        rows = (
            await self.conn.execute(
                sa.select(messages.c.data)
                .where(
                    messages.c.thread_id == thread_id,
                    sa.or_(messages.c.seq >= cutoff, messages.c.id.in_(written)) if written else messages.c.seq >= cutoff,
                )
                .order_by(messages.c.seq)
            )
        ).all()
        kept_messages = [Message.model_validate(row[0]) for row in rows]
        return kept_messages, kept_runs, steps, len(user_seqs)

    async def expired_files(self, now: int, limit: int = 100) -> builtins.list[tuple[str, str]]:
        """(owner, file id) of up to `limit` files whose `expires_at` has come, oldest first."""
        table = schema.files
        query = (
            sa.select(table.c.owner_id, table.c.id)
            .where(table.c.expires_at.is_not(None), table.c.expires_at <= now)
            .order_by(table.c.expires_at)
            .limit(limit)
        )
        return [(str(row[0]), str(row[1])) for row in (await self.conn.execute(query)).all()]

    async def files_by_id(self, file_ids: builtins.list[str], *, owner: str) -> dict[str, File]:
        """The owner's files among `file_ids`."""
        if not file_ids:
            return {}
        table = schema.files
        query = sa.select(table.c.data).where(table.c.id.in_(file_ids), table.c.owner_id == owner)
        files = [File.model_validate(row[0]) for row in (await self.conn.execute(query)).all()]
        return {f.id: f for f in files}

    async def stored_files(self, file_ids: builtins.list[str], *, owner: str) -> builtins.list[tuple[File, str]]:
        """The owner's files among `file_ids` with where their bytes are, in the order asked."""
        if not file_ids:
            return []
        table = schema.files
        query = sa.select(table.c.data, table.c.path).where(table.c.id.in_(file_ids), table.c.owner_id == owner)
        found: dict[str, tuple[File, str]] = {}
        for row in (await self.conn.execute(query)).all():
            file = File.model_validate(row[0])
            found[file.id] = (file, str(row[1]))
        return [found[i] for i in dict.fromkeys(file_ids) if i in found]

    async def attached_file_ids(self, thread_id: str, tool: str) -> builtins.list[str]:
        """Ids of the files attached to the thread's messages for `tool`, oldest first.

        Attachments live inside each message's JSON, which SQLite and PostgreSQL query differently,
        so the messages are filtered here. The database first narrows them to those whose JSON
        names the tool at all, which keeps a long session's run start from reading every message.
        """
        table = schema.messages
        query = (
            sa.select(table.c.data)
            .where(table.c.thread_id == thread_id, sa.cast(table.c.data, sa.Text).contains(f'"{tool}"', autoescape=True))
            .order_by(table.c.seq)
        )
        ids: builtins.list[str] = []
        for row in (await self.conn.execute(query)).all():
            for attachment in row[0].get("attachments") or []:
                if any(t.get("type") == tool for t in attachment.get("tools") or []):
                    ids.append(attachment["file_id"])
        return ids

    async def delete_messages_after(self, thread_id: str, message_id: str) -> int:
        """Delete every message of a thread created after `message_id` (used to edit and re-run)."""
        table = schema.messages
        seq = (await self.conn.execute(sa.select(table.c.seq).where(table.c.id == message_id))).scalar()
        if seq is None:
            return 0
        result = await self.conn.execute(table.delete().where(table.c.thread_id == thread_id, table.c.seq > seq))
        return int(result.rowcount or 0)

    async def count_messages(self, thread_id: str) -> int:
        """How many messages a thread holds."""
        table = schema.messages
        query = sa.select(sa.func.count()).select_from(table).where(table.c.thread_id == thread_id)
        return int((await self.conn.execute(query)).scalar_one())

    async def active_run(self, thread_id: str) -> Run | None:
        """The thread's active run, if any (at most one, by a unique index)."""
        table = schema.runs
        row = (await self.conn.execute(sa.select(table.c.data).where(table.c.thread_id == thread_id, table.c.active))).first()
        return None if row is None else Run.model_validate(row[0])

    async def take_turns_starting_runs(self, owner: str) -> None:
        """Make this transaction wait for any other one starting a run for `owner` to end, so that
        counting the owner's active runs after inserting one sees every run started before.

        PostgreSQL: a transaction-scoped advisory lock per owner (taken again in the same
        transaction, it is held already); the count after it sees the runs committed meanwhile
        because transactions run at READ COMMITTED. SQLite needs none: its writes take turns on the
        database, and a write transaction reads what the writes before it left. That holds because
        Python's sqlite3 (legacy transaction control, as SQLAlchemy leaves it) opens the transaction
        at the first write, so no earlier read in it pins an older snapshot; an explicit `BEGIN`
        at the start would make simultaneous starts fail with SQLITE_BUSY_SNAPSHOT instead.
        """
        if self.conn.dialect.name == "postgresql":
            await self.conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:owner))"),
                {"space": RUN_START_LOCK_SPACE, "owner": owner},
            )

    # Failed sign-ins (the login throttle) -----------------------------------------------------

    async def take_turns_signing_in(self, subjects: builtins.list[str]) -> None:
        """Make this transaction wait for any other one counting a sign-in for these subjects (user
        name, client address) to end, so that a count after inserting sees every try before it.
        PostgreSQL: transaction-scoped advisory locks, always taken in the order given; SQLite
        needs none (its writes take turns, and a write transaction reads the latest rows)."""
        if self.conn.dialect.name == "postgresql":
            for subject in subjects:
                # Names and addresses lock in key spaces of their own: a name whose hash equals an
                # address's cannot make two tries take the same two locks in opposite orders.
                space = SIGN_IN_NAME_LOCK_SPACE if subject.startswith("name:") else SIGN_IN_ADDRESS_LOCK_SPACE
                await self.conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:subject))"),
                    {"space": space, "subject": subject},
                )

    async def add_login_failures(self, subjects: builtins.list[str], at_ms: int) -> builtins.list[int]:
        """Count a try against each subject; the rows' `seq`s, in order."""
        table = schema.login_failures
        seqs = []
        for subject in subjects:
            result = await self.conn.execute(table.insert().values(subject=subject, at_ms=at_ms).returning(table.c.seq))
            seqs.append(int(result.scalar_one()))
        return seqs

    async def recent_login_failures(self, subject: str, *, since_ms: int, limit: int, besides: int) -> builtins.list[int]:
        """When the subject's newest `limit` tries after `since_ms` were made, newest first,
        leaving out the row `besides` (the try being decided)."""
        table = schema.login_failures
        query = (
            sa.select(table.c.at_ms)
            .where(table.c.subject == subject, table.c.at_ms > since_ms, table.c.seq != besides)
            .order_by(table.c.at_ms.desc())
            .limit(limit)
        )
        return [int(value) for value in (await self.conn.execute(query)).scalars()]

    async def forget_login_failures(self, *, subject: str, seq: int) -> None:
        """Clear every try of `subject` (a user name that signed in) and the row `seq` (that try's
        address row: a right password does not count against its address)."""
        table = schema.login_failures
        await self.conn.execute(table.delete().where(sa.or_(table.c.subject == subject, table.c.seq == seq)))

    async def prune_login_failures(self, before_ms: int, subjects: builtins.list[str] | None = None) -> None:
        """Forget tries made at or before `before_ms` (outside every window): of `subjects`, or of all."""
        table = schema.login_failures
        query = table.delete().where(table.c.at_ms <= before_ms)
        if subjects is not None:
            query = query.where(table.c.subject.in_(subjects))
        await self.conn.execute(query)

    async def count_active_runs(self, owner: str) -> int:
        """How many runs of the owner are active (queued, in progress, waiting for tools, cancelling)."""
        table = schema.runs
        query = sa.select(sa.func.count()).select_from(table).where(table.c.owner_id == owner, table.c.active)
        return int((await self.conn.execute(query)).scalar_one())

    async def expired_runs(self, now: int) -> builtins.list[tuple[str, Run]]:
        """Runs still waiting for tool outputs past their `expires_at`, with their owners."""
        table = schema.runs
        query = sa.select(table.c.owner_id, table.c.data).where(
            table.c.active, table.c.status == "requires_action", table.c.expires_at <= now
        )
        return [(str(row[0]), Run.model_validate(row[1])) for row in (await self.conn.execute(query)).all()]

    async def vector_stores_with_chunks(self) -> builtins.list[VectorStore]:
        """Vector stores that still have chunks in the index (the expiry purge checks these)."""
        table, chunks = schema.vector_stores, schema.search_chunks
        has_chunks = sa.select(chunks.c.seq).where(chunks.c.vector_store_id == table.c.id).exists()
        query = sa.select(table.c.data).where(has_chunks)
        return [VectorStore.model_validate(row[0]) for row in (await self.conn.execute(query)).all()]

    async def unfinished_runs(self) -> builtins.list[tuple[str, Run]]:
        """Runs that are active in the database, for recovery after a crash."""
        table = schema.runs
        query = sa.select(table.c.owner_id, table.c.data).where(table.c.active)
        return [(str(row[0]), Run.model_validate(row[1])) for row in (await self.conn.execute(query)).all()]

    async def lease_runs(self, run_ids: builtins.list[str], worker_id: str, until: int) -> None:
        """Claim (or renew the claim on) runs this process executes, until Unix time `until`."""
        if not run_ids:
            return
        table = schema.runs
        await self.conn.execute(
            table.update().where(table.c.id.in_(run_ids)).values(worker_id=worker_id, lease_until=until)
        )

    async def run_lease(self, run_id: str, *, lock: bool = False) -> tuple[str | None, int | None]:
        """`(worker_id, lease_until)` of a run; `lock` holds its row until the transaction ends
        (PostgreSQL; SQLite transactions that write are serialized anyway)."""
        table = schema.runs
        query = sa.select(table.c.worker_id, table.c.lease_until).where(table.c.id == run_id)
        if lock and self.conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        return (None, None) if row is None else (row.worker_id, row.lease_until)

    async def run_statuses(self, run_ids: builtins.list[str]) -> dict[str, str]:
        """The stored status of each of these runs."""
        if not run_ids:
            return {}
        table = schema.runs
        query = sa.select(table.c.id, table.c.status).where(table.c.id.in_(run_ids))
        return {str(row.id): str(row.status) for row in (await self.conn.execute(query)).all()}

    async def abandoned_runs(self, now: int) -> builtins.list[tuple[str, Run]]:
        """Runs still working (queued, in progress, cancelling) whose executing process's lease ran
        out, or that no process ever claimed: their process stopped."""
        table = schema.runs
        query = sa.select(table.c.owner_id, table.c.data).where(
            table.c.active,
            table.c.status.in_(("queued", "in_progress", "cancelling")),
            sa.or_(table.c.lease_until.is_(None), table.c.lease_until < now),
        )
        return [(str(row[0]), Run.model_validate(row[1])) for row in (await self.conn.execute(query)).all()]

    async def file_path(self, file_id: str, *, owner: str | None) -> str:
        """Where a file's bytes are kept."""
        table = schema.files
        query = sa.select(table.c.path).where(table.c.id == file_id)
        if owner is not None:
            query = query.where(table.c.owner_id == owner)
        path = (await self.conn.execute(query)).scalar()
        if path is None:
            raise NotFoundError(f"No file found with id '{file_id}'.", param="file_id")
        return str(path)

    # Vector store files --------------------------------------------------------------------------

    async def vector_store_file(self, vector_store_id: str, file_id: str, *, owner: str | None) -> VectorStoreFile | None:
        """A file of a vector store, or None when it is not in that store (or not the owner's)."""
        table = schema.vector_store_files
        query = sa.select(table.c.data).where(table.c.vector_store_id == vector_store_id, table.c.id == file_id)
        if owner is not None:
            query = query.where(table.c.owner_id == owner)
        row = (await self.conn.execute(query)).first()
        return None if row is None else VectorStoreFile.model_validate(row[0])

    async def save_vector_store_file(self, file: VectorStoreFile, *, if_status: str | None = None) -> bool:
        """Write back a changed vector store file; False if it has left its store meanwhile.

        With `if_status`, the write happens only if the stored status still is that one: a
        compare-and-set in SQL, so that ingestion finishing a file and a batch cancelling it
        cannot both win (a read-then-write would let the later writer silently undo the other).
        """
        table = schema.vector_store_files
        query = table.update().where(table.c.vector_store_id == file.vector_store_id, table.c.id == file.id)
        if if_status is not None:
            query = query.where(table.c.status == if_status)
        result = await self.conn.execute(query.values(data=_data(file), **_columns_for(file)))
        return bool(result.rowcount)

    async def delete_vector_store_file(self, vector_store_id: str, file_id: str) -> bool:
        """Take a file out of a vector store (its chunks are the index's business)."""
        table = schema.vector_store_files
        result = await self.conn.execute(
            table.delete().where(table.c.vector_store_id == vector_store_id, table.c.id == file_id)
        )
        return bool(result.rowcount)

    async def delete_vector_store_rows(self, vector_store_id: str) -> None:
        """Delete a vector store's file and batch rows (not the store's own row)."""
        for table in (schema.vector_store_files, schema.vector_store_file_batches):
            await self.conn.execute(table.delete().where(table.c.vector_store_id == vector_store_id))

    async def vector_store_files_where(self, **columns: Any) -> builtins.list[tuple[str, VectorStoreFile]]:
        """Vector store files matching column values (e.g. `status`, `batch_id`), with their owners."""
        table = schema.vector_store_files
        query = sa.select(table.c.owner_id, table.c.data).where(
            *(table.c[name] == value for name, value in columns.items())
        ).order_by(table.c.seq)
        return [(str(row[0]), VectorStoreFile.model_validate(row[1])) for row in (await self.conn.execute(query)).all()]

    async def file_counts(self, column: str, keys: builtins.list[str]) -> dict[str, tuple[FileCounts, int]]:
        """Per vector store (`column="vector_store_id"`) or batch (`"batch_id"`): counts by status and usage bytes.

        Counted in SQL on every read rather than kept as counters, so they can never drift from
        the files themselves.
        """
        table = schema.vector_store_files
        key = table.c[column]
        query = (
            sa.select(key, table.c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(table.c.usage_bytes), 0))
            .where(key.in_(keys))
            .group_by(key, table.c.status)
        )
        totals: dict[str, dict[str, int]] = {k: {} for k in keys}
        usage: dict[str, int] = dict.fromkeys(keys, 0)
        for row in (await self.conn.execute(query)).all():
            totals[str(row[0])][str(row[1])] = int(row[2])
            usage[str(row[0])] += int(row[3])
        return {
            k: (
                FileCounts(
                    in_progress=counts.get("in_progress", 0),
                    completed=counts.get("completed", 0),
                    failed=counts.get("failed", 0),
                    cancelled=counts.get("cancelled", 0),
                    total=sum(counts.values()),
                ),
                usage[k],
            )
            for k, counts in totals.items()
        }

    # Users and API keys ------------------------------------------------------------------------

    async def insert_user(self, user_id: str, name: str, password_hash: str | None, created_at: int) -> None:
        try:
            await self.conn.execute(
                schema.users.insert().values(id=user_id, name=name, password_hash=password_hash, created_at=created_at)
            )
        except IntegrityError as exc:
            raise InvalidRequestError(f"A user named {name!r} already exists.", param="name") from exc

    async def user_by_name(self, name: str) -> Mapping[str, Any] | None:
        row = (await self.conn.execute(sa.select(schema.users).where(schema.users.c.name == name))).mappings().first()
        return dict(row) if row else None

    async def user_by_id(self, user_id: str) -> Mapping[str, Any] | None:
        row = (await self.conn.execute(sa.select(schema.users).where(schema.users.c.id == user_id))).mappings().first()
        return dict(row) if row else None

    async def set_password(self, user_id: str, password_hash: str) -> None:
        await self.conn.execute(schema.users.update().where(schema.users.c.id == user_id).values(password_hash=password_hash))

    async def user_ids(self) -> builtins.list[str]:
        return [str(row[0]) for row in (await self.conn.execute(sa.select(schema.users.c.id))).all()]

    async def count_users(self) -> int:
        return int((await self.conn.execute(sa.select(sa.func.count()).select_from(schema.users))).scalar_one())

    async def insert_api_key(self, key_id: str, user_id: str, name: str, key_hash: str, created_at: int) -> None:
        await self.conn.execute(
            schema.api_keys.insert().values(id=key_id, user_id=user_id, name=name, key_hash=key_hash, created_at=created_at)
        )

    async def user_id_for_key(self, key_hash: str) -> str | None:
        query = sa.select(schema.api_keys.c.user_id).where(schema.api_keys.c.key_hash == key_hash)
        value = (await self.conn.execute(query)).scalar()
        return None if value is None else str(value)


RUN_START_LOCK_SPACE = 0x72756E73
"""The first key of the per-owner advisory locks that run starts take turns on (PostgreSQL)."""
SIGN_IN_NAME_LOCK_SPACE = 0x6C6F6769
"""The first key of the per-user-name advisory locks sign-in tries take turns on (PostgreSQL)."""
SIGN_IN_ADDRESS_LOCK_SPACE = 0x6C6F6761
"""The first key of the per-client-address advisory locks sign-in tries take turns on (PostgreSQL)."""


class SqlStore:
    """The store: opens connections and transactions. Every operation is a `StoreTx` method."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._write_turns = WriteTurns() if engine.dialect.name == "sqlite" else None

    @classmethod
    def from_url(cls, url: str) -> SqlStore:
        """Build the store for a SQLAlchemy async URL (SQLite files get WAL and a busy timeout)."""
        try:
            if url.startswith("sqlite"):
                database = sa.make_url(url).database
                if database and database != ":memory:" and not sa.make_url(url).query:
                    engine = create_async_engine(url, async_creator=sqlite_driver.connector(database, timeout=30))
                else:
                    engine = create_async_engine(url, connect_args={"timeout": 30})
                event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            elif url.startswith("postgresql"):
                if not url.startswith("postgresql+asyncpg"):
                    raise ConfigurationError(
                        "ASSISTANTS_DATABASE_URL must use the asyncpg driver: postgresql+asyncpg://user@host/db"
                    )
                engine = create_async_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)
            else:
                raise ConfigurationError(
                    f"ASSISTANTS_DATABASE_URL {url.split(':', 1)[0]!r} is not supported; "
                    "use sqlite+aiosqlite:///path or postgresql+asyncpg://..."
                )
        except sa.exc.ArgumentError as exc:
            raise ConfigurationError(f"ASSISTANTS_DATABASE_URL is not a valid URL: {exc}") from exc
        return cls(engine)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTx]:
        """A transaction: everything inside commits together or not at all.

        On SQLite the process's transactions take turns (see `turns.WriteTurns`)."""
        if self._write_turns is None:
            async with self.engine.begin() as conn:
                yield StoreTx(conn)
            return
        async with self._write_turns.turn(), self.engine.begin() as conn:
            yield StoreTx(conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[StoreTx]:
        """A connection for reads."""
        async with self.engine.connect() as conn:
            yield StoreTx(conn)

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    dbapi_connection.create_function(
        "casefold", 1, lambda text: text.casefold() if isinstance(text, str) else text, deterministic=True
    )
