"""Threads and their history: messages, run steps, a session's latest turns, answers being streamed."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from ..types import Message, Run, RunStep, Thread
from ..types.objects import MessageCreationDetails
from . import schema
from ._objects import ObjectsTx, _text_content


class MessageCounts(NamedTuple):
    """How many messages a thread holds, and how many it has ever lost to deletion."""

    held: int
    deleted: int


STREAMING = schema.messages.c.data["status"].as_string() == "in_progress"
"""A stored message still `in_progress`: an answer being streamed, whose text may still change."""


class ThreadsTx(ObjectsTx):
    """Reads and writes of a thread's messages and history."""

    async def thread_by_ui_id(self, ui_id: str) -> tuple[str, Thread] | None:
        """The thread (and its owner) that the chat UI knows by `ui_id`: its chat thread's id, or
        for a session the chat never opened (made by `assistants chat` or through `/v1`) its own id."""
        table = schema.threads
        known = sa.or_(table.c.ui_id == ui_id, sa.and_(table.c.id == ui_id, table.c.ui_id.is_(None)))
        row = (await self.conn.execute(sa.select(table.c.owner_id, table.c.data).where(known))).first()
        return None if row is None else (str(row[0]), Thread.model_validate(row[1]))

    async def named_anywhere(self, ids: set[str], *, owner: str) -> set[str]:
        """Those of `ids` that one of the owner's threads, messages, run steps or assistants names
        anywhere in its JSON. Each table is read once for all the ids (a scan of the owner's rows:
        meant for rare actions such as deleting a session)."""
        named: set[str] = set()
        if not ids:
            return named
        for table in (schema.threads, schema.messages, schema.run_steps, schema.assistants):
            text = sa.cast(table.c.data, sa.Text)
            query = sa.select(text).where(table.c.owner_id == owner, sa.or_(*(text.like(f'%"{i}"%') for i in ids)))
            for (row,) in (await self.conn.execute(query)).all():
                named.update(i for i in ids - named if f'"{i}"' in row)
            if named == ids:
                break
        return named

    async def files_in_stores_other_than(
        self, file_ids: set[str], vector_store_ids: builtins.list[str], *, owner: str
    ) -> set[str]:
        """Those of `file_ids` in one of the owner's vector stores other than these."""
        if not file_ids:
            return set()
        table = schema.vector_store_files
        query = sa.select(table.c.id).where(
            table.c.owner_id == owner, table.c.id.in_(file_ids), table.c.vector_store_id.not_in(vector_store_ids)
        )
        return {str(row[0]) for row in (await self.conn.execute(query)).all()}

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
            .where(table.c.id == sa.bindparam("message_id"), STREAMING)
            .values(data=data)
        )
        rows = [{"message_id": message_id, "content": _text_content(text)} for message_id, text in texts.items()]
        await self.conn.execute(query, rows)

    async def save_while_in_progress(self, message: Message) -> bool:
        """Write back a message only if the stored one is still `in_progress` (an answer being
        streamed); False, and nothing written, when it has ended meanwhile."""
        return await self._save_where(message, STREAMING)

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

    async def messages_counted(
        self, thread_id: str, *, after: int | None, limit: int
    ) -> tuple[MessageCounts, builtins.list[tuple[int, Message]]]:
        """A thread's message counts and up to `limit` of its messages, read by one statement, so
        that both come from the same moment even while other transactions commit.

        With `after`, the messages stored after that `seq`, oldest first; without, the newest
        first. Messages come as `(seq, message)` pairs. A thread that does not exist has no
        messages and counts of 0.
        """
        threads, messages = schema.threads, schema.messages
        joined = threads.outerjoin(
            messages,
            sa.and_(messages.c.thread_id == threads.c.id, messages.c.seq > after)
            if after is not None
            else messages.c.thread_id == threads.c.id,
        )
        query = (
            sa.select(threads.c.message_count, threads.c.messages_deleted, messages.c.seq, messages.c.data)
            .select_from(joined)
            .where(threads.c.id == thread_id)
            .order_by(messages.c.seq if after is not None else messages.c.seq.desc())
            .limit(limit)
        )
        rows = (await self.conn.execute(query)).all()
        if not rows:
            return MessageCounts(0, 0), []
        counts = MessageCounts(int(rows[0][0]), int(rows[0][1]))
        return counts, [(int(row[2]), Message.model_validate(row[3])) for row in rows if row[2] is not None]

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
        await self.lock_thread(thread_id)
        result = await self.conn.execute(table.delete().where(table.c.thread_id == thread_id, table.c.seq > seq))
        deleted = int(result.rowcount or 0)
        if deleted:
            await self._count_messages(thread_id, deleted=deleted)
        return deleted

    async def count_messages(self, thread_id: str) -> int:
        """How many messages a thread holds (0 for a thread that does not exist)."""
        table = schema.threads
        count = (await self.conn.execute(sa.select(table.c.message_count).where(table.c.id == thread_id))).scalar()
        return int(count or 0)
