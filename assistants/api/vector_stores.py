"""The `/v1/vector_stores` routes: translation between HTTP and `engine.vector_stores`, no business logic."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..runtime import Runtime
from ..types.requests import (
    VectorStoreCreate,
    VectorStoreFileBatchCreate,
    VectorStoreFileCreate,
    VectorStoreFileUpdate,
    VectorStoreSearch,
    VectorStoreUpdate,
)
from ..vector_stores import VectorStores
from ._http import OpenAIRoute, current_user, deleted, list_params, page_body, parse_body


def build_vector_store_router(runtime: Runtime) -> APIRouter:
    """The vector store routes, bound to a runtime."""
    router = APIRouter(prefix="/v1/vector_stores", route_class=OpenAIRoute)

    async def user(request: Request) -> str:
        return await current_user(request, runtime)

    def stores() -> VectorStores:
        return runtime.engine.vector_stores

    # Vector stores -----------------------------------------------------------------------------

    @router.post("")
    async def create_vector_store(request: Request) -> Any:
        owner = await user(request)
        body = await parse_body(request, VectorStoreCreate, allow_empty=True)
        return (await stores().create(owner, body)).wire()

    @router.get("")
    async def list_vector_stores(request: Request) -> Any:
        owner = await user(request)
        return page_body(await stores().list_stores(owner, list_params(request)))

    @router.get("/{vector_store_id}")
    async def get_vector_store(request: Request, vector_store_id: str) -> Any:
        owner = await user(request)
        return (await stores().get(owner, vector_store_id)).wire()

    @router.post("/{vector_store_id}")
    async def update_vector_store(request: Request, vector_store_id: str) -> Any:
        owner = await user(request)
        body = await parse_body(request, VectorStoreUpdate, allow_empty=True)
        return (await stores().update(owner, vector_store_id, body)).wire()

    @router.delete("/{vector_store_id}")
    async def delete_vector_store(request: Request, vector_store_id: str) -> Any:
        owner = await user(request)
        await stores().delete(owner, vector_store_id)
        return deleted(vector_store_id, "vector_store")

    @router.post("/{vector_store_id}/search")
    async def search_vector_store(request: Request, vector_store_id: str) -> Any:
        owner = await user(request)
        body = await parse_body(request, VectorStoreSearch)
        return await stores().search(owner, vector_store_id, body)

    # Files -------------------------------------------------------------------------------------

    @router.post("/{vector_store_id}/files")
    async def create_vector_store_file(request: Request, vector_store_id: str) -> Any:
        owner = await user(request)
        body = await parse_body(request, VectorStoreFileCreate)
        return (await stores().add_file(owner, vector_store_id, body)).wire()

    @router.get("/{vector_store_id}/files")
    async def list_vector_store_files(request: Request, vector_store_id: str) -> Any:
        owner = await user(request)
        status = request.query_params.get("filter")
        return page_body(await stores().list_files(owner, vector_store_id, list_params(request), status=status))

    @router.get("/{vector_store_id}/files/{file_id}")
    async def get_vector_store_file(request: Request, vector_store_id: str, file_id: str) -> Any:
        owner = await user(request)
        return (await stores().get_file(owner, vector_store_id, file_id)).wire()

    @router.post("/{vector_store_id}/files/{file_id}")
    async def update_vector_store_file(request: Request, vector_store_id: str, file_id: str) -> Any:
        owner = await user(request)
        body = await parse_body(request, VectorStoreFileUpdate)
        return (await stores().update_file(owner, vector_store_id, file_id, body)).wire()

    @router.delete("/{vector_store_id}/files/{file_id}")
    async def delete_vector_store_file(request: Request, vector_store_id: str, file_id: str) -> Any:
        owner = await user(request)
        await stores().delete_file(owner, vector_store_id, file_id)
        return deleted(file_id, "vector_store.file")

    @router.get("/{vector_store_id}/files/{file_id}/content")
    async def vector_store_file_content(request: Request, vector_store_id: str, file_id: str) -> Any:
        owner = await user(request)
        text = await stores().file_content(owner, vector_store_id, file_id)
        return {
            "object": "vector_store.file_content.page",
            "data": [{"type": "text", "text": text}],
            "has_more": False,
            "next_page": None,
        }

    # Batches -----------------------------------------------------------------------------------

    @router.post("/{vector_store_id}/file_batches")
    async def create_file_batch(request: Request, vector_store_id: str) -> Any:
        owner = await user(request)
        body = await parse_body(request, VectorStoreFileBatchCreate)
        return (await stores().create_batch(owner, vector_store_id, body)).wire()

    @router.get("/{vector_store_id}/file_batches/{batch_id}")
    async def get_file_batch(request: Request, vector_store_id: str, batch_id: str) -> Any:
        owner = await user(request)
        return (await stores().get_batch(owner, vector_store_id, batch_id)).wire()

    @router.post("/{vector_store_id}/file_batches/{batch_id}/cancel")
    async def cancel_file_batch(request: Request, vector_store_id: str, batch_id: str) -> Any:
        owner = await user(request)
        return (await stores().cancel_batch(owner, vector_store_id, batch_id)).wire()

    @router.get("/{vector_store_id}/file_batches/{batch_id}/files")
    async def list_file_batch_files(request: Request, vector_store_id: str, batch_id: str) -> Any:
        owner = await user(request)
        status = request.query_params.get("filter")
        page = await stores().list_batch_files(owner, vector_store_id, batch_id, list_params(request), status=status)
        return page_body(page)

    return router
