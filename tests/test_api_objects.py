"""The object API over HTTP, through the official SDK: CRUD, ids, metadata limits, pagination,
validation errors, auth, isolation between users, our thread-listing extension, models and 404s.

Every test runs against the real server on SQLite and on PostgreSQL (the `server` fixture). Users
alice and bob are shared by all tests, so lists are never assumed empty: tests compare counts
before and after, or filter by a unique tag they put in metadata.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import sdk_client
from tests.scripted_model import ScriptedModel
from tests.server import Server

MODEL = "scripted-model"

# The SDK marks the whole Assistants client deprecated; using it is this project's point.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# Helpers -------------------------------------------------------------------------------------


def tag() -> str:
    """A value no other test uses, to find this test's objects in shared lists."""
    return uuid.uuid4().hex[:12]


def raw(server: Server, user: str | None = "alice") -> httpx.Client:
    """A plain HTTP client on `/v1`, with `user`'s bearer key (none when `user` is None)."""
    headers = {"Authorization": f"Bearer {server.key_for(user)}"} if user else {}
    return httpx.Client(base_url=server.api_url, headers=headers, timeout=30)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of an OpenAI-shaped error body, checking the shape on the way."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    return error


def sdk_error(exc: openai.APIStatusError) -> dict[str, Any]:
    return error_of(exc.response)


def assert_recent(timestamp: int) -> None:
    """A Unix-seconds timestamp from this test run (not milliseconds, not zero)."""
    assert isinstance(timestamp, int)
    assert abs(timestamp - time.time()) < 120, timestamp


def list_threads(client: openai.OpenAI, **params: Any) -> dict[str, Any]:
    """One page of our `GET /v1/threads` extension."""
    page = client.get("/threads", cast_to=object, options={"params": params})
    assert isinstance(page, dict)
    return page


def all_threads(client: openai.OpenAI, **params: Any) -> list[dict[str, Any]]:
    """Every thread the extension lists for these filters, following `after` cursors."""
    found: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(1000):
        page = list_threads(client, limit=100, **params, **({"after": after} if after else {}))
        found += page["data"]
        if not page["has_more"]:
            return found
        after = page["last_id"]
    raise AssertionError("the thread list never ended")


def count_assistants(client: openai.OpenAI) -> int:
    return sum(1 for _ in client.beta.assistants.list(limit=100))


def count_files(client: openai.OpenAI) -> int:
    return sum(1 for _ in client.files.list(limit=100))


def message_ids(client: openai.OpenAI, thread_id: str) -> list[str]:
    return [
        m.id for m in client.beta.threads.messages.list(thread_id=thread_id, order="asc", limit=100)
    ]


def weather_tool() -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }


# Assistants ----------------------------------------------------------------------------------


def test_assistant_crud(client: openai.OpenAI) -> None:
    created = client.beta.assistants.create(
        model=MODEL,
        name="Weather bot",
        description="Answers weather questions",
        instructions="Be brief.",
        tools=[weather_tool(), {"type": "code_interpreter"}],
        metadata={"team": "alpha", "env": "test"},
        temperature=0.5,
        top_p=0.9,
    )
    assert created.id.startswith("asst_") and len(created.id) > len("asst_")
    assert created.object == "assistant"
    assert_recent(created.created_at)
    assert created.name == "Weather bot"
    assert created.model == MODEL
    assert created.temperature == 0.5 and created.top_p == 0.9
    assert created.metadata == {"team": "alpha", "env": "test"}
    assert [t.type for t in created.tools] == ["function", "code_interpreter"]
    function = created.tools[0]
    assert function.type == "function"
    assert function.function.name == "get_weather"
    assert function.function.parameters == weather_tool()["function"]["parameters"]

    fetched = client.beta.assistants.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()

    # A partial update changes only what it names; metadata given is a replacement, not a merge.
    updated = client.beta.assistants.update(
        created.id, name="Forecaster", metadata={"team": "beta"}
    )
    assert updated.id == created.id and updated.created_at == created.created_at
    assert updated.name == "Forecaster"
    assert updated.metadata == {"team": "beta"}
    assert updated.instructions == "Be brief."
    assert updated.description == "Answers weather questions"
    assert updated.temperature == 0.5
    assert [t.type for t in updated.tools] == ["function", "code_interpreter"]

    # An update that does not mention metadata keeps it.
    again = client.beta.assistants.update(created.id, instructions="Be thorough.")
    assert again.metadata == {"team": "beta"} and again.name == "Forecaster"
    assert client.beta.assistants.retrieve(created.id).model_dump() == again.model_dump()

    # Tools can be replaced (and emptied) by an update.
    assert client.beta.assistants.update(created.id, tools=[]).tools == []

    assert created.id in [a.id for a in client.beta.assistants.list(limit=100)]
    result = client.beta.assistants.delete(created.id)
    assert (
        result.deleted is True and result.id == created.id and result.object == "assistant.deleted"
    )
    with pytest.raises(openai.NotFoundError) as exc:
        client.beta.assistants.retrieve(created.id)
    assert created.id in sdk_error(exc.value)["message"]
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.update(created.id, name="ghost")
    assert created.id not in [a.id for a in client.beta.assistants.list(limit=100)]


def test_assistant_list_order_and_pagination(client: openai.OpenAI) -> None:
    mark = tag()
    ids = [client.beta.assistants.create(model=MODEL, metadata={"mark": mark}).id for _ in range(3)]
    page = client.get(
        "/assistants", cast_to=object, options={"params": {"metadata[mark]": mark, "order": "asc"}}
    )
    assert isinstance(page, dict)
    assert [a["id"] for a in page["data"]] == ids
    newest_first = client.beta.assistants.list(limit=2, order="desc")
    assert [a.id for a in newest_first.data] == ids[::-1][:2]
    assert newest_first.has_more is True


def test_deleting_everything_listed_while_the_sdk_pages_through_it(server: Server) -> None:
    """The SDK's auto-pagination asks for each next page `after` the last id of the one before:
    deleting each object as it is listed must not make that cursor unknown."""
    client = sdk_client(server, f"cleaner-{tag()}")
    made = {client.beta.assistants.create(model=MODEL).id for _ in range(7)}
    thread = client.beta.threads.create(messages=[{"role": "user", "content": f"m{i}"} for i in range(7)])
    deleted = set()
    for assistant in client.beta.assistants.list(limit=3):
        assert client.beta.assistants.delete(assistant.id).deleted
        deleted.add(assistant.id)
    assert deleted == made and client.beta.assistants.list().data == []
    gone = 0
    for message in client.beta.threads.messages.list(thread_id=thread.id, limit=2, order="asc"):
        assert client.beta.threads.messages.delete(message_id=message.id, thread_id=thread.id).deleted
        gone += 1
    assert gone == 7 and client.beta.threads.messages.list(thread_id=thread.id).data == []


# Threads -------------------------------------------------------------------------------------


