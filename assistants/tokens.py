"""Token counting with the o200k_base encoding (shipped inside bpe-openai, so it works offline).

Counts are estimates for non-OpenAI models, which is all context trimming needs: a consistent
measure that tracks what the provider will bill.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any

import bpe_openai

MESSAGE_OVERHEAD = 3
"""Tokens a chat format adds around each message (role and separators)."""
REPLY_PRIMING = 3
"""Tokens that prime the assistant's reply."""


@functools.cache
def _encoding() -> Any:
    return bpe_openai.get_encoding("o200k_base")


def count_text(text: str) -> int:
    """Tokens in a string."""
    if not text:
        return 0
    return len(_encoding().encode(text))


def count_message(message: Mapping[str, Any]) -> int:
    """Tokens of one chat message, content parts and tool calls included."""
    total = MESSAGE_OVERHEAD
    content = message.get("content")
    if isinstance(content, str):
        total += count_text(content)
    elif isinstance(content, list):
        for part in content:
            if part.get("type") == "text":
                total += count_text(part.get("text", ""))
            else:
                # Images cost a provider-specific amount; 85 is OpenAI's low-detail figure.
                total += 85
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        total += count_text(function.get("name", "")) + count_text(function.get("arguments", "")) + 3
    return total


def count_messages(messages: Iterable[Mapping[str, Any]]) -> int:
    """Tokens of a whole prompt."""
    return sum(count_message(m) for m in messages) + REPLY_PRIMING


def count_tools(tools: Iterable[Mapping[str, Any]]) -> int:
    """Tokens the tool definitions add to a prompt."""
    return sum(count_text(json.dumps(tool, separators=(",", ":"))) for tool in tools)
