"""Session context modes, checked on what the model actually receives.

Every test builds the real engine (`Runtime`), on SQLite and on PostgreSQL, talking over HTTP to
the scripted model. The assertions read the requests the model got (`model.requests`) and the
`context` record each run stores.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from assistants.engine import Engine
from assistants.events import Event
from assistants.runtime import Runtime
from assistants.sessions import Sessions
from assistants.tokens import count_message, count_messages
from assistants.tools import default_registry
from assistants.tools import examples as _examples  # noqa: F401  (registers `calculate`)
from assistants.types import ContextMode, Message, Run, RunStatus, Session
from assistants.types.objects import TruncationStrategy
from assistants.types.requests import AssistantCreate, MessageCreate, RunCreate, ThreadCreate
from tests.conftest import StartRuntime
from tests.scripted_model import RecordedRequest, ScriptedModel

INSTRUCTIONS = "You are the context-mode test assistant."
SUMMARY_PROMPT_START = "You maintain a running summary"
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"
SMALL_WINDOW = 1024
"""The smallest `ASSISTANTS_CONTEXT_WINDOW` the settings accept."""
PROMPT_ROOM = SMALL_WINDOW - SMALL_WINDOW // 4
"""What a run may use of a 1024-token window: a quarter is kept for the reply."""



# Fixtures ------------------------------------------------------------------------------------




@dataclass
class Chat:
    """One user's session on one assistant, with helpers to fill it and run it."""

    runtime: Runtime
    engine: Engine
    owner: str
    assistant_id: str
    session: Session
    model: ScriptedModel

    @property
    def sessions(self) -> Sessions:
        return Sessions(self.engine)

    async def say(self, role: str, text: str) -> Message:
        return await self.engine.create_message(self.owner, self.session.id, MessageCreate(role=role, content=text))  # type: ignore[arg-type]

    async def history(self, count: int, words: int = 0) -> list[dict[str, str]]:
        """Add `count` alternating messages ending with a user message; returns them as chat messages."""
        added = []
        for i in range(count):
            role = "user" if (count - 1 - i) % 2 == 0 else "assistant"
            text = f"msg-{i:02d} from the {role}" + "".join(f" word{i}x{w}" for w in range(words))
            await self.say(role, text)
            added.append({"role": role, "content": text})
        return added

    async def run(self, **body: Any) -> tuple[Run, list[Event]]:
        """Stream a run to its end (or pause); returns the stored run and its events."""
        events = [
            e
            async for e in self.engine.stream_run(
                self.owner, self.session.id, RunCreate(assistant_id=self.assistant_id, **body)
            )
        ]
        assert events and events[0].event == "thread.run.created"
        run = await self.engine.get_run(self.owner, self.session.id, events[0].data["id"])
        return run, events

    async def reload(self) -> Session:
        return await self.sessions.get(self.owner, self.session.id)


async def open_chat(
    start_runtime: StartRuntime,
    model: ScriptedModel,
    *,
    mode: ContextMode,
    n: int = 20,
    tools: list[dict[str, Any]] | None = None,
    **settings: Any,
) -> Chat:
    runtime = await start_runtime(**settings)
    engine = runtime.engine
    owner = await runtime.accounts.ensure_user("alice")
    assistant = await engine.create_assistant(
        owner,
        AssistantCreate(model="scripted-model", instructions=INSTRUCTIONS, tools=tools or []),  # type: ignore[arg-type]
    )
    session = await Sessions(engine).create(owner, assistant.id, context_mode=mode, context_n=n)
    return Chat(runtime, engine, owner, assistant.id, session, model)


def chat_requests(model: ScriptedModel) -> list[RecordedRequest]:
    return [r for r in model.requests if r.path.endswith("/chat/completions")]


def is_summary_request(request: RecordedRequest) -> bool:
    messages = request.body["messages"]
    return messages[0]["role"] == "system" and messages[0]["content"].startswith(SUMMARY_PROMPT_START)


def run_requests(model: ScriptedModel) -> list[RecordedRequest]:
    return [r for r in chat_requests(model) if not is_summary_request(r)]


def summary_requests(model: ScriptedModel) -> list[RecordedRequest]:
    return [r for r in chat_requests(model) if is_summary_request(r)]


