"""Split extracted text into overlapping chunks: the hosted file search `static` strategy.

A chunk holds at most `max_tokens` tokens and the next one starts about `overlap` tokens before
it ends, as OpenAI's `max_chunk_size_tokens` and `chunk_overlap_tokens` describe. Within the last
quarter of a window the cut moves back to the nearest paragraph break, else line or sentence end,
else space, so chunks read as whole passages and no word is cut unless it is longer than that.

The text is tokenized once and every chunk is a slice of those token offsets, which keeps
chunking linear in the text's length. Offsets are character offsets into the text given, so
`text[chunk.start:chunk.end] == chunk.text` always holds and citations can point back at it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from assistants.tokens import token_ends

MIN_CHUNK_TOKENS: Final = 100
"""The smallest `max_chunk_size_tokens` OpenAI accepts."""
MAX_CHUNK_TOKENS: Final = 4096
"""The largest `max_chunk_size_tokens` OpenAI accepts."""
DEFAULT_MAX_TOKENS: Final = 800
"""OpenAI's default `max_chunk_size_tokens` (the `auto` strategy)."""
DEFAULT_OVERLAP: Final = 400
"""OpenAI's default `chunk_overlap_tokens` (the `auto` strategy)."""

# How far back, in tokens, a chunk's start may move so that it does not begin inside a word.
_START_SNAP_TOKENS: Final = 16
# A sentence ends at one of these marks, possibly followed by closing quotes or brackets, and then
# whitespace; the cut goes right after the closing characters.
_SENTENCE_END: Final = re.compile(r"[.!?\u2026\u3002][\"'\u201d\u2019)\]]*(?=\s)")


@dataclass(frozen=True)
class Chunk:
    """One searchable piece of a file's text."""

    index: int
    """Position among the file's chunks, from 0."""
    text: str
    """The chunk's text, without leading or trailing whitespace."""
    start: int
    """Character offset in the chunked text where the chunk begins."""
    end: int
    """Character offset in the chunked text just after the chunk ends."""
    tokens: int
    """o200k tokens of the window the chunk was cut from (a token or two more than its text)."""


def validate_static_strategy(max_tokens: int, overlap: int) -> None:
    """Raise `ValueError` unless the sizes are ones OpenAI's `static` strategy accepts.

    `max_tokens` must be between 100 and 4096; `overlap` must be at least 0 and at most half of
    `max_tokens`.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise ValueError(f"max_chunk_size_tokens must be an integer, not {max_tokens!r}.")
    if isinstance(overlap, bool) or not isinstance(overlap, int):
        raise ValueError(f"chunk_overlap_tokens must be an integer, not {overlap!r}.")
    if not MIN_CHUNK_TOKENS <= max_tokens <= MAX_CHUNK_TOKENS:
        raise ValueError(
            f"max_chunk_size_tokens must be between {MIN_CHUNK_TOKENS} and {MAX_CHUNK_TOKENS}, "
            f"not {max_tokens}."
        )
    if overlap < 0:
        raise ValueError(f"chunk_overlap_tokens must not be negative, not {overlap}.")
    if overlap * 2 > max_tokens:
        raise ValueError(
            f"chunk_overlap_tokens must not exceed half of max_chunk_size_tokens "
            f"({max_tokens // 2}), not {overlap}."
        )


def chunk_text(
    text: str, *, max_tokens: int = DEFAULT_MAX_TOKENS, overlap: int = DEFAULT_OVERLAP
) -> list[Chunk]:
    """Cut `text` into chunks of at most `max_tokens` tokens overlapping by about `overlap`.

    Every non-whitespace character of `text` lies in at least one chunk; a text of only
    whitespace has none. Raises `ValueError` for sizes `validate_static_strategy` rejects.
    """
    validate_static_strategy(max_tokens, overlap)
    ends = token_ends(text)
    total = len(ends)
    # The preferred cut is searched in the last quarter of the window. Since the overlap is at
    # most half a window, the next chunk still starts after this one did.
    slack = max_tokens // 4
    chunks: list[Chunk] = []
    first = 0
    while first < total:
        stop = min(first + max_tokens, total)
        if stop < total:
            stop = _preferred_stop(text, ends, floor=stop - slack, stop=stop)
        begin = ends[first - 1] if first else 0
        piece = text[begin : ends[stop - 1]]
        stripped = piece.strip()
        if stripped:
            start = begin + len(piece) - len(piece.lstrip())
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=stripped,
                    start=start,
                    end=start + len(stripped),
                    tokens=stop - first,
                )
            )
        if stop == total:
            break
        first = _word_start(text, ends, stop - overlap, floor=first + 1) if overlap else stop
    return chunks


def _preferred_stop(text: str, ends: Sequence[int], *, floor: int, stop: int) -> int:
    """The token index to end a chunk at: the latest natural break after token `floor`."""
    low = ends[floor - 1]
    window = text[low : ends[stop - 1]]
    cut = window.rfind("\n\n")
    if cut >= 0:
        cut += 2
    else:
        sentence = max((match.end() for match in _SENTENCE_END.finditer(window)), default=0)
        cut = max(window.rfind("\n") + 1, sentence)
        if cut <= 0:
            # Cutting before the space keeps the next word whole: o200k puts a word's leading
            # space in the word's own token.
            cut = max(window.rfind(" "), window.rfind("\t"))
    if cut <= 0:
        return stop
    # End with the token holding the last character before the cut; that token may run on a
    # little past it (".\n" is one token), which is harmless.
    return bisect.bisect_left(ends, low + cut, floor, stop) + 1


def _word_start(text: str, ends: Sequence[int], first: int, *, floor: int) -> int:
    """`first`, or a token shortly before it, whose start is not inside a word."""
    for candidate in range(first, max(floor, first - _START_SNAP_TOKENS) - 1, -1):
        offset = ends[candidate - 1]
        if offset >= len(text) or not (text[offset - 1].isalnum() and text[offset].isalnum()):
            return candidate
    return first
