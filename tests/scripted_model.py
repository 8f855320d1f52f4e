"""A scripted, OpenAI-compatible Chat Completions server: the only fake the test suite uses.

It also serves `/v1/embeddings` with a deterministic toy embedding (`toy_embedding`): words count
on hashed dimensions, and the words of a `SYNONYMS` group share one, so "limescale" lands near
"descale" although no letters match, which is what hybrid retrieval tests need.

Tests queue up replies (text, tool calls, errors, hangs, broken streams) and the server plays
them back, one per chat completion request, in the exact wire format OpenAI uses, so the code
under test talks to it through its real HTTP client. It runs in a background thread that owns
its own event loop, which lets sync tests, async tests and separate server processes share it.

It can also run on its own for benchmarks: ``python -m tests.scripted_model --port 9999``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import itertools
import json
import logging
import re
import signal
import socket
import struct
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

DEFAULT_MODELS = ("scripted-model", "scripted-model-2")
EMBEDDING_DIMENSIONS = 256
SYNONYMS = (
    ("limescale", "scale", "descale", "descaling", "calcium", "deposits", "furring"),
    ("car", "automobile", "vehicle", "motorcar"),
    ("doctor", "physician", "gp"),
)
"""Words that embed to the same dimension (toy meaning)."""
_CONCEPT = {word: group[0] for group in SYNONYMS for word in group}


def toy_embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic embedding: each word (synonyms as one) adds 1 to a hashed dimension."""
    vector = [0.0] * dimensions
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        concept = _CONCEPT.get(word, word)
        vector[int.from_bytes(hashlib.sha256(concept.encode()).digest()[:4], "big") % dimensions] += 1.0
    return vector


@dataclass(frozen=True)
class TextReply:
    """Stream ``text`` as content deltas: split into words by default, into pieces of
    ``chunk_size`` characters when it is an int, or exactly as given when it is a list."""

    text: str
    chunk_size: int | Sequence[str] | None = None
    delay: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True)
class ToolCallsReply:
    """Stream one or more (parallel) tool calls, each ``{"name", "arguments", "id"?}``."""

    calls: Sequence[Mapping[str, str]]
    text: str | None = None
    delay: float = 0.0
    split_arguments: bool = True
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "tool_calls"
    """``length``: the model hit its token limit inside the calls (their arguments cut short)."""

    def __post_init__(self) -> None:
        # Checking here makes a malformed script fail in the test that queued it, not in the server.
        for call in self.calls:
            if not isinstance(call.get("name"), str) or not isinstance(call.get("arguments"), str):
                raise ValueError(f"a tool call needs string 'name' and 'arguments': {call!r}")


@dataclass(frozen=True)
class ErrorReply:
    """Answer with an HTTP error carrying an OpenAI-shaped error body."""

    status: int
    message: str = "Scripted error"
    headers: Mapping[str, str] | None = None
    error_type: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class HangReply:
    """Start the stream (``text_before``, a word a chunk, ``delay`` seconds apart), then stall for
    up to ``seconds`` (or until the client hangs up)."""

    seconds: float = 30.0
    text_before: str = "…"
    delay: float = 0.0


@dataclass(frozen=True)
class StreamBreakReply:
    """Stream ``text_before`` and then drop the connection without finishing the response."""

    text_before: str = ""
    delay: float = 0.0


@dataclass(frozen=True)
class SlowStartReply:
    """Wait ``seconds`` before answering at all (no headers), then play ``then``."""

    seconds: float
    then: TextReply


@dataclass(frozen=True)
class MalformedReply:
    """Stream ``text_before``, then a chunk that is not what the protocol allows, then end."""

    text_before: str = ""
    bad_chunk: bytes = b"data: {this is not json\n\n"


@dataclass(frozen=True)
class EndlessReply:
    """Stream words forever, one every ``delay`` seconds, until the client hangs up."""

    delay: float = 0.01


@dataclass(frozen=True)
class StampReply:
    """Stream ``count`` chunks, each the wall-clock time it was sent (``"1795800000.123456 "``),
    one every ``delay`` seconds: a load benchmark reads how long each took to reach it."""

    count: int
    delay: float = 0.0


Script = (
    TextReply | ToolCallsReply | ErrorReply | HangReply | StreamBreakReply | SlowStartReply | MalformedReply
    | EndlessReply | StampReply
)
Responder = Callable[[dict[str, Any]], Script | str]