def test_thread_crud_with_messages(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(
        messages=[
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": "Second question", "metadata": {"n": "3"}},
        ],
        metadata={"topic": "greetings"},
    )
    assert thread.id.startswith("thread_") and thread.object == "thread"
    assert_recent(thread.created_at)
    assert thread.metadata == {"topic": "greetings"}

    messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc")
    assert [(m.role, m.content[0].text.value) for m in messages.data] == [  # type: ignore[union-attr]
        ("user", "First question"),
        ("assistant", "First answer"),
        ("user", "Second question"),
    ]
    assert all(m.thread_id == thread.id for m in messages.data)
    assert messages.data[2].metadata == {"n": "3"}

    fetched = client.beta.threads.retrieve(thread.id)
    assert fetched.model_dump() == thread.model_dump()

    updated = client.beta.threads.update(thread.id, metadata={"topic": "farewells", "lang": "en"})
    assert updated.metadata == {"topic": "farewells", "lang": "en"}
    replaced = client.beta.threads.update(thread.id, metadata={"lang": "fr"})
    assert replaced.metadata == {"lang": "fr"}
    assert client.beta.threads.retrieve(thread.id).metadata == {"lang": "fr"}

    result = client.beta.threads.delete(thread.id)
    assert result.deleted is True and result.id == thread.id and result.object == "thread.deleted"
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)
    # The thread's messages went with it.
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.list(thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(messages.data[0].id, thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.delete(thread.id)


def test_empty_thread(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()
    assert thread.metadata == {}
    assert client.beta.threads.messages.list(thread_id=thread.id).data == []


# Messages ------------------------------------------------------------------------------------


def test_message_crud(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()
    first = client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content="Hello", metadata={"k": "v"}
    )
    assert first.id.startswith("msg_") and first.object == "thread.message"
    assert_recent(first.created_at)
    assert first.thread_id == thread.id and first.role == "user" and first.status == "completed"
    assert first.content[0].type == "text" and first.content[0].text.value == "Hello"  # type: ignore[union-attr]
    assert first.metadata == {"k": "v"}

    second = client.beta.threads.messages.create(
        thread_id=thread.id, role="assistant", content="Hi, how can I help?"
    )
    third = client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content="Tell me a joke"
    )

    ascending = client.beta.threads.messages.list(thread_id=thread.id, order="asc")
    assert [m.id for m in ascending.data] == [first.id, second.id, third.id]
    descending = client.beta.threads.messages.list(thread_id=thread.id, order="desc")
    assert [m.id for m in descending.data] == [third.id, second.id, first.id]
    # OpenAI's default order is newest first.
    assert [m.id for m in client.beta.threads.messages.list(thread_id=thread.id).data] == [
        third.id,
        second.id,
        first.id,
    ]

    fetched = client.beta.threads.messages.retrieve(second.id, thread_id=thread.id)
    assert fetched.model_dump() == second.model_dump()

    updated = client.beta.threads.messages.update(
        first.id, thread_id=thread.id, metadata={"rating": "5"}
    )
    assert updated.metadata == {"rating": "5"}
    assert updated.content[0].text.value == "Hello"  # type: ignore[union-attr]
    assert client.beta.threads.messages.retrieve(first.id, thread_id=thread.id).metadata == {
        "rating": "5"
    }

    result = client.beta.threads.messages.delete(second.id, thread_id=thread.id)
    assert (
        result.deleted is True
        and result.id == second.id
        and result.object == "thread.message.deleted"
    )
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(second.id, thread_id=thread.id)
    assert message_ids(client, thread.id) == [first.id, third.id]
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.delete(second.id, thread_id=thread.id)


def test_message_with_content_parts(client: openai.OpenAI) -> None:
    """The request shape of content parts (`{"type": "text", "text": "..."}`) as the SDK sends it."""
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content=[
            {"type": "text", "text": "What is in this picture?"},
            {
                "type": "image_url",
                "image_url": {"url": "https://example.com/cat.png", "detail": "low"},
            },
        ],
    )
    assert [part.type for part in message.content] == ["text", "image_url"]
    assert message.content[0].text.value == "What is in this picture?"  # type: ignore[union-attr]
    assert message.content[1].image_url.url == "https://example.com/cat.png"  # type: ignore[union-attr]
    fetched = client.beta.threads.messages.retrieve(message.id, thread_id=thread.id)
    assert fetched.model_dump() == message.model_dump()


def test_message_list_by_run_id(client: openai.OpenAI, model: ScriptedModel) -> None:
    """`run_id=` filters the list itself, so the run's reply is found whatever the page size."""
    assistant = client.beta.assistants.create(model=MODEL)
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": f"question {i}"} for i in range(3)]
    )
    model.add_text("The answer.")
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "completed", run.last_error
    everything = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id, limit=100)
    assert [m.role for m in everything.data] == ["assistant"]
    reply = everything.data[0]
    assert reply.run_id == run.id and reply.content[0].text.value == "The answer."  # type: ignore[union-attr]
    page = client.beta.threads.messages.list(
        thread_id=thread.id, run_id=run.id, limit=2, order="asc"
    )
    assert [m.id for m in page.data] == [reply.id]
    assert page.first_id == reply.id and page.last_id == reply.id and page.has_more is False
    assert [
        m.id
        for m in client.beta.threads.messages.list(
            thread_id=thread.id, run_id=run.id, limit=1, order="asc"
        )
    ] == [reply.id]


