"""The run engine's thin public face: execute one run from its stored state to a pause or an end.

A run's execution is one asyncio task. It starts from what the transaction that started the run
(its creation, or tool outputs arriving) stored and read (`Begun`), and reads the rest (the
thread's history, the run's own steps) from the store. The phases live in private modules:
`_context` (what to send), `_stream` (accumulating deltas), `_tools` (dispatching tool calls),
`_steps` (persisting and publishing), `_status` (the transition table).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..events import EventBus
from ..exceptions import (
    ConfigurationError,
    ExpiredVectorStoreError,
    ModelBehaviourError,
    ProviderError,
)
from ..ids import now
from ..providers import ChatChunk, ChatProvider
from ..store import FileStore, SqlStore
from ..tools import FunctionRegistry, file_search
from ..tools.code_interpreter import (
    CodeArgumentStream,
    CodeInterpreter,
    InputFile,
    definition,
    placed_names,
)
from ..tools.file_search import FileSearch
from ..types import Run, RunStatus, RunStep, StepStatus, Thread, Usage
from ..types.objects import (
    CODE_INTERPRETER_FUNCTION,
    FILE_SEARCH_FUNCTION,
    CodeInterpreterTool,
    CodeOutput,
    FileSearchCall,
    FileSearchTool,
    FileSearchToolCall,
    FunctionCall,
    FunctionTool,
    IncompleteDetails,
    LastError,
    NamedToolChoice,
    RequiredAction,
    RequiredToolCall,
    ResponseFormatJsonSchema,
    ResponseFormatSimple,
    SubmitToolOutputs,
    ToolCallsDetails,
)
from ._checkpoints import AnswerCheckpoints
from ._code import CodeCalls, input_files
from ._context import PromptBudgetExceeded, build_context, save_summary
from ._history import HistoryMemory
from ._recovery import rebuild_tail, tool_round
from ._steps import CancelledElsewhere, MessageNotStored, RunGone, RunRecorder, ToolOutputs
from ._stream import AccumulatedCall, DeltaAccumulator
from ._tools import dispatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Begun:
    """A run its caller moved to `in_progress` in the transaction that started it, with what that
    transaction already knew: the executor starts from this instead of reading it back."""

    run: Run
    thread: Thread | None = None
    steps: list[RunStep] | None = None
    """The run's steps so far (none for a new run); read from the store when not given."""


