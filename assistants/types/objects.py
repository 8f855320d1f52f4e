"""Pydantic models of the Assistants v2 objects, in their wire shapes.

The shapes follow `shared/spec/openai-openapi.yaml` so that the official `openai` SDK parses
them with strict validation. The store gives these values identity and time (`id`,
`created_at`); everything else here is plain data.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    TypeAdapter,
)
from pydantic_core import core_schema

from .metadata import MetadataBacked


class WireModel(BaseModel):
    """Base for nested wire structures: forbids unknown fields so bad input is named."""

    model_config = ConfigDict(extra="forbid")


def _is_none(value: object) -> bool:
    return value is None


def unset_is_absent() -> Any:
    """A field that is left out of the wire shape while unset, where the API's schema has no `null` for it."""
    return Field(default=None, exclude_if=_is_none)


def checked_as(shape: Any) -> GetPydanticSchema:
    """Validate a JSON field with a typed `shape`, and keep the value as the plain JSON it accepted.

    For fields the engine and the store read as plain dicts and lists (`tool_resources`, an
    attachment's `tools`): a bad value is refused naming the field inside it, as a typed field's
    is, while a good one is kept as it was sent (keys it left out stay absent), so every reader
    of the field goes on reading the same JSON. Use as `Annotated[dict[str, Any], checked_as(X)]`.
    """
    adapter: TypeAdapter[Any] = TypeAdapter(shape)

    def as_sent(value: Any) -> Any:
        return adapter.dump_python(value, mode="json", exclude_unset=True)

    def schema(_source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            as_sent,
            handler.generate_schema(shape),
            # The value is plain JSON by now, not the typed shape: written out as it is.
            serialization=core_schema.plain_serializer_function_ser_schema(lambda value: value),
        )

    return GetPydanticSchema(schema)


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
"""How hard a reasoning model thinks (ReasoningEffort)."""


# Tools ---------------------------------------------------------------------------------------


class FunctionDefinition(WireModel):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
    """The name the model calls the function by."""
    description: str | None = unset_is_absent()
    """What the function does; the model reads it to decide when to call it."""
    parameters: dict[str, Any] | None = unset_is_absent()
    """JSON Schema of the arguments."""
    strict: bool | None = None
    """Whether the provider should enforce the schema exactly."""


class FunctionTool(WireModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class CodeInterpreterTool(WireModel):
    type: Literal["code_interpreter"] = "code_interpreter"


class FileSearchRankingOptions(WireModel):
    """How a file search tool ranks its results (FileSearchRankingOptions)."""

    ranker: Literal["auto", "default_2024_08_21"] | None = unset_is_absent()
    """The ranker; `auto` when left out."""
    score_threshold: Annotated[float, Field(ge=0, le=1)]
    """Results scoring below this (0 to 1) are left out."""


class FileSearchOptions(WireModel):
    """The `file_search` overrides of a file search tool."""

    max_num_results: Annotated[int, Field(ge=1, le=50)] | None = unset_is_absent()
    """The most results one search returns (1 to 50); 20 when left out."""
    ranking_options: FileSearchRankingOptions | None = unset_is_absent()


class FileSearchTool(WireModel):
    type: Literal["file_search"] = "file_search"
    file_search: dict[str, Any] | None = unset_is_absent()
    """Its `FileSearchOptions`, as plain JSON. Requests are checked against that shape
    (`requests.FileSearchToolRequest`); stored objects are read as they were stored, so rows an
    earlier version accepted still load (`tools.file_search.options` reads them leniently)."""


Tool = Annotated[FunctionTool | CodeInterpreterTool | FileSearchTool, Field(discriminator="type")]


class FunctionCallSpec(WireModel):
    name: str


class NamedToolChoice(WireModel):
    type: Literal["function", "code_interpreter", "file_search"]
    function: FunctionCallSpec | None = unset_is_absent()


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ResponseFormatJsonSchema(WireModel):
    type: Literal["json_schema"] = "json_schema"
    json_schema: dict[str, Any]


class ResponseFormatSimple(WireModel):
    type: Literal["text", "json_object"]


ResponseFormat = Literal["auto"] | ResponseFormatSimple | ResponseFormatJsonSchema


class TruncationStrategy(WireModel):
    type: Literal["auto", "last_messages"] = "auto"
    last_messages: Annotated[int, Field(ge=1)] | None = None


class Usage(WireModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, prompt: int, completion: int) -> Usage:
        """A new usage with these tokens added."""
        return Usage(
            prompt_tokens=self.prompt_tokens + prompt,
            completion_tokens=self.completion_tokens + completion,
            total_tokens=self.total_tokens + prompt + completion,
        )


# Assistants and threads ------------------------------------------------------------------------


class Assistant(MetadataBacked):
    id: str
    object: Literal["assistant"] = "assistant"
    created_at: int
    name: str | None = None
    description: str | None = None
    model: str
    instructions: str | None = None
    tools: list[Tool] = Field(default_factory=list)
    tool_resources: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    response_format: ResponseFormat | None = "auto"
    reasoning_effort: ReasoningEffort | None = unset_is_absent()
    """Sent to reasoning models as the runs' `reasoning_effort` (CreateAssistantRequest); shown
    only when set, as the published object has no such field."""


class Thread(MetadataBacked):
    id: str
    object: Literal["thread"] = "thread"
    created_at: int
    tool_resources: dict[str, Any] | None = None


# Messages ------------------------------------------------------------------------------------


class TextValue(WireModel):
    value: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)


