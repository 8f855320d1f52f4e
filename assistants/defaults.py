"""The default assistant that the chat and the CLI talk to when nothing else is chosen."""

from __future__ import annotations

from .config import Settings
from .engine import Engine
from .store import ListParams
from .types import Assistant
from .types.objects import FunctionDefinition, FunctionTool
from .types.requests import AssistantCreate

DEFAULT_MARK = {"assistants.default": "true"}
FALLBACK_MODEL = "gpt-4o-mini"

DEFAULT_INSTRUCTIONS = (
    "You are a helpful assistant. Answer clearly and concisely. Use the calculate tool for any "
    "arithmetic and get_current_time when the user asks about the date or time."
)


async def ensure_default_assistant(engine: Engine, owner: str, settings: Settings) -> Assistant:
    """The owner's default assistant, created on first use with the example function tools."""
    page = await engine.list_assistants(owner, ListParams(limit=1), metadata=DEFAULT_MARK)
    if page.data:
        return page.data[0]
    tools = [
        FunctionTool(function=FunctionDefinition(**definition["function"]))
        for definition in engine.registry.definitions(["calculate", "get_current_time"])
    ]
    body = AssistantCreate(
        model=settings.assistants_model or FALLBACK_MODEL,
        name="Assistant",
        description="A general assistant with a calculator and a clock.",
        instructions=DEFAULT_INSTRUCTIONS,
        tools=tools,
        metadata=DEFAULT_MARK,
    )
    return await engine.create_assistant(owner, body)
