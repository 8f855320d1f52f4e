"""Attribute filters for vector store search (`filters` on `POST /v1/vector_stores/{id}/search`).

A filter is a comparison, `{"type": "eq", "key": "author", "value": "Ann"}` with `type` one of
`eq ne gt gte lt lte in nin`, or a compound, `{"type": "and" | "or", "filters": [...]}`, nested
to any depth up to `MAX_DEPTH`. It is checked against each file's `attributes`:

- `eq` / `ne` compare values of the same kind (a string never equals a number); `in` / `nin`
  take a list and test membership the same way.
- `gt gte lt lte` compare numbers with numbers and strings with strings (so ISO dates order
  correctly); a boolean, or values of different kinds, never match.
- A file without the attribute matches only `ne` and `nin`.

`parse_filter` turns the request's JSON into a `Filter`, or raises `InvalidRequestError` naming
the offending part (`filters.filters[1].value`) and why.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..exceptions import InvalidRequestError

MAX_DEPTH = 8
"""Compound filters nest at most this deep."""
MAX_FILTERS = 100
"""At most this many comparisons in one filter."""
COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
COMPOUNDS = ("and", "or")
_ORDER: dict[str, Callable[[Any, Any], bool]] = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Comparison:
    type: str
    key: str
    value: Scalar | tuple[str | int | float, ...]

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        if self.key not in attributes:
            return self.type in ("ne", "nin")
        found = attributes[self.key]
        if self.type in ("eq", "ne"):
            return _same(found, self.value) == (self.type == "eq")
        if self.type in ("in", "nin"):
            assert isinstance(self.value, tuple)
            return any(_same(found, option) for option in self.value) == (self.type == "in")
        if _kind(found) != _kind(self.value) or _kind(found) not in ("number", "string"):
            return False
        return _ORDER[self.type](found, self.value)


@dataclass(frozen=True)
class Compound:
    type: str
    filters: tuple[Filter, ...]

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        results = (f.matches(attributes) for f in self.filters)
        return all(results) if self.type == "and" else any(results)


Filter = Comparison | Compound


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else "other"


def _same(found: Any, wanted: Any) -> bool:
    return _kind(found) == _kind(wanted) and found == wanted


def parse_filter(raw: Any, path: str = "filters") -> Filter:
    """The request's `filters` as a `Filter`; raises `InvalidRequestError` naming what is wrong."""
    counter = [0]
    return _parse(raw, path, 1, counter)


def _parse(raw: Any, path: str, depth: int, counter: list[int]) -> Filter:
    if not isinstance(raw, dict):
        raise _invalid(path, "a filter must be an object with a 'type'")
    kind = raw.get("type")
    if kind in COMPOUNDS:
        _no_extra(raw, path, {"type", "filters"})
        if depth >= MAX_DEPTH:
            raise _invalid(path, f"filters nest at most {MAX_DEPTH} levels deep")
        items = raw.get("filters")
        if not isinstance(items, list) or not items:
            raise _invalid(f"{path}.filters", f"an '{kind}' filter needs a non-empty list of filters")
        return Compound(kind, tuple(_parse(item, f"{path}.filters[{i}]", depth + 1, counter) for i, item in enumerate(items)))
    if kind not in COMPARISONS:
        raise _invalid(f"{path}.type", f"must be one of {', '.join(COMPARISONS + COMPOUNDS)}, not {kind!r}")
    _no_extra(raw, path, {"type", "key", "value"})
    counter[0] += 1
    if counter[0] > MAX_FILTERS:
        raise _invalid(path, f"a filter may hold at most {MAX_FILTERS} comparisons")
    key = raw.get("key")
    if not isinstance(key, str) or not key:
        raise _invalid(f"{path}.key", "must be a non-empty string naming an attribute")
    if "value" not in raw:
        raise _invalid(f"{path}.value", "is required")
    value = raw["value"]
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not value or not all(_kind(v) in ("string", "number") for v in value):
            raise _invalid(f"{path}.value", f"'{kind}' needs a non-empty list of strings or numbers")
        return Comparison(kind, key, tuple(value))
    if _kind(value) == "other":
        raise _invalid(f"{path}.value", f"'{kind}' needs a string, number or boolean")
    if kind in _ORDER and _kind(value) == "boolean":
        raise _invalid(f"{path}.value", f"'{kind}' compares numbers or strings, not booleans")
    return Comparison(kind, key, value)


def _no_extra(raw: dict[str, Any], path: str, allowed: set[str]) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise _invalid(f"{path}.{extra[0]}", f"is not a field of a '{raw['type']}' filter")


def _invalid(path: str, reason: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid '{path}': {reason}.", param=path)
