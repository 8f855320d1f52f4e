"""Property-based tests of `/v1` against its OpenAPI document, with Schemathesis.

For every operation of the served document, Schemathesis generates requests from the schema, both
valid ones (positive) and ones that break it (negative), and sends them to the real server. Path
ids are mostly the ids of real objects owned by the caller (an assistant, a thread with a run that
called a tool, a file, a vector store, a batch), so the generated bodies reach the engine instead of
stopping at a 404. Every answer must be free of 5xx, have a documented status and content type, and
fit the document's schema; invalid requests must be refused with a 4xx.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from assistants.api.openapi import contract
from tests.conftest import sdk_client
from tests.scripted_model import ScriptedModel
from tests.server import Server

load_all_checks()
CHECKED = [
    CHECKS.get_one(name)
    for name in (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    )
]

OPERATIONS = sorted(
    f"{method.upper()} {path}" for path, item in contract()["paths"].items() for method in item if method in {"get", "post", "delete"}
)
STREAMS = {"GET /assistants/{assistant_id}/events"}
"""Endless by design: checked by their own tests (tests/test_assistant_events.py), not fuzzed here."""

EXAMPLES = 25


def test_the_served_document_is_the_contract_and_valid_openapi(server: Server) -> None:
    answer = httpx.get(f"{server.api_url}/openapi.json", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    document = answer.json()
    assert document == json.loads(json.dumps(contract()))
    # Schemathesis validates the document as it loads it, and finds every operation we serve.
    schema = schemathesis.openapi.from_url(f"{server.api_url}/openapi.json")
    labels = sorted(result.ok().label for result in schema.get_all_operations())
    assert labels == OPERATIONS
    assert "GET /threads" in labels and "POST /threads/{thread_id}/runs" in labels
    assert document["servers"] == [{"url": "/v1"}]


class World:
    """One of each object, owned by the caller, whose ids replace most generated path ids."""

    def __init__(self, client: openai.OpenAI, model: ScriptedModel) -> None:
        assistant = client.beta.assistants.create(
            model="scripted-model",
            name="fuzzed",
            tools=[
                {"type": "function", "function": {"name": "calculate", "parameters": {"type": "object"}}},
                {"type": "file_search"},
            ],
        )
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "What is 2 + 3?"}])
        model.add_tool_calls([{"name": "calculate", "arguments": '{"expression": "2 + 3"}', "id": "call_fuzz"}])
        model.add_text("It is 5.")
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        assert run.status == "completed", run.last_error
        steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id)
        message = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data[0]
        file = client.files.create(file=("notes.txt", b"The harbour opens at six.\n"), purpose="assistants")
        store = client.vector_stores.create(name="fuzzed", file_ids=[file.id])
        batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[file.id])
        self.assistant_id = assistant.id
        self.ids: dict[str, str] = {
            "assistant_id": assistant.id,
            "thread_id": thread.id,
            "message_id": message.id,
            "run_id": run.id,
            "step_id": steps.data[0].id,
            "file_id": file.id,
            "vector_store_id": store.id,
            "batch_id": batch.id,
        }
        self.file_id = file.id

    def aim(self, case: Any) -> Any:
        """Point a valid body's references at the world's objects, so it reaches the engine."""
        if case.meta.generation.mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            if "assistant_id" in case.body:
                case.body["assistant_id"] = self.assistant_id
            if "file_id" in case.body:
                case.body["file_id"] = self.file_id
            if isinstance(case.body.get("file_ids"), list):
                case.body["file_ids"] = [self.file_id]
        return case


@pytest.mark.timeout(300)
@pytest.mark.parametrize("label", [label for label in OPERATIONS if label not in STREAMS])
def test_operation_answers_within_its_schema(label: str, server: Server, model: ScriptedModel) -> None:
    client = sdk_client(server, "alice")
    world = World(client, model)
    schema = schemathesis.openapi.from_dict(contract())
    schema.config.update(base_url=server.api_url, headers={"Authorization": f"Bearer {server.key_for('alice')}"})
    operation = schema.find_operation_by_label(label)
    assert operation is not None
    real = {name: world.ids[name] for name in _path_names(label)}
    cases = st.one_of(
        *(
            operation.as_strategy(mode, path_parameters=ids)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            # Mostly the caller's real objects; sometimes generated ids, which must be a clean 404.
            for ids in (real, real, real, None)
        )
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def fuzz(case: Any) -> None:
        world.aim(case)
        response = case.call(timeout=30)
        case.validate_response(response, checks=CHECKED)

    fuzz()


def _path_names(label: str) -> list[str]:
    return [part[1:-1] for part in label.split(" ", 1)[1].split("/") if part.startswith("{")]


def test_input_the_fuzzer_broke_us_with_is_refused_naming_the_field(server: Server, model: ScriptedModel) -> None:
    """Each of these once answered 500 (or was silently accepted) until Schemathesis found it."""
    headers = {"Authorization": f"Bearer {server.key_for('alice')}"}

    def refused(method: str, url: str, param: str | None, **kwargs: Any) -> str:
        sent = {**headers, **kwargs.pop("headers", {})}
        answer = httpx.request(method, f"{server.api_url}{url}", headers=sent, timeout=10, **kwargs)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param, error
        return str(error["message"])

    # PostgreSQL cannot store NUL; it used to surface as a 500 from the database.
    assert "NUL" in refused("GET", "/threads?metadata%5Buser%5D=a%00b", "metadata[user]")
    assert "NUL" in refused("GET", "/assistants/asst_%00", "assistant_id")
    assert "NUL" in refused("POST", "/assistants", "metadata.topic", json={"model": "m", "metadata": {"topic": "a\x00"}})
    assert "NUL" in refused("POST", "/threads", "messages[0].content", json={"messages": [{"role": "user", "content": "\x00"}]})
    # A body that is not UTF-8 used to escape as a 500.
    assert "UTF-8" in refused("POST", "/threads", "body", content=b'{"metadata": "\xff\xfe\xfa"}')
    # Unknown `include[]` values were ignored.
    world = World(sdk_client(server, "alice"), model)
    steps = f"/threads/{world.ids['thread_id']}/runs/{world.ids['run_id']}/steps"
    assert "file_search.results" in refused("GET", f"{steps}?include[]=everything", "include[]")
    assert httpx.get(
        f"{server.api_url}{steps}?include[]=step_details.tool_calls[*].file_search.results[*].content", headers=headers
    ).status_code == 200
    # A malformed multipart body got Starlette's `{"detail": ...}` instead of OpenAI's error shape.
    assert "multipart" in refused(
        "POST", "/files", None,
        content=b"--b\r\nTrue--b--\r\n", headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    # File expiry was accepted and then never applied; now it applies, and needs both its parts.
    assert "Missing required parameter" in refused(
        "POST", "/files", "expires_after.seconds",
        files={"file": ("a.txt", b"hello")}, data={"purpose": "assistants", "expires_after[anchor]": "created_at"},
    )
    # A vector store's expiry policy needs its anchor, as the schema says.
    assert "anchor" in refused("POST", "/vector_stores", "expires_after.anchor", json={"expires_after": {"days": 3}})
