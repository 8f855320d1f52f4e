"""How runs end when something else happens to them meanwhile, on both backends: a cancel while
the run winds down, a cancel stored by another process just before the run pauses, a run whose
process stopped, a thread deleted under a working run. Each ends in a defined state, closes what
it had open, and tells whoever follows it.
"""

from __future__ import annotations

import asyncio
import contextlib

from assistants.engine import Engine
from assistants.events import Event
from assistants.runs._status import transition
from assistants.types import Message, MessageStatus, Run, RunStatus, RunStep, StepStatus, Thread
from assistants.types.requests import AssistantCreate, MessageCreate, RunCreate, ThreadCreate
from tests.conftest import StartRuntime
from tests.scripted_model import ScriptedModel
from tests.test_lock_order import abandoned_answer

OWNER = "user_endings"
WAIT = 20.0

CLIENT_TOOL = {
    "type": "function",
    "function": {"name": "ask_the_user", "parameters": {"type": "object", "properties": {}}},
}


async def new_thread(engine: Engine, text: str = "Hello.") -> Thread:
    thread = await engine.create_thread(OWNER, ThreadCreate())
    await engine.create_message(OWNER, thread.id, MessageCreate(role="user", content=text))
    return thread


async def assistant_id(engine: Engine, **kw: object) -> str:
    return (await engine.create_assistant(OWNER, AssistantCreate(model="scripted-model", **kw))).id  # type: ignore[arg-type]


async def stored(engine: Engine, run_id: str) -> tuple[Run, list[RunStep], list[Message]]:
    """The run, its steps and its answers as stored."""
    async with engine.store.read() as tx:
        run = await tx.get(Run, run_id, owner=None)
        steps = await tx.run_steps(run_id)
        messages, _, _ = await tx.thread_history(run.thread_id)
    return run, steps, [m for m in messages if m.run_id == run_id]


async def following(engine: Engine, run_id: str, act: object) -> list[Event]:
    """The run's events from now until it ends, while `act` (awaited once subscribed) happens."""
    with contextlib.closing(engine.subscribe(run_id=run_id)) as subscription:
        async with asyncio.timeout(WAIT):
            await act  # type: ignore[misc]
            return [event async for event in subscription.until_run_pauses()]


