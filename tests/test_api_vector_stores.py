"""Vector stores over HTTP, through the official SDK with strict validation, on SQLite and PostgreSQL:
CRUD and limits, background ingestion to `completed` or `failed`, counts, batches, search, file
removal, isolation between users; and, in process, ingestion resumed after a restart.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docx
import openai
import pytest
import sqlalchemy as sa
from openai.types import VectorStore
from openai.types.vector_stores import VectorStoreFile

from assistants.config import Settings
from assistants.exceptions import InvalidRequestError
from assistants.ids import new_id, now
from assistants.search import DEFAULT_MAX_BYTES
from assistants.store import SqlStore, schema
from assistants.types import File
from assistants.types import VectorStore as StoredVectorStore
from assistants.types import VectorStoreFile as StoredVectorStoreFile
from assistants.types import VectorStoreFileBatch as StoredVectorStoreFileBatch
from assistants.types.requests import VectorStoreCreate, VectorStoreFileCreate
from tests.conftest import StartRuntime, sdk_client, server_on
from tests.scripted_model import ScriptedModel
from tests.server import Server
from tests.test_api_objects import error_of, raw, sdk_error
from tests.test_search_ingest import encrypt_pdf, make_pdf

POLL_SECONDS = 30.0

MANUAL = b"""# Kettle manual

## Descaling

Descale the kettle every month: fill it with equal parts white vinegar and water, boil once,
leave it for an hour, then rinse three times. Limescale shortens the heating element's life.

## Warranty

The warranty covers two years from purchase and excludes damage from dry boiling.
"""
GARDEN = b"Tomatoes need six hours of sun a day and deep watering twice a week in summer.\n"


def tag() -> str:
    return uuid.uuid4().hex[:12]


def upload(client: openai.OpenAI, name: str, content: bytes) -> str:
    return client.files.create(file=(name, content), purpose="assistants").id


def wait_until(check: Callable[[], Any], what: str, seconds: float = POLL_SECONDS) -> Any:
    """Poll `check` until it returns something truthy; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def settled(client: openai.OpenAI, store_id: str, file_id: str) -> VectorStoreFile:
    """The vector store file once ingestion has finished with it."""
    def check() -> VectorStoreFile | None:
        found = client.vector_stores.files.retrieve(file_id, vector_store_id=store_id)
        return None if found.status == "in_progress" else found

    result: VectorStoreFile = wait_until(check, f"{file_id} to leave in_progress")
    return result


def settled_store(client: openai.OpenAI, store_id: str) -> VectorStore:
    result: VectorStore = wait_until(
        lambda: (s := client.vector_stores.retrieve(store_id)).file_counts.in_progress == 0 and s, "the store to settle"
    )
    return result


# Vector stores ---------------------------------------------------------------------------------


def test_vector_store_crud(client: openai.OpenAI) -> None:
    created = client.vector_stores.create(
        name="Manuals", metadata={"team": "home"}, expires_after={"anchor": "last_active_at", "days": 7}
    )
    assert created.id.startswith("vs_") and created.object == "vector_store"
    assert created.name == "Manuals" and created.metadata == {"team": "home"}
    assert created.status == "completed" and created.usage_bytes == 0
    assert created.file_counts.model_dump() == {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0}
    assert created.expires_after is not None and created.expires_after.days == 7
    assert created.last_active_at is not None and abs(created.last_active_at - time.time()) < 120
    assert created.expires_at == created.last_active_at + 7 * 86400

    assert client.vector_stores.retrieve(created.id) == created

    updated = client.vector_stores.update(created.id, name="Home manuals", metadata={"team": "house"}, expires_after=None)
    assert (updated.name, updated.metadata, updated.expires_at) == ("Home manuals", {"team": "house"}, None)
    assert client.vector_stores.retrieve(created.id).name == "Home manuals"

    result = client.vector_stores.delete(created.id)
    assert (result.id, result.deleted, result.object) == (created.id, True, "vector_store.deleted")
    with pytest.raises(openai.NotFoundError) as missing:
        client.vector_stores.retrieve(created.id)
    assert created.id in sdk_error(missing.value)["message"]


def test_vector_store_list_pages_in_order(client: openai.OpenAI) -> None:
    ids = [client.vector_stores.create(name=f"page {n}").id for n in range(3)]
    first = client.vector_stores.list(limit=2, order="desc")
    assert [s.id for s in first.data] == ids[::-1][:2] and first.has_more
    second = client.vector_stores.list(limit=2, order="desc", after=first.data[-1].id)
    assert second.data[0].id == ids[0]
    ascending = client.vector_stores.list(limit=3, order="asc", after=ids[0])
    assert [s.id for s in ascending.data][:2] == ids[1:]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata." + "k" * 65),
        ({"expires_after": {"anchor": "last_active_at", "days": 0}}, "expires_after.days"),
        ({"expires_after": {"anchor": "created_at", "days": 3}}, "expires_after.anchor"),
        ({"file_ids": ["file-nope"]}, "file_ids[0]"),
        ({"name": "x", "colour": "red"}, "colour"),
        (
            {"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0}}},
            "chunking_strategy.static.max_chunk_size_tokens",
        ),
        (
            {"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 401}}},
            "chunking_strategy.static.chunk_overlap_tokens",
        ),
        # The spec requires both sizes of a static strategy, and the strategy itself.
        ({"chunking_strategy": {"type": "static", "static": {}}}, "chunking_strategy.static.max_chunk_size_tokens"),
        ({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 500}}}, "chunking_strategy.static.chunk_overlap_tokens"),
        ({"chunking_strategy": {"type": "static"}}, "chunking_strategy.static"),
        ({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": "big", "chunk_overlap_tokens": 0}}}, "chunking_strategy.static.max_chunk_size_tokens"),
        ({"chunking_strategy": {"type": "auto", "static": {}}}, "chunking_strategy.static"),
    ],
)
def test_vector_store_create_errors_name_the_field(client: openai.OpenAI, body: dict[str, Any], param: str) -> None:
    before = len(client.vector_stores.list(limit=100).data)
    with pytest.raises(openai.BadRequestError) as refused:
        client.post("/vector_stores", cast_to=object, body=body)
    error = sdk_error(refused.value)
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    assert len(client.vector_stores.list(limit=100).data) == before


