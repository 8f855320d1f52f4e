"""What a run's built-in tools work on: the ids its assistant and thread name in `tool_resources`."""

from __future__ import annotations

from ..store import StoreTx
from ..types import Assistant, Run, Thread


async def resource_ids(tx: StoreTx, owner: str, run: Run, tool: str, key: str) -> list[str]:
    """`tool_resources[tool][key]` of the run's assistant, then of its thread, without repeats."""
    assistant = await tx.find(Assistant, run.assistant_id, owner=owner)
    thread = await tx.get(Thread, run.thread_id, owner=owner)
    ids: list[str] = []
    for resources in (assistant.tool_resources if assistant else None, thread.tool_resources):
        ids.extend(((resources or {}).get(tool) or {}).get(key) or [])
    return list(dict.fromkeys(ids))