class TextContent(WireModel):
    type: Literal["text"] = "text"
    text: TextValue


class ImageFile(WireModel):
    file_id: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageFileContent(WireModel):
    type: Literal["image_file"] = "image_file"
    image_file: ImageFile


class ImageURL(WireModel):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageURLContent(WireModel):
    type: Literal["image_url"] = "image_url"
    image_url: ImageURL


class RefusalContent(WireModel):
    type: Literal["refusal"] = "refusal"
    refusal: str


MessageContent = Annotated[
    TextContent | ImageFileContent | ImageURLContent | RefusalContent, Field(discriminator="type")
]


class FileSearchTypeOnly(WireModel):
    """An attachment's file search tool: the type alone (AssistantToolsFileSearchTypeOnly)."""

    type: Literal["file_search"] = "file_search"


AttachmentTool = Annotated[CodeInterpreterTool | FileSearchTypeOnly, Field(discriminator="type")]


class Attachment(WireModel):
    file_id: str
    tools: list[dict[str, Any]] = Field(default_factory=list)
    """The tools the file is for, each `{"type": "code_interpreter"}` or `{"type": "file_search"}`
    (checked on requests, `requests.AttachmentRequest`; read as stored)."""


class MessageStatus(StrEnum):
    in_progress = "in_progress"
    incomplete = "incomplete"
    completed = "completed"


class IncompleteDetails(WireModel):
    reason: str


class Message(MetadataBacked):
    id: str
    object: Literal["thread.message"] = "thread.message"
    created_at: int
    thread_id: str
    status: MessageStatus = MessageStatus.completed
    incomplete_details: IncompleteDetails | None = None
    completed_at: int | None = None
    incomplete_at: int | None = None
    role: Literal["user", "assistant"]
    content: list[MessageContent] = Field(default_factory=list)
    assistant_id: str | None = None
    run_id: str | None = None
    attachments: list[Attachment] | None = None

    @property
    def text(self) -> str:
        """All text parts joined, which is what a chat model reads."""
        return "".join(part.text.value for part in self.content if isinstance(part, TextContent))


# Runs ----------------------------------------------------------------------------------------


class RunStatus(StrEnum):
    queued = "queued"
    in_progress = "in_progress"
    requires_action = "requires_action"
    cancelling = "cancelling"
    cancelled = "cancelled"
    failed = "failed"
    completed = "completed"
    incomplete = "incomplete"
    expired = "expired"


class FunctionCall(WireModel):
    name: str
    arguments: str


class RequiredToolCall(WireModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SubmitToolOutputs(WireModel):
    tool_calls: list[RequiredToolCall]


class RequiredAction(WireModel):
    type: Literal["submit_tool_outputs"] = "submit_tool_outputs"
    submit_tool_outputs: SubmitToolOutputs


class LastError(WireModel):
    code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]
    message: str


class ContextRecord(WireModel):
    """What one run sent to the model: an extension field on the run, for the UI and for trust."""

    mode: str
    """The context mode in force: `full`, `last_n`, `one_off`, `summary` or a truncation strategy."""
    messages: int
    """How many thread messages were sent (tool round trips of this run not counted)."""
    prompt_tokens: int
    """Our own count of the first request's prompt tokens."""
    summary_used: bool = False
    """Whether a rolling summary stood in for older turns."""
    truncated: int = 0
    """How many older messages were left out to fit the window or the mode."""


class Run(MetadataBacked):
    id: str
    object: Literal["thread.run"] = "thread.run"
    created_at: int
    thread_id: str
    assistant_id: str
    status: RunStatus = RunStatus.queued
    required_action: RequiredAction | None = None
    last_error: LastError | None = None
    expires_at: int | None = None
    started_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    incomplete_details: IncompleteDetails | None = None
    model: str
    instructions: str = ""
    tools: list[Tool] = Field(default_factory=list)
    usage: Usage | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: TruncationStrategy = Field(default_factory=TruncationStrategy)
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    response_format: ResponseFormat = "auto"
    reasoning_effort: ReasoningEffort | None = unset_is_absent()
    """Extension: the effort reasoning models were asked for (the run's, else its assistant's)."""
    context: ContextRecord | None = None
    """Extension: what the run sent to the model (absent from OpenAI's shape; SDKs keep it as extra)."""
    after_message_id: str | None = None
    """Extension: the thread's newest message when the run was created, which places the run in history."""


# Run steps -----------------------------------------------------------------------------------


class MessageCreation(WireModel):
    message_id: str


class MessageCreationDetails(WireModel):
    type: Literal["message_creation"] = "message_creation"
    message_creation: MessageCreation


class StepFunction(WireModel):
    name: str
    arguments: str
    output: str | None = None


class FunctionToolCall(WireModel):
    id: str
    type: Literal["function"] = "function"
    function: StepFunction

    def model_call(self) -> dict[str, Any]:
        """This call as the assistant turn's `tool_calls` entry sent back to the model."""
        return {"id": self.id, "type": "function", "function": {"name": self.function.name, "arguments": self.function.arguments}}

    def model_output(self) -> str:
        """What the model reads as this call's result."""
        return self.function.output or ""


CODE_INTERPRETER_FUNCTION = "code_interpreter"
"""The name under which the code interpreter is offered to Chat Completions models, as a function."""


class CodeLogsOutput(WireModel):
    type: Literal["logs"] = "logs"
    logs: str


class CodeImage(WireModel):
    file_id: str


class CodeImageOutput(WireModel):
    type: Literal["image"] = "image"
    image: CodeImage


CodeOutput = Annotated[CodeLogsOutput | CodeImageOutput, Field(discriminator="type")]


class CodeInterpreterCall(WireModel):
    input: str
    """The Python code the model wrote."""
    outputs: list[CodeOutput] = Field(default_factory=list)
    """What it printed (`logs`, errors and limit notes included) and the images it displayed."""


class CodeInterpreterToolCall(WireModel):
    id: str
    type: Literal["code_interpreter"] = "code_interpreter"
    code_interpreter: CodeInterpreterCall

    def model_call(self) -> dict[str, Any]:
        """The call as the model made it: a function call whose arguments carry the code."""
        arguments = json.dumps({"code": self.code_interpreter.input})
        return {"id": self.id, "type": "function", "function": {"name": CODE_INTERPRETER_FUNCTION, "arguments": arguments}}

    def model_output(self) -> str:
        """The logs, and a line per image, so the model knows a figure was shown."""
        parts = [
            output.logs if isinstance(output, CodeLogsOutput) else f"[image {output.image.file_id} shown to the user]"
            for output in self.code_interpreter.outputs
        ]
        return "\n".join(part.rstrip("\n") for part in parts) or "(no output)"


FILE_SEARCH_FUNCTION = "file_search"
"""The name under which file search is offered to Chat Completions models, as a function."""
FILE_SEARCH_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"
"""The `include[]` value that asks for the passages of file-search results."""


class FileSearchResultText(WireModel):
    type: Literal["text"] = "text"
    text: str


class FileSearchResult(WireModel):
    file_id: str
    file_name: str
    score: float
    content: list[FileSearchResultText] | None = None
    """The passage; shown on `/v1` only when `include[]` asks for it."""


class FileSearchRanking(WireModel):
    ranker: Literal["auto", "default_2024_08_21"] = "default_2024_08_21"
    score_threshold: float = 0.0


class FileSearchCall(WireModel):
    ranking_options: FileSearchRanking | None = None
    results: list[FileSearchResult] = Field(default_factory=list)
    query: str = ""
    """Extension: what the model searched for."""
    first_marker: int = 1
    """Extension: the citation number of the first result (`[n]`); numbers run on through the run."""

    def marker(self, position: int) -> str:
        return f"[{self.first_marker + position}]"


class FileSearchToolCall(WireModel):
    id: str
    type: Literal["file_search"] = "file_search"
    file_search: FileSearchCall

    def model_call(self) -> dict[str, Any]:
        """The call as the model made it: a function call whose arguments carry the query."""
        arguments = json.dumps({"query": self.file_search.query})
        return {"id": self.id, "type": "function", "function": {"name": FILE_SEARCH_FUNCTION, "arguments": arguments}}

    def model_output(self) -> str:
        """The passages found, each under the marker the answer cites it with."""
        results = self.file_search.results
        if not results:
            return "No passages matched. Try other words, or answer without the files."
        return "\n\n".join(
            f"{self.file_search.marker(i)} {r.file_name} (score {r.score:.2f})\n"
            + "".join(part.text for part in r.content or [])
            for i, r in enumerate(results)
        )


