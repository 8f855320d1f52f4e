"""The `/v1` routes: translation between HTTP and the engine, no business logic."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ..events import Event
from ..exceptions import InvalidRequestError
from ..ids import new_id
from ..runtime import Runtime
from ..types.requests import (
    AssistantCreate,
    AssistantUpdate,
    FileExpiryField,
    MessageCreate,
    MessageUpdate,
    RunCreate,
    RunUpdate,
    SubmitToolOutputsRequest,
    ThreadAndRunCreate,
    ThreadCreate,
    ThreadUpdate,
)
from ._http import (
    OpenAIRoute,
    content_disposition,
    current_user,
    deleted,
    list_params,
    metadata_query,
    page_body,
    parse_body,
    sse_response,
    validation_error,
    wants_passages,
)
from .openapi import contract_json

FILES_PAGE = 10_000
"""`GET /files` lists up to 10,000 files a page, and that many when `limit` is left out (its spec)."""
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
"""The purposes an upload may have (CreateFileRequest). `assistants_output` is not one: it marks
the files the code interpreter writes."""


def build_router(runtime: Runtime) -> APIRouter:
    """All `/v1` routes, bound to a runtime."""
    router = APIRouter(prefix="/v1", route_class=OpenAIRoute)

    async def user(request: Request) -> str:
        return await current_user(request, runtime)

    def engine() -> Any:
        return runtime.engine

    # Assistants --------------------------------------------------------------------------------

    @router.post("/assistants")
    async def create_assistant(request: Request) -> Any:
        owner = await user(request)
        body = await parse_body(request, AssistantCreate)
        return (await engine().create_assistant(owner, body)).wire()

    @router.get("/assistants")
    async def list_assistants(request: Request) -> Any:
        owner = await user(request)
        return page_body(await engine().list_assistants(owner, list_params(request), metadata_query(request)))

    @router.get("/assistants/{assistant_id}")
    async def get_assistant(request: Request, assistant_id: str) -> Any:
        owner = await user(request)
        return (await engine().get_assistant(owner, assistant_id)).wire()

    @router.post("/assistants/{assistant_id}")
    async def update_assistant(request: Request, assistant_id: str) -> Any:
        owner = await user(request)
        body = await parse_body(request, AssistantUpdate, allow_empty=True)
        return (await engine().update_assistant(owner, assistant_id, body)).wire()

    @router.delete("/assistants/{assistant_id}")
    async def delete_assistant(request: Request, assistant_id: str) -> Any:
        owner = await user(request)
        await engine().delete_assistant(owner, assistant_id)
        return deleted(assistant_id, "assistant")

    # Threads -----------------------------------------------------------------------------------

    @router.post("/threads")
    async def create_thread(request: Request) -> Any:
        owner = await user(request)
        body = await parse_body(request, ThreadCreate, allow_empty=True)
        return (await engine().create_thread(owner, body)).wire()

    @router.get("/threads")
    async def list_threads(request: Request) -> Any:
        """Extension: list your threads, filtered by `metadata[key]=value` pairs."""
        owner = await user(request)
        page = await engine().list_threads(
            owner, list_params(request), metadata_query(request), title_contains=request.query_params.get("title")
        )
        return page_body(page)

    @router.post("/threads/runs")
    async def create_thread_and_run(request: Request) -> Any:
        owner = await user(request)
        passages = wants_passages(request)
        body = await parse_body(request, ThreadAndRunCreate)
        if body.stream:
            run_id = new_id("run")
            subscription = engine().subscribe(run_id=run_id)
            try:
                await engine().create_thread_and_run(owner, body, run_id=run_id)
            except BaseException:
                subscription.close()
                raise
            return sse_response(subscription, _streamed_passages(passages))
        return (await engine().create_thread_and_run(owner, body)).wire()

    @router.get("/threads/{thread_id}")
    async def get_thread(request: Request, thread_id: str) -> Any:
        owner = await user(request)
        return (await engine().get_thread(owner, thread_id)).wire()

    @router.post("/threads/{thread_id}")
    async def update_thread(request: Request, thread_id: str) -> Any:
        owner = await user(request)
        body = await parse_body(request, ThreadUpdate, allow_empty=True)
        return (await engine().update_thread(owner, thread_id, body)).wire()

    @router.delete("/threads/{thread_id}")
    async def delete_thread(request: Request, thread_id: str) -> Any:
        owner = await user(request)
        await engine().delete_thread(owner, thread_id)
        return deleted(thread_id, "thread")

    # Messages ----------------------------------------------------------------------------------

    @router.post("/threads/{thread_id}/messages")
    async def create_message(request: Request, thread_id: str) -> Any:
        owner = await user(request)
        body = await parse_body(request, MessageCreate)
        return (await engine().create_message(owner, thread_id, body)).wire()

    @router.get("/threads/{thread_id}/messages")
    async def list_messages(request: Request, thread_id: str) -> Any:
        owner = await user(request)
        page = await engine().list_messages(
            owner, thread_id, list_params(request), run_id=request.query_params.get("run_id")
        )
        return page_body(page)

    @router.get("/threads/{thread_id}/messages/{message_id}")
    async def get_message(request: Request, thread_id: str, message_id: str) -> Any:
        owner = await user(request)
        return (await engine().get_message(owner, thread_id, message_id)).wire()

    @router.post("/threads/{thread_id}/messages/{message_id}")
    async def update_message(request: Request, thread_id: str, message_id: str) -> Any:
        owner = await user(request)
        body = await parse_body(request, MessageUpdate, allow_empty=True)
        return (await engine().update_message(owner, thread_id, message_id, body)).wire()

    @router.delete("/threads/{thread_id}/messages/{message_id}")
    async def delete_message(request: Request, thread_id: str, message_id: str) -> Any:
        owner = await user(request)
        await engine().delete_message(owner, thread_id, message_id)
        return deleted(message_id, "thread.message")

    # Runs --------------------------------------------------------------------------------------

    @router.post("/threads/{thread_id}/runs")
    async def create_run(request: Request, thread_id: str) -> Any:
        owner = await user(request)
        passages = wants_passages(request)
        body = await parse_body(request, RunCreate)
        if body.stream:
            run_id = new_id("run")
            subscription = engine().subscribe(run_id=run_id)
            try:
                await engine().create_run(owner, thread_id, body, run_id=run_id)
            except BaseException:
                subscription.close()
                raise
            return sse_response(subscription, _streamed_passages(passages))
        return (await engine().create_run(owner, thread_id, body)).wire()

    @router.get("/threads/{thread_id}/runs")
    async def list_runs(request: Request, thread_id: str) -> Any:
        owner = await user(request)
        return page_body(await engine().list_runs(owner, thread_id, list_params(request)))

    @router.get("/threads/{thread_id}/runs/{run_id}")
    async def get_run(request: Request, thread_id: str, run_id: str) -> Any:
        owner = await user(request)
        return (await engine().get_run(owner, thread_id, run_id)).wire()

    @router.post("/threads/{thread_id}/runs/{run_id}")
    async def update_run(request: Request, thread_id: str, run_id: str) -> Any:
        owner = await user(request)
        body = await parse_body(request, RunUpdate, allow_empty=True)
        return (await engine().update_run(owner, thread_id, run_id, body)).wire()

    @router.post("/threads/{thread_id}/runs/{run_id}/cancel")
    async def cancel_run(request: Request, thread_id: str, run_id: str) -> Any:
        owner = await user(request)
        return (await engine().cancel_run(owner, thread_id, run_id)).wire()

    @router.post("/threads/{thread_id}/runs/{run_id}/submit_tool_outputs")
    async def submit_tool_outputs(request: Request, thread_id: str, run_id: str) -> Any:
        owner = await user(request)
        passages = wants_passages(request)
        body = await parse_body(request, SubmitToolOutputsRequest)
        if body.stream:
            subscription = engine().subscribe(run_id=run_id)
            try:
                await engine().submit_tool_outputs(owner, thread_id, run_id, body)
            except BaseException:
                subscription.close()
                raise
            return sse_response(subscription, _streamed_passages(passages))
        return (await engine().submit_tool_outputs(owner, thread_id, run_id, body)).wire()

    @router.get("/threads/{thread_id}/runs/{run_id}/steps")
    async def list_steps(request: Request, thread_id: str, run_id: str) -> Any:
        owner = await user(request)
        passages = wants_passages(request)
        body = page_body(await engine().list_steps(owner, thread_id, run_id, list_params(request)))
        for step in body["data"]:
            _passages(step, passages)
        return body

    @router.get("/threads/{thread_id}/runs/{run_id}/steps/{step_id}")
    async def get_step(request: Request, thread_id: str, run_id: str, step_id: str) -> Any:
        owner = await user(request)
        passages = wants_passages(request)
        return _passages((await engine().get_step(owner, thread_id, run_id, step_id)).wire(), passages)

    # Files -------------------------------------------------------------------------------------

    @router.post("/files")
    async def create_file(request: Request) -> Any:
        owner = await user(request)
        form = await request.form(max_part_size=runtime.settings.max_file_bytes)
        expiry: dict[str, Any] = {}
        for field in form:
            # The SDK sends the policy as `expires_after[anchor]` and `expires_after[seconds]`.
            part = re.fullmatch(r"expires_after\[(\w+)\]", field)
            if part is not None:
                expiry[part.group(1)] = form.get(field)
            elif field == "expires_after":
                # Also taken whole, as a JSON object in one field.
                try:
                    whole = json.loads(str(form.get(field)))
                except ValueError:
                    whole = None
                if not isinstance(whole, dict):
                    raise InvalidRequestError(
                        "Invalid 'expires_after': send the form fields 'expires_after[anchor]' and "
                        "'expires_after[seconds]', or one field holding a JSON object.",
                        param="expires_after",
                    )
                expiry.update(whole)
            elif field not in ("file", "purpose"):
                raise InvalidRequestError(f"Unrecognized request argument supplied: {field!r}.", param=field)
        expires_after = None
        if expiry:
            try:
                expires_after = FileExpiryField.model_validate({"expires_after": expiry}).expires_after
            except ValidationError as exc:
                raise validation_error(exc) from exc
        upload = form.get("file")
        purpose = form.get("purpose")
        if upload is None or isinstance(upload, str):
            raise InvalidRequestError("Missing required parameter: 'file'.", param="file")
        if not isinstance(purpose, str) or not purpose:
            raise InvalidRequestError("Missing required parameter: 'purpose'.", param="purpose")
        if purpose not in FILE_PURPOSES:
            raise InvalidRequestError(
                f"Invalid 'purpose': {purpose!r}; expected one of {', '.join(FILE_PURPOSES)}.", param="purpose"
            )
        content = await upload.read()
        file = await engine().create_file(
            owner, filename=upload.filename or "upload", purpose=purpose, content=content, expires_after=expires_after
        )
        return file.wire()

    @router.get("/files")
    async def list_files(request: Request) -> Any:
        owner = await user(request)
        params = list_params(request, default=FILES_PAGE, maximum=FILES_PAGE)
        return page_body(await engine().list_files(owner, params, purpose=request.query_params.get("purpose")))

    @router.get("/files/{file_id}")
    async def get_file(request: Request, file_id: str) -> Any:
        owner = await user(request)
        return (await engine().get_file(owner, file_id)).wire()

    @router.get("/files/{file_id}/content")
    async def file_content(request: Request, file_id: str) -> Any:
        owner = await user(request)
        file, content = await engine().file_content(owner, file_id)
        return Response(
            content,
            media_type="application/octet-stream",
            headers={"content-disposition": content_disposition("attachment", file.filename)},
        )

    @router.delete("/files/{file_id}")
    async def delete_file(request: Request, file_id: str) -> Any:
        owner = await user(request)
        await engine().delete_file(owner, file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    # Models ------------------------------------------------------------------------------------

    @router.get("/models")
    async def list_models(request: Request) -> Any:
        await user(request)
        ids = await engine().provider.list_models()
        return {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": "provider"} for i in ids]}

    @router.get("/openapi.json")
    async def openapi_document() -> Response:
        """The OpenAPI document of these routes (public: it describes the API, not anyone's data)."""
        return Response(contract_json(), media_type="application/json")

    @router.api_route("/{path:path}", methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
    async def unknown(request: Request, path: str) -> Any:
        return JSONResponse(
            {"error": {"message": f"Unknown request URL: {request.method} /v1/{path}.", "type": "invalid_request_error", "param": None, "code": "unknown_url"}},
            status_code=404,
        )

    return router


def _passages(step: dict[str, Any], wanted: bool) -> dict[str, Any]:
    """File-search passages appear only when `include[]` asks for them, as on the hosted API."""
    if not wanted:
        for result in _search_results(step.get("step_details")):
            result["content"] = None
    return step


def _search_results(details: Any) -> list[dict[str, Any]]:
    """The file-search results in a step's (or a step delta's) `step_details`."""
    if not isinstance(details, dict):
        return []
    return [
        result
        for call in details.get("tool_calls") or []
        if call.get("type") == "file_search"
        for result in (call.get("file_search") or {}).get("results") or []
    ]


def _streamed_passages(wanted: bool) -> Callable[[Event], Event] | None:
    """How a run's stream shows its step events: with file-search passages only when `include[]` asks."""
    if wanted:
        return None

    def shown(event: Event) -> Event:
        if not event.event.startswith("thread.run.step."):
            return event
        delta = event.event == "thread.run.step.delta"
        step = event.data.get("delta") or {} if delta else event.data
        if not any(result.get("content") is not None for result in _search_results(step.get("step_details"))):
            return event
        # A copy: the engine, the chat and other streams share this event's data.
        data = copy.deepcopy(event.data)
        _passages(data["delta"] if delta else data, False)
        return dataclasses.replace(event, data=data)

    return shown
