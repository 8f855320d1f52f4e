"""Server-side function tools: plain Python functions whose JSON schema comes from type hints.

    registry = FunctionRegistry()

    @registry.function
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
        '''Current weather for a city.'''

The engine runs registered functions itself (concurrently when the model asks for several at
once, each with a timeout). Whatever goes wrong (invalid JSON arguments, arguments that do not
match the schema, an exception, a timeout) becomes the tool's output, so the model can read it and
recover; the run itself goes on.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import ValidationError, create_model

ToolFunction = Callable[..., Any]


@dataclass(frozen=True)
class ToolResult:
    """The output string handed back to the model, and whether it reports an error."""

    output: str
    is_error: bool = False


@dataclass(frozen=True)
class RegisteredFunction:
    name: str
    description: str
    function: ToolFunction
    arguments_model: Any
    parameters: dict[str, Any]

    def definition(self) -> dict[str, Any]:
        """The `{"type": "function", "function": {...}}` tool definition."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def _schema_for(function: ToolFunction) -> tuple[Any, dict[str, Any]]:
    hints = get_type_hints(function)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        annotation = hints.get(name, str)
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (annotation, default)
    model = create_model(f"{function.__name__}_arguments", **fields)
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("required", [])
    return model, schema


class FunctionRegistry:
    """Named server-side functions."""

    def __init__(self) -> None:
        self._functions: dict[str, RegisteredFunction] = {}

    def function(self, fn: ToolFunction | None = None, *, name: str | None = None) -> Any:
        """Decorator: register `fn` (its docstring is the description the model reads)."""

        def register(target: ToolFunction) -> ToolFunction:
            tool_name = name or target.__name__
            model, schema = _schema_for(target)
            self._functions[tool_name] = RegisteredFunction(
                name=tool_name,
                description=inspect.cleandoc(target.__doc__ or "").strip(),
                function=target,
                arguments_model=model,
                parameters=schema,
            )
            return target

        return register(fn) if fn is not None else register

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def names(self) -> list[str]:
        return sorted(self._functions)

    def definitions(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        """Tool definitions for an assistant, for all or the named functions."""
        chosen = names if names is not None else self.names()
        return [self._functions[n].definition() for n in chosen if n in self._functions]

    async def call(self, name: str, arguments: str, *, time_limit: float) -> ToolResult:
        """Run one function; every failure is returned as an error result, never raised."""
        registered = self._functions.get(name)
        if registered is None:
            return ToolResult(f"Error: there is no tool named {name!r}.", is_error=True)
        try:
            raw = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            return ToolResult(f"Error: the arguments are not valid JSON ({exc.msg} at position {exc.pos}).", True)
        if not isinstance(raw, dict):
            return ToolResult("Error: the arguments must be a JSON object.", is_error=True)
        try:
            parsed = registered.arguments_model.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            return ToolResult(f"Error: invalid arguments: {problems}.", is_error=True)
        kwargs = {key: getattr(parsed, key) for key in type(parsed).model_fields}
        try:
            async with asyncio.timeout(time_limit):
                if inspect.iscoroutinefunction(registered.function):
                    result = await registered.function(**kwargs)
                else:
                    # Plain functions run in a worker thread so a slow one cannot stall every run.
                    result = await asyncio.to_thread(registered.function, **kwargs)
        except TimeoutError:
            return ToolResult(f"Error: the tool {name!r} timed out after {time_limit:g} seconds.", is_error=True)
        except Exception as exc:  # A tool's bug is reported to the model, not raised at the user.
            return ToolResult(f"Error: the tool {name!r} failed: {type(exc).__name__}: {exc}", is_error=True)
        return ToolResult(result if isinstance(result, str) else json.dumps(result, default=str))


default_registry = FunctionRegistry()
"""The registry the app and the `/v1` server use; `assistants.tools.examples` fills it."""


def function_tool(fn: ToolFunction) -> ToolFunction:
    """Register `fn` in the default registry."""
    registered: ToolFunction = default_registry.function(fn)
    return registered

