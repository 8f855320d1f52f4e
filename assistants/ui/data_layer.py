"""Chainlit's data layer over our store: one database holds everything, and the UI cannot disagree with it.

Chainlit reads threads to list and resume them; we answer from the engine's own sessions,
messages, runs and steps (rendered by `render.py`, the same way live runs are shown). Chainlit
also writes a copy of every step and element it displays; those copies are not kept, because the
engine has already stored the messages, tool calls and files they show. Feedback on an answer is
kept on the engine's message, in its metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chainlit.data.base import BaseDataLayer
from chainlit.types import (
    Feedback,
    PageInfo,
    PaginatedResponse,
    Pagination,
    ThreadDict,
    ThreadFilter,
)
from chainlit.user import PersistedUser, User

from ..exceptions import InvalidRequestError, NotFoundError
from ..runtime import Runtime
from ..sessions import Sessions, thread_files
from ..store import ListParams
from ..types import Assistant, Message, Run, Session
from .render import active_run_note, history_steps, iso, latest_turns


@dataclass(frozen=True)
class History:
    """A session rendered from one of its turns on, for the chat."""

    steps: list[dict[str, Any]]
    elements: list[dict[str, Any]]
    assistant: Assistant | None
    user_name: str
    total: int
    """How many turns (user messages) the whole session holds."""
    active: Run | None
    """The session's run still going (writing its answer, or waiting for tool outputs), if any."""


