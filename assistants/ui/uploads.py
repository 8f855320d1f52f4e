"""Files dropped into the chat: checked on the server, then copied into the engine's file store.

Chainlit keeps uploads in `.files/` only while the browser session lives, so each accepted file
is copied into the durable store before the message that carries it is written.
"""

from __future__ import annotations

import asyncio
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..store.sniff import IMAGE_TYPES, clean_filename, content_mismatch
from ..types.objects import Attachment, ImageFile, ImageFileContent
from ..types.requests import MessageRequestContent, TextRequestContent

ACCEPT: dict[str, tuple[str, ...]] = {
    "text/plain": (".txt",),
    "text/markdown": (".md",),
    "text/csv": (".csv",),
    # What browsers on Windows with Excel installed say a `.csv` file is.
    "application/vnd.ms-excel": (".csv",),
    "application/json": (".json",),
    "application/pdf": (".pdf",),
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "image/gif": (".gif",),
    "image/webp": (".webp",),
}
"""What the composer accepts (the same list is in .chainlit/config.toml for the browser)."""
MAX_FILES = 5
MAX_BYTES = 20 * 1024 * 1024


@dataclass
class PreparedUpload:
    content: list[MessageRequestContent]
    attachments: list[Attachment]
    rejected: list[str] = field(default_factory=list)
    accepted: list[tuple[str, str]] = field(default_factory=list)
    """(file id, file name) of the stored files."""


ALIASES: dict[tuple[str, str], str] = {("application/vnd.ms-excel", ".csv"): "text/csv"}
"""(declared type, suffix) pairs that stand for another type: a `.csv` file is CSV text."""


def _mime_of(name: str, declared: str | None) -> str:
    guessed = mimetypes.guess_type(name)[0]
    mime = (declared or guessed or "application/octet-stream").split(";")[0].strip().lower()
    return ALIASES.get((mime, Path(name).suffix.lower()), mime)


def _accepts(name: str, mime: str) -> bool:
    suffix = Path(name).suffix.lower()
    if mime in ACCEPT:
        return suffix in ACCEPT[mime] or not suffix
    return any(suffix in suffixes for suffixes in ACCEPT.values()) and mime == "application/octet-stream"


async def _size(path: str | None) -> int | None:
    if not path:
        return None
    try:
        return (await asyncio.to_thread(Path(path).stat)).st_size
    except OSError:
        return None


async def store_uploads(
    engine: Engine, owner: str, text: str, elements: list[Any], tools: tuple[str, ...] = ()
) -> PreparedUpload:
    """The user's message content with its files stored and attached; refusals say why.

    Files go to the code interpreter when the assistant has it (it finds them in /mnt/data) and,
    documents, to file search when it has that; images are also shown to the model directly.
    """
    routes = [{"type": "code_interpreter"}] if "code_interpreter" in tools else []
    searchable = "file_search" in tools
    content: list[MessageRequestContent] = [TextRequestContent(text=text)] if text else []
    prepared = PreparedUpload(content=content, attachments=[])
    for index, element in enumerate(elements):
        name = clean_filename(getattr(element, "name", None))
        path = getattr(element, "path", None)
        if index >= MAX_FILES:
            prepared.rejected.append(f"{name}: only {MAX_FILES} files can be sent with one message.")
            continue
        size = await _size(path)
        if size is None:
            prepared.rejected.append(f"{name}: the upload did not arrive; try again.")
            continue
        mime = _mime_of(name, getattr(element, "mime", None))
        if size > MAX_BYTES:
            prepared.rejected.append(f"{name}: {size / 1_048_576:.1f} MB is over the {MAX_BYTES // 1_048_576} MB limit.")
            continue
        if not _accepts(name, mime):
            allowed = ", ".join(sorted({s for suffixes in ACCEPT.values() for s in suffixes}))
            prepared.rejected.append(f"{name}: this type of file ({mime}) is not accepted. Accepted: {allowed}.")
            continue
        data = await asyncio.to_thread(Path(path).read_bytes)
        mismatch = content_mismatch(mime if mime in ACCEPT else _mime_of(name, None), data)
        if mismatch is not None:
            prepared.rejected.append(f"{name}: {mismatch}, so it was not attached.")
            continue
        purpose = "vision" if mime in IMAGE_TYPES else "assistants"
        stored = await engine.create_file(owner, filename=name, purpose=purpose, content=data)
        prepared.accepted.append((stored.id, name))
        # Documents also go to file search (into the session's own vector store); images do not.
        file_routes = [*routes, {"type": "file_search"}] if searchable and mime not in IMAGE_TYPES else routes
        prepared.attachments.append(Attachment(file_id=stored.id, tools=file_routes))
        if mime in IMAGE_TYPES:
            prepared.content.append(ImageFileContent(image_file=ImageFile(file_id=stored.id)))
    if not prepared.content:
        names = ", ".join(n for _, n in prepared.accepted) or "the attached files"
        prepared.content.append(TextRequestContent(text=f"(sent {names})"))
    return prepared
