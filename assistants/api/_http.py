"""HTTP plumbing for `/v1`: body and query parsing with named errors, auth, OpenAI error shape, SSE."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from ..events import Event, Subscription
from ..exceptions import AuthenticationError, InvalidRequestError, RequestError
from ..runtime import Runtime
from ..store import ListParams, Page
from ..types.objects import FILE_SEARCH_CONTENT

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class OpenAIRoute(APIRoute):
    """A route whose request errors come back in OpenAI's error shape, with the right status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                _refuse_nul_in_url(request)
                return await handler(request)
            except RequestError as exc:
                return JSONResponse(exc.to_dict(), status_code=exc.status_code)
            except HTTPException as exc:
                # Starlette's own refusals (a malformed multipart body, say) in OpenAI's error shape.
                kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
                error = {"message": str(exc.detail), "type": kind, "param": None, "code": None}
                return JSONResponse({"error": error}, status_code=exc.status_code, headers=exc.headers)

        return handle


NUL = "\x00"
"""No text may hold it: PostgreSQL cannot store it, and no real id, name or message needs it."""


def _refuse_nul_in_url(request: Request) -> None:
    for name, value in request.path_params.items():
        if NUL in str(value):
            raise InvalidRequestError(f"Invalid '{name}': it contains a NUL character.", param=name)
    for key, value in request.query_params.multi_items():
        if NUL in key or NUL in value:
            name = key.replace(NUL, "\\0")
            raise InvalidRequestError(f"Invalid query parameter '{name}': it contains a NUL character.", param=name)


def _nul_at(value: Any, path: str) -> str | None:
    """The path of the first string (or key) in a parsed JSON body that holds a NUL character."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else key
            if NUL in key:
                return here.replace(NUL, "\\0")
            found = _nul_at(item, here)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_at(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


_UNION_TAGS = frozenset(
    {
        "function", "code_interpreter", "file_search", "text", "image_file", "image_url", "refusal",
        "json_object", "json_schema", "str", "int", "float", "bool", "list", "dict", "auto", "static", "none",
        "required",
    }
)
"""Names pydantic adds to an error location for union members; they are not request fields."""

_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict"})


_TAGGED_FIELDS = frozenset({"chunking_strategy"})
"""Fields that hold a tagged union themselves (not in a list), so a tag after them is a member name."""


def _is_member_name(loc: tuple[int | str, ...], index: int) -> bool:
    """Whether `loc[index]`, a union tag, names the union member rather than a field.

    Pydantic puts the tag right after the union's own place: a list index (`tools[0]`) or a
    field holding a tagged union. Tags that are fields too (`function`, `file_search`,
    `code_interpreter`, `text`) are fields anywhere else: `tools[0].file_search.max_num_results`
    is `("tools", 0, "file_search", "file_search", "max_num_results")`, and
    `tool_resources.file_search` is itself.
    """
    if index + 1 == len(loc):
        return False
    before = loc[index - 1] if index else None
    return loc[index + 1] == loc[index] or isinstance(before, int) or before in _TAGGED_FIELDS


def _field_path(loc: tuple[int | str, ...]) -> str:
    """`("tools", 0, "function", "function", "name")` → `tools[0].function.name`, without union member names."""
    path = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        if not part.isidentifier():
            continue
        # Pydantic's names for scalar and container union members are never request fields.
        if part in _TYPE_TAGS:
            continue
        if part in _UNION_TAGS and _is_member_name(loc, index):
            continue
        path += f".{part}" if path else part
    return path or "body"


def validation_error(exc: ValidationError) -> InvalidRequestError:
    """The first problem of a pydantic error, in OpenAI's words, naming the field."""
    errors = exc.errors()
    # In a union, members the input was not meant for fail with a bare type error ("should be a
    # valid string"); the member it was meant for says what is really wrong.
    first = next((e for e in errors if not e["type"].endswith("_type")), errors[0])
    field = _field_path(tuple(first["loc"]))
    if first["type"] == "missing":
        return InvalidRequestError(f"Missing required parameter: '{field}'.", param=field, code="missing_required_parameter")
    if first["type"] == "extra_forbidden":
        return InvalidRequestError(f"Unrecognized request argument supplied: {field}", param=field, code="unknown_parameter")
    return InvalidRequestError(f"Invalid '{field}': {first['msg']}.", param=field, code="invalid_value")