@dataclass
class RecordedRequest:
    """One request as the server received it; ``body`` is None when it was not JSON."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class _Plan:
    """A text or tool-call reply resolved into the deltas to stream and the message they add up to."""

    deltas: list[dict[str, Any]]
    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"
    delay: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _StreamBroken(Exception):
    """Raised on purpose to make uvicorn drop a connection mid-response."""


class _QuietStreamBreaks(logging.Filter):
    """Keeps uvicorn from printing a traceback for every deliberately broken stream."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _StreamBroken))


logging.getLogger("uvicorn.error").addFilter(_QuietStreamBreaks())


def split_words(text: str) -> list[str]:
    """Split text into words that keep their trailing whitespace, so the pieces join back exactly."""
    return re.findall(r"\S+\s*|\s+", text)


def split_evenly(text: str, parts: int) -> list[str]:
    """Split text into ``parts`` pieces of near-equal length (fewer when the text is shorter)."""
    parts = max(1, min(parts, len(text)))
    bounds = [len(text) * i // parts for i in range(parts + 1)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if a < b]


def content_text(content: Any) -> str:
    """The text of a message content, which may be a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def echo_text(body: Mapping[str, Any]) -> str:
    """The default reply: ``"echo: "`` followed by the text of the last user message."""
    users = [m for m in body.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
    return "echo: " + (content_text(users[-1].get("content")) if users else "")


def _estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    # A word count is deterministic and close enough for tests that only check usage is wired through.
    return sum(len(content_text(m.get("content")).split()) for m in body["messages"] if isinstance(m, dict))


def _default_error_type(status: int) -> str:
    return {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 429: "rate_limit_error"}.get(status, "server_error" if status >= 500 else "api_error")


def _error_response(status: int, message: str, error_type: str | None = None, code: str | None = None,
                    headers: Mapping[str, str] | None = None) -> JSONResponse:
    error = {"message": message, "type": error_type or _default_error_type(status), "param": None, "code": code}
    return JSONResponse({"error": error}, status_code=status, headers=dict(headers or {}))


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def _plan(script: TextReply | ToolCallsReply) -> _Plan:
    if isinstance(script, TextReply):
        if script.chunk_size is None:
            pieces = split_words(script.text)
        elif isinstance(script.chunk_size, int):
            pieces = [script.text[i:i + script.chunk_size] for i in range(0, len(script.text), script.chunk_size)]
        else:
            pieces = list(script.chunk_size)
            if "".join(pieces) != script.text:
                raise ValueError("explicit chunks must join back to the text")
        return _Plan([{"content": p} for p in pieces], script.text, [], script.finish_reason,
                     script.delay, script.prompt_tokens, script.completion_tokens)
    deltas: list[dict[str, Any]] = [{"content": p} for p in split_words(script.text or "")]
    calls: list[dict[str, Any]] = []
    for index, call in enumerate(script.calls):
        call_id = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
        arguments = call["arguments"]
        # OpenAI announces each call once (id, type, name, empty arguments) and then streams arguments.
        deltas.append({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                       "function": {"name": call["name"], "arguments": ""}}]})
        pieces = split_evenly(arguments, 3) if script.split_arguments else [arguments] if arguments else []
        deltas += [{"tool_calls": [{"index": index, "function": {"arguments": p}}]} for p in pieces]
        calls.append({"id": call_id, "type": "function", "function": {"name": call["name"], "arguments": arguments}})
    return _Plan(deltas, script.text, calls, script.finish_reason, script.delay, script.prompt_tokens, script.completion_tokens)


class _EventStream(Response):
    """A server-sent-event response that notices the client hanging up at any moment.

    Starlette's StreamingResponse only sees a disconnect on some ASGI spec versions, and a stream
    parked in a long sleep sends nothing that could fail, so this response listens for
    ``http.disconnect`` alongside the stream and cancels the stream as soon as it arrives.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], on_disconnect: Callable[[], None]) -> None:
        self.status_code = 200
        self.background = None
        self._events = events
        self._on_disconnect = on_disconnect
        self.init_headers({"cache-control": "no-cache"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        pump = asyncio.create_task(self._pump(send))
        watch = asyncio.create_task(self._wait_for_disconnect(receive))
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            pump.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
            await self._events.aclose()
        error = None if pump.cancelled() else pump.exception()
        if pump.cancelled() or isinstance(error, OSError):
            self._on_disconnect()
            return
        if error is not None:
            raise error
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, send: Send) -> None:
        async for event in self._events:
            await send({"type": "http.response.body", "body": event, "more_body": True})

    @staticmethod
    async def _wait_for_disconnect(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


class ScriptedModel:
    """An OpenAI-compatible model server that replays queued scripts, one per chat completion."""

    def __init__(self, *, models: Sequence[str] = DEFAULT_MODELS, host: str = "127.0.0.1", port: int = 0) -> None:
        self.models = list(models)
        self.host = host
        self.port = port
        self.disconnects = 0
        self._requests: list[RecordedRequest] = []
        self._scripts: collections.deque[Script] = collections.deque()
        self._responder: Responder | None = None
        self._embedding_errors: collections.deque[ErrorReply] = collections.deque()
        self._embedding_hangs: collections.deque[float] = collections.deque()
        # One condition guards all shared state, so tests can block until the server has seen something.
        self._changed = threading.Condition(threading.RLock())
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
            Route("/v1/models", self._list_models, methods=["GET"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
        ], exception_handlers={404: self._not_found, 405: self._not_found})

    # Lifecycle.

    def start(self) -> ScriptedModel:
        """Bind a port and serve in a background thread; returns once the server accepts requests."""
        if self._thread is not None:
            raise RuntimeError("ScriptedModel is already running")
        # Binding here, before the thread starts, makes the port known at once and avoids a pick-then-bind race.
        # IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only for
        # accepted sockets whose `proto` says TCP, and they inherit it from this one. With Nagle on,
        # each SSE chunk after the headers waited for the client's delayed ACK, about 40 ms on a
        # reused connection, which no real provider adds.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        server = self._server = uvicorn.Server(config)
        self._stopping.clear()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(server.serve(sockets=[sock]))
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"scripted-model:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the scripted model server failed to start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving; stalled (hanging) streams are released so shutdown stays quick."""
        if self._server is None or self._thread is None:
            return
        self._stopping.set()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server, self._thread = None, None

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL to give a client, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    # Scripting.

    def add(self, script: Script) -> None:
        """Queue a script for the next chat completion request not yet answered by an earlier one."""
        with self._changed:
            self._scripts.append(script)

    def add_text(self, text: str, *, chunk_size: int | Sequence[str] | None = None, delay: float = 0.0,
                 prompt_tokens: int | None = None, completion_tokens: int | None = None,
                 finish_reason: str = "stop") -> None:
        """Queue a streamed text reply (see `TextReply` for how it is chunked)."""
        self.add(TextReply(text, chunk_size, delay, prompt_tokens, completion_tokens, finish_reason))

    def add_tool_calls(self, calls: Sequence[Mapping[str, str]], *, text: str | None = None,
                       delay: float = 0.0, split_arguments: bool = True, finish_reason: str = "tool_calls") -> None:
        """Queue tool calls (parallel when several), each ``{"name", "arguments", "id"?}``; the
        arguments string is sent verbatim, so invalid JSON reaches the client as is.
        ``finish_reason="length"`` ends the stream as a model cut off inside the calls does."""
        self.add(ToolCallsReply(list(calls), text, delay, split_arguments, finish_reason=finish_reason))

    def add_error(self, status: int, message: str = "Scripted error", *, headers: Mapping[str, str] | None = None,
                  error_type: str | None = None, code: str | None = None) -> None:
        """Queue an HTTP error with an OpenAI error body, e.g. ``add_error(429, headers={"retry-after": "0"})``."""
        self.add(ErrorReply(status, message, headers, error_type, code))

    def add_hang(self, seconds: float = 30.0, text_before: str = "…", *, delay: float = 0.0) -> None:
        """Queue a stream that stalls after ``text_before`` (one chunk by default; a word every
        ``delay`` seconds), for cancellation tests and for text that must show before the answer
        ends."""
        self.add(HangReply(seconds, text_before, delay))

    def add_stream_break(self, text_before: str = "", *, delay: float = 0.0) -> None:
        """Queue a stream that sends ``text_before`` and then drops the connection."""
        self.add(StreamBreakReply(text_before, delay))

    def add_embedding_error(self, status: int, message: str = "Scripted error", *, times: int = 1) -> None:
        """Answer the next `times` embeddings requests with an HTTP error (after the client's retries)."""
        with self._changed:
            self._embedding_errors.extend([ErrorReply(status, message, None, None, None)] * times)

    def add_embedding_hang(self, seconds: float = 60.0, *, times: int = 1) -> None:
        """Answer nothing to the next `times` embeddings requests for `seconds` (or until the client
        hangs up): ingestion on an embedding model is then caught mid-work, for as long as a test needs."""
        with self._changed:
            self._embedding_hangs.extend([seconds] * times)

    def add_slow_start(self, seconds: float, text: str = "Late but here.") -> None:
        """Queue a reply that sends nothing at all for ``seconds`` (a timeout before the first token)."""
        self.add(SlowStartReply(seconds, TextReply(text)))

    def add_malformed(self, text_before: str = "", bad_chunk: bytes | None = None) -> None:
        """Queue a stream that sends ``text_before`` and then a malformed chunk (not JSON by default)."""
        self.add(MalformedReply(text_before, bad_chunk) if bad_chunk is not None else MalformedReply(text_before))

    def add_endless(self, delay: float = 0.01) -> None:
        """Queue a stream that never finishes: a word every ``delay`` seconds until the client hangs up."""
        self.add(EndlessReply(delay))

    def add_responder(self, fn: Responder | None) -> None:
        """Set the fallback used when the queue is empty (None restores the echo reply)."""
        with self._changed:
            self._responder = fn

    def reset(self) -> None:
        """Forget queued scripts, the responder, recorded requests and disconnects (for shared servers)."""
        with self._changed:
            self._scripts.clear()
            self._embedding_errors.clear()
            self._embedding_hangs.clear()
            self._requests.clear()
            self._responder = None
            self.disconnects = 0

    @property
    def pending(self) -> int:
        """How many queued scripts have not been consumed yet."""
        with self._changed:
            return len(self._scripts)

    # Inspection.

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._changed:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest | None:
        with self._changed:
            return self._requests[-1] if self._requests else None

    @property
    def last_messages(self) -> list[dict[str, Any]] | None:
        """The ``messages`` of the most recent chat completion request."""
        with self._changed:
            for request in reversed(self._requests):
                if request.path.endswith("/chat/completions") and isinstance(request.body, dict):
                    messages = request.body.get("messages")
                    return messages if isinstance(messages, list) else None
        return None

    def wait_for(self, predicate: Callable[[ScriptedModel], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate(self)`` holds (re-checked whenever a request or disconnect lands)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    # HTTP handlers, run on the server's own event loop.

    async def _record(self, request: Request) -> Any:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        with self._changed:
            self._requests.append(RecordedRequest(request.url.path, dict(request.headers.items()), body))
            self._changed.notify_all()
        return body

    def _note_disconnect(self) -> None:
        with self._changed:
            self.disconnects += 1
            self._changed.notify_all()

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        await self._record(request)
        status = getattr(exc, "status_code", 404)
        return _error_response(status, f"{request.method} {request.url.path} is not served here")

    async def _list_models(self, request: Request) -> Response:
        await self._record(request)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "scripted"} for m in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def _embeddings(self, request: Request) -> Response:
        body = await self._record(request)
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error_response(400, "the body must be JSON with a string 'model' and an 'input'")
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return _error_response(400, "'input' must be a string or a non-empty list of strings")
        with self._changed:
            error = self._embedding_errors.popleft() if self._embedding_errors else None
            hang = self._embedding_hangs.popleft() if self._embedding_hangs and error is None else None
        if error is not None:
            return _error_response(error.status, error.message)
        if hang is not None and await self._idle(hang, request.is_disconnected):
            self._note_disconnect()
            return Response(status_code=499)
        dimensions = int(body.get("dimensions") or EMBEDDING_DIMENSIONS)
        data = []
        for index, text in enumerate(texts):
            vector = toy_embedding(text, dimensions)
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(split_words(t)) for t in texts)
        return JSONResponse({
            "object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    async def _chat_completions(self, request: Request) -> Response:
        body = await self._record(request)
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) \
                or not isinstance(body.get("messages"), list):
            return _error_response(400, "the body must be JSON with a string 'model' and a list of 'messages'")
        with self._changed:
            script = self._scripts.popleft() if self._scripts else None
            responder = self._responder
        if script is None:
            answer = responder(body) if responder else echo_text(body)
            script = TextReply(answer) if isinstance(answer, str) else answer
        if isinstance(script, ErrorReply):
            return _error_response(script.status, script.message, script.error_type, script.code, script.headers)
        if isinstance(script, SlowStartReply):
            if await self._idle(script.seconds, request.is_disconnected):
                self._note_disconnect()
                return Response(status_code=499)
            script = script.then
        if body.get("stream"):
            return _EventStream(self._stream(script, body), self._note_disconnect)
        return await self._complete(script, body, request)

    async def _idle(self, seconds: float, gone: Callable[[], Awaitable[bool]] | None = None) -> bool:
        # Short naps let a hang end early when the server stops or a non-streaming client hangs up.
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0 and not self._stopping.is_set():
            if gone is not None and await gone():
                return True
            await asyncio.sleep(min(0.05, remaining))
        return False

    def _usage(self, plan: _Plan, body: Mapping[str, Any]) -> dict[str, int]:
        prompt = plan.prompt_tokens if plan.prompt_tokens is not None else _estimate_prompt_tokens(body)
        completion = plan.completion_tokens if plan.completion_tokens is not None else len(plan.deltas)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def _stream(self, script: Script, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"], "system_fingerprint": None}
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            # OpenAI puts "usage": null on every chunk once usage was asked for; clients may rely on it.
            return _sse({**head, "choices": [choice], **({"usage": None} if with_usage else {})})

        yield chunk({"role": "assistant", "content": ""})
        if isinstance(script, HangReply):
            for index, piece in enumerate(split_words(script.text_before)):
                if index and script.delay:
                    await asyncio.sleep(script.delay)
                yield chunk({"content": piece})
            await self._idle(script.seconds)
            plan = _Plan([{"content": script.text_before}], script.text_before)
        elif isinstance(script, StreamBreakReply):
            for piece in split_words(script.text_before):
                await asyncio.sleep(script.delay)
                yield chunk({"content": piece})
            raise _StreamBroken("scripted stream break")
        elif isinstance(script, MalformedReply):
            for piece in split_words(script.text_before):
                yield chunk({"content": piece})
            yield script.bad_chunk
            yield b"data: [DONE]\n\n"
            return
        elif isinstance(script, EndlessReply):
            words = itertools.cycle(split_words("and so on "))
            while True:
                await asyncio.sleep(script.delay)
                yield chunk({"content": next(words)})
        elif isinstance(script, StampReply):
            for _ in range(script.count):
                if script.delay:
                    await asyncio.sleep(script.delay)
                yield chunk({"content": f"{time.time():.6f} "})
            plan = _Plan([{"content": "x"}] * script.count, "")
        else:
            assert not isinstance(script, ErrorReply | SlowStartReply)
            plan = _plan(script)
            for delta in plan.deltas:
                if plan.delay:
                    await asyncio.sleep(plan.delay)
                yield chunk(delta)
        yield chunk({}, plan.finish_reason)
        if with_usage:
            yield _sse({**head, "choices": [], "usage": self._usage(plan, body)})
        yield b"data: [DONE]\n\n"

    async def _complete(self, script: Script, body: dict[str, Any], request: Request) -> Response:
        if isinstance(script, MalformedReply):
            return Response(b"{this is not json", media_type="application/json")
        if isinstance(script, EndlessReply):
            # A whole (unstreamed) answer that never ends is one that never comes.
            script = HangReply(3600)
        if isinstance(script, StampReply):
            script = TextReply(f"{time.time():.6f} " * script.count)
        if isinstance(script, StreamBreakReply):
            # Without a stream there is nothing to break halfway, so fail the way a provider would.
            return _error_response(500, "The scripted provider broke off the response.")
        if isinstance(script, HangReply):
            if await self._idle(script.seconds, request.is_disconnected):
                self._note_disconnect()
            plan = _Plan([{"content": script.text_before}], script.text_before)
        else:
            assert not isinstance(script, ErrorReply | SlowStartReply)
            plan = _plan(script)
            await asyncio.sleep(plan.delay * len(plan.deltas))
        message: dict[str, Any] = {"role": "assistant", "content": plan.content, "refusal": None}
        if plan.tool_calls:
            message["tool_calls"] = plan.tool_calls
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "finish_reason": plan.finish_reason, "logprobs": None}],
            "usage": self._usage(plan, body),
        })


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the echo responder until interrupted, for benchmarks and manual poking."""
    parser = argparse.ArgumentParser(description="Serve a scripted OpenAI-compatible model.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--chunks", type=int, default=0, help="emit the echo reply in N chunks (default: per word)")
    parser.add_argument("--stamps", type=int, default=0,
                        help="reply with N chunks, each the time it was sent (for load benchmarks)")
    args = parser.parse_args(argv)

    def respond(body: dict[str, Any]) -> Script:
        if args.stamps:
            return StampReply(args.stamps, args.delay)
        text = echo_text(body)
        return TextReply(text, split_evenly(text, args.chunks) if args.chunks > 0 else None, args.delay)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with ScriptedModel(host=args.host, port=args.port) as model:
        model.add_responder(respond)
        # The exact line below is what scripts wait for to know the server is ready.
        print(f"scripted model listening on {model.base_url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
