"""Chat Completions providers behind one small async protocol.

`OpenAIChatProvider` wraps an injected `openai.AsyncOpenAI` client and translates its exceptions
into our `ProviderError` tree at this boundary, so run logic never sees an `openai` exception.
Retries belong to the run engine (it must not retry once tokens have reached the user), so the
client is built with `max_retries=0`. Its HTTP transport is the SDK's aiohttp one
(`openai.DefaultAioHttpClient`): reading a streamed answer costs the event loop about a fifth less
per token than through httpx2 and anyio.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import aiohttp
import openai
from openai.types.chat import ChatCompletion

from ..config import Settings
from ..exceptions import (
    ConfigurationError,
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimitError,
)


@dataclass
class ToolCallDelta:
    """One fragment of a streamed tool call; `index` says which call it extends."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


@dataclass
class ChatChunk:
    """One streamed chunk, reduced to what the engine uses."""

    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ChatProvider(Protocol):
    """What the engine needs from a model provider."""

    def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        """Stream a chat completion for `request` (the Chat Completions body, minus `stream`)."""
        ...

    async def complete(self, request: dict[str, Any]) -> str:
        """A whole (non-streamed) completion's text, for internal calls such as summaries."""
        ...

    async def list_models(self) -> list[str]:
        """The provider's model ids, or an empty list when it has no listing."""
        ...


def _http_modules() -> list[ModuleType]:
    """The HTTP libraries the SDK may raise from: `httpx2` (openai 3.x) and/or `httpx` (earlier)."""
    found = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            continue
    return found


_HTTP = _http_modules()
HTTP_ERRORS: tuple[type[Exception], ...] = tuple(m.HTTPError for m in _HTTP)
"""Transport errors that can escape the SDK mid-stream (a dropped connection, say)."""
TIMEOUT_ERRORS: tuple[type[Exception], ...] = tuple(m.TimeoutException for m in _HTTP)
_SDK_ERRORS: tuple[type[Exception], ...] = (openai.OpenAIError, *HTTP_ERRORS)
MALFORMED_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, AttributeError, KeyError, IndexError)
"""What a chunk that is not JSON, or JSON of another shape, raises while it is decoded or read."""


def _retry_after(response: Any) -> float | None:
    if response is None:
        return None
    value = response.headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _detail(message: str) -> str:
    """The provider's own words, without the SDK's "Error code: 500 - " prefix."""
    return re.sub(r"^Error code: \d+ - ", "", message)


def _refused(exc: BaseException) -> bool:
    """Whether the SDK's timeout error stands for a connection that failed at once: the aiohttp
    transport reports every `aiohttp.ClientConnectionError` (a refused connection, a server that
    hung up) as `ConnectTimeout`. Its own timeouts stay timeouts."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, aiohttp.ClientConnectionError):
            return not isinstance(cause, TimeoutError)
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def translate_error(exc: Exception) -> ProviderError:
    """Turn an `openai`/`httpx` exception into our provider error, with words for the user."""
    if isinstance(exc, openai.RateLimitError):
        return ProviderRateLimitError(
            "The model provider is rate-limiting requests (HTTP 429). Wait a moment and try again.",
            retry_after=_retry_after(exc.response),
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderError(
            f"The model provider rejected the credentials (HTTP {exc.status_code}). Check OPENAI_API_KEY.",
            retryable=False,
        )
    if isinstance(exc, openai.NotFoundError):
        return ProviderError(
            f"The model provider does not know this model or endpoint (HTTP 404): {_detail(exc.message)}. "
            "Check ASSISTANTS_MODEL and OPENAI_BASE_URL.",
            retryable=False,
        )
    if isinstance(exc, openai.APIStatusError):
        retryable = exc.status_code >= 500 or exc.status_code in (408, 409)
        error = ProviderError(
            f"The model provider returned HTTP {exc.status_code}: {_detail(exc.message)}",
            retry_after=_retry_after(exc.response),
            retryable=retryable,
        )
        if exc.status_code == 400:
            error.code = "invalid_prompt"
        return error
    if isinstance(exc, (openai.APITimeoutError, *TIMEOUT_ERRORS)) and not _refused(exc):
        return ProviderConnectionError("The model provider did not answer in time. Try again later.")
    if isinstance(exc, (openai.APIConnectionError, *HTTP_ERRORS)):
        return ProviderConnectionError(
            "The model provider could not be reached or dropped the connection. "
            "Check OPENAI_BASE_URL and that the provider is running."
        )
    return ProviderError(f"The model provider failed: {exc}")


class OpenAIChatProvider:
    """A provider over `openai.AsyncOpenAI(...).chat.completions` with streaming."""

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        body = dict(request)
        body["stream"] = True
        body.setdefault("stream_options", {"include_usage": True})
        try:
            # The body is already plain JSON: posting it directly skips the SDK's per-message typed
            # transform, which costs ~0.25 ms per message and blocks the event loop on long threads.
            # Chunks come back as the JSON the provider sent (`AsyncStream[object]`), still decoded
            # and checked for in-stream errors by the SDK: building a typed `ChatCompletionChunk`
            # per token cost about as much as everything else the engine does with the token.
            stream = await self.client.post(
                "/chat/completions",
                body=body,
                cast_to=ChatCompletion,
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
        except _SDK_ERRORS as exc:
            raise translate_error(exc) from exc
        # `async with` closes the HTTP response when the consumer stops early (cancel), which
        # is what tells the provider to stop generating.
        async with stream:
            try:
                async for chunk in stream:
                    yield _reduce(chunk)
            except _SDK_ERRORS as exc:
                raise translate_error(exc) from exc
            except MALFORMED_ERRORS as exc:
                # Not JSON, or JSON of the wrong shape: the provider broke the protocol.
                raise ProviderError(
                    f"The model provider sent a malformed response ({type(exc).__name__}: {str(exc)[:200]}). "
                    "Check that OPENAI_BASE_URL points at an OpenAI-compatible Chat Completions API."
                ) from exc

    async def complete(self, request: dict[str, Any]) -> str:
        try:
            response = await self.client.post(
                "/chat/completions", body={**request, "stream": False}, cast_to=ChatCompletion
            )
        except _SDK_ERRORS as exc:
            raise translate_error(exc) from exc
        except MALFORMED_ERRORS as exc:
            raise ProviderError(f"The model provider sent a malformed response ({type(exc).__name__}).") from exc
        if not response.choices:
            return ""
        return response.choices[0].message.content or ""

    async def close(self) -> None:
        """Close the client's connections (its aiohttp session)."""
        await self.client.close()

    async def list_models(self) -> list[str]:
        try:
            page = await self.client.models.list()
        except _SDK_ERRORS:
            return []
        return sorted(model.id for model in page.data)


