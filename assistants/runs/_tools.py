"""Phase 3 of a run: dispatch the model's tool calls.

Calls to functions the engine implements run here, concurrently, each with a timeout. Calls to
function tools the run declares but the engine does not implement are the client's: the run
pauses in `requires_action`. A call to a tool the run does not have is answered with an error the
model can read, and the run goes on.
"""

from __future__ import annotations

import asyncio

from ..tools import FunctionRegistry
from ..types import Run
from ..types.objects import FunctionTool
from ._stream import AccumulatedCall


async def dispatch(
    calls: list[AccumulatedCall], *, run: Run, registry: FunctionRegistry, time_limit: float
) -> tuple[dict[str, str], list[AccumulatedCall]]:
    """Run the server-side calls; return their outputs by call id, and the calls the client must answer."""
    declared = {tool.function.name for tool in run.tools if isinstance(tool, FunctionTool)}
    outputs: dict[str, str] = {}
    server: list[AccumulatedCall] = []
    client: list[AccumulatedCall] = []
    for call in calls:
        if call.name not in declared:
            available = ", ".join(sorted(declared)) or "none"
            outputs[call.id] = f"Error: there is no tool named {call.name!r}. Available tools: {available}."
        elif call.name in registry:
            server.append(call)
        else:
            client.append(call)
    results = await asyncio.gather(*(registry.call(c.name, c.arguments, time_limit=time_limit) for c in server))
    for call, result in zip(server, results, strict=True):
        outputs[call.id] = result.output
    return outputs, client
