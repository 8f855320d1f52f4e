"""The store's public vocabulary: pages, list parameters, and the object-to-table map."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

from ..exceptions import InvalidRequestError

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class ListParams:
    """OpenAI's cursor pagination: `limit` 1-100, `order`, `after`, `before`."""

    limit: int = 20
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= 100:
            raise InvalidRequestError(
                f"Invalid 'limit': {self.limit} is out of range; it must be between 1 and 100.",
                param="limit",
            )
        if self.order not in ("asc", "desc"):
            raise InvalidRequestError(
                f"Invalid 'order': {self.order!r}; it must be 'asc' or 'desc'.", param="order"
            )


@dataclass
class Page(Generic[T]):
    """One page of a list, in OpenAI's list shape."""

    data: list[T]
    has_more: bool
    first_id: str | None = field(default=None)
    last_id: str | None = field(default=None)
