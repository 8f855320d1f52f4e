"""Chat routes that need to know who is asking: stored file downloads and answer feedback.

They authenticate with the chat's own session (Chainlit's token cookie) and only ever touch the
caller's objects: another user's file id or message id reads as not found.
"""

from __future__ import annotations

import mimetypes
from typing import Annotated, Any

from chainlit.auth import get_current_user
from chainlit.types import DeleteFeedbackRequest, UpdateFeedbackRequest
from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi.responses import JSONResponse

from ..api._http import content_disposition
from ..exceptions import NotFoundError
from ..runtime import Runtime
from .data_layer import EngineDataLayer
from .render import FILE_ROUTE

CurrentUser = Annotated[Any, Depends(get_current_user)]
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def build_chat_router(runtime: Runtime, data_layer: EngineDataLayer) -> APIRouter:
    router = APIRouter()

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
        disposition = "inline" if media_type in INLINE_TYPES else "attachment"
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

    return router
