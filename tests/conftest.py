"""Shared fixtures: real stores on SQLite and on the machine's PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from assistants.store import SqlStore
from assistants.store.migrate import upgrade

# Chainlit writes `.chainlit/` and `.files/` under its app root on import; keep them out of the repo.
os.environ.setdefault("CHAINLIT_APP_ROOT", str(Path(__file__).parent / ".chainlit-root"))
Path(os.environ["CHAINLIT_APP_ROOT"]).mkdir(exist_ok=True)

PG_ADMIN_DSN = os.environ.get("ASSISTANTS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def create_pg_database() -> str:
    """Create a fresh PostgreSQL database and return its SQLAlchemy asyncpg URL."""
    name = f"assistants_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def drop_pg_database(url: str) -> None:
    """Drop a database made by `create_pg_database`."""
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A blank database URL, once for SQLite and once for PostgreSQL (which must be running)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    """A migrated store on each backend."""
    store = SqlStore.from_url(store_url)
    await upgrade(store.engine)
    try:
        yield store
    finally:
        await store.close()


# The real server and the scripted model ----------------------------------------------------------

import asyncio  # noqa: E402
import concurrent.futures  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import openai  # noqa: E402

from tests.scripted_model import ScriptedModel  # noqa: E402
from tests.server import Server, start_instances, start_server  # noqa: E402


@pytest.fixture(scope="session")
def scripted_model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as model:
        yield model


@pytest.fixture
def model(scripted_model: ScriptedModel) -> ScriptedModel:
    """The scripted provider, emptied of scripts and recordings for each test."""
    scripted_model.reset()
    return scripted_model


@contextmanager
def server_on(
    backend: str, folder: Path, model: ScriptedModel, extra_env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A real server on `backend` ("sqlite", or "postgres": a new database, dropped afterwards)."""
    extra = dict(extra_env or {})
    pg_url = asyncio.run(create_pg_database()) if backend == "postgres" else None
    if pg_url is not None:
        extra["ASSISTANTS_DATABASE_URL"] = pg_url
    srv = start_server(folder, model_url=model.base_url, extra_env=extra)
    try:
        yield srv
    finally:
        srv.stop()
        if pg_url is not None:
            asyncio.run(drop_pg_database(pg_url))


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, scripted_model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The real server (Chainlit + /v1), once on SQLite and once on PostgreSQL."""
    with server_on(request.param, tmp_path_factory.mktemp(f"server-{request.param}"), scripted_model) as srv:
        yield srv


def sdk_client(server: Server, user: str) -> openai.OpenAI:
    """The official SDK, strict, pointed at our server as `user`."""
    return openai.OpenAI(
        base_url=server.api_url, api_key=server.key_for(user), max_retries=0, _strict_response_validation=True
    )


@contextmanager
def instances_on_new_postgres(tmp: Path, model_url: str, count: int = 2) -> Iterator[list[Server]]:
    """`count` server processes as behind a load balancer (`start_instances`) on a PostgreSQL
    database made for them and dropped after. Usable from sync Playwright tests too: the database
    work runs on a thread of its own, off any event loop already running here."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        url = pool.submit(asyncio.run, create_pg_database()).result()
        try:
            servers = start_instances(tmp, model_url=model_url, database_url=url, count=count)
            try:
                yield servers
            finally:
                for srv in reversed(servers):
                    srv.stop()
        finally:
            pool.submit(asyncio.run, drop_pg_database(url)).result()


@pytest.fixture
def client(server: Server, model: ScriptedModel) -> openai.OpenAI:
    return sdk_client(server, "alice")


@pytest.fixture
def other_client(server: Server, model: ScriptedModel) -> openai.OpenAI:
    return sdk_client(server, "bob")



# In-process engines ------------------------------------------------------------------------------

from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any  # noqa: E402

from assistants.config import Settings  # noqa: E402
from assistants.runtime import Runtime  # noqa: E402
from assistants.tools import FunctionRegistry  # noqa: E402

StartRuntime = Callable[..., Awaitable[Runtime]]


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """None: the runtime's default SQLite file in its data folder; else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
async def start_runtime(
    tmp_path: Path, database_url: str | None, model: ScriptedModel
) -> AsyncIterator[StartRuntime]:
    """Start a real runtime on one data folder against the scripted model; all are closed afterwards."""
    started: list[Runtime] = []

    async def start(*, registry: FunctionRegistry | None = None, **overrides: Any) -> Runtime:
        values: dict[str, Any] = {
            "ASSISTANTS_DATA_DIR": tmp_path / "data",
            "OPENAI_BASE_URL": model.base_url,
            "OPENAI_API_KEY": "x",
            "ASSISTANTS_MODEL": "scripted-model",
            # Kernels start on demand here: pre-warming them would slow every engine test down.
            "ASSISTANTS_CODE_WARM_KERNELS": 0,
            **overrides,
        }
        if database_url is not None:
            values["ASSISTANTS_DATABASE_URL"] = database_url
        runtime = Runtime(Settings(**values), registry=registry)
        started.append(runtime)
        await runtime.start()
        return runtime

    try:
        yield start
    finally:
        for runtime in reversed(started):
            await runtime.close()
