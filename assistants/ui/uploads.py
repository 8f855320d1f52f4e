"""Files dropped into the chat: checked on the server, then copied into the engine's file store.

Chainlit keeps uploads in `.files/` only while the browser session lives, so each accepted file
is copied into the durable store before the message that carries it is written.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..store.sniff import IMAGE_TYPES, clean_filename, content_mismatch
from ..types.objects import Attachment, ImageFile, ImageFileContent
from ..types.requests import MessageRequestContent, TextRequestContent

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
CODE_SUFFIXES = (
    ".py", ".js", ".mjs", ".jsx", ".ts", ".tsx", ".java", ".kt", ".scala", ".swift", ".c", ".h",
    ".cpp", ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".r", ".sql", ".sh", ".css", ".xml",
    ".yaml", ".yml", ".toml",
)  # fmt: skip
"""Source code and configuration: read as text, by file search and the code interpreter."""
TYPES: dict[str, str] = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".csv": "text/csv",
    ".json": "application/json",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": DOCX,
    **dict.fromkeys(CODE_SUFFIXES, "text/plain"),
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
"""What the composer accepts, by file name suffix, and what each is (its content is checked
against that, whatever type the browser declares)."""
_TEXT_SUFFIXES = tuple(suffix for suffix, mime in TYPES.items() if mime.startswith("text/"))
ACCEPT: dict[str, tuple[str, ...]] = {
    # Browsers name text files in many ways (text/x-python, text/javascript, text/x-csrc, ...).
    "text/*": _TEXT_SUFFIXES,
    "application/json": (".json",),
    "application/pdf": (".pdf",),
    DOCX: (".docx",),
    # What browsers on Windows with Excel installed say a `.csv` file is.
    "application/vnd.ms-excel": (".csv",),
    "application/javascript": (".js", ".mjs"),
    "application/x-sh": (".sh",),
    "application/x-shellscript": (".sh",),
    "application/xml": (".xml",),
    "application/x-yaml": (".yaml", ".yml"),
    "application/yaml": (".yaml", ".yml"),
    "application/toml": (".toml",),
    "application/sql": (".sql",),
    "application/x-php": (".php",),
    "application/x-ruby": (".rb",),
    # Linux names TypeScript after the MPEG transport stream.
    "video/mp2t": (".ts",),
    # A type the browser does not know.
    "application/octet-stream": tuple(suffix for suffix, mime in TYPES.items() if not mime.startswith("image/")),
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "image/gif": (".gif",),
    "image/webp": (".webp",),
}
"""Chainlit's accept list (the same is in .chainlit/config.toml, for the browser and Chainlit's
upload route): a declared type pattern and the suffixes allowed with it."""
MAX_FILES = 5
MAX_BYTES = 20 * 1024 * 1024


@dataclass
class PreparedUpload:
    content: list[MessageRequestContent]
    attachments: list[Attachment]
    rejected: list[str] = field(default_factory=list)
    accepted: list[tuple[str, str]] = field(default_factory=list)
    """(file id, file name) of the stored files."""


def _declared(declared: str | None) -> str:
    return (declared or "application/octet-stream").split(";")[0].strip().lower()


def _type_of(name: str, declared: str | None) -> str | None:
    """What an upload is, by its suffix (a file without one, by the declared type); None when it
    is not accepted."""
    suffix = Path(name).suffix.lower()
    if suffix:
        return TYPES.get(suffix)
    mime = _declared(declared)
    return mime if mime in TYPES.values() else None


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
        declared = getattr(element, "mime", None)
        mime = _type_of(name, declared)
        if size > MAX_BYTES:
            prepared.rejected.append(f"{name}: {size / 1_048_576:.1f} MB is over the {MAX_BYTES // 1_048_576} MB limit.")
            continue
        if mime is None:
            allowed = ", ".join(sorted(TYPES))
            prepared.rejected.append(f"{name}: this type of file ({_declared(declared)}) is not accepted. Accepted: {allowed}.")
            continue
        data = await asyncio.to_thread(Path(path).read_bytes)
        mismatch = content_mismatch(mime, data)
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