def system(text: str = INSTRUCTIONS) -> dict[str, str]:
    return {"role": "system", "content": text}


def assert_recorded(run: Run, sent: list[dict[str, Any]], *, mode: str) -> None:
    """The run's context record matches the request the model received."""
    assert run.status is RunStatus.completed, run.last_error
    assert run.context is not None, "every run records what it sent"
    assert run.context.mode == mode
    assert run.context.messages == len([m for m in sent if m["role"] != "system"])
    assert run.context.prompt_tokens > 0
    assert run.context.prompt_tokens == count_messages(sent)


def assert_no_stored_run_is_active(runs: list[Run]) -> None:
    assert all(r.status is RunStatus.completed for r in runs), [(r.status, r.last_error) for r in runs]


# full ----------------------------------------------------------------------------------------


async def test_full_sends_every_message_in_order_after_the_instructions(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    chat = await open_chat(start_runtime, model, mode=ContextMode.full)
    history = await chat.history(12)
    model.add_text("reply-1")

    run, events = await chat.run()

    assert events[-1].event == "thread.run.completed"
    assert model.last_messages == [system(), *history]
    assert run.truncation_strategy == TruncationStrategy(type="auto")
    assert_recorded(run, model.last_messages, mode="full")
    assert run.context is not None
    assert (run.context.messages, run.context.truncated, run.context.summary_used) == (12, 0, False)


async def test_full_drops_the_oldest_messages_to_fit_a_small_window(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    chat = await open_chat(
        start_runtime, model, mode=ContextMode.full, ASSISTANTS_CONTEXT_WINDOW=SMALL_WINDOW
    )
    history = await chat.history(40, words=60)
    model.add_text("reply-1")

    run, _ = await chat.run()

    sent = model.last_messages
    assert sent is not None
    assert sent[0] == system()
    kept = sent[1:]
    # The newest messages, in their order, with none skipped; the oldest fell away.
    assert 1 <= len(kept) < 40
    assert kept == history[-len(kept) :]
    assert kept[-1]["content"].startswith("msg-39")
    assert all(not m["content"].startswith("msg-00") for m in kept)
    # It fits in what the window leaves besides the reply, and the next older message would not have.
    assert run.context is not None
    assert run.context.prompt_tokens <= PROMPT_ROOM
    assert run.context.prompt_tokens + count_message(history[-len(kept) - 1]) > PROMPT_ROOM
    assert_recorded(run, sent, mode="full")
    assert run.context.truncated == 40 - len(kept)
    assert run.context.summary_used is False


# last_n --------------------------------------------------------------------------------------


async def test_last_n_sends_exactly_the_last_n_messages(start_runtime: StartRuntime, model: ScriptedModel) -> None:
    chat = await open_chat(start_runtime, model, mode=ContextMode.last_n, n=4)
    history = await chat.history(12)
    model.add_text("reply-1")

    run, _ = await chat.run()

    assert model.last_messages == [system(), *history[-4:]]
    assert run.truncation_strategy == TruncationStrategy(type="last_messages", last_messages=4)
    assert_recorded(run, model.last_messages, mode="last_n")
    assert run.context is not None
    assert run.context.truncated == 8


async def test_last_n_keeps_the_same_history_across_tool_rounds(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    """Text the run itself wrote before its tool calls must not push history out of the last N."""
    calculate = default_registry.definitions(["calculate"])
    chat = await open_chat(start_runtime, model, mode=ContextMode.last_n, n=3, tools=calculate)
    history = await chat.history(8)
    model.add_tool_calls([{"name": "calculate", "arguments": '{"expression": "6 * 7"}'}], text="Let me compute.")
    model.add_tool_calls([{"name": "calculate", "arguments": '{"expression": "42 + 1"}'}], text="Once more.")
    model.add_text("The answer is 43.")

    run, _ = await chat.run()

    assert run.status is RunStatus.completed, run.last_error
    requests = run_requests(model)
    assert len(requests) == 3
    for request in requests:
        messages = request.body["messages"]
        assert messages[:4] == [system(), *history[-3:]], "every round sends the same last 3 messages"
    last = requests[-1].body["messages"]
    assert [m["role"] for m in last[4:]] == ["assistant", "tool", "assistant", "tool"]
    assert [m["content"] for m in last[4:] if m["role"] == "tool"] == ["42", "43"]
    assert run.context is not None and run.context.messages == 3


async def test_plain_thread_uses_the_runs_truncation_strategy(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    chat = await open_chat(start_runtime, model, mode=ContextMode.full)
    from assistants.types.requests import ThreadCreate

    thread = await chat.engine.create_thread(
        chat.owner,
        ThreadCreate(messages=[MessageCreate(role="user", content=f"plain-{i}") for i in range(5)]),
    )
    model.add_text("ok")
    events = [
        e
        async for e in chat.engine.stream_run(
            chat.owner,
            thread.id,
            RunCreate(
                assistant_id=chat.assistant_id,
                truncation_strategy=TruncationStrategy(type="last_messages", last_messages=2),
            ),
        )
    ]
    run = await chat.engine.get_run(chat.owner, thread.id, events[0].data["id"])

    assert model.last_messages == [
        system(),
        {"role": "user", "content": "plain-3"},
        {"role": "user", "content": "plain-4"},
    ]
    assert_recorded(run, model.last_messages, mode="truncation:last_messages")


# one_off -------------------------------------------------------------------------------------


async def test_one_off_sends_only_the_newest_user_message(start_runtime: StartRuntime, model: ScriptedModel) -> None:
    chat = await open_chat(start_runtime, model, mode=ContextMode.one_off)
    history = await chat.history(12)
    model.add_text("reply-1")

    run, _ = await chat.run()

    assert model.last_messages == [system(), history[-1]]
    assert history[-1]["role"] == "user"
    assert run.truncation_strategy == TruncationStrategy(type="last_messages", last_messages=1)
    assert_recorded(run, model.last_messages, mode="one_off")
    assert run.context is not None and run.context.truncated == 11

    # After the model's reply, the newest *user* message is still the one sent, not the reply.
    model.add_text("reply-2")
    run, _ = await chat.run()
    assert model.last_messages == [system(), history[-1]]
    assert_recorded(run, model.last_messages, mode="one_off")


# summary -------------------------------------------------------------------------------------


async def test_summary_folds_older_turns_and_refreshes_only_with_new_ones(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    chat = await open_chat(start_runtime, model, mode=ContextMode.summary, n=4)
    history = await chat.history(12)
    stored = await chat.engine.list_messages(chat.owner, chat.session.id, _asc(100))
    ids = [m.id for m in stored.data]

    # Run 1: the 8 messages before the last 4 are summarized first, then the run reads the summary.
    model.add_text("SUMMARY-1")
    model.add_text("reply-1")
    run1, _ = await chat.run()

    requests = chat_requests(model)
    assert len(requests) == 2
    assert is_summary_request(requests[0]), "the summary is brought up to date before the run's request"
    prompt = requests[0].body["messages"][1]["content"]
    assert "Previous summary:\n(none)" in prompt
    for i in range(8):
        assert f"msg-{i:02d} from the" in prompt
    for i in range(8, 12):
        assert f"msg-{i:02d}" not in prompt
    assert requests[1].body["messages"] == [system(), system(SUMMARY_PREFIX + "SUMMARY-1"), *history[-4:]]
    assert_recorded(run1, requests[1].body["messages"], mode="summary")
    assert run1.context is not None
    assert (run1.context.summary_used, run1.context.messages, run1.context.truncated) == (True, 4, 8)
    session = await chat.reload()
    assert session.summary == "SUMMARY-1"
    assert session.summary_upto == ids[7]

    # Run 2: two more messages push msg-08..msg-10 out of the window; only they are folded in.
    model.reset()
    await chat.say("user", "msg-12 from the user")
    await chat.say("user", "msg-13 from the user")
    model.add_text("SUMMARY-2")
    model.add_text("reply-2")
    run2, _ = await chat.run()

    requests = chat_requests(model)
    assert len(requests) == 2 and is_summary_request(requests[0])
    prompt = requests[0].body["messages"][1]["content"]
    assert "Previous summary:\nSUMMARY-1" in prompt
    assert [i for i in range(14) if f"msg-{i:02d} " in prompt] == [8, 9, 10]
    assert "reply-1" not in prompt
    assert requests[1].body["messages"] == [
        system(),
        system(SUMMARY_PREFIX + "SUMMARY-2"),
        history[11],
        {"role": "assistant", "content": "reply-1"},
        {"role": "user", "content": "msg-12 from the user"},
        {"role": "user", "content": "msg-13 from the user"},
    ]
    assert_recorded(run2, requests[1].body["messages"], mode="summary")
    session = await chat.reload()
    assert session.summary == "SUMMARY-2"
    assert session.summary_upto == ids[10]

    # Run 3: the window grows by as much as the thread did, so nothing new left it: no summary call.
    model.reset()
    await chat.sessions.update(chat.owner, chat.session.id, context_n=6)
    await chat.say("user", "msg-14 from the user")
    model.add_text("reply-3")
    run3, _ = await chat.run()

    requests = chat_requests(model)
    assert len(requests) == 1 and not is_summary_request(requests[0])
    sent = requests[0].body["messages"]
    assert sent[:2] == [system(), system(SUMMARY_PREFIX + "SUMMARY-2")]
    assert [m["content"] for m in sent[2:]] == [
        history[11]["content"],
        "reply-1",
        "msg-12 from the user",
        "msg-13 from the user",
        "reply-2",
        "msg-14 from the user",
    ]
    assert_recorded(run3, sent, mode="summary")
    assert run3.context is not None and run3.context.summary_used is True
    session = await chat.reload()
    assert (session.summary, session.summary_upto) == ("SUMMARY-2", ids[10])


async def test_summary_is_not_requested_while_the_history_fits_the_window(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    chat = await open_chat(start_runtime, model, mode=ContextMode.summary, n=4)
    history = await chat.history(3)
    model.add_text("reply-1")

    run, _ = await chat.run()

    assert len(chat_requests(model)) == 1
    assert model.last_messages == [system(), *history]
    assert_recorded(run, model.last_messages, mode="summary")
    assert run.context is not None and run.context.summary_used is False
    assert (await chat.reload()).summary is None


async def test_writing_the_summary_holds_no_transaction_while_the_model_answers(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    """Bringing the summary up to date asks the model (seconds, or up to the provider timeout).
    Meanwhile the rest of the process writes as usual: on SQLite a transaction open across that
    call would hold the process's turn at the database and stall every other write."""
    chat = await open_chat(start_runtime, model, mode=ContextMode.summary, n=4)
    await chat.history(12)
    model.add_slow_start(60.0, "SUMMARY-LATE")
    run = asyncio.create_task(chat.run())
    try:
        asked = await asyncio.to_thread(
            model.wait_for, lambda m: any(is_summary_request(r) for r in chat_requests(m)), 20.0
        )
        assert asked, "the run asked for a summary"
        # The model is still working on the summary: other writes go ahead (well within 60 s).
        async with asyncio.timeout(20):
            other = await chat.engine.create_assistant(chat.owner, AssistantCreate(model="scripted-model"))
            await chat.engine.create_thread(chat.owner, ThreadCreate())
        assert not run.done()
        assert len(chat_requests(model)) == 1, "the run is still waiting for its summary"
        assert (await chat.engine.get_assistant(chat.owner, other.id)).id == other.id
    finally:
        run.cancel()
        stored = await chat.engine.list_runs(chat.owner, chat.session.id, _asc(10))
        for active in stored.data:
            if active.status in (RunStatus.queued, RunStatus.in_progress):
                await chat.engine.cancel_run(chat.owner, chat.session.id, active.id)


async def test_summary_is_made_once_per_run_even_across_tool_rounds(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    chat = await open_chat(
        start_runtime, model, mode=ContextMode.summary, n=2, tools=default_registry.definitions(["calculate"])
    )
    history = await chat.history(6)
    model.add_text("SUMMARY-1")
    model.add_tool_calls([{"name": "calculate", "arguments": '{"expression": "2 + 2"}'}])
    model.add_text("It is 4.")

    run, _ = await chat.run()

    assert run.status is RunStatus.completed, run.last_error
    assert len(summary_requests(model)) == 1
    requests = run_requests(model)
    assert len(requests) == 2
    for request in requests:
        assert request.body["messages"][:4] == [system(), system(SUMMARY_PREFIX + "SUMMARY-1"), *history[-2:]]
    messages = await chat.engine.list_messages(chat.owner, chat.session.id, _asc(100))
    assert messages.data[-1].text == "It is 4."
    assert (await chat.reload()).summary == "SUMMARY-1"


async def test_summary_mode_still_fits_the_window(start_runtime: StartRuntime, model: ScriptedModel) -> None:
    """The summary takes room in the prompt too: verbatim turns give way so the prompt still fits."""
    chat = await open_chat(
        start_runtime, model, mode=ContextMode.summary, n=4, ASSISTANTS_CONTEXT_WINDOW=SMALL_WINDOW
    )
    await chat.history(8, words=75)
    long_summary = " ".join(f"fact{i} holds." for i in range(60))[:480].strip()
    model.add_text(long_summary)
    model.add_text("reply-1")

    run, _ = await chat.run()

    sent = run_requests(model)[-1].body["messages"]
    assert sent[1] == system(SUMMARY_PREFIX + long_summary)
    assert run.context is not None
    assert run.context.prompt_tokens == count_messages(sent)
    assert run.context.prompt_tokens <= PROMPT_ROOM
    assert_recorded(run, sent, mode="summary")
    assert run.context.messages + run.context.truncated == 8


# Switching modes -----------------------------------------------------------------------------


async def test_changing_the_mode_changes_what_the_next_run_sends(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    chat = await open_chat(start_runtime, model, mode=ContextMode.full)
    history = await chat.history(6)
    conversation = list(history)
    runs: list[Run] = []

    model.add_text("reply-full")
    run, _ = await chat.run()
    runs.append(run)
    assert model.last_messages == [system(), *conversation]
    assert_recorded(run, model.last_messages, mode="full")
    conversation.append({"role": "assistant", "content": "reply-full"})

    await chat.sessions.update(chat.owner, chat.session.id, context_mode=ContextMode.last_n, context_n=2)
    await chat.say("user", "question two")
    conversation.append({"role": "user", "content": "question two"})
    model.add_text("reply-last-n")
    run, _ = await chat.run()
    runs.append(run)
    assert model.last_messages == [system(), *conversation[-2:]]
    assert run.truncation_strategy == TruncationStrategy(type="last_messages", last_messages=2)
    assert_recorded(run, model.last_messages, mode="last_n")
    conversation.append({"role": "assistant", "content": "reply-last-n"})

    await chat.sessions.update(chat.owner, chat.session.id, context_mode="one_off")
    await chat.say("user", "question three")
    conversation.append({"role": "user", "content": "question three"})
    model.add_text("reply-one-off")
    run, _ = await chat.run()
    runs.append(run)
    assert model.last_messages == [system(), {"role": "user", "content": "question three"}]
    assert_recorded(run, model.last_messages, mode="one_off")
    conversation.append({"role": "assistant", "content": "reply-one-off"})

    await chat.sessions.update(chat.owner, chat.session.id, context_mode=ContextMode.full)
    model.add_text("reply-full-again")
    run, _ = await chat.run()
    runs.append(run)
    assert model.last_messages == [system(), *conversation]
    assert run.truncation_strategy == TruncationStrategy(type="auto")
    assert_recorded(run, model.last_messages, mode="full")

    assert_no_stored_run_is_active(runs)
    assert [r.context.mode for r in runs if r.context] == ["full", "last_n", "one_off", "full"]


def _asc(limit: int) -> Any:
    from assistants.store import ListParams

    return ListParams(limit=limit, order="asc")



async def test_text_that_spells_a_special_token_or_is_huge_is_counted_like_any_text(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    chat = await open_chat(start_runtime, model, mode=ContextMode.full)
    pasted = "Why does my log end with <|endoftext|> here?"
    await chat.engine.create_message(chat.owner, chat.session.id, MessageCreate(role="user", content=pasted))
    await chat.engine.create_message(chat.owner, chat.session.id, MessageCreate(role="user", content="word " * 100_000))
    model.add_text("It is a special token's spelling.")

    run, events = await chat.run()

    assert events[-1].event == "thread.run.completed", run.last_error
    assert model.last_messages is not None and model.last_messages[1] == {"role": "user", "content": pasted}
    assert_recorded(run, model.last_messages, mode="full")
