"""Assistants defined in `assistants.toml`, kept in step with the database and offered as chat profiles."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine import Engine
from .exceptions import ConfigurationError
from .store import ListParams
from .types import Assistant, Tool
from .types.objects import CodeInterpreterTool, FileSearchTool, FunctionDefinition, FunctionTool
from .types.requests import AssistantCreate, AssistantUpdate

CONFIG_FILE = Path(__file__).resolve().parent.parent / "assistants.toml"
PROFILE_KEY = "assistants.profile"
BUILT_IN_TOOLS = ("code_interpreter", "file_search")
"""Tools named in `assistants.toml` that are not functions."""
"""Metadata key that ties a user's copy of an assistant to its profile name."""


@dataclass(frozen=True)
class Starter:
    label: str
    message: str


@dataclass(frozen=True)
class Profile:
    """One assistant as the config file defines it."""

    name: str
    description: str
    instructions: str
    tools: tuple[str, ...]
    temperature: float | None = None
    model: str | None = None
    default: bool = False
    starters: tuple[Starter, ...] = field(default_factory=tuple)


def load_profiles(path: Path = CONFIG_FILE) -> list[Profile]:
    """Read and check the config file; a mistake names the entry and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"Cannot read {path}: {exc}") from exc
    profiles: list[Profile] = []
    for index, entry in enumerate(data.get("assistant", [])):
        where = f"{path.name}: assistant #{index + 1}"
        try:
            profiles.append(
                Profile(
                    name=str(entry["name"]),
                    description=str(entry.get("description", "")),
                    instructions=str(entry.get("instructions", "")),
                    tools=tuple(str(t) for t in entry.get("tools", [])),
                    temperature=float(entry["temperature"]) if "temperature" in entry else None,
                    model=str(entry["model"]) if "model" in entry else None,
                    default=bool(entry.get("default", False)),
                    starters=tuple(Starter(str(s["label"]), str(s["message"])) for s in entry.get("starters", [])),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"{where} is invalid: {exc!r}") from exc
    if not profiles:
        raise ConfigurationError(f"{path} defines no [[assistant]]")
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{path}: assistant names must be unique")
    return profiles


def _body(profile: Profile, engine: Engine, default_model: str) -> dict[str, Any]:
    functions = [t for t in profile.tools if t not in BUILT_IN_TOOLS]
    unknown = [t for t in functions if t not in engine.registry]
    if unknown:
        raise ConfigurationError(f"assistants.toml: {profile.name} names unknown tools {unknown}")
    tools: list[Tool] = [FunctionTool(function=FunctionDefinition(**d["function"])) for d in engine.registry.definitions(functions)]
    if "code_interpreter" in profile.tools:
        tools.append(CodeInterpreterTool())
    if "file_search" in profile.tools:
        tools.append(FileSearchTool())
    return {
        "model": profile.model or default_model,
        "name": profile.name,
        "description": profile.description,
        "instructions": profile.instructions,
        "tools": tools,
        "temperature": profile.temperature,
        "metadata": {PROFILE_KEY: profile.name},
    }


async def ensure_assistant(engine: Engine, owner: str, profile: Profile, default_model: str) -> Assistant:
    """The owner's copy of a profile's assistant, created or brought up to date with the config."""
    body = _body(profile, engine, default_model)
    page = await engine.list_assistants(owner, ListParams(limit=1), metadata={PROFILE_KEY: profile.name})
    if not page.data:
        return await engine.create_assistant(owner, AssistantCreate(**body))
    current = page.data[0]
    wanted = AssistantCreate(**body)
    if (
        current.model != wanted.model
        or current.instructions != wanted.instructions
        or current.description != wanted.description
        or current.temperature != wanted.temperature
        or [t.model_dump() for t in current.tools] != [t.model_dump() for t in wanted.tools]
    ):
        return await engine.update_assistant(owner, current.id, AssistantUpdate(**body))
    return current


def default_profile(profiles: list[Profile]) -> Profile:
    """The profile marked `default = true`, else the first."""
    return next((p for p in profiles if p.default), profiles[0])


async def sync_all_users(engine: Engine, default_model: str) -> None:
    """Bring every user's copies of the configured assistants up to date (run at start-up)."""
    profiles = load_profiles()
    async with engine.store.read() as tx:
        owners = await tx.user_ids()
    for owner in owners:
        for profile in profiles:
            await ensure_assistant(engine, owner, profile, default_model)