async def parse_body(request: Request, model: type[M], *, allow_empty: bool = False) -> M:
    """Read and validate a JSON body; every problem names its field."""
    raw = await request.body()
    if not raw.strip():
        if allow_empty:
            return model()
        raise InvalidRequestError("The request body must be a JSON object.", param="body")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"We could not parse the JSON body of your request ({exc.msg} at position {exc.pos}).", param="body"
        ) from exc
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"The request body is not UTF-8 text (byte {exc.start} cannot be decoded); send JSON encoded as UTF-8.",
            param="body",
        ) from exc
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object.", param="body")
    where = _nul_at(data, "")
    if where is not None:
        raise InvalidRequestError(f"Invalid '{where}': text may not contain NUL characters (\\u0000).", param=where)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from exc


@dataclass(frozen=True)
class EndpointListParams(ListParams):
    """List parameters whose `limit` `list_params` checked against its endpoint's own range.

    The store's `ListParams` checks 1 to 100 itself, which is the range of every list but
    `GET /files` (1 to 10,000). The store reads only `limit`, `order`, `after` and `before`, so
    it pages these in SQL as it pages any others.
    """

    def __post_init__(self) -> None:
        """Nothing left to check: `list_params` did, with the endpoint's maximum."""


def list_params(request: Request, *, default: int = 20, maximum: int = 100) -> ListParams:
    """`limit` (1 to `maximum`, `default` when absent), `order`, `after`, `before` from the query string."""
    query = request.query_params
    raw_limit = query.get("limit", str(default))
    try:
        limit = int(raw_limit)
    except ValueError as exc:
        raise InvalidRequestError(f"Invalid 'limit': {raw_limit!r} is not an integer.", param="limit") from exc
    if not 1 <= limit <= maximum:
        raise InvalidRequestError(
            f"Invalid 'limit': {limit} is out of range; it must be between 1 and {maximum}.", param="limit"
        )
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequestError(f"Invalid 'order': {order!r}; expected 'asc' or 'desc'.", param="order")
    return EndpointListParams(
        limit=limit,
        order=cast(Literal["asc", "desc"], order),
        after=query.get("after") or None,
        before=query.get("before") or None,
    )


def wants_passages(request: Request) -> bool:
    """Whether `include[]` asks for file-search passages (the only value it takes); refuses others."""
    include = request.query_params.getlist("include[]")
    for value in include:
        if value != FILE_SEARCH_CONTENT:
            raise InvalidRequestError(
                f"Invalid 'include[]': {value!r}; the only supported value is {FILE_SEARCH_CONTENT!r}.",
                param="include[]",
            )
    return bool(include)


def metadata_query(request: Request) -> dict[str, str]:
    """`metadata[key]=value` pairs from the query string (our list-by-metadata extension)."""
    found: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key.startswith("metadata[") and key.endswith("]"):
            found[key[len("metadata[") : -1]] = value
    return found


def page_body(page: Page[Any]) -> dict[str, Any]:
    """OpenAI's list shape."""
    return {
        "object": "list",
        "data": [item.wire() for item in page.data],
        "first_id": page.first_id,
        "last_id": page.last_id,
        "has_more": page.has_more,
    }


def content_disposition(disposition: str, filename: str) -> str:
    """A `content-disposition` value for any file name: an ASCII fallback and the UTF-8 name (RFC 6266)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in filename) or "file"
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def deleted(object_id: str, kind: str) -> dict[str, Any]:
    return {"id": object_id, "object": f"{kind}.deleted", "deleted": True}


async def current_user(request: Request, runtime: Runtime) -> str:
    """The user behind the request's bearer API key."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' "
            "(create one with `assistants keys create USER`).",
            code="missing_api_key",
        )
    await runtime.start()
    return await runtime.accounts.user_for_key(key.strip())


def sse_frame(event: Event) -> bytes:
    return f"event: {event.event}\ndata: {json.dumps(event.data, separators=(',', ':'))}\n\n".encode()


DONE_FRAME = b"event: done\ndata: [DONE]\n\n"


def sse_response(subscription: Subscription, shown: Callable[[Event], Event] | None = None) -> StreamingResponse:
    """Stream a run's events as OpenAI does, ending with `done`. The run goes on if the client leaves.

    `shown` gives each event as this stream shows it (a copy when it differs: other subscribers
    share the event). Events that queued up while the stream waited to write go out in one
    write (the same bytes, fewer trips through the middleware and the socket).
    """

    async def frames() -> AsyncIterator[bytes]:
        try:
            async for batch in subscription.batches_until_run_pauses():
                chunk = b"".join(sse_frame(shown(event) if shown else event) for event in batch)
                yield chunk + DONE_FRAME if batch[-1].ends_stream else chunk
        finally:
            subscription.close()

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )
