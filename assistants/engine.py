"""The engine: the Assistants object API over the store, and run scheduling.

One `Engine` serves the chat UI, the `/v1` routes and the CLI. It validates requests, writes
objects (all or nothing, in one transaction), starts run tasks and publishes events. Every method
takes the `owner` (a user id): nobody reads or changes another user's objects, and a foreign id
reads as not found.

Its file operations live in `engine_files.py` and its background upkeep (run leases, ending runs
whose process stopped, expiry sweeps) in `engine_upkeep.py`; `Engine` inherits both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

import sqlalchemy as sa

from .background import stop_background
from .config import Settings
from .engine_upkeep import EngineUpkeep
from .event_log import CANCEL_CHANNEL, CHANNEL, EventLog, PostgresWakeups
from .events import Event, EventBus, Subscription
from .exceptions import InvalidRequestError, NotFoundError, TooManyRequestsError
from .ids import new_id, now
from .providers import ChatProvider
from .runs import Begun, RunExecutor
from .runs._status import end_step, transition
from .runs._steps import with_outputs
from .search import SqlChunkIndex
from .search.embed import Embedder
from .store import ActiveRunConflict, FileStore, ListParams, Page, SqlStore, StoreTx, lease_for
from .tools import FunctionRegistry
from .tools.code_interpreter import CodeInterpreter
from .tools.file_search import Citation, FileSearch, find_citation
from .types import (
    Assistant,
    ContextMode,
    File,
    Message,
    Run,
    RunStatus,
    RunStep,
    Session,
    StepStatus,
    TextContent,
    TextValue,
    Thread,
)
from .types.objects import (
    ImageFileContent,
    MessageContent,
    TruncationStrategy,
)
from .types.requests import (
    AssistantCreate,
    AssistantUpdate,
    MessageCreate,
    MessageUpdate,
    RunCreate,
    RunUpdate,
    SubmitToolOutputsRequest,
    TextRequestContent,
    ThreadAndRunCreate,
    ThreadCreate,
    ThreadUpdate,
)
from .types.session import session_of
from .vector_stores import VectorStores

log = logging.getLogger(__name__)



def _content_of(body: MessageCreate) -> list[MessageContent]:
    if isinstance(body.content, str):
        return [TextContent(text=TextValue(value=body.content))]
    return [
        TextContent(text=TextValue(value=part.text)) if isinstance(part, TextRequestContent) else part
        for part in body.content
    ]


class Engine(EngineUpkeep):
    """The Assistants data plane, and the scheduler of runs on the execution plane."""

    def __init__(
        self,
        *,
        store: SqlStore,
        provider: ChatProvider,
        settings: Settings,
        registry: FunctionRegistry,
        bus: EventBus | None = None,
        code: CodeInterpreter | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.bus = bus or EventBus()
        self.files = FileStore(settings.files_dir)
        self.provider = provider
        self.registry = registry
        self.code = code
        self.events = EventLog(store, self.bus)
        """Every run event in order, for cursors and other processes (`GET /v1/assistants/{id}/events`)."""
        self.worker_id = "worker_" + secrets.token_hex(8)
        """This process's name on the runs it executes (their lease)."""
        self._postgres = store.engine.dialect.name == "postgresql"
        self._wakeups = (
            PostgresWakeups(store, {CHANNEL: lambda _payload: self.events.wake(), CANCEL_CHANNEL: self._cancel_here})
            if self._postgres
            else None
        )
        self.vector_stores = VectorStores(
            store,
            self.files,
            SqlChunkIndex(store, embedder, cache_bytes=settings.search_cache_mb * 1024 * 1024),
            max_ingest_bytes=settings.max_ingest_bytes,
        )
        """Vector stores, their files and search; ingestion runs in its own background workers."""
        self.executor = RunExecutor(
            store=store,
            files=self.files,
            bus=self.bus,
            provider=provider,
            registry=registry,
            settings=settings,
            code=code,
            search=FileSearch(
                store, self.vector_stores.index, self.vector_stores.wait_for_ingestion, self.vector_stores.touch
            ),
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._leaser: asyncio.Task[None] | None = None

    # Lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover runs a previous process left active, start the expiry sweeper, the code interpreter
        and vector store ingestion (which resumes files a previous process left `in_progress`)."""
        await self.events.start()
        if self._wakeups is not None:
            await self._wakeups.start()
        await self.recover()
        await self.vector_stores.start()
        if self.code is not None:
            await self.code.start()
        self._sweeper = asyncio.create_task(self._sweep_forever())
        self._leaser = asyncio.create_task(self._lease_forever())

    async def close(self) -> None:
        """Stop the sweeper and cancel running runs (they end `cancelled`, nothing is left active)."""
        for background in (self._sweeper, self._leaser):
            await stop_background(background)
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.executor.checkpoints.close()
        await self.vector_stores.close()
        if self.code is not None:
            await self.code.close()
        if self._wakeups is not None:
            await self._wakeups.close()
        await self.events.close()

    # Assistants --------------------------------------------------------------------------------

    async def create_assistant(self, owner: str, body: AssistantCreate) -> Assistant:
        assistant = Assistant(
            id=new_id("assistant"),
            created_at=now(),
            **body.model_dump(exclude_none=True),
        )
        async with self.store.transaction() as tx:
            resources = await self.vector_stores.resolve_tool_resources(tx, owner, body.tool_resources)
            assistant = assistant.model_copy(update={"tool_resources": resources})
            await tx.insert(assistant, owner=owner)
        if body.tool_resources:
            await self.vector_stores.kick()
        return assistant

    async def get_assistant(self, owner: str, assistant_id: str) -> Assistant:
        async with self.store.read() as tx:
            return await tx.get(Assistant, assistant_id, owner=owner)

    async def update_assistant(self, owner: str, assistant_id: str, body: AssistantUpdate) -> Assistant:
        async with self.store.transaction() as tx:
            assistant = await tx.get(Assistant, assistant_id, owner=owner)
            if body.tool_resources is not None:
                resources = await self.vector_stores.resolve_tool_resources(tx, owner, body.tool_resources)
                body = body.model_copy(update={"tool_resources": resources})
            changes = body.model_dump(exclude_unset=True)
            if changes.get("metadata") is None:
                changes.pop("metadata", None)
            updated = assistant.with_updates(**changes)
            await tx.save(updated)
        if body.tool_resources:
            await self.vector_stores.kick()
        return updated

    async def delete_assistant(self, owner: str, assistant_id: str) -> bool:
        async with self.store.transaction() as tx:
            await tx.get(Assistant, assistant_id, owner=owner)
            return await tx.delete(Assistant, assistant_id, owner=owner)

    async def list_assistants(self, owner: str, params: ListParams, metadata: dict[str, str] | None = None) -> Page[Assistant]:
        async with self.store.read() as tx:
            return await tx.list(Assistant, owner=owner, params=params, metadata=metadata)

    # Threads -----------------------------------------------------------------------------------

    async def create_thread(self, owner: str, body: ThreadCreate, *, thread_id: str | None = None) -> Thread:
        async with self.store.transaction() as tx:
            thread = await self._insert_thread(tx, owner, body, thread_id=thread_id)
        if body.tool_resources or any(_searched_files(m) for m in body.messages or []):
            await self.vector_stores.kick()
        self._publish("thread.created", thread.wire(), thread_id=thread.id)
        return thread

    async def _insert_thread(self, tx: StoreTx, owner: str, body: ThreadCreate, *, thread_id: str | None = None) -> Thread:
        thread = Thread(
            id=thread_id or new_id("thread"),
            created_at=now(),
            metadata=body.metadata or {},
            tool_resources=await self.vector_stores.resolve_tool_resources(tx, owner, body.tool_resources),
        )
        await tx.insert(thread, owner=owner)
        for message in body.messages or []:
            await self._insert_message(tx, owner, thread.id, message)
        return thread

    async def get_thread(self, owner: str, thread_id: str) -> Thread:
        async with self.store.read() as tx:
            return await tx.get(Thread, thread_id, owner=owner)

    async def update_thread(self, owner: str, thread_id: str, body: ThreadUpdate) -> Thread:
        async with self.store.transaction() as tx:
            thread = await tx.get(Thread, thread_id, owner=owner)
            if body.tool_resources is not None:
                resources = await self.vector_stores.resolve_tool_resources(tx, owner, body.tool_resources)
                body = body.model_copy(update={"tool_resources": resources})
            changes = body.model_dump(exclude_unset=True)
            if changes.get("metadata") is None:
                changes.pop("metadata", None)
            updated = thread.with_updates(**changes)
            await tx.save(updated)
        if body.tool_resources:
            await self.vector_stores.kick()
        return updated

    async def delete_thread(self, owner: str, thread_id: str) -> bool:
        """Delete a thread with its messages, runs and steps; its active run is cancelled first."""
        async with self.store.read() as tx:
            await tx.get(Thread, thread_id, owner=owner)
            active = await tx.active_run(thread_id)
        if active is not None and active.id in self._tasks:
            task = self._tasks[active.id]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        async with self.store.transaction() as tx:
            deleted = await tx.delete(Thread, thread_id, owner=owner)
            if deleted and active is not None and active.id not in self._tasks and self._postgres:
                # Another process may execute it: ask it (at commit) to stop calling the model.
                await tx.conn.execute(sa.text("SELECT pg_notify(:channel, :run)"), {"channel": CANCEL_CHANNEL, "run": active.id})
        if deleted and self.code is not None:
            await self.code.discard(thread_id)
        return deleted

    async def list_threads(self, owner: str, params: ListParams, metadata: dict[str, str] | None = None, title_contains: str | None = None) -> Page[Thread]:
        """Threads of this owner filtered by metadata: an extension the hosted API never had."""
        async with self.store.read() as tx:
            return await tx.list(Thread, owner=owner, params=params, metadata=metadata, title_contains=title_contains)

    # Messages ----------------------------------------------------------------------------------

    async def _insert_message(
        self, tx: StoreTx, owner: str, thread_id: str, body: MessageCreate, *, run: Run | None = None
    ) -> Message:
        for index, attachment in enumerate(body.attachments or []):
            if await tx.find(File, attachment.file_id, owner=owner) is None:
                raise InvalidRequestError(
                    f"Invalid 'attachments[{index}].file_id': no file found with id '{attachment.file_id}'.",
                    param=f"attachments[{index}].file_id",
                )
        for part in _content_of(body):
            if isinstance(part, ImageFileContent) and await tx.find(File, part.image_file.file_id, owner=owner) is None:
                raise InvalidRequestError(
                    f"Invalid 'content': no file found with id '{part.image_file.file_id}'.",
                    param="content",
                )
        stamp = now()
        message = Message(
            id=new_id("message"),
            created_at=stamp,
            completed_at=stamp,
            thread_id=thread_id,
            role=body.role,
            content=_content_of(body),
            attachments=body.attachments or [],
            metadata=body.metadata or {},
            assistant_id=run.assistant_id if run and body.role == "assistant" else None,
            run_id=None,
        )
        await tx.insert(message, owner=owner)
        searched = _searched_files(body)
        if searched:
            # As on the hosted API: the files go into the thread's own vector store. The caller's
            # `kick` after the commit starts their ingestion.
            await self.vector_stores.attach_to_thread(tx, owner, thread_id, searched)
        return message

    async def create_message(self, owner: str, thread_id: str, body: MessageCreate) -> Message:
        async with self.store.transaction() as tx:
            # The thread's row held from here (PostgreSQL): no run can start, and no deletion
            # commit, between the check for an active run and the insert.
            await tx.get(Thread, thread_id, owner=owner, lock=True)
            active = await tx.active_run(thread_id)
            if active is not None:
                raise InvalidRequestError(f"Can't add messages to {thread_id} while a run {active.id} is active.")
            message = await self._insert_message(tx, owner, thread_id, body)
        if _searched_files(body):
            await self.vector_stores.kick()
        return message

    async def get_message(self, owner: str, thread_id: str, message_id: str) -> Message:
        await self._stored(message_id)
        async with self.store.read() as tx:
            await tx.get(Thread, thread_id, owner=owner)
            message = await tx.get(Message, message_id, owner=owner)
            if message.thread_id != thread_id:
                raise _missing("message", message_id)
            return message

    async def _stored(self, object_id: str) -> None:
        """Wait while this process is still storing a new answer's message or step of this id: its
        events went out while it was being stored (`RunRecorder.start_message`)."""
        storing = self.executor.storing.get(object_id)
        if storing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(storing)

    async def citation(self, owner: str, message_id: str, marker: int) -> tuple[Citation, bool]:
        """What marker `[marker]` of an answer cites, and whether its file can still be opened."""
        async with self.store.read() as tx:
            message = await tx.get(Message, message_id, owner=owner)
            steps = await tx.run_steps(message.run_id) if message.run_id else []
            found = find_citation(message, steps, marker)
            if found is None:
                raise NotFoundError(f"Message '{message_id}' cites no source [{marker}].")
            return found, await tx.find(File, found.file_id, owner=owner) is not None

    async def update_message(self, owner: str, thread_id: str, message_id: str, body: MessageUpdate) -> Message:
        await self._stored(message_id)
        async with self.store.transaction() as tx:
            # Held until the commit (PostgreSQL): an answer that ends meanwhile waits, then keeps
            # this metadata; and this write, of the whole message, cannot undo its end.
            message = await tx.get(Message, message_id, owner=owner, lock=True)
            if message.thread_id != thread_id:
                raise _missing("message", message_id)
            updated = message.with_updates(**({"metadata": body.metadata} if body.metadata is not None else {}))
            await tx.save(updated)
        return updated

    async def delete_message(self, owner: str, thread_id: str, message_id: str) -> bool:
        await self._stored(message_id)
        async with self.store.transaction() as tx:
            message = await tx.get(Message, message_id, owner=owner)
            if message.thread_id != thread_id:
                raise _missing("message", message_id)
            return await tx.delete(Message, message_id, owner=owner)

    async def list_messages(self, owner: str, thread_id: str, params: ListParams, run_id: str | None = None) -> Page[Message]:
        async with self.store.read() as tx:
            await tx.get(Thread, thread_id, owner=owner)
            fields = {"run_id": run_id} if run_id is not None else None
            return await tx.list(Message, owner=owner, params=params, where={"thread_id": thread_id}, fields=fields)

    # Runs --------------------------------------------------------------------------------------

    async def create_run(self, owner: str, thread_id: str, body: RunCreate, *, run_id: str | None = None) -> Run:
        """Validate, store a run (and its additional messages), and start it; returns it as created (`queued`)."""
        async with self.store.transaction() as tx:
            # Held from here (PostgreSQL), as `create_message` holds it: no message is added, and
            # the thread is not deleted, between the check for an active run and the run's insert.
            thread = await tx.get(Thread, thread_id, owner=owner, lock=True)
            run, begun = await self._insert_run(tx, owner, thread, body, run_id=run_id)
        # Its task exists before anything else is awaited: a cancel always finds it (`cancel_run`).
        self._announce_and_start(owner, run, begun)
        if any(_searched_files(m) for m in body.additional_messages or []):
            await self.vector_stores.kick()
        return run

    async def create_thread_and_run(self, owner: str, body: ThreadAndRunCreate, *, run_id: str | None = None) -> Run:
        """Create a thread (with its messages) and a run on it, in one transaction."""
        thread_body = body.thread or ThreadCreate()
        if body.tool_resources is not None and thread_body.tool_resources is None:
            thread_body = thread_body.model_copy(update={"tool_resources": body.tool_resources})
        run_body = RunCreate(**body.model_dump(exclude_unset=True, exclude={"thread", "tool_resources"}))
        async with self.store.transaction() as tx:
            # Before any write, as in `create_run`: starts of one user's runs always lock in one order.
            await tx.take_turns_starting_runs(owner)
            await tx.get(Assistant, body.assistant_id, owner=owner, param="assistant_id")
            thread = await self._insert_thread(tx, owner, thread_body)
            run, begun = await self._insert_run(tx, owner, thread, run_body, run_id=run_id)
        # Routed to the run too, so a stream of this run opens with `thread.created` as OpenAI's does.
        self.bus.publish(
            Event("thread.created", thread.wire(), thread_id=thread.id, run_id=run.id, assistant_id=run.assistant_id)
        )
        self._announce_and_start(owner, run, begun)
        if thread_body.tool_resources or any(_searched_files(m) for m in thread_body.messages or []):
            # Files of a vector store created by the `vector_stores` helper, or attached to the
            # thread's messages for file search, are ingested from here.
            await self.vector_stores.kick()
        return run

    async def _insert_run(
        self, tx: StoreTx, owner: str, thread: Thread, body: RunCreate, *, run_id: str | None
    ) -> tuple[Run, Begun]:
        """Store a new run, in one transaction with what else its request writes; returns it as
        created (`queued`) and as stored and executed."""
        assistant = await tx.get(Assistant, body.assistant_id, owner=owner, param="assistant_id")
        active = await tx.active_run(thread.id)
        if active is not None:
            raise InvalidRequestError(f"Thread {thread.id} already has an active run {active.id}.")
        # Starts of one user's runs take turns (their count is checked after the insert, below).
        await tx.take_turns_starting_runs(owner)
        session = session_of(thread)
        instructions = body.instructions if body.instructions is not None else (assistant.instructions or "")
        if body.additional_instructions:
            instructions = f"{instructions}\n\n{body.additional_instructions}" if instructions else body.additional_instructions
        truncation = body.truncation_strategy
        if truncation is None and session is not None:
            truncation = _truncation_for(session)
        model = body.model or (session.model if session and session.model else None) or assistant.model
        temperature = body.temperature
        if temperature is None:
            temperature = session.temperature if session and session.temperature is not None else assistant.temperature
        stamp = now()
        run = Run(
            id=run_id or new_id("run"),
            created_at=stamp,
            thread_id=thread.id,
            assistant_id=assistant.id,
            status=RunStatus.queued,
            expires_at=stamp + self.settings.run_expiry_seconds,
            model=model,
            instructions=instructions,
            tools=body.tools if body.tools is not None else assistant.tools,
            metadata=body.metadata or {},
            temperature=temperature,
            top_p=body.top_p if body.top_p is not None else assistant.top_p,
            max_prompt_tokens=body.max_prompt_tokens,
            max_completion_tokens=body.max_completion_tokens,
            truncation_strategy=truncation or TruncationStrategy(),
            tool_choice=body.tool_choice or "auto",
            parallel_tool_calls=True if body.parallel_tool_calls is None else body.parallel_tool_calls,
            response_format=body.response_format or assistant.response_format or "auto",
            reasoning_effort=body.reasoning_effort or assistant.reasoning_effort,
        )
        newest = None
        for message in body.additional_messages or []:
            newest = await self._insert_message(tx, owner, thread.id, message)
        if newest is None:
            latest = await tx.messages_page_desc(thread.id, limit=1, before_seq=None)
            newest = latest[0][1] if latest else None
        run = run.model_copy(update={"after_message_id": newest.id if newest else None})
        if session is not None:
            await tx.save(session.with_updates(updated_at=stamp))
        # Stored already `in_progress` and leased to this process, which executes it as soon as
        # the transaction commits: its first token waits for no second transaction. The move
        # from `queued` is still published (and logged) as its own event.
        started = transition(run, RunStatus.in_progress)
        try:
            await tx.insert(
                started, owner=owner, worker_id=self.worker_id, lease_until=lease_for(self.settings.run_lease_seconds)
            )
        except ActiveRunConflict as exc:
            # Another request won the race between our check and our insert.
            raise InvalidRequestError(f"Thread {thread.id} already has an active run.") from exc
        # Counted with this run inserted, while other starts of the owner's runs wait (PostgreSQL)
        # or cannot write (SQLite): starts at the same moment cannot all slip under the limit.
        # Refusing rolls the whole transaction back, additional messages included.
        limit = self.settings.max_runs_per_user
        if await tx.count_active_runs(owner) > limit:
            raise TooManyRequestsError(
                f"You already have {limit} runs in progress, the most one user may run at once "
                "(ASSISTANTS_MAX_RUNS_PER_USER). Wait for one to finish, or cancel one, and try again.",
                code="too_many_runs",
            )
        return run, Begun(started, thread=thread, steps=[])

    def _announce_and_start(self, owner: str, run: Run, begun: Begun) -> None:
        wire = run.wire()  # The same object in both events: subscribers never change event data.
        self._publish("thread.run.created", wire, run)
        self._publish("thread.run.queued", wire, run)
        self._start(owner, begun)

    def _start(self, owner: str, begun: Begun) -> None:
        """Publish `thread.run.in_progress` for a run stored so, and execute it in a task."""
        run_id = begun.run.id
        self._publish("thread.run.in_progress", begun.run.wire(), begun.run)
        task = asyncio.create_task(self.executor.execute(owner, begun), name=f"run {run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(run_id, None))

    async def wait_for_run(self, run_id: str) -> None:
        """Wait until the run's current task ends (a pause or an end); returns at once if none runs."""
        task = self._tasks.get(run_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def get_run(self, owner: str, thread_id: str, run_id: str) -> Run:
        async with self.store.read() as tx:
            run = await tx.get(Run, run_id, owner=owner)
        if run.thread_id != thread_id:
            raise _missing("run", run_id)
        # A run past its expiry is expired on sight, so no reader ever sees a stale wait.
        if run.status is RunStatus.requires_action and run.expires_at is not None and run.expires_at <= now():
            await self._expire(owner, run)
            async with self.store.read() as tx:
                run = await tx.get(Run, run_id, owner=owner)
        return run

    async def list_runs(self, owner: str, thread_id: str, params: ListParams) -> Page[Run]:
        async with self.store.read() as tx:
            await tx.get(Thread, thread_id, owner=owner)
            return await tx.list(Run, owner=owner, params=params, where={"thread_id": thread_id})

    async def update_run(self, owner: str, thread_id: str, run_id: str, body: RunUpdate) -> Run:
        async with self.store.transaction() as tx:
            # Held until the commit (PostgreSQL), as every change of its status holds it: this
            # write of the whole run cannot undo a status change that lands meanwhile.
            run = await tx.get(Run, run_id, owner=owner, lock=True)
            if run.thread_id != thread_id:
                raise _missing("run", run_id)
            updated = run.with_updates(**({"metadata": body.metadata} if body.metadata is not None else {}))
            await tx.save(updated)
        return updated

    async def cancel_run(self, owner: str, thread_id: str, run_id: str) -> Run:
        """Cancel a run that is queued, in progress or waiting for tool outputs.

        A running task is cancelled for real: the provider stream is closed and pending tools
        stop. The run is `cancelling` when this returns and `cancelled` once the task has wound down.
        """
        run = await self.get_run(owner, thread_id, run_id)
        if run.status not in (RunStatus.queued, RunStatus.in_progress, RunStatus.requires_action):
            raise InvalidRequestError(f"Cannot cancel run with status '{run.status.value}'.", param="run_id")
        async with self.store.transaction() as tx:
            # Held (PostgreSQL): the run's own task, tool outputs and the expiry sweep wait meanwhile.
            held = await tx.held_run(thread_id, run_id, owner=owner)
            if held is None:
                raise _missing("run", run_id)
            run = held
            # The run may have ended, or been resumed by tool outputs, since the check above.
            if run.status not in (RunStatus.queued, RunStatus.in_progress, RunStatus.requires_action):
                raise InvalidRequestError(f"Cannot cancel run with status '{run.status.value}'.", param="run_id")
            task = self._tasks.get(run_id)
            if task is not None and (task.done() or run.status is RunStatus.requires_action):
                task = None  # It paused the run for tool outputs (or ended): nothing executes it now.
            worker, live = await tx.run_lease(run_id)
            # Executing under a live lease by another process: this one registers a run's task
            # before it awaits anything after storing the run (`_start`).
            executing = task is None and run.status is not RunStatus.requires_action and live
            elsewhere = executing and worker != self.worker_id
            cancelling = transition(run, RunStatus.cancelling)
            await tx.save(cancelling)
            if elsewhere and self._postgres:
                # Another live process executes it: ask it (at commit) to cancel its task.
                await tx.conn.execute(sa.text("SELECT pg_notify(:channel, :run)"), {"channel": CANCEL_CHANNEL, "run": run_id})
        self._publish("thread.run.cancelling", cancelling.wire(), cancelling)
        if task is not None:
            task.cancel()
            return cancelling
        if executing:
            # That task ends it `cancelled`; should its process stop first, the lease runs out and
            # the sweep of any process ends it. A lost notification is caught by the executing
            # process's lease loop, which cancels its runs stored as `cancelling`.
            return cancelling
        # Nothing is executing (the run waits for tool outputs, or its process stopped): finish here.
        async with self.store.transaction() as tx:
            stored = await tx.held_run(thread_id, run_id, owner=owner)
            if stored is None or stored.status is not RunStatus.cancelling:
                return stored or cancelling  # Ended meanwhile (a sweep), or its thread was deleted.
            ended = await self._end_unexecuted(tx, stored, RunStatus.cancelled)
        self._publish_ended(ended)
        return ended.run

    async def submit_tool_outputs(self, owner: str, thread_id: str, run_id: str, body: SubmitToolOutputsRequest) -> Run:
        """Accept all pending outputs in one request, then resume the run."""
        run = await self.get_run(owner, thread_id, run_id)
        if run.status is not RunStatus.requires_action or run.required_action is None:
            raise InvalidRequestError(
                f"Runs in status \"{run.status.value}\" do not accept tool outputs.", param="run_id"
            )
        pending = {call.id for call in run.required_action.submit_tool_outputs.tool_calls}
        given: dict[str, str] = {}
        for index, output in enumerate(body.tool_outputs):
            if output.tool_call_id not in pending:
                raise InvalidRequestError(
                    f"Invalid 'tool_outputs[{index}].tool_call_id': {output.tool_call_id!r} is not a pending tool call of this run.",
                    param=f"tool_outputs[{index}].tool_call_id",
                )
            if output.tool_call_id in given:
                raise InvalidRequestError(
                    f"Invalid 'tool_outputs[{index}].tool_call_id': {output.tool_call_id!r} is given twice.",
                    param=f"tool_outputs[{index}].tool_call_id",
                )
            given[output.tool_call_id] = output.output
        missing = sorted(pending - set(given))
        if missing:
            raise InvalidRequestError(
                f"Invalid 'tool_outputs': expected outputs for all pending tool calls; missing {', '.join(missing)}.",
                param="tool_outputs",
            )
        async with self.store.transaction() as tx:
            stored = await tx.held_run(thread_id, run_id, owner=owner)
            if stored is None:
                raise _missing("run", run_id)
            if stored.status is not RunStatus.requires_action:
                raise InvalidRequestError(
                    f"Runs in status \"{stored.status.value}\" do not accept tool outputs.", param="run_id"
                )
            steps = [s for s in await tx.run_steps(run_id) if s.status is StepStatus.in_progress and s.type == "tool_calls"]
            completed_steps: list[RunStep] = []
            for step in steps:
                done = end_step(with_outputs(step, given), StepStatus.completed)
                await tx.save(done)
                completed_steps.append(done)
            queued = transition(stored, RunStatus.queued, expires_at=now() + self.settings.run_expiry_seconds)
            # Stored `in_progress` at once, as a new run is (`_insert_run`).
            started = transition(queued, RunStatus.in_progress)
            await tx.save(started)
            await tx.lease_runs([run_id], self.worker_id, self.settings.run_lease_seconds)
        for step in completed_steps:
            self._publish("thread.run.step.completed", step.wire(), queued)
        self._publish("thread.run.queued", queued.wire(), queued)
        self._start(owner, Begun(started))
        return queued

    async def list_steps(self, owner: str, thread_id: str, run_id: str, params: ListParams) -> Page[RunStep]:
        async with self.store.read() as tx:
            run = await tx.get(Run, run_id, owner=owner)
            if run.thread_id != thread_id:
                raise _missing("run", run_id)
            return await tx.list(RunStep, owner=owner, params=params, where={"run_id": run_id})

    async def get_step(self, owner: str, thread_id: str, run_id: str, step_id: str) -> RunStep:
        await self._stored(step_id)
        async with self.store.read() as tx:
            step = await tx.get(RunStep, step_id, owner=owner)
        if step.run_id != run_id or step.thread_id != thread_id:
            raise _missing("run step", step_id)
        return step

    # Events ------------------------------------------------------------------------------------

    def subscribe(self, *, run_id: str | None = None, thread_id: str | None = None, assistant_id: str | None = None) -> Subscription:
        """Follow one run, one thread or one assistant."""
        return self.bus.subscribe(run_id=run_id, thread_id=thread_id, assistant_id=assistant_id)

    async def stream_run(self, owner: str, thread_id: str, body: RunCreate) -> AsyncIterator[Event]:
        """Create a run and yield its events until it ends or pauses."""
        run_id = new_id("run")
        with contextlib.closing(self.subscribe(run_id=run_id)) as subscription:
            await self.create_run(owner, thread_id, body, run_id=run_id)
            async for event in subscription.until_run_pauses():
                yield event


def _searched_files(body: MessageCreate) -> list[str]:
    """The files a message attaches for `file_search` (they go into the thread's store and need ingesting)."""
    return [a.file_id for a in body.attachments or [] if any(t.get("type") == "file_search" for t in a.tools)]


def _missing(label: str, object_id: str) -> NotFoundError:
    return NotFoundError(f"No {label} found with id '{object_id}'.")


def _truncation_for(session: Session) -> TruncationStrategy:
    """Sessions' context modes, mapped onto `truncation_strategy` where they can be."""
    if session.context_mode is ContextMode.last_n:
        return TruncationStrategy(type="last_messages", last_messages=session.context_n)
    if session.context_mode is ContextMode.one_off:
        return TruncationStrategy(type="last_messages", last_messages=1)
    return TruncationStrategy(type="auto")
