"""Chat routes that need to know who is asking: stored file downloads, cited passages, answer
feedback, and Chainlit's routes that act on a chat's websocket session by its id.

They authenticate with the chat's own session (Chainlit's token cookie) and only ever touch the
caller's objects: another user's file id, message id or websocket session id reads as not found.
"""

from __future__ import annotations

import html
import logging
import mimetypes
from typing import Annotated, Any

from chainlit import server as chainlit_server
from chainlit.auth import get_current_user
from chainlit.session import WebsocketSession
from chainlit.types import (
    CallActionRequest,
    ConnectMCPRequest,
    DeleteFeedbackRequest,
    DisconnectMCPRequest,
    ElementRequest,
    UpdateFeedbackRequest,
)
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import OAuth2PasswordRequestForm

from ..api._http import content_disposition
from ..exceptions import NotFoundError
from ..runtime import Runtime
from ..store import SqlStore
from ..store.sniff import IMAGE_TYPES
from ..tools.file_search import Citation
from .auth import TOO_MANY_ATTEMPTS_TEXT, LoginThrottle, SignInRefused
from .data_layer import EngineDataLayer
from .render import CITATION_ROUTE, FILE_ROUTE, TRANSCRIPT_ROUTE, transcript_page

log = logging.getLogger(__name__)

CurrentUser = Annotated[Any, Depends(get_current_user)]


def build_chat_router(runtime: Runtime, data_layer: EngineDataLayer, throttle: LoginThrottle | None = None) -> APIRouter:
    router = APIRouter()

    async def store() -> SqlStore:
        return (await runtime.start()).store

    throttle = throttle or LoginThrottle(store)

    @router.post("/login")
    async def login(request: Request, response: Response, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Any:
        """Chainlit's password login, refused for a while after repeated failures (HTTP 429)."""
        address = request.client.host if request.client else "unknown"
        try:
            # Counted before the (slow) password check, so tries sent in parallel cannot all slip in.
            token = await throttle.attempt(form.username, address)
        except SignInRefused as refused:
            raise HTTPException(
                status_code=429, detail=TOO_MANY_ATTEMPTS_TEXT, headers={"retry-after": str(refused.retry_after)}
            ) from refused
        result = await chainlit_server.login(request, response, form)
        try:
            await throttle.succeeded(form.username, token)
        except Exception:
            # The sign-in stands; at worst its failures count until they age out.
            log.exception("could not clear the failed sign-ins of a successful one")
        return result

    async def owner_of(user: Any) -> str:
        if user is None:
            raise HTTPException(status_code=401, detail="Log in first.")
        await runtime.start()
        owner = await runtime.accounts.user_id(user.identifier)
        if owner is None:
            raise HTTPException(status_code=401, detail="Log in first.")
        return owner

    @router.get(FILE_ROUTE + "/{file_id}")
    async def download(file_id: str, user: CurrentUser) -> Response:
        owner = await owner_of(user)
        try:
            file, content = await runtime.engine.file_content(owner, file_id)
        except NotFoundError as exc:
            raise HTTPException(status_code=404, detail="No such file.") from exc
        media_type = mimetypes.guess_type(file.filename)[0] or "application/octet-stream"
        # Files can be written by model-written code: only raster images open in the page (an SVG
        # or HTML file could carry script), and the CSP forbids scripts in anything served here.
        disposition = "inline" if media_type in IMAGE_TYPES else "attachment"
        return Response(
            content,
            media_type=media_type,
            headers={
                "content-disposition": content_disposition(disposition, file.filename),
                "x-content-type-options": "nosniff",
                "cache-control": "private, max-age=3600",
                "content-security-policy": "default-src 'none'; sandbox",
            },
        )

    @router.get(CITATION_ROUTE + "/{message_id}/{marker}")
    async def citation(message_id: str, marker: int, request: Request, user: CurrentUser) -> Response:
        """The passage an answer's marker cites: JSON for the chat's side panel, else a small page."""
        owner = await owner_of(user)
        try:
            found, available = await runtime.engine.citation(owner, message_id, marker)
        except NotFoundError as exc:
            raise HTTPException(status_code=404, detail="No such source.") from exc
        file_url = f"{FILE_ROUTE}/{found.file_id}" if available else None
        headers = {"cache-control": "private, max-age=3600", "x-content-type-options": "nosniff"}
        if "application/json" in request.headers.get("accept", ""):
            body = {
                "marker": found.marker,
                "file_id": found.file_id,
                "file_name": found.file_name,
                "score": found.score,
                "query": found.query,
                "passage": found.passage,
                "file_url": file_url,
            }
            return JSONResponse(body, headers=headers)
        headers["content-security-policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return HTMLResponse(citation_page(found, file_url), headers=headers)

    @router.get(TRANSCRIPT_ROUTE + "/{thread_id}")
    async def transcript(thread_id: str, user: CurrentUser) -> Response:
        """A whole session on one page: the chat shows only its latest turns when reopened."""
        owner = await owner_of(user)
        found = await data_layer.transcript(owner, thread_id)
        if found is None:
            raise HTTPException(status_code=404, detail="No such conversation.")
        headers = {
            "cache-control": "private, no-store",
            "x-content-type-options": "nosniff",
            # Images come from the app's own file route, which checks the viewer owns them.
            "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'",
        }
        return HTMLResponse(transcript_page(*found), headers=headers)

    @router.put("/feedback")
    async def put_feedback(update: UpdateFeedbackRequest, user: CurrentUser) -> JSONResponse:
        owner = await owner_of(user)
        feedback = update.feedback
        if not await data_layer.save_feedback(owner, feedback.forId, feedback.value, feedback.comment):
            raise HTTPException(status_code=404, detail="No such message.")
        return JSONResponse({"success": True, "feedbackId": feedback.forId})

    @router.delete("/feedback")
    async def delete_feedback(payload: DeleteFeedbackRequest, user: CurrentUser) -> JSONResponse:
        owner = await owner_of(user)
        if not await data_layer.remove_feedback(owner, payload.feedbackId):
            raise HTTPException(status_code=404, detail="No such message.")
        return JSONResponse({"success": True})

    # Chainlit's routes that act on a websocket session by id fail with a 500 when no such session
    # is live (one that ended, or a made-up id), and say 401 only when it is someone else's; in
    # front of them, both read as not found and the rest is Chainlit's own handler.

    def own_chat_session(session_id: str, user: Any) -> None:
        if user is None:
            raise HTTPException(status_code=401, detail="Log in first.")
        session = WebsocketSession.get_by_id(session_id)
        if session is None or session.user is None or session.user.identifier != user.identifier:
            raise HTTPException(status_code=404, detail="No such chat session.")

    @router.post("/project/action")
    async def call_action(payload: CallActionRequest, user: CurrentUser) -> Any:
        own_chat_session(payload.sessionId, user)
        return await chainlit_server.call_action(payload, user)

    @router.put("/project/element")
    async def update_element(payload: ElementRequest, user: CurrentUser) -> Any:
        own_chat_session(payload.sessionId, user)
        return await chainlit_server.update_thread_element(payload, user)

    @router.delete("/project/element")
    async def delete_element(payload: ElementRequest, user: CurrentUser) -> Any:
        own_chat_session(payload.sessionId, user)
        return await chainlit_server.delete_thread_element(payload, user)

    @router.post("/mcp")
    async def connect_mcp(payload: ConnectMCPRequest, user: CurrentUser) -> Any:
        own_chat_session(payload.sessionId, user)
        return await chainlit_server.connect_mcp(payload, user)

    @router.delete("/mcp")
    async def disconnect_mcp(payload: DisconnectMCPRequest, user: CurrentUser) -> Any:
        own_chat_session(payload.sessionId, user)
        return await chainlit_server.disconnect_mcp(payload, user)

    return router


def citation_page(found: Citation, file_url: str | None) -> str:
    """A cited passage as a page of its own (opened without the chat's script, or in a new tab)."""
    name = html.escape(found.file_name)
    link = f'<a href="{html.escape(file_url)}">Open {name}</a>' if file_url else "<em>The file has been deleted.</em>"
    return (
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>[{found.marker}] {name}</title>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}"
        "blockquote{white-space:pre-wrap;border-left:3px solid #ccc;margin:1rem 0;padding-left:1rem}"
        ".meta{color:#666;font-size:.9rem}</style>"
        f"<h1>[{found.marker}] {name}</h1>"
        f"<p class=meta>Found by searching “{html.escape(found.query)}” · score {found.score:.2f}</p>"
        f"<blockquote>{html.escape(found.passage)}</blockquote><p>{link}</p>"
    )
