"""Hybrid retrieval: chunk vectors from the provider's `/v1/embeddings`, fused with full text.

The embeddings come over real HTTP from the scripted model server, whose toy embedding puts the
words of a synonym group (e.g. "limescale" and "descale") on one dimension: a query can then
find a passage it shares no word with, which full text alone cannot. Runs on both backends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator

import openai
import pytest
import sqlalchemy as sa

from assistants.search.embed import EmbeddingError, ProviderEmbedder
from assistants.search.index import SqlChunkIndex
from assistants.store import SqlStore, schema
from assistants.types.requests import VectorStoreCreate, VectorStoreSearch
from tests.conftest import StartRuntime
from tests.scripted_model import EMBEDDING_DIMENSIONS, ScriptedModel
from tests.server import Server, start_server
from tests.test_search_index import ALICE, BOB, CORPUS, QUESTIONS, files, rows

KETTLE = "Descale the kettle every month with equal parts white vinegar and water."
TRAIN = "Trains to the coast leave every hour from platform four."
QUERY = "limescale"
"""Shares no word with KETTLE; the toy embedding puts it on the same dimension as "descale"."""

MakeIndex = Callable[..., SqlChunkIndex]


@pytest.fixture
async def embed_client(model: ScriptedModel) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=model.base_url, api_key="x", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def make_index(store: SqlStore, embed_client: openai.AsyncOpenAI) -> MakeIndex:
    def make(model: str = "toy-embed", dimensions: int | None = None) -> SqlChunkIndex:
        return SqlChunkIndex(store, ProviderEmbedder(embed_client, model, dimensions=dimensions))

    return make


async def test_a_passage_is_found_by_meaning_when_no_word_matches(
    store: SqlStore, make_index: MakeIndex, model: ScriptedModel
) -> None:
    hybrid = make_index()
    await hybrid.add(ALICE, "vs_home", "file-kettle", rows(KETTLE))
    await hybrid.add(ALICE, "vs_home", "file-train", rows(TRAIN))

    # Full text alone finds nothing: no word of the query is in the passage.
    assert await SqlChunkIndex(store).search(ALICE, ["vs_home"], QUERY) == []
    hits = await hybrid.search(ALICE, ["vs_home"], QUERY)
    # The train timetable shares nothing with the query: it is no hit at all.
    assert files(hits) == ["file-kettle"]
    assert 0 < hits[0].score <= 1 and hits[0].text == KETTLE
    # Each chunk was embedded once (one request for each file) and the query once.
    embeddings = [r.body for r in model.requests if r.path.endswith("/embeddings")]
    assert [body["input"] for body in embeddings] == [[KETTLE], [TRAIN], [QUERY]]

    # Stored compactly: one float16 per dimension, with the model that made it.
    async with store.read() as tx:
        stored = (await tx.conn.execute(sa.select(schema.search_vectors))).all()
    assert {(row.file_id, row.model, row.dimensions, len(row.vector)) for row in stored} == {
        ("file-kettle", "toy-embed", EMBEDDING_DIMENSIONS, 2 * EMBEDDING_DIMENSIONS),
        ("file-train", "toy-embed", EMBEDDING_DIMENSIONS, 2 * EMBEDDING_DIMENSIONS),
    }


async def test_hybrid_search_keeps_full_text_recall_and_every_guarantee(make_index: MakeIndex) -> None:
    hybrid = make_index(dimensions=64)
    for i, text in enumerate(CORPUS):
        await hybrid.add(ALICE, "vs_corpus", f"file-{i}", rows(text))
    found = 0
    for question, right in QUESTIONS:
        hits = await hybrid.search(ALICE, ["vs_corpus"], question, limit=5)
        found += f"file-{right}" in files(hits)
        assert all(0 <= hit.score <= 1 for hit in hits)
    assert found / len(QUESTIONS) == 1.0, "recall@5"

    # Another owner's chunks (even in a store with the same id) are never found.
    await hybrid.add(BOB, "vs_corpus", "file-bob", rows(KETTLE))
    assert "file-bob" not in files(await hybrid.search(ALICE, ["vs_corpus"], QUERY, limit=50))
    assert files(await hybrid.search(BOB, ["vs_corpus"], QUERY)) == ["file-bob"]
    # `file_ids`, `limit` and `score_threshold` hold as in full-text search.
    assert set(files(await hybrid.search(ALICE, ["vs_corpus"], "light", file_ids=["file-4"], limit=50))) == {"file-4"}
    assert len(await hybrid.search(ALICE, ["vs_corpus"], "light water", limit=3)) == 3
    assert all(h.score >= 0.4 for h in await hybrid.search(ALICE, ["vs_corpus"], "light", score_threshold=0.4))
    # Removing a file takes its vectors with it.
    await hybrid.remove_file("vs_corpus", "file-bob")
    assert await hybrid.search(BOB, ["vs_corpus"], QUERY) == []
    assert await hybrid.remove_store("vs_corpus") == len(CORPUS)
    assert await hybrid.search(ALICE, ["vs_corpus"], "light") == []


async def test_vectors_of_another_model_are_never_compared(store: SqlStore, make_index: MakeIndex) -> None:
    await make_index("toy-embed-old").add(ALICE, "vs_home", "file-kettle", rows(KETTLE))
    # A new model cannot read the old vectors: the passage is found by full text only.
    current = make_index("toy-embed-new")
    assert await current.search(ALICE, ["vs_home"], QUERY) == []
    assert files(await current.search(ALICE, ["vs_home"], "kettle vinegar")) == ["file-kettle"]
    # Nor can the same model at another size.
    await make_index("toy-embed", dimensions=32).add(ALICE, "vs_sized", "file-kettle", rows(KETTLE))
    assert await make_index("toy-embed", dimensions=64).search(ALICE, ["vs_sized"], QUERY) == []


async def test_a_failed_embedding_leaves_the_index_as_it_was_and_search_falls_back_to_full_text(
    make_index: MakeIndex, model: ScriptedModel, caplog: pytest.LogCaptureFixture
) -> None:
    hybrid = make_index()
    await hybrid.add(ALICE, "vs_home", "file-kettle", rows(KETTLE))
    model.add_embedding_error(503, "the embedding service is down")
    with pytest.raises(EmbeddingError, match="toy-embed.*503.*the embedding service is down"):
        await hybrid.add(ALICE, "vs_home", "file-kettle", rows(TRAIN))
    # The file keeps its old chunks and vectors.
    assert files(await hybrid.search(ALICE, ["vs_home"], QUERY)) == ["file-kettle"]

    model.add_embedding_error(500, "boom")
    with caplog.at_level(logging.WARNING, logger="assistants.search.index"):
        hits = await hybrid.search(ALICE, ["vs_home"], "kettle vinegar")
    assert files(hits) == ["file-kettle"]
    assert "searching by full text only" in caplog.text and "boom" in caplog.text


async def test_ingestion_embeds_files_and_a_failure_fails_the_file_with_the_reason(
    start_runtime: StartRuntime, model: ScriptedModel
) -> None:
    runtime = await start_runtime(ASSISTANTS_EMBEDDING_MODEL="toy-embed", ASSISTANTS_PROVIDER_RETRIES=0)
    engine = runtime.engine
    kettle = await engine.create_file("user_a", filename="kettle.md", purpose="assistants", content=KETTLE.encode())
    store = await engine.vector_stores.create("user_a", VectorStoreCreate(file_ids=[kettle.id]))
    await engine.vector_stores.wait_for_ingestion([store.id])
    entry = await engine.vector_stores.get_file("user_a", store.id, kettle.id)
    assert entry.status == "completed", entry.last_error
    page = await engine.vector_stores.search("user_a", store.id, VectorStoreSearch(query=QUERY))
    assert [hit["file_id"] for hit in page["data"]] == [kettle.id]

    model.add_embedding_error(429, "quota exceeded")
    train = await engine.create_file("user_a", filename="train.txt", purpose="assistants", content=TRAIN.encode())
    failed = await engine.vector_stores.create("user_a", VectorStoreCreate(file_ids=[train.id]))
    await engine.vector_stores.wait_for_ingestion([failed.id])
    entry = await engine.vector_stores.get_file("user_a", failed.id, train.id)
    assert entry.status == "failed" and entry.last_error is not None
    assert entry.last_error.code == "server_error"
    assert "toy-embed" in entry.last_error.message and "quota exceeded" in entry.last_error.message
    assert (await engine.vector_stores.get("user_a", failed.id)).file_counts.failed == 1


@pytest.fixture(scope="module")
def embedding_server(scripted_model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("hybrid"),
        model_url=scripted_model.base_url,
        extra_env={"ASSISTANTS_EMBEDDING_MODEL": "toy-embed", "ASSISTANTS_EMBEDDING_DIMENSIONS": "128"},
    )
    try:
        yield srv
    finally:
        srv.stop()


def test_the_sdk_searches_a_store_by_meaning(embedding_server: Server, model: ScriptedModel) -> None:
    client = openai.OpenAI(
        base_url=embedding_server.api_url, api_key=embedding_server.key_for("hybrid"), max_retries=0,
        _strict_response_validation=True,
    )
    kettle = client.files.create(file=("kettle.md", KETTLE.encode()), purpose="assistants")
    train = client.files.create(file=("train.txt", TRAIN.encode()), purpose="assistants")
    store = client.vector_stores.create(name="home")
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[kettle.id, train.id], poll_interval_ms=50
    )
    assert batch.file_counts.completed == 2

    results = client.vector_stores.search(vector_store_id=store.id, query=QUERY).data
    assert results[0].file_id == kettle.id and results[0].filename == "kettle.md"
    assert results[0].content[0].text == KETTLE
    # The server asked for the configured size.
    sizes = {r.body.get("dimensions") for r in model.requests if r.path.endswith("/embeddings")}
    assert sizes == {128}


async def test_vectors_kept_in_memory_follow_changes_made_by_another_process(store: SqlStore, make_index: MakeIndex) -> None:
    # Two indexes on one database stand for two server processes, each with its own memory.
    here, there = make_index(), make_index()
    await here.add(ALICE, "vs_home", "file-kettle", rows(KETTLE))
    assert files(await here.search(ALICE, ["vs_home"], QUERY)) == ["file-kettle"]
    assert len(here.cache._entries) == 1

    # The other process replaces the file's text and adds another file: seen at the next search.
    await there.add(ALICE, "vs_home", "file-kettle", rows(TRAIN))
    await there.add(ALICE, "vs_home", "file-descale", rows("Descaling guide: calcium deposits and furring."))
    hits = await here.search(ALICE, ["vs_home"], QUERY)
    assert files(hits) == ["file-descale"]
    # And a removal.
    await there.remove_file("vs_home", "file-descale")
    assert await here.search(ALICE, ["vs_home"], QUERY) == []

    # Without memory to spare, vectors are read at each search, with the same results.
    uncached = SqlChunkIndex(store, here.embedder, cache_bytes=0)
    await there.add(ALICE, "vs_home", "file-descale", rows("Descaling guide: calcium deposits and furring."))
    assert files(await uncached.search(ALICE, ["vs_home"], QUERY)) == ["file-descale"]
    assert not uncached.cache._entries
