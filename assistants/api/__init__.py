"""The OpenAI-compatible `/v1` HTTP API, mounted on the same server as the Chainlit app."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from ..runtime import Runtime
from .events import build_events_router
from .routes import build_router
from .vector_stores import build_vector_store_router


def mount_v1(app: FastAPI, runtime: Runtime) -> None:
    """Add the `/v1` routes in front of the app's own, so Chainlit's catch-all `GET` cannot shadow them."""
    mount_first(app, build_router(runtime))
    # In front of the main router, whose last route answers every unknown `/v1` URL with a 404.
    mount_first(app, build_vector_store_router(runtime))
    mount_first(app, build_events_router(runtime))


def mount_first(app: FastAPI, router: APIRouter) -> None:
    """Include `router` ahead of every route the app already has."""
    before = len(app.router.routes)
    app.include_router(router)
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = added


def create_app(runtime: Runtime) -> FastAPI:
    """A standalone `/v1` server (no chat UI), for deployments that only want the API."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        await runtime.start()
        yield
        await runtime.close()

    app = FastAPI(title="assistants", lifespan=lifespan)
    mount_v1(app, runtime)
    return app


__all__ = ["create_app", "mount_first", "mount_v1"]