# Files and ingestion ---------------------------------------------------------------------------


def test_text_file_is_ingested_and_found_by_search(client: openai.OpenAI) -> None:
    manual = upload(client, f"kettle-{tag()}.md", MANUAL)
    store = client.vector_stores.create(name="kettle", file_ids=[manual])
    added = client.vector_stores.files.retrieve(manual, vector_store_id=store.id)
    assert added.vector_store_id == store.id and added.object == "vector_store.file"

    done = settled(client, store.id, manual)
    assert done.status == "completed" and done.last_error is None
    assert done.usage_bytes > 0
    assert done.chunking_strategy is not None and done.chunking_strategy.type == "static"
    shown = client.vector_stores.retrieve(store.id)
    assert shown.status == "completed"
    assert (shown.file_counts.completed, shown.file_counts.total) == (1, 1)
    assert shown.usage_bytes == done.usage_bytes

    results = client.vector_stores.search(store.id, query="how often should I descale with vinegar?")
    assert results.data, "the manual was not found"
    best = results.data[0]
    assert best.file_id == manual and best.filename.startswith("kettle-")
    assert 0 < best.score < 1
    assert "white vinegar" in best.content[0].text and best.content[0].type == "text"

    content = list(client.vector_stores.files.content(manual, vector_store_id=store.id))
    assert content[0].type == "text" and content[0].text is not None and "Limescale" in content[0].text


def test_static_chunking_strategy_is_kept(client: openai.OpenAI) -> None:
    garden = upload(client, "garden.txt", GARDEN)
    store = client.vector_stores.create(name="garden")
    added = client.vector_stores.files.create(
        vector_store_id=store.id,
        file_id=garden,
        chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}},
    )
    assert added.status == "in_progress"
    done = settled(client, store.id, garden)
    assert done.status == "completed"
    assert done.chunking_strategy is not None and done.chunking_strategy.type == "static"
    assert done.chunking_strategy.static.max_chunk_size_tokens == 200  # type: ignore[union-attr]
    assert done.chunking_strategy.static.chunk_overlap_tokens == 50  # type: ignore[union-attr]
    # Adding the same file again returns it as it is.
    assert client.vector_stores.files.create(vector_store_id=store.id, file_id=garden).status == "completed"
    assert client.vector_stores.retrieve(store.id).file_counts.total == 1


def test_bad_files_fail_with_the_right_code(client: openai.OpenAI) -> None:
    garbage = upload(client, "notes.txt", bytes(range(256)) * 64)
    program = upload(client, "setup.exe", b"MZ\x90\x00\x03\x00\x00\x00" * 32)
    good = upload(client, "garden.txt", GARDEN)
    store = client.vector_stores.create(name="mixed", file_ids=[garbage, program, good])

    assert settled(client, store.id, garbage).last_error.code == "invalid_file"  # type: ignore[union-attr]
    unsupported = settled(client, store.id, program)
    assert unsupported.status == "failed" and unsupported.last_error is not None
    assert unsupported.last_error.code == "unsupported_file" and unsupported.last_error.message
    assert settled(client, store.id, good).status == "completed"

    counts = settled_store(client, store.id).file_counts
    assert (counts.failed, counts.completed, counts.in_progress, counts.total) == (2, 1, 0, 3)
    failed = client.vector_stores.files.list(store.id, filter="failed")
    assert {f.id for f in failed.data} == {garbage, program}
    assert [f.id for f in client.vector_stores.files.list(store.id, filter="completed").data] == [good]
    with pytest.raises(openai.BadRequestError) as refused:
        client.get(f"/vector_stores/{store.id}/files", cast_to=object, options={"params": {"filter": "done"}})
    assert sdk_error(refused.value)["param"] == "filter"


def every_kind_of_file() -> dict[str, tuple[bytes, str]]:
    """One file of each type file search reads, each with a word only it contains."""
    return {
        "notes.txt": (b"Plain notes about the zanzibarite mineral collection.\n", "zanzibarite"),
        "readme.md": (b"# Setup\n\nInstall the *quokkaflux* plugin first.\n", "quokkaflux"),
        "page.html": (b"<html><body><h1>Guide</h1><p>The marmalizer starts at dawn.</p><script>var x;</script></body></html>", "marmalizer"),
        "table.csv": (b"name,colour\nborgleberry,purple\n", "borgleberry"),
        "data.json": (b'{"fruit": "snozzcumber", "count": 3}', "snozzcumber"),
        "tool.py": (b"def frobnicate_wombat():\n    return 'done'\n", "frobnicate_wombat"),
        "report.pdf": (make_pdf("The annual report mentions the glimmerstone quarry."), "glimmerstone"),
        "letter.docx": (make_docx_with("Dear reader, the thistlewick festival is next week."), "thistlewick"),
    }


