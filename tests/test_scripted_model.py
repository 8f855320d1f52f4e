"""Checks that the scripted model speaks the OpenAI wire format, through the official SDK."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.scripted_model import HangReply, ScriptedModel, TextReply

MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as scripted:
        yield scripted


@pytest.fixture
def client(model: ScriptedModel) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=model.base_url, api_key="x", max_retries=0) as sdk:
        yield sdk


def collect_tool_calls(chunks: list[Any]) -> dict[int, dict[str, Any]]:
    """Accumulate streamed tool-call deltas by index, as a client of the API has to."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": "", "pieces": 0})
                if delta.id:
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    call["name"] = delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
                    call["pieces"] += 1
    return calls


def test_streamed_text_arrives_in_chunks_and_reassembles(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add_text("The quick brown fox")
    chunks = list(client.chat.completions.create(model="scripted-model", messages=MESSAGES, stream=True))

    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents == ["The ", "quick ", "brown ", "fox"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.model == "scripted-model" and c.id == chunks[0].id for c in chunks)


def test_explicit_and_sized_chunks(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add_text("abcdef", chunk_size=["a", "bcd", "ef"])
    model.add_text("abcdefg", chunk_size=3)
    for expected in (["a", "bcd", "ef"], ["abc", "def", "g"]):
        stream = client.chat.completions.create(model="scripted-model", messages=MESSAGES, stream=True)
        assert [c.choices[0].delta.content for c in stream if c.choices[0].delta.content] == expected


def test_delay_spaces_out_chunks(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add_text("one two three", delay=0.05)
    started = time.monotonic()
    list(client.chat.completions.create(model="scripted-model", messages=MESSAGES, stream=True))
    assert time.monotonic() - started >= 0.15


def test_non_streamed_text_and_usage(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add_text("all at once", prompt_tokens=11, completion_tokens=3)
    completion = client.chat.completions.create(model="scripted-model-2", messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.model == "scripted-model-2"
    assert completion.choices[0].message.content == "all at once"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 3)
    assert completion.usage.total_tokens == 14


def test_streamed_tool_call_reassembles(model: ScriptedModel, client: openai.OpenAI) -> None:
    arguments = json.dumps({"city": "Paris", "unit": "celsius"})
    model.add_tool_calls([{"name": "get_weather", "arguments": arguments, "id": "call_weather"}])
    chunks = list(client.chat.completions.create(model="scripted-model", messages=MESSAGES, stream=True))

    calls = collect_tool_calls(chunks)
    assert list(calls) == [0]
    assert calls[0]["id"] == "call_weather"
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert calls[0]["pieces"] == 3
    header = next(c for c in chunks if c.choices[0].delta.tool_calls).choices[0].delta.tool_calls
    assert header is not None and header[0].type == "function" and header[0].function is not None
    assert header[0].function.arguments == ""
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_parallel_tool_calls_keep_arguments_verbatim(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add_tool_calls(
        [{"name": "lookup", "arguments": '{"q": "a"}'}, {"name": "broken", "arguments": '{"q": oops'}],
        text="Let me check.",
    )
    chunks = list(client.chat.completions.create(model="scripted-model", messages=MESSAGES, stream=True))

    calls = collect_tool_calls(chunks)
    assert [calls[i]["name"] for i in (0, 1)] == ["lookup", "broken"]
    assert [calls[i]["arguments"] for i in (0, 1)] == ['{"q": "a"}', '{"q": oops']
    assert calls[0]["id"] != calls[1]["id"]
    assert calls[0]["id"].startswith("call_")
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Let me check."
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_non_streamed_tool_calls(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add_tool_calls([{"name": "a", "arguments": "{}"}, {"name": "b", "arguments": '{"x": 1}'}])
    completion = client.chat.completions.create(model="scripted-model", messages=MESSAGES)

    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert message.tool_calls is not None
    assert [(c.function.name, c.function.arguments) for c in message.tool_calls] == [  # type: ignore[union-attr]
        ("a", "{}"),
        ("b", '{"x": 1}'),
    ]


def test_errors_map_to_sdk_exceptions(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add_error(429, "Slow down", headers={"retry-after": "0"}, code="rate_limit_exceeded")
    model.add_error(500, "Boom")
    model.add_error(400, "Bad tools", error_type="invalid_request_error")

    with pytest.raises(openai.RateLimitError) as rate_limited:
        client.chat.completions.create(model="scripted-model", messages=MESSAGES, stream=True)
    assert rate_limited.value.status_code == 429
    assert rate_limited.value.code == "rate_limit_exceeded"
    assert rate_limited.value.type == "rate_limit_error"
    assert rate_limited.value.response.headers["retry-after"] == "0"
    assert "Slow down" in rate_limited.value.message

    with pytest.raises(openai.InternalServerError) as server_error:
        client.chat.completions.create(model="scripted-model", messages=MESSAGES)
    assert server_error.value.status_code == 500

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="scripted-model", messages=MESSAGES)


def test_include_usage_sends_a_final_usage_chunk(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add_text("four little words here")
    model.add_text("scripted usage", prompt_tokens=100, completion_tokens=7)
    messages: list[Any] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"}]

    for prompt, completion in ((5, 4), (100, 7)):
        chunks = list(
            client.chat.completions.create(
                model="scripted-model", messages=messages, stream=True, stream_options={"include_usage": True}
            )
        )
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (prompt, completion)
        assert chunks[-1].usage.total_tokens == prompt + completion
        assert all(c.usage is None for c in chunks[:-1])


def test_no_usage_chunk_unless_asked(model: ScriptedModel, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="scripted-model", messages=MESSAGES, stream=True))
    assert all(c.choices and c.usage is None for c in chunks)


def test_requests_are_recorded(model: ScriptedModel, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="scripted-model", messages=MESSAGES, temperature=0.5)
    client.chat.completions.create(
        model="scripted-model-2", messages=[{"role": "user", "content": "second"}], stream=True
    ).close()

    assert [r.path for r in model.requests] == ["/v1/chat/completions", "/v1/chat/completions"]
    first, last = model.requests
    assert first.body["temperature"] == 0.5
    assert first.headers["authorization"] == "Bearer x"
    assert last is model.last_request or last == model.last_request
    assert last.body["model"] == "scripted-model-2" and last.body["stream"] is True
    assert model.last_messages == [{"role": "user", "content": "second"}]


def test_scripts_are_consumed_in_order_then_echo(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add_text("first")
    model.add_text("second")
    assert model.pending == 2
    replies = [
        client.chat.completions.create(model="scripted-model", messages=MESSAGES).choices[0].message.content
        for _ in range(3)
    ]
    assert replies == ["first", "second", "echo: hello there"]
    assert model.pending == 0


def test_echo_joins_text_parts(model: ScriptedModel, client: openai.OpenAI) -> None:
    parts: list[Any] = [
        {"type": "text", "text": "look at "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "this"},
    ]
    messages: list[Any] = [{"role": "user", "content": "old"}, {"role": "assistant", "content": "hm"},
                           {"role": "user", "content": parts}]
    completion = client.chat.completions.create(model="scripted-model", messages=messages)
    assert completion.choices[0].message.content == "echo: look at this"


def test_responder_is_the_fallback(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add_responder(lambda body: TextReply(f"{len(body['messages'])} messages"))
    model.add_text("queued first")
    ask = client.chat.completions.create
    assert ask(model="scripted-model", messages=MESSAGES).choices[0].message.content == "queued first"
    assert ask(model="scripted-model", messages=MESSAGES).choices[0].message.content == "1 messages"
    model.add_responder(lambda body: "plain string")
    assert ask(model="scripted-model", messages=MESSAGES).choices[0].message.content == "plain string"


def test_invalid_bodies_get_openai_shaped_400(model: ScriptedModel) -> None:
    model.add_text("not consumed by invalid requests")
    for content in (b"{not json", json.dumps({"model": "scripted-model"}).encode()):
        response = httpx.post(f"{model.base_url}/chat/completions", content=content,
                              headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert model.requests[0].body is None
    assert model.pending == 1


def test_models_are_listed(model: ScriptedModel, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["scripted-model", "scripted-model-2"]
    model.models = ["only-one"]
    assert [m.id for m in client.models.list()] == ["only-one"]
    assert model.last_request is not None and model.last_request.path == "/v1/models"


def test_stream_break_fails_the_client_mid_stream(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add_stream_break("partial answer")
    received: list[str] = []
    stream = client.chat.completions.create(model="scripted-model", messages=MESSAGES, stream=True)
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "partial answer"
    # The server must stay healthy for the next request.
    assert client.chat.completions.create(model="scripted-model", messages=MESSAGES).choices[0].message.content


@pytest.mark.asyncio
async def test_hang_then_client_close_counts_a_disconnect(model: ScriptedModel) -> None:
    model.add_hang(30.0)
    started = time.monotonic()
    async with openai.AsyncOpenAI(base_url=model.base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(model="scripted-model", messages=MESSAGES, stream=True)
        first = await anext(stream)
        second = await anext(stream)
        assert first.choices[0].delta.role == "assistant"
        assert second.choices[0].delta.content == "…"
        await stream.close()
    assert await asyncio.to_thread(model.wait_for, lambda m: m.disconnects == 1, 10.0)
    assert time.monotonic() - started < 10


@pytest.mark.asyncio
async def test_async_client_streams_text(model: ScriptedModel) -> None:
    model.add_text("async works")
    async with openai.AsyncOpenAI(base_url=model.base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(model="scripted-model", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "async works"
    assert model.disconnects == 0


def test_stop_releases_a_hanging_stream() -> None:
    model = ScriptedModel().start()
    model.add(HangReply(60.0))
    with openai.OpenAI(base_url=model.base_url, api_key="x", max_retries=0) as client:
        stream = client.chat.completions.create(model="scripted-model", messages=MESSAGES, stream=True)
        next(iter(stream))
        started = time.monotonic()
        model.stop()
        assert time.monotonic() - started < 5
        stream.close()


def test_reset_forgets_everything(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add_text("never sent")
    model.add_responder(lambda body: "custom")
    client.models.list()
    model.reset()
    assert (model.pending, model.requests, model.disconnects) == (0, [], 0)
    assert client.chat.completions.create(model="scripted-model", messages=MESSAGES).choices[0].message.content == (
        "echo: hello there"
    )


def test_runs_as_a_process_with_chunked_echo() -> None:
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "tests.scripted_model", "--port", "0", "--chunks", "3"]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("scripted model listening on http://127.0.0.1:")
            base_url = line.rsplit(" ", 1)[1].strip()
            with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as client:
                stream = client.chat.completions.create(model="scripted-model", messages=MESSAGES, stream=True)
                pieces = [c.choices[0].delta.content for c in stream if c.choices[0].delta.content]
            assert "".join(pieces) == "echo: hello there"
            assert len(pieces) == 3
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0
