"""Runs through the official `openai` SDK against the real server and the scripted provider.

Every test builds its own assistant and thread, scripts the provider, and checks what a user of
the Assistants API would see (run status, messages, steps, stream events) and what the provider
was sent. Waiting is always a bounded polling loop or `ScriptedModel.wait_for`, never a bare sleep.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
from openai import AssistantEventHandler
from openai.types.beta import Assistant, Thread
from openai.types.beta.threads import (
    Message,
    MessageDeltaEvent,
    Run,
    Text,
    TextDelta,
    TextDeltaBlock,
)

from tests.conftest import sdk_client
from tests.scripted_model import ScriptedModel, ToolCallsReply
from tests.server import Server, start_server
from tests.test_api_objects import list_threads, sdk_error

# The SDK marks every Assistants method with a bare "deprecated" warning; keeping them working is the point.
pytestmark = pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning")

POLL_MS = 50

CALCULATE: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calculate",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}
GET_WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Implemented by the client, not by the server.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

TEXT_RUN_EVENTS_HEAD = [
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.message.created",
    "thread.message.in_progress",
]
TEXT_RUN_EVENTS_TAIL = ["thread.message.completed", "thread.run.step.completed", "thread.run.completed"]

T = TypeVar("T")


# Helpers -------------------------------------------------------------------------------------


def wait_until(fetch: Callable[[], T], done: Callable[[T], bool], *, timeout: float = 15.0, what: str) -> T:
    """Poll `fetch` until `done` holds; fail with the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {value!r}")
        time.sleep(0.05)


def new_assistant(client: openai.OpenAI, **options: Any) -> Assistant:
    options.setdefault("model", "scripted-model")
    return client.beta.assistants.create(**options)


def new_thread(client: openai.OpenAI, *texts: str) -> Thread:
    return client.beta.threads.create(messages=[{"role": "user", "content": t} for t in texts])


def text_of(message: Message) -> str:
    return "".join(part.text.value for part in message.content if part.type == "text")


def messages_asc(client: openai.OpenAI, thread_id: str) -> list[Message]:
    return client.beta.threads.messages.list(thread_id=thread_id, order="asc", limit=100).data


def assistant_messages(client: openai.OpenAI, thread_id: str) -> list[Message]:
    return [m for m in messages_asc(client, thread_id) if m.role == "assistant"]


def run_status(client: openai.OpenAI, thread_id: str, run_id: str) -> Run:
    return client.beta.threads.runs.retrieve(run_id=run_id, thread_id=thread_id)


def wait_for_status(client: openai.OpenAI, run: Run, statuses: set[str], timeout: float = 15.0) -> Run:
    return wait_until(
        lambda: run_status(client, run.thread_id, run.id),
        lambda r: r.status in statuses,
        timeout=timeout,
        what=f"run {run.id} to reach {sorted(statuses)}",
    )


def event_names(events: list[Any]) -> list[str]:
    return [e.event for e in events]


def delta_texts(events: list[Any]) -> list[str]:
    """The text of every `thread.message.delta` event, in order."""
    texts: list[str] = []
    for event in events:
        if event.event != "thread.message.delta":
            continue
        assert isinstance(event.data, MessageDeltaEvent)
        for block in event.data.delta.content or []:
            assert isinstance(block, TextDeltaBlock) and block.text is not None
            texts.append(block.text.value or "")
    return texts


def collapse_deltas(names: list[str]) -> tuple[list[str], int]:
    """The event names with consecutive `thread.message.delta`s folded into one, and their count."""
    collapsed: list[str] = []
    deltas = 0
    for name in names:
        if name == "thread.message.delta":
            deltas += 1
            if collapsed and collapsed[-1] == "thread.message.delta":
                continue
        collapsed.append(name)
    return collapsed, deltas


def sent_messages(model: ScriptedModel, index: int = -1) -> list[dict[str, Any]]:
    body = model.requests[index].body
    assert isinstance(body, dict)
    messages = body["messages"]
    assert isinstance(messages, list)
    return messages


def last_body(model: ScriptedModel) -> dict[str, Any]:
    request = model.last_request
    assert request is not None, "the provider got no request"
    assert isinstance(request.body, dict)
    return request.body


def bad_request(call: Callable[[], object]) -> openai.BadRequestError:
    """Run `call`, which must fail with HTTP 400; returns the SDK error."""
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.status_code == 400
    return caught.value


def error_message(error: openai.APIStatusError) -> str:
    body = error.body
    assert isinstance(body, dict), body
    message = body.get("message")
    assert isinstance(message, str), body
    return message


class Recorder(AssistantEventHandler):
    """An event handler that keeps every event name and the streamed text."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.text = ""
        self.done_texts: list[str] = []

    def on_event(self, event: Any) -> None:
        self.names.append(event.event)

    def on_text_delta(self, delta: TextDelta, snapshot: Text) -> None:
        self.text += delta.value or ""

    def on_text_done(self, text: Text) -> None:
        self.done_texts.append(text.value)


# Streaming -----------------------------------------------------------------------------------


def test_streamed_text_run_emits_the_openai_event_sequence(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, instructions="Be brief.")
    thread = new_thread(client, "Say hello")
    answer = "Hello there, nice to meet you today!"
    model.add_text(answer)

    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        events = list(stream)
        final_run = stream.get_final_run()
        final_messages = stream.get_final_messages()

    collapsed, deltas = collapse_deltas(event_names(events))
    assert collapsed == [*TEXT_RUN_EVENTS_HEAD, "thread.message.delta", *TEXT_RUN_EVENTS_TAIL]
    assert deltas == len(answer.split()) > 1  # one delta per streamed word
    assert "".join(delta_texts(events)) == answer

    run_ids = {e.data.id for e in events if isinstance(e.data, Run)}
    assert run_ids == {final_run.id}
    assert final_run.status == "completed"
    assert final_run.thread_id == thread.id
    assert [text_of(m) for m in final_messages] == [answer]
    assert final_messages[0].status == "completed"
    # What was streamed is what was stored.
    stored = assistant_messages(client, thread.id)
    assert [(m.id, text_of(m), m.run_id) for m in stored] == [(final_messages[0].id, answer, final_run.id)]


def test_streamed_run_with_an_event_handler(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Count to three")
    model.add_text("One, two, three.", chunk_size=3)
    handler = Recorder()

    with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=handler
    ) as stream:
        stream.until_done()

    collapsed, deltas = collapse_deltas(handler.names)
    assert collapsed == [*TEXT_RUN_EVENTS_HEAD, "thread.message.delta", *TEXT_RUN_EVENTS_TAIL]
    assert deltas == 6  # "One, two, three." in 3-character pieces
    assert handler.text == "One, two, three."
    assert handler.done_texts == ["One, two, three."]
    assert handler.get_final_run().status == "completed"


def test_raw_sse_framing(client: openai.OpenAI, server: Server, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Frame me")
    model.add_text("Framed answer.")

    with httpx.stream(
        "POST",
        f"{server.api_url}/threads/{thread.id}/runs",
        headers={"Authorization": f"Bearer {server.key_for('alice')}", "OpenAI-Beta": "assistants=v2"},
        json={"assistant_id": assistant.id, "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()

    assert body.endswith("event: done\ndata: [DONE]\n\n")
    frames = body[: -len("\n\n")].split("\n\n")
    names: list[str] = []
    for frame in frames:
        lines = frame.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        names.append(lines[0].removeprefix("event: "))
        data = lines[1].removeprefix("data: ")
        if names[-1] == "done":
            assert data == "[DONE]"
        else:
            assert isinstance(json.loads(data), dict)
    assert names[-1] == "done" and names.count("done") == 1
    collapsed, _ = collapse_deltas(names[:-1])
    assert collapsed == [*TEXT_RUN_EVENTS_HEAD, "thread.message.delta", *TEXT_RUN_EVENTS_TAIL]
    completed = json.loads(frames[-2].split("\n")[1].removeprefix("data: "))
    assert completed["object"] == "thread.run" and completed["status"] == "completed"


def test_create_and_run_stream_starts_with_thread_created(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    model.add_text("A fresh thread.")

    stream = client.beta.threads.create_and_run(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "Start"}]}, stream=True
    )
    events = list(stream)

    names = event_names(events)
    assert names[0] == "thread.created"
    collapsed, _ = collapse_deltas(names[1:])
    assert collapsed == [*TEXT_RUN_EVENTS_HEAD, "thread.message.delta", *TEXT_RUN_EVENTS_TAIL]
    thread = events[0].data
    run = events[-1].data
    assert isinstance(thread, Thread) and isinstance(run, Run)
    assert run.thread_id == thread.id
    assert [text_of(m) for m in messages_asc(client, thread.id)] == ["Start", "A fresh thread."]


# Polling, retrieve, list, update -------------------------------------------------------------


def test_create_and_run_without_streaming(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, instructions="Be brief.")
    model.add_text("Made a thread.")

    queued = client.beta.threads.create_and_run(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "New here"}], "metadata": {"topic": "intro"}},
    )

    assert queued.status == "queued" and queued.assistant_id == assistant.id
    run = client.beta.threads.runs.poll(run_id=queued.id, thread_id=queued.thread_id, poll_interval_ms=POLL_MS)
    assert run.status == "completed"
    assert client.beta.threads.retrieve(thread_id=queued.thread_id).metadata == {"topic": "intro"}
    assert [text_of(m) for m in messages_asc(client, queued.thread_id)] == ["New here", "Made a thread."]
    assert model.last_messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "New here"},
    ]


def test_polled_run_records_usage_steps_and_times(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "How are you?")
    model.add_text("Fine, thanks.", prompt_tokens=12, completion_tokens=5)

    before = int(time.time())
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=POLL_MS
    )

    assert run.status == "completed", run.last_error
    assert run.last_error is None
    assert run.usage is not None
    assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.usage.total_tokens) == (12, 5, 17)
    assert run.started_at is not None and run.completed_at is not None
    assert before - 1 <= run.created_at <= run.started_at <= run.completed_at <= int(time.time()) + 1
    assert run.expires_at is None  # a finished run no longer expires

    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert len(steps) == 1
    step = steps[0]
    assert step.type == "message_creation" and step.status == "completed"
    assert step.usage is not None
    assert (step.usage.prompt_tokens, step.usage.completion_tokens) == (12, 5)
    [answer] = assistant_messages(client, thread.id)
    assert step.step_details.type == "message_creation"
    assert step.step_details.message_creation.message_id == answer.id
    assert text_of(answer) == "Fine, thanks."
    assert (answer.run_id, answer.assistant_id, answer.status) == (run.id, assistant.id, "completed")
    assert client.beta.threads.runs.steps.retrieve(step_id=step.id, thread_id=thread.id, run_id=run.id).id == step.id


def test_retrieve_list_and_update_runs(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "First")
    model.add_text("One.")
    first = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, metadata={"purpose": "test"}, poll_interval_ms=POLL_MS
    )
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Second")
    model.add_text("Two.")
    second = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=POLL_MS
    )

    assert first.metadata == {"purpose": "test"}
    retrieved = client.beta.threads.runs.retrieve(run_id=first.id, thread_id=thread.id)
    assert (retrieved.id, retrieved.status, retrieved.metadata) == (first.id, "completed", {"purpose": "test"})

    listed = client.beta.threads.runs.list(thread_id=thread.id)
    assert [r.id for r in listed.data] == [second.id, first.id]  # newest first by default
    assert [r.id for r in client.beta.threads.runs.list(thread_id=thread.id, order="asc").data] == [first.id, second.id]
    page = client.beta.threads.runs.list(thread_id=thread.id, limit=1)
    assert [r.id for r in page.data] == [second.id] and page.has_more

    updated = client.beta.threads.runs.update(run_id=first.id, thread_id=thread.id, metadata={"purpose": "changed", "k": "v"})
    assert updated.metadata == {"purpose": "changed", "k": "v"}
    assert updated.status == "completed"
    assert client.beta.threads.runs.retrieve(run_id=first.id, thread_id=thread.id).metadata == {"purpose": "changed", "k": "v"}

    with pytest.raises(openai.NotFoundError):
        client.beta.threads.runs.retrieve(run_id="run_doesnotexist", thread_id=thread.id)


def test_other_users_cannot_see_a_run(client: openai.OpenAI, other_client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Private")
    model.add_text("Secret.")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=POLL_MS)
    with pytest.raises(openai.NotFoundError):
        other_client.beta.threads.runs.retrieve(run_id=run.id, thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        other_client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)


# Run parameters --------------------------------------------------------------------------------


def _run_and_poll(client: openai.OpenAI, assistant: Assistant, thread: Thread, **options: Any) -> Run:
    return client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=POLL_MS, **options
    )


def test_instructions_override_and_additional_instructions(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, instructions="Assistant instructions.")
    thread = new_thread(client, "Hi")

    model.add_text("ok")
    run = _run_and_poll(client, assistant, thread, instructions="Run instructions.")
    assert run.status == "completed" and run.instructions == "Run instructions."
    assert sent_messages(model)[0] == {"role": "system", "content": "Run instructions."}

    model.add_text("ok")
    run = _run_and_poll(client, assistant, thread, additional_instructions="Answer in French.")
    assert run.status == "completed"
    assert sent_messages(model)[0] == {"role": "system", "content": "Assistant instructions.\n\nAnswer in French."}
    assert run.instructions == "Assistant instructions.\n\nAnswer in French."


def test_additional_messages_are_stored_and_sent(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Thread message")
    model.add_text("Both seen.")

    run = _run_and_poll(
        client,
        assistant,
        thread,
        additional_messages=[
            {"role": "assistant", "content": "An earlier answer."},
            {"role": "user", "content": "Extra question"},
        ],
    )

    assert run.status == "completed"
    assert sent_messages(model) == [
        {"role": "user", "content": "Thread message"},
        {"role": "assistant", "content": "An earlier answer."},
        {"role": "user", "content": "Extra question"},
    ]
    assert [(m.role, text_of(m)) for m in messages_asc(client, thread.id)] == [
        ("user", "Thread message"),
        ("assistant", "An earlier answer."),
        ("user", "Extra question"),
        ("assistant", "Both seen."),
    ]


def test_model_and_sampling_overrides(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, temperature=1.0)
    thread = new_thread(client, "Hi")

    model.add_text("default")
    run = _run_and_poll(client, assistant, thread)
    body = last_body(model)
    assert (body["model"], body["temperature"], run.model) == ("scripted-model", 1.0, "scripted-model")
    assert "top_p" not in body or body["top_p"] is None

    model.add_text("overridden")
    run = _run_and_poll(client, assistant, thread, model="scripted-model-2", temperature=0.25, top_p=0.5)
    assert run.status == "completed"
    body = last_body(model)
    assert (body["model"], body["temperature"], body["top_p"]) == ("scripted-model-2", 0.25, 0.5)
    assert (run.model, run.temperature, run.top_p) == ("scripted-model-2", 0.25, 0.5)


def test_reasoning_effort_reaches_the_model_from_the_assistant_or_the_run(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, reasoning_effort="low")
    assert assistant.model_dump().get("reasoning_effort") == "low"
    thread = new_thread(client, "Think about it")

    model.add_text("Thought a little.")
    _run_and_poll(client, assistant, thread)
    assert last_body(model)["reasoning_effort"] == "low"
    model.add_text("Thought hard.")
    run = _run_and_poll(client, assistant, thread, reasoning_effort="high")
    assert last_body(model)["reasoning_effort"] == "high" and run.model_dump().get("reasoning_effort") == "high"
    # Left out everywhere, it is not sent: the provider's default applies.
    plain = new_assistant(client)
    model.add_text("As usual.")
    _run_and_poll(client, plain, thread)
    assert "reasoning_effort" not in last_body(model)

    refused = bad_request(lambda: client.beta.assistants.create(model="scripted-model", reasoning_effort="bogus"))  # type: ignore[arg-type]
    assert refused.body is not None and "reasoning_effort" in error_message(refused)
    refused = bad_request(
        lambda: client.beta.threads.runs.create(thread_id=thread.id, assistant_id=plain.id, reasoning_effort="bogus")  # type: ignore[arg-type]
    )
    assert "reasoning_effort" in error_message(refused)


def test_tools_override_tool_choice_and_parallel_tool_calls(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, tools=[CALCULATE])
    thread = new_thread(client, "Hi")

    model.add_text("plain")
    _run_and_poll(client, assistant, thread)
    body = last_body(model)
    assert [t["function"]["name"] for t in body["tools"]] == ["calculate"]
    assert "tool_choice" not in body and "parallel_tool_calls" not in body  # the defaults are not sent

    model.add_text("plain")
    run = _run_and_poll(client, assistant, thread, tools=[GET_WEATHER])
    assert [t.function.name for t in run.tools] == ["get_weather"]  # type: ignore[union-attr]
    body = last_body(model)
    assert body["tools"] == [GET_WEATHER]

    model.add_text("plain")
    run = _run_and_poll(client, assistant, thread, tool_choice="required")
    assert run.tool_choice == "required"
    assert last_body(model)["tool_choice"] == "required"

    model.add_text("plain")
    named = {"type": "function", "function": {"name": "calculate"}}
    run = _run_and_poll(client, assistant, thread, tool_choice=named)
    assert run.status == "completed"
    assert last_body(model)["tool_choice"] == named

    model.add_text("plain")
    run = _run_and_poll(client, assistant, thread, parallel_tool_calls=False)
    assert run.parallel_tool_calls is False
    assert last_body(model)["parallel_tool_calls"] is False


def test_a_function_tool_choice_must_name_the_function(server: Server, client: openai.OpenAI) -> None:
    assistant = new_assistant(client, tools=[CALCULATE])
    thread = new_thread(client, "Hi")
    mark = uuid.uuid4().hex
    for choice in ({"type": "function"}, {"type": "function", "function": {}}):
        with pytest.raises(openai.BadRequestError) as refused:
            client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id, tool_choice=choice)  # type: ignore[arg-type]
        error = sdk_error(refused.value)
        assert error["param"] == "tool_choice.function.name" and "'tool_choice.function.name'" in error["message"], error
        with pytest.raises(openai.BadRequestError) as refused:
            client.beta.threads.create_and_run(
                assistant_id=assistant.id, thread={"metadata": {"mark": mark}}, tool_choice=choice  # type: ignore[arg-type]
            )
        assert sdk_error(refused.value)["param"] == "tool_choice.function.name"
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []
    assert list_threads(client, **{"metadata[mark]": mark})["data"] == []


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {"answer": {"type": "string"}},
                    "required": ["answer"],
                    "additionalProperties": False,
                },
            },
        },
    ],
    ids=["json_object", "json_schema"],
)
def test_response_format_is_sent(client: openai.OpenAI, model: ScriptedModel, response_format: dict[str, Any]) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Reply in JSON")
    model.add_text('{"answer": "yes"}')

    run = _run_and_poll(client, assistant, thread, response_format=response_format)

    assert run.status == "completed"
    assert last_body(model)["response_format"] == response_format
    assert text_of(assistant_messages(client, thread.id)[0]) == '{"answer": "yes"}'


def test_truncation_strategy_last_messages(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, instructions="System.")
    thread = new_thread(client, "m1", "m2", "m3", "m4", "m5")
    model.add_text("ok")

    run = _run_and_poll(client, assistant, thread, truncation_strategy={"type": "last_messages", "last_messages": 2})

    assert run.status == "completed"
    assert run.truncation_strategy is not None
    assert (run.truncation_strategy.type, run.truncation_strategy.last_messages) == ("last_messages", 2)
    assert sent_messages(model) == [
        {"role": "system", "content": "System."},
        {"role": "user", "content": "m4"},
        {"role": "user", "content": "m5"},
    ]


def test_max_completion_tokens_is_sent_and_honoured(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Tell me a story")

    model.add_text("Short story.", completion_tokens=10)
    run = _run_and_poll(client, assistant, thread, max_completion_tokens=300)
    assert run.status == "completed", run.incomplete_details
    assert run.max_completion_tokens == 300
    assert last_body(model)["max_completion_tokens"] == 300

    # The provider reports more completion tokens than the budget: the run is incomplete.
    model.add_text("A very long story indeed.", completion_tokens=400)
    run = _run_and_poll(client, assistant, thread, max_completion_tokens=300)
    assert run.status == "incomplete"
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_completion_tokens"
    answer = assistant_messages(client, thread.id)[-1]
    assert text_of(answer) == "A very long story indeed."
    assert answer.status == "incomplete" and answer.run_id == run.id
    assert answer.incomplete_details is not None


def test_max_completion_tokens_cut_by_the_provider(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Tell me a story")
    model.add_text("Once upon a", completion_tokens=3, finish_reason="length")

    run = _run_and_poll(client, assistant, thread, max_completion_tokens=256)

    assert last_body(model)["max_completion_tokens"] == 256
    assert run.status == "incomplete"
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_completion_tokens"
    assert run.completed_at is not None
    [answer] = assistant_messages(client, thread.id)
    assert (text_of(answer), answer.status) == ("Once upon a", "incomplete")
    assert answer.incomplete_details is not None and answer.incomplete_details.reason == "max_tokens"
    # The thread is free again.
    model.add_text("The end.")
    assert _run_and_poll(client, assistant, thread).status == "completed"


def _long_text(label: str, words: int = 60) -> str:
    return " ".join(f"{label}word{i}" for i in range(words))


def test_max_prompt_tokens_trims_the_oldest_messages(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, instructions="Be brief.")
    # About 40 tokens each: 12 of them (~500 tokens) cannot all fit in 256, a handful can.
    history = [f"Message {i}: " + " ".join(["lorem ipsum dolor sit amet"] * 7) for i in range(12)]
    thread = new_thread(client, *history, "What is the newest question?")
    model.add_text("Trimmed.", prompt_tokens=200)

    run = _run_and_poll(client, assistant, thread, max_prompt_tokens=256)

    assert run.status == "completed", (run.last_error, run.incomplete_details)
    assert run.max_prompt_tokens == 256
    sent = sent_messages(model)
    assert sent[0] == {"role": "system", "content": "Be brief."}
    contents = [m["content"] for m in sent[1:]]
    assert contents[-1] == "What is the newest question?"
    assert history[0] not in contents  # the oldest fell away...
    assert 3 <= len(contents) < len(history)  # ...but not everything: newer messages still fit
    # What is kept is the newest part of the thread, in order.
    assert contents == [*history, "What is the newest question?"][-len(contents):]
    # All stored messages are still there: trimming only changes what the model reads.
    assert len(messages_asc(client, thread.id)) == len(history) + 2


def test_max_prompt_tokens_too_small_for_the_newest_message(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "short", _long_text("huge", 400))

    run = _run_and_poll(client, assistant, thread, max_prompt_tokens=256)

    assert run.status == "incomplete"
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_prompt_tokens"
    assert model.requests == []  # nothing that could not fit was sent
    assert assistant_messages(client, thread.id) == []


# Server-side function tools ------------------------------------------------------------------


def test_server_side_tool_call_round_trip(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, tools=[CALCULATE])
    thread = new_thread(client, "What is 2+2?")
    arguments = json.dumps({"expression": "2+2"})
    model.add_tool_calls([{"name": "calculate", "arguments": arguments, "id": "call_sum"}])
    model.add_text("2+2 is 4.")

    run = _run_and_poll(client, assistant, thread)

    assert run.status == "completed", run.last_error
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "completed"), ("message_creation", "completed")]
    assert steps[0].step_details.type == "tool_calls"
    [call] = steps[0].step_details.tool_calls
    assert call.type == "function" and call.id == "call_sum"
    assert (call.function.name, call.function.arguments, call.function.output) == ("calculate", arguments, "4")

    assert len(model.requests) == 2
    second = sent_messages(model, 1)
    assert second[-2]["role"] == "assistant" and not second[-2].get("content")
    assert second[-2]["tool_calls"] == [
        {"id": "call_sum", "type": "function", "function": {"name": "calculate", "arguments": arguments}}
    ]
    assert second[-1] == {"role": "tool", "tool_call_id": "call_sum", "content": "4"}
    assert [text_of(m) for m in assistant_messages(client, thread.id)] == ["2+2 is 4."]
    assert run.usage is not None and run.usage.completion_tokens > 0


def test_parallel_server_side_tool_calls_all_run(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, tools=[CALCULATE])
    thread = new_thread(client, "2+2 and 3*3?")
    model.add_tool_calls([
        {"name": "calculate", "arguments": '{"expression": "2+2"}', "id": "call_a"},
        {"name": "calculate", "arguments": '{"expression": "3*3"}', "id": "call_b"},
    ])
    model.add_text("4 and 9.")

    run = _run_and_poll(client, assistant, thread)

    assert run.status == "completed", run.last_error
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data
    assert steps[0].step_details.type == "tool_calls"
    assert [(c.id, c.function.output) for c in steps[0].step_details.tool_calls] == [("call_a", "4"), ("call_b", "9")]  # type: ignore[union-attr]
    second = sent_messages(model, 1)
    assert [t for t in second if t["role"] == "tool"] == [
        {"role": "tool", "tool_call_id": "call_a", "content": "4"},
        {"role": "tool", "tool_call_id": "call_b", "content": "9"},
    ]
    assert [c["id"] for c in second[-3]["tool_calls"]] == ["call_a", "call_b"]


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("calculate", '{"expression": "2+', "not valid JSON"),
        ("launch_rockets", "{}", "no tool named 'launch_rockets'"),
        ("calculate", '{"expression": "1/0"}', "ZeroDivisionError"),
    ],
    ids=["invalid-json", "unknown-tool", "tool-raises"],
)
def test_a_failing_tool_call_is_reported_to_the_model(
    client: openai.OpenAI, model: ScriptedModel, name: str, arguments: str, expected: str
) -> None:
    assistant = new_assistant(client, tools=[CALCULATE])
    thread = new_thread(client, "Try it")
    model.add_tool_calls([{"name": name, "arguments": arguments, "id": "call_bad"}])
    model.add_text("Sorry, that did not work.")

    run = _run_and_poll(client, assistant, thread)

    assert run.status == "completed", run.last_error
    tool_message = sent_messages(model, 1)[-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_bad"
    assert tool_message["content"].startswith("Error")
    assert expected in tool_message["content"]
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data
    assert steps[0].step_details.tool_calls[0].function.output == tool_message["content"]  # type: ignore[union-attr]
    assert text_of(assistant_messages(client, thread.id)[-1]) == "Sorry, that did not work."


def test_a_model_that_keeps_calling_tools_is_stopped(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, tools=[CALCULATE])
    thread = new_thread(client, "Loop forever")
    model.add_responder(lambda body: ToolCallsReply([{"name": "calculate", "arguments": '{"expression": "1+1"}'}]))

    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=POLL_MS, timeout=60
    )

    assert run.status == "failed"
    assert run.last_error is not None and run.last_error.code == "server_error"
    assert "16 rounds" in run.last_error.message
    assert len(model.requests) == 16
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, limit=100).data
    assert len(steps) == 16 and {s.type for s in steps} == {"tool_calls"}
    assert all(s.status == "completed" for s in steps)


def test_completion_budget_spans_tool_rounds(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, tools=[CALCULATE])
    thread = new_thread(client, "What is 2+2?")
    model.add(ToolCallsReply([{"name": "calculate", "arguments": '{"expression": "2+2"}'}], completion_tokens=100))
    model.add_text("It is 4.", completion_tokens=5)

    run = _run_and_poll(client, assistant, thread, max_completion_tokens=300)

    assert run.status == "completed", (run.last_error, run.incomplete_details)
    # The second request may only use what the first one left of the run's budget.
    assert [r.body["max_completion_tokens"] for r in model.requests] == [300, 200]
    assert run.usage is not None and run.usage.completion_tokens == 105


def test_prompt_budget_spans_tool_rounds(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, tools=[CALCULATE])
    thread = new_thread(client, "What is 2+2?")
    model.add(ToolCallsReply([{"name": "calculate", "arguments": '{"expression": "2+2"}'}], prompt_tokens=250))
    model.add_text("never sent")

    run = _run_and_poll(client, assistant, thread, max_prompt_tokens=256)

    # The first request used 250 of the run's 256 prompt tokens: the next one cannot fit.
    assert run.status == "incomplete"
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_prompt_tokens"
    assert len(model.requests) == 1
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "completed")]
    assert steps[0].step_details.tool_calls[0].function.output == "4"  # type: ignore[union-attr]


# Client-side function tools ------------------------------------------------------------------


def test_client_side_tool_requires_action_then_resumes(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, tools=[CALCULATE, GET_WEATHER])
    thread = new_thread(client, "Weather in Paris, and 6*7?")
    model.add_tool_calls([
        {"name": "get_weather", "arguments": '{"city": "Paris"}', "id": "call_weather"},
        {"name": "calculate", "arguments": '{"expression": "6*7"}', "id": "call_calc"},
    ])
    model.add_text("Sunny, and 42.")

    run = _run_and_poll(client, assistant, thread)

    assert run.status == "requires_action"
    assert run.required_action is not None and run.required_action.type == "submit_tool_outputs"
    [pending] = run.required_action.submit_tool_outputs.tool_calls
    assert (pending.id, pending.type, pending.function.name, pending.function.arguments) == (
        "call_weather", "function", "get_weather", '{"city": "Paris"}'
    )
    assert run.expires_at is not None
    assert len(model.requests) == 1

    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": "call_weather", "output": "sunny, 21C"}],
        poll_interval_ms=POLL_MS,
    )

    assert run.status == "completed", run.last_error
    assert run.required_action is None
    assert len(model.requests) == 2
    tools = [m for m in sent_messages(model, 1) if m["role"] == "tool"]
    assert tools == [
        {"role": "tool", "tool_call_id": "call_weather", "content": "sunny, 21C"},
        {"role": "tool", "tool_call_id": "call_calc", "content": "42"},
    ]
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "completed"), ("message_creation", "completed")]
    assert {c.id: c.function.output for c in steps[0].step_details.tool_calls} == {  # type: ignore[union-attr]
        "call_weather": "sunny, 21C",
        "call_calc": "42",
    }
    assert text_of(assistant_messages(client, thread.id)[-1]) == "Sunny, and 42."


def test_client_side_tool_with_streams(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, tools=[GET_WEATHER])
    thread = new_thread(client, "Weather in Oslo?")
    model.add_tool_calls([{"name": "get_weather", "arguments": '{"city": "Oslo"}', "id": "call_oslo"}])
    model.add_text("Snowing in Oslo.")

    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        first_events = list(stream)
        paused = stream.get_final_run()
    assert first_events[-1].event == "thread.run.requires_action"
    assert paused.status == "requires_action"
    assert "thread.run.step.delta" in event_names(first_events)  # the call's arguments streamed

    handler = Recorder()
    with client.beta.threads.runs.submit_tool_outputs_stream(
        run_id=paused.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": "call_oslo", "output": "snow, -3C"}],
        event_handler=handler,
    ) as stream:
        stream.until_done()

    assert handler.names[0] == "thread.run.step.completed"  # the tool step, now with its output
    assert handler.names[-1] == "thread.run.completed"
    assert handler.text == "Snowing in Oslo."
    assert handler.get_final_run().status == "completed"
    assert sent_messages(model, 1)[-1] == {"role": "tool", "tool_call_id": "call_oslo", "content": "snow, -3C"}


def test_a_tool_output_may_leave_its_output_out(client: openai.OpenAI, model: ScriptedModel) -> None:
    """`output` is optional in the spec: the call's result is then empty, for the model and in the step."""
    assistant = new_assistant(client, tools=[GET_WEATHER])
    thread = new_thread(client, "Weather in Oslo?")
    model.add_tool_calls([{"name": "get_weather", "arguments": '{"city": "Oslo"}', "id": "call_oslo"}])
    model.add_text("No report for Oslo.")
    paused = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert paused.status == "requires_action"

    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=paused.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_oslo"}], poll_interval_ms=50
    )

    assert run.status == "completed", run.last_error
    assert sent_messages(model, 1)[-1] == {"role": "tool", "tool_call_id": "call_oslo", "content": ""}
    [step, _] = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data
    assert step.step_details.type == "tool_calls"
    [call] = step.step_details.tool_calls
    assert call.type == "function" and call.function.output == ""


def test_text_before_client_tool_calls_survives_the_pause(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, tools=[GET_WEATHER])
    thread = new_thread(client, "Weather in Kyoto?")
    model.add(ToolCallsReply(
        [{"name": "get_weather", "arguments": '{"city": "Kyoto"}', "id": "call_kyoto"}],
        text="Let me check.", prompt_tokens=10, completion_tokens=3,
    ))
    model.add_text("Rainy in Kyoto.", prompt_tokens=20, completion_tokens=5)

    run = _run_and_poll(client, assistant, thread)
    assert run.status == "requires_action"
    assert [(m.status, text_of(m)) for m in assistant_messages(client, thread.id)] == [("completed", "Let me check.")]

    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, poll_interval_ms=POLL_MS,
        tool_outputs=[{"tool_call_id": "call_kyoto", "output": "rain"}],
    )

    assert run.status == "completed", run.last_error
    # Resumed from the store, the model reads its own turn exactly as it produced it.
    assert sent_messages(model, 1)[-2:] == [
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {"id": "call_kyoto", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Kyoto"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_kyoto", "content": "rain"},
    ]
    assert [text_of(m) for m in messages_asc(client, thread.id)] == ["Weather in Kyoto?", "Let me check.", "Rainy in Kyoto."]
    # Usage adds up over the pause.
    assert run.usage is not None
    assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.usage.total_tokens) == (30, 8, 38)
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data
    assert [(s.type, s.status) for s in steps] == [
        ("message_creation", "completed"), ("tool_calls", "completed"), ("message_creation", "completed")
    ]


def test_bad_tool_outputs_are_rejected(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, tools=[GET_WEATHER])
    thread = new_thread(client, "Weather?")
    model.add_tool_calls([
        {"name": "get_weather", "arguments": '{"city": "Rome"}', "id": "call_rome"},
        {"name": "get_weather", "arguments": '{"city": "Oslo"}', "id": "call_oslo"},
    ])
    model.add_text("Done.")
    run = _run_and_poll(client, assistant, thread)
    assert run.status == "requires_action"

    submit = client.beta.threads.runs.submit_tool_outputs
    wrong = bad_request(lambda: submit(
        run_id=run.id, thread_id=thread.id,
        tool_outputs=[{"tool_call_id": "call_nope", "output": "x"}, {"tool_call_id": "call_oslo", "output": "y"}],
    ))
    assert wrong.param is not None and wrong.param.startswith("tool_outputs")
    assert "call_nope" in error_message(wrong)

    missing = bad_request(lambda: submit(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_rome", "output": "x"}]
    ))
    assert missing.param is not None and missing.param.startswith("tool_outputs")
    assert "call_oslo" in error_message(missing)

    # Nothing was accepted: the run still waits, and a correct submission goes through.
    assert run_status(client, thread.id, run.id).status == "requires_action"
    assert len(model.requests) == 1
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, poll_interval_ms=POLL_MS,
        tool_outputs=[{"tool_call_id": "call_rome", "output": "sun"}, {"tool_call_id": "call_oslo", "output": "snow"}],
    )
    assert done.status == "completed"

    late = bad_request(lambda: submit(
        run_id=run.id, thread_id=thread.id,
        tool_outputs=[{"tool_call_id": "call_rome", "output": "x"}, {"tool_call_id": "call_oslo", "output": "y"}],
    ))
    assert "completed" in error_message(late)
    assert len(model.requests) == 2


