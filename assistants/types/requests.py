"""Request bodies of the Assistants API. Unknown fields are refused, so a typo is named, not ignored."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .metadata import validate_metadata
from .objects import (
    Attachment,
    ImageFileContent,
    ImageURLContent,
    ResponseFormat,
    Tool,
    ToolChoice,
    TruncationStrategy,
    WireModel,
)

Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(ge=0, le=1)]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("metadata", mode="before", check_fields=False)
    @classmethod
    def _check_metadata(cls, value: Any) -> Any:
        return validate_metadata(value) if value is not None else None


class AssistantCreate(RequestModel):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    name: Annotated[str, Field(max_length=256)] | None = None
    description: Annotated[str, Field(max_length=512)] | None = None
    instructions: Annotated[str, Field(max_length=256_000)] | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] = Field(default_factory=list)
    tool_resources: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None


class AssistantUpdate(RequestModel):
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    description: Annotated[str, Field(max_length=512)] | None = None
    instructions: Annotated[str, Field(max_length=256_000)] | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_resources: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None


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
    attachments: list[Attachment] | None = None
    metadata: dict[str, str] | None = None


class MessageUpdate(RequestModel):
    metadata: dict[str, str] | None = None


class ThreadCreate(RequestModel):
    messages: Annotated[list[MessageCreate], Field(max_length=32)] | None = None
    tool_resources: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None


class ThreadUpdate(RequestModel):
    tool_resources: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None


class RunOptions(RequestModel):
    """What a run may override; shared by create-run and create-thread-and-run."""

    assistant_id: Annotated[str, Field(min_length=1)]
    model: str | None = None
    instructions: str | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
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
    reasoning_effort: str | None = None


class RunCreate(RunOptions):
    additional_instructions: str | None = None
    additional_messages: list[MessageCreate] | None = None


class ThreadAndRunCreate(RunOptions):
    thread: ThreadCreate | None = None
    tool_resources: dict[str, Any] | None = None


class RunUpdate(RequestModel):
    metadata: dict[str, str] | None = None


class ToolOutput(RequestModel):
    tool_call_id: Annotated[str, Field(min_length=1)]
    output: str


class SubmitToolOutputsRequest(RequestModel):
    tool_outputs: list[ToolOutput]
    stream: bool | None = None