async def test_cancelling_a_run_whose_process_stopped_keeps_its_answer_and_says_so(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    engine = (await start_runtime()).engine
    thread = await new_thread(engine)
    run, answer = await abandoned_answer(engine, thread.id, OWNER)

    events = await following(engine, run.id, engine.cancel_run(OWNER, thread.id, run.id))

    ended, [step], [kept] = await stored(engine, run.id)
    assert ended.status is RunStatus.cancelled and step.status is StepStatus.cancelled
    assert kept.id == answer.id and kept.status is MessageStatus.incomplete
    assert kept.incomplete_details is not None and kept.incomplete_details.reason == "run_cancelled"
    assert [e.event for e in events] == [
        "thread.run.cancelling",
        "thread.message.incomplete",
        "thread.run.step.cancelled",
        "thread.run.cancelled",
    ]


async def test_the_sweep_that_ends_a_run_whose_process_stopped_publishes_its_answer_and_step_too(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    engine = (await start_runtime()).engine
    thread = await new_thread(engine)
    run, answer = await abandoned_answer(engine, thread.id, OWNER)

    events = await following(engine, run.id, engine.end_abandoned_runs())

    ended, [step], [kept] = await stored(engine, run.id)
    assert ended.status is RunStatus.failed and step.status is StepStatus.failed
    assert kept.status is MessageStatus.incomplete
    assert kept.incomplete_details is not None and kept.incomplete_details.reason == "run_failed"
    assert [e.event for e in events] == ["thread.message.incomplete", "thread.run.step.failed", "thread.run.failed"]
    assert events[0].data["id"] == answer.id and events[-1].data["last_error"]["code"] == "server_error"


async def test_cancelling_again_while_a_run_winds_down_does_not_cut_its_end_short(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    """Cancels keep coming while the cancelled run stores its partial answer and its end (a
    second cancel, a lease tick that finds it `cancelling`): it still ends `cancelled`, its answer
    kept, instead of staying `cancelling` until its lease runs out."""
    engine = (await start_runtime()).engine
    thread = await new_thread(engine, "Go on for ever.")
    model.add_endless(0.01)
    events: list[Event] = []
    run_id = ""
    async with asyncio.timeout(WAIT):
        async for event in engine.stream_run(OWNER, thread.id, RunCreate(assistant_id=await assistant_id(engine))):
            events.append(event)
            if event.event == "thread.message.delta" and not run_id:
                run_id = events[0].data["id"]
                task = engine._tasks[run_id]
                await engine.cancel_run(OWNER, thread.id, run_id)
                while not task.done():  # again and again, for as long as it winds down
                    task.cancel()
                    await asyncio.sleep(0)

    run, steps, [answer] = await stored(engine, run_id)
    assert run.status is RunStatus.cancelled
    assert [s.status for s in steps] == [StepStatus.cancelled]
    assert answer.status is MessageStatus.incomplete and answer.text
    assert events[-1].event == "thread.run.cancelled"


async def test_a_cancel_stored_by_another_process_just_before_the_run_pauses_ends_it_cancelled(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    """Another process stored `cancelling` while this one streamed a call of a client-side tool;
    its word has not arrived when the run would pause for the tool's output: the run ends
    `cancelled` (a cancelled run cannot wait for outputs), its tool step closed."""
    engine = (await start_runtime()).engine
    thread = await new_thread(engine, "Ask me something.")
    helper = await assistant_id(engine, tools=[CLIENT_TOOL])
    model.add_tool_calls([{"name": "ask_the_user", "arguments": '{"question": "which one?"}'}], delay=0.05)
    events: list[Event] = []
    async with asyncio.timeout(WAIT):
        async for event in engine.stream_run(OWNER, thread.id, RunCreate(assistant_id=helper)):
            events.append(event)
            if event.event == "thread.run.step.created":
                async with engine.store.transaction() as tx:  # what the other process's cancel stores
                    run = await tx.get(Run, event.data["run_id"], owner=None)
                    await tx.save(transition(run, RunStatus.cancelling))

    run, [step], _ = await stored(engine, events[0].data["id"])
    assert run.status is RunStatus.cancelled and run.last_error is None
    assert step.type == "tool_calls" and step.status is StepStatus.cancelled
    assert events[-1].event == "thread.run.cancelled"
    assert "thread.run.requires_action" not in [e.event for e in events]


async def test_a_run_whose_thread_is_deleted_under_it_ends_for_those_who_follow_it(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    """The thread is deleted while its run streams (as another process deletes it, without this
    one's task being cancelled): nothing is left to store, and the run's stream still ends, with
    a `thread.run.failed` that says why, instead of waiting for ever."""
    engine = (await start_runtime()).engine
    thread = await new_thread(engine, "Take your time.")
    model.add_text("one two three four five six seven eight", delay=0.05)
    events: list[Event] = []
    deleted = False
    async with asyncio.timeout(WAIT):
        async for event in engine.stream_run(OWNER, thread.id, RunCreate(assistant_id=await assistant_id(engine))):
            events.append(event)
            if event.event == "thread.message.delta" and not deleted:
                deleted = True
                await engine.get_message(OWNER, thread.id, event.data["id"])  # stored by now
                async with engine.store.transaction() as tx:
                    assert await tx.delete(Thread, thread.id, owner=OWNER)

    assert events[-1].event == "thread.run.failed"
    assert "thread was deleted" in events[-1].data["last_error"]["message"]
    async with engine.store.read() as tx:
        assert await tx.find(Run, events[0].data["id"], owner=None) is None


async def test_a_run_cut_short_mid_answer_still_counts_what_it_used(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    """Cancelled, or failed by a dropped stream, while the answer streams: the provider's own count
    never comes, and the run's usage still holds the prompt and a token per chunk received."""
    engine = (await start_runtime()).engine
    helper = await assistant_id(engine)
    for cut in ("cancel", "drop"):
        thread = await new_thread(engine, "Go on for ever.")
        if cut == "cancel":
            model.add_endless(0.01)
        else:
            model.add_stream_break("one two three four", delay=0.01)
        run_id, deltas = "", 0
        async with asyncio.timeout(WAIT):
            async for event in engine.stream_run(OWNER, thread.id, RunCreate(assistant_id=helper)):
                run_id = run_id or event.data["id"]
                if event.event == "thread.message.delta":
                    deltas += 1
                    if cut == "cancel" and deltas == 5:
                        await engine.cancel_run(OWNER, thread.id, run_id)
        run, _, _ = await stored(engine, run_id)
        assert run.status is (RunStatus.cancelled if cut == "cancel" else RunStatus.failed)
        assert run.usage is not None and run.context is not None, run
        assert run.usage.prompt_tokens == run.context.prompt_tokens > 0
        assert run.usage.completion_tokens >= (5 if cut == "cancel" else 4)
        assert run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens
