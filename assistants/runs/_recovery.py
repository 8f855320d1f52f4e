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
            calls = [
                {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                for c in details.tool_calls
            ]
            # Text and tool calls from one completion were one assistant turn: merge them back.
            if tail and tail[-1]["role"] == "assistant" and "tool_calls" not in tail[-1]:
                tail[-1] = {**tail[-1], "tool_calls": calls}
            else:
                tail.append({"role": "assistant", "content": None, "tool_calls": calls})
            tail.extend(
                {"role": "tool", "tool_call_id": c.id, "content": c.function.output or ""} for c in details.tool_calls
            )
    return tail, rounds
