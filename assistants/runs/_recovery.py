"""Rebuild a run's own conversation (its messages and tool round trips) from its stored steps.

This is what lets a run pause in `requires_action`, or move to another process, and resume
with exactly what the model saw: the store is the only memory a run has.
"""

from __future__ import annotations

from typing import Any

from ..store import StoreTx
from ..types import Message, RunStep
from ..types.objects import MessageCreationDetails, ToolCallsDetails


async def rebuild_tail(tx: StoreTx, steps: list[RunStep]) -> tuple[list[dict[str, Any]], int]:
    """The chat messages this run has produced so far, and how many tool rounds it has done."""
    tail: list[dict[str, Any]] = []
    rounds = 0
    for step in steps:
        details = step.step_details
        if isinstance(details, MessageCreationDetails):
            message = await tx.find(Message, details.message_creation.message_id, owner=None)
            if message is not None and message.text:
                tail.append({"role": "assistant", "content": message.text})
        elif isinstance(details, ToolCallsDetails) and details.tool_calls:
            rounds += 1
            # Text and tool calls from one completion were one assistant turn: merge them back.
            text = None
            if tail and tail[-1]["role"] == "assistant" and "tool_calls" not in tail[-1]:
                text = tail.pop()["content"]
            tail.extend(tool_round(text, step))
    return tail, rounds


def tool_round(text: str | None, step: RunStep) -> list[dict[str, Any]]:
    """The assistant turn that made a step's tool calls, and one `tool` message per result."""
    details = step.step_details
    assert isinstance(details, ToolCallsDetails)
    turn = {"role": "assistant", "content": text or None, "tool_calls": [c.model_call() for c in details.tool_calls]}
    return [turn, *({"role": "tool", "tool_call_id": c.id, "content": c.model_output()} for c in details.tool_calls)]
