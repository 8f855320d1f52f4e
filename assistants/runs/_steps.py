"""Phases 3 and 4 of a run: write messages and steps as the run progresses, and publish events.

Every write happens before its event is published, so a subscriber that reacts to an event
(`retrieve` after `thread.run.completed`, say) always finds the stored object. One exception: an
answer's `thread.run.step.created` and `thread.message.created` (and its first deltas) go out
while the new message and its step are being stored, so that the first words never wait for the
database. In this process a `retrieve` of either waits for it (`Engine.get_message`, `get_step`);
every later write of the run waits for it too (`RunRecorder._transaction`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import asynccontextmanager
from typing import Any

from ..events import Event, EventBus, EventName
from ..ids import new_id, now
from ..store import SqlStore, StoreTx
from ..tools.code_interpreter import file_path_annotations, parse_code
from ..tools.file_search import file_citations, parse_query
from ..types import (
    FunctionToolCall,
    Message,
    MessageStatus,
    Run,
    RunStatus,
    RunStep,
    StepStatus,
    TextContent,
    TextValue,
    Usage,
)
from ..types.objects import (
    CodeInterpreterCall,
    CodeInterpreterToolCall,
    CodeOutput,
    FileSearchCall,
    FileSearchToolCall,
    LastError,
    MessageCreation,
    MessageCreationDetails,
    StepFunction,
    ToolCallsDetails,
)
from ._checkpoints import AnswerCheckpoints
from ._status import EVENT_FOR_STATUS, TRANSITIONS, end_step, incomplete_message, transition
from ._stream import AccumulatedCall, DeltaAccumulator

ToolOutputs = Mapping[str, "str | list[CodeOutput] | FileSearchCall"]
"""Outputs by call id: a string for a function call, the outputs list for a code-interpreter call,
the search with its results for a file-search call."""

log = logging.getLogger(__name__)


def with_outputs(step: RunStep, outputs: ToolOutputs) -> RunStep:
    """A `tool_calls` step with the given outputs filled in; calls without one keep theirs."""
    assert isinstance(step.step_details, ToolCallsDetails)
    calls: list[FunctionToolCall | CodeInterpreterToolCall | FileSearchToolCall] = []
    for call in step.step_details.tool_calls:
        given = outputs.get(call.id)
        if isinstance(call, FunctionToolCall) and isinstance(given, str):
            call = call.model_copy(update={"function": call.function.model_copy(update={"output": given})})
        elif isinstance(call, CodeInterpreterToolCall) and isinstance(given, list):
            call = call.model_copy(update={"code_interpreter": call.code_interpreter.model_copy(update={"outputs": given})})
        elif isinstance(call, FileSearchToolCall) and isinstance(given, FileSearchCall):
            call = call.model_copy(update={"file_search": given})
        calls.append(call)
    return step.model_copy(update={"step_details": ToolCallsDetails(tool_calls=calls)})


def _stored_call(
    call: AccumulatedCall, code: AbstractSet[str], search: AbstractSet[str]
) -> FunctionToolCall | CodeInterpreterToolCall | FileSearchToolCall:
    if call.id in code:
        return CodeInterpreterToolCall(id=call.id, code_interpreter=CodeInterpreterCall(input=parse_code(call.arguments)[0]))
    if call.id in search:
        return FileSearchToolCall(id=call.id, file_search=FileSearchCall(query=parse_query(call.arguments) or ""))
    return FunctionToolCall(id=call.id, function=StepFunction(name=call.name, arguments=call.arguments, output=None))


MESSAGE_STORE_SECONDS = 30.0
"""How long a run waits for its answer's message to be stored before giving it up (SQLite's own
busy timeout is as long)."""


def _failed(task: asyncio.Task[None]) -> bool:
    """Whether `task` ended without doing its work (an error, or cancelled)."""
    return task.done() and (task.cancelled() or task.exception() is not None)


class MessageNotStored(Exception):
    """Storing a new answer's message failed: nothing of it is in the database (its events were
    published), and the run cannot end with it."""


class RunGone(Exception):
    """The run's row is gone: its thread was deleted while the run worked (perhaps by another
    process). Nothing of it is left to store."""


class CancelledElsewhere(Exception):
    """The run was stored `cancelling` (by another process, whose word has not reached this one
    yet) when it was about to move where a cancelled run cannot go (a pause for tool outputs)."""


class RunRecorder:
    """Persists one run's objects and publishes the matching Assistants events."""

    def __init__(
        self,
        store: SqlStore,
        bus: EventBus,
        owner: str,
        run: Run,
        checkpoints: AnswerCheckpoints,
        storing: dict[str, asyncio.Task[None]],
    ) -> None:
        self.store = store
        self.storing = storing
        """The process's messages and steps still being stored, by id, for readers to wait for."""
        self.bus = bus
        self.owner = owner
        self.run = run
        self.checkpoints = checkpoints
        self.message: Message | None = None
        self.message_step: RunStep | None = None
        self._storing: asyncio.Task[None] | None = None
        """The open message's first write, while it is still under way (`start_message`)."""
        self.tool_step: RunStep | None = None
        self.partial_text = ""
        """The text streamed so far into the open message, kept if the run ends early."""
        self.round: DeltaAccumulator | None = None
        """The completion streaming now (None between rounds): if the run ends before it does, its
        tokens still count in the run's usage (`usage_if_cut_short`)."""
        self.round_prompt = 0
        """The prompt tokens of that completion, as counted when its context was built."""
        self.usage_before_round = Usage()
        """The run's usage before that completion."""
        self.cited: dict[int, str] = {}
        """File ids of this run's file-search results by citation number (for `file_citation` annotations)."""
        self.written: dict[str, str] = {}
        """File ids of the files this run's code wrote, by name in /mnt/data (for `file_path` annotations)."""
        self.partial_outputs: dict[str, list[CodeOutput]] = {}
        """Outputs of the open tool step's code calls so far, kept if the run ends mid-execution."""

    def publish(self, name: EventName, data: dict[str, Any]) -> None:
        self.bus.publish(
            Event(name, data, thread_id=self.run.thread_id, run_id=self.run.id, assistant_id=self.run.assistant_id)
        )

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[StoreTx]:
        """A transaction of this run's, begun after the open message's first write, so that its
        rows are stored in the order the run made them (a tool step after the text before it)."""
        await self._message_stored()
        async with self.store.transaction() as tx:
            yield tx

    # Run status --------------------------------------------------------------------------------

    async def move(self, to: RunStatus, **changes: Any) -> Run:
        """Transition the run from its stored status (another process may have asked to cancel)."""
        async with self._transaction() as tx:
            await self._move_in(tx, to, **changes)
        self.publish(EVENT_FOR_STATUS[to], self.run.wire())  # type: ignore[arg-type]
        return self.run

    async def _move_in(self, tx: StoreTx, to: RunStatus, **changes: Any) -> None:
        # Its row held from this read to the commit (PostgreSQL), as a cancel or tool outputs hold
        # it: no change of its status lands between the read and the write, to be overwritten.
        stored = await self.stored_run(tx, lock=True)
        if stored.status is RunStatus.cancelling and to is not RunStatus.cancelling and to not in TRANSITIONS[stored.status]:
            raise CancelledElsewhere(self.run.id)
        base = self.run.model_copy(update={"status": stored.status, "metadata": stored.metadata})
        self.run = transition(base, to, **changes)
        await tx.save(self.run)

    async def complete(self, text: str, *, step_usage: Usage, usage: Usage) -> None:
        """End the run `completed` with its final answer: the message, its step and the run (with
        its usage) are stored in one transaction, then their events are published as ever."""
        ended = await self._end_message(text, usage=step_usage, incomplete_reason=None)
        async with self._transaction() as tx:
            if ended is not None:
                ended = (await _with_stored_metadata(tx, ended[0]), ended[1])
                await tx.save(ended[0])
                await tx.save(ended[1])
            await self._move_in(tx, RunStatus.completed, usage=usage)
        if ended is not None:
            self._published_end(*ended)
        self.publish(EVENT_FOR_STATUS[RunStatus.completed], self.run.wire())  # type: ignore[arg-type]

    async def save_run(self, **changes: Any) -> None:
        """Store non-status changes (usage, the context record) without an event."""
        self.run = self.run.model_copy(update=changes)
        async with self._transaction() as tx:
            stored = await self.stored_run(tx, lock=True)
            self.run = self.run.model_copy(update={"status": stored.status, "metadata": stored.metadata})
            await tx.save(self.run)

    async def stored_run(self, tx: StoreTx, *, lock: bool = False) -> Run:
        """The run as stored now; `RunGone` when its thread was deleted meanwhile."""
        stored = await tx.find(Run, self.run.id, owner=None, lock=lock)
        if stored is None:
            raise RunGone(self.run.id)
        return stored

    # Messages ----------------------------------------------------------------------------------

    async def start_message(self) -> Message:
        """An assistant message in progress, and the `message_creation` step that makes it."""
        stamp = now()
        message = Message(
            id=new_id("message"),
            created_at=stamp,
            thread_id=self.run.thread_id,
            status=MessageStatus.in_progress,
            role="assistant",
            content=[],
            assistant_id=self.run.assistant_id,
            run_id=self.run.id,
            attachments=[],
        )
        step = RunStep(
            id=new_id("step"),
            created_at=stamp,
            assistant_id=self.run.assistant_id,
            thread_id=self.run.thread_id,
            run_id=self.run.id,
            type="message_creation",
            step_details=MessageCreationDetails(message_creation=MessageCreation(message_id=message.id)),
        )
        self.message, self.message_step = message, step
        # Stored by a task of its own, so the first words go out without waiting for the database
        # (on SQLite, for the process's turn to write) while the provider's next chunks queue up;
        # every later write of the message waits for it (`_message_stored`).
        self._storing = asyncio.ensure_future(self._insert_message(step, message))
        self._storing.add_done_callback(self._stored)
        self.storing[message.id] = self.storing[step.id] = self._storing
        # Each object is serialized once for its two events: subscribers never change event data.
        step_wire, message_wire = step.wire(), message.wire()
        self.publish("thread.run.step.created", step_wire)
        self.publish("thread.run.step.in_progress", step_wire)
        self.publish("thread.message.created", message_wire)
        self.publish("thread.message.in_progress", message_wire)
        return message

    async def _insert_message(self, step: RunStep, message: Message) -> None:
        # Behind the tasks already woken by the first words (the streams that relay them): building
        # the inserts takes the event loop for about a millisecond.
        await asyncio.sleep(0)
        async with self.store.transaction() as tx:
            await tx.insert(step, owner=self.owner)
            await tx.insert(message, owner=self.owner)

    def _stored(self, storing: asyncio.Task[None]) -> None:
        for key in [key for key, task in self.storing.items() if task is storing]:
            del self.storing[key]
        if storing is not self._storing or _failed(storing):
            return
        self._storing = None
        if self.message is not None:
            # Whatever streamed while it was being stored is checkpointed from now on, even if
            # only tool calls follow.
            self.checkpoints.note(self.message.id, self.partial_text)

    async def _message_stored(self) -> None:
        """Wait until the open message's first write is done (at most `MESSAGE_STORE_SECONDS`).
        If it failed or took too long, the message is forgotten and `MessageNotStored` raised;
        a cancellation of the run stays a cancellation."""
        storing = self._storing
        if storing is None:
            return
        try:
            # Shielded: cancelling the run does not cancel the write; the run's end waits for it,
            # but not for ever (a table locked by a migration, say).
            await asyncio.wait_for(asyncio.shield(storing), MESSAGE_STORE_SECONDS)
        except TimeoutError:
            storing.cancel()
            self._forget_message()
            raise MessageNotStored(
                f"Storing the answer of run {self.run.id} took over {MESSAGE_STORE_SECONDS:g} s."
            ) from None
        except asyncio.CancelledError:
            if _failed(storing):
                self._forget_message()
            raise
        except Exception as exc:
            self._forget_message()
            raise MessageNotStored(f"The answer of run {self.run.id} could not be stored.") from exc
        self._storing = None

    def _forget_message(self) -> None:
        """The open message was never stored: close it for subscribers and drop it here."""
        if self.message is not None and self.message_step is not None:
            stamp = now()
            self.publish("thread.message.incomplete", incomplete_message(self.message, "run_failed", stamp=stamp).wire())
            self.publish("thread.run.step.failed", end_step(self.message_step, StepStatus.failed, stamp=stamp).wire())
        self.message = self.message_step = None
        self._storing = None

    def raise_if_not_stored(self) -> None:
        """Raise `MessageNotStored` at once if the open message's first write has failed, so the
        run stops instead of streaming an answer that cannot be kept."""
        if self._storing is not None and _failed(self._storing):
            self._forget_message()
            raise MessageNotStored(f"The answer of run {self.run.id} could not be stored.")

    def message_delta(self, text: str, first: bool) -> None:
        """Publish a text delta (stored once, when the message ends, not per token)."""
        assert self.message is not None
        value: dict[str, Any] = {"value": text}
        if first:
            value["annotations"] = []
        self.publish(
            "thread.message.delta",
            {
                "id": self.message.id,
                "object": "thread.message.delta",
                "delta": {"content": [{"index": 0, "type": "text", "text": value}]},
            },
        )

    def usage_if_cut_short(self) -> Usage | None:
        """The run's usage when it ends early: with the completion it was streaming (its prompt,
        and a token per chunk received, as the provider's own count never came), or as counted
        after the last completion; None when it used nothing."""
        if self.round is not None and self.round.chunks:
            return self.usage_before_round.add(self.round_prompt, self.round.chunks)
        return self.usage_before_round if self.usage_before_round.total_tokens else None

    def checkpoint_message(self) -> None:
        """Have the text streamed so far stored within a second (see `AnswerCheckpoints`), so that
        a process killed mid-answer leaves the words already shown in the database."""
        if self.message is not None and self._storing is None:
            self.checkpoints.note(self.message.id, self.partial_text)

    async def finish_message(self, text: str, *, usage: Usage | None, incomplete_reason: str | None = None) -> None:
        """Store the message's final text as completed, or as incomplete with the reason."""
        ended = await self._end_message(text, usage=usage, incomplete_reason=incomplete_reason)
        if ended is None:
            return
        async with self._transaction() as tx:
            ended = (await _with_stored_metadata(tx, ended[0]), ended[1])
            if not await tx.save_while_in_progress(ended[0]):
                # Ended meanwhile by another process's sweep (this one stalled past its lease):
                # that end stands, and a message's text never changes once it has ended.
                log.warning("run %s: its answer %s was already ended; left as it is", self.run.id, ended[0].id)
                return
            await tx.save(ended[1])
        self._published_end(*ended)

    async def _end_message(
        self, text: str, *, usage: Usage | None, incomplete_reason: str | None
    ) -> tuple[Message, RunStep] | None:
        """The open message and its step as they end (not stored yet), once no checkpoint can
        land after them; None when no message is open."""
        if self.message is None or self.message_step is None:
            return None
        await self._message_stored()
        await self.checkpoints.settle(self.message.id)
        stamp = now()
        annotations = file_path_annotations(text, self.written) if self.written else []
        if self.cited:
            annotations = sorted(
                [*annotations, *file_citations(text, self.cited)], key=lambda a: int(str(a["start_index"]))
            )
        content = [TextContent(text=TextValue(value=text, annotations=annotations))] if text else []
        if incomplete_reason is None:
            message = self.message.model_copy(
                update={"status": MessageStatus.completed, "content": content, "completed_at": stamp}
            )
            step = end_step(self.message_step, StepStatus.completed, stamp=stamp, usage=usage)
        else:
            message = incomplete_message(self.message, incomplete_reason, stamp=stamp, content=content)
            step_status = {"run_cancelled": StepStatus.cancelled, "run_expired": StepStatus.expired}.get(
                incomplete_reason, StepStatus.failed if incomplete_reason == "run_failed" else StepStatus.completed
            )
            step = end_step(self.message_step, step_status, stamp=stamp, usage=usage)
        return message, step

    def _published_end(self, message: Message, step: RunStep) -> None:
        """After the ended message and step are stored: close them here and publish their ends."""
        self.message = self.message_step = None
        completed = message.status is MessageStatus.completed
        self.publish("thread.message.completed" if completed else "thread.message.incomplete", message.wire())
        self.publish(f"thread.run.step.{step.status.value}", step.wire())  # type: ignore[arg-type]

    # Tool calls ---------------------------------------------------------------------------------

    async def start_tool_step(self) -> RunStep:
        """A `tool_calls` step, created when the first tool call starts streaming."""
        step = RunStep(
            id=new_id("step"),
            created_at=now(),
            assistant_id=self.run.assistant_id,
            thread_id=self.run.thread_id,
            run_id=self.run.id,
            type="tool_calls",
            step_details=ToolCallsDetails(tool_calls=[]),
        )
        async with self._transaction() as tx:
            await tx.insert(step, owner=self.owner)
        self.tool_step = step
        self.publish("thread.run.step.created", step.wire())
        self.publish("thread.run.step.in_progress", step.wire())
        return step

    def tool_delta(self, call: AccumulatedCall, *, name: str | None, arguments: str | None, call_id: str | None) -> None:
        """Publish a step delta for one streamed tool-call fragment."""
        assert self.tool_step is not None
        function: dict[str, Any] = {"arguments": arguments or ""}
        if name is not None:
            function["name"] = name
            function["output"] = None
        entry: dict[str, Any] = {"index": call.index, "type": "function", "function": function}
        if call_id is not None:
            entry["id"] = call_id
        self._tool_calls_delta(self.tool_step.id, entry)

    def code_delta(self, call: AccumulatedCall, *, code: str, call_id: str | None, first: bool) -> None:
        """Publish a step delta with a fragment of a code-interpreter call's input."""
        assert self.tool_step is not None
        body: dict[str, Any] = {"input": code}
        if first:
            body["outputs"] = []
        entry: dict[str, Any] = {"index": call.index, "type": "code_interpreter", "code_interpreter": body}
        if call_id is not None:
            entry["id"] = call_id
        self._tool_calls_delta(self.tool_step.id, entry)

    def search_delta(self, call: AccumulatedCall, *, call_id: str | None) -> None:
        """Publish the start of a file-search call (its results come with the finished step)."""
        assert self.tool_step is not None
        entry: dict[str, Any] = {"index": call.index, "type": "file_search", "file_search": {}}
        if call_id is not None:
            entry["id"] = call_id
        self._tool_calls_delta(self.tool_step.id, entry)

    def code_output_delta(self, call_index: int, output_index: int, output: dict[str, Any]) -> None:
        """Publish one output (or more of one `logs` output) of a running code-interpreter call."""
        assert self.tool_step is not None
        entry = {"index": call_index, "type": "code_interpreter", "code_interpreter": {"outputs": [{"index": output_index, **output}]}}
        self._tool_calls_delta(self.tool_step.id, entry)

    def _tool_calls_delta(self, step_id: str, entry: dict[str, Any]) -> None:
        self.publish(
            "thread.run.step.delta",
            {"id": step_id, "object": "thread.run.step.delta", "delta": {"step_details": {"type": "tool_calls", "tool_calls": [entry]}}},
        )

    async def store_tool_calls(
        self,
        calls: list[AccumulatedCall],
        usage: Usage | None,
        *,
        code: AbstractSet[str],
        search: AbstractSet[str] = frozenset(),
    ) -> RunStep:
        """The step with its complete calls (outputs still missing); `code` and `search` name the
        calls that are code-interpreter and file-search calls."""
        assert self.tool_step is not None
        details = ToolCallsDetails(tool_calls=[_stored_call(c, code, search) for c in calls])
        self.tool_step = self.tool_step.model_copy(update={"step_details": details, "usage": usage})
        self.partial_outputs = {}
        async with self._transaction() as tx:
            await tx.save(self.tool_step)
        return self.tool_step

    async def fill_outputs(self, step: RunStep, outputs: ToolOutputs) -> RunStep:
        """Store the outputs known so far; the step stays open while the run waits for the rest."""
        step = with_outputs(step, outputs)
        async with self._transaction() as tx:
            await tx.save(step)
        self.tool_step = None
        return step

    async def finish_tool_step(
        self, step: RunStep, outputs: ToolOutputs, *, status: StepStatus = StepStatus.completed, error: LastError | None = None
    ) -> RunStep:
        """Fill in outputs and close the step (completed, or cancelled/failed/expired with the run)."""
        finished = end_step(with_outputs(step, outputs), status, last_error=error)
        assert isinstance(finished.step_details, ToolCallsDetails)
        calls = finished.step_details.tool_calls
        async with self._transaction() as tx:
            await tx.save(finished)
        if self.tool_step is not None and self.tool_step.id == step.id:
            self.tool_step = None
        if status is StepStatus.completed and outputs:
            for index, call in enumerate(calls):
                # Code-interpreter outputs were published as they came; function outputs arrive whole.
                output = outputs.get(call.id)
                if isinstance(call, FunctionToolCall) and isinstance(output, str):
                    self._tool_calls_delta(
                        step.id, {"index": index, "id": call.id, "type": "function", "function": {"output": output}}
                    )
        self.publish(f"thread.run.step.{status.value}", finished.wire())  # type: ignore[arg-type]
        return finished


async def _with_stored_metadata(tx: StoreTx, message: Message) -> Message:
    """An answer as it ends, with the metadata stored now: a client may have set it while the
    answer streamed. The row is held from this read to the commit (PostgreSQL), as
    `Engine.update_message` holds it, so no change of it slips in between and is lost."""
    stored = await tx.find(Message, message.id, owner=None, lock=True)
    return message if stored is None else message.model_copy(update={"metadata": stored.metadata})

