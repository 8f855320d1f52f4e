"""Vector store expiry (`expires_after`), enforced as on the hosted API, on a real engine.

Time is moved on by writing a store's `expires_at` into the past, which is what days of
inactivity leave in the database. An expired store cannot be searched or given files (400), a
run that would search it fails saying which store and what to do, a thread's own store that
expired gives way to a new one at the next attachment, the sweep clears expired stores' chunks
from the index, and searching a store in a run pushes its expiry back. Chat sessions' own stores
never expire.
"""

from __future__ import annotations

import json

import pytest

from assistants.engine import Engine
from assistants.exceptions import InvalidRequestError
from assistants.ids import now
from assistants.sessions import Sessions
from assistants.types import Run, RunStatus, VectorStore
from assistants.types.requests import (
    AssistantCreate,
    MessageCreate,
    RunCreate,
    ThreadCreate,
    VectorStoreCreate,
    VectorStoreFileCreate,
    VectorStoreSearch,
    VectorStoreUpdate,
)
from tests.conftest import StartRuntime
from tests.scripted_model import ScriptedModel

OWNER = "user_expiry"
KETTLE = b"Descale the kettle every month with white vinegar and water.\n"


async def age(engine: Engine, store_id: str, seconds: int) -> None:
    """Make the store's expiry lie `seconds` in the past, as inactivity would."""
    async with engine.store.transaction() as tx:
        store = await tx.get(VectorStore, store_id, owner=OWNER)
        await tx.save(store.model_copy(update={"expires_at": now() - seconds, "last_active_at": now() - 8 * 86_400}))


async def stocked_store(engine: Engine, days: int = 7) -> tuple[str, str]:
    kettle = await engine.create_file(OWNER, filename="kettle.md", purpose="assistants", content=KETTLE)
    body = VectorStoreCreate.model_validate(
        {"name": "home", "file_ids": [kettle.id], "expires_after": {"anchor": "last_active_at", "days": days}}
    )
    store = await engine.vector_stores.create(OWNER, body)
    await engine.vector_stores.wait_for_ingestion([store.id])
    return store.id, kettle.id


async def test_an_expired_store_cannot_be_searched_or_given_files_and_its_chunks_are_cleared(
    start_runtime: StartRuntime,
) -> None:
    engine = (await start_runtime()).engine
    store_id, kettle = await stocked_store(engine)
    kept_id, _ = await stocked_store(engine)
    assert (await engine.vector_stores.search(OWNER, store_id, VectorStoreSearch(query="kettle")))["data"]

    await age(engine, store_id, 60)

    assert (await engine.vector_stores.get(OWNER, store_id)).status == "expired"
    with pytest.raises(InvalidRequestError, match=f"Vector store '{store_id}' expired on .* 7 days after") as refused:
        await engine.vector_stores.search(OWNER, store_id, VectorStoreSearch(query="kettle"))
    assert refused.value.param == "vector_store_id"
    with pytest.raises(InvalidRequestError, match="expired"):
        await engine.vector_stores.add_file(OWNER, store_id, VectorStoreFileCreate(file_id=kettle))

    # The sweep takes the expired store's chunks out of the index; the other store keeps its own.
    assert await engine.vector_stores.purge_expired() == [store_id]
    assert await engine.vector_stores.index.count(store_id) == 0
    assert await engine.vector_stores.index.count(kept_id) > 0
    assert await engine.vector_stores.purge_expired() == []
    # The store itself and its file list stay, marked expired.
    assert (await engine.vector_stores.get(OWNER, store_id)).file_counts.completed == 1