def test_message_of_another_thread_is_not_found(client: openai.OpenAI) -> None:
    one = client.beta.threads.create(messages=[{"role": "user", "content": "in thread one"}])
    two = client.beta.threads.create()
    message_id = message_ids(client, one.id)[0]
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(message_id, thread_id=two.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.update(message_id, thread_id=two.id, metadata={"x": "y"})
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.delete(message_id, thread_id=two.id)
    assert client.beta.threads.messages.retrieve(message_id, thread_id=one.id).metadata == {}


# Files ---------------------------------------------------------------------------------------


def test_file_crud(client: openai.OpenAI) -> None:
    content = b"Meeting notes\nline two \xe2\x9c\x93\n"
    file = client.files.create(file=("notes.txt", content, "text/plain"), purpose="assistants")
    assert file.id.startswith("file-") and file.object == "file"
    assert_recent(file.created_at)
    assert (
        file.filename == "notes.txt" and file.purpose == "assistants" and file.bytes == len(content)
    )

    assert file.id in [f.id for f in client.files.list(limit=100)]
    assert client.files.retrieve(file.id).model_dump() == file.model_dump()
    assert client.files.content(file.id).read() == content

    result = client.files.delete(file.id)
    assert result.deleted is True and result.id == file.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(file.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(file.id)
    assert file.id not in [f.id for f in client.files.list(limit=100)]


def test_file_expiry_is_set_on_upload_and_checked(server: Server, client: openai.OpenAI) -> None:
    """`expires_after` as the SDK sends it (form fields), whole as JSON, the batch default, and bad policies."""
    file = client.files.create(
        file=("brief.txt", b"soon gone", "text/plain"), purpose="assistants",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert file.expires_at == file.created_at + 3600
    assert client.files.retrieve(file.id).expires_at == file.created_at + 3600
    batch = client.files.create(file=("jobs.jsonl", b"{}\n", "application/jsonl"), purpose="batch")
    assert batch.expires_at == batch.created_at + 30 * 24 * 3600
    kept = client.files.create(file=("kept.txt", b"kept", "text/plain"), purpose="assistants")
    assert kept.expires_at is None
    with raw(server) as http:
        whole = http.post(
            "/files",
            files={"file": ("w.txt", b"w", "text/plain")},
            data={"purpose": "user_data", "expires_after": '{"anchor": "created_at", "seconds": 7200}'},
        )
        assert whole.status_code == 200, whole.text
        assert whole.json()["expires_at"] == whole.json()["created_at"] + 7200

    before = count_files(client)
    for policy, param in (
        ({"anchor": "created_at", "seconds": 60}, "expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 2_592_001}, "expires_after.seconds"),
        ({"anchor": "last_active_at", "seconds": 3600}, "expires_after.anchor"),
        ({"seconds": 3600}, "expires_after.anchor"),
        ({"anchor": "created_at", "seconds": 3600, "days": 1}, "expires_after.days"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            client.files.create(file=("x.txt", b"x", "text/plain"), purpose="assistants", expires_after=policy)  # type: ignore[arg-type]
        assert sdk_error(refused.value)["param"] == param, policy
    with raw(server) as http:
        response = http.post(
            "/files", files={"file": ("x.txt", b"x", "text/plain")}, data={"purpose": "assistants", "expires_after": "soon"}
        )
        assert response.status_code == 400 and error_of(response)["param"] == "expires_after"
    assert count_files(client) == before


def test_file_with_a_non_ascii_name_downloads(client: openai.OpenAI) -> None:
    file = client.files.create(file=("résumé final.txt", b"cv", "text/plain"), purpose="assistants")
    response = client.files.with_raw_response.content(file.id)
    assert response.http_response.status_code == 200 and response.content == b"cv"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="r_sum_ final.txt"')
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20final.txt" in disposition


def test_file_delete_raw_shape(server: Server, client: openai.OpenAI) -> None:
    """OpenAI's delete-file body is `{"id", "object": "file", "deleted": true}` (spec: DeleteFileResponse)."""
    file = client.files.create(file=("bye.txt", b"bye", "text/plain"), purpose="assistants")
    with raw(server) as http:
        response = http.delete(f"/files/{file.id}")
    assert response.status_code == 200
    assert response.json() == {"id": file.id, "object": "file", "deleted": True}


def test_file_upload_errors_write_nothing(server: Server, client: openai.OpenAI) -> None:
    before = count_files(client)
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("notes.txt", b"x", "text/plain"), purpose="bogus")  # type: ignore[arg-type]
    error = sdk_error(exc.value)
    assert error["param"] == "purpose" and "bogus" in error["message"]
    with raw(server) as http:
        response = http.post("/files", files={"file": ("notes.txt", b"x", "text/plain")})
        assert response.status_code == 400
        assert error_of(response)["param"] == "purpose"
        response = http.post("/files", data={"purpose": "assistants"})
        assert response.status_code == 400
        assert error_of(response)["param"] == "file"
    assert count_files(client) == before


def test_uploads_take_the_specs_purposes(server: Server, client: openai.OpenAI) -> None:
    """assistants, batch, fine-tune, vision, user_data and evals; `assistants_output` is the code interpreter's own."""
    with raw(server, "evaluator") as http:
        for purpose in ("assistants", "batch", "fine-tune", "user_data", "evals"):
            response = http.post("/files", files={"file": ("cases.jsonl", b"{}\n", "application/jsonl")}, data={"purpose": purpose})
            assert response.status_code == 200, response.text
            assert response.json()["purpose"] == purpose
    # The SDK as users use it by default (its FileObject type lags the spec and has no `evals`, so
    # only strict parsing, which these tests use elsewhere, refuses the file).
    lenient = openai.OpenAI(base_url=server.api_url, api_key=server.key_for("evaluator"), max_retries=0)
    file = lenient.files.create(file=("cases.jsonl", b"{}\n"), purpose="evals")
    assert file.purpose == "evals"
    assert file.id in [f.id for f in lenient.files.list(purpose="evals")]

    before = count_files(client)
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("out.txt", b"x", "text/plain"), purpose="assistants_output")  # type: ignore[arg-type]
    error = sdk_error(refused.value)
    assert error["param"] == "purpose" and "assistants_output" in error["message"] and "evals" in error["message"]
    assert count_files(client) == before


def test_file_names_keep_only_their_last_printable_part(client: openai.OpenAI) -> None:
    cases = {
        "../../etc/passwd": "passwd",
        "..\\..\\windows\\win.ini": "win.ini",
        "invoice\u202etxt.exe": "invoicetxt.exe",
        "..": "upload",
        "x" * 300 + ".csv": "x" * 251 + ".csv",
    }
    for sent, kept in cases.items():
        file = client.files.create(file=(sent, b"data", "text/plain"), purpose="assistants")
        assert file.filename == kept, sent
        assert client.files.retrieve(file.id).filename == kept


def test_vision_files_must_be_images(server: Server, client: openai.OpenAI) -> None:
    before = count_files(client)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    assert client.files.create(file=("dot.png", png, "image/png"), purpose="vision").purpose == "vision"
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("dot.png", b"<svg onload=alert(1)>", "image/png"), purpose="vision")
    error = sdk_error(refused.value)
    assert error["param"] == "file" and "PNG, JPEG, GIF or WebP" in error["message"]
    assert count_files(client) == before + 1


def test_file_list_by_purpose_pages_within_the_filter(client: openai.OpenAI) -> None:
    """`purpose=` filters the list itself: a page is `limit` matching files, never a filtered-down page."""
    vision = client.files.create(file=("pic.png", b"\x89PNG\r\n\x1a\n fake", "image/png"), purpose="vision")
    newer = [
        client.files.create(file=(f"n{i}.txt", b"n", "text/plain"), purpose="assistants").id
        for i in range(3)
    ]
    page = client.files.list(purpose="vision", limit=2)
    assert vision.id in [f.id for f in page.data]
    assert all(f.purpose == "vision" for f in page.data)
    assert page.data and page.first_id == page.data[0].id and page.last_id == page.data[-1].id
    # Auto-pagination over the filter finds the file too, and nothing of another purpose.
    listed = list(client.files.list(purpose="vision", limit=2))
    assert vision.id in [f.id for f in listed]
    assert not set(newer) & {f.id for f in listed}


# Metadata limits -----------------------------------------------------------------------------


def test_metadata_sixteen_keys_ok_seventeen_refused(client: openai.OpenAI) -> None:
    sixteen = {f"key{i}": f"value{i}" for i in range(16)}
    assistant = client.beta.assistants.create(model=MODEL, metadata=sixteen)
    assert assistant.metadata == sixteen

    before = count_assistants(client)
    seventeen = {**sixteen, "key16": "one too many"}
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.assistants.create(model=MODEL, metadata=seventeen)
    error = sdk_error(exc.value)
    assert error["param"] == "metadata"
    assert error["type"] == "invalid_request_error"
    assert "17" in error["message"] and "16" in error["message"]
    assert count_assistants(client) == before

    # The same limit on update; the stored metadata is untouched.
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.assistants.update(assistant.id, metadata=seventeen)
    assert sdk_error(exc.value)["param"] == "metadata"
    assert client.beta.assistants.retrieve(assistant.id).metadata == sixteen


def test_metadata_key_and_value_length(client: openai.OpenAI) -> None:
    at_limit = {"k" * 64: "v" * 512}
    assert client.beta.assistants.create(model=MODEL, metadata=at_limit).metadata == at_limit

    before = count_assistants(client)
    long_key = "a" * 65
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.assistants.create(model=MODEL, metadata={"ok": "fine", long_key: "x"})
    error = sdk_error(exc.value)
    assert error["param"] is not None and error["param"].startswith("metadata")
    assert long_key in error["param"]
    assert "65" in error["message"] and "64" in error["message"]

    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.assistants.create(model=MODEL, metadata={"notes": "n" * 513})
    error = sdk_error(exc.value)
    assert error["param"] == "metadata.notes"
    assert "notes" in error["message"] and "513" in error["message"] and "512" in error["message"]
    assert count_assistants(client) == before


def test_metadata_limits_on_threads_and_messages(client: openai.OpenAI) -> None:
    mark = tag()
    before = len(all_threads(client))
    too_many = {f"k{i}": "v" for i in range(17)}
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.threads.create(metadata={**too_many, "mark": mark})
    assert "metadata" in str(sdk_error(exc.value)["param"])
    # A thread whose message breaks the limit is not created either (no half-written thread).
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.threads.create(
            metadata={"mark": mark},
            messages=[{"role": "user", "content": "hi", "metadata": {"v": "x" * 513}}],
        )
    assert "metadata" in str(sdk_error(exc.value)["param"])
    assert all_threads(client, **{"metadata[mark]": mark}) == []
    assert len(all_threads(client)) == before

    thread = client.beta.threads.create(metadata={"mark": mark})
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.update(thread.id, metadata=too_many)
    assert client.beta.threads.retrieve(thread.id).metadata == {"mark": mark}
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.messages.create(
            thread_id=thread.id, role="user", content="hi", metadata=too_many
        )
    assert message_ids(client, thread.id) == []
    message = client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content="hi", metadata={"a": "b"}
    )
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.messages.update(
            message.id, thread_id=thread.id, metadata={"k" * 65: "v"}
        )
    assert client.beta.threads.messages.retrieve(message.id, thread_id=thread.id).metadata == {
        "a": "b"
    }


# Pagination ----------------------------------------------------------------------------------


@pytest.fixture
def thread_of_25(client: openai.OpenAI) -> tuple[str, list[str]]:
    thread = client.beta.threads.create()
    ids = [
        client.beta.threads.messages.create(
            thread_id=thread.id, role="user", content=f"message {i}"
        ).id
        for i in range(25)
    ]
    return thread.id, ids


def test_message_pages_with_after(
    client: openai.OpenAI, thread_of_25: tuple[str, list[str]]
) -> None:
    thread_id, ids = thread_of_25
    seen: list[str] = []
    pages: list[tuple[int, bool]] = []
    after: str | None = None
    for _ in range(10):
        kwargs: dict[str, Any] = {"after": after} if after else {}
        page = client.beta.threads.messages.list(
            thread_id=thread_id, limit=10, order="asc", **kwargs
        )
        pages.append((len(page.data), page.has_more))
        assert page.first_id == page.data[0].id and page.last_id == page.data[-1].id
        seen += [m.id for m in page.data]
        if not page.has_more:
            break
        after = page.last_id
    assert pages == [(10, True), (10, True), (5, False)]
    assert seen == ids

    # Newest first, the same walk in reverse.
    first = client.beta.threads.messages.list(thread_id=thread_id, limit=10, order="desc")
    assert [m.id for m in first.data] == ids[::-1][:10]
    second = client.beta.threads.messages.list(
        thread_id=thread_id, limit=10, order="desc", after=first.last_id
    )
    assert [m.id for m in second.data] == ids[::-1][10:20]
    # `before` walks back towards the start of the list.
    back = client.beta.threads.messages.list(
        thread_id=thread_id, limit=5, order="asc", before=ids[12]
    )
    assert [m.id for m in back.data] == ids[7:12]

    # A page that ends exactly at the last item says there is no more.
    exact = client.beta.threads.messages.list(
        thread_id=thread_id, limit=5, order="asc", after=ids[19]
    )
    assert [m.id for m in exact.data] == ids[20:] and exact.has_more is False
    empty = client.beta.threads.messages.list(
        thread_id=thread_id, limit=5, order="asc", after=ids[24]
    )
    assert empty.data == [] and empty.has_more is False


def test_message_auto_pagination(
    client: openai.OpenAI, thread_of_25: tuple[str, list[str]]
) -> None:
    thread_id, ids = thread_of_25
    ascending = [
        m.id for m in client.beta.threads.messages.list(thread_id=thread_id, limit=7, order="asc")
    ]
    assert ascending == ids
    descending = [m.id for m in client.beta.threads.messages.list(thread_id=thread_id, limit=7)]
    assert descending == ids[::-1]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"order": "sideways"}, "order"),
    ],
)
def test_bad_list_params(client: openai.OpenAI, params: dict[str, Any], param: str) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.threads.messages.list(thread_id=thread.id, extra_query=params)
    error = sdk_error(exc.value)
    assert error["param"] == param
    assert param in error["message"]
    # The same checks on other lists.
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.assistants.list(extra_query=params)
    assert sdk_error(exc.value)["param"] == param
    with pytest.raises(openai.BadRequestError) as exc:
        client.vector_stores.list(extra_query=params)
    assert sdk_error(exc.value)["param"] == param


