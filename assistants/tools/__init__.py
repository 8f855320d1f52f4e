"""Tools the engine can run itself. Any function tool without an implementation here is client-side."""

from .functions import FunctionRegistry, ToolResult, default_registry, function_tool

__all__ = ["FunctionRegistry", "ToolResult", "default_registry", "function_tool"]
