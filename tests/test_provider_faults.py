"""Provider faults, end to end on a real engine against the scripted model's fault modes.

Each fault ends the way the engine defines: retried while nothing has reached the user, else the
run ends with a `last_error` in plain words, the partial answer kept and marked, and the thread
free for the next run. Runs on both backends.
"""

from __future__ import annotations

import asyncio
import socket

from assistants.engine import Engine
from assistants.runs._status import end_step, incomplete_message
from assistants.types import (
    Message,
    MessageStatus,
    Run,
    RunStatus,
    StepStatus,
    TextContent,
    TextValue,
)
from assistants.types.requests import AssistantCreate, MessageCreate, RunCreate, ThreadCreate
from tests.conftest import StartRuntime
from tests.scripted_model import ScriptedModel

OWNER = "user_faults"
WAIT = 20.0


async def run_once(engine: Engine, thread_id: str | None = None) -> tuple[Run, list[Message]]:
    """A run of a fresh assistant on a thread (new unless given); the run and the thread's answers."""
    assistant = await engine.create_assistant(OWNER, AssistantCreate(model="scripted-model"))
    if thread_id is None:
        thread_id = (await engine.create_thread(OWNER, ThreadCreate())).id
    await engine.create_message(OWNER, thread_id, MessageCreate(role="user", content="Tell me everything."))
    run = await engine.create_run(OWNER, thread_id, RunCreate(assistant_id=assistant.id))
    async with asyncio.timeout(WAIT):
        await engine.wait_for_run(run.id)
    run = await engine.get_run(OWNER, thread_id, run.id)
    return run, await answers_of(engine, thread_id, run.id)


async def answers_of(engine: Engine, thread_id: str, run_id: str | None = None) -> list[Message]:
    """The thread's stored answers (of one run when given), oldest first."""
    async with engine.store.read() as tx:
        messages, _, _ = await tx.thread_history(thread_id)
    return [m for m in messages if m.role == "assistant" and (run_id is None or m.run_id == run_id)]


def chat_requests(model: ScriptedModel) -> int:
    return sum(1 for r in model.requests if r.path.endswith("/chat/completions"))