def _reduce(chunk: object) -> ChatChunk:
    """One chunk's JSON (`chat.completion.chunk`) reduced to a `ChatChunk`.

    Anything of another shape raises one of `MALFORMED_ERRORS`, which the stream reports as a
    malformed response.
    """
    if not isinstance(chunk, dict):
        raise TypeError(f"a chunk is {type(chunk).__name__}, not an object")
    result = ChatChunk()
    usage = chunk.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise TypeError("`usage` is not an object")
        result.prompt_tokens = _count(usage.get("prompt_tokens"))
        result.completion_tokens = _count(usage.get("completion_tokens"))
    choices = chunk.get("choices")
    if not choices:
        return result
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise TypeError("`choices` is not a list of objects")
    choice = choices[0]
    result.finish_reason = _text(choice.get("finish_reason"))
    delta = choice.get("delta")
    if delta is None:
        return result
    if not isinstance(delta, dict):
        raise TypeError("`delta` is not an object")
    result.content = _text(delta.get("content"))
    result.refusal = _text(delta.get("refusal"))
    for call in delta.get("tool_calls") or ():
        function = call.get("function")
        if function is not None and not isinstance(function, dict):
            raise TypeError("a tool call's `function` is not an object")
        index = call["index"]
        if not isinstance(index, int):
            raise TypeError("a tool call's `index` is not an integer")
        result.tool_calls.append(
            ToolCallDelta(
                index=index,
                id=_text(call.get("id")),
                name=_text(function.get("name")) if function else None,
                arguments=_text(function.get("arguments")) if function else None,
            )
        )
    return result


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _count(value: object) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TypeError(f"expected a token count, got {type(value).__name__}")


class UnconfiguredProvider:
    """Stands in when no provider is configured: the app starts, and each run fails at once, saying why."""

    MESSAGE = (
        "No model provider is configured. Set OPENAI_BASE_URL (for example http://localhost:11434/v1 "
        "for Ollama) and/or OPENAI_API_KEY, and ASSISTANTS_MODEL, then restart the server."
    )

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        raise ConfigurationError(self.MESSAGE)
        yield ChatChunk()  # pragma: no cover - makes this function an async generator.

    async def complete(self, request: dict[str, Any]) -> str:
        raise ConfigurationError(self.MESSAGE)

    async def list_models(self) -> list[str]:
        return []

    async def close(self) -> None:
        """Nothing to release."""


def build_provider(settings: Settings) -> OpenAIChatProvider | UnconfiguredProvider:
    """The provider the settings describe. Called once at start-up, never inside run logic."""
    if not settings.provider_configured:
        return UnconfiguredProvider()
    client = openai.AsyncOpenAI(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key or "not-needed",
        max_retries=0,
        timeout=settings.provider_timeout_seconds,
        http_client=openai.DefaultAioHttpClient(),
    )
    return OpenAIChatProvider(client)
