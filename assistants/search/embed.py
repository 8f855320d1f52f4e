"""Embeddings for hybrid retrieval: the provider's `/v1/embeddings`, and vectors in a compact form.

When `ASSISTANTS_EMBEDDING_MODEL` is set, ingestion embeds every chunk and a search embeds its
query; `SqlChunkIndex` then fuses vector similarity with full-text ranking. Vectors are stored
unit-length as little-endian float16 (2 bytes a dimension: 512 bytes for 256 dimensions, 3 KB
for 1,536), which keeps cosine similarity within about 0.001 of the float32 value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import openai

from ..exceptions import IngestionError

log = logging.getLogger(__name__)

BATCH_SIZE = 64
"""Texts per `/v1/embeddings` request (64 chunks of 800 tokens stay well under providers' limits)."""
CONCURRENT_BATCHES = 4
"""Requests in flight at once while a file is embedded."""
VECTOR_DTYPE = np.dtype("<f2")


class EmbeddingError(IngestionError):
    """The embedding model could not embed a text (the provider refused, failed or was unreachable)."""

    code = "server_error"


class Embedder(Protocol):
    """What the chunk index needs to embed chunks and queries."""

    model: str
    """The embedding model's id; vectors of another model are never compared with its vectors."""

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length float32 row per text, in order. Raises `EmbeddingError`."""
        ...


class ProviderEmbedder:
    """Embeddings through an OpenAI-compatible provider's `/v1/embeddings`."""

    def __init__(self, client: openai.AsyncOpenAI, model: str, *, dimensions: int | None = None) -> None:
        self.client = client
        self.model = model
        self.dimensions = dimensions

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions or 0), dtype=np.float32)
        batches = [list(texts[i : i + BATCH_SIZE]) for i in range(0, len(texts), BATCH_SIZE)]
        gate = asyncio.Semaphore(CONCURRENT_BATCHES)

        async def one(batch: list[str]) -> np.ndarray:
            async with gate:
                return await self._request(batch)

        parts = await asyncio.gather(*(one(batch) for batch in batches))
        if len({part.shape[1] for part in parts}) != 1:
            raise EmbeddingError(f"The embedding model '{self.model}' returned vectors of different sizes.")
        return normalized(np.concatenate(parts))

    async def _request(self, batch: list[str]) -> np.ndarray:
        try:
            if self.dimensions is None:
                response = await self.client.embeddings.create(model=self.model, input=batch)
            else:
                response = await self.client.embeddings.create(model=self.model, input=batch, dimensions=self.dimensions)
        except openai.APIStatusError as exc:
            raise EmbeddingError(
                f"The embedding model '{self.model}' refused the request ({exc.status_code}): {_reason(exc)}"
            ) from exc
        except openai.APIError as exc:
            raise EmbeddingError(f"The embedding model '{self.model}' could not be reached: {exc.message}") from exc
        rows = sorted(response.data, key=lambda item: item.index)
        if len(rows) != len(batch) or not rows or not rows[0].embedding:
            raise EmbeddingError(
                f"The embedding model '{self.model}' returned {len(rows)} vectors for {len(batch)} texts."
            )
        return np.asarray([row.embedding for row in rows], dtype=np.float32)


def _reason(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if isinstance(message, str) and message:
            return message
    return exc.message


def normalized(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), as float32."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out = np.zeros_like(matrix)
    np.divide(matrix, norms, out=out, where=norms > 0)
    return out


def pack(vector: np.ndarray) -> bytes:
    """A unit-length vector as stored: little-endian float16."""
    return np.asarray(vector, dtype=VECTOR_DTYPE).tobytes()


def unpack_many(blobs: Sequence[bytes], dimensions: int) -> np.ndarray:
    """Stored vectors as one float32 matrix, a row each."""
    if not blobs:
        return np.zeros((0, dimensions), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=VECTOR_DTYPE).reshape(len(blobs), dimensions).astype(np.float32)


def build_embedder(
    *, base_url: str | None, api_key: str | None, model: str | None, dimensions: int | None, retries: int, timeout: float
) -> ProviderEmbedder | None:
    """The embedder the settings describe, or None when no embedding model (or provider) is set."""
    if not model or not (base_url or api_key):
        return None
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=retries, timeout=timeout)
    return ProviderEmbedder(client, model, dimensions=dimensions)
