"""The file search tool: the model searches the vector stores of its assistant and thread.

Chat Completions models have no built-in file search, so it is offered as a function,
`file_search(query)`. Its calls are stored and streamed with the Assistants shape
(`type: "file_search"`, `results` with `file_id`, `file_name`, `score` and the passage). Each
result carries a citation marker, `[n]`, numbered through the whole run; an answer that cites a
marker gets a `file_citation` annotation pointing at the file; markers in Markdown code are not
citations. The answer's text is stored as the model streamed it (its deltas add up to it), so
grouped markers such as `[1, 2]` stay as written, without citations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import ExpiredVectorStoreError
from ..ids import now
from ..search import ChunkIndex
from ..store import SqlStore, StoreTx
from ..types import Message, Run, RunStep, TextContent, VectorStore
from ..types.objects import (
    FILE_SEARCH_FUNCTION,
    FileSearchCall,
    FileSearchRanking,
    FileSearchResult,
    FileSearchResultText,
    FileSearchTool,
    FileSearchToolCall,
    ToolCallsDetails,
)
from .resources import resource_ids

DESCRIPTION = (
    "Search the files attached to this conversation and this assistant for passages relevant to a "
    "query. Each passage comes with a marker such as [1]; when you use a passage in your answer, "
    "cite it by writing its marker right after the statement it supports."
)
DEFAULT_MAX_RESULTS = 20
_MARKER = re.compile(r"\[(\d{1,4})\]")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_TICKS = re.compile(r"`+")


def definition() -> dict[str, Any]:
    """The function definition offered to the model."""
    return {
        "type": "function",
        "function": {
            "name": FILE_SEARCH_FUNCTION,
            "description": DESCRIPTION,
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What to look for, in a few words."}},
                "required": ["query"],
            },
        },
    }


def parse_query(arguments: str) -> str | None:
    """The query from the call's JSON arguments, or None when the model sent something else."""
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return None
    query = parsed.get("query") if isinstance(parsed, dict) else None
    return query if isinstance(query, str) else None


def options(run: Run) -> tuple[int, float]:
    """`max_num_results` and the score threshold the run's file_search tool asks for."""
    tool = next((t for t in run.tools if isinstance(t, FileSearchTool)), None)
    settings = (tool.file_search if tool else None) or {}
    # Requests are checked against the spec's ranges; rows stored before that was so are read
    # leniently: a value out of range is brought into it, one of another type is left out.
    ranking = settings.get("ranking_options")
    limit, threshold = settings.get("max_num_results"), ranking.get("score_threshold") if isinstance(ranking, dict) else None
    limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else DEFAULT_MAX_RESULTS
    threshold = float(threshold) if isinstance(threshold, int | float) and not isinstance(threshold, bool) else 0.0
    return min(limit, 50), max(0.0, min(threshold, 1.0))


async def store_ids(tx: StoreTx, owner: str, run: Run) -> list[str]:
    """The vector stores the run searches: its assistant's and its thread's.

    Raises `ExpiredVectorStoreError` when one of them has expired: as on the hosted API, the run
    fails, saying which store and what to do.
    """
    ids = await resource_ids(tx, owner, run, "file_search", "vector_store_ids")
    stamp = now()
    for vector_store_id in ids:
        store = await tx.find(VectorStore, vector_store_id, owner=owner)
        if store is not None and store.expired(stamp):
            raise ExpiredVectorStoreError(store.expired_message())
    return ids


INGESTION_WAIT_SECONDS = 60.0
"""How long a search waits for files of its stores that are still being indexed."""


