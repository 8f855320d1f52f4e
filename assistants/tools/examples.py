"""Two useful example tools, enabled on the default assistant."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .functions import function_tool

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_NAMES = {"pi": math.pi, "e": math.e, "tau": math.tau}
_FUNCTIONS: dict[str, Callable[..., float]] = {name: getattr(math, name) for name in ("sqrt", "log", "log10", "exp", "sin", "cos", "tan", "floor", "ceil")}
_FUNCTIONS.update(abs=abs, round=round)


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 1000:
            raise ValueError("exponent too large")
        return float(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return float(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords:
        return float(_FUNCTIONS[node.func.id](*[_evaluate(arg) for arg in node.args]))
    raise ValueError(f"unsupported expression element: {ast.dump(node)[:60]}")


@function_tool
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. "(17.5 * 3) / 2 + sqrt(16)".

    Supports + - * / // % **, parentheses, pi, e, and sqrt, log, log10, exp, sin, cos, tan,
    floor, ceil, abs, round.
    """
    value = _evaluate(ast.parse(expression, mode="eval"))
    return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


@function_tool
def get_current_time(timezone: str = "UTC") -> str:
    """The current date and time in an IANA time zone such as "Europe/Paris" or "UTC"."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {timezone!r}; use an IANA name like 'Europe/Paris'") from exc
    return datetime.now(zone).isoformat(timespec="seconds")
