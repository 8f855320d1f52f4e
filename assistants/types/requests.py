"""Request bodies of the Assistants API. Unknown fields are refused, so a typo is named, not ignored."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ..exceptions import InvalidRequestError
from .metadata import validate_metadata
from .objects import (
    Attachment,
    AttachmentTool,
    CodeInterpreterTool,
    ExpiresAfter,
    FileAttributes,
    FileSearchOptions,
    FileSearchTool,
    FunctionTool,
    ImageFileContent,
    ImageURLContent,
    ReasoningEffort,
    ResponseFormat,
    ToolChoice,
    TruncationStrategy,
    WireModel,
    checked_as,
    unset_is_absent,
)

Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(ge=0, le=1)]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("metadata", mode="before", check_fields=False)
    @classmethod
    def _check_metadata(cls, value: Any) -> Any:
        return validate_metadata(value) if value is not None else None


class FileExpiry(RequestModel):
    """A file's expiry policy on upload: deleted `seconds` after its creation (1 hour to 30 days)."""

    anchor: Literal["created_at"]
    seconds: Annotated[int, Field(ge=3600, le=2_592_000)]


class FileExpiryField(RequestModel):
    """The `expires_after` part of a file upload (a multipart form), validated on its own."""

    expires_after: FileExpiry


# Tools and attachments as requests carry them: checked against the spec's shapes, kept as the
# plain JSON the stored objects hold (subclasses of those, so the engine takes them as they are).


def _checked_again(stored: type[BaseModel], request: type[BaseModel]) -> BeforeValidator:
    """Take an object of the stored class where a request holds its request subclass (code that
    builds a request, as `profiles` does), by checking its JSON."""

    def as_json(value: Any) -> Any:
        return value.model_dump(mode="json") if isinstance(value, stored) and not isinstance(value, request) else value

    return BeforeValidator(as_json)


class FileSearchToolRequest(FileSearchTool):
    file_search: Annotated[dict[str, Any], checked_as(FileSearchOptions)] | None = unset_is_absent()


RequestTool = Annotated[
    FunctionTool | CodeInterpreterTool | FileSearchToolRequest,
    Field(discriminator="type"),
    _checked_again(FileSearchTool, FileSearchToolRequest),
]


def _check_tool_names(tools: list[Any] | None) -> list[Any] | None:
    """Refuse a function named like a built-in tool the same list has: the model calls built-in
    tools as functions of their own names, so its call could not be told apart from the user's."""
    built_in = {tool.type for tool in tools or [] if isinstance(tool, CodeInterpreterTool | FileSearchTool)}
    for position, tool in enumerate(tools or []):
        if isinstance(tool, FunctionTool) and tool.function.name in built_in:
            name = tool.function.name
            param = f"tools[{position}].function.name"
            raise InvalidRequestError(
                f"Invalid '{param}': '{name}' is the name of the built-in {name} tool, which these tools "
                "include too. Give the function another name.",
                param=param,
            )
    return tools


class AttachmentRequest(Attachment):
    tools: Annotated[list[dict[str, Any]], checked_as(list[AttachmentTool])] = Field(default_factory=list)


AttachmentInRequest = Annotated[AttachmentRequest, _checked_again(Attachment, AttachmentRequest)]


# Tool resources --------------------------------------------------------------------------------


class AutoChunkingRequest(WireModel):
    type: Literal["auto"] = "auto"


class StaticChunkingSizes(WireModel):
    """`chunking_strategy.static` of a request: the spec requires both sizes (no defaults here)."""

    max_chunk_size_tokens: int
    chunk_overlap_tokens: int


class StaticChunkingRequest(WireModel):
    type: Literal["static"] = "static"
    static: StaticChunkingSizes


ChunkingStrategyRequest = Annotated[AutoChunkingRequest | StaticChunkingRequest, Field(discriminator="type")]


class VectorStoreHelper(RequestModel):
    """`tool_resources.file_search.vector_stores[i]`: a store to create from files, on the fly."""

    file_ids: Annotated[list[str], Field(max_length=10_000)] = Field(default_factory=list)
    chunking_strategy: ChunkingStrategyRequest | None = None
    metadata: dict[str, str] | None = None