def test_limit_bounds_accepted(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]
    )
    assert len(client.beta.threads.messages.list(thread_id=thread.id, limit=1).data) == 1
    assert len(client.beta.threads.messages.list(thread_id=thread.id, limit=100).data) == 2


def test_file_list_pages_up_to_ten_thousand_and_all_by_default(server: Server) -> None:
    """`GET /files` takes `limit` 1 to 10,000 and lists 10,000 when it is left out (its spec), not 1-100 by 20."""
    client = sdk_client(server, "filer")
    ids = {client.files.create(file=(f"f{n}.txt", b"x", "text/plain"), purpose="user_data").id for n in range(105)}
    everything = client.files.list()
    assert {f.id for f in everything.data} == ids and not everything.has_more
    first = client.files.list(limit=101, order="asc")
    assert len(first.data) == 101 and first.has_more
    rest = client.files.list(limit=10_000, order="asc", after=first.last_id)
    assert len(rest.data) == 4 and not rest.has_more
    assert {f.id for f in first.data} | {f.id for f in rest.data} == ids
    for limit in (0, 10_001):
        with pytest.raises(openai.BadRequestError) as exc:
            client.files.list(limit=limit)
        error = sdk_error(exc.value)
        assert error["param"] == "limit" and "between 1 and 10000" in error["message"], error
    # Other lists keep theirs: 20 by default, at most 100.
    for _ in range(21):
        client.beta.assistants.create(model=MODEL)
    assert len(client.beta.assistants.list().data) == 20
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.assistants.list(limit=101)
    assert "between 1 and 100" in sdk_error(exc.value)["message"]


