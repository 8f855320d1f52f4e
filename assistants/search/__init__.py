"""File search: turning uploaded files into searchable chunks, and finding them again.

    parse.py   text out of text, Markdown, HTML, CSV, JSON, code, PDF and DOCX files
    chunk.py   the `static` chunking strategy (by tokens, with overlap and character offsets)
    words.py   what a word is, the stop words, a query's words
    postings.py  PostgreSQL's posting lists and their BM25 ranking
    index.py   the chunk index: SQLite FTS5 or PostgreSQL posting lists (both BM25), per owner,
               fused with vector similarity when an embedding model is configured
    embed.py   embeddings through the provider's `/v1/embeddings`, stored as compact vectors
"""

from .chunk import Chunk, chunk_text, validate_static_strategy
from .index import ChunkIndex, ChunkRow, Hit, SqlChunkIndex
from .parse import DEFAULT_MAX_BYTES, SUPPORTED_EXTENSIONS, extract_text
from .words import query_terms

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_EXTENSIONS",
    "Chunk",
    "ChunkIndex",
    "ChunkRow",
    "Hit",
    "SqlChunkIndex",
    "chunk_text",
    "extract_text",
    "query_terms",
    "validate_static_strategy",
]