class RunExecutor:
    """Executes runs. Built once with its collaborators; `execute` is called per run."""

    def __init__(
        self,
        *,
        store: SqlStore,
        files: FileStore,
        bus: EventBus,
        provider: ChatProvider,
        registry: FunctionRegistry,
        settings: Settings,
        code: CodeInterpreter | None = None,
        search: FileSearch | None = None,
    ) -> None:
        self.store = store
        self.code = code
        self.search = search
        self.files = files
        self.bus = bus
        self.provider = provider
        self.registry = registry
        self.settings = settings
        self.checkpoints = AnswerCheckpoints(store)
        """Stores the text of this process's answers being streamed, every second."""
        self.storing: dict[str, asyncio.Task[None]] = {}
        """New answers' messages and steps still being stored, by their ids (`RunRecorder.start_message`)."""
        self.history = HistoryMemory()
        """Each thread's history as its last run sent it (`full` context), so the next reads only what is new."""

    async def execute(self, owner: str, begun: Begun) -> None:
        """Take a run stored `in_progress` to its next pause or end. Never leaves it stuck."""
        recorder = RunRecorder(self.store, self.bus, owner, begun.run, self.checkpoints, self.storing)
        try:
            try:
                await self._execute(recorder, begun)
            except CancelledElsewhere:
                # Another process stored `cancelling` and this one was about to pause the run (or
                # end it where a cancelled run cannot go): it ends `cancelled`, as that cancel asked.
                await self._end(recorder, RunStatus.cancelled, "run_cancelled")
        except RunGone:
            # Its thread was deleted while it worked: nothing is left to store, but whoever
            # follows the run (a stream, the chat) hears that it ended instead of waiting for ever.
            log.info("run %s: its thread was deleted while it worked", recorder.run.id)
            gone = recorder.run.model_copy(
                update={
                    "status": RunStatus.failed,
                    "failed_at": now(),
                    "last_error": LastError(code="server_error", message="The run's thread was deleted while the run was working."),
                }
            )
            recorder.publish("thread.run.failed", gone.wire())

    async def _execute(self, recorder: RunRecorder, begun: Begun) -> None:
        deadline = asyncio.timeout(self.settings.run_timeout_seconds)
        try:
            async with deadline:
                await self._loop(recorder, begun)
        except asyncio.CancelledError:
            await self._end(recorder, RunStatus.cancelled, "run_cancelled")
        except TimeoutError:
            if not deadline.expired():  # Not the run's deadline: some call inside timed out.
                await self._internal_error(recorder)
                return
            async with self.store.read() as tx:
                if (await recorder.stored_run(tx)).status is RunStatus.cancelling:
                    # A cancel raced the deadline: the user asked first.
                    await self._end(recorder, RunStatus.cancelled, "run_cancelled")
                    return
            # A provider streaming without end, or tools that never finish: the partial answer
            # stays (marked expired) and the thread is free again.
            seconds = self.settings.run_timeout_seconds
            await self._end(
                recorder,
                RunStatus.expired,
                "run_expired",
                last_error=LastError(
                    code="server_error",
                    message=f"The run was stopped after working for {seconds:g} s without finishing "
                    "(ASSISTANTS_RUN_TIMEOUT). The model may be stuck in an endless answer; try again.",
                ),
            )
        except PromptBudgetExceeded:
            await self._end(
                recorder, RunStatus.incomplete, "max_tokens", incomplete_details=IncompleteDetails(reason="max_prompt_tokens")
            )
        except (ConfigurationError, ModelBehaviourError, ExpiredVectorStoreError) as exc:
            await self._fail(recorder, LastError(code="server_error", message=exc.message))
        except ProviderError as exc:
            await self._fail(recorder, LastError(code=exc.code, message=exc.message))
        except (CancelledElsewhere, RunGone):
            raise  # `execute` ends these
        except Exception:
            await self._internal_error(recorder)

    async def _internal_error(self, recorder: RunRecorder) -> None:
        """Fail the run on an unexpected exception (logged with its traceback; the user gets words)."""
        log.exception("run %s failed with an internal error", recorder.run.id)
        await self._fail(
            recorder, LastError(code="server_error", message="The server hit an internal error while running. Try again.")
        )

    async def _fail(self, recorder: RunRecorder, error: LastError) -> None:
        await self._end(recorder, RunStatus.failed, "run_failed", last_error=error)

    async def _end(self, recorder: RunRecorder, status: RunStatus, message_reason: str, **changes: Any) -> None:
        """Close whatever is open (partial message, tool step), then move the run to `status`.

        Carried to its end even if the task is cancelled again meanwhile (a second cancel, say):
        a wind-down cut short would leave the run `cancelling` until its lease ran out.
        """
        await _uninterrupted(self._wind_down(recorder, status, message_reason, **changes))

    async def _wind_down(self, recorder: RunRecorder, status: RunStatus, message_reason: str, **changes: Any) -> None:
        # The partial answer is kept: it is stored as `incomplete`, never dropped.
        if recorder.message is not None:
            try:
                await recorder.finish_message(recorder.partial_text, usage=None, incomplete_reason=message_reason)
            except MessageNotStored:
                # Nothing of the answer was stored; the run still ends, saying so.
                log.exception("run %s ends without its answer", recorder.run.id)
        step_status = {
            RunStatus.cancelled: StepStatus.cancelled,
            RunStatus.failed: StepStatus.failed,
            RunStatus.expired: StepStatus.expired,
        }.get(status, StepStatus.completed)
        if recorder.tool_step is not None:
            await recorder.finish_tool_step(
                recorder.tool_step, recorder.partial_outputs, status=step_status, error=changes.get("last_error")
            )
        if status is RunStatus.cancelled:
            # Steps left waiting on client outputs are cancelled too.
            async with self.store.read() as tx:
                waiting = [s for s in await tx.run_steps(recorder.run.id) if s.status is StepStatus.in_progress]
                stored = await recorder.stored_run(tx)
            for step in waiting:
                await recorder.finish_tool_step(step, {}, status=StepStatus.cancelled)
            # `Engine.cancel_run` stores `cancelling` before it cancels this task, so the in-memory
            # run is stale here: moving again would be cancelling -> cancelling, which raises.
            if stored.status is not RunStatus.cancelling:
                await recorder.move(RunStatus.cancelling)
        cut_short = recorder.usage_if_cut_short()
        if cut_short is not None:
            changes.setdefault("usage", cut_short)
        await recorder.move(status, **changes)

    async def _loop(self, recorder: RunRecorder, begun: Begun) -> None:
        run = recorder.run
        async with self.store.read() as tx:
            thread = begun.thread or await tx.get(Thread, run.thread_id, owner=None)
            steps = begun.steps if begun.steps is not None else await tx.run_steps(run.id)
            tail, rounds = await rebuild_tail(tx, steps)
            inputs = await input_files(tx, self.files, recorder.owner, run) if _offers_code(run) else []
            stores = await file_search.store_ids(tx, recorder.owner, run) if _offers_search(run) else []
        if self.search is not None:
            await self.search.used(recorder.owner, stores)
        usage = run.usage or Usage()
        # Citation numbers run on through the run, also across a pause for tool outputs.
        for step in steps:
            if isinstance(step.step_details, ToolCallsDetails):
                for done in step.step_details.tool_calls:
                    if isinstance(done, FileSearchToolCall):
                        _cite(recorder, done.file_search)
        tools = self._tool_definitions(run, inputs)
        while True:
            if rounds >= self.settings.max_tool_rounds:
                raise RunawayToolLoop(self.settings.max_tool_rounds)
            prompt_budget = None if run.max_prompt_tokens is None else run.max_prompt_tokens - usage.prompt_tokens
            async with self.store.read() as tx:
                prepared = await build_context(
                    tx,
                    run=run,
                    thread=thread,
                    tail=tail,
                    tools=tools,
                    window=self._window(run),
                    prompt_budget=prompt_budget,
                    summarize=self._summarize(run),
                    read_file=self._read_file(recorder.owner),
                    memory=self.history,
                )
            if prepared.summary is not None:
                async with self.store.transaction() as tx:
                    await save_summary(tx, prepared.summary)
            if recorder.run.context is None:
                # Kept in memory and stored with the next write (usage, or the run's end), which
                # saves a transaction before the first token.
                recorder.run = recorder.run.model_copy(update={"context": prepared.record})
            request = self._request(run, prepared.messages, tools, usage)
            recorder.round_prompt, recorder.usage_before_round = prepared.record.prompt_tokens, usage
            accumulated = await self._stream(recorder, request, code=_offers_code(run), search=_offers_search(run))
            prompt = accumulated.prompt_tokens if accumulated.prompt_tokens is not None else prepared.record.prompt_tokens
            completion = accumulated.completion_tokens if accumulated.completion_tokens is not None else accumulated.chunks
            step_usage = Usage().add(prompt, completion)
            usage = usage.add(prompt, completion)
            # Counted exactly now: a run ended before this round's usage is stored keeps it.
            recorder.round, recorder.usage_before_round = None, usage
            budget = run.max_completion_tokens
            # A final answer is over budget only past it; another tool round needs budget left.
            over_budget = budget is not None and usage.completion_tokens > budget
            budget_spent = budget is not None and usage.completion_tokens >= budget
            calls = accumulated.tool_calls()
            cut = accumulated.finish_reason == "length"
            # An answer that spent the run's completion budget ends the run `incomplete`, so the
            # message carrying it is incomplete too, whether or not the provider itself cut it.
            truncated = cut or (over_budget and not calls)
            if not calls and not truncated:
                # The final answer: the message, its step and the run end in one transaction.
                await recorder.complete(accumulated.text or accumulated.refusal, step_usage=step_usage, usage=usage)
                return
            await recorder.save_run(usage=usage)
            run = recorder.run
            if recorder.message is not None:
                await recorder.finish_message(
                    accumulated.text or accumulated.refusal,
                    usage=None if calls else step_usage,
                    incomplete_reason="max_tokens" if truncated else None,
                )
            code_calls = [c for c in calls if _offers_code(run) and c.name == CODE_INTERPRETER_FUNCTION]
            search_calls = [c for c in calls if _offers_search(run) and c.name == FILE_SEARCH_FUNCTION]
            if truncated:
                # The provider stopped at its token limit, or the run's completion budget is spent.
                if recorder.tool_step is not None:
                    # A tool call cut off mid-arguments cannot run; its step keeps the calls as far
                    # as they came (so it shows what was cut) and closes with the reason.
                    step = await recorder.store_tool_calls(
                        calls, step_usage, code={c.id for c in code_calls}, search={c.id for c in search_calls}
                    )
                    await recorder.finish_tool_step(
                        step,
                        {},
                        status=StepStatus.failed,
                        error=LastError(code="server_error", message="The model's output was cut off inside this tool call."),
                    )
                await recorder.move(
                    RunStatus.incomplete, incomplete_details=IncompleteDetails(reason="max_completion_tokens")
                )
                return
            rounds += 1
            step = await recorder.store_tool_calls(
                calls, step_usage, code={c.id for c in code_calls}, search={c.id for c in search_calls}
            )
            function_calls = [c for c in calls if c not in code_calls and c not in search_calls]
            (outputs, client_calls), code_outputs, search_outputs = await asyncio.gather(
                dispatch(function_calls, run=run, registry=self.registry, time_limit=self.settings.tool_timeout_seconds),
                self._run_code(recorder, code_calls, inputs),
                self._run_search(recorder, search_calls, stores),
            )
            all_outputs: ToolOutputs = {**outputs, **code_outputs, **search_outputs}
            if client_calls:
                await recorder.fill_outputs(step, all_outputs)
                await recorder.move(
                    RunStatus.requires_action,
                    required_action=RequiredAction(
                        submit_tool_outputs=SubmitToolOutputs(
                            tool_calls=[
                                RequiredToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments))
                                for c in client_calls
                            ]
                        )
                    ),
                    expires_at=_expiry(self.settings),
                )
                return
            finished = await recorder.finish_tool_step(step, all_outputs)
            tail = [*tail, *tool_round(accumulated.text, finished)]
            if budget_spent:
                await recorder.move(RunStatus.incomplete, incomplete_details=IncompleteDetails(reason="max_completion_tokens"))
                return

    async def _run_code(
        self, recorder: RunRecorder, calls: list[AccumulatedCall], inputs: list[InputFile]
    ) -> dict[str, list[CodeOutput]]:
        if not calls:
            return {}
        interpreter = self.code or CodeInterpreter(None)
        return await CodeCalls(recorder, interpreter, self.files, inputs).run(calls)

    async def _run_search(
        self, recorder: RunRecorder, calls: list[AccumulatedCall], stores: list[str]
    ) -> dict[str, FileSearchCall]:
        """Each search in call order, so citation numbers follow the order the model asked in."""
        found: dict[str, FileSearchCall] = {}
        limit, threshold = file_search.options(recorder.run)
        if calls and stores and self.search is not None:
            # Files just attached may still be indexing: the hosted API let a run wait for them too.
            await self.search.ready(stores)
        for call in calls:
            query = file_search.parse_query(call.arguments) or call.arguments.strip()
            first = max(recorder.cited, default=0) + 1
            if self.search is None or not stores:
                result = FileSearchCall(query=query, first_marker=first)
            else:
                result = await self.search.search(
                    recorder.owner, stores, query, limit=limit, threshold=threshold, first_marker=first
                )
            _cite(recorder, result)
            found[call.id] = result
        return found

    async def _stream(
        self, recorder: RunRecorder, request: dict[str, Any], *, code: bool, search: bool = False
    ) -> DeltaAccumulator:
        """Stream one completion, publishing deltas as they come. Retries only before the first chunk.

        With `code`, calls to the code interpreter are published with its shape, the code decoded
        out of the JSON arguments as it streams.
        """
        chunks = await self._open_with_retries(request)
        accumulated = recorder.round = DeltaAccumulator()
        code_streams: dict[int, CodeArgumentStream] = {}
        searches: set[int] = set()
        recorder.partial_text = ""
        async for chunk in chunks:
            started = accumulated.add(chunk)
            if chunk.content or chunk.refusal:
                if recorder.message is None:
                    await recorder.start_message()
                    first = True
                else:
                    first = False
                recorder.raise_if_not_stored()
                recorder.partial_text = accumulated.text or accumulated.refusal
                recorder.message_delta(chunk.content or chunk.refusal or "", first)
                recorder.checkpoint_message()
            for delta in chunk.tool_calls:
                if recorder.tool_step is None:
                    await recorder.start_tool_step()
                call: AccumulatedCall = accumulated.calls[delta.index]
                is_new = call in started
                if code and (call.index in code_streams or (is_new and call.name == CODE_INTERPRETER_FUNCTION)):
                    decoder = code_streams.setdefault(call.index, CodeArgumentStream())
                    recorder.code_delta(
                        call, code=decoder.feed(delta.arguments or ""), call_id=call.id if is_new and call.id else None, first=is_new
                    )
                    continue
                if search and (call.index in searches or (is_new and call.name == FILE_SEARCH_FUNCTION)):
                    if call.index not in searches:
                        searches.add(call.index)
                        recorder.search_delta(call, call_id=call.id or None)
                    continue
                recorder.tool_delta(
                    call,
                    name=call.name if is_new else None,
                    arguments=delta.arguments,
                    call_id=call.id if is_new and call.id else None,
                )
        return accumulated

    async def _open_with_retries(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        """Open the provider stream and read its first chunk, retrying with backoff on failure."""
        attempt = 0
        while True:
            stream = self.provider.stream(request)
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                return _empty()
            except ProviderError as exc:
                await _aclose(stream)
                if not exc.retryable or attempt >= self.settings.provider_max_retries:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else min(8.0, 0.5 * 2**attempt)
                await asyncio.sleep(delay + random.uniform(0, 0.1 * delay))
                attempt += 1
                continue
            return _prepend(first, stream)

    def _tool_definitions(self, run: Run, inputs: list[InputFile]) -> list[dict[str, Any]]:
        tools = [tool.model_dump(mode="json", exclude_none=True) for tool in run.tools if isinstance(tool, FunctionTool)]
        if _offers_code(run):
            tools.append(definition(placed_names(inputs)))
        if _offers_search(run):
            tools.append(file_search.definition())
        return tools

    def _window(self, run: Run) -> int:
        reserve = run.max_completion_tokens or min(4096, self.settings.context_window // 4)
        return max(256, self.settings.context_window - reserve)

    def _request(self, run: Run, messages: list[dict[str, Any]], tools: list[dict[str, Any]], usage: Usage) -> dict[str, Any]:
        request: dict[str, Any] = {"model": run.model, "messages": messages}
        if tools:
            request["tools"] = tools
            choice = run.tool_choice
            if isinstance(choice, NamedToolChoice):
                if choice.type == "function" and choice.function is not None:
                    request["tool_choice"] = {"type": "function", "function": {"name": choice.function.name}}
                elif choice.type == "code_interpreter" and _offers_code(run):
                    request["tool_choice"] = {"type": "function", "function": {"name": CODE_INTERPRETER_FUNCTION}}
                elif choice.type == "file_search" and _offers_search(run):
                    request["tool_choice"] = {"type": "function", "function": {"name": FILE_SEARCH_FUNCTION}}
            elif choice != "auto":
                request["tool_choice"] = choice
            if not run.parallel_tool_calls:
                request["parallel_tool_calls"] = False
        if run.temperature is not None:
            request["temperature"] = run.temperature
        if run.top_p is not None:
            request["top_p"] = run.top_p
        fmt = run.response_format
        if isinstance(fmt, ResponseFormatJsonSchema):
            request["response_format"] = {"type": "json_schema", "json_schema": fmt.json_schema}
        elif isinstance(fmt, ResponseFormatSimple) and fmt.type == "json_object":
            request["response_format"] = {"type": "json_object"}
        if run.reasoning_effort is not None:
            request["reasoning_effort"] = run.reasoning_effort
        if run.max_completion_tokens is not None:
            request["max_completion_tokens"] = max(1, run.max_completion_tokens - usage.completion_tokens)
        return request

    def _summarize(self, run: Run) -> Callable[[list[dict[str, Any]]], Awaitable[str]]:
        async def summarize(messages: list[dict[str, Any]]) -> str:
            return await self.provider.complete({"model": run.model, "messages": messages})

        return summarize

    def _read_file(self, owner: str) -> Callable[[str], Awaitable[bytes | None]]:
        async def read(file_id: str) -> bytes | None:
            async with self.store.read() as tx:
                try:
                    path = await tx.file_path(file_id, owner=owner)
                except Exception:
                    return None
            return await self.files.read(path)

        return read


class RunawayToolLoop(ModelBehaviourError):
    """The model kept calling tools past the configured bound."""

    def __init__(self, rounds: int) -> None:
        super().__init__(
            f"The run was stopped after {rounds} rounds of tool calls without a final answer "
            "(ASSISTANTS_MAX_TOOL_ROUNDS). Rephrase the request or raise the limit."
        )


def _offers_search(run: Run) -> bool:
    return any(isinstance(tool, FileSearchTool) for tool in run.tools)


def _cite(recorder: RunRecorder, search: FileSearchCall) -> None:
    for position, result in enumerate(search.results):
        recorder.cited[search.first_marker + position] = result.file_id


def _offers_code(run: Run) -> bool:
    return any(isinstance(tool, CodeInterpreterTool) for tool in run.tools)


def _expiry(settings: Settings) -> int:
    return now() + settings.run_expiry_seconds


async def _prepend(first: ChatChunk, rest: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await _aclose(rest)


async def _empty() -> AsyncIterator[ChatChunk]:
    return
    yield  # pragma: no cover - makes this function an async generator.


async def _aclose(stream: AsyncIterator[ChatChunk]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


async def _uninterrupted(work: Coroutine[Any, Any, None]) -> None:
    """Await `work` to its end even if the awaiting task is cancelled meanwhile; its own errors
    (and its own cancellation, at shutdown) still reach the caller."""
    inner = asyncio.ensure_future(work)
    current = asyncio.current_task()
    while True:
        try:
            await asyncio.shield(inner)
            return
        except asyncio.CancelledError:
            if inner.cancelled():
                raise
            if current is not None:
                current.uncancel()
            if inner.done():
                inner.result()
                return