def test_unknown_cursor(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.threads.messages.list(thread_id=thread.id, after="msg_doesnotexist")
    assert sdk_error(exc.value)["param"] == "after"


# Invalid requests ----------------------------------------------------------------------------


def test_assistant_create_validation(server: Server, client: openai.OpenAI) -> None:
    before = count_assistants(client)
    with raw(server) as http:
        response = http.post("/assistants", json={"name": "no model"})
        assert response.status_code == 400
        error = error_of(response)
        assert error["param"] == "model" and "model" in error["message"]

        response = http.post(
            "/assistants",
            content=b'{"model": "scripted-model",',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400
        assert "JSON" in error_of(response)["message"]

        response = http.post(
            "/assistants", content=b"[1, 2]", headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        error_of(response)

    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.assistants.create(model=MODEL, extra_body={"colour": "blue"})
    error = sdk_error(exc.value)
    assert error["param"] == "colour" and "colour" in error["message"]

    for temperature in (2.5, -0.1):
        with pytest.raises(openai.BadRequestError) as exc:
            client.beta.assistants.create(model=MODEL, temperature=temperature)
        error = sdk_error(exc.value)
        assert error["param"] == "temperature" and "temperature" in error["message"]

    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.assistants.create(model=MODEL, tools=[{"type": "web_browser"}])  # type: ignore[list-item]
    error = sdk_error(exc.value)
    assert str(error["param"]).startswith("tools[0]")
    assert "web_browser" in error["message"]

    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.assistants.create(
            model=MODEL,
            tools=[weather_tool(), {"type": "function", "function": {"name": "has spaces"}}],
        )
    assert str(sdk_error(exc.value)["param"]).startswith("tools[1].function.name")

    # A function named like a built-in tool next to it could not be told apart from it.
    for built_in in ("file_search", "code_interpreter"):
        with pytest.raises(openai.BadRequestError) as exc:
            client.beta.assistants.create(
                model=MODEL,
                tools=[{"type": built_in}, weather_tool(), {"type": "function", "function": {"name": built_in}}],  # type: ignore[list-item, misc]
            )
        error = sdk_error(exc.value)
        assert error["param"] == "tools[2].function.name" and f"built-in {built_in} tool" in error["message"], error

    assert count_assistants(client) == before
    # Without the built-in tool, the name is the user's own function's.
    alone = client.beta.assistants.create(model=MODEL, tools=[{"type": "function", "function": {"name": "file_search"}}])
    assert alone.tools[0].type == "function" and alone.tools[0].function.name == "file_search"


def test_assistant_update_validation_writes_nothing(client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model=MODEL, name="steady", temperature=1.0)
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.assistants.update(assistant.id, name="changed", temperature=3)
    assert sdk_error(exc.value)["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.assistants.update(assistant.id, name="changed", extra_body={"nmae": "typo"})
    assert sdk_error(exc.value)["param"] == "nmae"
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.assistants.update(
            assistant.id, tools=[{"type": "function", "function": {"name": "code_interpreter"}}, {"type": "code_interpreter"}]
        )
    assert sdk_error(exc.value)["param"] == "tools[0].function.name"
    assert client.beta.assistants.retrieve(assistant.id).model_dump() == assistant.model_dump()
    thread = client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant.id,
            tools=[{"type": "file_search"}, {"type": "function", "function": {"name": "file_search"}}],
        )
    assert sdk_error(exc.value)["param"] == "tools[1].function.name"
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []


BAD_FILE_SEARCH = [{"type": "file_search", "file_search": {"max_num_results": "abc"}}]
BAD_RESOURCES = {"code_interpreter": {"file_ids": "notalist"}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (BAD_FILE_SEARCH, "tools[0].file_search.max_num_results"),
        ([{"type": "file_search", "file_search": {"max_num_results": 0}}], "tools[0].file_search.max_num_results"),
        ([{"type": "file_search", "file_search": {"max_num_results": 51}}], "tools[0].file_search.max_num_results"),
        (
            [{"type": "file_search", "file_search": {"ranking_options": {"score_threshold": 5}}}],
            "tools[0].file_search.ranking_options.score_threshold",
        ),
        (
            [{"type": "file_search", "file_search": {"ranking_options": {"ranker": "best", "score_threshold": 0.5}}}],
            "tools[0].file_search.ranking_options.ranker",
        ),
        ([{"type": "file_search", "file_search": {"max_results": 5}}], "tools[0].file_search.max_results"),
        (BAD_RESOURCES, "tool_resources.code_interpreter.file_ids"),
        ({"code_interpreter": {"file_ids": [f"file-{n}" for n in range(21)]}}, "tool_resources.code_interpreter.file_ids"),
        ({"code_interpreter": {"file_ids": [7]}}, "tool_resources.code_interpreter.file_ids[0]"),
        ({"file_search": {"vector_store_ids": "vs_1"}}, "tool_resources.file_search.vector_store_ids"),
        ({"browser": {}}, "tool_resources.browser"),
    ],
)
def test_assistant_tool_settings_and_resources_are_checked(
    server: Server, client: openai.OpenAI, body: Any, param: str
) -> None:
    """Bad `file_search` settings and `tool_resources` are refused naming the field; nothing is written."""
    assistant = client.beta.assistants.create(model=MODEL, name="steady")
    before = count_assistants(client)
    field = "tools" if param.startswith("tools") else "tool_resources"
    with raw(server) as http:
        for url, sent in (("/assistants", {"model": MODEL, field: body}), (f"/assistants/{assistant.id}", {field: body})):
            response = http.post(url, json=sent)
            assert response.status_code == 400, response.text
            error = error_of(response)
            assert error["type"] == "invalid_request_error" and error["param"] == param, error
            assert param in error["message"]
    assert count_assistants(client) == before
    # The strict SDK still reads the assistant: nothing of the bad shape was stored.
    assert client.beta.assistants.retrieve(assistant.id).model_dump() == assistant.model_dump()


def test_thread_and_run_tool_settings_resources_and_attachments_are_checked(
    server: Server, client: openai.OpenAI
) -> None:
    assistant = client.beta.assistants.create(model=MODEL)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    file = client.files.create(file=("notes.txt", b"notes", "text/plain"), purpose="assistants")
    bad_attachments = [{"file_id": file.id, "tools": [{"type": "bogus"}]}]
    mark = tag()
    new_thread = {"metadata": {"mark": mark}}
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/threads", {**new_thread, "tool_resources": BAD_RESOURCES}, "tool_resources.code_interpreter.file_ids"),
        (f"/threads/{thread.id}", {"tool_resources": BAD_RESOURCES}, "tool_resources.code_interpreter.file_ids"),
        (
            "/threads/runs",
            {"assistant_id": assistant.id, "thread": new_thread, "tool_resources": BAD_RESOURCES},
            "tool_resources.code_interpreter.file_ids",
        ),
        (
            "/threads/runs",
            {"assistant_id": assistant.id, "thread": {**new_thread, "tool_resources": BAD_RESOURCES}},
            "thread.tool_resources.code_interpreter.file_ids",
        ),
        (
            "/threads/runs",
            {"assistant_id": assistant.id, "thread": new_thread, "tools": BAD_FILE_SEARCH},
            "tools[0].file_search.max_num_results",
        ),
        (f"/threads/{thread.id}/runs", {"assistant_id": assistant.id, "tools": BAD_FILE_SEARCH}, "tools[0].file_search.max_num_results"),
        (
            f"/threads/{thread.id}/messages",
            {"role": "user", "content": "x", "attachments": bad_attachments},
            "attachments[0].tools[0]",
        ),
        (
            f"/threads/{thread.id}/messages",
            {"role": "user", "content": "x", "attachments": [{"file_id": file.id, "tools": [{"type": "file_search", "file_search": {}}]}]},
            "attachments[0].tools[0].file_search",
        ),
        (
            "/threads",
            {**new_thread, "messages": [{"role": "user", "content": "x", "attachments": bad_attachments}]},
            "messages[0].attachments[0].tools[0]",
        ),
    ]
    with raw(server) as http:
        for url, sent, param in cases:
            response = http.post(url, json=sent)
            assert response.status_code == 400, (url, response.text)
            error = error_of(response)
            assert error["param"] == param and param in error["message"], (url, error)
    assert all_threads(client, **{"metadata[mark]": mark}) == []
    assert client.beta.threads.retrieve(thread.id).model_dump() == thread.model_dump()
    assert len(message_ids(client, thread.id)) == 1
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []


def test_valid_tool_settings_resources_and_attachments_are_kept_as_sent(client: openai.OpenAI) -> None:
    file = client.files.create(file=("data.csv", b"a,b\n1,2\n", "text/csv"), purpose="assistants")
    settings = {"max_num_results": 5, "ranking_options": {"ranker": "auto", "score_threshold": 0.25}}
    assistant = client.beta.assistants.create(
        model=MODEL,
        tools=[{"type": "file_search", "file_search": settings}, {"type": "code_interpreter"}],  # type: ignore[list-item]
        tool_resources={"code_interpreter": {"file_ids": [file.id]}},
    )
    fetched = client.beta.assistants.retrieve(assistant.id)
    assert fetched.model_dump() == assistant.model_dump()
    [search, _] = fetched.tools
    assert search.type == "file_search" and search.file_search is not None
    assert search.file_search.model_dump(exclude_unset=True) == settings
    assert fetched.tool_resources is not None and fetched.tool_resources.code_interpreter is not None
    assert fetched.tool_resources.code_interpreter.file_ids == [file.id]
    # Settings left out stay out (the wire shape has no `null` for them).
    bare = client.beta.assistants.create(model=MODEL, tools=[{"type": "file_search", "file_search": {"max_num_results": 3}}])
    assert bare.tools[0].model_dump(exclude_unset=True) == {"type": "file_search", "file_search": {"max_num_results": 3}}

    thread = client.beta.threads.create(tool_resources={"code_interpreter": {"file_ids": [file.id]}})
    message = client.beta.threads.messages.create(
        thread.id, role="user", content="Plot it",
        attachments=[{"file_id": file.id, "tools": [{"type": "code_interpreter"}, {"type": "file_search"}]}],
    )
    [attachment] = message.attachments or []
    assert [t.type for t in attachment.tools or []] == ["code_interpreter", "file_search"]
    assert client.beta.threads.messages.retrieve(message.id, thread_id=thread.id).model_dump() == message.model_dump()
    resources = client.beta.threads.retrieve(thread.id).tool_resources
    assert resources is not None and resources.code_interpreter is not None
    assert resources.code_interpreter.file_ids == [file.id]


def test_thread_and_message_validation(server: Server, client: openai.OpenAI) -> None:
    mark = tag()
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.threads.create(
            metadata={"mark": mark},
            messages=[{"role": "user", "content": "ok"}, {"role": "system", "content": "no"}],  # type: ignore[list-item]
        )
    assert sdk_error(exc.value)["param"] == "messages[1].role"
    assert all_threads(client, **{"metadata[mark]": mark}) == []

    thread = client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as exc:
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content=[])
    assert sdk_error(exc.value)["param"] == "content"
    with raw(server) as http:
        response = http.post(f"/threads/{thread.id}/messages", json={"content": "no role"})
        assert response.status_code == 400
        assert error_of(response)["param"] == "role"
        response = http.post(f"/threads/{thread.id}/messages", content=b"{bad json}")
        assert response.status_code == 400
        assert error_of(response)["param"] == "body"
    assert message_ids(client, thread.id) == []