# One active run per thread -------------------------------------------------------------------


def test_one_active_run_per_thread(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Take your time")
    model.add_hang(10)
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    try:
        # Not `model.wait_for(lambda m: len(m.requests) ...)`: `requests` takes the lock that
        # `wait_for` already holds, which deadlocks the scripted model.
        wait_until(lambda: len(model.requests), lambda n: n >= 1, what="the provider request")

        second = bad_request(lambda: client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id))
        assert error_message(second) == f"Thread {thread.id} already has an active run {run.id}."

        message = bad_request(
            lambda: client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Hurry up")
        )
        assert error_message(message) == f"Can't add messages to {thread.id} while a run {run.id} is active."
        assert [text_of(m) for m in messages_asc(client, thread.id) if m.role == "user"] == ["Take your time"]
        assert len(client.beta.threads.runs.list(thread_id=thread.id).data) == 1
    finally:
        client.beta.threads.runs.cancel(run_id=run.id, thread_id=thread.id)
    assert wait_for_status(client, run, {"cancelled"}).status == "cancelled"


# Cancel --------------------------------------------------------------------------------------


def test_cancel_a_run_streaming_from_the_provider(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Write a long essay")
    model.add_hang(30)
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    # The hanging stream has sent its first piece of text: a partial message exists.
    partial = wait_until(
        lambda: assistant_messages(client, thread.id), lambda ms: len(ms) == 1, what="the partial message"
    )[0]
    assert partial.status == "in_progress"

    cancelling = client.beta.threads.runs.cancel(run_id=run.id, thread_id=thread.id)

    assert cancelling.status == "cancelling"
    cancelled = wait_for_status(client, run, {"cancelled", "failed", "completed"})
    assert cancelled.status == "cancelled"
    assert cancelled.cancelled_at is not None and cancelled.expires_at is None
    assert model.wait_for(lambda m: m.disconnects >= 1), "the provider stream was not closed"
    [kept] = assistant_messages(client, thread.id)
    assert (kept.id, kept.status, text_of(kept)) == (partial.id, "incomplete", "…")
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert [(s.type, s.status) for s in steps] == [("message_creation", "cancelled")]

    # The thread is free at once.
    model.add_text("Here is a short one.")
    again = _run_and_poll(client, assistant, thread)
    assert again.status == "completed"
    assert text_of(assistant_messages(client, thread.id)[-1]) == "Here is a short one."


def test_cancel_a_run_waiting_for_tool_outputs(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, tools=[GET_WEATHER])
    thread = new_thread(client, "Weather?")
    model.add_tool_calls([{"name": "get_weather", "arguments": '{"city": "Lima"}', "id": "call_lima"}])
    run = _run_and_poll(client, assistant, thread)
    assert run.status == "requires_action"

    cancelled = client.beta.threads.runs.cancel(run_id=run.id, thread_id=thread.id)

    assert cancelled.status == "cancelled" and cancelled.required_action is None
    assert run_status(client, thread.id, run.id).status == "cancelled"
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "cancelled")]
    late = bad_request(lambda: client.beta.threads.runs.submit_tool_outputs(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_lima", "output": "x"}]
    ))
    assert "cancelled" in error_message(late)


def test_cancel_a_finished_run_is_refused(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Hi")
    model.add_text("Hello.")
    run = _run_and_poll(client, assistant, thread)
    assert run.status == "completed"

    error = bad_request(lambda: client.beta.threads.runs.cancel(run_id=run.id, thread_id=thread.id))

    assert "completed" in error_message(error)
    assert run_status(client, thread.id, run.id).status == "completed"


# Expiry --------------------------------------------------------------------------------------


def test_a_run_left_in_requires_action_expires(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client, tools=[GET_WEATHER])
    thread = new_thread(client, "Weather?")
    model.add_tool_calls([{"name": "get_weather", "arguments": '{"city": "Cairo"}', "id": "call_cairo"}])
    run = _run_and_poll(client, assistant, thread)
    assert run.status == "requires_action"
    assert run.expires_at is not None and run.expires_at - int(time.time()) <= 5

    expired = wait_until(
        lambda: run_status(client, thread.id, run.id), lambda r: r.status != "requires_action",
        timeout=15, what="the run to expire",
    )

    assert expired.status == "expired"
    assert expired.required_action is None
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "expired")]
    late = bad_request(lambda: client.beta.threads.runs.submit_tool_outputs(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_cairo", "output": "hot"}]
    ))
    assert "expired" in error_message(late)
    assert len(model.requests) == 1
    # An expired run no longer holds the thread.
    model.add_text("Ask me again.")
    assert _run_and_poll(client, assistant, thread).status == "completed"


