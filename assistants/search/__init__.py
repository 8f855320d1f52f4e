"""File search: turning uploaded files into searchable chunks."""

from assistants.search.chunk import Chunk, chunk_text, validate_static_strategy
from assistants.search.parse import DEFAULT_MAX_BYTES, SUPPORTED_EXTENSIONS, extract_text

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_EXTENSIONS",
    "Chunk",
    "chunk_text",
    "extract_text",
    "validate_static_strategy",
]