class CodeInterpreterResources(WireModel):
    file_ids: Annotated[list[str], Field(max_length=20)] | None = None
    """The files the code interpreter may read (at most 20)."""


class FileSearchResources(WireModel):
    vector_store_ids: list[str] | None = None
    """The vector store to search (at most one, with `vector_stores`: checked as they are resolved)."""
    vector_stores: list[VectorStoreHelper] | None = None
    """A vector store to create from files and attach."""


class ToolResources(WireModel):
    """The `tool_resources` of an assistant, a thread, or a thread created with its run."""

    code_interpreter: CodeInterpreterResources | None = None
    file_search: FileSearchResources | None = None


ToolResourcesField = Annotated[dict[str, Any], checked_as(ToolResources)]
"""`tool_resources` checked against `ToolResources`, kept as the JSON object the engine resolves and stores."""


class AssistantCreate(RequestModel):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    name: Annotated[str, Field(max_length=256)] | None = None
    description: Annotated[str, Field(max_length=512)] | None = None
    instructions: Annotated[str, Field(max_length=256_000)] | None = None
    tools: Annotated[list[RequestTool], Field(max_length=128)] = Field(default_factory=list)
    _tool_names = field_validator("tools")(_check_tool_names)
    tool_resources: ToolResourcesField | None = None
    metadata: dict[str, str] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: ReasoningEffort | None = None


class AssistantUpdate(RequestModel):
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    description: Annotated[str, Field(max_length=512)] | None = None
    instructions: Annotated[str, Field(max_length=256_000)] | None = None
    tools: Annotated[list[RequestTool], Field(max_length=128)] | None = None
    _tool_names = field_validator("tools")(_check_tool_names)
    tool_resources: ToolResourcesField | None = None
    metadata: dict[str, str] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: ReasoningEffort | None = None


class TextRequestContent(WireModel):
    """A text part as requests carry it: `{"type": "text", "text": "..."}` (MessageRequestContentTextObject)."""

    type: Literal["text"] = "text"
    text: str


MessageRequestContent = Annotated[
    TextRequestContent | ImageFileContent | ImageURLContent, Field(discriminator="type")
]


class MessageCreate(RequestModel):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[MessageRequestContent], Field(min_length=1)]
    attachments: list[AttachmentInRequest] | None = None
    metadata: dict[str, str] | None = None


class MessageUpdate(RequestModel):
    metadata: dict[str, str] | None = None


class ThreadCreate(RequestModel):
    messages: Annotated[list[MessageCreate], Field(max_length=32)] | None = None
    tool_resources: ToolResourcesField | None = None
    metadata: dict[str, str] | None = None


class ThreadUpdate(RequestModel):
    tool_resources: ToolResourcesField | None = None
    metadata: dict[str, str] | None = None


class RunOptions(RequestModel):
    """What a run may override; shared by create-run and create-thread-and-run."""

    assistant_id: Annotated[str, Field(min_length=1)]
    model: str | None = None
    instructions: str | None = None
    tools: Annotated[list[RequestTool], Field(max_length=128)] | None = None
    _tool_names = field_validator("tools")(_check_tool_names)
    metadata: dict[str, str] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stream: bool | None = None
    max_prompt_tokens: Annotated[int, Field(ge=256)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=256)] | None = None
    truncation_strategy: TruncationStrategy | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: ReasoningEffort | None = None

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _function_is_named(cls, value: Any) -> Any:
        """A `function` tool choice names the function it forces (AssistantsNamedToolChoice)."""
        if isinstance(value, dict) and value.get("type") == "function":
            function = value.get("function")
            if function is None or (isinstance(function, dict) and "name" not in function):
                raise InvalidRequestError(
                    "Missing required parameter: 'tool_choice.function.name'. A tool choice of type 'function' "
                    'names the function the model must call: {"type": "function", "function": {"name": "..."}}.',
                    param="tool_choice.function.name",
                    code="missing_required_parameter",
                )
        return value