class FileSearch:
    """Runs the model's searches over the owner's chunk index."""

    def __init__(
        self,
        store: SqlStore,
        index: ChunkIndex,
        ready: Callable[[list[str]], Awaitable[None]],
        touch: Callable[[str, list[str]], Awaitable[None]],
    ) -> None:
        self.store = store
        self.index = index
        self._ready = ready
        self._touch = touch

    async def used(self, owner: str, vector_stores: list[str]) -> None:
        """A run starts (or goes on) with these stores: as on the hosted API that is activity,
        which pushes back their `expires_after` expiry, whether or not the model searches them."""
        if vector_stores:
            await self._touch(owner, vector_stores)

    async def ready(self, vector_stores: list[str]) -> None:
        """Wait, within a bound, until the stores have no file still being indexed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(INGESTION_WAIT_SECONDS):
                await self._ready(vector_stores)

    async def search(
        self, owner: str, vector_stores: Sequence[str], query: str, *, limit: int, threshold: float, first_marker: int
    ) -> FileSearchCall:
        hits = await self.index.search(owner, vector_stores, query, limit=limit, score_threshold=threshold) if query.strip() else []
        # Being searched is activity: it pushes back the stores' `expires_after` expiry.
        await self._touch(owner, list(vector_stores))
        async with self.store.read() as tx:
            files = await tx.files_by_id(list({h.file_id for h in hits}), owner=owner)
        results = [
            FileSearchResult(
                file_id=hit.file_id,
                file_name=files[hit.file_id].filename if hit.file_id in files else hit.file_id,
                score=round(hit.score, 4),
                content=[FileSearchResultText(text=hit.text)],
            )
            for hit in hits
        ]
        return FileSearchCall(
            ranking_options=FileSearchRanking(score_threshold=threshold),
            results=results,
            query=query,
            first_marker=first_marker,
        )


def _code_spans(text: str) -> list[tuple[int, int]]:
    """Where the Markdown text has code: fenced blocks (to their closing fence, or the end) and
    inline code spans (a run of backticks up to the next run of the same length)."""
    spans: list[tuple[int, int]] = []
    prose: list[tuple[int, int]] = []
    fence, fence_start, prose_start, position = "", 0, 0, 0
    for line in text.splitlines(keepends=True):
        opened = _FENCE.match(line)
        if not fence:
            # A backtick fence's info string may not hold backticks (then it is inline code).
            if opened and not (opened.group(1)[0] == "`" and "`" in line[opened.end() :]):
                prose.append((prose_start, position))
                fence, fence_start = opened.group(1), position
        elif opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence) and not line[opened.end() :].strip():
            spans.append((fence_start, position + len(line)))
            fence, prose_start = "", position + len(line)
        position += len(line)
    if fence:
        spans.append((fence_start, len(text)))
    else:
        prose.append((prose_start, len(text)))
    for start, end in prose:
        at = start
        while (ticks := _TICKS.search(text, at, end)) is not None:
            closing = re.compile(rf"(?<!`)`{{{len(ticks.group(0))}}}(?!`)").search(text, ticks.end(), end)
            if closing is None:
                at = ticks.end()  # Backticks without their match are plain text.
                continue
            spans.append((ticks.start(), closing.end()))
            at = closing.end()
    return spans


def _in_code(spans: list[tuple[int, int]], position: int) -> bool:
    return any(start <= position < end for start, end in spans)


def file_citations(text: str, cited: dict[int, str]) -> list[dict[str, object]]:
    """`file_citation` annotations for the `[n]` markers in an answer that name a result of the run
    (not those in Markdown code: `items[1]` in a code block is not a citation)."""
    annotations: list[dict[str, object]] = []
    code = _code_spans(text)
    for match in _MARKER.finditer(text):
        if _in_code(code, match.start()):
            continue
        file_id = cited.get(int(match.group(1)))
        if file_id is not None:
            annotations.append(
                {
                    "type": "file_citation",
                    "text": match.group(0),
                    "start_index": match.start(),
                    "end_index": match.end(),
                    "file_citation": {"file_id": file_id},
                }
            )
    return annotations


@dataclass(frozen=True)
class Citation:
    """What an answer's `[n]` marker cites: the passage a search of its run found, and its file."""

    marker: int
    file_id: str
    file_name: str
    score: float
    query: str
    passage: str


def cited_markers(message: Message) -> dict[int, str]:
    """The markers an answer cites (`file_citation` annotations), with the file each points at."""
    cited: dict[int, str] = {}
    for part in message.content:
        if isinstance(part, TextContent):
            for note in part.text.annotations:
                match = _MARKER.fullmatch(str(note.get("text", "")))
                if note.get("type") == "file_citation" and match:
                    cited[int(match.group(1))] = str(note["file_citation"]["file_id"])
    return cited


def find_citation(message: Message, steps: Sequence[RunStep], marker: int) -> Citation | None:
    """The passage behind marker `[marker]` of an answer, from the searches of the run that wrote it."""
    file_id = cited_markers(message).get(marker)
    if file_id is None:
        return None
    for step in steps:
        if not isinstance(step.step_details, ToolCallsDetails):
            continue
        for call in step.step_details.tool_calls:
            if not isinstance(call, FileSearchToolCall):
                continue
            search = call.file_search
            position = marker - search.first_marker
            if 0 <= position < len(search.results) and search.results[position].file_id == file_id:
                result = search.results[position]
                return Citation(
                    marker=marker,
                    file_id=file_id,
                    file_name=result.file_name,
                    score=result.score,
                    query=search.query,
                    passage="".join(p.text for p in result.content or []),
                )
    return None
