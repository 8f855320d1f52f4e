"""The execution plane: an OpenAI-compatible Chat Completions client, injected into the engine."""

from .chat import (
    ChatChunk,
    ChatProvider,
    OpenAIChatProvider,
    ToolCallDelta,
    UnconfiguredProvider,
    build_provider,
)

__all__ = ["ChatChunk", "ChatProvider", "OpenAIChatProvider", "ToolCallDelta", "UnconfiguredProvider", "build_provider"]