def test_unknown_thread_and_assistant(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.beta.threads.messages.create(
            thread_id="thread_doesnotexist", role="user", content="hello?"
        )
    assert "thread_doesnotexist" in sdk_error(exc.value)["message"]

    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError) as exc:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id="asst_doesnotexist")
    error = sdk_error(exc.value)
    assert error["param"] == "assistant_id" and "asst_doesnotexist" in error["message"]
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []
    assert len(message_ids(client, thread.id)) == 1

    assistant = client.beta.assistants.create(model=MODEL)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.runs.create(thread_id="thread_doesnotexist", assistant_id=assistant.id)


# Auth ----------------------------------------------------------------------------------------


def test_requests_without_a_valid_key_are_refused(server: Server, client: openai.OpenAI) -> None:
    bogus = openai.OpenAI(
        base_url=server.api_url,
        api_key="sk-asst-not-a-real-key",
        max_retries=0,
        _strict_response_validation=True,
    )
    with pytest.raises(openai.AuthenticationError) as exc:
        bogus.beta.assistants.list()
    error = sdk_error(exc.value)
    assert exc.value.status_code == 401 and error["code"] == "invalid_api_key"

    before = count_assistants(client)
    with pytest.raises(openai.AuthenticationError):
        bogus.beta.assistants.create(model=MODEL)
    assert count_assistants(client) == before

    with raw(server, None) as http:
        for method, path, body in [
            ("GET", "/assistants", None),
            ("POST", "/assistants", {"model": MODEL}),
            ("POST", "/threads", {}),
            ("GET", "/files", None),
            ("GET", "/models", None),
        ]:
            response = http.request(method, path, json=body)
            assert response.status_code == 401, (method, path, response.text)
            error = error_of(response)
            assert "API key" in error["message"]
        response = http.get("/assistants", headers={"Authorization": "Bearer"})
        assert response.status_code == 401
        error_of(response)
        response = http.get(
            "/assistants", headers={"Authorization": f"Basic {server.key_for('alice')}"}
        )
        assert response.status_code == 401
        error_of(response)
    assert count_assistants(client) == before