class RunCreate(RunOptions):
    additional_instructions: str | None = None
    additional_messages: list[MessageCreate] | None = None


class ThreadAndRunCreate(RunOptions):
    thread: ThreadCreate | None = None
    tool_resources: ToolResourcesField | None = None


class RunUpdate(RequestModel):
    metadata: dict[str, str] | None = None


class ToolOutput(RequestModel):
    tool_call_id: Annotated[str, Field(min_length=1)]
    output: str = ""
    """What the tool returned; optional, as in the spec: the model reads an empty result when left out."""


class SubmitToolOutputsRequest(RequestModel):
    tool_outputs: list[ToolOutput]
    stream: bool | None = None


# Vector stores -------------------------------------------------------------------------------


def _check_attributes(value: Any) -> Any:
    """OpenAI's limits on file attributes: 16 keys of at most 64 characters, strings of at most 512."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("attributes must be an object")
    if len(value) > 16:
        raise ValueError(f"attributes hold at most 16 keys, not {len(value)}")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError(f"attribute key {key[:20]!r}... is longer than 64 characters")
        if isinstance(item, str) and len(item) > 512:
            raise ValueError(f"attribute {key!r} is longer than 512 characters")
    return value


class VectorStoreCreate(RequestModel):
    file_ids: Annotated[list[str], Field(max_length=500)] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    description: Annotated[str, Field(max_length=512)] | None = None
    expires_after: ExpiresAfter | None = None
    chunking_strategy: ChunkingStrategyRequest | None = None
    metadata: dict[str, str] | None = None


class VectorStoreUpdate(RequestModel):
    name: Annotated[str, Field(max_length=256)] | None = None
    expires_after: ExpiresAfter | None = None
    metadata: dict[str, str] | None = None


class VectorStoreFileCreate(RequestModel):
    file_id: Annotated[str, Field(min_length=1)]
    chunking_strategy: ChunkingStrategyRequest | None = None
    attributes: FileAttributes | None = None

    _attributes = field_validator("attributes", mode="before")(_check_attributes)


class VectorStoreFileUpdate(RequestModel):
    attributes: FileAttributes | None

    _attributes = field_validator("attributes", mode="before")(_check_attributes)


class VectorStoreFileBatchCreate(RequestModel):
    """A batch of files: `file_ids` sharing `attributes` and `chunking_strategy`, or `files`, each with its own.

    Exactly one of `file_ids` and `files` is given. With `files`, the batch-wide `attributes` and
    `chunking_strategy` are ignored, as the spec says: each file carries its own.
    """

    file_ids: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=2000)] | None = None
    files: Annotated[list[VectorStoreFileCreate], Field(min_length=1, max_length=2000)] | None = None
    chunking_strategy: ChunkingStrategyRequest | None = None
    attributes: FileAttributes | None = None

    _attributes = field_validator("attributes", mode="before")(_check_attributes)

    @model_validator(mode="after")
    def _file_ids_or_files(self) -> Self:
        if self.file_ids is None and self.files is None:
            raise InvalidRequestError(
                "Missing required parameter: 'file_ids' (or 'files', a list of {file_id, attributes, chunking_strategy}).",
                param="file_ids",
                code="missing_required_parameter",
            )
        if self.file_ids is not None and self.files is not None:
            raise InvalidRequestError(
                "Invalid 'files': 'file_ids' and 'files' are mutually exclusive; send one of them.", param="files"
            )
        return self


class RankingOptions(WireModel):
    ranker: Literal["none", "auto", "default-2024-11-15"] = "auto"
    score_threshold: Annotated[float, Field(ge=0, le=1)] = 0.0


class VectorStoreSearch(RequestModel):
    query: str | Annotated[list[str], Field(min_length=1)]
    rewrite_query: bool = False
    max_num_results: Annotated[int, Field(ge=1, le=50)] = 10
    filters: dict[str, Any] | None = None
    ranking_options: RankingOptions | None = None