def make_docx_with(paragraph: str) -> bytes:
    document = docx.Document()
    document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_every_supported_type_is_ingested_and_found_by_its_own_word(client: openai.OpenAI) -> None:
    files = every_kind_of_file()
    ids = {name: upload(client, name, content) for name, (content, _) in files.items()}
    store = client.vector_stores.create(name=f"every type {tag()}")
    batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=list(ids.values()))

    done = wait_until(
        lambda: (b := client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)).status != "in_progress" and b,
        "the batch to finish",
    )
    failed = {f.id: f.last_error for f in client.vector_stores.files.list(store.id, filter="failed", limit=100).data}
    assert done.status == "completed" and not failed, failed
    assert (done.file_counts.completed, done.file_counts.total) == (len(files), len(files))
    for name, (_, word) in files.items():
        hits = client.vector_stores.search(store.id, query=word).data
        assert hits, f"{word} did not find {name}"
        assert (hits[0].file_id, hits[0].filename) == (ids[name], name), (word, [h.filename for h in hits])
        assert word in hits[0].content[0].text


def test_bad_files_of_every_kind_fail_saying_why(client: openai.OpenAI) -> None:
    corrupt_docx = bytearray(make_docx_with("Nothing to see."))
    corrupt_docx[len(corrupt_docx) // 2 : len(corrupt_docx) // 2 + 200] = b"\0" * 200
    bad = {
        "secret.pdf": (encrypt_pdf(make_pdf("Secret plans."), user_password="hunter2", algorithm="AES-128"), "protected by a password"),
        "broken.docx": (bytes(corrupt_docx), "not a readable Word document"),
        "empty.txt": (b"", "empty"),
        "program.bin": (bytes(range(256)) * 16, "cannot read .bin files"),
    }
    ids = {name: upload(client, name, content) for name, (content, _) in bad.items()}
    good = upload(client, "garden.txt", GARDEN)
    store = client.vector_stores.create(name=f"bad files {tag()}")
    client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[*ids.values(), good])

    for name, (_, says) in bad.items():
        entry = settled(client, store.id, ids[name])
        assert entry.status == "failed" and entry.last_error is not None, (name, entry)
        assert says in entry.last_error.message and name in entry.last_error.message, (name, entry.last_error)
        assert entry.last_error.code == ("unsupported_file" if name == "program.bin" else "invalid_file"), entry.last_error
        assert entry.usage_bytes == 0
    assert settled(client, store.id, good).status == "completed"
    shown = settled_store(client, store.id)
    counts = shown.file_counts
    assert (counts.failed, counts.completed, counts.in_progress, counts.cancelled, counts.total) == (4, 1, 0, 0, 5)
    assert counts.failed + counts.completed + counts.in_progress + counts.cancelled == counts.total
    assert shown.status == "completed"
    assert [hit.file_id for hit in client.vector_stores.search(store.id, query="tomatoes sun").data] == [good]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def small_ingest_server(
    request: pytest.FixtureRequest, scripted_model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server whose file search reads files of at most 2 KB (`ASSISTANTS_MAX_INGEST_BYTES`)."""
    folder = tmp_path_factory.mktemp(f"small-ingest-{request.param}")
    with server_on(request.param, folder, scripted_model, {"ASSISTANTS_MAX_INGEST_BYTES": "2048"}) as srv:
        yield srv


def test_a_file_over_the_ingestion_limit_fails_naming_the_limit(small_ingest_server: Server) -> None:
    client = sdk_client(small_ingest_server, "alice")
    fits = upload(client, "fits.txt", b"Tomatoes need sun. " * 100)  # 1,900 bytes
    big = upload(client, "big.txt", b"Tomatoes need sun. " * 200)  # 3,800 bytes
    store = client.vector_stores.create(name="limited", file_ids=[fits, big])

    assert settled(client, store.id, fits).status == "completed"
    refused = settled(client, store.id, big)
    assert refused.status == "failed" and refused.last_error is not None
    assert refused.last_error.code == "invalid_file"
    assert "big.txt is 3.7 KB, over the 2.0 KB limit for file search" in refused.last_error.message
    counts = settled_store(client, store.id).file_counts
    assert (counts.completed, counts.failed, counts.total) == (1, 1, 2)
    assert [hit.file_id for hit in client.vector_stores.search(store.id, query="tomatoes").data] == [fits]


def test_the_ingestion_limit_defaults_to_what_extract_text_reads() -> None:
    assert Settings.model_fields["max_ingest_bytes"].default == DEFAULT_MAX_BYTES == 50 * 1024 * 1024


def test_deleting_a_file_removes_its_chunks_but_not_the_file(client: openai.OpenAI) -> None:
    manual = upload(client, "manual.md", MANUAL)
    garden = upload(client, "garden.txt", GARDEN)
    store = client.vector_stores.create(name="both", file_ids=[manual, garden])
    settled_store(client, store.id)
    assert client.vector_stores.search(store.id, query="descale vinegar").data

    result = client.vector_stores.files.delete(manual, vector_store_id=store.id)
    assert (result.id, result.deleted, result.object) == (manual, True, "vector_store.file.deleted")

    assert client.vector_stores.search(store.id, query="descale vinegar").data == []
    assert [hit.file_id for hit in client.vector_stores.search(store.id, query="tomatoes sun").data] == [garden]
    shown = client.vector_stores.retrieve(store.id)
    assert (shown.file_counts.total, shown.file_counts.completed) == (1, 1)
    assert client.files.retrieve(manual).id == manual
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(manual, vector_store_id=store.id)
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.delete(manual, vector_store_id=store.id)


def test_deleting_the_file_itself_takes_it_out_of_its_stores(client: openai.OpenAI) -> None:
    manual = upload(client, "manual.md", MANUAL)
    garden = upload(client, "garden.txt", GARDEN)
    store = client.vector_stores.create(name="files go", file_ids=[manual, garden])
    settled_store(client, store.id)
    assert client.vector_stores.search(store.id, query="descale vinegar").data

    assert client.files.delete(manual).deleted

    assert client.vector_stores.search(store.id, query="descale vinegar").data == []
    assert [f.id for f in client.vector_stores.files.list(store.id).data] == [garden]
    assert client.vector_stores.retrieve(store.id).file_counts.total == 1


def test_taking_out_every_file_listed_while_the_sdk_pages_through_them(client: openai.OpenAI) -> None:
    """Each next page is asked for after the last file of the one before, which is gone by then;
    the same file in two stores, and taken out of one store twice, keeps each place apart."""
    files = [upload(client, f"note-{i}.txt", f"Note number {i} about kettles.\n".encode()) for i in range(5)]
    store, other = (client.vector_stores.create(name=f"paged {tag()}", file_ids=files) for _ in range(2))
    settled_store(client, store.id)
    settled_store(client, other.id)
    again = client.vector_stores.files.delete(files[0], vector_store_id=store.id)
    assert again.deleted
    settled(client, store.id, client.vector_stores.files.create(store.id, file_id=files[0]).id)

    taken = []
    for entry in client.vector_stores.files.list(store.id, limit=2):
        assert client.vector_stores.files.delete(entry.id, vector_store_id=store.id).deleted
        taken.append(entry.id)
    assert sorted(taken) == sorted(files)
    assert client.vector_stores.files.list(store.id).data == []
    assert sorted(f.id for f in client.vector_stores.files.list(other.id, limit=100).data) == sorted(files)


def test_deleting_a_store_removes_its_chunks(client: openai.OpenAI) -> None:
    manual = upload(client, "manual.md", MANUAL)
    store = client.vector_stores.create(name="gone", file_ids=[manual])
    settled_store(client, store.id)
    client.vector_stores.delete(store.id)
    other = client.vector_stores.create(name="other")
    # A new store knows nothing of the old one's chunks, and the old one is gone everywhere.
    assert client.vector_stores.search(other.id, query="descale vinegar").data == []
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.search(store.id, query="descale")
    assert client.files.retrieve(manual).id == manual


# Batches ---------------------------------------------------------------------------------------


def test_file_batch_ingests_and_lists_its_files(client: openai.OpenAI) -> None:
    manual = upload(client, "manual.md", MANUAL)
    garden = upload(client, "garden.txt", GARDEN)
    store = client.vector_stores.create(name="batch")
    batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[manual, garden])
    assert batch.id.startswith("vsfb_") and batch.object == "vector_store.files_batch"
    assert batch.vector_store_id == store.id and batch.file_counts.total == 2

    done = wait_until(
        lambda: (b := client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)).status != "in_progress" and b,
        "the batch to finish",
    )
    assert done.status == "completed"
    assert (done.file_counts.completed, done.file_counts.total) == (2, 2)
    listed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    assert {f.id for f in listed.data} == {manual, garden}
    with pytest.raises(openai.BadRequestError) as refused:
        client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert "completed" in sdk_error(refused.value)["message"]

    with pytest.raises(openai.BadRequestError) as unknown:
        client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[manual, "file-nope"])
    assert sdk_error(unknown.value)["param"] == "file_ids[1]"


def test_file_batch_takes_files_each_with_its_own_attributes_and_chunking(client: openai.OpenAI) -> None:
    """The spec's `files` form: per-file attributes and chunking strategy, where `file_ids` share the batch's."""
    manual = upload(client, "manual.md", MANUAL)
    garden = upload(client, "garden.txt", GARDEN)
    store = client.vector_stores.create(name="per file")
    small = {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}}
    batch = client.vector_stores.file_batches.create(
        vector_store_id=store.id,
        files=[
            {"file_id": manual, "attributes": {"kind": "manual", "pages": 2}, "chunking_strategy": small},  # type: ignore[typeddict-item]
            {"file_id": garden, "attributes": {"kind": "notes"}},
        ],
    )
    assert batch.vector_store_id == store.id and batch.file_counts.total == 2
    settled_store(client, store.id)
    files = {f.id: f for f in client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id).data}
    assert files.keys() == {manual, garden} and {f.status for f in files.values()} == {"completed"}
    assert files[manual].attributes == {"kind": "manual", "pages": 2}
    assert files[garden].attributes == {"kind": "notes"}
    manual_sizes, garden_sizes = (files[i].chunking_strategy for i in (manual, garden))
    assert manual_sizes.type == "static" and (manual_sizes.static.max_chunk_size_tokens, manual_sizes.static.chunk_overlap_tokens) == (200, 50)
    assert garden_sizes.type == "static" and garden_sizes.static.max_chunk_size_tokens == 800
    # The attributes are the files' own: search filters on them.
    hits = client.vector_stores.search(store.id, query="tomatoes kettle", filters={"type": "eq", "key": "kind", "value": "notes"})
    assert {hit.file_id for hit in hits.data} == {garden}


def test_file_batch_needs_file_ids_or_files_and_writes_nothing_when_refused(server: Server, client: openai.OpenAI) -> None:
    manual = upload(client, "manual.md", MANUAL)
    store = client.vector_stores.create(name="refusing")
    url = f"/vector_stores/{store.id}/file_batches"
    for body, param in (
        ({}, "file_ids"),
        ({"attributes": {"kind": "manual"}}, "file_ids"),
        ({"file_ids": [manual], "files": [{"file_id": manual}]}, "files"),
        ({"files": []}, "files"),
        ({"files": [{"file_id": manual}, {"file_id": "file-nope"}]}, "files[1].file_id"),
        ({"files": [{"attributes": {"kind": "manual"}}]}, "files[0].file_id"),
        ({"files": [{"file_id": manual, "attributes": {f"k{n}": n for n in range(17)}}]}, "files[0].attributes"),
        (
            {"files": [{"file_id": manual, "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0}}}]},
            "files[0].chunking_strategy.static.max_chunk_size_tokens",
        ),
        ({"files": [{"file_id": manual, "chunking_strategy": {"type": "static"}}]}, "files[0].chunking_strategy.static"),
        ({"file_ids": [manual], "chunking_strategy": {"type": "static", "static": {}}}, "chunking_strategy.static.max_chunk_size_tokens"),
    ):
        with raw(server) as http:
            response = http.post(url, json=body)
        assert response.status_code == 400, (body, response.text)
        error = error_of(response)
        assert error["type"] == "invalid_request_error" and error["param"] == param, (body, error)
        assert param in error["message"]
    assert client.vector_stores.files.list(store.id).data == []
    assert client.vector_stores.retrieve(store.id).file_counts.total == 0


async def test_cancelling_a_batch_cancels_files_not_yet_ingested(start_runtime: StartRuntime) -> None:
    """Rows written as `create_batch` writes them, but not yet queued, so the cancel always comes first."""
    runtime = await start_runtime()
    engine = runtime.engine
    stores = engine.vector_stores
    files = [
        await engine.create_file("user_1", filename=f"note-{n}.txt", purpose="assistants", content=GARDEN) for n in range(3)
    ]
    store = StoredVectorStore(id=new_id("vector_store"), created_at=now(), last_active_at=now())
    batch = StoredVectorStoreFileBatch(id=new_id("file_batch"), created_at=now(), vector_store_id=store.id)
    async with engine.store.transaction() as tx:
        await tx.insert(store, owner="user_1")
        await tx.insert(batch, owner="user_1")
        for file, status in zip(files, ("in_progress", "in_progress", "completed"), strict=True):
            entry = StoredVectorStoreFile(id=file.id, created_at=now(), vector_store_id=store.id, status=status)
            await tx.insert(entry, owner="user_1", batch_id=batch.id)

    cancelled = await stores.cancel_batch("user_1", store.id, batch.id)

    assert cancelled.status == "cancelled"
    counts = cancelled.file_counts
    assert (counts.in_progress, counts.cancelled, counts.completed, counts.total) == (0, 2, 1, 3)
    # An ingestion that was already under way when the cancel came stores nothing.
    await stores.ingest("user_1", store.id, files[0].id)
    assert (await stores.get_file("user_1", store.id, files[0].id)).status == "cancelled"
    assert await stores.index.count(store.id) == 0
    with pytest.raises(InvalidRequestError):
        await stores.cancel_batch("user_1", store.id, batch.id)


# Search ----------------------------------------------------------------------------------------


def test_search_options_and_errors(client: openai.OpenAI) -> None:
    manual = upload(client, "manual.md", MANUAL)
    store = client.vector_stores.create(name="search", file_ids=[manual])
    settled_store(client, store.id)

    page = client.vector_stores.search(store.id, query=["warranty", "dry boiling"], max_num_results=1)
    assert page.search_query == ["warranty", "dry boiling"] and len(page.data) == 1
    assert page.data[0].attributes == {}
    updated = client.vector_stores.files.update(manual, vector_store_id=store.id, attributes={"lang": "en", "pages": 2, "draft": False})
    assert updated.attributes == {"lang": "en", "pages": 2, "draft": False}
    [hit] = client.vector_stores.search(store.id, query="warranty", max_num_results=1).data
    assert hit.attributes == {"lang": "en", "pages": 2, "draft": False}
    with pytest.raises(openai.BadRequestError) as too_many:
        client.vector_stores.files.update(manual, vector_store_id=store.id, attributes={f"k{n}": n for n in range(17)})
    assert sdk_error(too_many.value)["param"] == "attributes"
    strict = client.vector_stores.search(store.id, query="warranty", ranking_options={"score_threshold": 0.999})
    assert strict.data == []
    assert client.vector_stores.search(store.id, query="the of and").data == []

    for body, param in [
        ({"query": "x", "max_num_results": 51}, "max_num_results"),
        ({"query": "x", "max_num_results": 0}, "max_num_results"),
        ({"query": "x", "filters": {"type": "like", "key": "a", "value": "b"}}, "filters.type"),
        ({"query": "x", "filters": {"type": "and", "filters": [{"type": "eq", "key": "a"}]}}, "filters.filters[0].value"),
        ({"query": "x", "filters": {"type": "in", "key": "a", "value": "b"}}, "filters.value"),
        ({"query": "x", "filters": {"type": "gt", "key": "a", "value": True}}, "filters.value"),
        ({"query": "x", "filters": {"type": "or", "filters": []}}, "filters.filters"),
        ({"query": "x", "filters": {"type": "eq", "key": "", "value": 1}}, "filters.key"),
        ({"query": "x", "filters": {"type": "eq", "key": "a", "value": 1, "extra": 2}}, "filters.extra"),
        ({"query": "x", "ranking_options": {"score_threshold": 2}}, "ranking_options.score_threshold"),
        ({}, "query"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.post(f"/vector_stores/{store.id}/search", cast_to=object, body=body)
        assert sdk_error(refused.value)["param"] == param, body


def test_search_filters_on_file_attributes(client: openai.OpenAI) -> None:
    docs = {
        "manual.md": (MANUAL, {"kind": "manual", "year": 2024, "published": "2024-03-01", "draft": False}),
        "garden.txt": (GARDEN, {"kind": "notes", "year": 2021, "published": "2021-06-15", "draft": True}),
        "recipes.txt": (b"Boil the water for tea, then descale the kettle and garden tools.\n", {"kind": "notes"}),
    }
    store = client.vector_stores.create(name="filtered")
    ids = {}
    for name, (content, attributes) in docs.items():
        ids[name] = upload(client, name, content)
        client.vector_stores.files.create(vector_store_id=store.id, file_id=ids[name], attributes=attributes)
    settled_store(client, store.id)
    names = {file_id: name for name, file_id in ids.items()}
    query = "descale kettle water garden sun"

    def found(filters: Any) -> set[str]:
        return {names[hit.file_id] for hit in client.vector_stores.search(store.id, query=query, filters=filters).data}

    assert found({"type": "eq", "key": "kind", "value": "notes"}) == {"garden.txt", "recipes.txt"}
    assert found({"type": "ne", "key": "kind", "value": "notes"}) == {"manual.md"}
    assert found({"type": "gte", "key": "year", "value": 2022}) == {"manual.md"}
    assert found({"type": "lt", "key": "published", "value": "2022-01-01"}) == {"garden.txt"}
    assert found({"type": "eq", "key": "draft", "value": True}) == {"garden.txt"}
    assert found({"type": "in", "key": "year", "value": [2021, 2020]}) == {"garden.txt"}
    # A file without the attribute matches only `ne` / `nin`; a string never equals a number.
    assert found({"type": "nin", "key": "year", "value": [2024]}) == {"garden.txt", "recipes.txt"}
    assert found({"type": "eq", "key": "year", "value": "2024"}) == set()
    assert found(
        {"type": "or", "filters": [
            {"type": "and", "filters": [{"type": "eq", "key": "kind", "value": "notes"}, {"type": "eq", "key": "draft", "value": True}]},
            {"type": "gt", "key": "year", "value": 2023},
        ]}
    ) == {"garden.txt", "manual.md"}


# Isolation -------------------------------------------------------------------------------------


def test_another_users_store_is_not_found_everywhere(client: openai.OpenAI, other_client: openai.OpenAI) -> None:
    manual = upload(client, "manual.md", MANUAL)
    store = client.vector_stores.create(name="private", file_ids=[manual])
    settled_store(client, store.id)
    batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[manual])
    bob_file = upload(other_client, "garden.txt", GARDEN)

    attempts: list[Callable[[], Any]] = [
        lambda: other_client.vector_stores.retrieve(store.id),
        lambda: other_client.vector_stores.update(store.id, name="mine"),
        lambda: other_client.vector_stores.delete(store.id),
        lambda: other_client.vector_stores.search(store.id, query="descale"),
        lambda: other_client.vector_stores.files.list(store.id),
        lambda: other_client.vector_stores.files.retrieve(manual, vector_store_id=store.id),
        lambda: other_client.vector_stores.files.create(vector_store_id=store.id, file_id=bob_file),
        lambda: other_client.vector_stores.files.delete(manual, vector_store_id=store.id),
        lambda: other_client.vector_stores.files.update(manual, vector_store_id=store.id, attributes={"a": "b"}),
        lambda: list(other_client.vector_stores.files.content(manual, vector_store_id=store.id)),
        lambda: other_client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[bob_file]),
        lambda: other_client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id),
        lambda: other_client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id),
        lambda: other_client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id),
    ]
    for attempt in attempts:
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert store.id not in {s.id for s in other_client.vector_stores.list(limit=100).data}

    # Bob cannot put Alice's file into his own store either.
    own = other_client.vector_stores.create(name="bob's")
    with pytest.raises(openai.BadRequestError) as refused:
        other_client.vector_stores.files.create(vector_store_id=own.id, file_id=manual)
    assert sdk_error(refused.value)["param"] == "file_id"
    # And his searches never see her chunks.
    assert other_client.vector_stores.search(own.id, query="descale vinegar").data == []
    assert client.vector_stores.retrieve(store.id).name == "private"


# Activity --------------------------------------------------------------------------------------


def set_activity(server: Server, store_id: str, *, last_active_at: int, expires_at: int) -> None:
    """Write a store's activity into the server's database, as a day without use would leave it."""
    url = server.env.get("ASSISTANTS_DATABASE_URL") or f"sqlite+aiosqlite:///{server.env['ASSISTANTS_DATA_DIR']}/assistants.db"

    async def write() -> None:
        database = SqlStore.from_url(url)
        try:
            async with database.transaction() as tx:
                found = await tx.get(StoredVectorStore, store_id, owner=None)
                await tx.save(found.model_copy(update={"last_active_at": last_active_at, "expires_at": expires_at}))
        finally:
            await database.close()

    asyncio.run(write())


def test_a_store_is_active_when_a_run_uses_it_and_when_files_are_added(
    server: Server, client: openai.OpenAI, model: ScriptedModel
) -> None:
    """As on the hosted API: a run that has the store (through its assistant or its thread) starts,
    or files are added to it, and its one-day expiry starts again, though nothing searched it."""
    day = {"anchor": "last_active_at", "days": 1}
    manual = upload(client, "manual.md", MANUAL)
    garden = upload(client, "garden.txt", GARDEN)
    of_assistant = client.vector_stores.create(name="assistant's", file_ids=[manual], expires_after=day)  # type: ignore[arg-type]
    of_thread = client.vector_stores.create(name="thread's", expires_after=day)  # type: ignore[arg-type]
    settled_store(client, of_assistant.id)
    assistant = client.beta.assistants.create(
        model="scripted-model", tools=[{"type": "file_search"}], tool_resources={"file_search": {"vector_store_ids": [of_assistant.id]}}
    )
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "Hello"}], tool_resources={"file_search": {"vector_store_ids": [of_thread.id]}}
    )

    def about_to_expire(*store_ids: str) -> int:
        """Last used almost a day ago; returns the time just before the next action."""
        stamp = int(time.time())
        for store_id in store_ids:
            set_activity(server, store_id, last_active_at=stamp - 86_000, expires_at=stamp + 400)
            shown = client.vector_stores.retrieve(store_id)
            assert (shown.last_active_at, shown.expires_at, shown.status) == (stamp - 86_000, stamp + 400, "completed")
        return stamp

    def assert_active_since(stamp: int, store_id: str) -> None:
        shown = client.vector_stores.retrieve(store_id)
        assert shown.last_active_at is not None and shown.last_active_at >= stamp, (stamp, shown)
        assert shown.expires_at == shown.last_active_at + 86_400, shown

    # A run that answers without searching still uses both stores.
    before = about_to_expire(of_assistant.id, of_thread.id)
    model.add_text("Hello to you.")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "completed", run.last_error
    assert not any(s.step_details.type == "tool_calls" for s in client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data)
    assert_active_since(before, of_assistant.id)
    assert_active_since(before, of_thread.id)

    # Adding a file, alone or in a batch.
    before = about_to_expire(of_thread.id)
    client.vector_stores.files.create(vector_store_id=of_thread.id, file_id=garden)
    assert_active_since(before, of_thread.id)
    settled_store(client, of_thread.id)  # (the store shows `in_progress` while the file is indexed)
    before = about_to_expire(of_thread.id)
    client.vector_stores.file_batches.create(vector_store_id=of_thread.id, file_ids=[manual])
    assert_active_since(before, of_thread.id)


# Restart ---------------------------------------------------------------------------------------


async def test_ingestion_resumes_after_a_restart(start_runtime: StartRuntime) -> None:
    """Files a previous process left `in_progress` are ingested at start-up, or failed if their File is gone."""
    first = await start_runtime()
    engine = first.engine
    kept = await engine.create_file("user_1", filename="manual.md", purpose="assistants", content=MANUAL)
    lost = await engine.create_file("user_1", filename="garden.txt", purpose="assistants", content=GARDEN)
    store = StoredVectorStore(id=new_id("vector_store"), created_at=now(), last_active_at=now())
    # The rows a crash leaves behind: files added but never ingested by the process that added them.
    async with engine.store.transaction() as tx:
        await tx.insert(store, owner="user_1")
        for file in (kept, lost):
            await tx.insert(StoredVectorStoreFile(id=file.id, created_at=now(), vector_store_id=store.id), owner="user_1")
        # And a File deleted in the same crash, before its vector store entries were taken out.
        await tx.delete(File, lost.id, owner="user_1")
    await first.close()

    second = await start_runtime()
    stores = second.engine.vector_stores
    deadline = time.monotonic() + POLL_SECONDS
    while (await stores.get("user_1", store.id)).file_counts.in_progress and time.monotonic() < deadline:
        await asyncio_sleep()
    assert (await stores.get_file("user_1", store.id, kept.id)).status == "completed"
    failed = await stores.get_file("user_1", store.id, lost.id)
    assert failed.status == "failed" and failed.last_error is not None
    assert failed.last_error.code == "invalid_file" and "deleted" in failed.last_error.message
    hits = await stores.index.search("user_1", [store.id], "descale vinegar")
    assert hits and hits[0].file_id == kept.id


async def test_a_file_whose_ingestion_was_cut_short_three_times_fails_instead_of_a_fourth_try(start_runtime: StartRuntime) -> None:
    """Each start of a file's ingestion is counted before the work: one that a process never
    finished three times (a file taking the server down with it) fails at the next start."""
    first = await start_runtime()
    engine = first.engine
    doomed = await engine.create_file("user_1", filename="doomed.md", purpose="assistants", content=MANUAL)
    lucky = await engine.create_file("user_1", filename="garden.txt", purpose="assistants", content=GARDEN)
    store = StoredVectorStore(id=new_id("vector_store"), created_at=now(), last_active_at=now())
    # The rows three (and two) killed starts leave: in progress, their starts counted.
    async with engine.store.transaction() as tx:
        await tx.insert(store, owner="user_1")
        for file, starts in ((doomed, 3), (lucky, 2)):
            await tx.insert(StoredVectorStoreFile(id=file.id, created_at=now(), vector_store_id=store.id), owner="user_1")
            for _ in range(starts):
                await tx.start_ingestion(store.id, file.id)
    await first.close()

    second = await start_runtime()
    stores = second.engine.vector_stores
    await asyncio.wait_for(stores.wait_for_ingestion([store.id]), POLL_SECONDS)
    failed = await stores.get_file("user_1", store.id, doomed.id)
    assert failed.status == "failed" and failed.last_error is not None
    assert failed.last_error.code == "server_error"
    assert "Indexing doomed.md was interrupted repeatedly (3 times)" in failed.last_error.message
    assert (await stores.get_file("user_1", store.id, lucky.id)).status == "completed"
    assert [hit.file_id for hit in await stores.index.search("user_1", [store.id], "descale vinegar tomatoes")] == [lucky.id]
    # A file added again is a new entry, tried afresh.
    await stores.delete_file("user_1", store.id, doomed.id)
    await stores.add_file("user_1", store.id, VectorStoreFileCreate(file_id=doomed.id))
    await asyncio.wait_for(stores.wait_for_ingestion([store.id]), POLL_SECONDS)
    assert (await stores.get_file("user_1", store.id, doomed.id)).status == "completed"


async def test_new_files_do_not_start_again_a_file_whose_ingestion_is_already_under_way(start_runtime: StartRuntime) -> None:
    """Adding files queues only files whose ingestion nobody has started: one already started (by
    another process on the same database, here a row with its start counted) is not indexed a
    second time, nor counted again, which would fail a good file after a few additions."""
    runtime = await start_runtime()
    engine = runtime.engine
    stores = engine.vector_stores
    busy = await engine.create_file("user_1", filename="busy.md", purpose="assistants", content=MANUAL)
    store = await stores.create("user_1", VectorStoreCreate(name="shared"))
    async with engine.store.transaction() as tx:
        await tx.insert(StoredVectorStoreFile(id=busy.id, created_at=now(), vector_store_id=store.id), owner="user_1")
        assert await tx.start_ingestion(store.id, busy.id) == 1  # the other process has started it
    for name, content in (("one.txt", GARDEN), ("two.txt", GARDEN + b" again")):
        added = await engine.create_file("user_1", filename=name, purpose="assistants", content=content)
        await stores.add_file("user_1", store.id, VectorStoreFileCreate(file_id=added.id))
        await stores.kick()  # as the engine does after committing files a message attaches
        deadline = time.monotonic() + POLL_SECONDS
        while (await stores.get_file("user_1", store.id, added.id)).status == "in_progress" and time.monotonic() < deadline:
            await asyncio_sleep()
        assert (await stores.get_file("user_1", store.id, added.id)).status == "completed"
    assert (await stores.get_file("user_1", store.id, busy.id)).status == "in_progress"
    async with engine.store.read() as tx:
        table = schema.vector_store_files
        query = sa.select(table.c.ingest_attempts).where(table.c.vector_store_id == store.id, table.c.id == busy.id)
        assert (await tx.conn.execute(query)).scalar_one() == 1


async def asyncio_sleep() -> None:
    import asyncio

    await asyncio.sleep(0.05)


# Tool resources --------------------------------------------------------------------------------


def test_tool_resources_must_name_the_users_own_vector_stores(client: openai.OpenAI, other_client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="for the assistant")
    resources = {"file_search": {"vector_store_ids": [store.id]}}
    assistant = client.beta.assistants.create(model="scripted-model", tools=[{"type": "file_search"}], tool_resources=resources)
    assert assistant.tool_resources is not None and assistant.tool_resources.file_search is not None
    assert assistant.tool_resources.file_search.vector_store_ids == [store.id]
    thread = client.beta.threads.create(tool_resources=resources)
    assert client.beta.threads.update(thread.id, tool_resources=resources).id == thread.id

    bad = {"file_search": {"vector_store_ids": ["vs_nope"]}}
    param = "tool_resources.file_search.vector_store_ids[0]"
    attempts: list[Callable[[], Any]] = [
        lambda: client.beta.assistants.create(model="scripted-model", tool_resources=bad),
        lambda: client.beta.assistants.update(assistant.id, tool_resources=bad),
        lambda: client.beta.threads.create(tool_resources=bad),
        lambda: client.beta.threads.update(thread.id, tool_resources=bad),
        lambda: other_client.beta.assistants.create(model="scripted-model", tool_resources=resources),
        lambda: other_client.beta.threads.create(tool_resources=resources),
    ]
    for attempt in attempts:
        with pytest.raises(openai.BadRequestError) as refused:
            attempt()
        assert sdk_error(refused.value)["param"] == param
    assert client.beta.assistants.retrieve(assistant.id).tool_resources == assistant.tool_resources


def test_tool_resources_vector_stores_helper_creates_a_store(client: openai.OpenAI) -> None:
    manual = upload(client, "manual.md", MANUAL)
    helper = {"file_search": {"vector_stores": [{"file_ids": [manual], "metadata": {"made": "by helper"}}]}}
    thread = client.beta.threads.create(tool_resources=helper)  # type: ignore[arg-type]
    assert thread.tool_resources is not None and thread.tool_resources.file_search is not None
    [store_id] = thread.tool_resources.file_search.vector_store_ids or []
    store = settled_store(client, store_id)
    assert store.metadata == {"made": "by helper"} and store.name == "" and store.file_counts.completed == 1
    assert client.vector_stores.search(store_id, query="descale vinegar").data[0].file_id == manual

    for bad, param in [
        ({"file_search": {"vector_stores": [{"file_ids": ["file-nope"]}]}}, "tool_resources.file_search.vector_stores[0].file_ids[0]"),
        (
            {"file_search": {"vector_stores": [{"file_ids": [manual], "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 5000, "chunk_overlap_tokens": 0}}}]}},
            "tool_resources.file_search.vector_stores[0].chunking_strategy.static.max_chunk_size_tokens",
        ),
        ({"file_search": {"vector_store_ids": [store_id], "vector_stores": [{"file_ids": [manual]}]}}, "tool_resources.file_search"),
        (
            {"file_search": {"vector_stores": [{"file_ids": [manual], "chunking_strategy": {"type": "static", "static": {}}}]}},
            "tool_resources.file_search.vector_stores[0].chunking_strategy.static.max_chunk_size_tokens",
        ),
        (
            {"file_search": {"vector_stores": [{"file_ids": [manual], "chunking_strategy": {"type": "static"}}]}},
            "tool_resources.file_search.vector_stores[0].chunking_strategy.static",
        ),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.beta.assistants.create(model="scripted-model", tool_resources=bad)  # type: ignore[arg-type]
        assert sdk_error(refused.value)["param"] == param