# Isolation between users ---------------------------------------------------------------------


def test_users_cannot_see_or_touch_each_others_objects(
    server: Server, client: openai.OpenAI, other_client: openai.OpenAI
) -> None:
    bob = other_client
    assistant = client.beta.assistants.create(
        model=MODEL, name="alice's", metadata={"owner": "alice"}
    )
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "private"}], metadata={"owner": "alice"}
    )
    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    file = client.files.create(
        file=("secret.txt", b"alice's secret", "text/plain"), purpose="assistants"
    )
    bobs_assistant = bob.beta.assistants.create(model=MODEL, name="bob's")
    bobs_thread = bob.beta.threads.create()

    attempts = [
        lambda: bob.beta.assistants.retrieve(assistant.id),
        lambda: bob.beta.assistants.update(assistant.id, name="bob was here"),
        lambda: bob.beta.assistants.delete(assistant.id),
        lambda: bob.beta.threads.retrieve(thread.id),
        lambda: bob.beta.threads.update(thread.id, metadata={"owner": "bob"}),
        lambda: bob.beta.threads.delete(thread.id),
        lambda: bob.beta.threads.messages.list(thread_id=thread.id),
        lambda: bob.beta.threads.messages.create(
            thread_id=thread.id, role="user", content="intrusion"
        ),
        lambda: bob.beta.threads.messages.retrieve(message.id, thread_id=thread.id),
        lambda: bob.beta.threads.messages.update(
            message.id, thread_id=thread.id, metadata={"x": "y"}
        ),
        lambda: bob.beta.threads.messages.delete(message.id, thread_id=thread.id),
        # Alice's message addressed through bob's own thread is still not his.
        lambda: bob.beta.threads.messages.retrieve(message.id, thread_id=bobs_thread.id),
        lambda: bob.beta.threads.messages.update(
            message.id, thread_id=bobs_thread.id, metadata={"x": "y"}
        ),
        lambda: bob.beta.threads.messages.delete(message.id, thread_id=bobs_thread.id),
        lambda: bob.beta.threads.runs.create(thread_id=thread.id, assistant_id=bobs_assistant.id),
        lambda: bob.beta.threads.runs.list(thread_id=thread.id),
        lambda: bob.files.retrieve(file.id),
        lambda: bob.files.content(file.id),
        lambda: bob.files.delete(file.id),
    ]
    for attempt in attempts:
        with pytest.raises(openai.NotFoundError):
            attempt()

    # Bob cannot attach alice's file to a message of his own, nor show it as an image.
    with pytest.raises(openai.BadRequestError) as exc:
        bob.beta.threads.messages.create(
            thread_id=bobs_thread.id,
            role="user",
            content="see file",
            attachments=[{"file_id": file.id, "tools": [{"type": "file_search"}]}],
        )
    assert sdk_error(exc.value)["param"] == "attachments[0].file_id"
    with pytest.raises(openai.BadRequestError) as exc:
        bob.beta.threads.messages.create(
            thread_id=bobs_thread.id,
            role="user",
            content=[{"type": "image_file", "image_file": {"file_id": file.id}}],
        )
    assert str(sdk_error(exc.value)["param"]).startswith("content")

    # Bob's thread with alice's assistant: the assistant is not found, and named.
    with pytest.raises(openai.NotFoundError) as exc:
        bob.beta.threads.runs.create(thread_id=bobs_thread.id, assistant_id=assistant.id)
    assert sdk_error(exc.value)["param"] == "assistant_id"
    assert bob.beta.threads.runs.list(thread_id=bobs_thread.id).data == []
    assert bob.beta.threads.messages.list(thread_id=bobs_thread.id).data == []

    # Bob's lists do not show alice's objects.
    assert assistant.id not in [a.id for a in bob.beta.assistants.list(limit=100)]
    assert file.id not in [f.id for f in bob.files.list(limit=100)]
    assert thread.id not in [t["id"] for t in all_threads(bob)]
    assert thread.id not in [t["id"] for t in all_threads(bob, **{"metadata[owner]": "alice"})]

    # Alice's objects are untouched.
    assert client.beta.assistants.retrieve(assistant.id).model_dump() == assistant.model_dump()
    assert client.beta.threads.retrieve(thread.id).model_dump() == thread.model_dump()
    messages = client.beta.threads.messages.list(thread_id=thread.id).data
    assert [m.model_dump() for m in messages] == [message.model_dump()]
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []
    assert client.files.retrieve(file.id).model_dump() == file.model_dump()
    assert client.files.content(file.id).read() == b"alice's secret"
    assert thread.id in [t["id"] for t in all_threads(client)]

    # The same holds on the wire for raw requests with bob's key.
    with raw(server, "bob") as http:
        response = http.get(f"/files/{file.id}/content")
        assert response.status_code == 404
        assert file.id in error_of(response)["message"]


def test_a_v1_thread_cannot_take_a_chat_id_in_use(client: openai.OpenAI, other_client: openai.OpenAI) -> None:
    """`metadata.ui_thread` is the chat's id for a session, unique across users: naming one in use
    (or one too long to store) is a 400 saying so, on SQLite and on PostgreSQL, never a 500."""
    chat_id = str(uuid.uuid4())
    alices = client.beta.threads.create(metadata={"ui_thread": chat_id})
    bobs = other_client.beta.threads.create(metadata={"n": "1"})

    attempts = [
        lambda: other_client.beta.threads.create(metadata={"ui_thread": chat_id}),
        lambda: other_client.beta.threads.update(bobs.id, metadata={"ui_thread": chat_id}),
        lambda: client.beta.threads.create(metadata={"ui_thread": chat_id}),
        lambda: other_client.beta.threads.create(metadata={"ui_thread": "u" * 65}),
        lambda: other_client.beta.threads.update(bobs.id, metadata={"ui_thread": "u" * 65}),
    ]
    for attempt in attempts:
        with pytest.raises(openai.BadRequestError) as refused:
            attempt()
        error = sdk_error(refused.value)
        assert error["param"] == "metadata", error
        assert "ui_thread" in error["message"] and chat_id not in error["message"], error

    assert other_client.beta.threads.retrieve(bobs.id).metadata == {"n": "1"}
    assert client.beta.threads.retrieve(alices.id).metadata == {"ui_thread": chat_id}
    # The thread that has the id keeps it through its own updates; a free id is taken as given.
    assert client.beta.threads.update(alices.id, metadata={"ui_thread": chat_id, "note": "kept"}).metadata == {
        "ui_thread": chat_id,
        "note": "kept",
    }
    free = uuid.uuid4().hex * 2  # 64 characters, the most allowed
    assert other_client.beta.threads.update(bobs.id, metadata={"ui_thread": free}).metadata == {"ui_thread": free}


# The thread-listing extension ----------------------------------------------------------------


def test_list_threads_by_metadata(
    server: Server, client: openai.OpenAI, other_client: openai.OpenAI
) -> None:
    user = f"u1-{tag()}"
    other = f"u2-{tag()}"
    mine = [client.beta.threads.create(metadata={"user": user, "n": str(i)}).id for i in range(3)]
    client.beta.threads.create(metadata={"user": other})
    client.beta.threads.create()
    bobs = other_client.beta.threads.create(metadata={"user": user}).id

    page = list_threads(client, **{"metadata[user]": user})
    assert page["object"] == "list"
    assert [t["id"] for t in page["data"]] == mine[::-1]  # newest first by default
    assert page["first_id"] == mine[-1] and page["last_id"] == mine[0] and page["has_more"] is False
    assert all(t["object"] == "thread" and t["metadata"]["user"] == user for t in page["data"])

    ascending = list_threads(client, **{"metadata[user]": user, "order": "asc"})
    assert [t["id"] for t in ascending["data"]] == mine

    # Several pairs must all match.
    both = list_threads(client, **{"metadata[user]": user, "metadata[n]": "1"})
    assert [t["id"] for t in both["data"]] == [mine[1]]
    assert list_threads(client, **{"metadata[user]": user, "metadata[n]": "9"})["data"] == []

    # Pages within the filter.
    first = list_threads(client, **{"metadata[user]": user, "limit": 2, "order": "asc"})
    assert [t["id"] for t in first["data"]] == mine[:2] and first["has_more"] is True
    rest = list_threads(
        client, **{"metadata[user]": user, "limit": 2, "order": "asc", "after": first["last_id"]}
    )
    assert [t["id"] for t in rest["data"]] == mine[2:] and rest["has_more"] is False

    # Bob sees only his own thread with the same metadata.
    assert [t["id"] for t in list_threads(other_client, **{"metadata[user]": user})["data"]] == [
        bobs
    ]

    # Raw httpx with the query string as a user would type it.
    with raw(server) as http:
        response = http.get("/threads", params={"metadata[user]": user})
        assert response.status_code == 200
        assert [t["id"] for t in response.json()["data"]] == mine[::-1]


@pytest.mark.parametrize(
    "key", ["a.b", "with space", "x[1]", 'say "hi"', "back\\slash", "ünïcødé", "日本"]
)
def test_list_threads_by_unusual_metadata_keys(client: openai.OpenAI, key: str) -> None:
    """Metadata keys are free text (any string up to 64 characters), so any key must filter."""
    value = f"v-{tag()}"
    wanted = client.beta.threads.create(metadata={key: value}).id
    client.beta.threads.create(metadata={key: f"{value}-other"})
    assert [t["id"] for t in list_threads(client, **{f"metadata[{key}]": value})["data"]] == [
        wanted
    ]


def test_list_threads_by_non_ascii_value_and_title(client: openai.OpenAI) -> None:
    mark = tag()
    wanted = client.beta.threads.create(
        metadata={"mark": mark, "title": "Über Öl und Ärger", "city": "Zürich"}
    ).id
    client.beta.threads.create(metadata={"mark": mark, "title": "Uber oil", "city": "Zurich"})
    assert [
        t["id"] for t in all_threads(client, **{"metadata[mark]": mark, "metadata[city]": "Zürich"})
    ] == [wanted]
    # Case-insensitive beyond ASCII: "über" finds "Über", "ÖL" finds "Öl".
    for text in ("Über", "über", "ÖL UND", "ärger"):
        assert [t["id"] for t in all_threads(client, title=text, **{"metadata[mark]": mark})] == [
            wanted
        ], text


def test_list_threads_by_title(client: openai.OpenAI, other_client: openai.OpenAI) -> None:
    mark = tag()
    budget = client.beta.threads.create(
        metadata={"mark": mark, "title": "Quarterly Budget review"}
    ).id
    budget2 = client.beta.threads.create(metadata={"mark": mark, "title": "budget planning"}).id
    client.beta.threads.create(metadata={"mark": mark, "title": "Holiday plans"})
    client.beta.threads.create(metadata={"mark": mark, "subject": "budget"})  # no title key
    percent = client.beta.threads.create(metadata={"mark": mark, "title": "100% done"}).id
    client.beta.threads.create(metadata={"mark": mark, "title": "1000 done"})
    other_client.beta.threads.create(metadata={"mark": mark, "title": "Bob's budget"})

    def titled(text: str) -> list[str]:
        return [t["id"] for t in all_threads(client, title=text, **{"metadata[mark]": mark})]

    assert titled("BUDGET") == [budget2, budget]
    assert titled("quarterly budget") == [budget]
    assert titled("nothing like this") == []
    # `%` and `_` are literal characters, not wildcards.
    assert titled("100%") == [percent]
    assert titled("0_d") == []

    # Without a metadata filter, the title search still lists only alice's threads.
    unique = f"Title {mark}"
    mine = client.beta.threads.create(metadata={"title": unique.upper()}).id
    other_client.beta.threads.create(metadata={"title": unique})
    assert [t["id"] for t in all_threads(client, title=unique.lower())] == [mine]


# Models and unknown URLs ---------------------------------------------------------------------


def test_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["scripted-model", "scripted-model-2"]
    assert all(m.object == "model" for m in client.models.list())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nonexistent"),
        ("POST", "/chat/completions-of-nothing"),
        ("GET", "/assistants/asst_x/extra/parts"),
        ("DELETE", "/models"),
    ],
)
def test_unknown_url_is_an_openai_404(server: Server, method: str, path: str) -> None:
    with raw(server) as http:
        response = http.request(method, path)
    assert response.status_code == 404
    error = error_of(response)
    assert path in error["message"]
    assert "<html" not in response.text.lower()


def test_ids_are_unique(client: openai.OpenAI) -> None:
    ids = {client.beta.assistants.create(model=MODEL).id for _ in range(5)}
    assert len(ids) == 5