# Provider errors -----------------------------------------------------------------------------


def test_rate_limit_once_is_retried(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Hi")
    model.add_error(429, "Slow down", headers={"retry-after": "0"})
    model.add_text("Made it.")

    run = _run_and_poll(client, assistant, thread)

    assert run.status == "completed", run.last_error
    assert len(model.requests) == 2
    assert model.requests[0].body == model.requests[1].body  # the same request, sent again
    assert [text_of(m) for m in assistant_messages(client, thread.id)] == ["Made it."]


def test_server_errors_beyond_the_retries_fail_the_run(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Hi")
    for _ in range(3):
        model.add_error(500, "The scripted provider is down", headers={"retry-after": "0"})
    model.add_text("never reached")

    run = _run_and_poll(client, assistant, thread)

    assert run.status == "failed"
    assert run.failed_at is not None
    assert run.last_error is not None and run.last_error.code == "server_error"
    assert "HTTP 500" in run.last_error.message
    assert "The scripted provider is down" in run.last_error.message
    assert len(model.requests) == 3  # the first try and the 2 configured retries
    assert model.pending == 1
    assert assistant_messages(client, thread.id) == []


def test_rate_limit_beyond_the_retries_fails_the_run(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Hi")
    for _ in range(3):
        model.add_error(429, "Slow down", headers={"retry-after": "0"})

    run = _run_and_poll(client, assistant, thread)

    assert run.status == "failed"
    assert run.last_error is not None and run.last_error.code == "rate_limit_exceeded"
    assert "429" in run.last_error.message
    assert len(model.requests) == 3


def test_stream_break_fails_the_run_and_keeps_the_partial_message(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Hi")
    model.add_stream_break("The first half of")
    model.add_text("never reached")

    run = _run_and_poll(client, assistant, thread)

    assert run.status == "failed"
    assert run.last_error is not None and run.last_error.code == "server_error"
    assert run.last_error.message
    assert len(model.requests) == 1  # no retry once text has reached the user
    [partial] = assistant_messages(client, thread.id)
    assert (partial.status, text_of(partial), partial.run_id) == ("incomplete", "The first half of", run.id)
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert [(s.type, s.status) for s in steps] == [("message_creation", "failed")]


def test_provider_failure_in_a_streamed_run(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Hi")
    model.add_stream_break("Partial answer")

    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        events = list(stream)

    names = event_names(events)
    assert names[-1] == "thread.run.failed"
    assert "thread.message.incomplete" in names and "thread.message.completed" not in names
    failed = events[-1].data
    assert isinstance(failed, Run)
    assert failed.status == "failed"
    assert failed.last_error is not None and failed.last_error.code == "server_error" and failed.last_error.message


def test_streamed_run_rejected_by_the_provider(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = new_assistant(client)
    thread = new_thread(client, "Hi")
    model.add_error(400, "This prompt is not allowed")

    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        events = list(stream)

    assert event_names(events) == ["thread.run.created", "thread.run.queued", "thread.run.in_progress", "thread.run.failed"]
    failed = events[-1].data
    assert isinstance(failed, Run)
    assert failed.last_error is not None and failed.last_error.code == "invalid_prompt"
    assert "This prompt is not allowed" in failed.last_error.message
    assert len(model.requests) == 1  # a 400 is not retried


# No provider ---------------------------------------------------------------------------------


def test_runs_fail_at_once_without_a_provider(tmp_path: Path) -> None:
    srv = start_server(tmp_path, model_url=None)
    try:
        carol = sdk_client(srv, "carol")
        assistant = new_assistant(carol)
        thread = new_thread(carol, "Anyone there?")

        run = carol.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=POLL_MS, timeout=10
        )

        assert run.status == "failed"
        assert run.last_error is not None and run.last_error.code == "server_error"
        assert "OPENAI_BASE_URL" in run.last_error.message
        assert [m.role for m in messages_asc(carol, thread.id)] == ["user"]
    finally:
        srv.stop()