async def test_a_run_on_an_expired_store_fails_saying_which_and_a_search_pushes_expiry_back(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    engine = (await start_runtime()).engine
    store_id, _ = await stocked_store(engine, days=2)
    assistant = await engine.create_assistant(
        OWNER,
        AssistantCreate.model_validate(
            {"model": "scripted-model", "tools": [{"type": "file_search"}], "tool_resources": {"file_search": {"vector_store_ids": [store_id]}}}
        ),
    )
    thread = await engine.create_thread(OWNER, ThreadCreate())
    await engine.create_message(OWNER, thread.id, MessageCreate(role="user", content="How do I descale?"))
    before = (await engine.vector_stores.get(OWNER, store_id)).expires_at
    assert before is not None
    async with engine.store.transaction() as tx:  # Used a day ago.
        store = await tx.get(VectorStore, store_id, owner=OWNER)
        await tx.save(store.model_copy(update={"expires_at": before - 86_400, "last_active_at": now() - 86_400}))
    model.add_tool_calls([{"name": "file_search", "arguments": json.dumps({"query": "descale kettle"})}])
    model.add_text("Monthly [1].")

    run = await engine.create_run(OWNER, thread.id, RunCreate(assistant_id=assistant.id))
    await engine.wait_for_run(run.id)
    assert (await engine.get_run(OWNER, thread.id, run.id)).status is RunStatus.completed
    # Searching it was activity: two days from now again.
    touched = await engine.vector_stores.get(OWNER, store_id)
    assert touched.expires_at is not None and touched.expires_at >= now() + 2 * 86_400 - 5

    await age(engine, store_id, 60)
    requests = len(model.requests)
    run = await engine.create_run(OWNER, thread.id, RunCreate(assistant_id=assistant.id))
    await engine.wait_for_run(run.id)
    failed: Run = await engine.get_run(OWNER, thread.id, run.id)
    assert failed.status is RunStatus.failed and failed.last_error is not None
    assert failed.last_error.code == "server_error"
    assert f"Vector store '{store_id}' expired" in failed.last_error.message
    assert len(model.requests) == requests, "the model was never called"


async def test_a_threads_expired_store_gives_way_to_a_new_one_and_sessions_stores_do_not_expire(
    start_runtime: StartRuntime,
) -> None:
    engine = (await start_runtime()).engine
    kettle = await engine.create_file(OWNER, filename="kettle.md", purpose="assistants", content=KETTLE)
    attach = [{"file_id": kettle.id, "tools": [{"type": "file_search"}]}]
    thread = await engine.create_thread(
        OWNER, ThreadCreate.model_validate({"messages": [{"role": "user", "content": "Read this", "attachments": attach}]})
    )
    [old_store] = (await engine.get_thread(OWNER, thread.id)).tool_resources["file_search"]["vector_store_ids"]
    assert (await engine.vector_stores.get(OWNER, old_store)).expires_after is not None
    await age(engine, old_store, 60)

    await engine.create_message(OWNER, thread.id, MessageCreate.model_validate({"role": "user", "content": "And again", "attachments": attach}))

    [new_store] = (await engine.get_thread(OWNER, thread.id)).tool_resources["file_search"]["vector_store_ids"]
    assert new_store != old_store
    await engine.vector_stores.wait_for_ingestion([new_store])
    assert (await engine.vector_stores.get(OWNER, new_store)).file_counts.completed == 1

    # A chat session keeps its files searchable as long as it exists.
    assistant = await engine.create_assistant(OWNER, AssistantCreate(model="scripted-model"))
    session = await Sessions(engine).create(OWNER, assistant.id)
    await engine.create_message(OWNER, session.id, MessageCreate.model_validate({"role": "user", "content": "Keep it", "attachments": attach}))
    [session_store] = (await engine.get_thread(OWNER, session.id)).tool_resources["file_search"]["vector_store_ids"]
    lasting = await engine.vector_stores.get(OWNER, session_store)
    assert lasting.expires_after is None and lasting.expires_at is None


async def test_an_expired_store_is_not_revived_by_a_new_expiration_policy(start_runtime: StartRuntime) -> None:
    """Changing `expires_after` of an expired store is a 400; its name and metadata may still change, and it stays expired."""
    engine = (await start_runtime()).engine
    stores = engine.vector_stores
    store_id, _ = await stocked_store(engine)
    live_id, _ = await stocked_store(engine)
    await age(engine, store_id, 60)
    assert await stores.purge_expired() == [store_id]
    before = await stores.get(OWNER, store_id)

    for change in ({"expires_after": {"anchor": "last_active_at", "days": 30}}, {"expires_after": None}):
        with pytest.raises(InvalidRequestError, match=f"Vector store '{store_id}' expired on .* cannot be given a new expiration") as refused:
            await stores.update(OWNER, store_id, VectorStoreUpdate.model_validate(change))
        assert refused.value.param == "expires_after"
        assert await stores.get(OWNER, store_id) == before

    renamed = await stores.update(OWNER, store_id, VectorStoreUpdate.model_validate({"name": "old", "metadata": {"k": "v"}}))
    assert (renamed.name, renamed.metadata, renamed.status) == ("old", {"k": "v"}, "expired")
    assert (renamed.expires_at, renamed.expires_after) == (before.expires_at, before.expires_after)
    with pytest.raises(InvalidRequestError, match="expired"):
        await stores.search(OWNER, store_id, VectorStoreSearch(query="kettle"))

    # A store that has not expired takes a new policy as before.
    longer = await stores.update(OWNER, live_id, VectorStoreUpdate.model_validate({"expires_after": {"anchor": "last_active_at", "days": 30}}))
    assert longer.status == "completed" and longer.expires_after is not None and longer.expires_after.days == 30
