"""Token counting with the o200k_base encoding (shipped inside bpe-openai, so it works offline).

Counts are estimates for non-OpenAI models, which is all context trimming needs: a consistent
measure that tracks what the provider will bill.
"""

from __future__ import annotations

import functools
import json
import re
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

import bpe_openai
import numpy as np

MESSAGE_OVERHEAD = 3
"""Tokens a chat format adds around each message (role and separators)."""
REPLY_PRIMING = 3
"""Tokens that prime the assistant's reply."""


@functools.cache
def _encoding() -> Any:
    return bpe_openai.get_encoding("o200k_base")


def count_text(text: str) -> int:
    """Tokens in a string; special-token spellings a user typed count as ordinary text."""
    if not text:
        return 0
    if len(text) <= _SEGMENT_CHARS and not _SURROGATE.search(text):
        return len(_encoding().encode_ordinary(text))
    # Very long texts (the tokenizer refuses a million characters) go in segments.
    return len(token_ends(text))


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


_SEGMENT_CHARS = 40_000
"""Characters encoded per tokenizer call. bpe-openai refuses inputs of a million characters or
200,000 tokens; a character is at most four UTF-8 bytes, so at most four tokens, which keeps a
segment of this size under both limits whatever the text."""
_CONTINUATION_BYTES = bytes(range(0x80, 0xC0))
_SURROGATE = re.compile("[\ud800-\udfff]")


@functools.cache
def _chars_started() -> np.ndarray:
    # A token's bytes may end in the middle of a character. Counting only the bytes that start a
    # character (every byte but UTF-8 continuation bytes) gives each character to the token
    # holding its first byte, so the running sum is always a valid index into the string.
    encoding = _encoding()
    table = np.zeros(encoding.max_token_value + 1, dtype=np.int64)
    for token in range(table.size):
        try:
            raw: bytes = encoding.decode_single_token_bytes(token)
        except KeyError:
            raw = b""
        table[token] = len(raw.translate(None, _CONTINUATION_BYTES))
    return table


def token_ends(text: str) -> array[int]:
    """The character offset in `text` at which each of its tokens ends.

    `len(result)` is the token count and `result[-1] == len(text)`, so `text[ends[i - 1]:ends[j]]`
    is exactly the text of tokens `i..j`. Special-token spellings such as `<|endoftext|>` count
    as ordinary text, and texts of any length work: they are encoded in segments cut at
    whitespace, which can differ from a single pass by a token at each cut.
    """
    ends = array("q")
    if not text:
        return ends
    # Lone surrogates cannot be encoded as UTF-8; replacing each with one U+FFFD keeps every
    # offset valid for the original string.
    clean = _SURROGATE.sub("\ufffd", text)
    table = _chars_started()
    encoding = _encoding()
    position = 0
    while position < len(clean):
        stop = _segment_stop(clean, position)
        tokens = np.asarray(encoding.encode_ordinary(clean[position:stop]), dtype=np.int64)
        running = np.cumsum(table[tokens])
        running += position
        ends.frombytes(running.tobytes())
        position = stop
    return ends


def _segment_stop(text: str, start: int) -> int:
    limit = start + _SEGMENT_CHARS
    if limit >= len(text):
        return len(text)
    # Cut just before whitespace in the second half of the segment, where the tokenizer would
    # have started a new token anyway; a hard cut is only for text without any whitespace.
    half = start + _SEGMENT_CHARS // 2
    for separator in ("\n", " "):
        cut = text.rfind(separator, half, limit)
        if cut > start:
            return cut
    return limit