async def test_503_is_retried_and_503_past_the_retries_fails_in_plain_words(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    engine = (await start_runtime(ASSISTANTS_PROVIDER_RETRIES=2)).engine
    model.add_error(503, "Overloaded", headers={"retry-after": "0"})
    model.add_text("Back again.")
    run, [answer] = await run_once(engine)
    assert run.status is RunStatus.completed and answer.text == "Back again."
    assert chat_requests(model) == 2

    for _ in range(3):
        model.add_error(503, "Overloaded", headers={"retry-after": "0"})
    run, answers = await run_once(engine)
    assert run.status is RunStatus.failed and run.last_error is not None
    assert run.last_error.code == "server_error" and "HTTP 503" in run.last_error.message
    assert "Overloaded" in run.last_error.message
    assert answers == []


async def test_a_provider_silent_past_the_timeout_is_retried_then_fails(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    engine = (await start_runtime(ASSISTANTS_PROVIDER_RETRIES=1, ASSISTANTS_PROVIDER_TIMEOUT=0.5)).engine
    model.add_slow_start(3)
    model.add_text("Quick this time.")
    run, [answer] = await run_once(engine)
    assert run.status is RunStatus.completed and answer.text == "Quick this time."

    model.add_slow_start(3)
    model.add_slow_start(3)
    run, answers = await run_once(engine)
    assert run.status is RunStatus.failed and run.last_error is not None
    assert "did not answer in time" in run.last_error.message
    assert answers == []


async def test_a_provider_that_refuses_connections_fails_the_run_in_plain_words(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    engine = (await start_runtime(OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", ASSISTANTS_PROVIDER_RETRIES=1)).engine
    run, answers = await run_once(engine)
    assert run.status is RunStatus.failed and run.last_error is not None
    assert "could not be reached" in run.last_error.message, run.last_error.message
    assert answers == []


async def test_a_malformed_chunk_fails_the_run_and_keeps_the_partial_answer(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    engine = (await start_runtime()).engine
    model.add_malformed("The first words")
    run, [partial] = await run_once(engine)
    assert run.status is RunStatus.failed and run.last_error is not None
    assert "malformed response" in run.last_error.message and "OPENAI_BASE_URL" in run.last_error.message
    assert partial.status is MessageStatus.incomplete and partial.text == "The first words"
    assert partial.incomplete_details is not None and partial.incomplete_details.reason == "run_failed"

    # JSON of the wrong shape is malformed too.
    model.add_malformed("Again", bad_chunk=b'data: {"choices": "none of them"}\n\n')
    run, [partial] = await run_once(engine, thread_id=run.thread_id)
    assert run.status is RunStatus.failed and run.last_error is not None
    assert "malformed response" in run.last_error.message and partial.text == "Again"


async def test_an_endless_answer_is_stopped_at_the_run_timeout_and_the_thread_goes_on(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    engine = (await start_runtime(ASSISTANTS_RUN_TIMEOUT=1)).engine
    model.add_endless(0.01)
    run, [partial] = await run_once(engine)

    assert run.status is RunStatus.expired
    assert run.last_error is not None and "ASSISTANTS_RUN_TIMEOUT" in run.last_error.message
    assert partial.status is MessageStatus.incomplete and partial.text.startswith("and so on")
    assert partial.incomplete_details is not None and partial.incomplete_details.reason == "run_expired"
    # The provider's stream was closed, and the thread takes the next run.
    assert model.wait_for(lambda m: m.disconnects >= 1)
    model.add_text("A short answer.")
    run, [answer] = await run_once(engine, thread_id=run.thread_id)
    assert run.status is RunStatus.completed and answer.text == "A short answer."


async def test_an_answer_another_process_already_ended_is_left_as_that_process_ended_it(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    """A process that stalled past its run's lease finds its answer ended by another process's
    sweep: its own end of the answer does not overwrite it (an ended message never changes)."""
    engine = (await start_runtime()).engine
    model.add_endless(0.01)
    assistant = await engine.create_assistant(OWNER, AssistantCreate(model="scripted-model"))
    thread = await engine.create_thread(OWNER, ThreadCreate())
    await engine.create_message(OWNER, thread.id, MessageCreate(role="user", content="Go on for ever."))
    run = await engine.create_run(OWNER, thread.id, RunCreate(assistant_id=assistant.id))
    answers: list[Message] = []
    async with asyncio.timeout(WAIT):
        # Polling the database until the answer is stored and streaming.
        for _ in range(int(WAIT * 20)):
            if answers := await answers_of(engine, thread.id, run.id):
                break
            await asyncio.sleep(0.05)
    swept = incomplete_message(answers[0], "run_failed", content=[TextContent(text=TextValue(value="As the sweep kept it."))])
    async with engine.store.transaction() as tx:  # what another process's sweep writes of the answer
        await tx.save(swept)
        for step in await tx.run_steps(run.id):
            await tx.save(end_step(step, StepStatus.failed))
    await engine.cancel_run(OWNER, thread.id, run.id)
    async with asyncio.timeout(WAIT):
        await engine.wait_for_run(run.id)
    async with engine.store.read() as tx:
        stored = await tx.get(Message, swept.id, owner=None)
    assert stored.status is MessageStatus.incomplete and stored.text == "As the sweep kept it."
    assert stored.incomplete_details is not None and stored.incomplete_details.reason == "run_failed"
    assert (await engine.get_run(OWNER, thread.id, run.id)).status is RunStatus.cancelled


async def test_an_answer_the_database_refuses_fails_the_run_and_leaves_nothing_half_written(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    """The answer's message is stored while its first words already stream: should the database
    refuse it, the run still ends (failed, in plain words), and no step or message is left open."""
    engine = (await start_runtime()).engine
    async with engine.store.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql(
                "CREATE TRIGGER refuse_answers BEFORE INSERT ON messages WHEN json_extract(NEW.data, '$.role') = 'assistant'"
                " BEGIN SELECT RAISE(ABORT, 'answers refused'); END"
            )
        else:
            await conn.exec_driver_sql(
                "CREATE FUNCTION refuse_answers() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN IF NEW.data::jsonb->>'role' = 'assistant' THEN RAISE EXCEPTION 'answers refused'; END IF;"
                " RETURN NEW; END $$"
            )
            await conn.exec_driver_sql(
                "CREATE TRIGGER refuse_answers BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_answers()"
            )
    model.add_text("Words nobody will keep.")
    run, answers = await run_once(engine)
    assert run.status is RunStatus.failed and run.last_error is not None
    assert run.last_error.code == "server_error" and "internal error" in run.last_error.message
    assert answers == []
    async with engine.store.read() as tx:
        steps = await tx.run_steps(run.id)
    assert [step.status.value for step in steps if step.status.value == "in_progress"] == []
    # Refused while the run was failing for another reason: that reason is what the user reads.
    model.add_malformed("The first words")
    run, answers = await run_once(engine, run.thread_id)
    assert run.status is RunStatus.failed and run.last_error is not None
    assert "malformed response" in run.last_error.message and answers == []

    async with engine.store.engine.begin() as conn:
        await conn.exec_driver_sql("DROP TRIGGER refuse_answers" + ("" if conn.dialect.name == "sqlite" else " ON messages"))
    model.add_text("Kept this time.")
    run, [answer] = await run_once(engine, run.thread_id)
    assert run.status is RunStatus.completed and answer.text == "Kept this time."


async def test_an_answer_is_retrievable_as_soon_as_its_created_event_is_seen(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    """The answer's message and step are stored while its first words stream; a retrieve that
    reacts to `thread.message.created` waits for that write rather than missing the message."""
    engine = (await start_runtime()).engine
    assistant = await engine.create_assistant(OWNER, AssistantCreate(model="scripted-model"))
    thread = await engine.create_thread(OWNER, ThreadCreate())
    await engine.create_message(OWNER, thread.id, MessageCreate(role="user", content="Hello?"))
    model.add_text("Here already.")
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold_the_tables() -> None:
        # Keep the answer's insert waiting: SQLite's process-wide write turn, or PostgreSQL's
        # table locks (reads still go through).
        if engine.store.engine.dialect.name == "sqlite":
            async with engine.store.transaction():
                held.set()
                await release.wait()
        else:
            async with engine.store.engine.begin() as conn:
                await conn.exec_driver_sql("LOCK TABLE messages, run_steps IN SHARE MODE")
                held.set()
                await release.wait()

    async with engine.subscribe(thread_id=thread.id) as events:
        run = await engine.create_run(OWNER, thread.id, RunCreate(assistant_id=assistant.id))
        holder: asyncio.Task[None] | None = None
        async with asyncio.timeout(WAIT):
            async for event in events:
                if event.event == "thread.run.in_progress":
                    holder = asyncio.ensure_future(hold_the_tables())
                    await held.wait()
                elif event.event == "thread.message.created":
                    message_id = event.data["id"]
                    break
        assert holder is not None
        retrieving = asyncio.ensure_future(engine.get_message(OWNER, thread.id, message_id))
        await asyncio.sleep(0.2)
        assert not retrieving.done()  # Waiting for the write, not refused.
        release.set()
        await holder
        async with asyncio.timeout(WAIT):
            message = await retrieving
        assert message.id == message_id and message.role == "assistant"
    async with asyncio.timeout(WAIT):
        await engine.wait_for_run(run.id)
    assert (await engine.get_run(OWNER, thread.id, run.id)).status is RunStatus.completed


async def test_text_before_a_slow_tool_call_is_checkpointed_while_the_call_streams(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    """Words shown before a tool call are in the database within a second or so, while the call's
    arguments still stream (a crash then keeps them), not only when the message ends."""
    engine = (await start_runtime()).engine
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
    assistant = await engine.create_assistant(OWNER, AssistantCreate(model="scripted-model", tools=[tool]))
    thread = await engine.create_thread(OWNER, ThreadCreate())
    await engine.create_message(OWNER, thread.id, MessageCreate(role="user", content="Weather?"))
    model.add_tool_calls([{"name": "get_weather", "arguments": '{"city": "Kyoto", "unit": "celsius"}'}], text="Looking.", delay=1.0)
    run = await engine.create_run(OWNER, thread.id, RunCreate(assistant_id=assistant.id))

    async def stored_text() -> tuple[str, str] | None:
        answers = await answers_of(engine, thread.id)
        return (answers[0].status.value, answers[0].text) if answers else None

    seen = None
    async with asyncio.timeout(WAIT):
        # Polling the database: the checkpoint writer signals nothing a test could wait on.
        for _ in range(int(WAIT * 10)):
            seen = await stored_text()
            if seen is not None and seen[1] == "Looking.":
                break
            await asyncio.sleep(0.1)
    # Seen while the message is still open: a checkpoint, not the message's end.
    assert seen == ("in_progress", "Looking.")
    async with asyncio.timeout(WAIT):
        await engine.wait_for_run(run.id)
    assert (await engine.get_run(OWNER, thread.id, run.id)).status is RunStatus.requires_action
