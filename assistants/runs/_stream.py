"""Phase 2 of a run: accumulate streamed deltas into text and tool calls.

One small stateful class, keyed by tool-call index. Arguments stay strings while they stream; they
are parsed once, by the tool dispatcher, at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ids import new_id
from ..providers import ChatChunk


@dataclass
class AccumulatedCall:
    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class DeltaAccumulator:
    """Collects one completion: its text, its tool calls by index, its finish reason and usage."""

    text: str = ""
    refusal: str = ""
    calls: dict[int, AccumulatedCall] = field(default_factory=dict)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    chunks: int = 0

    def add(self, chunk: ChatChunk) -> list[AccumulatedCall]:
        """Fold in one chunk; returns the calls that this chunk started (for `step.created`)."""
        self.chunks += 1
        started: list[AccumulatedCall] = []
        if chunk.content:
            self.text += chunk.content
        if chunk.refusal:
            self.refusal += chunk.refusal
        for delta in chunk.tool_calls:
            call = self.calls.get(delta.index)
            if call is None:
                call = self.calls[delta.index] = AccumulatedCall(index=delta.index)
                started.append(call)
            if delta.id:
                call.id = delta.id
            if delta.name:
                call.name += delta.name
            if delta.arguments:
                call.arguments += delta.arguments
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if chunk.prompt_tokens is not None:
            self.prompt_tokens = chunk.prompt_tokens
        if chunk.completion_tokens is not None:
            self.completion_tokens = chunk.completion_tokens
        return started

    def tool_calls(self) -> list[AccumulatedCall]:
        """The finished calls in index order; providers that omit ids get OpenAI-style ones."""
        ordered = [self.calls[i] for i in sorted(self.calls)]
        for call in ordered:
            if not call.id:
                call.id = new_id("call")
        return ordered
