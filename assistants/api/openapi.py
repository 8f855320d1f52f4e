"""The OpenAPI document of `/v1`: OpenAI's Assistants contract, plus what this server adds to it.

`openapi.json` beside this module is the part of OpenAI's published specification
(github.com/openai/openai-openapi, MIT licence) that covers the operations we serve, copied by
`python -m assistants.api.openapi <openai-openapi.yaml>`. `contract()` returns it with the
differences this server has on purpose, each one written down in `_amend`:

- errors: every operation may answer 4xx/5xx with OpenAI's error body, which the published document
  leaves out;
- lists: `first_id` and `last_id` are `null` on an empty page, as the hosted API answered;
- streams: operations that take `stream: true` answer with `text/event-stream`;
- file content is served with the file's own media type, not as JSON;
- a file's `purpose` may be `evals`, which uploads take (CreateFileRequest) but the published file
  object leaves out;
- extensions the hosted API never had: listing threads (`GET /threads`) and following an
  assistant's run events (`GET /assistants/{assistant_id}/events`).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

VENDORED = Path(__file__).with_name("openapi.json")
SERVED_PATHS = re.compile(r"^/(assistants|threads|files|vector_stores|models)(/|$)")
"""The upstream paths this server implements (`/models/{model}` is left out: see `_amend`)."""
METHODS = ("get", "post", "delete")

JSON = "application/json"
EVENT_STREAM = "text/event-stream"


@cache
def contract() -> dict[str, Any]:
    """The OpenAPI document this server implements (a fresh copy is not needed: callers only read)."""
    document: dict[str, Any] = json.loads(VENDORED.read_text(encoding="utf-8"))
    _amend(document)
    return document


@cache
def contract_json() -> bytes:
    """`contract()` serialised once, as the route serves it."""
    return json.dumps(contract(), separators=(",", ":")).encode()


def _amend(document: dict[str, Any]) -> None:
    document["servers"] = [{"url": "/v1"}]
    document["info"] = {
        **document["info"],
        "title": "Assistants (OpenAI-compatible)",
        "description": (
            "The Assistants v2 API served by this application: OpenAI's published contract for "
            "assistants, threads, messages, runs, run steps, files and vector stores, with the "
            "additions and corrections listed in assistants/api/openapi.py."
        ),
    }
    paths: dict[str, Any] = document["paths"]
    schemas: dict[str, Any] = document["components"]["schemas"]
    # Retrieving or deleting a model is not part of the Assistants surface.
    paths.pop("/models/{model}", None)

    for name, schema in schemas.items():
        properties = schema.get("properties", {})
        if name.startswith("List") and {"first_id", "last_id"} <= properties.keys():
            for key in ("first_id", "last_id"):
                properties[key] = {"anyOf": [properties[key], {"type": "null"}]}

    schemas["Error"] = {
        "type": "object",
        "required": ["message", "type"],
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string"},
            "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }
    schemas["ErrorResponse"] = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"$ref": "#/components/schemas/Error"}},
    }
    error = {
        "description": "The request failed; `error.message` says why and `error.param` names the field.",
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }

    # A file keeps the purpose it was uploaded with, and `evals` is an upload purpose.
    purpose = schemas["OpenAIFile"]["properties"]["purpose"]
    purpose["enum"] = [*purpose["enum"], "evals"]
    purpose["description"] += " Files uploaded for evals have the purpose `evals`."

    # A file's content is its bytes, served with the file's own media type.
    paths["/files/{file_id}/content"]["get"]["responses"]["200"]["content"] = {
        "*/*": {"schema": {"type": "string", "format": "binary"}}
    }
    paths["/threads"]["get"] = _list_threads()
    paths["/assistants/{assistant_id}/events"] = {"get": _assistant_events()}

    for path in paths.values():
        for method in METHODS:
            operation = path.get(method)
            if operation is None:
                continue
            operation.setdefault("responses", {})["default"] = copy.deepcopy(error)
            body = operation.get("requestBody", {}).get("content", {}).get(JSON, {}).get("schema", {})
            if _takes_stream(body, schemas):
                operation["responses"]["200"].setdefault("content", {})[EVENT_STREAM] = {
                    "schema": {"type": "string", "description": "Server-sent events, as the hosted API streamed them."}
                }


def _takes_stream(schema: dict[str, Any], schemas: dict[str, Any]) -> bool:
    ref = schema.get("$ref")
    if ref:
        schema = schemas[ref.rsplit("/", 1)[1]]
    return "stream" in schema.get("properties", {})


def _list_params() -> list[dict[str, Any]]:
    return [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
        {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"], "default": "desc"}},
        {"name": "after", "in": "query", "schema": {"type": "string"}},
        {"name": "before", "in": "query", "schema": {"type": "string"}},
    ]


def _list_threads() -> dict[str, Any]:
    return {
        "operationId": "listThreads",
        "tags": ["Assistants"],
        "summary": "Extension: list your threads, newest first, optionally filtered by metadata and title.",
        "parameters": [
            *_list_params(),
            {
                "name": "metadata",
                "in": "query",
                "style": "deepObject",
                "explode": True,
                "description": "`metadata[key]=value` pairs; a thread matches when it has them all.",
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            {"name": "title", "in": "query", "description": "Part of a session title.", "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {
                "description": "OK",
                "content": {
                    JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["object", "data", "first_id", "last_id", "has_more"],
                            "properties": {
                                "object": {"type": "string", "enum": ["list"]},
                                "data": {"type": "array", "items": {"$ref": "#/components/schemas/ThreadObject"}},
                                "first_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                                "last_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                                "has_more": {"type": "boolean"},
                            },
                        }
                    }
                },
            }
        },
    }


def _assistant_events() -> dict[str, Any]:
    return {
        "operationId": "followAssistantEvents",
        "tags": ["Assistants"],
        "summary": "Extension: every event of the assistant's runs, as server-sent events, resumable.",
        "parameters": [
            {"name": "assistant_id", "in": "path", "required": True, "schema": {"type": "string"}},
            {
                "name": "after",
                "in": "query",
                "description": "Resume after this event id (the `id:` of the last frame received).",
                "schema": {"type": "integer", "minimum": 0},
            },
            {
                "name": "Last-Event-ID",
                "in": "header",
                "description": "The same cursor as `after`, as browsers send it on reconnect.",
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "200": {"description": "An endless stream of events.", "content": {EVENT_STREAM: {"schema": {"type": "string"}}}}
        },
    }


def vendor(source: Path) -> dict[str, Any]:
    """The served part of OpenAI's published document: its paths and every component they reach."""
    import yaml

    spec = yaml.load(source.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    paths = {path: item for path, item in spec["paths"].items() if SERVED_PATHS.match(path)}
    components = spec["components"]
    needed: set[tuple[str, str]] = set()

    def reach(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    _, _, kind, name = value.split("/")
                    if (kind, name) not in needed:
                        needed.add((kind, name))
                        reach(components[kind][name])
                elif key != "x-oaiMeta":
                    reach(value)
        elif isinstance(node, list):
            for value in node:
                reach(value)

    reach(paths)
    kept: dict[str, dict[str, Any]] = {"securitySchemes": components["securitySchemes"]}
    for kind, name in sorted(needed):
        kept.setdefault(kind, {})[name] = components[kind][name]
    document: dict[str, Any] = _without_examples(
        {
            "openapi": spec["openapi"],
            "info": {**spec["info"], "x-source": "github.com/openai/openai-openapi (MIT)"},
            "security": spec["security"],
            "paths": paths,
            "components": kept,
        }
    )
    return document


def _without_examples(node: Any) -> Any:
    """Drop the documentation-only `x-oaiMeta` blocks (code samples), which are most of the bytes."""
    if isinstance(node, dict):
        return {key: _without_examples(value) for key, value in node.items() if key != "x-oaiMeta"}
    if isinstance(node, list):
        return [_without_examples(value) for value in node]
    return node


if __name__ == "__main__":
    VENDORED.write_text(json.dumps(vendor(Path(sys.argv[1])), indent=1, sort_keys=False) + "\n", encoding="utf-8")
