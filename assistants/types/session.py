"""`Session`: a thread that belongs to one user and one assistant, and carries its settings."""

from __future__ import annotations

from enum import StrEnum

from .metadata import meta_field
from .objects import Thread


class ContextMode(StrEnum):
    """How much of a session's history a run sends to the model."""

    full = "full"
    """The whole thread, trimmed to the model's context window (oldest first)."""
    last_n = "last_n"
    """The last N messages."""
    one_off = "one_off"
    """Only the newest user message: independent questions."""
    summary = "summary"
    """Older turns folded into a rolling summary; recent turns verbatim."""


class Session(Thread):
    """A chat session. Its fields live in the thread's `metadata`, so `/v1` clients see a thread."""

    user: str = meta_field(description="The id of the user who owns the session.")
    assistant_id: str = meta_field(description="The assistant this session talks to.")
    title: str = meta_field("New chat", description="Shown in the history sidebar.")
    context_mode: ContextMode = meta_field(ContextMode.full)
    context_n: int = meta_field(20, description="N for `last_n`, and the verbatim tail for `summary`.")
    model: str | None = meta_field(None, description="Overrides the assistant's model.")
    temperature: float | None = meta_field(None, description="Overrides the assistant's temperature.")
    summary: str | None = meta_field(None, description="The rolling summary of older turns.")
    summary_upto: str | None = meta_field(None, description="Id of the last message the summary covers.")
    updated_at: int | None = meta_field(None, description="When the session last changed.")
    ui_thread: str | None = meta_field(None, description="The chat UI's id for this session (Chainlit's thread id).")


def session_of(thread: Thread) -> Session | None:
    """The thread as a Session when it is one (it carries a user and an assistant in metadata)."""
    if "user" in thread.metadata and "assistant_id" in thread.metadata:
        return Session.model_validate(thread.model_dump())
    return None