ToolCall = Annotated[FunctionToolCall | CodeInterpreterToolCall | FileSearchToolCall, Field(discriminator="type")]


class ToolCallsDetails(WireModel):
    type: Literal["tool_calls"] = "tool_calls"
    tool_calls: list[ToolCall] = Field(default_factory=list)


StepDetails = Annotated[MessageCreationDetails | ToolCallsDetails, Field(discriminator="type")]


class StepStatus(StrEnum):
    in_progress = "in_progress"
    cancelled = "cancelled"
    failed = "failed"
    completed = "completed"
    expired = "expired"


class RunStep(MetadataBacked):
    id: str
    object: Literal["thread.run.step"] = "thread.run.step"
    created_at: int
    assistant_id: str
    thread_id: str
    run_id: str
    type: Literal["message_creation", "tool_calls"]
    status: StepStatus = StepStatus.in_progress
    step_details: StepDetails
    last_error: LastError | None = None
    expired_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    usage: Usage | None = None


# Files ---------------------------------------------------------------------------------------


class File(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = unset_is_absent()
    expires_at: int | None = unset_is_absent()

    def wire(self) -> dict[str, Any]:
        """The object as the API shows it."""
        return self.model_dump(mode="json")


# Vector stores -------------------------------------------------------------------------------


class ExpiresAfter(WireModel):
    """When an idle vector store expires: `days` after it was last active."""

    anchor: Literal["last_active_at"]
    days: Annotated[int, Field(ge=1, le=365)]


class FileCounts(WireModel):
    """How many of a vector store's (or a batch's) files are in each status."""

    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


class StaticChunking(WireModel):
    max_chunk_size_tokens: int = 800
    """The most tokens a chunk holds (100 to 4096)."""
    chunk_overlap_tokens: int = 400
    """Tokens shared by consecutive chunks (at most half of `max_chunk_size_tokens`)."""


class StaticChunkingStrategy(WireModel):
    type: Literal["static"] = "static"
    static: StaticChunking = Field(default_factory=StaticChunking)


class IngestionLastError(WireModel):
    code: Literal["server_error", "unsupported_file", "invalid_file"]
    message: str


FileAttributes = dict[str, str | bool | int | float]
"""A vector store file's `attributes`: up to 16 keys, each a string, a number or a boolean."""


class VectorStore(MetadataBacked):
    """A vector store. `file_counts`, `usage_bytes` and `status` are derived from its files on read."""

    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str = ""
    """The store's name; the wire shape requires a string, so an unnamed store has an empty one."""
    usage_bytes: int = 0
    file_counts: FileCounts = Field(default_factory=FileCounts)
    status: Literal["expired", "in_progress", "completed"] = "completed"
    expires_after: ExpiresAfter | None = unset_is_absent()
    expires_at: int | None = None
    last_active_at: int | None = None
    description: str | None = None

    def expired(self, stamp: int) -> bool:
        """Whether the `expires_after` policy has run out at Unix time `stamp`."""
        return self.expires_at is not None and self.expires_at <= stamp

    def expired_message(self) -> str:
        """Why the expired store cannot be used, and what to do instead."""
        when = datetime.fromtimestamp(self.expires_at or 0, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        days = self.expires_after.days if self.expires_after else 0
        return (
            f"Vector store '{self.id}' expired on {when}, {days} days after it was last used, and its files "
            "can no longer be searched. Create a new vector store with the files (or attach them to a new "
            "message) and use it instead."
        )


class VectorStoreFile(BaseModel):
    """A file in a vector store. Its id is the File's id, so it is unique only within its store."""

    id: str
    object: Literal["vector_store.file"] = "vector_store.file"
    usage_bytes: int = 0
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"] = "in_progress"
    last_error: IngestionLastError | None = None
    chunking_strategy: StaticChunkingStrategy = Field(default_factory=StaticChunkingStrategy)
    attributes: FileAttributes | None = None

    def wire(self) -> dict[str, Any]:
        """The object as the API shows it."""
        return self.model_dump(mode="json")


class VectorStoreFileBatch(BaseModel):
    """A batch of files added to a vector store together; counts are derived from its files on read."""

    id: str
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"] = "in_progress"
    file_counts: FileCounts = Field(default_factory=FileCounts)

    def wire(self) -> dict[str, Any]:
        """The object as the API shows it."""
        return self.model_dump(mode="json")
