"""`GET /v1/assistants/{id}/events`: follow everything that happens to an assistant's runs.

An extension the hosted API never had. The response is a server-sent event stream that stays
open: each frame is one run event, named and shaped as in a run's own stream, with `id:` set to
the event's sequence number. A client that reconnects sends the last id it saw (`Last-Event-ID`,
which browsers' `EventSource` does by itself, or `?after=`) and gets every event since, in order,
then the live ones; without a cursor the stream starts from now. Events come from the database
(`EventLog`), so they can be followed from any server process, whichever one runs the run.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ..event_log import BATCH_LIMIT, EventLog
from ..exceptions import InvalidRequestError
from ..runtime import Runtime
from ._http import OpenAIRoute, current_user

KEEPALIVE_SECONDS = 15.0
"""A comment frame goes out after this long without events, so proxies keep the stream open."""


def build_events_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/v1", route_class=OpenAIRoute)

    @router.get("/assistants/{assistant_id}/events")
    async def assistant_events(assistant_id: str, request: Request) -> StreamingResponse:
        owner = await current_user(request, runtime)
        await runtime.engine.get_assistant(owner, assistant_id)
        log = runtime.engine.events
        cursor = _cursor(request)
        if cursor is None:
            cursor = await log.last_seq()
        return StreamingResponse(
            _follow(log, assistant_id, cursor, request),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    return router


def _cursor(request: Request) -> int | None:
    """The cursor from `?after=` or the `Last-Event-ID` header (None: start from now)."""
    for raw, param in ((request.query_params.get("after"), "after"), (request.headers.get("last-event-id"), "Last-Event-ID")):
        if raw is None or raw == "":
            continue
        if not re.fullmatch(r"[0-9]{1,18}", raw):
            raise InvalidRequestError(f"Invalid '{param}': {raw!r}; it must be an event id (a whole number ≥ 0).", param=param)
        return int(raw)
    return None


async def _follow(log: EventLog, assistant_id: str, cursor: int, request: Request) -> AsyncIterator[bytes]:
    # A first comment sends the headers at once, so the client knows it is subscribed.
    yield b": following assistant events\n\n"
    while True:
        changed = log.changed  # Taken before reading, so a write after the read still wakes us.
        events = await log.read(assistant_id, cursor)
        for event in events:
            cursor = event.seq
            data = json.dumps(event.data, separators=(",", ":"))
            yield f"id: {event.seq}\nevent: {event.event}\ndata: {data}\n\n".encode()
        if len(events) == BATCH_LIMIT:
            continue
        if await request.is_disconnected():
            return
        try:
            await asyncio.wait_for(changed.wait(), KEEPALIVE_SECONDS)
        except TimeoutError:
            yield b": keepalive\n\n"