class EngineDataLayer(BaseDataLayer):
    """Chainlit persistence backed by the engine's store."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def _session(self, ui_id: str) -> tuple[str, Session] | None:
        engine = await self.runtime.start()
        async with engine.store.read() as tx:
            found = await tx.thread_by_ui_id(ui_id)
        if found is None or "assistant_id" not in found[1].metadata:
            return None
        owner, thread = found
        return owner, Session.model_validate(thread.model_dump())

    async def _user_name(self, user_id: str) -> str:
        engine = await self.runtime.start()
        async with engine.store.read() as tx:
            row = await tx.user_by_id(user_id)
        return str(row["name"]) if row else ""

    # Users -----------------------------------------------------------------------------------

    async def get_user(self, identifier: str) -> PersistedUser | None:
        engine = await self.runtime.start()
        async with engine.store.read() as tx:
            row = await tx.user_by_name(identifier)
        if row is None:
            return None
        return PersistedUser(id=str(row["id"]), identifier=identifier, createdAt=iso(int(row["created_at"])), metadata={})

    async def create_user(self, user: User) -> PersistedUser | None:
        await self.runtime.start()
        await self.runtime.accounts.ensure_user(user.identifier)
        return await self.get_user(user.identifier)

    # Threads (our sessions) ------------------------------------------------------------------

    async def get_thread_author(self, thread_id: str) -> str:
        found = await self._session(thread_id)
        return "" if found is None else await self._user_name(found[0])

    async def list_threads(self, pagination: Pagination, filters: ThreadFilter) -> PaginatedResponse[ThreadDict]:
        engine = await self.runtime.start()
        if not filters.userId:
            return PaginatedResponse(pageInfo=PageInfo(hasNextPage=False, startCursor=None, endCursor=None), data=[])
        params = ListParams(limit=max(1, min(pagination.first, 100)), order="desc", after=pagination.cursor or None)
        try:
            page = await Sessions(engine).list(filters.userId, params=params, title_contains=filters.search or None)
        except InvalidRequestError:
            # The cursor is not one of the user's sessions (deleted since the last page, or someone
            # else's): nothing comes after it. Chainlit would answer the error with a 500.
            return PaginatedResponse(pageInfo=PageInfo(hasNextPage=False, startCursor=None, endCursor=None), data=[])
        user_name = await self._user_name(filters.userId)
        data: list[ThreadDict] = [self._thread_dict(s, filters.userId, user_name) for s in page.data]
        return PaginatedResponse(
            pageInfo=PageInfo(hasNextPage=page.has_more, startCursor=page.first_id, endCursor=page.last_id), data=data
        )

    def _thread_dict(self, session: Session, user_id: str, user_name: str, **extra: Any) -> ThreadDict:
        thread: dict[str, Any] = {
            "id": session.ui_thread or session.id,
            # The sidebar groups by this date; it is the creation time, the order the list is paged in.
            "createdAt": iso(session.created_at),
            "name": session.title,
            "userId": user_id,
            "userIdentifier": user_name,
            "tags": None,
            "metadata": {"session_id": session.id, "assistant_id": session.assistant_id},
            "steps": [],
            "elements": [],
        }
        thread.update(extra)
        return thread  # type: ignore[return-value]

    async def get_thread(self, thread_id: str) -> ThreadDict | None:
        found = await self._session(thread_id)
        if found is None:
            return None
        return await self._thread(*found, thread_id, self.runtime.settings.resume_turns)

    async def thread_for(self, owner: str, thread_id: str, turns: int) -> ThreadDict | None:
        """`owner`'s session as `get_thread` gives it, from its `turns`-th newest turn on (0: all of
        it); None when it is not theirs."""
        found = await self._session(thread_id)
        if found is None or found[0] != owner:
            return None
        return await self._thread(*found, thread_id, turns)

    async def _thread(self, owner: str, session: Session, thread_id: str, turns: int) -> ThreadDict:
        history = await self._history(owner, session, thread_id, turns)
        steps, elements = latest_turns(history.steps, history.elements, turns, thread_id, history.total)
        if history.active is not None:
            # Said in the thread itself: what the chat sends while it reopens, Chainlit's page
            # replaces with the thread.
            after = steps[-1]["createdAt"] if steps else iso(session.created_at)
            steps.append(active_run_note(thread_id, after, history.active))
        assistant = history.assistant
        profile = assistant.metadata.get("assistants.profile") if assistant else None
        return self._thread_dict(
            session,
            owner,
            history.user_name,
            steps=steps,
            elements=elements,
            metadata={
                "session_id": session.id,
                "assistant_id": session.assistant_id,
                "chat_profile": profile,
            },
        )

    async def transcript(self, owner: str, thread_id: str) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]] | None:
        """The whole of `owner`'s session (its title, every rendered step and its files); None when
        it is not theirs."""
        found = await self._session(thread_id)
        if found is None or found[0] != owner:
            return None
        history = await self._history(owner, found[1], thread_id, 0)
        return found[1].title, history.steps, history.elements

    async def _history(
        self, owner: str, session: Session, thread_id: str, turns: int
    ) -> History:
        """The session rendered from its `turns`-th newest user message on (0: all of it)."""
        engine = self.runtime.engine
        async with engine.store.read() as tx:
            messages, runs, steps, total = await tx.thread_tail(session.id, turns)
            assistant = await tx.find(Assistant, session.assistant_id, owner=owner)
            sent, produced = thread_files(messages, steps)
            files = await tx.files_by_id(sent + produced, owner=owner)
            active = await tx.active_run(session.id)
        user_name = await self._user_name(owner)
        rendered, elements = history_steps(
            session,
            thread_id,
            user_name,
            assistant.name if assistant and assistant.name else "Assistant",
            messages,
            runs,
            steps,
            {f.id: (f.filename, f.bytes) for f in files.values()},
        )
        return History(rendered, elements, assistant, user_name, total, active)

    async def update_thread(
        self,
        thread_id: str,
        name: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
    ) -> None:
        """Renames reach the session; Chainlit's copy of the user session is not needed (settings live on the session)."""
        if not name:
            return
        found = await self._session(thread_id)
        if found is None:
            return
        owner, session = found
        await Sessions(self.runtime.engine).rename(owner, session.id, name[:120])

    async def delete_thread(self, thread_id: str) -> None:
        found = await self._session(thread_id)
        if found is None:
            return
        owner, session = found
        try:
            await Sessions(self.runtime.engine).delete(owner, session.id)
        except NotFoundError:
            return

    # Steps and elements: the engine already stores what they show --------------------------------

    async def create_step(self, step_dict: Any) -> None:
        return None

    async def update_step(self, step_dict: Any) -> None:
        return None

    async def delete_step(self, step_id: str) -> None:
        return None

    async def create_element(self, element: Any) -> None:
        return None

    async def get_element(self, thread_id: str, element_id: str) -> Any:
        thread = await self.get_thread(thread_id)
        if thread is None:
            return None
        return next((e for e in thread.get("elements") or [] if e.get("id") == element_id), None)

    async def delete_element(self, element_id: str, thread_id: str | None = None) -> None:
        return None

    # Feedback, kept on the engine's message ------------------------------------------------------

    async def save_feedback(self, owner: str, message_id: str, value: int, comment: str | None) -> bool:
        """Record thumbs up/down on one of the owner's assistant messages."""
        engine = await self.runtime.start()
        async with engine.store.transaction() as tx:
            message = await tx.find(Message, message_id, owner=owner)
            if message is None or message.role != "assistant":
                return False
            metadata = dict(message.metadata)
            metadata["feedback"] = str(int(value))
            if comment:
                metadata["feedback_comment"] = comment[:500]
            else:
                metadata.pop("feedback_comment", None)
            await tx.save(message.with_updates(metadata=metadata))
        return True

    async def remove_feedback(self, owner: str, message_id: str) -> bool:
        engine = await self.runtime.start()
        async with engine.store.transaction() as tx:
            message = await tx.find(Message, message_id, owner=owner)
            if message is None or message.role != "assistant":
                return False
            metadata = {k: v for k, v in message.metadata.items() if k not in ("feedback", "feedback_comment")}
            await tx.save(message.with_updates(metadata=metadata))
        return True

    async def upsert_feedback(self, feedback: Feedback) -> str:
        # Chainlit's own feedback route does not say who is asking; ours (ui/routes.py) does and
        # stands in front of it, calling `save_feedback` with the owner.
        raise PermissionError("feedback is saved through the authenticated /feedback route")

    async def delete_feedback(self, feedback_id: str) -> bool:
        raise PermissionError("feedback is removed through the authenticated /feedback route")

    async def get_favorite_steps(self, user_id: str) -> list[Any]:
        return []

    async def build_debug_url(self) -> str:
        return ""

    async def close(self) -> None:
        return None
