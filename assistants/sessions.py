"""Sessions: first-class chat sessions, one assistant and one user each, with their own settings.

A session is a thread whose typed fields live in `metadata` (see `types.session.Session`), so the
`/v1` API shows it as an ordinary thread and lists it with `GET /v1/threads?metadata[user]=...`.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .engine import Engine
from .exceptions import InvalidRequestError, NotFoundError
from .ids import new_id, now
from .runs._code import OUTPUT_PURPOSE
from .store import ListParams, Page
from .tools.code_interpreter import produced_files
from .types import ContextMode, Message, RunStep, Session, Thread, VectorStore
from .types.objects import CodeInterpreterToolCall, ImageFileContent, ToolCallsDetails
from .vector_stores import thread_store_name


class Sessions:
    """Create, list, rename, change, resume and delete sessions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def create(
        self,
        owner: str,
        assistant_id: str,
        *,
        title: str = "New chat",
        context_mode: ContextMode = ContextMode.full,
        context_n: int = 20,
        model: str | None = None,
        temperature: float | None = None,
        ui_thread: str | None = None,
    ) -> Session:
        _check_context_n(context_n)
        await self.engine.get_assistant(owner, assistant_id)
        stamp = now()
        session = Session(
            id=new_id("thread"),
            created_at=stamp,
            user=owner,
            assistant_id=assistant_id,
            title=title[:200],
            context_mode=context_mode,
            context_n=context_n,
            model=model,
            temperature=temperature,
            updated_at=stamp,
            ui_thread=ui_thread,
        )
        async with self.engine.store.transaction() as tx:
            await tx.insert(session, owner=owner)
        return session

    async def get(self, owner: str, session_id: str) -> Session:
        """Resume a session: the session with its settings, if it is the owner's."""
        async with self.engine.store.read() as tx:
            thread = await tx.get(Thread, session_id, owner=owner)
        return _as_session(thread)

    async def list(
        self,
        owner: str,
        *,
        assistant_id: str | None = None,
        params: ListParams | None = None,
        title_contains: str | None = None,
    ) -> Page[Session]:
        """The owner's sessions, newest first, optionally for one assistant or matching a title."""
        fields: dict[str, Any] = {"user": owner}
        if assistant_id is not None:
            fields["assistant_id"] = assistant_id
        async with self.engine.store.read() as tx:
            page = await tx.list(
                Session,
                owner=owner,
                params=params or ListParams(),
                metadata=Session.metadata_filter(**fields),
                title_contains=title_contains,
            )
        return page

    async def update(self, owner: str, session_id: str, **changes: Any) -> Session:
        """Rename or change settings (`title`, `context_mode`, `context_n`, `model`, `temperature`)."""
        allowed = {"title", "context_mode", "context_n", "model", "temperature", "summary", "summary_upto"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {', '.join(sorted(unknown))} on a session")
        async with self.engine.store.transaction() as tx:
            thread = await tx.get(Thread, session_id, owner=owner)
            session = _as_session(thread)
            updated = session.with_updates(**changes, updated_at=now())
            _check_context_n(updated.context_n)
            await tx.save(updated)
        return updated

    async def rename(self, owner: str, session_id: str, title: str) -> Session:
        return await self.update(owner, session_id, title=title.strip()[:200] or "New chat")

    async def delete(self, owner: str, session_id: str) -> bool:
        """Delete a session with what is only its own: its messages, runs and steps, the vector store
        made for its files (which, for a session, never expires), the files it was sent, and the
        files its code wrote, unless something else of the owner's still names them (a thread, a
        message, an assistant, another vector store). The hosted API's thread deletion kept files
        and stores; deleting a conversation in the chat is expected to take its files with it."""
        session = await self.get(owner, session_id)
        engine = self.engine
        async with engine.store.read() as tx:
            stores = [
                store.id
                for store_id in ((session.tool_resources or {}).get("file_search") or {}).get("vector_store_ids") or []
                if (store := await tx.find(VectorStore, store_id, owner=owner)) is not None
                and store.name == thread_store_name(session_id)
            ]
            messages, _, steps, _ = await tx.thread_tail(session_id, 0)
        sent, produced = thread_files(messages, steps)
        # The thread goes first: its run (if one is working) is stopped, and what its rows named
        # no longer counts as named.
        deleted = await engine.delete_thread(owner, session_id)
        async with engine.store.read() as tx:
            # The code's logs are the program's own output: only files the sandbox really wrote count.
            written = {f.id for f in (await tx.files_by_id(list(produced), owner=owner)).values() if f.purpose == OUTPUT_PURPOSE}
            files = set(sent) | written
            named = await tx.named_anywhere(files | set(stores), owner=owner)
            stores = [store_id for store_id in stores if store_id not in named]
            files -= named | await tx.files_in_stores_other_than(files, stores, owner=owner)
        for store_id in stores:
            with contextlib.suppress(NotFoundError):
                await engine.vector_stores.delete(owner, store_id)
        for file_id in sorted(files):
            with contextlib.suppress(NotFoundError):
                await engine.delete_file(owner, file_id)
        return deleted


def thread_files(messages: list[Message], steps: list[RunStep]) -> tuple[list[str], list[str]]:
    """The ids of the files a thread's messages attach or show, and of those its code steps drew
    or wrote (as their logs name them), each in order."""
    sent = [a.file_id for m in messages for a in m.attachments or []]
    sent += [p.image_file.file_id for m in messages for p in m.content if isinstance(p, ImageFileContent)]
    produced = [
        file_id
        for step in steps
        if isinstance(step.step_details, ToolCallsDetails)
        for call in step.step_details.tool_calls
        if isinstance(call, CodeInterpreterToolCall)
        for file_id in produced_files(call)
    ]
    return sent, produced


def _as_session(thread: Thread) -> Session:
    """The thread as a session; a plain thread (no user and assistant in metadata) is not one."""
    if "user" not in thread.metadata or "assistant_id" not in thread.metadata:
        raise NotFoundError(f"No session found with id '{thread.id}'.")
    return Session.model_validate(thread.model_dump())


def _check_context_n(context_n: int) -> None:
    """N is how many messages `last_n` sends and `summary` keeps verbatim: at least the newest one."""
    if context_n < 1:
        raise InvalidRequestError(
            f"Invalid 'context_n': {context_n}; it must be at least 1.", param="context_n"
        )
